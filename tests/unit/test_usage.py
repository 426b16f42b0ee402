"""The user's usage endpoint (singleuser/hubops_usage) and the hub's proxy client: what
nvidia-smi and the cgroup say, read as the status bar needs it, and the proxy's traffic kept
out of the users' activity."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import hubops_usage
import pytest
from hubops_hub.proxy import HubopsProxy, without_traffic_stamps


def test_gpu_rows_as_nvidia_smi_prints_them() -> None:
    text = (
        "0, NVIDIA H200, 37, 1024, 143771\n"
        "3, NVIDIA H200, [N/A], 0, 143771\n"
        "a line that is not a row\n"
    )
    assert hubops_usage.parse_gpus(text) == [
        {
            "index": "0",
            "name": "NVIDIA H200",
            "utilization_gpu": 37.0,
            "memory_used_mib": 1024.0,
            "memory_total_mib": 143771.0,
        },
        {
            "index": "3",
            "name": "NVIDIA H200",
            "utilization_gpu": None,
            "memory_used_mib": 0.0,
            "memory_total_mib": 143771.0,
        },
    ]


@pytest.mark.parametrize(
    ("name", "text", "kills"),
    [
        ("memory.events", "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n", 2),
        ("memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 5\n", 5),
    ],
)
def test_oom_kills_from_cgroup_v2_and_v1(tmp_path: Path, name: str, text: str, kills: int) -> None:
    path = tmp_path / name
    path.write_text(text)
    assert hubops_usage.oom_kills((str(tmp_path / "missing"), str(path))) == kills


def test_no_cgroup_file_is_no_count(tmp_path: Path) -> None:
    assert hubops_usage.oom_kills((str(tmp_path / "missing"),)) is None


def test_memory_limit_from_the_spawners_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEM_LIMIT", "2147483648")
    assert hubops_usage.memory_limit() == 2 * 1024**3
    monkeypatch.setenv("MEM_LIMIT", "0")
    assert hubops_usage.memory_limit() is None
    monkeypatch.delenv("MEM_LIMIT")
    assert hubops_usage.memory_limit() is None


def test_nvidia_smi_runs_once_per_cache_period_and_its_failure_is_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = tmp_path / "calls"
    smi = tmp_path / "nvidia-smi"
    smi.write_text(
        f"#!/bin/sh\necho x >> {calls}\n"
        'case "$*" in *--query-gpu=index,name,utilization.gpu,memory.used,memory.total*'
        "--format=csv,noheader,nounits*) echo '0, GPU, 5, 10, 100';; *) exit 9;; esac\n"
    )
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    usage = hubops_usage.Usage()

    async def twice() -> list[Any]:
        return [await usage.gpus(), await usage.gpus()]

    first, second = asyncio.run(twice())
    assert first == second
    assert first[0][0]["utilization_gpu"] == 5.0
    assert calls.read_text().count("x") == 1, "the second poll within the period reused it"
    smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    gpus, error = asyncio.run(hubops_usage.Usage().gpus())
    assert gpus == []
    assert error == "NVIDIA-SMI has failed"


def test_without_nvidia_smi_there_are_no_gpus(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert asyncio.run(hubops_usage.Usage().gpus()) == ([], None)


def test_the_proxys_traffic_is_not_the_users_activity() -> None:
    """CHP's stamps go; everything else the hub reads from a route stays."""
    routes = {
        "/user/bob/": {
            "routespec": "/user/bob/",
            "target": "http://bob:8888",
            "data": {"user": "bob", "server_name": "", "last_activity": "2026-12-03T05:00:00Z"},
        },
        "/": {"routespec": "/", "target": "http://hub:8081", "data": {"hub": True}},
    }
    out = without_traffic_stamps(routes)
    assert out["/user/bob/"]["data"] == {"user": "bob", "server_name": ""}
    assert out["/"]["data"] == {"hub": True}
    assert HubopsProxy.get_all_routes is not HubopsProxy.__mro__[1].get_all_routes


def test_the_servers_disk_figure_starts_from_the_hubs_and_is_measured_in_the_background(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first answer is the hub's figure (no wait for du); the measurement it starts
    replaces it; a JupyterLab that opens within FRESH_SECONDS does not start another."""
    monkeypatch.setenv("HUBOPS_DISK_QUOTA_BYTES", str(2**20))
    monkeypatch.setenv("HUBOPS_DISK_USED_BYTES", "5")
    monkeypatch.setenv("HUBOPS_DISK_EVERY", "600")
    (tmp_path / "data").write_bytes(os.urandom(2 * 2**20))

    async def run() -> list[dict[str, Any]]:
        disk = hubops_usage.Disk(str(tmp_path))
        first = disk.snapshot(fresh=True)
        while disk._task is not None:
            await asyncio.sleep(0.05)
        second = disk.snapshot(fresh=True)
        return [first, second, {"task": disk._task}]

    first, second, rest = asyncio.run(run())
    assert first == {
        "used_bytes": 5,
        "quota_bytes": 2**20,
        "over_quota": False,
        "measured_at": None,
    }
    assert second["used_bytes"] >= 2 * 2**20
    assert second["over_quota"] is True
    assert rest["task"] is None, "fresh again within FRESH_SECONDS: no second du"
