"""Users' disk, for real: the suites' deployment keeps the users' files on a small filesystem
of their own (a tmpfs: paths.user_data_dir, apart from data_dir), with a soft disk quota for
everybody (tmpfs has no project quotas, and this machine's kernel none at all; hard mode's
commands are unit-tested). bob goes over his quota, then fills the disk; alice, the other
user, goes on working, and the hub goes on serving and writing its DB."""

from __future__ import annotations

import json
import os
import re
import shlex
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from hubops.errors import DeployError
from tests.support.checkout import Checkout
from tests.support.cli import run_invoke
from tests.support.verify import USERS, LoggedIn, Target
from tests.support.wait import wait_for

MIB = 2**20
HOME = "/home/jovyan/work"
# SIGUSR1 to the hub's hubops-disk-usage service: measure now, not in disk_usage_every s
MEASURE_NOW = (
    "import os, signal\n"
    "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
    "    try:\n"
    "        cmd = open(f'/proc/{pid}/cmdline', 'rb').read()\n"
    "    except OSError:\n"
    "        continue\n"
    "    if b'hubops_hub.diskusage' in cmd and int(pid) != os.getpid():\n"
    "        os.kill(int(pid), signal.SIGUSR1)\n"
)


def hub(target: Target) -> str:
    assert target.plan is not None
    return next(c.name for c in target.plan.containers if c.role == "hub")


def usage_file(target: Target) -> Path:
    return Path(target.env.settings.paths.data_dir, "hubops-disk-usage.json")


def measured(
    target: Target, user: str, at_least: int = 0, below: int | None = None
) -> dict[str, Any]:
    """Have the hub measure now; its entry for ``user`` once it is in the given range."""
    before = (
        json.loads(usage_file(target).read_text())["sampled_at"]
        if usage_file(target).exists()
        else 0
    )
    target.host.check_output(f"docker exec {hub(target)} python3 -c {shlex.quote(MEASURE_NOW)}")

    def entry() -> dict[str, Any] | None:
        try:
            data = json.loads(usage_file(target).read_text())
        except (OSError, ValueError):
            return None
        found = data["users"].get(user)
        if data["sampled_at"] <= before or found is None:
            return None
        if found["bytes"] < at_least or (below is not None and found["bytes"] >= below):
            return None
        return {**found, "mode": data["mode"]}

    return wait_for(entry, 60, f"a measurement of {user}'s directory")


def as_user(target: Target, who: LoggedIn, command: str) -> Any:
    return target.in_container(who.container, command)


def metrics(target: Target) -> dict[str, list[tuple[dict[str, str], float]]]:
    token = Path(target.env.settings.paths.data_dir, "secrets", "metrics_token").read_text()
    text = requests.get(
        f"{target.url}/hub/metrics",
        headers={"Authorization": f"token {token}"},
        verify=target.verify,
        timeout=30,
    ).text
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def server_disk(who: LoggedIn) -> dict[str, Any]:
    r = who.client.server(who.name, "GET", "api/hubops/usage?no_track_activity=1")
    assert r.status_code == 200, r.text
    disk: dict[str, Any] = r.json()["disk"]
    return disk


@pytest.fixture
def simulated(target: Target) -> Target:
    if not target.simulated:
        pytest.skip("fills the users' filesystem: runs on the suites' own deployment")
    return target


def test_a_user_over_the_soft_quota_is_told_and_the_operator_sees_it(
    simulated: Target, bob: LoggedIn
) -> None:
    """bob writes 80 MiB against a 64 MiB quota: nothing stops him (soft), the hub's
    measurement, /hub/metrics and `invoke status` show it, and his next server start tells
    him (the hub's log, and JupyterLab's usage item, which has the hub's figure at once)."""
    target = simulated
    quota = 64 * MIB
    as_user(target, bob, f"head -c {80 * MIB} /dev/zero > {HOME}/checkpoint.bin")
    try:
        found = measured(target, "bob", at_least=80 * MIB)
        assert found["quota_bytes"] == quota, found
        assert found["mode"] == "soft", "tmpfs cannot enforce quotas"

        m = metrics(target)
        used = dict((labels["user"], v) for labels, v in m["hubops_user_disk_bytes"])
        quotas = dict((labels["user"], v) for labels, v in m["hubops_user_disk_quota_bytes"])
        assert used["bob"] >= 80 * MIB
        assert quotas["bob"] == quota

        status = run_invoke(
            Checkout(target.checkout_root), "status", "--env", target.name, env={"COLUMNS": "200"}
        )
        assert status.returncode == 0, status.stderr
        assert "users' disk use: soft quotas, measured at" in status.stdout, status.stdout
        row = next(line for line in status.stdout.splitlines() if re.search(r"\bbob\b.*MiB", line))
        assert "64 MiB" in row, row
        assert "OVER QUOTA" in row, row

        bob.client.stop_server("bob")
        bob.client.start_server("bob")
        logs = target.host.check_output(f"docker logs {hub(target)} 2>&1")
        assert "bob starts over their disk quota: Your files use" in logs
        disk = server_disk(bob)
        assert disk["quota_bytes"] == quota, disk
        assert disk["used_bytes"] >= 80 * MIB, disk
        assert disk["over_quota"] is True, disk
    finally:
        as_user(target, bob, f"rm -f {HOME}/checkpoint.bin")
    assert measured(target, "bob", below=quota)["bytes"] < quota, "he deleted files: under again"


def test_a_full_disk_takes_nobody_else_down(
    simulated: Target, alice: LoggedIn, bob: LoggedIn
) -> None:
    """bob fills the users' filesystem. The hub still logs alice in and writes its DB,
    alice's server starts again to a JupyterLab that answers, and her save fails with a
    message that says why. Once bob deletes his file, her save works."""
    target = simulated
    users = target.env.settings.paths.user_data_dir

    def save(name: str, text: str) -> Any:
        body = {"type": "file", "format": "text", "content": text}
        return alice.client.contents("alice", "PUT", name, json=body)

    assert save("results.txt", "version 1\n").status_code in (200, 201)
    filled = as_user(target, bob, f"head -c 1G /dev/zero > {HOME}/fill.bin")
    try:
        assert filled.rc != 0, "the tmpfs is smaller than 1G: the write must hit its end"
        assert "No space left on device" in filled.stderr, filled.stderr
        st = os.statvfs(users)
        assert st.f_bavail * st.f_frsize < MIB, "the users' filesystem is full"

        # the hub serves a fresh login, and writes its DB (a new API token, read back)
        alice.client.session.cookies.clear()
        password = next(u.password for u in USERS if u.username == "alice")
        page = alice.client.oauth_login("alice", password)
        assert page.status_code == 200, f"alice could not log in: {page.status_code}"
        note = f"full-disk-{uuid.uuid4().hex[:6]}"
        made = alice.client.api("POST", "users/alice/tokens", json={"note": note})
        assert made.status_code == 201, made.text
        tokens = alice.client.api("GET", "users/alice/tokens").json()["api_tokens"]
        assert note in [t["note"] for t in tokens], "the DB kept the write"

        # alice's server starts again, on the full filesystem, to a JupyterLab that answers
        alice.client.stop_server("alice")
        alice.client.start_server("alice")
        assert alice.client.lab_status("alice") == 200

        # saves fail with why and what to do; the last saved version stays, nothing half-new
        for name in ("results.txt", "new.txt"):
            saved = save(name, "x" * 65536)
            assert saved.status_code == 507, saved.text
            said = saved.json()["message"]
            assert said.startswith("Not saved: the disk that holds your files is full."), said
            assert "Delete files you do not need" in said
        kept = alice.client.contents("alice", "GET", "results.txt").json()
        assert kept["content"] == "version 1\n", "the last saved version is kept"
        assert alice.client.contents("alice", "GET", "new.txt").status_code == 404
    finally:
        as_user(target, bob, f"rm -f {HOME}/fill.bin")
    assert save("results.txt", "version 2\n").status_code == 200, "room again: saves work"


def test_hard_quotas_where_the_filesystem_cannot_enforce_them_change_nothing(
    simulated: Target,
) -> None:
    """disk_quota_mode: hard on the users' tmpfs: the deploy stops with one line that names
    the file, the key, the value and the fix, before it changes anything: the hub container
    and its config stay as they were."""
    target = simulated
    hub_before = target.inspect(hub(target))["Id"]
    config = Path(target.env.settings.paths.config_dir, "jupyterhub_config.py")
    config_before = config.read_text()
    checkout = Checkout(target.checkout_root)
    checkout.set_setting(target.name, "singleuser.disk_quota_mode", "hard")
    try:
        with pytest.raises(DeployError) as refused:
            target.redeploy()
    finally:
        checkout.set_setting(target.name, "singleuser.disk_quota_mode", None)
    said = str(refused.value)
    assert said.startswith(
        f"config/environments/{target.name}.yaml: singleuser.disk_quota_mode is 'hard', but "
        f"{target.env.settings.paths.user_data_dir} cannot enforce quotas: tmpfs has no "
        "project quotas"
    ), said
    assert "Set singleuser.disk_quota_mode: auto (or soft)" in said
    assert said.endswith("Nothing was changed."), said
    assert target.inspect(hub(target))["Id"] == hub_before, "the hub was not replaced"
    assert config.read_text() == config_before
