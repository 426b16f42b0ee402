"""Deploys on this machine's engine: first deploy, no-op redeploy, config change with a user
server running, rollbacks, dry run, backup and restore. The tests run in order and share one
scratch environment, as an operator's successive deploys would."""

from __future__ import annotations

import time

import docker
import pytest
import requests

from hubops.deploy import backup as backups
from hubops.deploy.changes import find_changes
from hubops.deploy.firewall import Layout
from hubops.errors import DeployError
from hubops.host.local import LocalHost
from tests.support.checkout import Checkout
from tests.support.deployment import (
    ADMIN_PASSWORD,
    SHARED_PASSWORD,
    Deployment,
    make_deployment,
    tear_down,
)
from tests.support.hub import HubClient


def health(d: Deployment) -> int:
    return requests.get(f"{d.url}/hub/health", timeout=5).status_code


def ids(d: Deployment) -> dict[str, tuple[str, str]]:
    """name -> (container ID, start time)."""
    out = {}
    for name, c in d.containers().items():
        c.reload()
        out[name] = (str(c.id), c.attrs["State"]["StartedAt"])
    return out


def test_first_deploy_brings_up_a_healthy_hub(local_deployment: Deployment) -> None:
    d = local_deployment
    result = d.deploy()
    assert health(d) == 200, "the public URL must serve /hub/health"
    names = set(d.containers())
    assert names == {f"hubops-{d.name}-{r}" for r in ("proxy", "hub", "firewall")}, names
    assert (d.root / "etc/jupyterhub_config.py").is_file(), "the config is on the host"
    token = d.root / "srv/secrets/proxy_token"
    st = token.stat()
    assert (oct(st.st_mode & 0o777), st.st_gid) == ("0o640", 65534), "proxy token mode/group"
    cookie = d.root / "srv/jupyterhub_cookie_secret"
    assert oct(cookie.stat().st_mode & 0o777) == "0o600"
    assert len(cookie.read_text()) == 64, "a 32-byte hex cookie secret made on the host"
    assert oct((d.root / "srv").stat().st_mode & 0o777) == "0o700"
    assert "generated cookie_secret" in result.done
    hub = d.containers()[f"hubops-{d.name}-hub"]
    mounts = {m["Destination"]: m for m in hub.attrs["Mounts"]}
    assert "/var/run/docker.sock" in mounts, "the hub holds the Docker socket"
    proxy = d.containers()[f"hubops-{d.name}-proxy"]
    assert all("docker.sock" not in m["Source"] for m in proxy.attrs["Mounts"])
    assert hub.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert "Env" not in hub.attrs["Config"] or not any(
        SHARED_PASSWORD in e for e in hub.attrs["Config"]["Env"]
    ), "secrets are files, not container environment"


def test_noop_redeploy_restarts_nothing(local_deployment: Deployment) -> None:
    d = local_deployment
    before = ids(d)
    start = time.monotonic()
    result = d.deploy()
    seconds = time.monotonic() - start
    print(f"no-op deploy: {seconds:.2f}s")
    assert result.changes.nothing, f"nothing should change: {result.changes.lines()}"
    assert result.done == [], f"a no-op deploy did: {result.done}"
    assert ids(d) == before, "no container may be restarted or replaced"


@pytest.fixture(scope="module")
def alice(local_deployment: Deployment) -> HubClient:
    """alice, logged in with the shared password, with her server running."""
    client = local_deployment.hub()
    response = client.login("alice", SHARED_PASSWORD, next_url="/hub/home")
    assert response.status_code == 200, response.text[:300]
    seconds = client.start_server("alice")
    print(f"alice's server ready in {seconds:.1f}s")
    return client


def test_user_dir_is_made_with_the_users_owner(
    local_deployment: Deployment, alice: HubClient
) -> None:
    path = local_deployment.root / "users" / "jupyterhub-user-alice"
    st = path.stat()
    assert (st.st_uid, st.st_gid) == (1000, 100), f"owned by {st.st_uid}:{st.st_gid}"
    response = alice.contents(
        "alice", "PUT", "hello.txt", json={"type": "file", "format": "text", "content": "hi"}
    )
    assert response.status_code == 201, response.text[:300]
    assert (path / "hello.txt").read_text() == "hi", "the file is on the host"


def test_config_change_replaces_the_hub_and_keeps_user_servers(
    local_deployment: Deployment, alice: HubClient
) -> None:
    d = local_deployment
    before = ids(d)
    user = f"hubops-{d.name}-user-alice"
    assert user in before, f"alice's container is running: {sorted(before)}"
    d.set("singleuser.start_timeout", 150)
    result = d.deploy()
    after = ids(d)
    print(
        f"config-change deploy: {result.seconds:.1f}s, hub unavailable "
        f"{result.hub_unavailable_s:.1f}s"
    )
    assert after[f"hubops-{d.name}-hub"] != before[f"hubops-{d.name}-hub"], "hub replaced"
    assert after[f"hubops-{d.name}-proxy"] == before[f"hubops-{d.name}-proxy"], "proxy kept"
    assert after[user] == before[user], "alice's server was not restarted"
    assert alice.lab_status("alice") == 200, "alice still reaches her server, still logged in"
    assert alice.server_ready("alice"), "the new hub knows alice's server"
    assert result.backup is not None, "a backup was taken first"


def test_a_broken_config_rolls_back(local_deployment: Deployment, alice: HubClient) -> None:
    d = local_deployment
    _, text = d.rendered()
    before = ids(d)
    with pytest.raises(DeployError) as info:
        d.deploy(config_text=text + "\nraise RuntimeError('planted failure')\n", timeout=30)
    message = str(info.value)
    assert "put back: hub, config and secret files; the previous hub serves again" in message
    assert "planted failure" in message, f"the hub's log is quoted: {message[-500:]}"
    assert health(d) == 200, "the previous hub serves again"
    assert (d.root / "etc/jupyterhub_config.py").read_text() == text, "previous config back"
    after = ids(d)
    assert after[f"hubops-{d.name}-hub"][0] == before[f"hubops-{d.name}-hub"][0]
    assert alice.api("GET", "users/alice").status_code == 200, "the DB is intact"


def test_a_broken_image_rolls_back(
    local_deployment: Deployment, docker_client: docker.DockerClient
) -> None:
    d = local_deployment
    plan, _text = d.rendered()
    hub = next(c for c in plan.containers if c.role == "hub")
    broken = f"hubops/hub:broken-{d.name}"
    docker_client.images.build(
        fileobj=__import__("io").BytesIO(
            f'FROM {hub.image}\nENTRYPOINT ["sh", "-c", "echo planted-image-failure; '
            'exit 3"]\n'.encode()
        ),
        tag=broken,
        rm=True,
        network_mode=None,
    )
    try:
        bad_plan = plan.model_copy(
            update={
                "containers": [
                    c.model_copy(update={"image": broken}) if c.role == "hub" else c
                    for c in plan.containers
                ]
            }
        )
        with pytest.raises(DeployError, match="planted-image-failure"):
            d.deploy(plan=bad_plan, timeout=30)
        assert health(d) == 200, "the previous hub serves again"
    finally:
        docker_client.images.remove(broken, force=True)


def test_dry_run_changes_nothing(local_deployment: Deployment) -> None:
    d = local_deployment
    config = (d.root / "etc/jupyterhub_config.py").read_text()
    before = ids(d)
    d.set("singleuser.start_timeout", 180)
    plan, text = d.rendered()
    changes = find_changes(LocalHost(), plan, d.env.settings, text, d.secrets)
    assert "-c.DockerSpawner.start_timeout = 150" in changes.config_diff
    assert "+c.DockerSpawner.start_timeout = 180" in changes.config_diff
    assert changes.containers == {"hub": "replace (config or secrets changed)"}
    assert (d.root / "etc/jupyterhub_config.py").read_text() == config, "config untouched"
    assert ids(d) == before, "no container touched"


def test_backup_and_restore_round_trip(local_deployment: Deployment) -> None:
    d = local_deployment
    d.deploy()  # the start_timeout change of the dry run
    host = LocalHost()
    hub_name = f"hubops-{d.name}-hub"
    plan, _ = d.rendered()
    image = next(c.image for c in plan.containers if c.role == "hub")
    stamp = backups.backup(host, d.env.settings, image, hub_name)
    admin = d.hub()
    assert admin.login("admin", ADMIN_PASSWORD).status_code == 200
    assert admin.api("POST", "users/zed").status_code == 201, "admin creates zed"
    assert admin.api("GET", "users/zed").status_code == 200
    host.run(f"docker stop {hub_name}")
    backups.restore_files(host, d.env.settings, stamp)
    host.run(f"docker start {hub_name}")
    from tests.support.wait import wait_for

    wait_for(lambda: health(d) == 200, 60, "the restored hub")
    assert admin.api("GET", "users/zed").status_code == 404, "zed came after the backup"
    assert admin.api("GET", "users/alice").status_code == 200, "alice came before it"
    with pytest.raises(backups.BackupError, match="no backup 'nope'"):
        backups.restore_files(host, d.env.settings, "nope")


def test_a_network_from_an_older_hubops_gets_the_layout_and_keeps_its_servers(
    module_checkout: Checkout,
    tmp_path_factory: pytest.TempPathFactory,
    docker_client: docker.DockerClient,
    built: dict[str, object],
) -> None:
    """An older hubops made the network without a fixed layout; a server runs on it, at the
    address the layout would give the proxy. The deploy remakes the network with the layout
    (same subnet; the proxy and the hub at free addresses of its lower half) and connects the
    server back at its address: it keeps running."""
    d = make_deployment(module_checkout, tmp_path_factory.mktemp("old-net"), docker_client)
    try:
        net = docker_client.networks.create(
            f"hubops-{d.name}", labels={"org.hubops.environment": d.name}
        )
        image = next(iter(d.rendered()[0].images[2:]))
        server = docker_client.containers.run(
            image,
            ["sleep", "infinity"],
            name=f"hubops-{d.name}-user-old",
            network=net.name,
            detach=True,
            labels={"org.hubops.environment": d.name, "org.hubops.role": "user"},
        )
        server.reload()
        before = server.attrs["NetworkSettings"]["Networks"][net.name]["IPAddress"]
        result = d.deploy()
        assert any("with the hubops address layout" in line for line in result.done), result.done
        net = docker_client.networks.get(net.name)  # a new network, same name and subnet
        ipam = net.attrs["IPAM"]["Config"][0]
        assert ipam["IPRange"], f"no user range: {ipam}"
        server.reload()
        assert server.status == "running", "the server kept running"
        after = server.attrs["NetworkSettings"]["Networks"][net.name]["IPAddress"]
        assert after == before, f"{before} -> {after}"
        labels = net.attrs["Labels"]
        for role in ("proxy", "hub"):
            c = d.containers()[f"hubops-{d.name}-{role}"]
            ip = c.attrs["NetworkSettings"]["Networks"][net.name]["IPAddress"]
            assert ip == labels[f"org.hubops.address.{role}"], (role, ip, labels)
            assert ip != before, f"the {role} took the server's address"
        assert before == str(Layout.of(ipam["Subnet"]).proxy), "the case this test is about"
        assert health(d) == 200
    finally:
        tear_down(d)
