"""Integration fixtures: a real Docker engine, the images built from this checkout, and
containers that tests run against. Every fixture removes what it started, also on failure.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import testinfra

from hubops.config import environments
from hubops.host.engine import ensure_docker, local_client, stop_started_dockerd
from hubops.host.local import LocalHost
from hubops.images.build import BuiltImage, build
from tests import gpusim
from tests.support.checkout import REPO_ROOT, Checkout, tested_env_name
from tests.support.containers import Runner
from tests.support.labhost import SIMULATED_GPUS, LabHost, lab_host

BUILT_KEY = pytest.StashKey[list[BuiltImage]]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """This machine's Docker engine; installed and started (then stopped) when missing."""
    host = LocalHost()
    report = ensure_docker(host)
    client = local_client()
    yield client
    client.close()
    if report.started:
        stop_started_dockerd(host)


@pytest.fixture(scope="session")
def local_env() -> environments.LoadedEnvironment:
    return environments.load(REPO_ROOT, "local")


@pytest.fixture(scope="session")
def tested_env() -> environments.LoadedEnvironment:
    """The environment under test (--env, default local)."""
    return environments.load(REPO_ROOT, tested_env_name())


@pytest.fixture(scope="session")
def built(
    request: pytest.FixtureRequest,
    docker_client: docker.DockerClient,
    tested_env: environments.LoadedEnvironment,
) -> dict[str, BuiltImage]:
    """The tested environment's images, built from this checkout: ``image:variant`` -> build."""
    result = build(docker_client, REPO_ROOT, tested_env)
    request.config.stash[BUILT_KEY] = result
    return {f"{b.image}:{b.variant}": b for b in result}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    result = terminalreporter.config.stash.get(BUILT_KEY, None)
    if not result:
        return
    terminalreporter.section("image sizes")
    for b in result:
        terminalreporter.write_line(
            f"{b.pinned:60} {b.size / 1e6:7.1f} MB  built in {b.seconds:5.1f}s"
            f"{' (cache)' if b.cached else ''}"
        )


@pytest.fixture(scope="module")
def module_checkout(tmp_path_factory: pytest.TempPathFactory) -> Checkout:
    """A scratch checkout (the repo's environment files, an empty secrets dir) per module."""
    root = tmp_path_factory.mktemp("checkout")
    shutil.copytree(REPO_ROOT / "config" / "environments", root / "config" / "environments")
    (root / "config" / "secrets").mkdir()
    return Checkout(root)


@pytest.fixture(scope="session")
def test_network(docker_client: docker.DockerClient) -> Iterator[str]:
    """A user-defined network for the containers of this test session."""
    name = f"hubops-test-{uuid.uuid4().hex[:8]}"
    network = docker_client.networks.create(
        name, driver="bridge", labels={"org.hubops.role": "test"}
    )
    yield name
    network.remove()


@pytest.fixture
def run_container(docker_client: docker.DockerClient, test_network: str) -> Iterator[Runner]:
    """Start a container from an image (idle, as the image's user) and give its testinfra host."""
    started: list[docker.models.containers.Container] = []

    def start(ref: str, user: str | None = None) -> testinfra.host.Host:
        container = docker_client.containers.run(
            ref,
            entrypoint=["sleep", "infinity"],
            command=[],
            detach=True,
            network=test_network,
            user=user,
            labels={"org.hubops.role": "test"},
        )
        started.append(container)
        return testinfra.get_host(f"docker://{container.id}")

    yield start
    for container in started:
        container.remove(force=True)


@pytest.fixture(scope="session")
def lab(
    tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient
) -> Iterator[LabHost]:
    """The "lab host": sshd on loopback in front of a second Docker engine that plays a GPU
    host with 4 SIMULATED GPUs (GPU 3 split into 2 MIG devices). It starts without images."""
    root = tmp_path_factory.mktemp("labhost")
    # where the non-root deploy user can run the host's (fake) nvidia-smi too
    shared = Path(tempfile.mkdtemp(prefix="hubops-gpusim-"))
    shared.chmod(0o755)
    try:
        sim = gpusim.install(shared, SIMULATED_GPUS)
        with lab_host(root, path_prefix=sim) as host:
            yield host
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def pytest_report_header(config: pytest.Config) -> str:
    return (
        "GPU host: SIMULATED for the lab-host suites (4 fake GPUs, tests/gpusim: Docker's real "
        "NVIDIA device-request path, a fake nvidia-container-runtime-hook and nvidia-smi)"
    )
