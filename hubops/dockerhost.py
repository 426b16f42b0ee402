"""The Docker engine of a hub host, driven through its docker CLI over a :class:`Host`.

The same functions serve this machine (``LocalHost``) and a lab server over SSH
(``SSHHost``): one code path, whatever the target.
"""

from __future__ import annotations

import json
from typing import Any

from hubops.hosts import Host, quote
from hubops.plan import ContainerSpec


def inspect(host: Host, kind: str, name: str) -> dict[str, Any] | None:
    """``docker <kind> inspect`` as a dict, or None when there is no such object."""
    result = host.run(f"docker {kind} inspect {quote(name)}", check=False, timeout=60)
    if not result.ok:
        return None
    data = json.loads(result.stdout)
    return data[0] if data else None


def image_id(host: Host, ref: str) -> str | None:
    found = inspect(host, "image", ref)
    return str(found["Id"]) if found else None


def labels(container: dict[str, Any]) -> dict[str, str]:
    return dict((container.get("Config") or {}).get("Labels") or {})


def is_running(container: dict[str, Any]) -> bool:
    return bool((container.get("State") or {}).get("Running"))


def create_command(spec: ContainerSpec, extra_labels: dict[str, str]) -> str:
    """``docker create`` for a container spec of the plan."""
    args = [
        "docker",
        "create",
        "--name",
        spec.name,
        "--network",
        spec.network,
        "--restart",
        spec.restart_policy,
    ]
    for key, value in sorted({**spec.labels, **extra_labels}.items()):
        args += ["--label", f"{key}={value}"]
    for key, value in sorted(spec.environment.items()):
        args += ["--env", f"{key}={value}"]
    for port in spec.ports:
        args += ["--publish", f"{port.host_ip}:{port.host_port}:{port.container_port}"]
    for mount in spec.mounts:
        option = f"type=bind,source={mount.source},target={mount.target}"
        args += ["--mount", option + (",readonly" if mount.read_only else "")]
    args += [spec.image, *spec.command]
    return quote(*args)


def logs(host: Host, name: str, lines: int = 40) -> str:
    result = host.run(f"docker logs --tail {lines} {quote(name)} 2>&1", check=False)
    return result.stdout.strip()


def remove(host: Host, name: str) -> None:
    host.run(f"docker rm -f {quote(name)}", check=False)
