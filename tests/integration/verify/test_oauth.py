"""OAuth: the redirect to the provider, and real logins through the test provider (an Authlib
authorization server) in its GitLab, GitHub and generic-OIDC dialects."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.conftest import Checkout
from tests.integration.verify.conftest import ADMIN, USERS, Target, set_auth
from tests.support.hub import HubClient
from tests.support.oauth_provider import Provider
from tests.support.wait import wait_for

PASSWORDS = {u.username: u.password for u in USERS}


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
    assert params["scope"] == [" ".join(auth.scopes)], params  # type: ignore[union-attr]
    assert params["code_challenge_method"] == ["S256"], "PKCE with S256"
    assert len(params["code_challenge"][0]) >= 43, "a real S256 challenge"
    assert params["state"][0], "a state value"
    assert params["redirect_uri"] == [f"{s.public_url}/hub/oauth_callback"], params
    if auth.type == "gitlab":
        assert url == f"{auth.gitlab_url}/oauth/authorize", url  # type: ignore[union-attr]


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


@pytest.fixture(scope="module", params=["gitlab", "github", "oidc"])
def dialect(request: pytest.FixtureRequest, target: Target) -> Iterator[str]:
    """The deployment logs in through the test provider's GitLab, GitHub or OIDC dialect."""
    if target.provider is None:
        pytest.skip("needs the hubops test OAuth provider; run without --env to use it")
    checkout = Checkout(target.checkout_root)
    if request.param != "gitlab":
        set_auth(checkout, target.name, request.param, target.provider)
        target.redeploy()
    yield request.param
    if request.param != "gitlab":
        set_auth(checkout, target.name, "gitlab", target.provider)
        target.redeploy()


def test_an_allowed_user_lands_in_jupyterlab(
    target: Target, dialect: str, provider: Provider
) -> None:
    client = HubClient(target.url, verify=target.verify)
    before = len(provider.token_requests)
    page = client.oauth_login("bob", PASSWORDS["bob"])
    assert page.status_code == 200, f"{dialect}: {page.status_code} {page.url}"
    token = provider.token_requests[before:]
    assert token, f"{dialect}: the hub never exchanged the code"
    assert token[-1]["code_verifier"], "the token request carried the PKCE verifier"
    assert token[-1]["grant_type"] == "authorization_code"
    wait_for(lambda: client.server_ready("bob"), 120, "bob's server")
    lab = client.session.get(client.url("/user/bob/lab"), verify=target.verify, timeout=30)
    assert lab.status_code == 200, f"{dialect}: /user/bob/lab {lab.status_code}"
    assert "JupyterLab" in lab.text, "the page is JupyterLab"
    client.stop_server("bob")


def test_a_user_outside_the_allowed_groups_is_refused(
    target: Target, dialect: str, provider: Provider
) -> None:
    client = HubClient(target.url, verify=target.verify)
    page = client.oauth_login("mallory", PASSWORDS["mallory"])
    assert page.status_code == 403, f"{dialect}: mallory got {page.status_code} at {page.url}"
    assert "403" in page.text, "JupyterHub's error page"
    assert "not allowed" in page.text.lower() or "forbidden" in page.text.lower(), page.text[:500]
    assert client.api("GET", "user").status_code == 403, "mallory has no hub session"


def test_an_admin_user_is_an_admin(target: Target, dialect: str, provider: Provider) -> None:
    admin = HubClient(target.url, verify=target.verify)
    admin.oauth_login(ADMIN, PASSWORDS[ADMIN])
    me = admin.api("GET", "user").json()
    assert me["name"] == ADMIN
    assert me["admin"] is True, f"{dialect}: {ADMIN} is not an admin: {me}"
    other = HubClient(target.url, verify=target.verify)
    other.oauth_login("bob", PASSWORDS["bob"])
    assert other.api("GET", "user").json()["admin"] is False
