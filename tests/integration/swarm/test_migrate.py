"""The move of a single-host lab to a swarm on the same host (`invoke swarm.migrate`): users,
API tokens, login cookies and user files carry over; a move that fails brings the old hub
back. And `invoke doctor`'s swarm checks on the real swarm.
"""

from __future__ import annotations

import os

import pytest
import requests

from hubops.errors import DeployError
from hubops.host.local import LocalHost
from hubops.host.target import image_fetcher
from hubops.images import table as images
from hubops.ops.doctor import run_checks
from hubops.ops.migrate import Side, migrate
from hubops.plan.render import render
from tests.support.checkout import REPO_ROOT, Checkout
from tests.support.oauth_provider import running_provider
from tests.support.swarm import SwarmDeployment, TestSwarm, carol_with_a_file, swarm_env
from tests.support.verify import CLIENT_ID, CLIENT_SECRET, USERS, set_auth
from tests.support.wait import wait_for

pytestmark = pytest.mark.swarm


def _side(d: SwarmDeployment) -> tuple[Side, str]:
    env = d.env
    out = render(d.checkout.root, env, images.revisions(REPO_ROOT))
    return Side(d.name, env.settings, out.plan), (
        out.directory / "jupyterhub_config.py"
    ).read_text()


def _move(old: SwarmDeployment, new: SwarmDeployment, broken: bool = False) -> object:
    old_side, _ = _side(old)
    new_side, text = _side(new)
    if broken:  # a hub that cannot start: the new deploy fails after the old one stopped
        text += "\nraise SystemExit('a config that fails, for the test')\n"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DOCKER_HOST", new.swarm.manager.docker_host)
        return migrate(
            LocalHost(),
            old_side,
            new_side,
            text,
            dict(new.secrets),
            image_fetcher(new.env, new.secrets, False),
            health_timeout=60,
        )


def test_a_single_host_lab_moves_to_the_swarm(
    swarm: TestSwarm, module_checkout: Checkout, tmp_path_factory: pytest.TempPathFactory
) -> None:
    os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"
    root = tmp_path_factory.mktemp("move")
    old = swarm_env(module_checkout, root / "old", swarm, cluster="docker")
    new = swarm_env(module_checkout, root / "new", swarm, port=old.port)
    assert old.url == new.url, "the lab keeps its address"
    with running_provider(
        swarm.gateway, CLIENT_ID, CLIENT_SECRET, [f"{old.url}/hub/oauth_callback"], USERS
    ) as provider:
        for d in (old, new):
            set_auth(d.checkout, d.name, "gitlab", provider)
            d.set("auth.allowed_users", ["carol"])
        try:
            old.deploy()
            carol = carol_with_a_file(old, "moved.txt", "m")
            made = carol.api("POST", "users/carol/tokens", json={"note": "before the move"})
            assert made.status_code == 201, made.text
            token = made.json()["token"]

            def api_user() -> requests.Response:
                return requests.get(
                    f"{old.url}/hub/api/user",
                    headers={"Authorization": f"token {token}"},
                    timeout=10,
                )

            # a move that fails after the old hub stopped: the old one is back
            with pytest.raises(DeployError):
                _move(old, new, broken=True)
            wait_for(lambda: api_user().status_code == 200, 60, "the old hub back")
            client = swarm.client()
            assert client.containers.get(f"hubops-{old.name}-hub").status == "running"
            assert not client.services.list(filters={"label": f"org.hubops.environment={new.name}"})
            assert not client.containers.list(
                all=True, filters={"label": f"org.hubops.environment={new.name}"}
            ), "nothing of the failed move is left"

            result = _move(old, new)
            assert result.backup, "the old hub's state was backed up first"  # type: ignore[attr-defined]
            assert api_user().json()["name"] == "carol", "her API token works on the swarm hub"
            me = carol.api("GET", "users/carol")
            assert me.status_code == 200, "her login cookie too (the same cookie secret)"
            assert not me.json().get("servers"), "her single-host server is not carried over"
            carol.start_server("carol")
            body = carol.contents("carol", "GET", "moved.txt").json()
            assert body["content"] == "m", "her file is in her server on the swarm"
            assert client.services.get(f"hubops-{new.name}-user-carol")
            assert not client.containers.list(
                all=True, filters={"label": f"org.hubops.environment={old.name}"}
            ), "the old containers are gone"
            assert not [n for n in client.networks.list() if n.name == f"hubops-{old.name}"]
            carol.stop_server("carol")
        finally:
            new.tear_down()
            old.tear_down()


def test_doctor_checks_the_swarm_and_every_node_s_view_of_user_data(
    swarm: TestSwarm, module_checkout: Checkout, tmp_path_factory: pytest.TempPathFactory
) -> None:
    d = swarm_env(module_checkout, tmp_path_factory.mktemp("doc"), swarm)
    d.set("hub.bind_address", "127.0.0.1")
    (d.root / "users").mkdir(parents=True)
    plan, _ = _side(d)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DOCKER_HOST", swarm.manager.docker_host)
        found = {c.name: c for c in run_checks(LocalHost(), d.env.settings, plan.plan)}
    assert found["swarm"].status == "ok", found["swarm"]
    assert "2 of 2 node(s)" in found["swarm"].detail
    assert "gpu x2" in found["swarm"].detail
    assert found["shared user data"].status == "ok", found["shared user data"]
    assert "every node (2)" in found["shared user data"].detail
    assert found["live restore"].status == "ok"
