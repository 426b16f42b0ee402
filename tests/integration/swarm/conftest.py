"""A hub deployed to a real two-node Docker Swarm (tests/support/swarm.py): the hub and the
proxy on the manager, user servers as swarm services on either node, GitLab login through the
test OAuth provider, and the worker a SIMULATED GPU node with 2 GPUs advertised as swarm
generic resources.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from hubops.config import environments
from tests.support.checkout import REPO_ROOT, Checkout
from tests.support.oauth_provider import Provider, running_provider
from tests.support.swarm import SwarmDeployment, TestSwarm, render_plan, swarm_env, test_swarm
from tests.support.verify import CLIENT_ID, CLIENT_SECRET, USERS, set_auth

# swarm test name -> login -> JupyterLab ready, seconds (printed in the summary)
TIMES_KEY = pytest.StashKey[dict[str, float]]()


@pytest.fixture(scope="session")
def swarm_times(request: pytest.FixtureRequest) -> dict[str, float]:
    return request.config.stash.setdefault(TIMES_KEY, {})


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    times = terminalreporter.config.stash.get(TIMES_KEY, None)
    if times:
        terminalreporter.section("swarm (2 nodes: a manager and a SIMULATED GPU worker)")
        for what, seconds in times.items():
            terminalreporter.write_line(f"{what}: {seconds:.2f} s")


@pytest.fixture(scope="session")
def swarm(
    tmp_path_factory: pytest.TempPathFactory, built: dict[str, object]
) -> Iterator[TestSwarm]:
    """The swarm, every node given this checkout's images (no registry here)."""
    sim = Path(tempfile.mkdtemp(prefix="hubops-swarmsim-"))
    sim.chmod(0o755)
    try:
        with test_swarm(tmp_path_factory.mktemp("swarm"), sim) as s:
            local = environments.load(REPO_ROOT, "local")
            plan = render_plan(local)
            s.load_images(plan.images)
            yield s
    finally:
        shutil.rmtree(sim, ignore_errors=True)


@pytest.fixture(scope="module")
def swarm_hub(
    swarm: TestSwarm, module_checkout: Checkout, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[SwarmDeployment, Provider]]:
    """GitLab login (the test provider, on this machine's address on the swarm's link), the
    ml-lab group may hold 2 GPUs each, everybody else none; deployed to the manager."""
    os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"  # the provider speaks plain http
    d = swarm_env(
        module_checkout,
        tmp_path_factory.mktemp("swarm-hub"),
        swarm,
        "gpu:\n  policy: exclusive\n"
        "singleuser:\n  image: base\n  mem_limit: 1G\n  cpu_limit: 0.5\n"
        "  profiles:\n    - groups: [ml-lab]\n      max_gpus: 2\n      gpu_kind: gpu\n"
        "    - groups: []\n      max_gpus: 0\n",
    )
    with running_provider(
        swarm.gateway, CLIENT_ID, CLIENT_SECRET, [f"{d.url}/hub/oauth_callback"], USERS
    ) as provider:
        set_auth(d.checkout, d.name, "gitlab", provider)
        d.set("auth.allowed_users", ["carol"])
        try:
            d.deploy()
            yield d, provider
        finally:
            if os.environ.get("HUBOPS_DUMP_HUB_LOG"):
                hub = d.swarm.client().containers.get(f"hubops-{d.name}-hub")
                Path(os.environ["HUBOPS_DUMP_HUB_LOG"]).write_bytes(hub.logs(timestamps=True))
            d.tear_down()
