"""OAuth: the redirect to the provider, and real logins through the test provider (an Authlib
authorization server as strict as GitLab, GitHub and an OIDC provider about scopes) in each
dialect, for each way an environment says who may log in:

- ``groups+profiles``: an allowed provider group, a user allowed by name, an admin, static
  groups on top of the provider's, and profiles that give each group its memory limit;
- ``names-only``: allowed users and admins, no groups anywhere (groups are not asked for).

Admin rights follow the environment at the next deploy. The matrix of who got in is printed
in the test summary ("login matrix").
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import yaml

from tests.support.checkout import Checkout
from tests.support.hub import HubClient
from tests.support.oauth_provider import Provider
from tests.support.verify import ADMIN, USERS, LoginReport, Target, set_auth
from tests.support.wait import wait_for

PASSWORDS = {u.username: u.password for u in USERS}
DIALECTS = ("gitlab", "github", "oidc")
MEMORY = {"staff": "640M", "ml-lab": "768M"}  # profile memory limits by group
COMBOS: dict[str, dict[str, Any]] = {
    "groups+profiles": {
        "auth": {"allowed_groups": ["ml-lab"], "allowed_users": ["carol"], "admin_users": [ADMIN]},
        "groups": {"staff": ["carol"]},
        "profiles": [{"groups": [g], "mem_limit": m} for g, m in MEMORY.items()],
    },
    "names-only": {"auth": {"allowed_users": ["carol"], "admin_users": [ADMIN]}},
}
# (combo, user) -> None: refused; else (admin, the user's groups in the hub, or None where
# groups are not used and the hub leaves them as they were)
EXPECT: dict[tuple[str, str], tuple[bool, list[str] | None] | None] = {
    ("groups+profiles", "alice"): (True, ["ml-lab"]),
    ("groups+profiles", "bob"): (False, ["ml-lab"]),
    ("groups+profiles", "carol"): (False, ["staff"]),
    ("groups+profiles", "mallory"): None,
    ("names-only", "alice"): (True, None),
    ("names-only", "bob"): None,
    ("names-only", "carol"): (False, None),
    ("names-only", "mallory"): None,
}


def authorize_redirect(target: Target, **headers: str) -> tuple[str, dict[str, list[str]]]:
    response = requests.get(
        f"{target.url}/hub/oauth_login",
        verify=target.verify,
        timeout=10,
        allow_redirects=False,
        headers=headers,
    )
    assert response.status_code == 302, f"/hub/oauth_login answered {response.status_code}"
    location = response.headers["Location"]
    parts = urlsplit(location)
    return f"{parts.scheme}://{parts.netloc}{parts.path}", parse_qs(parts.query)


def test_oauth_login_redirects_with_client_id_scope_and_pkce(target: Target) -> None:
    s = target.env.settings
    auth = s.auth
    if auth.type == "shared-password":
        pytest.skip("shared-password login has no OAuth redirect")
    url, params = authorize_redirect(target)
    assert params["client_id"] == [auth.client_id], params  # type: ignore[union-attr]
    assert params["response_type"] == ["code"]
    assert params["scope"] == [" ".join(s.oauth_scopes)], params
    assert params["code_challenge_method"] == ["S256"], "PKCE with S256"
    assert len(params["code_challenge"][0]) >= 43, "a real S256 challenge"
    assert params["state"][0], "a state value"
    assert params["redirect_uri"] == [f"{s.public_url}/hub/oauth_callback"], params
    if auth.type == "gitlab":
        assert url == f"{auth.gitlab_url}/oauth/authorize", url  # type: ignore[union-attr]
        if s.uses_provider_groups:
            assert params["scope"] == ["read_user openid"], "groups come from GitLab's openid"


def test_redirect_uri_comes_from_the_public_url_not_the_request(target: Target) -> None:
    """Behind a TLS proxy the request looks like plain http to another host; the callback
    URL must still be the public one (the classic failure)."""
    s = target.env.settings
    if s.auth.type == "shared-password":
        pytest.skip("shared-password login has no OAuth redirect")
    _, params = authorize_redirect(
        target, **{"X-Forwarded-Proto": "http", "X-Forwarded-Host": "internal.example:8000"}
    )
    assert params["redirect_uri"] == [f"{s.public_url}/hub/oauth_callback"], params


def server_running(target: Target, user: str) -> bool:
    """Whether the user's server container runs now (asked from the engine, no login)."""
    result = target.host.run(
        "docker inspect -f '{{.State.Running}}' %s", target.user_container(user)
    )
    return result.rc == 0 and result.stdout.strip() == "true"


def write_login(target: Target, provider: Provider, dialect: str, combo: str) -> None:
    """Point the deployment at the provider's ``dialect`` with ``combo``'s rules, and deploy."""
    checkout = Checkout(target.checkout_root)
    set_auth(checkout, target.name, dialect, provider)
    path = checkout.env_file(target.name)
    data = yaml.safe_load(path.read_text())
    spec = COMBOS[combo]
    data["auth"].update({"allowed_groups": [], "allowed_users": [], **spec["auth"]})
    data.pop("groups", None)
    if "groups" in spec:
        data["groups"] = spec["groups"]
    data["singleuser"].pop("profiles", None)
    if "profiles" in spec:
        data["singleuser"]["profiles"] = spec["profiles"]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    target.redeploy()


@pytest.fixture(scope="module")
def original(target: Target) -> Iterator[None]:
    """Put the deployment back as the other suites know it, once this module is done."""
    if target.provider is None:
        pytest.skip("needs the hubops test OAuth provider; run without --env to use it")
    path = Checkout(target.checkout_root).env_file(target.name)
    text = path.read_text()
    yield
    if path.read_text() != text:
        path.write_text(text)
        target.redeploy()


@pytest.fixture(scope="module")
def login(request: pytest.FixtureRequest, target: Target, original: None) -> tuple[str, str]:
    """The deployment logs in through one dialect with one combination of rules."""
    dialect, combo = request.param
    assert target.provider is not None
    write_login(target, target.provider, dialect, combo)
    return dialect, combo


MATRIX = [(d, c) for c in COMBOS for d in DIALECTS]


@pytest.mark.parametrize("user", ["alice", "bob", "carol", "mallory"])
@pytest.mark.parametrize("login", MATRIX, ids=[f"{d}-{c}" for d, c in MATRIX], indirect=True)
def test_who_gets_in(
    target: Target, login: tuple[str, str], user: str, login_report: LoginReport
) -> None:
    dialect, combo = login
    expected = EXPECT[(combo, user)]
    was_running = server_running(target, user)
    client = HubClient(target.url, verify=target.verify)
    page = client.oauth_login(user, PASSWORDS[user])
    login_report.matrix[(dialect, combo, user)] = "FAIL"
    if expected is None:
        assert page.status_code == 403, f"{dialect}/{combo}: {user} got {page.status_code}"
        assert client.api("GET", "user").status_code == 403, f"{user} has no hub session"
        login_report.matrix[(dialect, combo, user)] = "refused"
        return
    assert page.status_code == 200, f"{dialect}/{combo}: {user} got {page.status_code} {page.url}"
    me = client.api("GET", "user").json()
    admin, groups = expected
    assert me["name"] == user
    assert me["admin"] is admin, f"{dialect}/{combo}: {user}'s admin flag: {me}"
    if groups is not None:
        assert sorted(me["groups"]) == groups, f"{dialect}/{combo}: {user}'s groups: {me['groups']}"
    login_report.matrix[(dialect, combo, user)] = "admin" if admin else "in"
    if not was_running and client.api("GET", f"users/{user}").json().get("servers"):
        client.stop_server(user)  # the login started it; servers of other suites stay


@pytest.mark.parametrize("user", ["bob", "carol"])
@pytest.mark.parametrize(
    "login", [(d, "groups+profiles") for d in DIALECTS], ids=list(DIALECTS), indirect=True
)
def test_the_provider_groups_pick_the_profile(
    target: Target, login: tuple[str, str], user: str, login_report: LoginReport
) -> None:
    """bob's ml-lab comes from the provider only, carol's staff from the environment only."""
    group = "ml-lab" if user == "bob" else "staff"
    was_running = server_running(target, user)  # another suite's server: restarted, then kept
    client = HubClient(target.url, verify=target.verify)
    start = time.monotonic()
    assert client.oauth_login(user, PASSWORDS[user]).status_code == 200
    if was_running:
        client.stop_server(user)
        client.start_server(user)
    else:
        wait_for(lambda: client.server_ready(user), 120, f"{user}'s server")
        wait_for(lambda: client.lab_status(user) == 200, 60, f"{user}'s JupyterLab")
        login_report.times[f"test provider, {login[0]} ({user})"] = time.monotonic() - start
    memory = target.inspect(target.user_container(user))["HostConfig"]["Memory"]
    want = int(MEMORY[group][:-1]) * 2**20
    assert memory == want, f"{login[0]}: {user} ({group}) got {memory} bytes, want {want}"
    assert client.lab_status(user) == 200
    if not was_running:
        client.stop_server(user)


@pytest.mark.parametrize("login", [("gitlab", "names-only")], ids=["gitlab"], indirect=True)
def test_a_revoked_admin_loses_admin_rights_at_the_next_deploy(
    target: Target, login: tuple[str, str]
) -> None:
    client = HubClient(target.url, verify=target.verify)
    assert client.oauth_login(ADMIN, PASSWORDS[ADMIN]).status_code == 200
    assert client.api("GET", "user").json()["admin"] is True
    assert client.api("GET", "users").status_code == 200, "an admin lists the users"
    checkout = Checkout(target.checkout_root)
    path = checkout.env_file(target.name)
    data = yaml.safe_load(path.read_text())
    data["auth"].update(admin_users=[], allowed_users=["carol", ADMIN])
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    target.redeploy()
    me = client.api("GET", "user").json()  # the same session, kept across the deploy
    assert me["admin"] is False, f"still an admin after the deploy: {me}"
    assert client.api("GET", "users").status_code == 403, "no admin API any more"
    again = HubClient(target.url, verify=target.verify)
    assert again.oauth_login(ADMIN, PASSWORDS[ADMIN]).status_code == 200
    assert again.api("GET", "user").json()["admin"] is False, "nor after a new login"
