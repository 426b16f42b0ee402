"""Debian's docker-registry (distribution 2.8) on loopback, with either of the auth schemes
real registries use:

- ``htpasswd``: HTTP Basic, as a small self-hosted registry;
- ``token``: the Docker token flow of GitLab's registry, Harbor and GHCR. The registry answers
  401 with ``WWW-Authenticate: Bearer realm=...,service=...,scope=...``; the client fetches a
  token from the realm with its credentials; the registry checks the token's signature against
  ``rootcertbundle``, its issuer, audience, expiry and the granted actions.

The token service here is ours, a few lines on PyJWT (RS256) served by Werkzeug: it checks
the user's password, grants ``pull,push`` on the ``hubops/`` repositories to that user, and
names its key the way distribution looks it up (libtrust's key ID in the ``kid`` header).
With ``rogue=True`` it signs with a key the registry does not trust, as a token service whose
certificate the registry was not given.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import bcrypt
import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from tests.support.apt import ensure_commands
from tests.support.net import free_port
from tests.support.tls import self_signed
from tests.support.wait import wait_for

SERVICE = "hubops-test-registry"
ISSUER = "hubops-test-token-service"
NAMESPACE = "hubops/"


@dataclass(frozen=True)
class Registry:
    address: str  # host:port
    auth: str  # "htpasswd" or "token"
    tokens_issued: list[str]  # "user scope" of each token the token service handed out


def libtrust_key_id(public_key: rsa.RSAPublicKey) -> str:
    """The key ID distribution uses to find a token's signing key (docker/libtrust): SHA-256 of
    the DER public key, first 240 bits, base32 in 12 groups of 4."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


def _key_and_cert(root: Path) -> tuple[rsa.RSAPrivateKey, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = self_signed(key, ISSUER, datetime.now(timezone.utc) + timedelta(days=30), ip=None)
    path = root / "token-signer.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, path


class TokenService:
    """GET /token: Basic credentials -> a signed JWT with the actions granted."""

    def __init__(self, users: dict[str, str], key: rsa.RSAPrivateKey) -> None:
        self.users, self.key = users, key
        self.kid = libtrust_key_id(key.public_key())
        self.issued: list[str] = []

    def __call__(self, environ: dict[str, object], start_response: object) -> object:
        request = Request(environ)  # type: ignore[arg-type]
        response = self.token(request)
        return response(environ, start_response)  # type: ignore[arg-type]

    def token(self, request: Request) -> Response:
        if request.path != "/token":
            return Response("not found", 404)
        auth = request.authorization
        user = None
        if auth is not None:  # docker login sends Basic credentials; refuse wrong ones
            expected = self.users.get(auth.username or "")
            if expected is None or not secrets.compare_digest(auth.password or "", expected):
                return Response('{"details": "invalid credentials"}', 401)
            user = auth.username
        access = []
        for scope in request.args.getlist("scope"):
            kind, _, rest = scope.partition(":")
            name, _, wanted = rest.rpartition(":")
            if kind == "repository" and user is not None and name.startswith(NAMESPACE):
                granted = [a for a in wanted.split(",") if a in ("pull", "push")]
                access.append({"type": "repository", "name": name, "actions": granted})
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": user or "",
            "aud": request.args.get("service", ""),
            "iat": now,
            "nbf": now - 5,
            "exp": now + 300,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        token = jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})
        self.issued.append(f"{user or '(anonymous)'} {' '.join(request.args.getlist('scope'))}")
        body = {"token": token, "access_token": token, "expires_in": 300}
        return Response(json.dumps(body), 200, content_type="application/json")


@contextmanager
def running_registry(
    root: Path, users: dict[str, str], auth: str = "htpasswd", rogue: bool = False
) -> Iterator[Registry]:
    """Debian's docker-registry on 127.0.0.1 with ``auth`` (htpasswd or token)."""
    ensure_commands({"docker-registry": "docker-registry"})
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    issued: list[str] = []
    server = thread = None
    if auth == "htpasswd":
        lines = [
            f"{u}:{bcrypt.hashpw(p.encode(), bcrypt.gensalt(rounds=5)).decode()}\n"
            for u, p in users.items()
        ]
        (root / "htpasswd").write_text("".join(lines))
        auth_yaml = f"{{htpasswd: {{realm: hubops-test, path: {root}/htpasswd}}}}"
    else:
        key, cert = _key_and_cert(root)
        signer = rsa.generate_private_key(public_exponent=65537, key_size=2048) if rogue else key
        service = TokenService(users, signer)
        issued = service.issued
        server = make_server("127.0.0.1", 0, service, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        realm = f"http://127.0.0.1:{server.server_port}/token"
        auth_yaml = (
            f"{{token: {{realm: '{realm}', service: {SERVICE}, issuer: {ISSUER}, "
            f"rootcertbundle: {cert}}}}}"
        )
    (root / "config.yml").write_text(
        "version: 0.1\n"
        "log: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {root}/data}}, delete: {{enabled: true}}}}\n"
        f"http: {{addr: '127.0.0.1:{port}', secret: test-only-http-secret}}\n"
        f"auth: {auth_yaml}\n"
    )
    with (root / "registry.log").open("w") as log:
        proc = subprocess.Popen(
            ["docker-registry", "serve", str(root / "config.yml")], stdout=log, stderr=log
        )
    try:
        wait_for(
            lambda: requests.get(f"http://127.0.0.1:{port}/v2/", timeout=2).status_code == 401,
            timeout=30,
            what=f"docker-registry to answer (log: {root / 'registry.log'})",
        )
        yield Registry(address=f"127.0.0.1:{port}", auth=auth, tokens_issued=issued)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if server is not None and thread is not None:
            server.shutdown()
            thread.join(timeout=10)
