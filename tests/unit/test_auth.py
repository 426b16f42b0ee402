"""Logins as configured: every combination the schema allows starts a real JupyterHub, admins
come and go through the admin role, and a user's groups are the provider's plus the static ones.

The hub here is JupyterHub's own application, initialized (DB, users, groups, roles) from the
rendered config with a SQLite file in a temp dir; nothing is served and no provider is asked.
The real OAuth flows run in tests/integration/verify/test_oauth.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hubops_hub.auth import HubopsOIDCAuthenticator, HubopsSharedPasswordAuthenticator
from jupyterhub import orm
from jupyterhub.app import JupyterHub
from traitlets.config import Config

from hubops.config import environments
from hubops.plan.render import render
from tests.support.checkout import Checkout

REVS = {"proxy": "r", "hub": "r", "singleuser": "r", "base": "r"}
SECRETS = {
    "oauth_client_secret": "client-secret-0f3e",
    "shared_password": "shared-password-77aa",
    "admin_password": "admin-password-0123456789abcdef01234567",
    "proxy_token": "proxy-token-5c1d",
    "metrics_token": "metrics-token-9e2b",
    "ops_token": "ops-token-5c1d",
}
PROFILES = [
    {"groups": ["staff"], "mem_limit": "4G"},
    {"groups": ["ml-lab"], "mem_limit": "2G"},
    {"groups": [], "mem_limit": "1G"},
]
# what the schema allows; each starts a hub
COMBOS: dict[str, dict[str, Any]] = {
    "group-only": {"auth": {"allowed_groups": ["ml-lab"]}},
    "user-only": {"auth": {"allowed_users": ["carol"]}},
    "admin-only": {"auth": {"admin_users": ["alice"]}},
    "groups-with-profiles": {
        "auth": {"allowed_groups": ["ml-lab"], "admin_users": ["alice"]},
        "groups": {"staff": ["dave"]},
        "singleuser": {"profiles": PROFILES},
    },
}
DIALECTS: dict[str, dict[str, Any]] = {
    "gitlab": {"type": "gitlab", "gitlab_url": "https://gitlab.example.org"},
    "github": {"type": "github"},
    "oidc-issuer": {"type": "oidc", "issuer": "https://idp.example.org/realms/lab"},
    "oidc-endpoints": {
        "type": "oidc",
        "authorize_url": "https://idp.example.org/auth",
        "token_url": "https://idp.example.org/token",
        "userdata_url": "https://idp.example.org/userinfo",
    },
}
EXPECTED_SCOPES = {  # (dialect, groups used) -> scopes
    ("gitlab", False): ["read_user"],
    ("gitlab", True): ["read_user", "openid"],
    ("github", False): ["read:user"],
    ("github", True): ["read:user", "read:org"],
    ("oidc-issuer", False): ["openid", "profile", "email"],
    ("oidc-issuer", True): ["openid", "profile", "email", "groups"],
}


def write_env(checkout: Checkout, name: str, auth: dict[str, Any], extra: dict[str, Any]) -> None:
    data: dict[str, Any] = {
        "extends": "local.yaml",
        "auth": {"admin_users": [], "allowed_users": [], **auth, **extra.get("auth", {})},
        "singleuser": {"image": "base", **extra.get("singleuser", {})},
    }
    if "groups" in extra:
        data["groups"] = extra["groups"]
    if auth["type"] != "shared-password":
        data["auth"]["client_id"] = "hubops-test"
    checkout.write_env(name, yaml.safe_dump(data, sort_keys=False))


class Hub:
    """JupyterHub initialized from a rendered environment; its log is kept."""

    def __init__(self, app: JupyterHub, log: list[logging.LogRecord]) -> None:
        self.app, self.log = app, log

    def user(self, name: str) -> orm.User | None:
        return orm.User.find(self.app.db, name)

    def warnings(self) -> list[str]:
        return [r.getMessage() for r in self.log if r.levelno >= logging.WARNING]


@pytest.fixture
def start_hub(
    checkout: Checkout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[[str], Hub]:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name, value in SECRETS.items():
        (secrets / name).write_text(value)
    monkeypatch.setenv("HUBOPS_SECRETS_DIR", str(secrets))

    def start(name: str) -> Hub:
        env = environments.load(checkout.root, name)
        out = render(checkout.root, env, REVS)
        app = JupyterHub()
        app.load_config_file(str(out.directory / "jupyterhub_config.py"))
        c = Config()
        c.JupyterHub.db_url = f"sqlite:///{tmp_path}/jupyterhub.sqlite"
        c.JupyterHub.cookie_secret_file = str(tmp_path / "cookie_secret")
        c.JupyterHub.pid_file = str(tmp_path / "jupyterhub.pid")
        # managed services (the culler, the reaper) are processes, not started here; their
        # roles need them, so both go
        c.JupyterHub.services = []
        c.JupyterHub.load_roles = [
            r for r in app.config.JupyterHub.load_roles if not r.get("services")
        ]
        app.update_config(c)
        records: list[logging.LogRecord] = []
        handler = logging.Handler()
        handler.emit = records.append  # type: ignore[method-assign]
        app.log.addHandler(handler)
        try:
            asyncio.run(app.initialize([]))
        finally:
            app.log.removeHandler(handler)
        return Hub(app, records)

    return start


@pytest.mark.parametrize("combo", sorted(COMBOS))
@pytest.mark.parametrize("dialect", sorted(DIALECTS))
def test_every_oauth_combination_starts_a_hub(
    checkout: Checkout, start_hub: Callable[[str], Hub], dialect: str, combo: str
) -> None:
    write_env(checkout, "t", DIALECTS[dialect], COMBOS[combo])
    hub = start_hub("t")
    auth = hub.app.authenticator
    groups_used = combo in ("group-only", "groups-with-profiles")
    assert auth.manage_groups is groups_used
    if (dialect, groups_used) in EXPECTED_SCOPES:
        assert auth.scope == EXPECTED_SCOPES[(dialect, groups_used)]
    if groups_used:
        assert auth.allowed_groups == {"ml-lab"}
        assert not hub.app.load_groups, "JupyterHub refuses load_groups with manage_groups"
    admins = COMBOS[combo]["auth"].get("admin_users", [])
    for name in admins:
        user = hub.user(name)
        assert user is not None
        assert user.admin, f"{name} is an admin after the start"
    deprecated = [w for w in hub.warnings() if "deprecated" in w.lower()]
    assert deprecated == [], "no deprecated setting at start-up"


@pytest.mark.parametrize("combo", ["user-only", "admin-only", "groups-with-profiles"])
def test_every_shared_password_combination_starts_a_hub(
    checkout: Checkout, start_hub: Callable[[str], Hub], combo: str
) -> None:
    extra = {k: v for k, v in COMBOS[combo].items()}
    extra["auth"] = {k: v for k, v in extra["auth"].items() if k != "allowed_groups"}
    extra.setdefault("groups", {})["ml-lab"] = ["bob"]
    write_env(checkout, "t", {"type": "shared-password"}, extra)
    hub = start_hub("t")
    assert hub.app.authenticator.manage_groups is False
    ml_lab = orm.Group.find(hub.app.db, "ml-lab")
    assert ml_lab is not None
    assert [u.name for u in ml_lab.users] == ["bob"], "static groups load"
    assert [w for w in hub.warnings() if "admin" in w.lower()] == []


def test_a_removed_admin_loses_admin_rights_at_the_next_start(
    checkout: Checkout, start_hub: Callable[[str], Hub]
) -> None:
    write_env(checkout, "t", DIALECTS["gitlab"], {"auth": {"admin_users": ["alice", "dave"]}})
    before = start_hub("t")
    dave = before.user("dave")
    assert dave is not None
    assert dave.admin
    before.app.db.close()
    write_env(checkout, "t", DIALECTS["gitlab"], {"auth": {"admin_users": ["alice"]}})
    after = start_hub("t")
    dave, alice = after.user("dave"), after.user("alice")
    assert dave is not None
    assert dave.admin is False, "revoked at the deploy's hub start"
    assert "admin" not in [r.name for r in dave.roles]
    assert alice is not None
    assert alice.admin is True


def oidc_authenticator(**traits: Any) -> HubopsOIDCAuthenticator:
    c = Config()
    for key, value in traits.items():
        setattr(c.HubopsOIDCAuthenticator, key, value)
    return HubopsOIDCAuthenticator(config=c)


def auth_model(name: str, claims: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "admin": None,
        "auth_state": {"oauth_user": claims, "token_response": {"access_token": "t"}},
    }


def test_groups_are_the_providers_plus_the_static_ones() -> None:
    auth = oidc_authenticator(
        manage_groups=True,
        auth_state_groups_key="hubops_groups",
        static_groups={"staff": ["bob"], "other": ["carol"]},
        admins={"alice"},
    )
    model = asyncio.run(auth.update_auth_model(auth_model("bob", {"groups": ["ml-lab"]})))
    assert model["auth_state"]["hubops_groups"] == ["ml-lab", "staff"]
    assert model["admin"] is False, "said explicitly, so a revoked admin is revoked at login"
    model = asyncio.run(auth.update_auth_model(auth_model("alice", {"groups": "ml-lab"})))
    assert model["auth_state"]["hubops_groups"] == ["ml-lab"], "a single group as a string"
    assert model["admin"] is True


def test_a_missing_groups_claim_leaves_only_static_groups_and_says_which_scope(
    caplog: pytest.LogCaptureFixture,
) -> None:
    auth = oidc_authenticator(
        manage_groups=True, auth_state_groups_key="hubops_groups", static_groups={"s": ["bob"]}
    )
    with caplog.at_level(logging.ERROR):
        model = asyncio.run(auth.update_auth_model(auth_model("bob", {"sub": "1"})))
    assert model["auth_state"]["hubops_groups"] == ["s"]
    assert "no 'groups' claim" in caplog.text
    assert "auth.scopes" in caplog.text


def test_shared_password_admins_need_the_admin_password() -> None:
    c = Config()
    c.HubopsSharedPasswordAuthenticator.admins = {"admin"}
    c.HubopsSharedPasswordAuthenticator.user_password = SECRETS["shared_password"]
    c.HubopsSharedPasswordAuthenticator.admin_password = SECRETS["admin_password"]
    auth = HubopsSharedPasswordAuthenticator(config=c)

    def login(name: str, password: str) -> Any:
        return asyncio.run(auth.authenticate(None, {"username": name, "password": password}))

    assert login("admin", SECRETS["admin_password"]) == {
        "name": "admin",
        "admin": True,
        "groups": [],
    }
    assert login("admin", SECRETS["shared_password"]) is None, "no admin by the shared password"
    assert login("bob", SECRETS["shared_password"])["admin"] is False
    assert login("bob", SECRETS["admin_password"]) is None
