"""``invoke gpus``: who holds which GPU, and what the GPUs do.

Who holds which GPU is read from the user containers on the hub host (their labels), or from
the swarm's tasks on a swarm. What the GPUs do (utilisation, memory and the processes on each
GPU) comes from NVML through nvidia-smi's query interface on the hub host, each process mapped
to its container (and so to its user) through the host's /proc/<pid>/cgroup.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from hubops_hub.gpumon import holder_from_labels
from hubops_hub.gpus import assigned_gpus
from hubops_hub.labels import LABEL_ENV, LABEL_GPUS, LABEL_SERVER, LABEL_STARTED, LABEL_USER
from hubops_hub.nvml import APP_FIELDS, GPU_FIELDS, GPUState, container_of, parse_apps, parse_gpus

from hubops.deploy.swarm import nodes
from hubops.host.base import Host, quote


@dataclass(frozen=True)
class GPUHolder:
    user: str
    server: str
    gpus: tuple[str, ...]
    since: datetime | None
    image: str
    state: str
    node: str = ""  # cluster swarm: the node the server's task runs on


def holders(host: Host, environment: str) -> list[GPUHolder]:
    """Every user container of the environment that holds GPUs, oldest first."""
    listing = host.run(
        quote(
            "docker",
            "ps",
            "--all",
            "--quiet",
            "--filter",
            f"label={LABEL_ENV}={environment}",
            "--filter",
            f"label={LABEL_GPUS}",
        )
    ).stdout.split()
    if not listing:
        return []
    out = []
    for c in json.loads(host.run(quote("docker", "inspect", *listing)).stdout):
        h = holder_from_labels(str(c["Id"]), c["Config"].get("Labels") or {})
        if h is None:
            continue
        out.append(
            GPUHolder(
                user=h.user,
                server=h.server or "(default)",
                gpus=h.gpus,
                since=datetime.fromtimestamp(h.started, tz=timezone.utc) if h.started else None,
                image=str(c["Config"].get("Image", "")),
                state=str(c["State"].get("Status", "")),
            )
        )
    return sorted(out, key=lambda h: h.since or datetime.min.replace(tzinfo=timezone.utc))


def swarm_holders(host: Host, environment: str) -> list[GPUHolder]:
    """Every user service of the environment that holds GPUs, from its running tasks."""
    services = host.run(
        quote(
            "docker",
            "service",
            "ls",
            "--quiet",
            "--filter",
            f"label={LABEL_ENV}={environment}",
            "--filter",
            f"label={LABEL_GPUS}",
        ),
        timeout=60,
    ).stdout.split()
    if not services:
        return []
    names = {n.id: n.hostname for n in nodes(host)}
    out = []
    for service in json.loads(host.run(quote("docker", "service", "inspect", *services)).stdout):
        labels = (service.get("Spec") or {}).get("Labels") or {}
        task_ids = host.run(
            quote(
                "docker",
                "service",
                "ps",
                "--quiet",
                "--filter",
                "desired-state=running",
                str(service["ID"]),
            )
        ).stdout.split()
        tasks = (
            json.loads(host.run(quote("docker", "inspect", *task_ids)).stdout) if task_ids else []
        )
        for task in tasks:
            started = labels.get(LABEL_STARTED)
            out.append(
                GPUHolder(
                    user=str(labels.get(LABEL_USER, "?")),
                    server=str(labels.get(LABEL_SERVER, "")) or "(default)",
                    gpus=assigned_gpus(task),
                    since=datetime.fromtimestamp(int(started), tz=timezone.utc)
                    if started
                    else None,
                    image=str(
                        ((task.get("Spec") or {}).get("ContainerSpec") or {}).get("Image", "")
                    ),
                    state=str((task.get("Status") or {}).get("State", "")),
                    node=names.get(str(task.get("NodeID", "")), str(task.get("NodeID", ""))),
                )
            )
    return sorted(out, key=lambda h: h.since or datetime.min.replace(tzinfo=timezone.utc))


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
        found = container_of(cgroups)
        if pid.isdigit() and found:
            ids[int(pid)] = found
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
    where = containers_of(host, [a.pid for a in apps])
    processes = [
        GPUProcess(a.gpu_uuid, a.pid, a.used_mib, a.process, *where.get(a.pid, (None, None)))
        for a in apps
    ]
    return Usage(parse_gpus(gpus.stdout), processes)


def read_monitor(host: Host, hub_container: str) -> dict[str, Any] | None:
    """The hub's GPU monitor's view (hubops_hub.gpumon): the same that the spawn form and the
    metrics read, with each holder's idle time. None where no monitor answers."""
    done = host.run(
        quote("docker", "exec", hub_container, "python3", "-m", "hubops_hub.gpumon", "--print"),
        check=False,
        timeout=60,
    )
    if not done.ok:
        return None
    try:
        state: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        return None
    return state
