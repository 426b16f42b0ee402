"""The proxy image: configurable-http-proxy 4.x as a non-root user, token read from a file."""

from __future__ import annotations

import pytest

from hubops.images.build import BuiltImage
from hubops.images.table import VERSIONS
from tests.support.containers import Runner


@pytest.fixture
def proxy(built: dict[str, BuiltImage]) -> BuiltImage:
    return built["proxy:default"]


def test_chp_is_the_pinned_version_and_npm_is_gone(
    proxy: BuiltImage, run_container: Runner
) -> None:
    host = run_container(proxy.pinned)
    version = host.check_output("configurable-http-proxy --version")
    assert version == VERSIONS["CHP_VERSION"], f"CHP {version}"
    assert not host.exists("npm"), "npm should be gone after installing CHP"


def test_entrypoint_reads_root_only_files_then_drops_to_nobody(
    proxy: BuiltImage, run_container: Runner
) -> None:
    """The token and a 0600 TLS key are read as root; the proxy itself runs as 65534."""
    host = run_container(proxy.pinned, user="root")
    host.check_output(
        "umask 077 && echo s3cret-token > /tmp/token && mkdir -p /tmp/tls && "
        "echo CERT > /tmp/tls/cert.pem && echo KEY > /tmp/tls/key.pem"
    )
    out = host.check_output(
        "CONFIGPROXY_AUTH_TOKEN_FILE=/tmp/token HUBOPS_TLS_SOURCE=/tmp/tls "
        "HUBOPS_TLS_DIR=/run/hubops-tls hubops-proxy-entrypoint "
        "sh -c 'echo $(id -u):$(id -g) $CONFIGPROXY_AUTH_TOKEN $(cat /run/hubops-tls/key.pem)'"
    )
    assert out == "65534:65534 s3cret-token KEY", out
