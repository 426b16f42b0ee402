"""cluster: swarm on a real two-node swarm: the deploy (manager checks, overlay network,
idempotent), OAuth login and spawn, user files, and GPU reservations that the swarm assigns
from the SIMULATED GPU worker's generic resources.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from hubops.errors import DeployError
from hubops.host.local import LocalHost
from hubops.ops.gpus import GPUHolder, swarm_holders
from tests.support.oauth_provider import Provider
from tests.support.swarm import SwarmDeployment, TestSwarm, carol_with_a_file, login, swarm_env
from tests.support.verify import set_auth
from tests.support.wait import wait_for

pytestmark = pytest.mark.swarm


def _holders(d: SwarmDeployment) -> list[GPUHolder]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DOCKER_HOST", d.swarm.manager.docker_host)
        return swarm_holders(LocalHost(), d.name)


def _task_container(d: SwarmDeployment, user: str) -> tuple[str, object]:
    """(node name, container) of the user's server task, wherever the swarm put it."""
    service = f"hubops-{d.name}-user-{user}"
    for node in d.swarm.nodes:
        client = d.swarm.client(node)
        found = client.containers.list(
            filters={"label": f"com.docker.swarm.service.name={service}"}
        )
        if found:
            return node.name, found[0]
    raise AssertionError(f"no container of {service} on any node")


def test_the_hub_runs_on_the_manager_on_an_attachable_overlay(
    swarm_hub: tuple[SwarmDeployment, Provider],
) -> None:
    d, _ = swarm_hub
    client = d.swarm.client()
    network = client.networks.get(f"hubops-{d.name}")
    assert network.attrs["Driver"] == "overlay"
    assert network.attrs["Attachable"] is True
    names = {c.name for c in client.containers.list()}
    assert {f"hubops-{d.name}-hub", f"hubops-{d.name}-proxy"} <= names
    assert not d.deploy().done, "a second deploy of the same settings changes nothing"


def test_a_gitlab_user_logs_in_and_gets_a_server_as_a_swarm_service(
    swarm_hub: tuple[SwarmDeployment, Provider], swarm_times: dict[str, float]
) -> None:
    d, _ = swarm_hub
    start = time.monotonic()
    carol = login(d, "carol")  # no provider group: the profile without GPUs
    wait_for(lambda: carol.server_ready("carol"), 120, "carol's server")
    wait_for(lambda: carol.lab_status("carol") == 200, 60, "carol's JupyterLab")
    swarm_times["login -> JupyterLab ready (swarm service, no GPU)"] = time.monotonic() - start
    service = d.swarm.client().services.get(f"hubops-{d.name}-user-carol")
    assert service.attrs["Spec"]["EndpointSpec"]["Mode"] == "dnsrr"
    spec = service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert spec.get("CapabilityDrop") == ["ALL"]
    assert "GenericResources" not in (
        service.attrs["Spec"]["TaskTemplate"].get("Resources", {}).get("Reservations") or {}
    )
    _, container = _task_container(d, "carol")
    env = container.exec_run(["sh", "-c", "echo $NVIDIA_VISIBLE_DEVICES"]).output.decode()
    assert env.strip() == "void", "a server without a GPU sees none"
    home = container.exec_run(["sh", "-c", "echo $HOME"]).output.decode().strip()
    assert home == "/home/jovyan/work", f"HOME on a swarm is {home}, not the user's volume"
    # her files: written through JupyterLab, on the host under paths.user_data_dir
    put = carol.contents(
        "carol", "PUT", "on-swarm.txt", json={"type": "file", "format": "text", "content": "x"}
    )
    assert put.status_code in (200, 201), put.text
    assert (d.root / "users" / "jupyterhub-user-carol" / "on-swarm.txt").read_text() == "x"
    carol.stop_server("carol")
    assert not d.swarm.client().services.list(filters={"name": f"hubops-{d.name}-user-carol"}), (
        "the stopped server's service is gone"
    )
    carol.start_server("carol")
    body = carol.contents("carol", "GET", "on-swarm.txt").json()
    assert body["content"] == "x", "her file is there in the new server"
    carol.stop_server("carol")


def test_the_swarm_assigns_gpus_and_the_server_sees_exactly_those(
    swarm_hub: tuple[SwarmDeployment, Provider], swarm_times: dict[str, float]
) -> None:
    d, _ = swarm_hub
    alice = login(d, "alice")  # her profile offers GPUs: the spawn form, no server yet
    alice.start_server("alice")  # the default: 1 GPU
    node, container = _task_container(d, "alice")
    assert node == "worker", "only the worker advertises GPUs"
    held = {h.user: h for h in _holders(d)}
    assert set(held) == {"alice"}
    (gpu,) = held["alice"].gpus
    assert gpu in d.swarm.gpus
    out = container.exec_run(["sh", "-c", "echo $DOCKER_RESOURCE_GPU; nvidia-smi -L"])
    lines = out.output.decode().split("\n")
    assert lines[0] == gpu
    listed = [x for x in lines[1:] if x.startswith("GPU ")]
    assert listed == [f"GPU 0: hubops SIMULATED GPU (UUID: {gpu})"], lines

    bob = login(d, "bob")
    refused = bob.api("POST", "users/bob/server", json={"gpus": "2"})
    events = bob.progress("bob") if refused.status_code == 202 else []
    message = refused.text + " ".join(str(e.get("message", "")) for e in events)
    assert "1 of 2 free" in message, message
    start = time.monotonic()
    bob.start_server("bob", gpus="1")
    swarm_times["start -> JupyterLab ready (swarm service, 1 GPU)"] = time.monotonic() - start
    held = {h.user: h for h in _holders(d)}
    assert set(held["alice"].gpus).isdisjoint(held["bob"].gpus), "no GPU handed out twice"
    assert {*held["alice"].gpus, *held["bob"].gpus} == set(d.swarm.gpus)
    bob.stop_server("bob")
    alice.stop_server("alice")
    assert _holders(d) == [], "stopped servers hold nothing"


def test_a_deploy_to_a_worker_is_refused_in_one_line(
    swarm_hub: tuple[SwarmDeployment, Provider],
) -> None:
    d, _ = swarm_hub
    with pytest.raises(DeployError) as err:
        d.deploy(docker_host=d.swarm.worker.docker_host)
    message = str(err.value)
    assert "is a swarm worker, not a manager" in message, message
    assert "\n" not in message


def test_a_gpu_kind_no_node_advertises_is_refused_in_one_line(
    swarm: TestSwarm, swarm_hub: tuple[SwarmDeployment, Provider], tmp_path_factory
) -> None:
    d, _ = swarm_hub
    other = swarm_env(
        d.checkout,
        tmp_path_factory.mktemp("swarm-kind"),
        swarm,
        "gpu:\n  policy: exclusive\n"
        "singleuser:\n  image: base\n  profiles:\n    - max_gpus: 1\n      gpu_kind: a100\n",
    )
    other.set("hub.bind_address", "127.0.0.1")  # shared-password stays on loopback
    try:
        with pytest.raises(DeployError) as err:
            other.deploy()
        message = str(err.value)
        assert "singleuser.profiles.0.gpu_kind is 'a100'" in message, message
        assert "advertised kinds: gpu" in message
        assert "Nothing was changed" in message
        assert "\n" not in message
        assert not swarm.client().containers.list(
            filters={"label": f"org.hubops.environment={other.name}"}
        )
    finally:
        other.tear_down()


def test_a_profile_pinned_to_node_labels_runs_only_on_a_node_with_them(
    swarm_hub: tuple[SwarmDeployment, Provider],
) -> None:
    d, _ = swarm_hub
    d.set(
        "singleuser.profiles",
        [
            {"groups": ["ml-lab"], "max_gpus": 2, "node_labels": {"gpu": "a100"}},
            {"groups": [], "max_gpus": 0},
        ],
    )
    d.deploy()
    manager = d.swarm.client()
    worker_id = d.swarm.client(d.swarm.worker).info()["Swarm"]["NodeID"]

    def label(*args: str) -> None:
        subprocess.run(
            ["docker", "node", "update", *args, worker_id],
            env={**os.environ, "DOCKER_HOST": d.swarm.manager.docker_host},
            check=True,
            capture_output=True,
        )

    try:
        alice = login(d, "alice")
        refused = alice.api("POST", "users/alice/server", json={"gpus": "0"})
        events = alice.progress("alice") if refused.status_code == 202 else []
        message = refused.text + " ".join(str(e.get("message", "")) for e in events)
        assert "no node of the swarm can run alice's server now" in message, message
        assert "no suitable node" in message, "the swarm's own reason is shown"
        wait_for(lambda: not alice.api("GET", "users/alice").json().get("servers"), 60, "gone")
        label("--label-add", "gpu=a100")
        alice.start_server("alice", gpus="0")
        where, _ = _task_container(d, "alice")
        assert where == "worker", "the only node labelled gpu=a100"
        service = manager.services.get(f"hubops-{d.name}-user-alice")
        placement = service.attrs["Spec"]["TaskTemplate"]["Placement"]
        assert placement["Constraints"] == ["node.labels.gpu==a100"]
        alice.stop_server("alice")
    finally:
        label("--label-rm", "gpu")


def test_user_data_in_named_volumes_made_by_the_volume_driver(
    swarm: TestSwarm, swarm_hub: tuple[SwarmDeployment, Provider], tmp_path_factory
) -> None:
    """swarm.user_data: volume. The local driver with bind options stands in for NFS options
    (type nfs, o addr=..., device :/export/...): the same driver and option path, {username}
    filled in per user."""
    d, provider = swarm_hub
    root = tmp_path_factory.mktemp("swarm-volumes")
    exports = root / "exports"
    (exports / "carol").mkdir(parents=True)
    os.chown(exports / "carol", 1000, 100)
    other = swarm_env(
        d.checkout,
        root,
        swarm,
        "swarm:\n  user_data: volume\n  volume_driver: local\n"
        f"  volume_options:\n    type: none\n    o: bind\n    device: {exports}/{{username}}\n",
    )
    set_auth(other.checkout, other.name, "gitlab", provider)
    other.set("auth.allowed_users", ["carol"])
    provider.client.redirect_uris.append(f"{other.url}/hub/oauth_callback")
    try:
        other.deploy()
        carol = carol_with_a_file(other, "in-volume.txt", "v")
        assert (exports / "carol" / "in-volume.txt").read_text() == "v"
        assert not (root / "users" / "jupyterhub-user-carol").exists(), "no host directory"
        service = swarm.client().services.get(f"hubops-{other.name}-user-carol")
        (mount,) = [
            m
            for m in service.attrs["Spec"]["TaskTemplate"]["ContainerSpec"]["Mounts"]
            if m["Target"] == "/home/jovyan/work"
        ]
        assert mount["Type"] == "volume"
        assert mount["Source"] == "jupyterhub-user-carol"
        options = mount["VolumeOptions"]["DriverConfig"]["Options"]
        assert options["device"] == f"{exports}/carol"
        carol.stop_server("carol")
    finally:
        other.tear_down()
