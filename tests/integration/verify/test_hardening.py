"""Every container of the deployment is hardened as the plan says, checked on the running
containers: no new privileges, capabilities dropped to what each needs, PID limits, read-only
root filesystems for the proxy and the hub; and a fork bomb in one user's server leaves the hub
answering and another user's server spawnable."""

from __future__ import annotations

import base64
import json
import time

import pytest

from hubops.config.settings import mem_bytes
from hubops.plan.model import HUB_CAPS, HUB_PIDS_LIMIT, PROXY_CAPS, PROXY_PIDS_LIMIT, USER_CAPS
from tests.support.verify import LoggedIn, Target
from tests.support.wait import wait_for


def host_config(target: Target, name: str) -> dict[str, object]:
    config: dict[str, object] = target.inspect(name)["HostConfig"]
    return config


def caps(values: object) -> set[str]:
    """Docker 20.10 writes capabilities with or without CAP_; compare without."""
    return {str(v).removeprefix("CAP_") for v in (values or [])}  # type: ignore[attr-defined]


def status_field(target: Target, name: str, field: str, pid: str = "1") -> str:
    out = target.in_container(name, f"grep '^{field}:' /proc/{pid}/status").stdout
    return out.split(":", 1)[1].strip()


def test_user_servers_are_hardened(target: Target, alice: LoggedIn) -> None:
    hc = host_config(target, alice.container)
    assert "no-new-privileges" in (hc["SecurityOpt"] or []), hc["SecurityOpt"]
    assert caps(hc["CapDrop"]) == {"ALL"}, hc["CapDrop"]
    assert caps(hc["CapAdd"]) == set(USER_CAPS), hc["CapAdd"]
    assert hc["PidsLimit"] == target.env.settings.singleuser.pids_limit, hc["PidsLimit"]
    su = target.env.settings.singleuser
    if not su.profiles:  # the suites' own deployment: half of its memory limit
        assert hc["ShmSize"] == mem_bytes(su.shm_size_for(None)), hc["ShmSize"]
    size = target.in_container(alice.container, "df -B1 --output=size /dev/shm | tail -n 1")
    assert int(size.stdout.split()[0]) == hc["ShmSize"], "the server sees that /dev/shm"
    # and as the kernel sees the server's first process
    assert status_field(target, alice.container, "NoNewPrivs") == "1"
    assert int(status_field(target, alice.container, "CapEff"), 16) == 0
    assert int(status_field(target, alice.container, "CapBnd"), 16) == 0


@pytest.mark.parametrize(
    ("role", "wanted_caps", "pids"),
    [("hub", HUB_CAPS, HUB_PIDS_LIMIT), ("proxy", PROXY_CAPS, PROXY_PIDS_LIMIT)],
)
def test_the_hub_and_the_proxy_are_hardened(
    target: Target, role: str, wanted_caps: list[str], pids: int
) -> None:
    name = target.container(role)
    hc = host_config(target, name)
    assert "no-new-privileges" in (hc["SecurityOpt"] or []), hc["SecurityOpt"]
    assert caps(hc["CapDrop"]) == {"ALL"}, hc["CapDrop"]
    assert caps(hc["CapAdd"]) == set(wanted_caps), hc["CapAdd"]
    assert hc["PidsLimit"] == pids
    assert hc["ReadonlyRootfs"] is True, f"{name}'s root filesystem is writable"
    write = target.in_container(name, "touch /etc/hubops-probe")
    assert write.rc != 0, f"{name} could write to its root filesystem"
    assert "Read-only file system" in write.stderr, write.stderr


def test_the_proxy_serves_as_nobody_without_capabilities(target: Target) -> None:
    name = target.container("proxy")
    found = target.in_container(name, "grep -l 'configurable-http-prox[y]' /proc/[0-9]*/cmdline")
    pids = [p.split("/")[2] for p in found.stdout.split()]
    pid = next(p for p in pids if p != "1")  # 1 is tini, which started the entrypoint
    assert status_field(target, name, "Uid", pid).split()[0] == "65534"
    assert int(status_field(target, name, "CapEff", pid), 16) == 0


def test_the_firewall_container_has_only_what_iptables_needs(target: Target) -> None:
    name = f"hubops-{target.name}-firewall"
    hc = host_config(target, name)
    assert hc["NetworkMode"] == "host"
    assert caps(hc["CapDrop"]) == {"ALL"}
    assert caps(hc["CapAdd"]) == {"NET_ADMIN", "NET_RAW", "SYS_CHROOT"}, hc["CapAdd"]
    assert hc["ReadonlyRootfs"] is True
    mounts = target.inspect(name)["Mounts"]
    assert [(m["Source"], m["RW"]) for m in mounts] == [("/", False)], mounts


BOMB = """
import errno, json, os, signal, sys, time
out, limit, hold = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
kids, failed = [], None
deadline = time.monotonic() + 20
while len(kids) < limit and time.monotonic() < deadline:
    try:
        pid = os.fork()
    except OSError as exc:
        failed = errno.errorcode.get(exc.errno, str(exc.errno))
        break
    if pid == 0:
        time.sleep(hold + 30)
        os._exit(0)
    kids.append(pid)
with open(out + ".tmp", "w") as f:
    json.dump({"forked": len(kids), "failed": failed}, f)
os.rename(out + ".tmp", out)
time.sleep(hold)
for pid in kids:
    os.kill(pid, signal.SIGKILL)
for pid in kids:
    os.waitpid(pid, 0)
open(out + ".done", "w").close()
"""


def test_a_fork_bomb_stays_in_its_container(target: Target, alice: LoggedIn, bob: LoggedIn) -> None:
    """alice forks until the kernel refuses (at most 4x her PID limit, 20 s), holds every
    process for 30 s while bob starts a new server, then lets them go."""
    bob.client.stop_server("bob")
    limit = target.env.settings.singleuser.pids_limit
    work = f"{target.env.settings.paths.user_data_dir}/jupyterhub-user-alice"
    result, done = target.host.file(f"{work}/bomb.json"), target.host.file(f"{work}/bomb.json.done")
    clean = f"rm -f {work}/bomb.json {work}/bomb.json.done"
    target.host.run(clean)
    code = base64.b64encode(BOMB.encode()).decode()
    started = time.monotonic()
    target.host.check_output(
        f"docker exec -d {alice.container} python3 -c "
        f"\"import base64; exec(base64.b64decode('{code}'))\" "
        f"/home/jovyan/work/bomb.json {min(4 * limit, 2048)} 30"
    )
    wait_for(lambda: result.exists, 40, "the fork bomb to hit its limit")
    bomb = json.loads(result.content_string)
    print(f"fork bomb: {bomb['forked']} processes, then {bomb['failed']} (pids_limit {limit})")
    assert bomb["failed"] == "EAGAIN", f"the PID limit did not stop the bomb: {bomb}"
    assert bomb["forked"] < limit, bomb
    # while alice's container is full: the hub answers, and bob gets a new server
    assert bob.client.api("GET", "").status_code == 200, "the hub's API answers"
    bob.client.start_server("bob")
    assert bob.client.lab_status("bob") == 200
    assert not done.exists, "the bomb let go before bob's server was up: hold it longer"
    print(f"bob's server was ready {time.monotonic() - started:.1f}s after the bomb started")
    wait_for(lambda: done.exists, 60, "the bomb to let its processes go")
    wait_for(lambda: alice.client.lab_status("alice") == 200, 60, "alice's server to recover")
    target.host.run(clean)
