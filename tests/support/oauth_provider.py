"""A test OAuth2 provider built on Authlib's authorization server (Flask integration).

It speaks the real authorization-code flow (state, PKCE with S256 required, client
authentication, token exchange) and serves the user APIs that OAuthenticator and hubops call,
in three dialects: GitLab (``/gitlab``), GitHub Enterprise (``/github``) and generic OIDC
(``/oidc``). Users sign in on its own login form with a username and password.

It refuses what the real providers refuse (checked against their sources and docs):

- **Scopes the application was not given** are refused at the authorize step with GitLab's
  ``invalid_scope`` page (Doorkeeper's ``enforce_configured_scopes``) and OIDC's
  ``invalid_scope`` error; GitHub grants any scope it knows.
- **GitLab** checks each API call against the token's scopes (``lib/api/api_guard.rb``):
  ``/api/v4/user`` and ``/version`` take ``read_user``, ``read_api`` or ``api``; the group and
  project member APIs take only ``read_api`` or ``api``; ``/oauth/userinfo`` takes ``openid``
  and lists the user's groups (full paths). A missing scope is 403 with
  ``{"error": "insufficient_scope", ..., "scope": "..."}`` and no WWW-Authenticate header.
- **GitHub** shows private organization and team membership only with ``read:org``
  (``write:org``, ``admin:org``): without it the membership check redirects (302) to the
  public-members check, which is 404 for a private member. ``/user/orgs`` and ``/user/teams``
  need ``read:org`` or ``user`` and answer 403 otherwise (GitHub's REST description). Its token
  response lists the granted scopes comma-separated, as GitHub's does.
- **OIDC** answers its userinfo only for ``openid``, and releases each claim only for the
  scope that asks for it: ``preferred_username`` and ``name`` for ``profile``, ``email`` for
  ``email``, ``groups`` for ``groups`` (as Dex does). Its discovery document is at
  ``/oidc/.well-known/openid-configuration``.
"""

from __future__ import annotations

import html
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import quote

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.models import AuthorizationCodeMixin, ClientMixin
from authlib.oauth2.rfc7636 import CodeChallenge
from flask import Flask, Response, abort, jsonify, redirect, request
from werkzeug.serving import make_server

DIALECTS = ("gitlab", "github", "oidc")
# scopes each dialect knows; the GitLab application and the OIDC client are registered with
# ``Provider.enabled`` (a subset), as an admin does in GitLab's or Keycloak's settings
KNOWN_SCOPES = {
    "gitlab": {"read_user", "read_api", "api", "openid", "profile", "email"},
    "github": {"read:user", "user", "user:email", "read:org", "write:org", "admin:org", "repo"},
    "oidc": {"openid", "profile", "email", "groups"},
}
GITLAB_USER = {"read_user", "read_api", "api"}
GITLAB_API = {"read_api", "api"}
GITHUB_ORG = {"read:org", "write:org", "admin:org"}  # see private membership
GITHUB_LISTS = {*GITHUB_ORG, "user"}  # /user/orgs and /user/teams: "read:org or user", else 403


@dataclass(frozen=True)
class ProviderUser:
    """A user of the provider. ``groups``: GitLab group paths, GitHub organizations and
    ``org:team`` pairs, OIDC group names; GitHub memberships are private unless listed in
    ``public_orgs``."""

    username: str
    password: str
    id: int
    groups: tuple[str, ...] = ()
    public_orgs: tuple[str, ...] = ()

    @property
    def email(self) -> str:
        return f"{self.username}@lab.example.org"

    @property
    def orgs(self) -> set[str]:
        return {g.split(":", 1)[0] for g in self.groups}

    @property
    def teams(self) -> set[tuple[str, str]]:
        return {(g.split(":", 1)[0], g.split(":", 1)[1]) for g in self.groups if ":" in g}


@dataclass
class Client(ClientMixin):
    client_id: str
    client_secret: str
    redirect_uris: list[str]

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uris[0]

    def get_allowed_scope(self, scope: str) -> str:
        return scope or ""  # checked against the dialect's registration before the grant

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"


@dataclass
class Code(AuthorizationCodeMixin):
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: ProviderUser
    code_challenge: str | None
    code_challenge_method: str | None
    issued: float = field(default_factory=time.time)

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> None:
        return None

    def get_auth_time(self) -> int:
        return int(self.issued)


@dataclass(frozen=True)
class Grant:
    """What an access token stands for."""

    user: ProviderUser
    scopes: frozenset[str]


@dataclass
class Provider:
    """State of a running provider: what the tests configure and inspect."""

    base_url: str
    client: Client
    users: dict[str, ProviderUser]
    # scopes the application is registered with, per dialect (GitHub: any it knows)
    enabled: dict[str, set[str]] = field(default_factory=lambda: dict(KNOWN_SCOPES))
    codes: dict[str, Code] = field(default_factory=dict)
    tokens: dict[str, Grant] = field(default_factory=dict)
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (path, why)

    @property
    def gitlab_url(self) -> str:
        return f"{self.base_url}/gitlab"

    @property
    def github_url(self) -> str:
        return f"{self.base_url}/github"

    @property
    def oidc_issuer(self) -> str:
        return f"{self.base_url}/oidc"

    @property
    def oidc(self) -> dict[str, str]:
        return {
            "authorize_url": f"{self.base_url}/oidc/authorize",
            "token_url": f"{self.base_url}/oidc/token",
            "userdata_url": f"{self.base_url}/oidc/userinfo",
        }

    def add_user(self, user: ProviderUser) -> None:
        self.users[user.username] = user
        for token, grant in list(self.tokens.items()):  # tokens see the user as now
            if grant.user.username == user.username:
                self.tokens[token] = Grant(user, grant.scopes)


LOGIN_FORM = """<!doctype html><title>hubops test provider: sign in</title>
<h1>Sign in to the test provider</h1>
<p>{client} wants to know who you are.</p>
<form method="post">
<label>Username <input name="username" id="username" autofocus></label>
<label>Password <input name="password" id="password" type="password"></label>
<button type="submit" id="sign-in">Sign in</button>
<p class="error">{error}</p>
</form>"""

INVALID_SCOPE_PAGE = """<!doctype html><title>An error has occurred</title>
<h1>An error has occurred</h1>
<p>The requested scope is invalid, unknown, or malformed.</p>"""


def create_app(provider: Provider) -> Flask:
    app = Flask("hubops-test-provider")

    def save_token(token: dict[str, Any], req: Any) -> None:
        scopes = frozenset(str(token.get("scope") or "").split())
        provider.tokens[token["access_token"]] = Grant(req.user, scopes)

    server = AuthorizationServer(
        app,
        query_client=lambda cid: provider.client if cid == provider.client.client_id else None,
        save_token=save_token,
    )

    class CodeGrant(grants.AuthorizationCodeGrant):
        TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = [
            "client_secret_basic",
            "client_secret_post",
        ]

        def save_authorization_code(self, code: str, req: Any) -> None:
            provider.codes[code] = Code(
                code=code,
                client_id=req.client.client_id,
                redirect_uri=req.payload.redirect_uri,
                scope=req.payload.scope,
                user=req.user,
                code_challenge=req.payload.data.get("code_challenge"),
                code_challenge_method=req.payload.data.get("code_challenge_method"),
            )

        def query_authorization_code(self, code: str, client: Client) -> Code | None:
            found = provider.codes.get(code)
            if found and found.client_id == client.client_id and time.time() - found.issued < 60:
                return found
            return None

        def delete_authorization_code(self, authorization_code: Code) -> None:
            provider.codes.pop(authorization_code.code, None)

        def authenticate_user(self, authorization_code: Code) -> ProviderUser:
            return provider.users[authorization_code.user.username]

    server.register_grant(CodeGrant, [CodeChallenge(required=True)])

    def authorize(dialect: str) -> Any:
        requested = set(request.args.get("scope", "").split())
        if request.method == "GET":
            provider.authorize_requests.append(dict(request.args))
        unknown = requested - provider.enabled[dialect]
        if unknown:
            provider.refused.append((request.path, f"invalid_scope {sorted(unknown)}"))
            if dialect == "gitlab":  # GitLab renders its error page, it does not redirect
                return Response(INVALID_SCOPE_PAGE, status=400)
            target = request.args.get("redirect_uri", "")
            if target in provider.client.redirect_uris:
                state = quote(request.args.get("state", ""))
                return redirect(f"{target}?error=invalid_scope&state={state}")
            abort(400)
        if request.method == "GET":
            return LOGIN_FORM.format(client=html.escape(provider.client.client_id), error="")
        user = provider.users.get(request.form.get("username", ""))
        if user is None or not secrets.compare_digest(
            request.form.get("password", ""), user.password
        ):
            form = LOGIN_FORM.format(client="", error="Wrong username or password.")
            return Response(form, status=401)
        try:
            grant = server.get_consent_grant(end_user=user)
        except OAuth2Error as error:
            return server.handle_error_response(server.create_oauth2_request(None), error)
        return server.create_authorization_response(grant_user=user, grant=grant)

    def token() -> Any:
        provider.token_requests.append(
            {k: v for k, v in request.form.items() if k != "client_secret"}
        )
        response = server.create_token_response()
        if request.path.startswith("/github/") and response.is_json:
            body = response.get_json()
            if isinstance(body, dict) and "scope" in body:  # GitHub: "read:org,read:user"
                body["scope"] = ",".join(str(body["scope"]).split())
                response.set_data(json.dumps(body))
        return response

    for dialect, path in (
        ("gitlab", "/gitlab/oauth/authorize"),
        ("github", "/github/login/oauth/authorize"),
        ("oidc", "/oidc/authorize"),
    ):
        app.add_url_rule(
            path,
            f"authorize-{dialect}",
            lambda d=dialect: authorize(d),
            methods=["GET", "POST"],
        )
    for path in ("/gitlab/oauth/token", "/github/login/oauth/access_token", "/oidc/token"):
        app.add_url_rule(path, f"token-{path}", token, methods=["POST"])

    def bearer() -> Grant:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        grant = provider.tokens.get(value) if scheme.lower() in ("bearer", "token") else None
        if grant is None:
            abort(401)
        return grant

    def gitlab_grant(accepted: set[str], listed: str) -> Grant:
        """The caller's grant if its token has one of ``accepted``; else GitLab's 403."""
        grant = bearer()
        if not grant.scopes & accepted:
            provider.refused.append((request.path, "insufficient_scope"))
            body = {
                "error": "insufficient_scope",
                "error_description": "The request requires higher privileges than provided "
                "by the access token.",
                "scope": listed,
            }
            abort(Response(jsonify(body).get_data(), 403, content_type="application/json"))
        return grant

    # --- GitLab ------------------------------------------------------------------------------

    @app.get("/gitlab/api/v4/user")
    def gitlab_user() -> Any:
        u = gitlab_grant(GITLAB_USER, "read_user api read_api").user
        return jsonify(
            id=u.id, username=u.username, name=u.username.title(), email=u.email, state="active"
        )

    @app.get("/gitlab/api/v4/version")
    def gitlab_version() -> Any:
        gitlab_grant(GITLAB_USER, "read_user api read_api")
        return jsonify(version="17.5.0-ee", revision="test")

    @app.get("/gitlab/api/v4/groups/<path:group>/members/all/<int:uid>")
    def gitlab_member(group: str, uid: int) -> Any:
        gitlab_grant(GITLAB_API, "api read_api")
        member = next((u for u in provider.users.values() if u.id == uid), None)
        if member is not None and group in member.groups:
            return jsonify(id=uid, username=member.username, access_level=30)
        return jsonify(message="404 Not found"), 404

    @app.get("/gitlab/oauth/userinfo")
    def gitlab_userinfo() -> Any:
        grant = bearer()
        if "openid" not in grant.scopes:  # Doorkeeper: doorkeeper_authorize! :openid
            provider.refused.append((request.path, "insufficient_scope"))
            return jsonify(error="insufficient_scope"), 403
        u = grant.user
        return jsonify(
            sub=str(u.id),
            name=u.username.title(),
            nickname=u.username,
            preferred_username=u.username,
            email=u.email,
            email_verified=True,
            groups=list(u.groups),
        )

    # --- GitHub ------------------------------------------------------------------------------

    @app.get("/github/api/v3/user")
    def github_user() -> Any:
        u = bearer().user
        return jsonify(login=u.username, id=u.id, name=u.username.title(), email=u.email)

    def sees_private(grant: Grant) -> bool:
        return bool(grant.scopes & GITHUB_ORG)

    @app.get("/github/api/v3/orgs/<org>/members/<login>")
    def github_member(org: str, login: str) -> Any:
        grant = bearer()
        if not sees_private(grant):  # the token is no org member: ask the public list
            provider.refused.append((request.path, "no read:org: redirected"))
            return redirect(f"{provider.github_url}/api/v3/orgs/{org}/public_members/{login}")
        u = provider.users.get(login)
        return ("", 204) if u is not None and org in u.orgs else ("", 404)

    @app.get("/github/api/v3/orgs/<org>/public_members/<login>")
    def github_public_member(org: str, login: str) -> Any:
        bearer()
        u = provider.users.get(login)
        return ("", 204) if u is not None and org in u.public_orgs else ("", 404)

    @app.get("/github/api/v3/orgs/<org>/teams/<team>/members/<login>")
    def github_team_member(org: str, team: str, login: str) -> Any:
        grant = bearer()
        u = provider.users.get(login)
        if sees_private(grant) and u is not None and (org, team) in u.teams:
            return "", 204
        return jsonify(message="Not Found"), 404

    def may_list(grant: Grant, what: str) -> Any:
        if grant.scopes & GITHUB_LISTS:
            return None
        provider.refused.append((request.path, "no read:org or user"))
        return jsonify(
            message=f"You need at least read:org scope or user scope to list {what}."
        ), 403

    @app.get("/github/api/v3/user/teams")
    def github_teams() -> Any:
        grant = bearer()
        refused = may_list(grant, "your teams")
        if refused:
            return refused
        return jsonify(
            [
                {"slug": team, "name": team, "organization": {"login": org}}
                for org, team in sorted(grant.user.teams)
            ]
        )

    @app.get("/github/api/v3/user/orgs")
    def github_orgs() -> Any:
        grant = bearer()
        refused = may_list(grant, "your organizations")
        if refused:
            return refused
        return jsonify([{"login": org} for org in sorted(grant.user.orgs)])

    # --- OpenID Connect ----------------------------------------------------------------------

    @app.get("/oidc/.well-known/openid-configuration")
    def oidc_discovery() -> Any:
        return jsonify(
            issuer=provider.oidc_issuer,
            authorization_endpoint=provider.oidc["authorize_url"],
            token_endpoint=provider.oidc["token_url"],
            userinfo_endpoint=provider.oidc["userdata_url"],
            scopes_supported=sorted(provider.enabled["oidc"]),
            response_types_supported=["code"],
            code_challenge_methods_supported=["S256"],
            claims_supported=["sub", "preferred_username", "name", "email", "groups"],
        )

    @app.get("/oidc/userinfo")
    def oidc_userinfo() -> Any:
        grant = bearer()
        if "openid" not in grant.scopes:
            provider.refused.append((request.path, "insufficient_scope"))
            return Response(status=403, headers={"WWW-Authenticate": 'error="insufficient_scope"'})
        u = grant.user
        claims: dict[str, Any] = {"sub": str(u.id)}
        if "profile" in grant.scopes:
            claims.update(preferred_username=u.username, name=u.username.title())
        if "email" in grant.scopes:
            claims["email"] = u.email
        if "groups" in grant.scopes:
            claims["groups"] = list(u.groups)
        return jsonify(claims)

    return app


@contextmanager
def running_provider(
    bind: str,
    client_id: str,
    client_secret: str,
    redirect_uris: list[str],
    users: list[ProviderUser],
) -> Iterator[Provider]:
    """Serve a provider on ``bind`` (an address of a network the test made) in a thread."""
    provider = Provider(
        base_url="",
        client=Client(client_id, client_secret, redirect_uris),
        users={u.username: u for u in users},
    )
    server = make_server(bind, 0, create_app(provider), threaded=True)
    provider.base_url = f"http://{bind}:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield provider
    finally:
        server.shutdown()
        thread.join(timeout=10)
