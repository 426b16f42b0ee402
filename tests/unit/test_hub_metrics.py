"""hubops' gauges on /hub/metrics: the collector reads the GPU monitor's view over HTTP (a real
local server here, answering a view made by the monitor's own code) and the cull journal."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hubops_hub import culling
from hubops_hub.gpumon import Holder, Tracker, view
from hubops_hub.gpus import Policy
from hubops_hub.metrics import MONITOR_ENV, HubopsCollector
from hubops_hub.nvml import App, GPUState, Sample
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

GPU0 = "GPU-00000000-0000-4000-8000-000000000000"
GPU1 = "GPU-11111111-1111-4111-8111-111111111111"


@pytest.fixture
def monitor() -> Iterator[tuple[str, dict[str, Any]]]:
    """A local HTTP server that answers /state with ``state`` (a dict the test may fill)."""
    state: dict[str, Any] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(state).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/state", state
    finally:
        server.shutdown()
        server.server_close()


def scrape(collector: HubopsCollector) -> dict[str, list[tuple[dict[str, str], float]]]:
    registry = CollectorRegistry()
    registry.register(collector)
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def test_every_gauge_follows_the_monitor_and_the_journal(
    monitor: tuple[str, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, state = monitor
    monkeypatch.setenv(MONITOR_ENV, "1")
    cid = "c" * 64
    s = Sample(
        at=100,
        gpus=[
            GPUState("0", GPU0, "NVIDIA H200", 87, 40211, 143771),
            GPUState("1", GPU1, "NVIDIA H200", 0, 1, 143771),
        ],
        apps=[App(GPU0, 7, 40198, "python3", cid)],
    )
    holder = Holder(cid, "alice", "", ("0",), started=10)
    tracker = Tracker(busy=5, since=0)
    tracker.update(s, [holder])
    state.update(view(s, [holder], tracker, Policy("exclusive", pool=("0", "1")), now=130))
    state["usage"] = [
        {"user": "alice", "group": "ml-lab", "held_seconds": 7200.0, "busy_seconds": 5400.5}
    ]
    journal = str(tmp_path / "culls.jsonl")
    culling.record(journal, "bob", "", culling.Verdict(True, "gpu-idle", "m"), 1)

    found = scrape(HubopsCollector(url, journal, str(tmp_path / "no-usage")))

    def one(name: str, **labels: str) -> float:
        (value,) = [v for lab, v in found[name] if all(lab.get(k) == x for k, x in labels.items())]
        return value

    assert one("hubops_gpu_monitor_up") == 1
    assert (one("hubops_gpus_total"), one("hubops_gpus_held"), one("hubops_gpus_free")) == (2, 1, 1)
    assert one("hubops_gpu_utilization_ratio", gpu="0") == pytest.approx(0.87)
    assert one("hubops_gpu_memory_used_bytes", gpu="0") == 40211 * 1024 * 1024
    assert one("hubops_gpu_memory_total_bytes", gpu="1") == 143771 * 1024 * 1024
    assert one("hubops_gpu_idle_seconds", gpu="1") == 130
    assert one("hubops_gpu_holder_idle_seconds", user="alice") == 30
    assert one("hubops_culls_total", reason="gpu-idle") == 1
    assert one("hubops_culls_total", reason="idle") == 0
    assert one("hubops_gpu_seconds_total", user="alice", group="ml-lab", state="held") == 7200
    assert one("hubops_gpu_seconds_total", user="alice", state="busy") == 5400.5


DISK_USAGE = {
    "sampled_at": 1700000000.0,
    "mode": "soft",
    "filesystem": {"type": "ext4", "total_bytes": 10 * 2**30, "free_bytes": 2**30},
    "users": {
        "alice": {"bytes": 3 * 2**30, "quota_bytes": 2 * 2**30, "groups": ["ml-lab"]},
        "bob": {"bytes": 4096, "quota_bytes": None, "groups": []},
    },
}


def test_users_disk_use_and_quotas_are_gauges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What hubops-disk-usage last wrote: each user's use, the quotas that are set, when,
    and the free space; without the file, none of them."""
    monkeypatch.delenv(MONITOR_ENV, raising=False)
    usage = tmp_path / "usage.json"
    usage.write_text(json.dumps(DISK_USAGE))
    found = scrape(HubopsCollector("http://127.0.0.1:9/state", str(tmp_path / "j"), str(usage)))
    assert found["hubops_user_disk_bytes"] == [
        ({"user": "alice"}, 3 * 2**30),
        ({"user": "bob"}, 4096),
    ]
    assert found["hubops_user_disk_quota_bytes"] == [({"user": "alice"}, 2 * 2**30)]
    assert found["hubops_user_disk_sampled_timestamp_seconds"] == [({}, 1700000000.0)]
    assert found["hubops_user_data_free_bytes"] == [({}, 2**30)]
    usage.unlink()
    gone = scrape(HubopsCollector("http://127.0.0.1:9/state", str(tmp_path / "j"), str(usage)))
    assert not any(name.startswith("hubops_user_") for name in gone)


def test_a_silent_monitor_reads_as_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MONITOR_ENV, "1")
    found = scrape(
        HubopsCollector(
            "http://127.0.0.1:9/state", str(tmp_path / "none"), str(tmp_path / "no-usage")
        )
    )
    assert found["hubops_gpu_monitor_up"] == [({}, 0)]
    assert "hubops_gpus_total" not in found


def test_without_the_monitor_only_culls_are_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(MONITOR_ENV, raising=False)
    found = scrape(
        HubopsCollector(
            "http://127.0.0.1:9/state", str(tmp_path / "none"), str(tmp_path / "no-usage")
        )
    )
    assert set(found) == {"hubops_culls_total"}


def test_the_dashboard_and_the_readme_name_only_metrics_the_hub_serves(
    monitor: tuple[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url, state = monitor
    monkeypatch.setenv(MONITOR_ENV, "1")
    s = Sample(at=1, gpus=[GPUState("0", GPU0, "g", 1, 1, 1)], apps=[])
    h = Holder("d" * 64, "u", "", ("0",), started=0)
    state.update(view(s, [h], Tracker(busy=5, since=0), Policy("exclusive", pool=("0",)), 2))
    state["usage"] = [{"user": "u", "group": "", "held_seconds": 60.0, "busy_seconds": 6.0}]
    usage = tmp_path / "usage.json"
    usage.write_text(json.dumps(DISK_USAGE))
    served = set(scrape(HubopsCollector(url, str(tmp_path / "j"), str(usage)))) | {
        "hubops_gpu_spawn_failures_total"  # the spawner's counter, in the hub's registry
    }
    root = Path(__file__).parents[2]
    dashboard = (root / "docs" / "grafana" / "hubops-gpus.json").read_text()
    json.loads(dashboard)
    used = set(re.findall(r"\bhubops_[a-z_]+", dashboard)) - {"hubops_gpus"}  # the uid
    assert used, "the dashboard queries hubops' metrics"
    assert used <= served, f"the dashboard names metrics the hub does not serve: {used - served}"
    readme = (root / "README.md").read_text()
    for name in served:
        base = name.removesuffix("_total")
        assert base in readme, f"README's metrics table lacks {name}"
