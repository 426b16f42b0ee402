"""The README's command 1 brings up the `local` environment: a hub on 127.0.0.1:8000 that one
logs into with the shared password it made. Runs on machines without a local hub only."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import requests
import yaml

from tests.support.checkout import REPO_ROOT
from tests.support.hub import HubClient
from tests.support.net import drop_firewall_rules

HOST_DIRS = [Path("/etc/jupyterhub"), Path("/srv/jupyterhub"), Path("/srv/jupyterhub-users")]
SECRETS = REPO_ROOT / "config" / "secrets" / "local.yaml"


@pytest.fixture
def clean_local(docker_client: docker.DockerClient, built: object) -> Iterator[None]:
    """Own the `local` deployment for the test, and take it all down afterwards."""
    if docker_client.containers.list(all=True, filters={"name": "hubops-local-"}):
        pytest.skip("a `local` hub runs on this machine; the test will not touch it")
    existing = [p for p in [*HOST_DIRS, SECRETS] if p.exists()]
    if existing:
        pytest.skip(f"{existing} exist on this machine; the test will not touch them")
    yield
    for container in docker_client.containers.list(
        all=True, filters={"label": "org.hubops.environment=local"}
    ):
        container.remove(force=True)
    for network in docker_client.networks.list(names=["hubops-local"]):
        if network.name == "hubops-local":
            network.remove()
    drop_firewall_rules("local")
    for path in HOST_DIRS:
        shutil.rmtree(path, ignore_errors=True)
    SECRETS.unlink(missing_ok=True)


def test_command_1_brings_up_a_hub_one_can_log_into(clean_local: None) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hubops.quickstart", "up"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "JupyterHub is up: http://127.0.0.1:8000" in result.stdout, result.stdout[-1000:]
    password = yaml.safe_load(SECRETS.read_text())["shared_password"]
    assert password not in result.stdout + result.stderr, "the password is never printed"
    assert requests.get("http://127.0.0.1:8000/hub/health", timeout=5).status_code == 200
    hub = HubClient("http://127.0.0.1:8000")
    page = hub.login("student", password)
    assert page.status_code == 200, page.text[:300]
    # the spawn page, or the server itself when it was up before the hub's redirect timed out
    assert "/hub/" in page.url or "/user/student/" in page.url, f"landed on {page.url}"
    assert hub.api("GET", "user").json()["name"] == "student", "logged in as student"
    wrong = HubClient("http://127.0.0.1:8000").login("student", "not-the-password")
    assert "Invalid username or password" in wrong.text, "a wrong password is refused"
