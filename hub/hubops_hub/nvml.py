"""NVML through nvidia-smi's query interface: the one parser, and the one mapping of a process
to its container, for the hub's GPU monitor (``hubops_hub.gpumon``, which runs :func:`main` in
a probe container) and so for ``invoke gpus``, which reads the monitor's view or takes one
sample through it (``hubops.ops.gpus``).

The queries, each printed with ``--format=csv,noheader,nounits``:

- ``--query-gpu=GPU_FIELDS``: one row per GPU, utilisation in percent (``[N/A]`` in MIG mode),
  memory in MiB;
- ``--query-compute-apps=APP_FIELDS``: one row per process on a GPU, its host PID (NVML
  reports host PIDs, also inside a container);
- ``-L``: the GPUs and their MIG devices, with the MIG profile (``MIG 1g.10gb``).

Run as a module (``python3 -m hubops_hub.nvml``), with the host's PID namespace, it prints one
JSON sample: the three answers parsed, and for each process the 64-hex container ID from its
``/proc/<pid>/cgroup`` (none: a process of the host itself).
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

GPU_FIELDS = "index,uuid,name,utilization.gpu,memory.used,memory.total"
APP_FIELDS = "gpu_uuid,pid,used_memory,process_name"
CONTAINER_ID = re.compile(r"[0-9a-f]{64}")
_GPU_LINE = re.compile(r"^GPU (\d+): (.+?) \(UUID: (GPU-[^)\s]+)\)")
_MIG_LINE = re.compile(r"^\s+MIG (\S+)\s+Device\s+(\d+): \(UUID: (MIG-[^)\s]+)\)")


@dataclass(frozen=True)
class GPUState:
    index: str
    uuid: str
    name: str
    utilization: int | None  # percent; None where NVML has none ([N/A], MIG)
    memory_used_mib: int | None
    memory_total_mib: int | None


@dataclass(frozen=True)
class App:
    gpu_uuid: str
    pid: int
    used_mib: int | None
    process: str
    container_id: str | None = None  # from /proc/<pid>/cgroup; None: on the host itself


@dataclass(frozen=True)
class Device:
    """A GPU, or a MIG device of one, as ``nvidia-smi -L`` lists it."""

    index: str  # "0", or "0:1" for MIG device 1 of GPU 0
    uuid: str  # GPU-... or MIG-...
    model: str
    mig_profile: str = ""  # 1g.10gb; "" for a whole GPU
    gpu_uuid: str = ""  # a MIG device's GPU

    def describe(self) -> str:
        if self.mig_profile:
            return f"GPU {self.index} MIG {self.mig_profile} ({self.model})"
        return f"GPU {self.index} ({self.model})"


@dataclass(frozen=True)
class Sample:
    at: float
    gpus: list[GPUState]
    apps: list[App]
    devices: list[Device] = field(default_factory=list)

    def device(self, gpu_id: str) -> Device | None:
        """A pool's ID (index, GPU UUID or MIG UUID) as a listed device."""
        return next((d for d in self.devices if gpu_id in (d.index, d.uuid)), None)

    def state(self, gpu_id: str) -> GPUState | None:
        """The state of the GPU that ``gpu_id`` is or is part of (a MIG device's GPU)."""
        device = self.device(gpu_id)
        uuid = (device.gpu_uuid or device.uuid) if device else gpu_id
        return next((g for g in self.gpus if uuid in (g.uuid, g.index)), None)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Sample:
        return cls(
            at=float(data["at"]),
            gpus=[GPUState(**g) for g in data.get("gpus", [])],
            apps=[App(**a) for a in data.get("apps", [])],
            devices=[Device(**d) for d in data.get("devices", [])],
        )


def _number(text: str) -> int | None:
    try:
        return int(float(text))
    except ValueError:
        return None  # [N/A], [Not Supported]


def _rows(text: str) -> list[list[str]]:
    return [row for row in csv.reader(text.splitlines(), skipinitialspace=True) if row]


def parse_gpus(text: str) -> list[GPUState]:
    """``nvidia-smi --query-gpu=GPU_FIELDS --format=csv,noheader,nounits``."""
    return [
        GPUState(index, uuid, name, _number(util), _number(used), _number(total))
        for index, uuid, name, util, used, total in (r[:6] for r in _rows(text) if len(r) >= 6)
    ]


def parse_apps(text: str) -> list[App]:
    """``nvidia-smi --query-compute-apps=APP_FIELDS --format=csv,noheader,nounits``."""
    return [
        App(uuid, int(pid), _number(used), name)
        for uuid, pid, used, name in (r[:4] for r in _rows(text) if len(r) >= 4)
        if pid.isdigit()
    ]


def parse_list(text: str) -> list[Device]:
    """``nvidia-smi -L``: every GPU, each followed by its MIG devices."""
    out: list[Device] = []
    gpu: Device | None = None
    for line in text.splitlines():
        m = _GPU_LINE.match(line)
        if m:
            gpu = Device(index=m[1], uuid=m[3], model=m[2])
            out.append(gpu)
            continue
        m = _MIG_LINE.match(line)
        if m and gpu is not None:
            out.append(
                Device(
                    index=f"{gpu.index}:{m[2]}",
                    uuid=m[3],
                    model=gpu.model,
                    mig_profile=m[1],
                    gpu_uuid=gpu.uuid,
                )
            )
    return out


def container_of(cgroup_text: str) -> str | None:
    """The container ID in a process's /proc/<pid>/cgroup (Docker's cgroupfs and systemd
    drivers, cgroup v1 and v2: the last 64-hex name), or None."""
    found = CONTAINER_ID.findall(cgroup_text)
    return found[-1] if found else None


def _smi(*args: str) -> str:
    done = subprocess.run(
        ["nvidia-smi", *args], capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"nvidia-smi {' '.join(args)}: {(done.stderr or done.stdout).strip()}")
    return done.stdout


def probe() -> Sample:
    """One sample, read here: run where nvidia-smi sees every GPU, with the host's PIDs."""
    gpus = parse_gpus(_smi(f"--query-gpu={GPU_FIELDS}", "--format=csv,noheader,nounits"))
    apps = []
    for app in parse_apps(
        _smi(f"--query-compute-apps={APP_FIELDS}", "--format=csv,noheader,nounits")
    ):
        try:
            with open(f"/proc/{app.pid}/cgroup", encoding="utf-8") as f:
                cid = container_of(f.read())
        except OSError:  # gone since
            cid = None
        apps.append(App(app.gpu_uuid, app.pid, app.used_mib, app.process, cid))
    return Sample(at=time.time(), gpus=gpus, apps=apps, devices=parse_list(_smi("-L")))


def main() -> int:
    try:
        print(json.dumps(probe().as_json()))
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"hubops GPU probe: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
