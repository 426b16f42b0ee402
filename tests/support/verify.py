"""The verify suites' target: a deployment with a real OAuth2 provider, its users, and logging
in as them."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from tests.support.checkout import REPO_ROOT, Checkout
from tests.support.hub import HubClient
from tests.support.net import free_port
from tests.support.oauth_provider import Provider, ProviderUser
from tests.support.wait import wait_for

CLIENT_ID = "hubops-verify-client"


CLIENT_SECRET = "verify-client-secret-7d1e"


USER_FS_SIZE = "384M"  # the suites' deployment: paths.user_data_dir is a tmpfs of this size
USER_QUOTA = "64M"  # and singleuser.disk_quota (soft: tmpfs has no project quotas)
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


def existing_target(name: str) -> Target:
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


def free_ports(n: int) -> list[int]:
    return [free_port() for _ in range(n)]


@dataclass
class LoggedIn:
    name: str
    client: HubClient
    container: str


def login_and_spawn(target: Target, name: str) -> LoggedIn:
    user = next(u for u in USERS if u.username == name)
    client = HubClient(target.url, verify=target.verify)
    page = client.oauth_login(user.username, user.password)
    assert page.status_code == 200, f"{name} could not log in: {page.status_code} {page.url}"
    wait_for(lambda: client.server_ready(name), 120, f"{name}'s server")
    wait_for(lambda: client.lab_status(name) == 200, 60, f"{name}'s JupyterLab")
    return LoggedIn(name, client, target.user_container(name))
