"""Deploys over SSH to a "lab host" on loopback: Debian's sshd with a throwaway key, in front of
a second Docker engine that starts without any hubops image, so --transfer must bring them.
The deploy logs in as a non-root member of the docker group (as `hubops` in lab.yaml): root's
file work on the host goes through the engine (hubops.host.rootfiles)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import docker
import pytest
import requests
import yaml

from hubops.deploy import backup as backups
from hubops.errors import HubopsError, SSHError
from hubops.host.files import file_host
from hubops.host.ssh import SSHHost
from hubops.host.target import open_host
from hubops.ops.doctor import run_checks
from hubops.ops.gpus import holders
from hubops.ops.prepare import prepare
from tests.support.checkout import Checkout
from tests.support.deployment import SHARED_PASSWORD, Deployment, make_deployment, tear_down
from tests.support.labhost import LabHost, add_user, remove_user
from tests.support.wait import wait_for


@pytest.fixture(scope="module")
def ssh_deployment(
    module_checkout: Checkout,
    tmp_path_factory: pytest.TempPathFactory,
    lab: LabHost,
    built: dict[str, object],
) -> Iterator[Deployment]:
    socket = lab.docker_host.removeprefix("unix://")
    d = make_deployment(
        module_checkout,
        tmp_path_factory.mktemp("sshdeploy"),
        lab.client,
        extra=lab.env_yaml(),
    )
    d.set("paths.docker_socket", socket)
    d.transfer = True
    yield d
    tear_down(d)


def test_deploy_over_ssh_transfers_the_images_and_serves(ssh_deployment: Deployment) -> None:
    d = ssh_deployment
    plan, _ = d.rendered()
    missing = []  # all of them, unless the verify suites deployed these images there first
    for ref in plan.images:
        try:
            d.client.images.get(ref)
        except docker.errors.ImageNotFound:
            missing.append(ref)
    result = d.deploy()
    print(f"first deploy over SSH with --transfer: {result.seconds:.1f}s")
    fetched = sorted(x.removeprefix("fetched ") for x in result.done if x.startswith("fetched "))
    assert fetched == sorted(missing), f"the missing images were transferred: {fetched}"
    assert requests.get(f"{d.url}/hub/health", timeout=5).status_code == 200
    names = set(d.containers())
    assert f"hubops-{d.name}-hub" in names, f"the hub runs on the lab host's engine: {names}"


def test_noop_redeploy_over_ssh_changes_nothing(ssh_deployment: Deployment) -> None:
    """(Its time is a figure for the notes; `nox -s bench` measures the no-op deploy.)"""
    d = ssh_deployment
    start = time.monotonic()
    result = d.deploy()
    seconds = time.monotonic() - start
    print(f"no-op deploy over SSH: {seconds:.2f}s")
    assert result.done == [], f"nothing to do, but it did: {result.done}"


def test_the_remote_hub_spawns_on_the_remote_engine(ssh_deployment: Deployment) -> None:
    d = ssh_deployment
    client = d.hub()
    assert client.login("bob", SHARED_PASSWORD, next_url="/hub/home").status_code == 200
    seconds = client.start_server("bob")
    print(f"bob's server on the lab host ready in {seconds:.1f}s")
    assert f"hubops-{d.name}-user-bob" in d.containers()
    home = d.root / "users" / "jupyterhub-user-bob"
    assert (home.stat().st_uid, home.stat().st_gid) == (1000, 100)


def test_doctor_on_a_healthy_lab_host(ssh_deployment: Deployment) -> None:
    d = ssh_deployment
    plan, _ = d.rendered()
    with open_host(d.checkout.root, d.env) as host:
        checks = {c.name: c for c in run_checks(host, d.env.settings, plan)}
    failed = {n: c.detail for n, c in checks.items() if c.status == "fail"}
    assert failed == {}, f"a healthy host fails: {failed}"
    assert checks["ssh"].status == "ok"
    assert checks["docker"].status == "ok"
    assert checks[f"port {d.port}"].detail.endswith("served by the hub's proxy")
    # the lab host plays a GPU host with 4 SIMULATED GPUs (tests/gpusim)
    assert checks["nvidia driver"].status == "ok", checks["nvidia driver"]
    assert "4 GPU(s)" in checks["nvidia driver"].detail
    assert "SIMULATED" in checks["nvidia driver"].detail
    assert checks["gpu in containers"].detail == "a container given all GPUs sees 4"
    assert checks["clock"].status == "ok"
    # read as root (the deploy user cannot see into the test's private directories): the
    # users' directory's filesystem, the one the hub's data is on too
    quota = checks["disk quota"]
    assert quota.detail.startswith("soft (no quota set; "), quota
    assert "ext4 without prjquota" in quota.detail or "has no project quotas" in quota.detail
    assert checks["disk shared"].status == "warn", "data_dir and user_data_dir share a disk"


def test_the_non_root_deploy_leaves_root_owned_state(
    ssh_deployment: Deployment, lab: LabHost
) -> None:
    """The deploy user is not root, yet the hub's state is root's, with the modes it needs."""
    d = ssh_deployment
    with open_host(d.checkout.root, d.env) as host:
        assert host.run("id -u").stdout.strip() != "0", "the deploy user is not root"
        assert "docker" in host.run("id -nG").stdout.split()
    secrets = d.root / "srv" / "secrets"
    assert (secrets.stat().st_uid, oct(secrets.stat().st_mode & 0o777)) == (0, "0o700")
    for f in secrets.iterdir():
        assert f.stat().st_uid == 0, f"{f} belongs to root"
    cookie = d.root / "srv" / "jupyterhub_cookie_secret"
    assert (cookie.stat().st_uid, oct(cookie.stat().st_mode & 0o777)) == (0, "0o600")
    config = d.root / "etc" / "jupyterhub_config.py"
    assert (config.stat().st_uid, oct(config.stat().st_mode & 0o777)) == (0, "0o644")


def test_a_config_change_and_a_backup_as_the_non_root_user(ssh_deployment: Deployment) -> None:
    d = ssh_deployment
    d.set("singleuser.mem_limit", "1500M")
    start = time.monotonic()
    result = d.deploy()
    print(
        f"config-change deploy over SSH as {d.env.settings.ssh.user}: "  # type: ignore[union-attr]
        f"{time.monotonic() - start:.2f}s (hub unavailable {result.hub_unavailable_s:.1f}s)"
    )
    assert result.backup, "the DB was backed up first"
    assert any(x.startswith("config ") for x in result.done), result.done
    backup = d.root / "srv" / "backups" / result.backup / "jupyterhub.sqlite"
    assert backup.stat().st_size > 0, "the online backup is there, written as root"
    assert requests.get(f"{d.url}/hub/health", timeout=5).status_code == 200


def test_backup_restore_and_gpus_as_the_non_root_user(ssh_deployment: Deployment) -> None:
    """What `invoke db.backup`, `db.restore` and `gpus` do, through the non-root user."""
    d = ssh_deployment
    plan, _ = d.rendered()
    hub = next(c for c in plan.containers if c.role == "hub")
    with open_host(d.checkout.root, d.env) as host:
        files = file_host(host, plan)
        assert files is not None
        assert files is not host, "root's file work goes through the helper"
        stamp = backups.backup(host, d.env.settings, hub.image, hub.name, files=files)
        assert stamp in backups.list_backups(files, d.env.settings)
        host.run(f"docker stop {hub.name}")
        assert backups.restore_files(files, d.env.settings, stamp) == stamp
        host.run(f"docker start {hub.name}")
        assert holders(host, d.name) == [], "no GPU holder; the query works as the deploy user"
    wait_for(lambda: requests.get(f"{d.url}/hub/health", timeout=5).ok, 60, "the hub")
    db = d.root / "srv" / "backups" / stamp / "jupyterhub.sqlite"
    assert db.stat().st_uid == 0, "the backup belongs to root"


def test_a_deploy_user_outside_the_docker_group_is_one_clear_error(
    ssh_deployment: Deployment, lab: LabHost
) -> None:
    name = f"nodock{uuid.uuid4().hex[:6]}"
    add_user(name)  # in no docker group
    try:
        d = ssh_deployment
        plan, _ = d.rendered()
        d.set("ssh", yaml.safe_load(lab.env_yaml(user=name))["ssh"])
        with open_host(d.checkout.root, d.env) as host, pytest.raises(HubopsError) as info:
            file_host(host, plan)
        message = str(info.value)
        assert len(message.splitlines()) == 1, message
        assert f"{name} may not use Docker" in message
        assert f"usermod -aG docker {name}" in message
        with open_host(d.checkout.root, d.env) as host, pytest.raises(HubopsError) as info:
            prepare(host, d.env.settings, "unused")
        assert "needs root or passwordless sudo" in str(info.value), info.value
    finally:
        d.set("ssh", yaml.safe_load(lab.env_yaml())["ssh"])
        remove_user(name)


def test_an_unknown_host_key_is_refused(
    ssh_deployment: Deployment, lab: LabHost, tmp_path_factory: pytest.TempPathFactory
) -> None:
    empty = tmp_path_factory.mktemp("known") / "known_hosts"
    empty.write_text("")
    settings = d_settings = ssh_deployment.env.settings.ssh
    assert d_settings is not None
    with pytest.raises(SSHError, match=r"host key of 127\.0\.0\.1 is not in .*ssh-keyscan"):
        SSHHost(settings, empty, lab.key_file).open()
