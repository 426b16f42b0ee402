"""Deployments for tests: a scratch environment per test module (unique name, free port,
host directories in a temp dir), torn down with everything it started."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import pytest
from pydantic import SecretStr

from hubops.config import environments
from hubops.deploy.run import DeployResult, deploy
from hubops.host.target import image_fetcher, open_host
from hubops.images import table as images
from hubops.plan.model import Plan
from hubops.plan.render import render
from tests.conftest import REPO_ROOT, Checkout
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


@pytest.fixture(scope="module")
def local_deployment(
    module_checkout: Checkout,
    tmp_path_factory: pytest.TempPathFactory,
    docker_client: docker.DockerClient,
    built: dict[str, object],
) -> Iterator[Deployment]:
    """A scratch `local`-like environment on this machine's engine (deployed by the tests)."""
    d = make_deployment(module_checkout, tmp_path_factory.mktemp("deploy"), docker_client)
    yield d
    tear_down(d)


# change, step, signal, seconds the hub was unavailable, servers lost, users lost, who acted
FaultRow = tuple[str, str, str, float, int, int, str]
FAULTS_KEY = pytest.StashKey[list[FaultRow]]()


@pytest.fixture(scope="session")
def fault_table(request: pytest.FixtureRequest) -> list[FaultRow]:
    """The fault suite's rows, printed in the test summary (for the notes)."""
    return request.config.stash.setdefault(FAULTS_KEY, [])


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    rows = terminalreporter.config.stash.get(FAULTS_KEY, [])
    if rows:
        terminalreporter.section("faults (a deploy killed at a step boundary)")
        terminalreporter.write_line(
            "change | step | signal | hub unavailable | servers lost | users lost | operator"
        )
        for change, step, sig, down, servers, users, acted in rows:
            terminalreporter.write_line(
                f"{change:6} | {step:50} | {sig:7} | {down:5.1f} s | {servers} | {users} | {acted}"
            )
