"""The flagship `pytorch` variant, built here (no GPU is needed to build or check it): torch
imports, its CUDA is the one the image's label declares, the CUDA libraries load, and they are
in the image once. The cold build downloads about 3 GB of wheels and took about 2 minutes
here, so it is part of the default run; `nox -s pytorch` runs it alone.

On a host with a real GPU, `nox -s gpu` runs the CUDA smoke test in this image.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import testinfra

from hubops.config import environments
from hubops.config.settings import mem_bytes
from hubops.images.build import BuiltImage, build
from hubops.images.table import VERSIONS
from tests.support.checkout import REPO_ROOT, Checkout

pytestmark = pytest.mark.pytorch

CHECK = """
import ctypes, glob, json, os, sysconfig
import torch, torchvision, numpy
from torchvision.ops import nms
site = sysconfig.get_paths()["purelib"]
found = {}
for name in ("libcudart.so*", "libcublas.so*", "libcudnn.so*"):
    paths = sorted(p for p in glob.glob(f"{site}/nvidia/**/{name}", recursive=True)
                   if not os.path.islink(p))
    found[name] = paths
    ctypes.CDLL(paths[0])
boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]])
kept = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5).tolist()  # a torchvision operator
print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda,
                  "torchvision": torchvision.__version__, "nms": kept,
                  "numpy": numpy.from_dlpack(torch.arange(3)).tolist(),
                  "cudnn": torch.backends.cudnn.version(), "available": torch.cuda.is_available(),
                  "libs": found}))
"""


@pytest.fixture(scope="module")
def pytorch(
    docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> BuiltImage:
    """The pytorch variant as an environment that offers it builds it (timed)."""
    root = tmp_path_factory.mktemp("pytorch")
    checkout = Checkout(root)
    shutil.copytree(REPO_ROOT / "config" / "environments", root / "config" / "environments")
    checkout.write_env(
        "torch",
        "extends: local.yaml\n"
        "singleuser:\n  image: null\n  images:\n    Python: base\n    PyTorch: pytorch\n",
    )
    start = time.monotonic()
    built = build(docker_client, REPO_ROOT, environments.load(root, "torch"))
    image = next(b for b in built if b.variant == "pytorch")
    print(
        f"\npytorch variant: {image.size / 1e9:.2f} GB, built in {image.seconds:.0f}s "
        f"({'cached' if image.cached else 'cold'}; {time.monotonic() - start:.0f}s with its "
        "parents)"
    )
    return image


@pytest.fixture
def container(
    docker_client: docker.DockerClient, pytorch: BuiltImage
) -> Iterator[testinfra.host.Host]:
    c = docker_client.containers.run(
        pytorch.pinned,
        entrypoint=["sleep", "infinity"],
        command=[],
        detach=True,
        network_mode="none",
        labels={"org.hubops.role": "test"},
    )
    yield testinfra.get_host(f"docker://{c.id}")
    c.remove(force=True)


def test_torch_imports_and_its_cuda_is_the_labelled_one(
    pytorch: BuiltImage, container: testinfra.host.Host
) -> None:
    result = json.loads(container.check_output(f"python3 -c '{CHECK}'"))
    assert result["torch"].startswith(VERSIONS["TORCH_VERSION"]), result
    # torchvision built for this torch: its C++ operators load and run
    assert result["torchvision"].startswith(VERSIONS["TORCHVISION_VERSION"]), result
    assert result["nms"] == [0, 2], result
    assert result["numpy"] == [0, 1, 2], "numpy and torch share memory"
    assert result["cuda"] == pytorch.labels["org.hubops.cuda"] == VERSIONS["TORCH_CUDA"], result
    assert result["cudnn"], "cuDNN loads"
    assert result["available"] is False, "no GPU here: torch says so instead of failing"
    for name, paths in result["libs"].items():
        assert len(paths) == 1, f"{name}: one copy from the wheels, found {paths}"


def test_the_cuda_user_space_is_shipped_once(container: testinfra.host.Host) -> None:
    """No CUDA runtime base underneath: the wheels' libraries are the only ones."""
    as_root = testinfra.get_host(f"docker://root@{container.backend.name}")
    for name in ("libcudart.so*", "libcublas.so*", "libcudnn.so*"):
        found = as_root.check_output(
            f"find / -xdev \\( -path /proc -prune \\) -o -name '{name}' -type f -print"
        ).split()
        assert len(found) == 1, f"{name} is in the image {len(found)} times: {found}"
    assert not container.file("/usr/local/cuda").exists, "no CUDA runtime base"


def test_torch_is_byte_compiled_for_the_non_root_user(container: testinfra.host.Host) -> None:
    """Users cannot write to /usr/local: without .pyc files every import compiles again."""
    assert container.user().uid == 1000
    missing = container.check_output(
        'python3 -c "import importlib.util, sys, torch, os; '
        'print(os.path.exists(importlib.util.cache_from_source(torch.__file__)))"'
    )
    assert missing == "True", "torch/__init__.py has no .pyc"


# Four samples of 80 MiB, two DataLoader workers: each batch goes from a worker to the loader
# through /dev/shm, and two workers keep up to four batches there at once (prefetch 2).
DATALOADER = """
import torch
from torch.utils.data import DataLoader, Dataset

class Big(Dataset):
    def __len__(self):
        return 4
    def __getitem__(self, i):
        return torch.full((20 * 2**20,), float(i))  # 80 MiB of float32: more than 64 MiB

loader = DataLoader(Big(), batch_size=1, num_workers=2)
print("sum", sum(float(batch[0, 0]) for batch in loader), flush=True)
"""


def _train(docker_client: docker.DockerClient, image: str, **limits: object) -> tuple[int, str]:
    c = docker_client.containers.run(
        image,
        ["python3", "-c", DATALOADER],
        detach=True,
        network_mode="none",
        mem_limit="2g",  # the local environment's singleuser.mem_limit
        labels={"org.hubops.role": "test"},
        **limits,
    )
    try:
        code = int(c.wait(timeout=300)["StatusCode"])
        return code, c.logs().decode(errors="replace")
    finally:
        c.remove(force=True)


def test_a_dataloader_with_workers_trains_with_the_dev_shm_hubops_gives(
    docker_client: docker.DockerClient, pytorch: BuiltImage, tmp_path: Path
) -> None:
    """PyTorch's DataLoader with num_workers=2 and batches of 80 MiB (CPU tensors) in the
    pytorch image: with the /dev/shm that hubops gives a server of the local environment (half
    of its 2G limit) it runs; with Docker's default 64M it dies, as users saw it."""
    shutil.copytree(REPO_ROOT / "config" / "environments", tmp_path / "config" / "environments")
    settings = environments.load(tmp_path, "local").settings
    shm = mem_bytes(settings.singleuser.shm_size_for(None))
    assert shm == 2**30, "local: half of singleuser.mem_limit 2G"
    code, log = _train(docker_client, pytorch.pinned, shm_size=shm)
    assert code == 0, f"the DataLoader failed with /dev/shm at {shm} bytes: {log[-1500:]}"
    assert "sum 6.0" in log, log[-500:]
    code, log = _train(docker_client, pytorch.pinned)  # Docker's default /dev/shm
    assert code != 0, "with Docker's 64M /dev/shm the workers' batches do not fit"
    assert "shared memory" in log or "Bus error" in log or "No space left" in log, log[-1500:]
