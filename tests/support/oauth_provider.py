"""A test OAuth2 provider built on Authlib's authorization server (Flask integration).

It speaks the real authorization-code flow (state, PKCE with S256 required, client
authentication, token exchange) and serves the user APIs that OAuthenticator calls, in three
dialects: GitLab (``/gitlab``), GitHub Enterprise (``/github``) and generic OIDC (``/oidc``).
Users sign in on its own login form with a username and password.
"""

from __future__ import annotations

import html
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import grants
from authlib.oauth2.rfc6749.models import AuthorizationCodeMixin, ClientMixin
from authlib.oauth2.rfc7636 import CodeChallenge
from flask import Flask, Response, abort, jsonify, request
from werkzeug.serving import make_server


@dataclass(frozen=True)
class ProviderUser:
    username: str
    password: str
    id: int
    groups: tuple[str, ...] = ()

    @property
    def email(self) -> str:
        return f"{self.username}@lab.example.org"


@dataclass
class Client(ClientMixin):
    client_id: str
    client_secret: str
    redirect_uris: list[str]
    scopes: set[str]

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uris[0]

    def get_allowed_scope(self, scope: str) -> str:
        return " ".join(s for s in (scope or "").split() if s in self.scopes)

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


@dataclass
class Provider:
    """State of a running provider: what the tests configure and inspect."""

    base_url: str
    client: Client
    users: dict[str, ProviderUser]
    codes: dict[str, Code] = field(default_factory=dict)
    tokens: dict[str, ProviderUser] = field(default_factory=dict)
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    token_requests: list[dict[str, str]] = field(default_factory=list)

    @property
    def gitlab_url(self) -> str:
        return f"{self.base_url}/gitlab"

    @property
    def github_url(self) -> str:
        return f"{self.base_url}/github"

    @property
    def oidc(self) -> dict[str, str]:
        return {
            "authorize_url": f"{self.base_url}/oidc/authorize",
            "token_url": f"{self.base_url}/oidc/token",
            "userdata_url": f"{self.base_url}/oidc/userinfo",
        }


LOGIN_FORM = """<!doctype html><title>hubops test provider: sign in</title>
<h1>Sign in to the test provider</h1>
<p>{client} wants to know who you are.</p>
<form method="post">
<label>Username <input name="username" id="username" autofocus></label>
<label>Password <input name="password" id="password" type="password"></label>
<button type="submit" id="sign-in">Sign in</button>
<p class="error">{error}</p>
</form>"""


def create_app(provider: Provider) -> Flask:
    app = Flask("hubops-test-provider")
    server = AuthorizationServer(
        app,
        query_client=lambda cid: provider.client if cid == provider.client.client_id else None,
        save_token=lambda token, req: provider.tokens.__setitem__(token["access_token"], req.user),
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
            return authorization_code.user

    server.register_grant(CodeGrant, [CodeChallenge(required=True)])

    def authorize() -> Any:
        if request.method == "GET":
            provider.authorize_requests.append(dict(request.args))
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
        return server.create_token_response()

    for path in ("/gitlab/oauth/authorize", "/github/login/oauth/authorize", "/oidc/authorize"):
        app.add_url_rule(path, f"authorize-{path}", authorize, methods=["GET", "POST"])
    for path in ("/gitlab/oauth/token", "/github/login/oauth/access_token", "/oidc/token"):
        app.add_url_rule(path, f"token-{path}", token, methods=["POST"])

    def current_user() -> ProviderUser:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        user = provider.tokens.get(value) if scheme.lower() in ("bearer", "token") else None
        if user is None:
            abort(401)
        return user

    @app.get("/gitlab/api/v4/user")
    def gitlab_user() -> Any:
        u = current_user()
        return jsonify(
            id=u.id, username=u.username, name=u.username.title(), email=u.email, state="active"
        )

    @app.get("/gitlab/api/v4/version")
    def gitlab_version() -> Any:
        current_user()
        return jsonify(version="16.11.0-ee", revision="test")

    @app.get("/gitlab/api/v4/groups/<path:group>/members/all/<int:uid>")
    def gitlab_member(group: str, uid: int) -> Any:
        u = current_user()
        if u.id == uid and group in u.groups:
            return jsonify(id=uid, username=u.username, access_level=30)
        return jsonify(message="404 Not found"), 404

    @app.get("/github/api/v3/user")
    def github_user() -> Any:
        u = current_user()
        return jsonify(login=u.username, id=u.id, name=u.username.title(), email=u.email)

    @app.get("/github/api/v3/orgs/<org>/members/<login>")
    def github_member(org: str, login: str) -> Any:
        u = current_user()
        return ("", 204) if (u.username == login and org in u.groups) else ("", 404)

    @app.get("/oidc/userinfo")
    def oidc_userinfo() -> Any:
        u = current_user()
        return jsonify(
            sub=str(u.id), preferred_username=u.username, email=u.email, groups=list(u.groups)
        )

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
        client=Client(
            client_id,
            client_secret,
            redirect_uris,
            scopes={"read_user", "read:user", "read:org", "openid", "profile", "email"},
        ),
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
