"""Backups of the users' files, as an operator drives them on the lab host (over SSH, as the
non-root deploy user): `invoke data.backup`, the script the systemd timer runs, `invoke
data.restore` beside the user's files and in place, `invoke status` and /hub/metrics; and bad
input (a wrong password, a backup host that does not answer), which changes nothing.

One history is shared by the tests of this module (the suite's time is short): alice's and
bob's files, a backup, changes, a second backup by the timer's own command.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support.checkout import Checkout
from tests.support.cli import run_invoke
from tests.support.net import free_port
from tests.support.verify import LoggedIn, Target
from tests.support.wait import wait_for

# a uid and gid of their own (as with host_uids: per-user): a restore keeps owners
OWNER = (4242, 4343)


@dataclass(frozen=True)
class History:
    checkout: Checkout
    users: str  # paths.user_data_dir
    repository: str
    between: str  # an ISO time after the first backup, before the second
    first: str  # the output of the first `invoke data.backup`

    def dir(self, user: str) -> str:
        return f"{self.users}/jupyterhub-user-{user}"


def invoke(target: Target, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    done = run_invoke(Checkout(target.checkout_root), *args, "--env", target.name, env=env)
    return done.returncode, done.stdout, done.stderr


def write(target: Target, path: str, text: str, owner: tuple[int, int] = (1000, 100)) -> None:
    target.host.check_output(
        f"mkdir -p $(dirname {path}) && printf %s {text!r} > {path} && "
        f"chown {owner[0]}:{owner[1]} {path}"
    )


def state(target: Target, h: History) -> str:
    """A digest of what a failed backup must leave alone: the repository's files, the
    password and the script on the host, the run's record. (The users' files are mounted
    read-only into every backup container.)"""
    settings = target.env.settings
    listing = target.host.check_output(
        f"cd {h.repository} && find . -type f | sort | xargs sha256sum && "
        f"sha256sum {settings.paths.data_dir}/secrets/backup_password "
        f"{settings.paths.config_dir}/hubops-data-backup.sh "
        f"{settings.paths.data_dir}/hubops-user-backup.json"
    )
    return hashlib.sha256(listing.encode()).hexdigest()


@pytest.fixture(scope="module")
def history(target: Target, alice: LoggedIn, bob: LoggedIn) -> Iterator[History]:
    """alice's and bob's files, `invoke data.backup`; then alice changes one file and deletes
    another, bob changes his, and the timer's command (the script, run as root on the host)
    backs up again."""
    if not target.simulated:
        pytest.skip("backs up and restores users' files: runs on the suites' own deployment")
    settings = target.env.settings
    h = History(
        Checkout(target.checkout_root),
        settings.paths.user_data_dir,
        f"{settings.paths.data_dir}/user-backups",
        "",
        "",
    )
    a, b = h.dir("alice"), h.dir("bob")
    try:
        write(target, f"{a}/notes.txt", "v1")
        write(target, f"{a}/gone.txt", "deleted after the first backup")
        write(target, f"{a}/results/owned.csv", "1,2,3", OWNER)
        target.host.check_output(
            f"chown {OWNER[0]}:{OWNER[1]} {a}/results && chmod 0705 {a}/results"
        )
        write(target, f"{b}/bob.txt", "bob v1")
        code, out, err = invoke(target, "data.backup")
        assert code == 0, err
        between = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")
        write(target, f"{a}/notes.txt", "v2")
        target.host.check_output(f"rm {a}/gone.txt")
        write(target, f"{b}/bob.txt", "bob v2")
        script = f"{settings.paths.config_dir}/hubops-data-backup.sh"
        by_timer = target.host.run(f"/bin/sh {script}")
        assert by_timer.rc == 0, by_timer.stderr
        assert '"ok": true' in by_timer.stdout, by_timer.stdout
        yield History(h.checkout, h.users, h.repository, between, out)
    finally:  # the files this module wrote, the restored copies
        target.host.run(f"rm -rf {a}/notes.txt {a}/gone.txt {a}/results {a}/restored-* {b}/bob.txt")


def test_a_backup_and_the_timers_command_make_encrypted_snapshots(
    target: Target, history: History
) -> None:
    """The first run makes the password (in the checkout's git-ignored secrets file, and 0600
    root on the host), installs the script and makes the repository; the script alone (the
    timer's command) makes the second snapshot. The repository holds no user's file in clear."""
    assert "made backup_password in config/secrets/" in history.first, history.first
    assert f"wrote {target.env.settings.paths.config_dir}/hubops-data-backup.sh" in history.first
    assert re.search(
        r"ok: snapshot [0-9a-f]{8}, \d+ files \(\d+ new, 0 changed\)", history.first
    ), history.first
    secret = target.host.file(f"{target.env.settings.paths.data_dir}/secrets/backup_password")
    assert (secret.user, secret.mode) == ("root", 0o600)
    script = target.host.file(f"{target.env.settings.paths.config_dir}/hubops-data-backup.sh")
    assert (script.user, script.mode) == ("root", 0o700)
    found = target.host.run(f"grep -rl 'deleted after the first backup' {history.repository}")
    assert found.rc == 1, f"a user's file in clear in the repository: {found.stdout}"


def test_a_restore_brings_back_an_earlier_state_beside_the_users_files(
    target: Target, history: History
) -> None:
    """`data.restore --user alice --at <between the backups>`: the first snapshot's files in
    <alice's directory>/restored-<time>/, owners and modes kept; her current files and bob's
    are not touched."""
    code, out, err = invoke(target, "data.restore", "--user", "alice", "--at", history.between)
    assert code == 0, err
    found = re.search(r"are in (\S+/restored-\d{8}T\d{6}Z)$", out.strip())
    assert found, out
    restored = found.group(1)
    a = history.dir("alice")
    assert restored.startswith(f"{a}/restored-"), restored
    assert target.host.file(f"{restored}/notes.txt").content_string == "v1"
    assert target.host.file(f"{restored}/gone.txt").exists, "the deleted file is back"
    owned = target.host.file(f"{restored}/results/owned.csv")
    assert (owned.uid, owned.gid) == OWNER, "owners as in the backup"
    folder = target.host.file(f"{restored}/results")
    assert (folder.uid, folder.gid, folder.mode) == (*OWNER, 0o705), "modes as in the backup"
    assert target.host.file(restored).uid == 1000, "the restored directory is alice's"
    assert target.host.file(f"{a}/notes.txt").content_string == "v2", "her files untouched"
    assert not target.host.file(f"{a}/gone.txt").exists
    assert target.host.file(f"{history.dir('bob')}/bob.txt").content_string == "bob v2"
    assert "restored-" not in target.host.check_output(f"ls {history.dir('bob')}")


def test_status_and_metrics_show_the_last_backup(target: Target, history: History) -> None:
    code, out, err = invoke(target, "status")
    assert code == 0, err
    assert re.search(r"last backup of the users' files: \S+Z ok: snapshot [0-9a-f]{8}", out), out
    token = target.host.file(
        f"{target.env.settings.paths.data_dir}/secrets/metrics_token"
    ).content_string.strip()
    page = requests.get(
        f"{target.url}/hub/metrics",
        headers={"Authorization": f"token {token}"},
        verify=target.verify,
        timeout=30,
    )
    assert page.status_code == 200, page.text[:300]
    found = {
        s.name: s.value
        for family in text_string_to_metric_families(page.text)
        for s in family.samples
    }
    assert found["hubops_user_backup_last_run_ok"] == 1.0
    age = (
        datetime.now(timezone.utc).timestamp()
        - found["hubops_user_backup_last_success_timestamp_seconds"]
    )
    assert 0 <= age < 600, f"the last success was {age:.0f} s ago"


def test_a_wrong_password_and_a_target_that_does_not_answer_change_nothing(
    target: Target, history: History, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Each is one line that says what to change, and the repository, the password and the
    script on the host, the run's record and the users' files are as they were."""
    before = state(target, history)
    code, out, err = invoke(
        target, "data.backup", env={"HUBOPS_BACKUP_PASSWORD": "not-the-password-of-it"}
    )
    assert code == 1, out
    assert len(err.strip().splitlines()) == 1, err
    assert "the backup password does not open the repository" in err, err
    assert "wrong password or no key found" in err, err
    assert err.strip().endswith("nothing was changed"), err
    assert state(target, history) == before, "a wrong password changed the host"

    port = free_port()  # nothing listens there
    keys = tmp_path_factory.mktemp("backup-ssh")
    (keys / "id").write_text("not a key\n")
    (keys / "known_hosts").write_text("")
    env_file = history.checkout.env_file(target.name)
    saved = env_file.read_text()
    try:
        history.checkout.set_setting(
            target.name,
            "backup",
            {
                "target": "sftp:backup@127.0.0.1:/srv/restic/lab",
                "ssh_port": port,
                "ssh_identity": str(keys / "id"),
                "ssh_known_hosts": str(keys / "known_hosts"),
            },
        )
        code, out, err = invoke(target, "data.backup")
    finally:
        env_file.write_text(saved)
    assert code == 1, out
    assert len(err.strip().splitlines()) == 1, err
    assert "the backup target sftp:backup@127.0.0.1:/srv/restic/lab does not answer" in err, err
    assert f"port {port}: Connection refused" in err, err
    assert state(target, history) == before, "a target that does not answer changed the host"


def test_an_in_place_restore_stops_the_server_and_replaces_the_files(
    target: Target, history: History, alice: LoggedIn
) -> None:
    """`data.restore --user alice --at <between> --in-place`: her server is stopped through
    the hub's API, then her directory is the first snapshot's (the restored-* copy, made
    after it, is gone); bob's files are not touched. She starts her server again."""
    if not alice.client.server_ready("alice"):
        alice.client.start_server("alice")
    code, out, err = invoke(
        target, "data.restore", "--user", "alice", "--at", history.between, "--in-place"
    )
    assert code == 0, err
    assert "alice: stopped their server; " in out, out
    assert not alice.client.api("GET", "users/alice").json().get("servers"), "she has a server"
    assert target.host.run(f"docker inspect {alice.container}").rc != 0, "her container runs"
    a = history.dir("alice")
    assert target.host.file(f"{a}/notes.txt").content_string == "v1"
    assert target.host.file(f"{a}/gone.txt").exists
    owned = target.host.file(f"{a}/results/owned.csv")
    assert (owned.uid, owned.gid) == OWNER
    assert "restored-" not in target.host.check_output(f"ls {a}"), "the directory was replaced"
    leftovers = target.host.check_output(f"ls -A {history.users}")
    assert ".hubops-restore-" not in leftovers, leftovers
    assert target.host.file(f"{history.dir('bob')}/bob.txt").content_string == "bob v2"
    alice.client.start_server("alice")
    wait_for(
        lambda: alice.client.contents("alice", "GET", "notes.txt").json().get("content") == "v1",
        60,
        "alice to see her restored notes",
    )
