"""The hub answers: health, API version, proxy routes, TLS as configured."""

from __future__ import annotations

import json
import ssl
from urllib.parse import urlsplit

import requests
from cryptography import x509

from hubops.images.table import VERSIONS
from hubops.plan.model import HUB_PORT, PROXY_API_PORT
from tests.support.verify import Target


def test_health_answers(target: Target) -> None:
    response = requests.get(f"{target.url}/hub/health", verify=target.verify, timeout=10)
    assert response.status_code == 200, f"/hub/health: {response.status_code}"


def test_api_reports_the_pinned_jupyterhub(target: Target) -> None:
    version = requests.get(f"{target.url}/hub/api", verify=target.verify, timeout=10).json()
    assert version["version"] == VERSIONS["JUPYTERHUB_VERSION"], version


def test_proxy_routes_the_hub_and_every_running_server(target: Target) -> None:
    """The proxy's routing table (asked with its own token, from the hub): the default route
    goes to the hub, and each running user server has its route to that server."""
    proxy = target.container("proxy")
    script = (
        "import json, urllib.request; "
        "token = open('/srv/jupyterhub/secrets/proxy_token').read().strip(); "
        f"req = urllib.request.Request('http://{proxy}:{PROXY_API_PORT}/api/routes', "
        "headers={'Authorization': 'token ' + token}); "
        "print(json.dumps(json.load(urllib.request.urlopen(req))))"
    )
    result = target.in_container(target.container("hub"), f'python3 -c "{script}"')
    assert result.rc == 0, result.stderr
    routes = json.loads(result.stdout)
    prefix = urlsplit(target.url).path.rstrip("/") + "/"
    assert routes[prefix]["target"] == f"http://{target.container('hub')}:{HUB_PORT}", routes
    running = target.host.check_output(
        "docker ps --filter label=org.hubops.environment=%s --filter label=org.hubops.role=user "
        "--format '{{.Label \"org.hubops.user\"}}'",
        target.name,
    ).split()
    for user in running:
        route = routes.get(f"{prefix}user/{user}") or routes.get(f"{prefix}user/{user}/")
        assert route is not None, f"{user}'s server runs but has no route: {sorted(routes)}"
        assert route["target"].endswith(":8888"), route


def test_served_certificate_is_the_configured_one(target: Target) -> None:
    tls = target.env.settings.tls
    if not tls.enabled:
        import pytest

        pytest.skip("TLS is not enabled in this environment")
    assert tls.cert is not None
    parts = urlsplit(target.url)
    served = ssl.get_server_certificate((parts.hostname or "", parts.port or 443))
    configured = target.host.file(tls.cert).content_string
    assert x509.load_pem_x509_certificate(served.encode()).fingerprint(
        _sha256()
    ) == x509.load_pem_x509_certificates(configured.encode())[0].fingerprint(_sha256()), (
        "the proxy serves a different certificate than tls.cert"
    )


def test_plain_http_behaves_as_configured(target: Target) -> None:
    """hub.http_port set: plain http redirects to https. Unset: nothing answers plain http."""
    s = target.env.settings
    if not s.tls.enabled:
        import pytest

        pytest.skip("TLS is not enabled: plain http is the protocol")
    host = urlsplit(target.url).hostname
    if s.hub.http_port is None:
        try:
            requests.get(f"http://{host}:{s.hub.port}/hub/health", timeout=5)
        except requests.ConnectionError:
            return
        raise AssertionError("plain http on the TLS port must not be served")
    response = requests.get(
        f"http://{host}:{s.hub.http_port}/hub/health", timeout=5, allow_redirects=False
    )
    assert response.status_code in (301, 302, 307, 308), response.status_code
    location = response.headers["Location"]
    assert location.startswith(f"https://{host}:{s.hub.port}/"), f"redirects to {location}"


def _sha256() -> object:
    from cryptography.hazmat.primitives import hashes

    return hashes.SHA256()
