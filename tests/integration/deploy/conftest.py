"""Deployments for tests: a scratch environment per test module (unique name, free port,
host directories in a temp dir), torn down with everything it started."""

from __future__ import annotations

from collections.abc import Iterator

import docker
import pytest

from tests.support.checkout import Checkout
from tests.support.deployment import Deployment, FaultRow, make_deployment, tear_down


@pytest.fixture(scope="module")
def local_deployment(
    module_checkout: Checkout,
    tmp_path_factory: pytest.TempPathFactory,
    docker_client: docker.DockerClient,
    built: dict[str, object],
) -> Iterator[Deployment]:
    """A scratch `local`-like environment on this machine's engine (deployed by the tests)."""
    d = make_deployment(module_checkout, tmp_path_factory.mktemp("deploy"), docker_client)
    yield d
    tear_down(d)


FAULTS_KEY = pytest.StashKey[list[FaultRow]]()


@pytest.fixture(scope="session")
def fault_table(request: pytest.FixtureRequest) -> list[FaultRow]:
    """The fault suite's rows, printed in the test summary (for the notes)."""
    return request.config.stash.setdefault(FAULTS_KEY, [])


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    rows = terminalreporter.config.stash.get(FAULTS_KEY, [])
    if rows:
        terminalreporter.section("faults (a deploy killed at a step boundary)")
        terminalreporter.write_line(
            "change | step | signal | hub unavailable | servers lost | users lost | operator"
        )
        for change, step, sig, down, servers, users, acted in rows:
            terminalreporter.write_line(
                f"{change:6} | {step:50} | {sig:7} | {down:5.1f} s | {servers} | {users} | {acted}"
            )
