"""GPUs in user servers: nvidia-smi -L lists exactly the GPUs the policy assigns. On the
SIMULATED lab host (CI) the GPUs are fake (tests/gpusim); with --env on a real GPU host they are
real, and a CUDA smoke test runs in the pytorch variant."""

from __future__ import annotations

import pytest

from tests.support.labhost import SIMULATED_GPUS
from tests.support.verify import LoggedIn, Target


def listed(target: Target, container: str) -> list[str]:
    result = target.in_container(container, "nvidia-smi -L")
    return [line for line in result.stdout.splitlines() if line.startswith("GPU ")]


def test_policy_all_shows_every_gpu_of_the_host(target: Target, alice: LoggedIn) -> None:
    if target.env.settings.gpu.policy != "all":
        pytest.skip(f"gpu.policy is {target.env.settings.gpu.policy}")
    host_gpus = [
        line
        for line in target.host.run("nvidia-smi -L").stdout.splitlines()
        if line.startswith("GPU ")
    ]
    if not host_gpus:
        pytest.skip("no NVIDIA GPU on the hub host (nvidia-smi -L lists none)")
    seen = listed(target, alice.container)
    uuids = sorted(line.split("UUID: ")[1].rstrip(")") for line in seen)
    want = sorted(line.split("UUID: ")[1].rstrip(")") for line in host_gpus)
    assert uuids == want, f"the container sees {uuids}, the host has {want}"
    if target.simulated:
        assert uuids == sorted(g.uuid for g in SIMULATED_GPUS)
        assert all("SIMULATED" in line for line in seen), "simulated GPUs say so"


def test_policy_none_shows_no_gpu(target: Target, alice: LoggedIn) -> None:
    if target.env.settings.gpu.policy != "none":
        pytest.skip(f"gpu.policy is {target.env.settings.gpu.policy}, not none")
    assert listed(target, alice.container) == []


@pytest.mark.gpu
def test_cuda_works_in_the_pytorch_variant(target: Target) -> None:
    """On a real GPU host: torch.cuda.is_available() in a pytorch-variant container."""
    if target.simulated:
        pytest.skip("SIMULATED GPUs cannot run CUDA; this runs on a real GPU host (nox -s gpu)")
    refs = [ref for ref in target.plan.images if ":pytorch-" in ref]
    if not refs:
        pytest.skip("the environment offers no pytorch variant")
    out = target.host.run(
        f"docker run --rm --gpus all --entrypoint python3 {refs[0]} -c "
        "'import torch; print(torch.cuda.is_available(), torch.cuda.device_count())'"
    )
    assert out.rc == 0, out.stderr
    available, count = out.stdout.split()
    assert available == "True", f"torch.cuda.is_available() is {available}: {out.stderr}"
    assert int(count) >= 1
