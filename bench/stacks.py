"""The two setups the benchmarks compare, on this machine's Docker engine.

- ``HubopsStack``: a scratch copy of the `local` environment, deployed with hubops (proxy in
  its own container, hubops' images and settings).
- ``PlainStack``: the hand-made setup a lab usually writes: one jupyterhub_config.py
  (shared-password login), DockerSpawner with its defaults, the proxy inside the hub, a hub
  container started with ``docker run``, images from plain Dockerfiles with the same packages.
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import subprocess
import tarfile
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import docker
import requests
import yaml
from pydantic import SecretStr

from hubops.config import environments
from hubops.deploy import firewall
from hubops.deploy.run import DeployResult, deploy
from hubops.host.engine import BUILD_NETWORK
from hubops.host.local import LocalHost
from hubops.host.target import image_fetcher
from hubops.images import table as images
from hubops.images.build import build as build_images
from hubops.plan.render import render
from tests.support.swarm import TestSwarm, test_swarm
from tests.support.tls import write_cert

REPO = Path(__file__).resolve().parent.parent
PLAIN = Path(__file__).resolve().parent / "plain"
PASSWORD = "bench-user-password"
ADMIN_PASSWORD = "bench-admin-password-0123456789abcdef"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, timeout: float = 120, verify: bool | str = True) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/hub/health", timeout=2, verify=verify).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not become healthy in {timeout}s")


@dataclass
class Stack:
    name: str
    client: docker.DockerClient
    port: int = field(default_factory=free_port)
    root: Path = field(default_factory=lambda: Path(f"/tmp/hubops-bench-{uuid.uuid4().hex[:6]}"))

    verify: bool | str = True  # what the clients check the hub's certificate against

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def hub_container(self) -> str:
        raise NotImplementedError

    def infra_containers(self) -> list[str]:
        raise NotImplementedError

    def user_containers(self) -> list[Any]:
        raise NotImplementedError


class HubopsStack(Stack):
    """`local`, deployed by hubops into a scratch directory on a free port."""

    def __init__(self, client: docker.DockerClient, extra_config: str = "") -> None:
        super().__init__("hubops", client)
        self.extra_config = extra_config  # appended to the rendered config: A/B experiments
        self.env_name = f"bench{uuid.uuid4().hex[:5]}"
        self.checkout = self.root / "checkout"
        shutil.copytree(REPO / "config" / "environments", self.checkout / "config" / "environments")
        self.set_env(
            {
                "extends": "local.yaml",
                "public_url": self.url,
                "hub": {"bind_address": "127.0.0.1", "port": self.port},
                "culling": {"enabled": False},
                "singleuser": {"image": "base", "mem_limit": "2G", "cpu_limit": 1},
                "paths": {
                    "config_dir": f"{self.root}/etc",
                    "data_dir": f"{self.root}/srv",
                    "user_data_dir": f"{self.root}/users",
                },
            }
        )
        self.secrets = {
            "shared_password": SecretStr(PASSWORD),
            "admin_password": SecretStr(ADMIN_PASSWORD),
        }

    def set_env(self, data: dict[str, Any]) -> None:
        path = self.checkout / "config" / "environments" / f"{self.env_name}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))

    def env_data(self) -> dict[str, Any]:
        path = self.checkout / "config" / "environments" / f"{self.env_name}.yaml"
        data: dict[str, Any] = yaml.safe_load(path.read_text())
        return data

    def build(self, no_cache: bool = False) -> list[Any]:
        return build_images(self.client, REPO, self.env(), no_cache=no_cache)

    def env(self) -> environments.LoadedEnvironment:
        return environments.load(self.checkout, self.env_name)

    def deploy(self) -> DeployResult:
        env = self.env()
        rendered = render(self.checkout, env, images.revisions(REPO))
        text = (rendered.directory / "jupyterhub_config.py").read_text()
        if self.extra_config:
            text += f"\n# bench experiment\n{self.extra_config}\n"
        return deploy(
            LocalHost(),
            rendered.plan,
            env.settings,
            text,
            self.secrets,
            image_fetcher(env, self.secrets, transfer=False),
        )

    def start(self) -> None:
        self.deploy()
        wait_healthy(self.url)

    def hub_container(self) -> str:
        return f"hubops-{self.env_name}-hub"

    def infra_containers(self) -> list[str]:
        return [f"hubops-{self.env_name}-hub", f"hubops-{self.env_name}-proxy"]

    def user_containers(self) -> list[Any]:
        return self.client.containers.list(
            filters={"label": [f"org.hubops.environment={self.env_name}", "org.hubops.role=user"]}
        )

    def stop(self) -> None:
        for c in self.client.containers.list(
            all=True, filters={"label": f"org.hubops.environment={self.env_name}"}
        ):
            c.remove(force=True)
        for n in self.client.networks.list(names=[f"hubops-{self.env_name}"]):
            n.remove()
        # the firewall's rules outlive its container (as on a real host): take them out
        subprocess.run(["sh", "-c", firewall.remove_command(self.env_name)], check=False)
        shutil.rmtree(self.root, ignore_errors=True)


class PlainStack(Stack):
    """The hand-made setup: docker run of a hub image with the proxy inside."""

    HUB_IMAGE = "hubops-bench/plain-hub:latest"
    SINGLEUSER_IMAGE = "hubops-bench/plain-singleuser:latest"

    def __init__(
        self, client: docker.DockerClient, name: str = "plain", timeout: int | None = None
    ) -> None:
        super().__init__(name, client)
        self.timeout = timeout  # Spawner.start_timeout and http_timeout; None: the defaults
        self.tag = uuid.uuid4().hex[:5]
        self.network = f"plain-{self.tag}"
        self.hub = f"plain-{self.tag}-hub"

    @staticmethod
    def build(client: docker.DockerClient, no_cache: bool = False) -> dict[str, float]:
        """Build both plain images; returns seconds per image."""
        out = {}
        for dockerfile, tag in (
            ("hub.Dockerfile", PlainStack.HUB_IMAGE),
            ("singleuser.Dockerfile", PlainStack.SINGLEUSER_IMAGE),
        ):
            context = io.BytesIO()
            with tarfile.open(fileobj=context, mode="w") as tar:
                tar.add(str(PLAIN / dockerfile), arcname="Dockerfile")
                tar.add(str(CA_BUNDLE), arcname="hubops-ca.crt")
            context.seek(0)
            start = time.monotonic()
            for chunk in client.api.build(
                fileobj=context,
                custom_context=True,
                tag=tag,
                rm=True,
                nocache=no_cache,
                decode=True,
                network_mode=BUILD_NETWORK,  # made by hubops.images.build, which runs first
            ):
                if "error" in chunk:
                    raise RuntimeError(f"building {tag}: {chunk['error']}")
            out[tag] = time.monotonic() - start
        return out

    def start(self) -> None:
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        shutil.copy(PLAIN / "jupyterhub_config.py", self.root / "jupyterhub_config.py")
        if not self.client.networks.list(names=[self.network]):
            self.client.networks.create(self.network, driver="bridge")
        self.run_hub()
        wait_healthy(self.url)

    def run_hub(self) -> None:
        self.client.containers.run(
            self.HUB_IMAGE,
            name=self.hub,
            detach=True,
            network=self.network,
            ports={"8000/tcp": ("127.0.0.1", self.port)},
            volumes={
                "/var/run/docker.sock": {"bind": "/var/run/docker.sock", "mode": "rw"},
                str(self.root / "jupyterhub_config.py"): {
                    "bind": "/srv/jupyterhub/jupyterhub_config.py",
                    "mode": "ro",
                },
                str(self.root / "data"): {"bind": "/srv/jupyterhub/data", "mode": "rw"},
            },
            environment={
                "BENCH_PASSWORD": PASSWORD,
                "BENCH_ADMIN_PASSWORD": ADMIN_PASSWORD,
                "BENCH_SINGLEUSER_IMAGE": self.SINGLEUSER_IMAGE,
                "BENCH_NETWORK": self.network,
                "BENCH_HUB_NAME": self.hub,
                "CONFIGPROXY_AUTH_TOKEN": secrets.token_hex(16),
                "BENCH_TIMEOUT": str(self.timeout or ""),
            },
            labels={"org.hubops.bench": self.tag},
        )

    def hub_container(self) -> str:
        return self.hub

    def infra_containers(self) -> list[str]:
        return [self.hub]

    def user_containers(self) -> list[Any]:
        return [
            c
            for c in self.client.containers.list()
            if c.name.startswith("jupyter-")
            and self.network in (c.attrs["NetworkSettings"]["Networks"] or {})
        ]

    def redeploy(self) -> None:
        """What a hand-made setup does to apply a config change: replace the hub container
        (docker stop, so JupyterHub shuts down as it does by default)."""
        hub = self.client.containers.get(self.hub)
        hub.stop(timeout=60)
        hub.remove()
        self.run_hub()

    def stop(self) -> None:
        for c in self.client.containers.list(all=True):
            if c.name == self.hub or (
                c.name.startswith("jupyter-")
                and self.network in (c.attrs["NetworkSettings"]["Networks"] or {})
            ):
                c.remove(force=True)
        for n in self.client.networks.list(names=[self.network]):
            n.remove()
        shutil.rmtree(self.root, ignore_errors=True)


class SwarmStack(HubopsStack):
    """`local` with ``cluster: swarm``, deployed by hubops to a real two-node swarm of this
    machine's engines (tests/support/swarm.py: a manager and a worker, each a dockerd in a
    network namespace of its own): the hub and the proxy on the manager, user servers as
    swarm services on either node. The hub listens on the manager's address, so it serves
    https (a shared-password login is refused on a non-loopback address without TLS), with a
    certificate for that address that the clients check."""

    def __init__(self, client: docker.DockerClient, extra_config: str = "") -> None:
        super().__init__(client, extra_config)
        self.name = "swarm"
        self._resources = ExitStack()
        self.swarm: TestSwarm | None = None

    @property
    def url(self) -> str:
        swarm = getattr(self, "swarm", None)  # None until start(), and in __init__
        host = swarm.manager.address if swarm else "127.0.0.1"
        return f"https://{host}:{self.port}"

    def start(self) -> None:
        sim = Path(tempfile.mkdtemp(prefix="hubops-bench-swarmsim-"))
        self._resources.callback(shutil.rmtree, sim, ignore_errors=True)
        self.swarm = self._resources.enter_context(test_swarm(self.root / "swarm", sim))
        cert, key = write_cert(
            self.root / "tls",
            datetime.now(timezone.utc) + timedelta(days=30),
            ip=self.swarm.manager.address,
        )
        self.verify = str(cert)
        data = self.env_data()
        data.update(
            cluster="swarm",
            public_url=self.url,
            hub={"bind_address": "0.0.0.0", "port": self.port},
            tls={"enabled": True, "cert": str(cert), "key": str(key)},
            network={"isolation": False},
        )
        data["paths"]["docker_socket"] = self.swarm.manager.docker_host.removeprefix("unix://")
        self.set_env(data)
        rendered = render(self.checkout, self.env(), images.revisions(REPO))
        self.swarm.load_images(rendered.plan.images)
        self.deploy()
        wait_healthy(self.url, verify=self.verify)

    def deploy(self) -> DeployResult:
        assert self.swarm is not None
        previous = os.environ.get("DOCKER_HOST")
        os.environ["DOCKER_HOST"] = self.swarm.manager.docker_host
        try:
            return super().deploy()
        finally:
            if previous is None:
                os.environ.pop("DOCKER_HOST", None)
            else:
                os.environ["DOCKER_HOST"] = previous

    def user_containers(self) -> list[Any]:
        """The user services (the measurements wait until none is left)."""
        if self.swarm is None:
            return []
        client = self.swarm.client()
        try:
            return list(
                client.services.list(filters={"label": f"org.hubops.environment={self.env_name}"})
            )
        finally:
            client.close()

    def stop(self) -> None:
        self._resources.close()  # the swarm, its engines and everything on them
        shutil.rmtree(self.root, ignore_errors=True)
