"""Day-two commands on the running deployment, over SSH as the non-root deploy user:
`invoke status` (hub health and version, users, servers with age and activity, GPUs held, last
deploy and backup) and `invoke logs` (hub, proxy, a user's server; --follow streams)."""

from __future__ import annotations

import json
import os
import threading

import pytest

from hubops.deploy.backup import backup
from hubops.host.files import file_host
from hubops.host.target import open_host
from hubops.images.table import VERSIONS
from hubops.ops.gpus import holders, probe_once, report
from hubops.ops.status import logs_command, read_status
from tests.support.labhost import SIMULATED_GPUS, LabHost
from tests.support.verify import LoggedIn, Target


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


def test_gpu_usage_maps_each_process_to_its_user_s_server(
    target: Target, alice: LoggedIn, lab: LabHost
) -> None:
    """`invoke gpus`' usage columns where no monitor's sample is at hand: one sample through the
    monitor's own module and probe container (SIMULATED: the test says what the fake NVML
    reports, usage.json), each host PID mapped to its container through the host's
    /proc/<pid>/cgroup, for real, and the table `invoke gpus` prints from it."""
    if lab.gpusim is None or target.provider is None:
        pytest.skip("needs the suites' own deployment on the SIMULATED GPU host")
    container = lab.client.containers.get(alice.container)
    container.exec_run(["sleep", "600.5"], detach=True)
    rows = container.top(ps_args="-eo pid,args")["Processes"]
    (pid,) = [int(r[0]) for r in rows if r[1] == "sleep 600.5"]
    gpu0, gpu1 = SIMULATED_GPUS[0].uuid, SIMULATED_GPUS[1].uuid
    usage_file = lab.gpusim / "usage.json"
    usage_file.write_text(
        json.dumps(
            {
                "gpus": {gpu0: {"util": 73, "mem": 2048}},
                "apps": [
                    {"gpu_uuid": gpu0, "pid": pid, "used_memory": 2048, "process_name": "python"},
                    {"gpu_uuid": gpu1, "pid": os.getpid(), "used_memory": 10},
                ],
            }
        )
    )
    usage_file.chmod(0o644)
    env = target.env
    try:
        with open_host(target.checkout_root, env) as host:
            view = probe_once(host, env.name, env.settings)
            found = holders(host, env.name)
    finally:
        usage_file.unlink()
        container.exec_run(["pkill", "-f", "sleep 600.5"])
    assert view is not None, "the environment has a hub"
    assert view["once"], "one sample, idle times unknown"
    assert view["error"] is None, view["error"]
    by_uuid = {g["uuid"]: g for g in view["gpus"]}
    assert by_uuid[gpu0]["index"] == "0"
    assert by_uuid[gpu0]["name"] == "hubops SIMULATED GPU"
    assert by_uuid[gpu0]["utilization"] == 73
    assert by_uuid[gpu0]["memory_used_mib"] == 2048
    assert by_uuid[gpu1]["utilization"] == 0
    (mine,) = [h for h in view["holders"] if h["user"] == "alice"]
    assert [a["pid"] for a in mine["processes"]] == [pid], "her process, by its cgroup"
    assert mine["container_id"] == container.id
    strays = [a for a in view["strays"] if a["pid"] == os.getpid()]
    assert strays, "a process of the host itself is in no container"
    assert strays[0]["container_id"] is None
    table = report(found, view, env.settings.gpu)
    (row,) = [r for r in table.rows if r[0] == "alice"]
    assert row[3].startswith("73%"), row
    assert f"{pid} ({alice.container})" in row[5], row
    assert row[6] == "?", "no idle time from a single sample"
    assert any(f"pid {os.getpid()}" in line for line in table.notes), table.notes
