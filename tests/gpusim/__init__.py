"""A SIMULATED GPU host for machines without GPUs (CI). Never installed on a real host.

Docker registers its NVIDIA device driver when an executable named
``nvidia-container-runtime-hook`` is on dockerd's PATH. GPU device requests then succeed, the
container gets ``NVIDIA_VISIBLE_DEVICES`` (``all`` or the requested IDs), and dockerd runs
``nvidia-container-runtime-hook prestart`` with the OCI state on stdin. This package's hook
puts a fake ``nvidia-smi`` into the container that lists the visible devices of a fake
inventory. Everything from the device request on is Docker's real code path.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

HOOK = Path(__file__).with_name("hook.py")
SMI = Path(__file__).with_name("nvidia_smi.py")
RUNTIME = Path(__file__).with_name("runtime.py")
SIMULATED_NAME = "hubops SIMULATED GPU"


@dataclass(frozen=True)
class FakeGPU:
    index: int
    uuid: str
    mig: tuple[str, ...] = ()  # MIG device UUIDs

    def as_dict(self) -> dict[str, object]:
        return {"index": self.index, "uuid": self.uuid, "mig": list(self.mig)}


def inventory(count: int, mig_on: tuple[int, ...] = ()) -> list[FakeGPU]:
    """``count`` fake GPUs; those in ``mig_on`` carry two MIG devices each."""
    return [
        FakeGPU(
            index=i,
            uuid=f"GPU-5e1f{i:04d}-0000-4000-8000-00000000{i:04d}",
            mig=tuple(f"MIG-5e1f{i:04d}-{m:04d}-4000-8000-0000000000{m:02d}" for m in range(2))
            if i in mig_on
            else (),
        )
        for i in range(count)
    ]


def install(directory: Path, gpus: list[FakeGPU]) -> Path:
    """Write the hook, the host's fake nvidia-smi and nvidia-ctk, and the inventory into
    ``directory`` (to go first on the simulated engine's and the host's PATH)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "inventory.json").write_text(json.dumps([g.as_dict() for g in gpus]))
    for name, source in (("nvidia-container-runtime-hook", HOOK), ("nvidia-smi", SMI)):
        target = directory / name
        target.write_text(
            source.read_text().replace("@INVENTORY@", str(directory / "inventory.json"))
        )
        target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    runtime = directory / "nvidia-container-runtime"
    runtime.write_text(
        RUNTIME.read_text().replace("@HOOK@", str(directory / "nvidia-container-runtime-hook"))
    )
    runtime.chmod(0o755)
    ctk = directory / "nvidia-ctk"
    ctk.write_text(
        "#!/bin/sh\necho 'NVIDIA Container Toolkit CLI version 1.17.0 (hubops SIMULATED)'\n"
    )
    ctk.chmod(0o755)
    os.sync()
    return directory
