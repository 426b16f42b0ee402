"""A third-party OpenID provider for the verify suites: django-oidc-provider (PyPI), a real
OP implementation used in production Django sites, run in its own process from the test
virtualenv and served over TLS on an address of the lab host's network.

Nothing of the protocol is ours: discovery, the authorization-code flow with PKCE, consent,
tokens, userinfo and scope-filtered claims are django-oidc-provider's. What is ours is the
glue a site adds: a Django settings module, a login page, the user's claims, and a ``groups``
scope that releases a ``groups`` claim (the Django groups of the user), as Dex and most
providers do.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.support.wait import wait_for

REPO_ROOT = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class OPUser:
    username: str
    password: str
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class DjangoOP:
    issuer: str
    ca_file: Path  # the certificate the OP serves (self-signed: it is its own CA)
    log: Path


@contextmanager
def running_django_op(
    root: Path,
    host: str,
    port: int,
    cert: Path,
    key: Path,
    client_id: str,
    client_secret: str,
    redirect_uris: list[str],
    users: list[OPUser],
) -> Iterator[DjangoOP]:
    """Serve django-oidc-provider at https://HOST:PORT/openid until the block ends."""
    root.mkdir(parents=True, exist_ok=True)
    site = f"https://{host}:{port}"
    config = {
        "host": host,
        "port": port,
        "cert": str(cert),
        "key": str(key),
        "db": str(root / "op.sqlite"),
        "site_url": site,
        "client": {
            "client_id": client_id,
            "client_secret": client_secret,
            "redirect_uris": redirect_uris,
        },
        "users": [
            {"username": u.username, "password": u.password, "groups": list(u.groups)}
            for u in users
        ],
    }
    config_file = root / "op.json"
    config_file.write_text(json.dumps(config))
    log = root / "op.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.django_op", str(config_file)],
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    issuer = f"{site}/openid"
    try:
        wait_for(
            lambda: (
                proc.poll() is None
                and requests.get(
                    f"{issuer}/.well-known/openid-configuration", verify=str(cert), timeout=3
                ).ok
            ),
            90,
            f"django-oidc-provider at {issuer} (log: {log})",
        )
        if proc.poll() is not None:
            raise RuntimeError(f"django-oidc-provider exited: {log.read_text()[-2000:]}")
        yield DjangoOP(issuer=issuer, ca_file=cert, log=log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
