"""A hub deployed to a real two-node Docker Swarm (tests/support/swarm.py): the hub and the
proxy on the manager, user servers as swarm services on either node, GitLab login through the
test OAuth provider, and the worker a SIMULATED GPU node with 2 GPUs advertised as swarm
generic resources.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr

from hubops.config import environments
from hubops.deploy.run import DeployResult, deploy
from hubops.host.local import LocalHost
from hubops.host.target import image_fetcher
from hubops.images import table as images
from hubops.plan.model import Plan
from hubops.plan.render import render
from tests.conftest import REPO_ROOT, Checkout
from tests.integration.verify.conftest import CLIENT_ID, CLIENT_SECRET, USERS, set_auth
from tests.support.hub import HubClient
from tests.support.net import free_port
from tests.support.oauth_provider import Provider, running_provider
from tests.support.swarm import TestSwarm, test_swarm
from tests.support.wait import wait_for

# swarm test name -> login -> JupyterLab ready, seconds (printed in the summary)
TIMES_KEY = pytest.StashKey[dict[str, float]]()


@pytest.fixture(scope="session")
def swarm_times(request: pytest.FixtureRequest) -> dict[str, float]:
    return request.config.stash.setdefault(TIMES_KEY, {})


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    times = terminalreporter.config.stash.get(TIMES_KEY, None)
    if times:
        terminalreporter.section("swarm (2 nodes: a manager and a SIMULATED GPU worker)")
        for what, seconds in times.items():
            terminalreporter.write_line(f"{what}: {seconds:.2f} s")


@pytest.fixture(scope="session")
def swarm(
    tmp_path_factory: pytest.TempPathFactory, built: dict[str, object]
) -> Iterator[TestSwarm]:
    """The swarm, every node given this checkout's images (no registry here)."""
    sim = Path(tempfile.mkdtemp(prefix="hubops-swarmsim-"))
    sim.chmod(0o755)
    try:
        with test_swarm(tmp_path_factory.mktemp("swarm"), sim) as s:
            local = environments.load(REPO_ROOT, "local")
            plan = render_plan(local)
            s.load_images(plan.images)
            yield s
    finally:
        shutil.rmtree(sim, ignore_errors=True)


def render_plan(env: environments.LoadedEnvironment) -> Plan:
    return render(REPO_ROOT, env, images.revisions(REPO_ROOT)).plan


@dataclass
class SwarmDeployment:
    checkout: Checkout
    name: str
    root: Path
    swarm: TestSwarm
    port: int
    secrets: dict[str, SecretStr]

    @property
    def url(self) -> str:
        return f"http://{self.swarm.manager.address}:{self.port}"

    @property
    def env(self) -> environments.LoadedEnvironment:
        return environments.load(self.checkout.root, self.name)

    def set(self, key: str, value: object) -> None:
        self.checkout.set_setting(self.name, key, value)

    def deploy(self, docker_host: str | None = None) -> DeployResult:
        env = self.env
        out = render(self.checkout.root, env, images.revisions(REPO_ROOT))
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("DOCKER_HOST", docker_host or self.swarm.manager.docker_host)
            return deploy(
                LocalHost(),
                out.plan,
                env.settings,
                (out.directory / "jupyterhub_config.py").read_text(),
                self.secrets,
                image_fetcher(env, self.secrets, False),
                health_timeout=120,
            )

    def tear_down(self) -> None:
        client = self.swarm.client()
        try:
            label = f"org.hubops.environment={self.name}"
            for service in client.services.list(filters={"label": label}):
                service.remove()
            for container in client.containers.list(all=True, filters={"label": label}):
                container.remove(force=True)
            for network in client.networks.list(names=[f"hubops-{self.name}"]):
                if network.name == f"hubops-{self.name}":
                    network.remove()
        finally:
            client.close()
        shutil.rmtree(self.root, ignore_errors=True)


def swarm_env(
    checkout: Checkout,
    root: Path,
    s: TestSwarm,
    extra: str = "",
    cluster: str = "swarm",
    port: int | None = None,
) -> SwarmDeployment:
    name = f"s{uuid.uuid4().hex[:6]}"
    port = port or free_port()
    checkout.write_env(
        name,
        "extends: local.yaml\n"
        f"cluster: {cluster}\n"
        f"public_url: http://{s.manager.address}:{port}\n"
        f"hub:\n  bind_address: 0.0.0.0\n  port: {port}\n"
        f"paths:\n  config_dir: {root}/etc\n  data_dir: {root}/srv\n"
        f"  user_data_dir: {root}/users\n"
        f"  docker_socket: {s.manager.docker_host.removeprefix('unix://')}\n"
        "network:\n  isolation: false\n"
        "culling:\n  enabled: false\n" + extra,
    )
    return SwarmDeployment(
        checkout,
        name,
        root,
        s,
        port,
        {"oauth_client_secret": SecretStr(CLIENT_SECRET)},
    )


@pytest.fixture(scope="module")
def swarm_hub(
    swarm: TestSwarm, module_checkout: Checkout, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[SwarmDeployment, Provider]]:
    """GitLab login (the test provider, on this machine's address on the swarm's link), the
    ml-lab group may hold 2 GPUs each, everybody else none; deployed to the manager."""
    os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"  # the provider speaks plain http
    d = swarm_env(
        module_checkout,
        tmp_path_factory.mktemp("swarm-hub"),
        swarm,
        "gpu:\n  policy: exclusive\n"
        "singleuser:\n  image: base\n  mem_limit: 1G\n  cpu_limit: 0.5\n"
        "  profiles:\n    - groups: [ml-lab]\n      max_gpus: 2\n      gpu_kind: gpu\n"
        "    - groups: []\n      max_gpus: 0\n",
    )
    with running_provider(
        swarm.gateway, CLIENT_ID, CLIENT_SECRET, [f"{d.url}/hub/oauth_callback"], USERS
    ) as provider:
        set_auth(d.checkout, d.name, "gitlab", provider)
        d.set("auth.allowed_users", ["carol"])
        try:
            d.deploy()
            yield d, provider
        finally:
            if os.environ.get("HUBOPS_DUMP_HUB_LOG"):
                hub = d.swarm.client().containers.get(f"hubops-{d.name}-hub")
                Path(os.environ["HUBOPS_DUMP_HUB_LOG"]).write_bytes(hub.logs(timestamps=True))
            d.tear_down()


def login(d: SwarmDeployment, name: str) -> HubClient:
    """``name`` logged in through the test provider (alice, bob or carol)."""
    client = HubClient(d.url)
    user = {"alice": "alice-pass", "bob": "bob-pass", "carol": "carol-pass"}[name]
    page = client.oauth_login(name, user)
    assert page.status_code == 200, f"{name} could not log in: {page.status_code} {page.url}"
    return client


def carol_with_a_file(d: SwarmDeployment, path: str, content: str) -> HubClient:
    """carol logged in, her server up, her JupyterLab answering, and ``path`` written there."""
    carol = login(d, "carol")
    wait_for(lambda: carol.server_ready("carol"), 120, "carol's server")
    wait_for(lambda: carol.lab_status("carol") == 200, 60, "carol's JupyterLab")
    put = carol.contents(
        "carol", "PUT", path, json={"type": "file", "format": "text", "content": content}
    )
    assert put.status_code in (200, 201), put.text
    return carol
