"""NVML samples of two H200 GPUs, as the GPU monitor takes them, for the unit tests of what
the monitor makes of them (busy, idle, GPU-seconds)."""

from __future__ import annotations

from hubops_hub.nvml import App, GPUState, Sample, parse_list

GPU0 = "GPU-00000000-0000-4000-8000-000000000000"
GPU1 = "GPU-11111111-1111-4111-8111-111111111111"


def sample(at: float, util0: int, util1: int, apps: list[App]) -> Sample:
    """At ``at``: GPU 0 at ``util0`` % with 40000 MiB used, GPU 1 at ``util1`` % and empty."""
    return Sample(
        at=at,
        gpus=[
            GPUState("0", GPU0, "NVIDIA H200", util0, 40000, 143771),
            GPUState("1", GPU1, "NVIDIA H200", util1, 0, 143771),
        ],
        apps=apps,
        devices=parse_list(
            f"GPU 0: NVIDIA H200 (UUID: {GPU0})\nGPU 1: NVIDIA H200 (UUID: {GPU1})\n"
        ),
    )
