"""cluster: swarm. The hub and the proxy run as containers on a manager node, on an attachable
overlay network; user servers are swarm services (HubopsSwarmSpawner in the hub image).

What the deploy checks before it changes anything: the host is a swarm manager, and every GPU
kind a profile reserves is advertised by a node. What `invoke gpus` and `doctor` read: the
swarm's nodes and tasks.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from hubops_hub.gpus import advertised_gpus
from hubops_hub.labels import LABEL_ENV

from hubops.config.settings import Environment
from hubops.errors import DeployError
from hubops.host import docker as dockerhost
from hubops.host.base import Host, quote
from hubops.plan.model import Plan


@dataclass(frozen=True)
class NodeInfo:
    id: str
    hostname: str
    role: str
    state: str
    availability: str
    address: str
    labels: dict[str, str]
    gpus: dict[str, tuple[str, ...]]  # generic resource kind -> advertised IDs


def swarm_state(host: Host) -> dict[str, Any]:
    out = host.run("docker info --format '{{json .Swarm}}'", timeout=60).stdout.strip()
    return dict(json.loads(out or "{}"))


def manager_problem(host: Host) -> str | None:
    """Why ``host`` cannot hold a swarm hub (None: it is a reachable manager)."""
    state = swarm_state(host)
    if state.get("LocalNodeState") != "active":
        return (
            f"cluster is swarm, but {host.name}'s Docker engine is in no swarm "
            f"(Swarm.LocalNodeState {state.get('LocalNodeState') or 'inactive'!r}); run "
            "`docker swarm init` there (or `docker swarm join` it as a manager), or set "
            "cluster: docker"
        )
    if not state.get("ControlAvailable"):
        return (
            f"cluster is swarm, but {host.name} is a swarm worker, not a manager (the hub "
            "creates services, which only a manager can); deploy to a manager (ssh.host), or "
            "promote this node: `docker node promote <node>` on a manager"
        )
    return None


def nodes(host: Host) -> list[NodeInfo]:
    ids = host.run(quote("docker", "node", "ls", "--quiet"), timeout=60).stdout.split()
    if not ids:
        return []
    found = json.loads(host.run(quote("docker", "node", "inspect", *ids), timeout=60).stdout)
    out = []
    for n in found:
        out.append(
            NodeInfo(
                id=str(n["ID"]),
                hostname=str((n.get("Description") or {}).get("Hostname", "")),
                role=str((n.get("Spec") or {}).get("Role", "")),
                state=str((n.get("Status") or {}).get("State", "")),
                availability=str((n.get("Spec") or {}).get("Availability", "")),
                address=str((n.get("Status") or {}).get("Addr", "")),
                labels=dict((n.get("Spec") or {}).get("Labels") or {}),
                gpus=advertised_gpus(n),
            )
        )
    return out


def gpu_kind_problem(settings: Environment, found: list[NodeInfo]) -> str | None:
    """The first profile that reserves a GPU kind no node advertises (None: all are)."""
    if settings.gpu.policy == "none":
        return None
    advertised = {kind for n in found for kind in n.gpus}
    for i, profile in enumerate(settings.singleuser.profiles):
        if profile.max_gpus and profile.gpu_kind not in advertised:
            offer = ", ".join(sorted(advertised)) or "none"
            return (
                f"singleuser.profiles.{i}.gpu_kind is {profile.gpu_kind!r}, which no node of "
                f"the swarm advertises (advertised kinds: {offer}); set it to one of them, or "
                "advertise it on the GPU nodes (`invoke host.prepare` writes "
                "node-generic-resources KIND=ID into their daemon.json)"
            )
    return None


def preflight(host: Host, settings: Environment) -> None:
    """Refuse a swarm deploy that cannot work, before anything changes."""
    problem = manager_problem(host) or gpu_kind_problem(settings, nodes(host))
    if problem:
        raise DeployError(f"{problem}. Nothing was changed.")


def ensure_network(host: Host, plan: Plan) -> list[str]:
    """The environment's attachable overlay network (the swarm picks its subnet); what was
    done. A bridge network of the same name (a single-host deploy before) is refused."""
    found = dockerhost.inspect(host, "network", plan.network)
    if found is not None:
        if found.get("Driver") != "overlay" or not found.get("Attachable"):
            raise DeployError(
                f"{host.name}: {plan.network} is a {found.get('Driver')} network, and "
                "cluster swarm needs an attachable overlay of that name; stop the single-host "
                f"deployment first (`invoke swarm.migrate` does), or remove the network. "
                "Nothing was changed."
            )
        return []
    host.run(
        quote(
            "docker",
            "network",
            "create",
            "--driver",
            "overlay",
            "--attachable",
            "--label",
            f"{LABEL_ENV}={plan.environment}",
            plan.network,
        ),
        timeout=60,
    )
    return [f"network {plan.network} (overlay, attachable)"]


def shared_path_check(host: Host, path: str, image: str, timeout: float = 120) -> dict[str, str]:
    """Whether every ready node sees the same ``path``: a marker file written here, looked for
    by a global job (one task per node) that mounts ``path``. Node hostname -> "ok" or why
    not. The job also shows that ``image`` is on every node (a node without it fails)."""
    marker = f".hubops-shared-{uuid.uuid4().hex[:12]}"
    name = f"hubops-check-{uuid.uuid4().hex[:8]}"
    host.run(f"touch {quote(f'{path}/{marker}')}")
    try:
        host.run(
            quote(
                "docker",
                "service",
                "create",
                "--detach",
                "--quiet",
                "--name",
                name,
                "--mode",
                "global-job",
                "--restart-condition",
                "none",
                "--mount",
                f"type=bind,source={path},target=/shared,readonly",
                "--entrypoint",
                "test",
                image,
                "-f",
                f"/shared/{marker}",
            ),
            timeout=60,
        )
        deadline = time.monotonic() + timeout
        names = {n.id: f"{n.hostname} ({n.id[:8]})" for n in nodes(host) if n.state == "ready"}
        result: dict[str, str] = {}
        while time.monotonic() < deadline:
            ids = host.run(quote("docker", "service", "ps", "--quiet", name)).stdout.split()
            tasks = json.loads(host.run(quote("docker", "inspect", *ids)).stdout) if ids else []
            result = {}
            for task in tasks:
                status = task.get("Status") or {}
                node = names.get(str(task.get("NodeID", "")), str(task.get("NodeID", "")))
                state = str(status.get("State", ""))
                code = (status.get("ContainerStatus") or {}).get("ExitCode")
                if state == "complete":
                    result[node] = "ok"
                elif state in ("failed", "rejected"):
                    result[node] = (
                        f"does not see {path} as this host does (exit {code})"
                        if code == 1
                        else f"{state}: {status.get('Err') or status.get('Message', '')}"
                    )
            if len(result) >= len(names):
                return result
            time.sleep(0.5)
        for node in names.values():
            result.setdefault(node, f"no answer within {timeout:.0f} s")
        return result
    finally:
        host.run(quote("docker", "service", "rm", name), check=False)
        host.run(f"rm -f {quote(f'{path}/{marker}')}", check=False)
