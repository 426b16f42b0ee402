"""Deployments for tests: a scratch environment (unique name, free port, host directories in a
temp dir), torn down with everything it started."""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import docker
from pydantic import SecretStr

from hubops.config import environments
from hubops.deploy.run import DeployResult, deploy
from hubops.host.target import image_fetcher, open_host
from hubops.images import table as images
from hubops.plan.model import Plan
from hubops.plan.render import render
from tests.support.checkout import REPO_ROOT, Checkout
from tests.support.hub import HubClient
from tests.support.net import drop_firewall_rules, free_port

SHARED_PASSWORD = "shared-pass-for-tests"


ADMIN_PASSWORD = "admin-pass-for-tests-0123456789abcdef"


@dataclass
class Deployment:
    """One scratch environment and how to deploy it."""

    checkout: Checkout
    name: str
    port: int
    root: Path
    client: docker.DockerClient
    secrets: dict[str, SecretStr] = field(
        default_factory=lambda: {
            "shared_password": SecretStr(SHARED_PASSWORD),
            "admin_password": SecretStr(ADMIN_PASSWORD),
        }
    )
    transfer: bool = False
    digests: dict[str, str] | None = None  # what `invoke push` verified: deploy by digest

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> environments.LoadedEnvironment:
        return environments.load(self.checkout.root, self.name)

    def rendered(self) -> tuple[Plan, str]:
        out = render(self.checkout.root, self.env, images.revisions(REPO_ROOT), self.digests)
        return out.plan, (out.directory / "jupyterhub_config.py").read_text()

    def deploy(
        self, config_text: str | None = None, plan: Plan | None = None, timeout: float = 90
    ) -> DeployResult:
        the_plan, text = self.rendered()
        env = self.env
        with open_host(self.checkout.root, env) as host:
            return deploy(
                host,
                plan or the_plan,
                env.settings,
                config_text or text,
                self.secrets,
                image_fetcher(env, self.secrets, self.transfer),
                health_timeout=timeout,
            )

    def set(self, key: str, value: object) -> None:
        """Set one setting (dotted key path) in the environment file."""
        self.checkout.set_setting(self.name, key, value)

    def hub(self) -> HubClient:
        return HubClient(self.url)

    def containers(self) -> dict[str, docker.models.containers.Container]:
        found = self.client.containers.list(
            all=True, filters={"label": f"org.hubops.environment={self.name}"}
        )
        return {c.name: c for c in found}


def make_deployment(
    checkout: Checkout, root: Path, client: docker.DockerClient, extra: str = ""
) -> Deployment:
    name = f"t{uuid.uuid4().hex[:6]}"
    port = free_port()
    checkout.write_env(
        name,
        "extends: local.yaml\n"
        f"public_url: http://127.0.0.1:{port}\n"
        f"hub:\n  bind_address: 127.0.0.1\n  port: {port}\n"
        f"paths:\n  config_dir: {root}/etc\n  data_dir: {root}/srv\n"
        f"  user_data_dir: {root}/users\n"
        "culling:\n  enabled: false\n" + extra,
    )
    return Deployment(checkout=checkout, name=name, port=port, root=root, client=client)


def tear_down(d: Deployment) -> None:
    for container in d.containers().values():
        container.remove(force=True)
    for network in d.client.networks.list(names=[f"hubops-{d.name}"]):
        if network.name == f"hubops-{d.name}":
            network.remove()
    drop_firewall_rules(d.name)
    shutil.rmtree(d.root, ignore_errors=True)


# change, step, signal, seconds the hub was unavailable, servers lost, users lost, who acted
FaultRow = tuple[str, str, str, float, int, int, str]
