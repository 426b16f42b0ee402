"""The authorization-code flow (PKCE S256) against the test provider, for tests that need a
provider token without a hub: the way a browser and the hub together get one."""

from __future__ import annotations

import base64
import hashlib
import secrets
from urllib.parse import parse_qs, urlsplit

import requests

from tests.support.oauth_provider import Provider

PATHS = {  # dialect -> (authorize, token)
    "gitlab": ("/gitlab/oauth/authorize", "/gitlab/oauth/token"),
    "github": ("/github/login/oauth/authorize", "/github/login/oauth/access_token"),
    "oidc": ("/oidc/authorize", "/oidc/token"),
}


def authorize(
    provider: Provider, dialect: str, username: str, scopes: list[str]
) -> tuple[requests.Response, str]:
    """Sign in on the provider's form: its answer (a redirect, or its refusal) and the PKCE
    verifier that goes with the code."""
    authorize_path, _ = PATHS[dialect]
    verifier = secrets.token_urlsafe(32)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    params = {
        "response_type": "code",
        "client_id": provider.client.client_id,
        "redirect_uri": provider.client.redirect_uris[0],
        "scope": " ".join(scopes),
        "state": secrets.token_urlsafe(8),
        "code_challenge": challenge.decode().rstrip("="),
        "code_challenge_method": "S256",
    }
    user = provider.users[username]
    response = requests.post(
        provider.base_url + authorize_path,
        params=params,
        data={"username": user.username, "password": user.password},
        allow_redirects=False,
        timeout=10,
    )
    return response, verifier


def token(provider: Provider, dialect: str, username: str, scopes: list[str]) -> str:
    """An access token for ``username`` granted ``scopes``."""
    signed_in, verifier = authorize(provider, dialect, username, scopes)
    assert signed_in.status_code == 302, f"authorize: {signed_in.status_code} {signed_in.text}"
    code = parse_qs(urlsplit(signed_in.headers["Location"]).query)["code"][0]
    _, token_path = PATHS[dialect]
    response = requests.post(
        provider.base_url + token_path,
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
    assert response.status_code == 200, f"token: {response.status_code} {response.text}"
    return str(response.json()["access_token"])
