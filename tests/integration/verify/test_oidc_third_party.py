"""Logins through an OpenID provider nobody here wrote: django-oidc-provider from PyPI, run in
its own process over TLS with a certificate of its own CA, the way a lab runs an internal IdP.

The deployment names only the issuer (the endpoints come from discovery, on the operator's
machine and on the hub) and the CA (``auth.ca_bundle``); the allowed group and the profile's
memory limit come from the provider's ``groups`` claim.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
import yaml

from hubops.config.oidc import check_discovery
from hubops.host.target import open_host
from hubops.ops.doctor import run_checks
from tests.support.checkout import Checkout
from tests.support.django_op import DjangoOP, OPUser, running_django_op
from tests.support.hub import HubClient
from tests.support.labhost import LabHost
from tests.support.net import free_port
from tests.support.tls import write_cert
from tests.support.verify import CLIENT_ID, CLIENT_SECRET, LoginReport, Target
from tests.support.wait import wait_for

USERS = {
    u.username: u
    for u in [
        OPUser("erin", "erin-pass", ("ml-lab",)),
        OPUser("frank", "frank-pass", ("visitors",)),
    ]
}
MEMORY = "768M"
NAME = "django-oidc-provider"


@pytest.fixture(scope="module")
def op(
    target: Target, lab: LabHost, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[DjangoOP, str]]:
    """The provider, and the deployment pointed at it by issuer; yields (provider, the CA
    bundle a client of both the hub and the provider trusts)."""
    if target.provider is None:
        pytest.skip("makes its own deployment's login; run without --env")
    root = tmp_path_factory.mktemp("django-op")
    cert, key = write_cert(
        root / "tls", datetime.now(timezone.utc) + timedelta(days=7), ip=lab.gateway_ip
    )
    callback = f"{target.url}/hub/oauth_callback"
    with running_django_op(
        root,
        lab.gateway_ip,
        free_port(),
        cert,
        key,
        CLIENT_ID,
        CLIENT_SECRET,
        [callback],
        list(USERS.values()),
    ) as provider:
        path = Checkout(target.checkout_root).env_file(target.name)
        before = path.read_text()
        data = yaml.safe_load(before)
        data["auth"] = {
            "type": "oidc",
            "issuer": provider.issuer,
            "client_id": CLIENT_ID,
            "ca_bundle": str(cert),
            "allowed_groups": ["ml-lab"],
        }
        data.pop("groups", None)
        data["singleuser"]["profiles"] = [{"groups": ["ml-lab"], "mem_limit": MEMORY}]
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        bundle = root / "trust.pem"
        assert target.cert is not None
        bundle.write_text(target.cert.read_text() + cert.read_text())
        try:
            target.redeploy()
            yield provider, str(bundle)
        finally:
            path.write_text(before)
            target.redeploy()


def test_check_strict_finds_the_endpoints_by_discovery(
    target: Target, op: tuple[DjangoOP, str]
) -> None:
    provider, _ = op
    found = check_discovery(target.env)
    assert found == {
        "authorize_url": f"{provider.issuer}/authorize",
        "token_url": f"{provider.issuer}/token",
        "userdata_url": f"{provider.issuer}/userinfo",
    }


def test_a_group_member_logs_in_and_gets_the_groups_profile(
    target: Target, op: tuple[DjangoOP, str], login_report: LoginReport
) -> None:
    _, bundle = op
    client = HubClient(target.url, verify=bundle)
    start = time.monotonic()
    page = client.oauth_login("erin", USERS["erin"].password)
    assert page.status_code == 200, f"erin got {page.status_code} at {page.url}"
    wait_for(lambda: client.server_ready("erin"), 120, "erin's server")
    wait_for(lambda: client.lab_status("erin") == 200, 60, "erin's JupyterLab")
    login_report.times[f"{NAME} (by issuer, TLS)"] = time.monotonic() - start
    me = client.api("GET", "user").json()
    assert me["groups"] == ["ml-lab"], f"groups from the provider's claim: {me['groups']}"
    login_report.matrix[(NAME, "groups+profiles", "erin")] = "in"
    memory = target.inspect(target.user_container("erin"))["HostConfig"]["Memory"]
    assert memory == 768 * 2**20, f"the ml-lab profile's limit: {memory}"
    client.stop_server("erin")


def test_a_user_outside_the_allowed_groups_is_refused(
    target: Target, op: tuple[DjangoOP, str], login_report: LoginReport
) -> None:
    _, bundle = op
    client = HubClient(target.url, verify=bundle)
    page = client.oauth_login("frank", USERS["frank"].password)
    assert page.status_code == 403, f"frank got {page.status_code} at {page.url}"
    assert client.api("GET", "user").status_code == 403
    login_report.matrix[(NAME, "groups+profiles", "frank")] = "refused"


def test_doctor_reaches_the_issuer_from_the_host_trusting_its_ca(
    target: Target, op: tuple[DjangoOP, str]
) -> None:
    env = target.env
    with open_host(target.checkout_root, env) as host:
        checks = run_checks(host, env.settings, target.plan)
    oauth = next(c for c in checks if c.name == "oauth provider")
    assert oauth.status == "ok", oauth
    assert "/.well-known/openid-configuration" in oauth.detail, oauth.detail
