"""Parsing nvidia-smi's query interface (--format=csv,noheader,nounits), as a real H200 and a
MIG-partitioned GPU print it."""

from __future__ import annotations

from hubops_hub.nvml import parse_apps, parse_gpus

REAL_GPUS = """\
0, GPU-9c1f2a4e-1b7d-4a51-9f0e-3d2b1c0a9e8f, NVIDIA H200, 87, 40211, 143771
1, GPU-0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9, NVIDIA H200, 0, 1, 143771
2, GPU-11111111-2222-3333-4444-555555555555, NVIDIA A100-SXM4-80GB, [N/A], 13, 81920
"""
REAL_APPS = """\
GPU-9c1f2a4e-1b7d-4a51-9f0e-3d2b1c0a9e8f, 41873, 40198, /opt/venv/bin/python3
GPU-11111111-2222-3333-4444-555555555555, 5120, [N/A], python
"""


def test_gpu_states_with_numbers_and_n_a() -> None:
    gpus = parse_gpus(REAL_GPUS)
    assert [g.index for g in gpus] == ["0", "1", "2"]
    assert gpus[0].utilization == 87
    assert gpus[0].memory_used_mib == 40211
    assert gpus[0].memory_total_mib == 143771
    assert gpus[0].name == "NVIDIA H200"
    assert gpus[2].utilization is None, "MIG mode: NVML has no utilisation"


def test_compute_apps_with_host_pids() -> None:
    apps = parse_apps(REAL_APPS)
    assert (apps[0].gpu_uuid, apps[0].pid, apps[0].used_mib, apps[0].process) == (
        "GPU-9c1f2a4e-1b7d-4a51-9f0e-3d2b1c0a9e8f",
        41873,
        40198,
        "/opt/venv/bin/python3",
    )
    assert apps[1].used_mib is None
    assert parse_apps("No running processes found\n") == []
