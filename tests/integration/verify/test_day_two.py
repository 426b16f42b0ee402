"""Day-two commands on the running deployment, over SSH as the non-root deploy user:
`invoke status` (hub health and version, users, servers with age and activity, GPUs held, last
deploy and backup) and `invoke logs` (hub, proxy, a user's server; --follow streams)."""

from __future__ import annotations

import threading

import pytest

from hubops.backup import backup
from hubops.deploy import file_host
from hubops.images import VERSIONS
from hubops.status import logs_command, read_status
from hubops.target import open_host
from tests.integration.verify.conftest import LoggedIn, Target


class _Enough(Exception):
    pass


def test_status_tells_health_users_servers_gpus_and_the_last_backup(
    target: Target, alice: LoggedIn
) -> None:
    if target.provider is None:
        pytest.skip("needs the suites' own deployment")
    env = target.env
    with open_host(target.checkout_root, env) as host:
        files = file_host(host, target.plan)
        assert files is not None
        hub = target.container("hub")
        made = backup(host, env.settings, target.inspect(hub)["Config"]["Image"], hub, files=files)
        found = read_status(host, env.settings, target.plan)
    assert found.hub_state == "running"
    assert found.health == "ok"
    assert found.version == VERSIONS["JUPYTERHUB_VERSION"]
    assert found.users is not None
    assert found.users >= 1
    mine = [s for s in found.servers if s.user == "alice"]
    assert len(mine) == 1, found.servers
    assert mine[0].state == "running"
    assert mine[0].container == alice.container
    assert mine[0].started is not None
    assert mine[0].last_activity, "the hub's DB records her server's activity"
    assert mine[0].gpus, "the suites' deployment gives every server GPUs"
    assert any(line.startswith("alice: ") for line in found.gpus_held)
    assert found.last_backup == made
    assert found.last_deploy
    assert found.last_deploy.endswith("UTC")


def test_logs_of_the_hub_and_of_a_user_s_server(target: Target, alice: LoggedIn) -> None:
    env = target.env
    with open_host(target.checkout_root, env) as host:
        out: list[bytes] = []
        hub = logs_command(env.settings, target.plan, "hub", None, follow=False, tail=500)
        assert host.stream(hub, out.append) == 0  # type: ignore[attr-defined]
        assert b"JupyterHub" in b"".join(out)
        out.clear()
        own = logs_command(env.settings, target.plan, "hub", "alice", follow=False, tail=500)
        assert host.stream(own, out.append) == 0  # type: ignore[attr-defined]
        assert b"/user/alice/" in b"".join(out), "her server's own log"


def test_logs_follow_streams_lines_as_they_come(target: Target, alice: LoggedIn) -> None:
    env = target.env
    got: list[bytes] = []
    done = threading.Event()

    def sink(chunk: bytes) -> None:
        got.append(chunk)
        raise _Enough  # the first lines came while `docker logs --follow` still runs

    with open_host(target.checkout_root, env) as host:
        follow = logs_command(env.settings, target.plan, "proxy", None, follow=True, tail=5)

        def run() -> None:
            try:
                host.stream(follow, sink)  # type: ignore[attr-defined]
            except _Enough:
                done.set()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(60)
    assert done.is_set(), "the follow printed nothing within 60 s"
    assert got
