"""A renewed certificate (as `certbot renew` leaves it: new files at the same paths) is served
after the next deploy or `invoke tls.reload`; user servers keep running, users stay logged in,
and doctor tells a stale certificate from a served one."""

from __future__ import annotations

import shutil
import ssl
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from hubops.deploy.tls import fingerprint
from hubops.host.target import open_host
from hubops.ops.doctor import run_checks
from hubops.ops.restore import reload_certificate
from tests.support.tls import write_cert
from tests.support.verify import LoggedIn, Target


def served(target: Target) -> str:
    parts = urlsplit(target.url)
    return fingerprint(ssl.get_server_certificate((parts.hostname or "", parts.port or 443)))


def renew(target: Target, tmp_path: Path, days: int) -> str:
    """Replace tls.cert and tls.key in place with a new pair; returns the new fingerprint."""
    tls = target.env.settings.tls
    assert tls.cert is not None
    assert tls.key is not None
    cert, key = write_cert(
        tmp_path / f"renewed-{days}", datetime.now(timezone.utc) + timedelta(days=days)
    )
    shutil.copyfile(key, tls.key)
    shutil.copyfile(cert, tls.cert)
    return fingerprint(cert.read_text())


def doctor_says(target: Target) -> str:
    env = target.env
    with open_host(target.checkout_root, env) as host:
        check = next(
            c for c in run_checks(host, env.settings, target.plan) if c.name == "tls served"
        )
    return check.status


def test_a_renewed_certificate_is_served_after_a_deploy_or_a_reload(
    target: Target, alice: LoggedIn, tmp_path: Path
) -> None:
    if not target.env.settings.tls.enabled or target.provider is None:
        pytest.skip("renews the certificate of the deployment the suites made")
    if not alice.client.server_ready("alice"):
        alice.client.start_server("alice")
    server = target.inspect(alice.container)
    assert doctor_says(target) == "ok"

    first = renew(target, tmp_path, days=45)
    assert served(target) != first, "the proxy still serves the old one (it reads it at start)"
    assert doctor_says(target) == "fail", "doctor sees the served certificate is stale"
    target.redeploy()
    assert served(target) == first, "the deploy made the proxy serve the renewed certificate"

    second = renew(target, tmp_path, days=60)
    env = target.env
    with open_host(target.checkout_root, env) as host:
        said = reload_certificate(host, target.plan, env.settings)
    assert "serves" in said
    assert served(target) == second, "tls.reload made the proxy serve it"
    assert doctor_says(target) == "ok"

    after = target.inspect(alice.container)
    assert after["Id"] == server["Id"], "the user server is the same container"
    assert after["State"]["StartedAt"] == server["State"]["StartedAt"], "and was not restarted"
    me = alice.client.api("GET", "user")
    assert me.status_code == 200, "alice is still logged in"
    assert alice.client.lab_status("alice") == 200, "and reaches her JupyterLab"
