"""The test OAuth provider refuses what the real providers refuse, and OAuthenticator's own
classes, run against it, meet the failures the real ones meet.

Each case is a real authorization-code flow on loopback, then the API call in question.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest
import requests
from hubops_hub.auth import HubopsGitHubOAuthenticator, HubopsGitLabOAuthenticator
from oauthenticator.gitlab import GitLabOAuthenticator
from traitlets.config import Config

from tests.support.oauth_client import authorize, token
from tests.support.oauth_provider import KNOWN_SCOPES, Provider, ProviderUser, running_provider

BOB = ProviderUser("bob", "bob-pass", 102, ("ml-lab", "ml-lab/vision", "gh-org:gpu-team"))
PUBLIC = ProviderUser("pat", "pat-pass", 103, ("gh-org",), public_orgs=("gh-org",))


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"  # plain http on loopback
    with running_provider(
        "127.0.0.1", "client", "secret", ["http://127.0.0.1:9/cb"], [BOB, PUBLIC]
    ) as p:
        yield p


def get(provider: Provider, path: str, access_token: str, **kw: object) -> requests.Response:
    return requests.get(
        provider.base_url + path,
        headers={"Authorization": f"Bearer {access_token}"},
        timeout=10,
        **kw,  # type: ignore[arg-type]
    )


# --- GitLab ----------------------------------------------------------------------------------


def test_gitlab_read_user_reads_the_user_but_not_the_groups(provider: Provider) -> None:
    t = token(provider, "gitlab", "bob", ["read_user"])
    assert get(provider, "/gitlab/api/v4/user", t).json()["username"] == "bob"
    assert get(provider, "/gitlab/api/v4/version", t).status_code == 200
    member = get(provider, "/gitlab/api/v4/groups/ml-lab/members/all/102", t)
    assert member.status_code == 403
    assert member.json()["error"] == "insufficient_scope"
    assert member.json()["scope"] == "api read_api"
    assert "WWW-Authenticate" not in member.headers, "GitLab sends none with a 403"
    assert get(provider, "/gitlab/oauth/userinfo", t).status_code == 403, "needs openid"


def test_gitlab_read_api_sees_membership_and_openid_sees_the_groups(provider: Provider) -> None:
    api = token(provider, "gitlab", "bob", ["read_api"])
    assert get(provider, "/gitlab/api/v4/groups/ml-lab/members/all/102", api).status_code == 200
    assert get(provider, "/gitlab/api/v4/groups/other/members/all/102", api).status_code == 404
    oid = token(provider, "gitlab", "bob", ["read_user", "openid"])
    assert get(provider, "/gitlab/oauth/userinfo", oid).json()["groups"] == list(BOB.groups)


def test_gitlab_refuses_a_scope_the_application_was_not_given(provider: Provider) -> None:
    provider.enabled["gitlab"] = {"read_user"}
    try:
        refused, _ = authorize(provider, "gitlab", "bob", ["read_user", "openid"])
    finally:
        provider.enabled["gitlab"] = set(KNOWN_SCOPES["gitlab"])
    assert refused.status_code == 400
    assert "The requested scope is invalid" in refused.text


def test_oauthenticators_group_check_fails_with_read_user_as_on_a_real_gitlab(
    provider: Provider,
) -> None:
    """The flagship bug: GitLabOAuthenticator's allowed_gitlab_groups with read_user."""
    c = Config()
    c.GitLabOAuthenticator.gitlab_url = provider.gitlab_url
    auth = GitLabOAuthenticator(config=c)
    narrow = token(provider, "gitlab", "bob", ["read_user"])
    wide = token(provider, "gitlab", "bob", ["read_api"])
    auth.allowed_gitlab_groups = {"ml-lab"}
    assert asyncio.run(auth._check_membership_allowed_groups(102, narrow)) is False
    assert asyncio.run(auth._check_membership_allowed_groups(102, wide)) is True


def model(access_token: str, name: str = "bob") -> dict[str, object]:
    return {
        "name": name,
        "admin": None,
        "auth_state": {"token_response": {"access_token": access_token, "token_type": "bearer"}},
    }


def test_hubops_reads_gitlab_groups_from_the_openid_userinfo(provider: Provider) -> None:
    c = Config()
    c.HubopsGitLabOAuthenticator.gitlab_url = provider.gitlab_url
    auth = HubopsGitLabOAuthenticator(config=c)
    groups = asyncio.run(auth.provider_groups(model(token(provider, "gitlab", "bob", ["openid"]))))
    assert groups == set(BOB.groups)
    narrow = token(provider, "gitlab", "bob", ["read_user"])
    assert asyncio.run(auth.provider_groups(model(narrow))) == set(), "refused: no groups"


# --- GitHub ----------------------------------------------------------------------------------


def test_github_hides_private_membership_without_read_org(provider: Provider) -> None:
    t = token(provider, "github", "bob", ["read:user"])
    check = get(provider, "/github/api/v3/orgs/gh-org/members/bob", t, allow_redirects=False)
    assert check.status_code == 302
    assert check.headers["Location"].endswith("/orgs/gh-org/public_members/bob")
    assert get(provider, "/github/api/v3/orgs/gh-org/members/bob", t).status_code == 404
    assert get(provider, "/github/api/v3/user/teams", t).status_code == 403
    assert get(provider, "/github/api/v3/user/orgs", t).status_code == 403
    public = token(provider, "github", "pat", ["read:user"])
    assert get(provider, "/github/api/v3/orgs/gh-org/members/pat", public).status_code == 204


def test_github_lists_orgs_for_user_too_and_reports_scopes_comma_separated(
    provider: Provider,
) -> None:
    t = token(provider, "github", "bob", ["user"])
    assert "gh-org" in [o["login"] for o in get(provider, "/github/api/v3/user/orgs", t).json()]
    signed_in, verifier = authorize(provider, "github", "bob", ["read:user", "read:org"])
    code = signed_in.headers["Location"].split("code=", 1)[1].split("&", 1)[0]
    answer = requests.post(
        provider.base_url + "/github/login/oauth/access_token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": provider.client.redirect_uris[0],
            "code_verifier": verifier,
        },
        auth=(provider.client.client_id, provider.client.client_secret),
        headers={"Accept": "application/json"},
        timeout=10,
    )
    assert answer.json()["scope"] == "read:user,read:org"


def test_github_read_org_shows_orgs_and_teams(provider: Provider) -> None:
    t = token(provider, "github", "bob", ["read:user", "read:org"])
    assert get(provider, "/github/api/v3/orgs/gh-org/members/bob", t).status_code == 204
    c = Config()
    c.HubopsGitHubOAuthenticator.github_url = provider.github_url
    auth = HubopsGitHubOAuthenticator(config=c)
    groups = asyncio.run(auth.provider_groups(model(t)))
    assert {"gh-org", "gh-org:gpu-team"} <= groups


# --- OpenID Connect --------------------------------------------------------------------------


def test_oidc_releases_the_groups_claim_only_for_the_groups_scope(provider: Provider) -> None:
    without = token(provider, "oidc", "bob", ["openid", "profile"])
    claims = get(provider, "/oidc/userinfo", without).json()
    assert claims["preferred_username"] == "bob"
    assert "groups" not in claims
    with_groups = token(provider, "oidc", "bob", ["openid", "profile", "groups"])
    assert get(provider, "/oidc/userinfo", with_groups).json()["groups"] == list(BOB.groups)
    only_email = get(provider, "/oidc/userinfo", token(provider, "oidc", "bob", ["openid"]))
    assert "preferred_username" not in only_email.json(), "profile claims need profile"
    assert (
        get(provider, "/oidc/userinfo", token(provider, "oidc", "bob", ["profile"])).status_code
        == 403
    )


def test_oidc_discovery_names_its_endpoints(provider: Provider) -> None:
    doc = requests.get(f"{provider.oidc_issuer}/.well-known/openid-configuration", timeout=10)
    assert doc.json()["issuer"] == provider.oidc_issuer
    assert doc.json()["userinfo_endpoint"] == provider.oidc["userdata_url"]
