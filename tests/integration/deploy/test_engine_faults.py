"""The engine under a hub: dockerd restarted with a user server running (live-restore), and the
network's name resolution broken by a swarm init and leave on the engine (Docker 20.10 does
that to existing bridge networks), found by doctor and repaired by deploy with the user server
kept running. On a test engine of its own: a swarm init or leave on the engine that holds the
other suites' deployments would break their networks too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import requests

from hubops.host.local import LocalHost
from hubops.ops.doctor import run_checks
from tests.support.checkout import Checkout
from tests.support.deployment import SHARED_PASSWORD, Deployment, make_deployment, tear_down
from tests.support.hub import HubClient
from tests.support.labhost import Engine, load_images, second_engine
from tests.support.wait import wait_for


def set_live_restore(engine: Engine, config: Path, on: bool) -> None:
    config.write_text(json.dumps({"live-restore": on}))
    assert engine.proc is not None
    engine.proc.send_signal(signal.SIGHUP)  # live-restore is reloadable
    client = docker.DockerClient(base_url=engine.docker_host)
    wait_for(lambda: client.info()["LiveRestoreEnabled"] is on, 30, f"live-restore {on}")


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Engine, Path]]:
    root = tmp_path_factory.mktemp("engine-faults")
    config = root / "daemon.json"
    config.write_text(json.dumps({"live-restore": False}))
    with second_engine(
        root / "engine", extra_args=("--config-file", str(config)), own_containerd=True
    ) as e:
        yield e, config


@pytest.fixture(scope="module")
def deployment(
    module_checkout: Checkout,
    tmp_path_factory: pytest.TempPathFactory,
    engine: tuple[Engine, Path],
    docker_client: docker.DockerClient,
    built: dict[str, object],
) -> Iterator[tuple[Deployment, HubClient]]:
    """`local` on the test engine (LocalHost's docker CLI pointed at it), alice's server up."""
    e, _ = engine
    client = docker.DockerClient(base_url=e.docker_host)
    d = make_deployment(module_checkout, tmp_path_factory.mktemp("ef"), client)
    d.set("paths.docker_socket", e.docker_host.removeprefix("unix://"))
    plan, _ = d.rendered()
    load_images(e.docker_host, plan.images)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DOCKER_HOST", e.docker_host)
        d.deploy()
        alice = d.hub()
        assert alice.login("alice", SHARED_PASSWORD, next_url="/hub/home").status_code == 200
        alice.start_server("alice")
        yield d, alice
        tear_down(d)


def server(d: Deployment) -> tuple[str, str, bool]:
    info = d.client.containers.get(f"hubops-{d.name}-user-alice").attrs
    return info["Id"], info["State"]["StartedAt"], info["State"]["Running"]


def checks(d: Deployment) -> dict[str, str]:
    plan, _ = d.rendered()
    return {c.name: c.status for c in run_checks(LocalHost(), d.env.settings, plan)}


def test_a_user_server_and_its_kernel_survive_an_engine_restart(
    engine: tuple[Engine, Path], deployment: tuple[Deployment, HubClient]
) -> None:
    e, config = engine
    d, alice = deployment
    set_live_restore(e, config, on=True)
    assert checks(d)["live restore"] == "ok"
    xsrf = alice._cookie("_xsrf", "/user/alice") or ""
    kernel = alice.session.post(
        alice.url("/user/alice/api/kernels"), headers={"X-XSRFToken": xsrf}, timeout=60
    )
    assert kernel.status_code == 201, kernel.text
    kernel_id = kernel.json()["id"]
    put = alice.contents(
        "alice", "PUT", "kept.txt", json={"type": "file", "format": "text", "content": "kept"}
    )
    assert put.status_code in (200, 201), put.text
    before = server(d)
    e.restart()
    assert server(d) == before, "the same container, never restarted"
    wait_for(lambda: requests.get(f"{d.url}/hub/health", timeout=3).ok, 60, "the hub")
    assert alice.lab_status("alice") == 200, "the hub still routes to alice's server"
    alive = alice.session.get(alice.url(f"/user/alice/api/kernels/{kernel_id}"), timeout=30)
    assert alive.status_code == 200, "the kernel still runs"
    assert (d.root / "users" / "jupyterhub-user-alice" / "kept.txt").read_text() == "kept"


def test_a_network_broken_by_swarm_is_found_and_repaired(
    engine: tuple[Engine, Path], deployment: tuple[Deployment, HubClient]
) -> None:
    e, config = engine
    d, alice = deployment
    set_live_restore(e, config, on=False)  # dockerd refuses swarm init with live-restore
    env = {**os.environ, "DOCKER_HOST": e.docker_host}
    before = server(d)
    subprocess.run(
        ["docker", "swarm", "init", "--advertise-addr", "127.0.0.1"],
        env=env,
        check=True,
        capture_output=True,
    )
    subprocess.run(
        ["docker", "swarm", "leave", "--force"], env=env, check=True, capture_output=True
    )
    assert checks(d)["network"] == "fail", "doctor finds the broken name resolution"
    result = d.deploy()  # the module's DOCKER_HOST points LocalHost at the test engine
    assert any("recreated" in x for x in result.done), result.done
    assert checks(d)["network"] == "ok"
    assert server(d) == before, "alice's server kept running through the repair"
    assert alice.lab_status("alice") == 200, "and the hub still routes to it"
