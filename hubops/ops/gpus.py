"""``invoke gpus``: who holds which GPU, and what the GPUs do.

Who holds which GPU is read from the user containers on the hub host (their labels), or from
the swarm's tasks on a swarm. What the GPUs do (utilisation, memory, the processes on each GPU
and whose they are, how long each holder has been idle) is the hub's GPU monitor's view
(hubops_hub.gpumon), the same that the spawn form and the metrics read. Where no monitor
answers (no GPU policy, or a hub that is down), the same module takes one sample with the same
probe container (idle times are then unknown): NVML is read, and each process mapped to its
container, in one place, hubops_hub.nvml.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from hubops_hub.culling import span
from hubops_hub.gpumon import holder_from_labels, kinds
from hubops_hub.gpus import assigned_gpus
from hubops_hub.labels import LABEL_ENV, LABEL_GPUS, LABEL_SERVER, LABEL_STARTED, LABEL_USER

from hubops.config.settings import Environment, GPUSettings
from hubops.deploy.swarm import nodes
from hubops.errors import HubopsError
from hubops.host import docker as dockerhost
from hubops.host.base import Host, quote
from hubops.plan.hub_config import gpu_policy
from hubops.plan.model import DOCKER_SOCKET, HUB_DATA_DIR
from hubops.plan.refs import names


@dataclass(frozen=True)
class GPUHolder:
    user: str
    server: str
    gpus: tuple[str, ...]
    since: datetime | None
    image: str
    state: str
    node: str = ""  # cluster swarm: the node the server's task runs on
    container: str = ""  # its container's name (a single host)


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
                container=str(c.get("Name", "")).lstrip("/"),
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


def in_hub(hub: dict[str, Any], command: list[str], mount: str) -> str:
    """``command`` in the hub container where it runs, else in a one-off container of its
    image (no network) with ``mount``, what the command needs of the host."""
    if dockerhost.is_running(hub):
        return quote("docker", "exec", str(hub["Name"]).lstrip("/"), *command)
    image = str((hub.get("Config") or {}).get("Image", ""))
    return quote("docker", "run", "--rm", "--network=none", "--mount", mount, image, *command)


def probe_once(host: Host, environment: str, settings: Environment) -> dict[str, Any] | None:
    """One sample through the monitor's own module and probe, as the monitor's view (with
    ``once``: idle times unknown): run in the hub container where it runs, else in a one-off
    container of its image with the Docker socket. None where the environment has no hub."""
    hub = dockerhost.inspect(host, "container", names(environment)["hub"])
    if hub is None:
        return None
    image = str((hub.get("Config") or {}).get("Image", ""))
    module = [
        "python3",
        "-m",
        "hubops_hub.gpumon",
        "--once",
        f"--environment={environment}",
        f"--image={image}",
        f"--busy={settings.gpu.busy_utilization}",
        f"--policy={json.dumps(gpu_policy(settings), sort_keys=True)}",
    ]
    mount = f"type=bind,source={settings.paths.docker_socket},target={DOCKER_SOCKET}"
    done = host.run(in_hub(hub, module, mount), check=False, timeout=120)
    try:
        view: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        tail = (done.stderr or done.stdout).strip()[-300:]
        return {"error": f"the GPU probe failed: {tail}", "once": True, "gpus": [], "holders": []}
    return view


def read_view(host: Host, environment: str, settings: Environment) -> dict[str, Any] | None:
    """What the GPUs do: the hub's GPU monitor's view, or else one sample (:func:`probe_once`)."""
    return read_monitor(host, names(environment)["hub"]) or probe_once(host, environment, settings)


GPU_COLUMNS = ("user", "server", "GPUs", "use", "memory", "processes", "idle", "since", "image")


@dataclass(frozen=True)
class Report:
    rows: list[tuple[str, ...]]  # one per holder, in GPU_COLUMNS' order
    notes: list[str]  # what the table cannot say: strays, the free GPUs, a missing monitor


def report(found: list[GPUHolder], view: dict[str, Any], g: GPUSettings) -> Report:
    """``invoke gpus``' table: each holder (from its labels) with what its GPUs do (from the
    view), and the lines under it."""
    gpus = view.get("gpus") or []
    seen = {(m["user"], m["server"] or "(default)"): m for m in view.get("holders") or []}
    once = bool(view.get("once"))
    rows: list[tuple[str, ...]] = []
    for h in found:
        ids = [x["index"] for x in gpus] if h.gpus == ("all",) else list(h.gpus)
        states = [_gpu(gpus, x) for x in ids]
        use = ", ".join(
            f"{s['utilization']}%" if s and s["utilization"] is not None else "?" for s in states
        )
        memory = ", ".join(
            f"{s['memory_used_mib']} MiB" if s and s["memory_used_mib"] is not None else "?"
            for s in states
        )
        mine = seen.get((h.user, h.server), {})
        procs = ", ".join(f"{p['pid']} ({h.container})" for p in mine.get("processes", []))
        rows.append(
            (
                h.user,
                h.server,
                ", ".join(h.gpus),
                use if gpus else "-",
                memory if gpus else "-",
                procs or "-",
                span(float(mine["idle_seconds"])) if mine and not once else "?",
                h.since.strftime("%Y-%m-%d %H:%M UTC") if h.since else "?",
                h.image,
            )
        )
    notes = []
    if once and g.policy != "none":
        notes.append("idle: ? (the hub's GPU monitor, hubops-gpus, does not answer)")
    if view.get("error") and not gpus:
        notes.append(f"GPUs: ? ({view['error']})")
    notes += [
        f"GPU {p['gpu_uuid']}: pid {p['pid']} ({p['process']}) runs outside hubops' user servers"
        for p in view.get("strays") or []
    ]
    pool = view.get("pool") if g.policy in ("exclusive", "shared") else None
    if pool and pool.get("total"):  # what the spawn form shows, from the same view
        notes.append(f"{pool['free']} of {pool['total']} GPUs free")
        notes += [
            f"  {kind}: " + ", ".join(f"GPU {d['index']}" for d in devices)
            for kind, devices in kinds(pool["free_devices"]).items()
        ]
    elif g.pool:
        held = {gpu for h in found for gpu in h.gpus}
        notes.append(f"{len([x for x in g.pool if x not in held])} of {len(g.pool)} GPUs free")
    return Report(rows, notes)


def _gpu(gpus: list[dict[str, Any]], gpu_id: str) -> dict[str, Any] | None:
    """A GPU of the view by its index or UUID, as a holder's label names it."""
    return next((g for g in gpus if gpu_id in (g["index"], g["uuid"])), None)


# --- invoke gpus --usage: GPU-hours, held and busy --------------------------------------------

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str) -> float:
    """``--since``: seconds back from now, as 30d, 12h, 90m, 2w or plain seconds; 0: ever."""
    value = text.strip().lower()
    unit = _UNITS.get(value[-1:]) if value else None
    number = value[:-1] if unit else value
    try:
        seconds = float(number) * (unit or 1)
    except ValueError:
        seconds = -1.0
    if seconds < 0 or not value:
        raise HubopsError(
            f"invoke gpus --since: got {text!r}; expected a duration such as 30d, 12h, 90m or "
            "2w (0: since the first sample)"
        )
    return seconds


USAGE_COLUMNS = {
    by: (by, "GPU-hours held", "GPU-hours busy", "busy share") for by in ("user", "group")
}


def gpu_hours(seconds: float) -> str:
    """GPU-seconds as hours:minutes:seconds (2 GPUs for 90 minutes: 3:00:00)."""
    whole = round(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def read_usage(
    host: Host, environment: str, settings: Environment, since: float, by: str
) -> dict[str, Any]:
    """GPU-seconds per user or group since ``since`` seconds back (0: ever), from the GPU
    monitor's record (hubops_hub.gpuusage): in the hub container where it runs, else in a
    one-off container of its image with the hub's data directory, read-only."""
    hub = dockerhost.inspect(host, "container", names(environment)["hub"])
    if hub is None:
        raise HubopsError(
            f"{host.name}: environment {environment} has no hub container, so no record of GPU "
            "use; deploy it first (invoke deploy --env ...)"
        )
    module = ["python3", "-m", "hubops_hub.gpuusage", f"--since={since:g}", f"--by={by}"]
    mount = f"type=bind,source={settings.paths.data_dir},target={HUB_DATA_DIR},readonly"
    done = host.run(in_hub(hub, module, mount), check=False, timeout=120)
    try:
        data: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        tail = (done.stderr or done.stdout).strip()[-300:]
        raise HubopsError(f"{host.name}: could not read the GPU-hours: {tail}") from None
    return data


def usage_rows(data: dict[str, Any], by: str) -> list[tuple[str, ...]]:
    """The table's rows: who, hours held, hours busy, busy share (of held), most held first."""
    rows: list[tuple[str, ...]] = []
    for r in data.get("rows") or []:
        who = str(r.get(by) or "") or ("(no group)" if by == "group" else "?")
        held, busy = float(r["held_seconds"]), float(r["busy_seconds"])
        share = f"{100 * busy / held:.0f}%" if held else "-"
        rows.append((who, gpu_hours(held), gpu_hours(busy), share))
    return rows
