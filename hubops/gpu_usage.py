"""What the GPUs do, not only who holds them: utilisation, memory and the processes on each
GPU, from NVML through nvidia-smi's query interface on the hub host, each process mapped to
its container (and so to its user) through the host's /proc/<pid>/cgroup.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass

from hubops_hub.labels import LABEL_USER

from hubops.hosts import Host, quote

GPU_FIELDS = "index,uuid,name,utilization.gpu,memory.used,memory.total"
APP_FIELDS = "gpu_uuid,pid,used_memory,process_name"
_CONTAINER_ID = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class GPUState:
    index: str
    uuid: str
    name: str
    utilization: int | None  # percent; None where NVML has none ([N/A], MIG)
    memory_used_mib: int | None
    memory_total_mib: int | None


@dataclass(frozen=True)
class GPUProcess:
    gpu_uuid: str
    pid: int
    used_mib: int | None
    process: str
    container: str | None  # the container the process runs in (None: on the host itself)
    user: str | None  # that container's hubops user


@dataclass(frozen=True)
class Usage:
    gpus: list[GPUState]
    processes: list[GPUProcess]

    def of(self, gpu: str) -> GPUState | None:
        """The state of a GPU by index or UUID (as a holder's label names it)."""
        return next((g for g in self.gpus if gpu in (g.index, g.uuid)), None)

    def processes_on(self, gpu: str) -> list[GPUProcess]:
        state = self.of(gpu)
        return [p for p in self.processes if state is not None and p.gpu_uuid == state.uuid]


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


def parse_apps(text: str) -> list[tuple[str, int, int | None, str]]:
    """``nvidia-smi --query-compute-apps=APP_FIELDS --format=csv,noheader,nounits``."""
    return [
        (uuid, int(pid), _number(used), name)
        for uuid, pid, used, name in (r[:4] for r in _rows(text) if len(r) >= 4)
        if pid.isdigit()
    ]


def containers_of(host: Host, pids: list[int]) -> dict[int, tuple[str, str | None]]:
    """pid -> (container name, its hubops user), for the PIDs that run in a container."""
    if not pids:
        return {}
    listing = host.run(
        "for p in " + " ".join(str(p) for p in pids) + "; do "
        'echo "$p $(cat /proc/$p/cgroup 2>/dev/null | tr "\\n" " ")"; done',
        check=False,
    ).stdout
    ids: dict[int, str] = {}
    for line in listing.splitlines():
        pid, _, cgroups = line.partition(" ")
        found = _CONTAINER_ID.findall(cgroups)
        if pid.isdigit() and found:
            ids[int(pid)] = found[-1]
    if not ids:
        return {}
    inspected = host.run(quote("docker", "inspect", *sorted(set(ids.values()))), check=False)
    by_id: dict[str, tuple[str, str | None]] = {}
    for c in json.loads(inspected.stdout or "[]"):
        labels = (c.get("Config") or {}).get("Labels") or {}
        by_id[str(c["Id"])] = (str(c.get("Name", "")).lstrip("/"), labels.get(LABEL_USER))
    return {pid: by_id[cid] for pid, cid in ids.items() if cid in by_id}


def read_usage(host: Host) -> Usage:
    """Every GPU's utilisation and memory, and every compute process on it with its
    container, read on ``host`` (no nvidia-smi there: no GPUs)."""
    gpus = host.run(
        f"nvidia-smi --query-gpu={GPU_FIELDS} --format=csv,noheader,nounits",
        check=False,
        timeout=60,
    )
    if not gpus.ok:
        return Usage([], [])
    apps = parse_apps(
        host.run(
            f"nvidia-smi --query-compute-apps={APP_FIELDS} --format=csv,noheader,nounits",
            check=False,
            timeout=60,
        ).stdout
    )
    where = containers_of(host, [pid for _, pid, _, _ in apps])
    processes = [
        GPUProcess(uuid, pid, used, name, *where.get(pid, (None, None)))
        for uuid, pid, used, name in apps
    ]
    return Usage(parse_gpus(gpus.stdout), processes)
