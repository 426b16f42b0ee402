"""The deployment the verify suites check, and the parts they check it with.

Without ``--env``, the suites make their own deployment on the lab host (a second Docker
engine with 4 SIMULATED GPUs, reached over SSH): `local` plus GitLab login through the test
OAuth provider, TLS with a plain-http redirect, every GPU for every user, limits and a
read-only shared data directory. With ``--env NAME`` (e.g. on a GPU runner, or an admin after
a deploy) they check that environment's running deployment and deploy nothing; the tests that
need the test provider's users then skip and say why.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import testinfra
from pydantic import SecretStr

from hubops.config import environments
from hubops.config.environments import LoadedEnvironment
from hubops.config.secrets import resolve
from hubops.config.settings import resolve_repo_path
from hubops.deploy.run import deploy
from hubops.host.target import image_fetcher, open_host
from hubops.images import table as images
from hubops.plan.model import Plan
from hubops.plan.render import render
from tests.conftest import REPO_ROOT, Checkout
from tests.support.hub import HubClient
from tests.support.labhost import LabHost
from tests.support.net import drop_firewall_rules, free_port
from tests.support.oauth_provider import Provider, ProviderUser, running_provider
from tests.support.tls import write_cert
from tests.support.wait import wait_for

CLIENT_ID = "hubops-verify-client"
CLIENT_SECRET = "verify-client-secret-7d1e"
USERS = [
    ProviderUser("alice", "alice-pass", 101, ("ml-lab",)),  # admin
    ProviderUser("bob", "bob-pass", 102, ("ml-lab",)),
    ProviderUser("carol", "carol-pass", 103),  # in no provider group: allowed by name only
    ProviderUser("mallory", "mallory-pass", 666, ("other-lab",)),  # not allowed
]
ALLOWED_GROUP = "ml-lab"


@dataclass
class LoginReport:
    """Who got in through which provider and rules, and how long logins took; printed in the
    test summary (for the closing notes)."""

    # (provider dialect, rules, user) -> "in", "admin", "refused" or "FAIL"
    matrix: dict[tuple[str, str, str], str] = field(default_factory=dict)
    times: dict[str, float] = field(default_factory=dict)  # what -> login page to ready, s


REPORT_KEY = pytest.StashKey[LoginReport]()
# what a user server reaches: path -> (without isolation, with it); printed in the summary
REACH_KEY = pytest.StashKey[dict[str, tuple[str, str]]]()


@pytest.fixture(scope="session")
def reach_table(request: pytest.FixtureRequest) -> dict[str, tuple[str, str]]:
    """Through a fixture: this conftest is imported once by pytest and once by the tests,
    as two modules with a StashKey each."""
    return request.config.stash.setdefault(REACH_KEY, {})


@pytest.fixture(scope="session")
def login_report(request: pytest.FixtureRequest) -> LoginReport:
    return request.config.stash.setdefault(REPORT_KEY, LoginReport())


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    reach = terminalreporter.config.stash.get(REACH_KEY, None)
    if reach:
        terminalreporter.section("what a user server reaches (network.isolation false -> true)")
        for path, (before, after) in reach.items():
            terminalreporter.write_line(f"{path:45} {before:8} -> {after}")
    report = terminalreporter.config.stash.get(REPORT_KEY, None)
    if report is None:
        return
    if report.matrix:
        terminalreporter.section("login matrix (provider dialect x rules x user)")
        users = sorted({u for _, _, u in report.matrix})
        head = f"{'provider':20} {'rules':16} " + " ".join(f"{u:8}" for u in users)
        terminalreporter.write_line(head)
        for dialect, rules in dict.fromkeys((d, r) for d, r, _ in report.matrix):
            row = [report.matrix.get((dialect, rules, u), "-") for u in users]
            terminalreporter.write_line(
                f"{dialect:20} {rules:16} " + " ".join(f"{r:8}" for r in row)
            )
    for what, seconds in report.times.items():
        terminalreporter.write_line(f"login -> JupyterLab ready, {what}: {seconds:.2f} s")


ADMIN = "alice"


@dataclass
class Target:
    """The deployment under test."""

    checkout_root: Path
    name: str
    plan: Plan
    host: testinfra.host.Host  # the hub host (local:// or ssh://)
    provider: Provider | None  # the test OAuth provider, when the suites made the deployment
    cert: Path | None  # TLS certificate to verify against (None: no TLS)
    simulated: bool

    @property
    def env(self) -> LoadedEnvironment:
        return environments.load(self.checkout_root, self.name)

    @property
    def url(self) -> str:
        return self.env.settings.public_url

    @property
    def verify(self) -> bool | str:
        return str(self.cert) if self.cert else True

    def container(self, role: str) -> str:
        return next(c.name for c in self.plan.containers if c.role == role)

    def user_container(self, username: str) -> str:
        return f"hubops-{self.name}-user-{username}"

    def inspect(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.host.check_output(f"docker inspect {name}"))[0]
        return result

    def in_container(self, name: str, command: str) -> testinfra.backend.base.CommandResult:
        return self.host.run(f"docker exec {name} sh -c {_sh_quote(command)}")

    def configure(self, **changes: object) -> None:
        """Change settings (dotted keys, e.g. ``gpu__policy``) in the environment file and
        deploy them."""
        for key, value in changes.items():
            Checkout(self.checkout_root).set_setting(self.name, key.replace("__", "."), value)
        self.redeploy()

    def redeploy(self) -> None:
        env = self.env
        revs = images.revisions(REPO_ROOT)
        rendered = render(self.checkout_root, env, revs)
        self.plan = rendered.plan
        values = {"oauth_client_secret": SecretStr(CLIENT_SECRET)}
        with open_host(self.checkout_root, env) as host:
            deploy(
                host,
                rendered.plan,
                env.settings,
                (rendered.directory / "jupyterhub_config.py").read_text(),
                values,
                image_fetcher(env, values, transfer=True),
                progress=lambda _step, m: print(f"{time.monotonic():.1f} deploy: {m}", flush=True),
            )


def _sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def set_auth(checkout: Checkout, name: str, kind: str, provider: Provider) -> None:
    """Point the environment's login at the test provider in one of its dialects."""
    import yaml

    path = checkout.env_file(name)
    data = yaml.safe_load(path.read_text())
    auth: dict[str, object] = {
        "type": kind,
        "client_id": CLIENT_ID,
        "allowed_groups": [ALLOWED_GROUP],
        "admin_users": [ADMIN],
    }
    if kind == "gitlab":
        auth["gitlab_url"] = provider.gitlab_url
    elif kind == "github":
        auth["github_url"] = provider.github_url
    else:
        auth.update(provider.oidc)
    data["auth"] = auth
    path.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.fixture(scope="session")
def target(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    lab: LabHost,
    built: dict[str, object],
) -> Iterator[Target]:
    explicit = request.config.getoption("--env")
    if explicit:
        yield _existing(str(explicit))
        return
    root = tmp_path_factory.mktemp("verify")
    checkout = Checkout(root / "checkout")
    shutil.copytree(
        REPO_ROOT / "config" / "environments", checkout.root / "config" / "environments"
    )
    os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"  # the provider speaks plain http
    name = f"v{uuid.uuid4().hex[:6]}"
    port, http_port = free_port(), free_port()
    public = f"https://127.0.0.1:{port}"
    cert, key = write_cert(root, datetime.now(timezone.utc) + timedelta(days=30))
    shared = root / "shared"
    shared.mkdir()
    (shared / "README.txt").write_text("lab data, read-only\n")
    with running_provider(
        lab.gateway_ip, CLIENT_ID, CLIENT_SECRET, [f"{public}/hub/oauth_callback"], USERS
    ) as provider:
        checkout.write_env(
            name,
            "extends: local.yaml\n"
            f"public_url: {public}\n"
            f"hub:\n  bind_address: 127.0.0.1\n  port: {port}\n  http_port: {http_port}\n"
            f"tls:\n  enabled: true\n  cert: {cert}\n  key: {key}\n"
            "auth:\n  type: gitlab\n  client_id: x\n  gitlab_url: http://x\n"
            "  allowed_users: [x]\n"
            "singleuser:\n  image: base\n  mem_limit: 1G\n  cpu_limit: 0.5\n  pids_limit: 256\n"
            "gpu:\n  policy: all\n"
            "culling:\n  enabled: false\n"
            f"paths:\n  config_dir: {root}/etc\n  data_dir: {root}/srv\n"
            f"  user_data_dir: {root}/users\n  shared_data_dir: {shared}\n"
            f"  docker_socket: {lab.docker_host.removeprefix('unix://')}\n" + lab.env_yaml(),
        )
        set_auth(checkout, name, "gitlab", provider)
        host = testinfra.get_host(
            f"ssh://root@127.0.0.1:{lab.ssh_port}",
            ssh_identity_file=str(lab.key_file),
            ssh_extra_args=f"-o UserKnownHostsFile={lab.known_hosts} -o StrictHostKeyChecking=yes",
        )
        t = Target(
            checkout.root,
            name,
            plan=None,
            host=host,  # type: ignore[arg-type]
            provider=provider,
            cert=cert,
            simulated=True,
        )
        t.redeploy()
        try:
            yield t
        finally:
            for container in lab.client.containers.list(
                all=True, filters={"label": f"org.hubops.environment={name}"}
            ):
                container.remove(force=True)
            for network in lab.client.networks.list(names=[f"hubops-{name}"]):
                network.remove()
            drop_firewall_rules(name)
            shutil.rmtree(root / "users", ignore_errors=True)


def _existing(name: str) -> Target:
    """An operator's running deployment: nothing is deployed, only checked."""
    env = environments.load(REPO_ROOT, name)
    s = env.settings
    rendered = render(REPO_ROOT, env, images.revisions(REPO_ROOT))
    resolve(REPO_ROOT, name, s)  # every secret must be there, as for a deploy
    if s.ssh is None:
        host = testinfra.get_host("local://")
    else:
        key = f" -i {resolve_repo_path(REPO_ROOT, s.ssh.key_file)}" if s.ssh.key_file else ""
        known = resolve_repo_path(REPO_ROOT, s.ssh.known_hosts)
        host = testinfra.get_host(
            f"ssh://{s.ssh.user}@{s.ssh.host}:{s.ssh.port}",
            ssh_extra_args=f"-o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes{key}",
        )
    return Target(REPO_ROOT, name, rendered.plan, host, provider=None, cert=None, simulated=False)


@pytest.fixture
def provider(target: Target) -> Provider:
    if target.provider is None:
        pytest.skip("needs the hubops test OAuth provider's users; run without --env to use it")
    return target.provider


def free_ports(n: int) -> list[int]:
    return [free_port() for _ in range(n)]


@dataclass
class LoggedIn:
    name: str
    client: HubClient
    container: str


def _login_and_spawn(target: Target, name: str) -> LoggedIn:
    user = next(u for u in USERS if u.username == name)
    client = HubClient(target.url, verify=target.verify)
    page = client.oauth_login(user.username, user.password)
    assert page.status_code == 200, f"{name} could not log in: {page.status_code} {page.url}"
    wait_for(lambda: client.server_ready(name), 120, f"{name}'s server")
    wait_for(lambda: client.lab_status(name) == 200, 60, f"{name}'s JupyterLab")
    return LoggedIn(name, client, target.user_container(name))


@pytest.fixture(scope="session")
def alice(target: Target, provider_session: Provider) -> LoggedIn:
    """alice (an admin of the ml-lab group), logged in through OAuth, her server running."""
    return _login_and_spawn(target, "alice")


@pytest.fixture(scope="session")
def bob(target: Target, provider_session: Provider) -> LoggedIn:
    return _login_and_spawn(target, "bob")


@pytest.fixture(scope="session")
def provider_session(target: Target) -> Provider:
    if target.provider is None:
        pytest.skip("needs the hubops test OAuth provider's users; run without --env to use it")
    return target.provider
