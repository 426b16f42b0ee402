"""doctor finds planted problems and says how to fix them; host.prepare is idempotent."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import docker
import pytest

from hubops.errors import DeployError
from hubops.host.local import LocalHost
from hubops.ops.doctor import Check, run_checks
from hubops.ops.prepare import prepare
from tests.support.checkout import Checkout
from tests.support.deployment import Deployment, make_deployment, tear_down
from tests.support.tls import write_cert


def checks_of(d: Deployment) -> dict[str, Check]:
    plan, _ = d.rendered()
    return {c.name: c for c in run_checks(LocalHost(), d.env.settings, plan)}


@pytest.fixture
def undeployed(
    module_checkout: Checkout, tmp_path: Path, docker_client: docker.DockerClient
) -> Iterator[Deployment]:
    d = make_deployment(module_checkout, tmp_path / "d", docker_client)
    yield d
    tear_down(d)


def test_doctor_reports_a_taken_port_and_an_expired_certificate(
    undeployed: Deployment, tmp_path: Path
) -> None:
    d = undeployed
    cert, key = write_cert(tmp_path, datetime.now(timezone.utc) - timedelta(days=1))
    d.set("public_url", f"https://127.0.0.1:{d.port}")
    d.set("tls", {"enabled": True, "cert": str(cert), "key": str(key)})
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", d.port))
        squatter.listen()
        checks = checks_of(d)
    port = checks[f"port {d.port}"]
    assert port.status == "fail", port
    assert "is taken" in port.detail, port.detail
    me = Path("/proc/self/comm").read_text().strip()
    assert port.detail.endswith(f"is taken: {me}"), f"the owner ({me}) is named: {port.detail}"
    assert "change hub.port" in port.fix
    tls = checks["tls"]
    assert tls.status == "fail", tls
    assert "expired on" in tls.detail
    assert tls.fix == "renew it"


def test_doctor_accepts_a_valid_certificate_and_a_free_port(
    undeployed: Deployment, tmp_path: Path
) -> None:
    d = undeployed
    cert, key = write_cert(tmp_path, datetime.now(timezone.utc) + timedelta(days=60))
    d.set("public_url", f"https://127.0.0.1:{d.port}")
    d.set("tls", {"enabled": True, "cert": str(cert), "key": str(key)})
    checks = checks_of(d)
    assert checks[f"port {d.port}"].status == "ok"
    assert checks["tls"].status == "ok", checks["tls"]
    assert "key matches" in checks["tls"].detail
    runtime = checks["default runtime"]
    assert (runtime.status, runtime.detail) == ("ok", "runc"), "this engine's default runtime"


def mismatched_tls(d: Deployment, tmp_path: Path) -> tuple[Path, Path]:
    """Set TLS with a certificate and the key of another certificate; returns (cert, key)."""
    later = datetime.now(timezone.utc) + timedelta(days=60)
    cert, _ = write_cert(tmp_path, later)
    (tmp_path / "other").mkdir()
    _, other_key = write_cert(tmp_path / "other", later)
    d.set("public_url", f"https://127.0.0.1:{d.port}")
    d.set("tls", {"enabled": True, "cert": str(cert), "key": str(other_key)})
    return cert, other_key


def test_doctor_reports_a_key_that_does_not_match(undeployed: Deployment, tmp_path: Path) -> None:
    d = undeployed
    mismatched_tls(d, tmp_path)
    tls = checks_of(d)["tls"]
    assert tls.status == "fail"
    assert "is not the key of" in tls.detail


def test_a_deploy_whose_key_does_not_match_its_certificate_changes_nothing(
    undeployed: Deployment, tmp_path: Path
) -> None:
    d = undeployed
    cert, other_key = mismatched_tls(d, tmp_path)
    with pytest.raises(DeployError) as info:
        d.deploy()
    message = str(info.value)
    assert len(message.splitlines()) == 1, message
    assert f"{other_key} is not the key of {cert}" in message
    assert "Nothing was changed" in message
    assert d.containers() == {}, "no container was made"
    assert not (d.root / "etc").exists(), "no directory was made"


@pytest.fixture
def daemon_json() -> Iterator[Path]:
    """/etc/docker/daemon.json as it was, and the engine reloaded with it, afterwards."""
    path = Path("/etc/docker/daemon.json")
    before = path.read_bytes() if path.exists() else None
    yield path
    if before is None:
        path.unlink(missing_ok=True)
    else:
        path.write_bytes(before)
    LocalHost().run('kill -HUP "$(cat /var/run/docker.pid)"', check=False)


@pytest.fixture
def bridge_files() -> Iterator[list[Path]]:
    """The files host.prepare writes for br_netfilter, as they were, afterwards."""
    from hubops.ops.prepare import BRIDGE_MODULES_FILE, BRIDGE_SYSCTL_FILE

    paths = [Path(BRIDGE_MODULES_FILE), Path(BRIDGE_SYSCTL_FILE)]
    before = {p: p.read_bytes() if p.exists() else None for p in paths}
    yield paths
    for path, content in before.items():
        if content is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(content)


def test_host_prepare_is_idempotent_and_skips_the_gpu_smoke_without_gpus(
    local_env: object,
    docker_client: docker.DockerClient,
    daemon_json: Path,
    bridge_files: list[Path],
) -> None:
    from hubops.config import environments
    from tests.support.checkout import REPO_ROOT

    settings = environments.load(REPO_ROOT, "local").settings
    first = prepare(LocalHost(), settings, settings.build.base_image)
    assert docker_client.info()["LiveRestoreEnabled"] is True, "live-restore is on"
    assert '"live-restore": true' in daemon_json.read_text()
    second = prepare(LocalHost(), settings, settings.build.base_image)
    assert second.changed == [], f"a second run changes nothing: {second.changed}"
    assert any("live-restore on" in k for k in second.kept), second.kept
    assert all(p.exists() for p in bridge_files), "br_netfilter is kept on at boot"
    assert any("bridge-nf-call-iptables = 1" in k for k in second.kept), second.kept
    assert any(k.startswith("Docker ") for k in second.kept), second.kept
    assert first.gpus == []
    assert second.smoke == "skipped: no NVIDIA GPU on this host"
