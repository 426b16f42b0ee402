"""The proxy image: configurable-http-proxy 4.x as a non-root user, token read from a file."""

from __future__ import annotations

import pytest

from hubops.build import BuiltImage
from hubops.images import VERSIONS
from tests.integration.conftest import Runner


@pytest.fixture
def proxy(built: dict[str, BuiltImage]) -> BuiltImage:
    return built["proxy:default"]


def test_runs_chp_of_the_pinned_version_as_nobody(proxy: BuiltImage, run_container: Runner) -> None:
    host = run_container(proxy.pinned)
    assert host.user().uid == 65534, f"the proxy runs as uid {host.user().uid}"
    version = host.check_output("configurable-http-proxy --version")
    assert version == VERSIONS["CHP_VERSION"], f"CHP {version}"
    assert not host.exists("npm"), "npm should be gone after installing CHP"


def test_entrypoint_reads_the_token_from_a_file(proxy: BuiltImage, run_container: Runner) -> None:
    host = run_container(proxy.pinned)
    out = host.check_output(
        "echo s3cret-token > /tmp/token && CONFIGPROXY_AUTH_TOKEN_FILE=/tmp/token "
        "hubops-proxy-entrypoint sh -c 'echo $CONFIGPROXY_AUTH_TOKEN'"
    )
    assert out == "s3cret-token"
