"""GPU-aware culling: the one decision (hubops_hub.culling.decide), the monitor's idea of
"busy" and "idle since" (hubops_hub.gpumon), and the journal the hub counts culls from."""

from __future__ import annotations

from pathlib import Path

import pytest
from hubops_hub import culling
from hubops_hub.culling import decide
from hubops_hub.gpumon import Holder, Tracker, holder_busy, kinds, pool_view, view
from hubops_hub.gpus import Policy
from hubops_hub.nvml import App, GPUState, Sample, parse_list

from tests.support.nvml_samples import GPU0, GPU1, sample

CID_A = "a" * 64
CID_B = "b" * 64

# --- decide ----------------------------------------------------------------------------------


def test_a_server_without_a_gpu_is_culled_after_the_plain_timeout() -> None:
    assert not decide(jupyter_idle=3599, timeout=3600).cull
    verdict = decide(jupyter_idle=3600, timeout=3600)
    assert (verdict.cull, verdict.reason) == (True, "idle")
    assert "culling.timeout" in verdict.message


def test_a_gpu_holder_idle_on_both_for_its_gpu_timeout_is_culled() -> None:
    verdict = decide(
        jupyter_idle=2000, timeout=3600, holds_gpu=True, gpu_idle=1800, gpu_timeout=1800
    )
    assert (verdict.cull, verdict.reason) == (True, "gpu-idle")
    assert "30 min" in verdict.message
    assert "gpu.idle_timeout" in verdict.message


def test_a_holder_busy_on_its_gpu_is_never_culled_for_jupyter_inactivity() -> None:
    verdict = decide(
        jupyter_idle=10 * 86400, timeout=3600, holds_gpu=True, gpu_idle=30, gpu_timeout=1800
    )
    assert not verdict.cull


def test_a_holder_still_used_in_jupyter_is_kept_although_its_gpu_is_idle() -> None:
    assert not decide(
        jupyter_idle=60, timeout=3600, holds_gpu=True, gpu_idle=7200, gpu_timeout=1800
    ).cull


def test_a_holder_whose_gpu_use_is_unknown_is_kept() -> None:
    assert not decide(jupyter_idle=10**6, timeout=3600, holds_gpu=True, gpu_idle=None).cull


def test_the_gpu_timeout_defaults_to_the_culling_timeout() -> None:
    assert not decide(jupyter_idle=3000, timeout=3600, holds_gpu=True, gpu_idle=3000).cull
    assert decide(jupyter_idle=3600, timeout=3600, holds_gpu=True, gpu_idle=3600).cull


def test_max_age_stops_even_a_busy_holder() -> None:
    verdict = decide(
        jupyter_idle=0, timeout=3600, age=90000, max_age=86400, holds_gpu=True, gpu_idle=0
    )
    assert (verdict.cull, verdict.reason) == (True, "max-age")


# --- busy and idle -----------------------------------------------------------------------------


def test_memory_without_utilisation_is_idle_and_utilisation_with_a_process_is_busy() -> None:
    a = Holder(CID_A, "alice", "", ("0",), started=0)
    b = Holder(CID_B, "bob", "", ("1",), started=0)
    s = sample(
        100, 80, 0, [App(GPU0, 11, 40000, "python3", CID_A), App(GPU1, 12, 39000, "py", CID_B)]
    )
    assert holder_busy(a, s, [a, b], busy=5)
    assert not holder_busy(b, s, [a, b], busy=5), "a model parked in memory is not use"


def test_on_a_shared_gpu_only_the_holder_with_a_process_there_is_busy() -> None:
    a = Holder(CID_A, "alice", "", ("0",), started=0)
    b = Holder(CID_B, "bob", "", ("0",), started=0)
    s = sample(100, 90, 0, [App(GPU0, 11, 1000, "python3", CID_A)])
    assert holder_busy(a, s, [a, b], busy=5)
    assert not holder_busy(b, s, [a, b], busy=5)


def test_a_lone_holder_is_busy_when_its_gpu_is_even_without_a_visible_process() -> None:
    a = Holder(CID_A, "alice", "", ("0",), started=0)
    assert holder_busy(a, sample(100, 50, 0, []), [a], busy=5)
    assert not holder_busy(a, sample(100, 4, 0, []), [a], busy=5), "below the threshold"


def test_idle_time_counts_from_the_last_busy_sample_the_start_or_the_monitor() -> None:
    a = Holder(CID_A, "alice", "", ("0",), started=50)
    t = Tracker(busy=5, since=10)
    assert t.holder_idle(a, 100) == 50, "never busy: idle since the server started"
    t.update(sample(120, 70, 0, [App(GPU0, 11, 1, "p", CID_A)]), [a])
    t.update(sample(150, 0, 0, [App(GPU0, 11, 1, "p", CID_A)]), [a])
    assert t.holder_idle(a, 200) == 80
    late = Tracker(busy=5, since=180)
    assert late.holder_idle(a, 200) == 20, "nothing is known before the monitor started"
    t.update(sample(160, 0, 0, []), [])
    assert CID_A not in t.last_busy, "a holder that is gone is forgotten"


def test_the_view_names_free_gpus_by_kind_with_mig_profiles() -> None:
    mig = "MIG-aaaaaaaa-0000-4000-8000-000000000001"
    s = Sample(
        at=1,
        gpus=[GPUState("0", GPU0, "NVIDIA A100-SXM4-80GB", None, 10, 81920)],
        apps=[],
        devices=parse_list(
            f"GPU 0: NVIDIA A100-SXM4-80GB (UUID: {GPU0})\n"
            f"  MIG 1g.10gb     Device  0: (UUID: {mig})\n"
            "  MIG 3g.40gb     Device  1: (UUID: MIG-bbbbbbbb-0000-4000-8000-000000000002)\n"
        ),
    )
    pool = pool_view(
        s, [], Policy("exclusive", pool=(mig, "MIG-bbbbbbbb-0000-4000-8000-000000000002"))
    )
    assert (pool["total"], pool["held"], pool["free"]) == (2, 0, 2)
    assert [d["index"] for d in pool["free_devices"]] == ["0:0", "0:1"]
    assert list(kinds(pool["free_devices"])) == [
        "NVIDIA A100-SXM4-80GB MIG 1g.10gb",
        "NVIDIA A100-SXM4-80GB MIG 3g.40gb",
    ]
    holder = Holder(CID_A, "alice", "", (mig,), started=0)
    pool = pool_view(s, [holder], Policy("exclusive", pool=(mig,)))
    assert (pool["held"], pool["free"]) == (1, 0)


def test_the_view_lists_holders_their_processes_and_strays() -> None:
    a = Holder(CID_A, "alice", "", ("0",), started=0)
    s = sample(100, 80, 0, [App(GPU0, 11, 40000, "python3", CID_A), App(GPU1, 99, 5, "x", None)])
    t = Tracker(busy=5, since=0)
    t.update(s, [a])
    out = view(s, [a], t, Policy("exclusive", pool=("0", "1")), now=130)
    (h,) = out["holders"]
    assert (h["user"], h["busy"], h["idle_seconds"]) == ("alice", True, 30)
    assert [p["pid"] for p in h["processes"]] == [11]
    assert [p["pid"] for p in out["strays"]] == [99]
    assert (out["pool"]["held"], out["pool"]["free"]) == (1, 1)
    assert out["gpus"][1]["idle_seconds"] == 130


# --- the journal -------------------------------------------------------------------------------


def test_the_journal_counts_by_reason_and_gives_a_user_the_last_reason(tmp_path: Path) -> None:
    path = str(tmp_path / "culls.jsonl")
    culling.record(path, "bob", "", decide(jupyter_idle=99, timeout=10), 5)
    culling.record(
        path, "bob", "", decide(jupyter_idle=99, timeout=10, holds_gpu=True, gpu_idle=99), 6
    )
    with open(path, "a") as f:
        f.write('{"cut off')  # a crash mid-line
    assert culling.counts(path) == {"idle": 1, "gpu-idle": 1}
    last = culling.last_for("bob", path=path)
    assert last is not None
    assert last["reason"] == "gpu-idle"
    assert culling.last_for("alice", path=path) is None


@pytest.mark.parametrize(("seconds", "shown"), [(59, "59 s"), (1800, "30 min"), (9000, "2.5 h")])
def test_spans_read_as_people_say_them(seconds: int, shown: str) -> None:
    assert shown in decide(jupyter_idle=seconds, timeout=seconds).message


def test_a_broken_monitor_falls_back_to_the_plain_rule_for_holders() -> None:
    verdict = decide(
        jupyter_idle=4000, timeout=3600, holds_gpu=True, gpu_idle=None, monitor_down=True
    )
    assert (verdict.cull, verdict.reason) == (True, "idle")
    assert "GPU use was unknown" in verdict.message
    assert not decide(
        jupyter_idle=100, timeout=3600, holds_gpu=True, gpu_idle=None, monitor_down=True
    ).cull


def test_a_holder_whose_gpu_nvml_does_not_list_is_unknown() -> None:
    a = Holder(CID_A, "alice", "", ("7",), started=0)
    s = sample(100, 0, 0, [])
    out = view(s, [a], Tracker(busy=5, since=0), Policy("exclusive", pool=("7",)), now=5000)
    assert out["holders"][0]["known"] is False, "the arbiter keeps it"
    b = Holder(CID_B, "bob", "", ("1",), started=0)
    assert view(s, [b], Tracker(busy=5, since=0), Policy("exclusive", pool=("1",)), 9)["holders"][
        0
    ]["known"]


def test_a_pinned_pool_shows_no_free_count() -> None:
    pool = pool_view(sample(1, 0, 0, []), [], Policy("pinned", pinned_users={"alice": ("0",)}))
    assert (pool["total"], pool["free"]) == (0, 0), "the form says the GPUs are assigned"


def test_a_server_asked_twice_to_stop_is_one_cull(tmp_path: Path) -> None:
    path = str(tmp_path / "culls.jsonl")
    v = decide(jupyter_idle=99, timeout=10)
    culling.record(path, "bob", "", v, 5, container=CID_B)
    culling.record(path, "bob", "", v, 10, container=CID_B)  # the first stop was slow
    culling.record(path, "ann", "", v, 11, container=CID_A)
    assert culling.counts(path) == {"idle": 2}
