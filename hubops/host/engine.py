"""The Docker engine: make sure one runs on a host, and talk to it.

``ensure_docker`` is what ``invoke host.prepare`` does for the engine, and what the test
setup does on a fresh CI machine: install Debian's docker.io when there is no engine, start
it (systemd where it runs, else dockerd in the background), and wait until it answers.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import docker
from docker.errors import DockerException

from hubops.errors import HubopsError
from hubops.host.base import Host

log = logging.getLogger(__name__)

DOCKERD_LOG = "/var/log/hubops-dockerd.log"
DOCKERD_PID = "/run/hubops-dockerd.pid"
BUILD_NETWORK = "hubops-build"
MIN_API = (1, 41)


@dataclass(frozen=True)
class EngineReport:
    installed: bool  # docker.io was installed by this call
    started: bool  # the engine was started by this call
    version: str


def engine_version(host: Host) -> str | None:
    result = host.run("docker version --format '{{.Server.Version}}'", check=False, timeout=30)
    return result.stdout.strip() if result.ok and result.stdout.strip() else None


def ensure_docker(host: Host, wait: float = 60) -> EngineReport:
    """A running Docker engine on ``host``: installed and started only where missing."""
    version = engine_version(host)
    if version:
        return EngineReport(installed=False, started=False, version=version)
    installed = False
    if not host.run("command -v dockerd", check=False).ok:
        if not host.run("command -v apt-get", check=False).ok:
            raise HubopsError(
                f"{host.name}: no Docker engine and no apt-get; install Docker Engine "
                "(https://docs.docker.com/engine/install/) and run this again"
            )
        host.run(
            "export DEBIAN_FRONTEND=noninteractive; apt-get update -q && "
            "apt-get install -y -q --no-install-recommends docker.io",
            timeout=900,
        )
        installed = True
    if host.run("test -d /run/systemd/system", check=False).ok:
        host.run("systemctl enable --now docker.service")
    else:
        host.run(f"setsid dockerd >>{DOCKERD_LOG} 2>&1 </dev/null & echo $! >{DOCKERD_PID}")
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        version = engine_version(host)
        if version:
            return EngineReport(installed=installed, started=True, version=version)
        time.sleep(0.5)
    tail = host.run(f"tail -n 20 {DOCKERD_LOG}", check=False).stdout
    raise HubopsError(
        f"{host.name}: the Docker engine did not answer within {wait:.0f}s after starting; "
        f"its log ({DOCKERD_LOG}) ends:\n{tail}"
    )


def stop_started_dockerd(host: Host) -> None:
    """Stop a dockerd that ``ensure_docker`` started in the background (no systemd)."""
    host.run(
        f"if [ -f {DOCKERD_PID} ]; then kill $(cat {DOCKERD_PID}) 2>/dev/null; "
        f"for i in $(seq 50); do kill -0 $(cat {DOCKERD_PID}) 2>/dev/null || break; sleep 0.2; "
        f"done; rm -f {DOCKERD_PID}; fi",
        check=False,
    )


def local_client(timeout: int = 600) -> docker.DockerClient:
    """A client of this machine's engine, or a HubopsError that says how to get one."""
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except DockerException as exc:
        raise HubopsError(
            f"no Docker engine answers on this machine ({exc}); start it, or run "
            "`invoke host.prepare --env local` to install and start one"
        ) from None
    version = client.version()
    api = tuple(int(x) for x in str(version.get("ApiVersion", "0.0")).split("."))
    if api < MIN_API:
        raise HubopsError(
            f"the Docker engine speaks API {version.get('ApiVersion')}; hubops needs "
            f"{'.'.join(map(str, MIN_API))} or newer (Docker 20.10+): upgrade the engine"
        )
    return client


def ensure_network(client: docker.DockerClient, name: str, labels: dict[str, str]) -> bool:
    """A user-defined bridge network (never the default bridge); True when it was created."""
    if any(n.name == name for n in client.networks.list(names=[name])):
        return False
    client.networks.create(name, driver="bridge", labels=labels)
    return True
