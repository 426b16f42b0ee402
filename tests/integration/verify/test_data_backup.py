"""Backups of the users' files, as an operator drives them on the lab host (over SSH, as the
non-root deploy user): `invoke data.backup`, the script the systemd timer runs, `invoke
data.restore` beside the user's files and in place, `invoke status` and /hub/metrics; and bad
input (a wrong password, a backup host that does not answer), which changes nothing.

One history is shared by the tests of this module (the suite's time is short): alice's and
bob's files, a backup, changes, a second backup by the timer's own command. What the tests
look at on the host is read in one command each (every testinfra command is an SSH session).
"""

from __future__ import annotations

import base64
import hashlib
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support.checkout import Checkout
from tests.support.cli import run_invoke
from tests.support.labhost import LabHost
from tests.support.net import free_port
from tests.support.verify import LoggedIn, Target
from tests.support.wait import wait_for

# a uid and gid of their own (as with host_uids: per-user): a restore keeps owners
OWNER = (4242, 4343)
ALICE = (1000, 100)  # singleuser.uid:gid (host_uids: shared)


@dataclass(frozen=True)
class History:
    checkout: Checkout
    users: str  # paths.user_data_dir
    repository: str
    between: str  # an ISO time after the first backup, before the second
    first: str  # the output of the first `invoke data.backup`

    def dir(self, user: str) -> str:
        return f"{self.users}/jupyterhub-user-{user}"


@dataclass(frozen=True)
class Seen:
    uid: int
    gid: int
    mode: int
    text: str  # a file's content, or a directory's entries (one per line, sorted)


def look(target: Target, *paths: str) -> dict[str, Seen | None]:
    """Owner, mode and content (or entries) of each path on the host, in one command."""
    script = (
        'for p in "$@"; do if [ -d "$p" ]; then k=d; elif [ -e "$p" ]; then k=f; else k=-; fi; '
        'printf "%s\\t%s\\t" "$p" "$k"; [ "$k" = - ] && { echo; continue; }; '
        "printf '%s\\t' \"$(stat -c '%u %g %a' \"$p\")\"; "
        'if [ "$k" = d ]; then ls -A "$p" | sort | base64 -w0; else base64 -w0 "$p"; fi; echo; '
        "done"
    )
    out = target.host.check_output(f"sh -c {shlex.quote(script)} sh {shlex.join(paths)}")
    found: dict[str, Seen | None] = {}
    for line in out.splitlines():
        path, kind, *rest = line.split("\t")
        if kind == "-":
            found[path] = None
            continue
        uid, gid, mode = rest[0].split()
        text = base64.b64decode(rest[1]).decode() if len(rest) > 1 else ""
        found[path] = Seen(int(uid), int(gid), int(mode, 8), text.strip() if kind == "d" else text)
    return found


def invoke(target: Target, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    done = run_invoke(Checkout(target.checkout_root), *args, "--env", target.name, env=env)
    return done.returncode, done.stdout, done.stderr


def writes(*files: tuple[str, str, tuple[int, int]]) -> str:
    """A shell command that writes each (path, text, owner)."""
    return " && ".join(
        f"mkdir -p $(dirname {p}) && printf %s {shlex.quote(text)} > {p} && chown {u}:{g} {p}"
        for p, text, (u, g) in files
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
    users = settings.paths.user_data_dir
    a, b = f"{users}/jupyterhub-user-alice", f"{users}/jupyterhub-user-bob"
    try:
        target.host.check_output(
            writes(
                (f"{a}/notes.txt", "v1", ALICE),
                (f"{a}/gone.txt", "deleted after the first backup", ALICE),
                (f"{a}/results/owned.csv", "1,2,3", OWNER),
                (f"{b}/bob.txt", "bob v1", ALICE),
            )
            + f" && chown {OWNER[0]}:{OWNER[1]} {a}/results && chmod 0705 {a}/results"
        )
        code, out, err = invoke(target, "data.backup")
        assert code == 0, err
        between = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")
        script = f"{settings.paths.config_dir}/hubops-data-backup.sh"
        changes = writes((f"{a}/notes.txt", "v2", ALICE), (f"{b}/bob.txt", "bob v2", ALICE))
        by_timer = target.host.run(f"{changes} && rm {a}/gone.txt && /bin/sh {script}")
        assert by_timer.rc == 0, by_timer.stderr
        assert '"ok": true' in by_timer.stdout, by_timer.stdout
        yield History(
            Checkout(target.checkout_root),
            users,
            f"{settings.paths.data_dir}/user-backups",
            between,
            out,
        )
    finally:  # the files this module wrote, the restored copies
        target.host.run(f"rm -rf {a}/notes.txt {a}/gone.txt {a}/results {a}/restored-* {b}/bob.txt")


def test_a_backup_and_the_timers_command_make_encrypted_snapshots(
    target: Target, history: History
) -> None:
    """The first run makes the password (in the checkout's git-ignored secrets file, and 0600
    root on the host), installs the script and makes the repository; the script alone (the
    timer's command) makes the second snapshot. The repository holds no user's file in clear."""
    paths = target.env.settings.paths
    assert "made backup_password in config/secrets/" in history.first, history.first
    assert f"wrote {paths.config_dir}/hubops-data-backup.sh" in history.first
    assert re.search(
        r"ok: snapshot [0-9a-f]{8}, \d+ files \(\d+ new, 0 changed\)", history.first
    ), history.first
    secret = f"{paths.data_dir}/secrets/backup_password"
    script = f"{paths.config_dir}/hubops-data-backup.sh"
    seen = look(target, secret, script)
    assert [(s.uid, s.gid, s.mode) if s else None for s in seen.values()] == [
        (0, 0, 0o600),
        (0, 0, 0o700),
    ], "the password and the script are root's alone"
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
    r, a, b = found.group(1), history.dir("alice"), history.dir("bob")
    assert r.startswith(f"{a}/restored-"), r
    seen = look(
        target, r, f"{r}/notes.txt", f"{r}/gone.txt", f"{r}/results", f"{r}/results/owned.csv"
    )
    seen.update(look(target, f"{a}/notes.txt", f"{a}/gone.txt", f"{b}/bob.txt", b))
    assert seen[f"{r}/notes.txt"] == Seen(*ALICE, 0o644, "v1"), seen
    assert seen[f"{r}/gone.txt"] is not None, "the deleted file is back"
    assert seen[f"{r}/results/owned.csv"] == Seen(*OWNER, 0o644, "1,2,3"), "owners kept"
    assert seen[f"{r}/results"] == Seen(*OWNER, 0o705, "owned.csv"), "modes kept"
    copy = seen[r]
    assert copy is not None
    assert (copy.uid, copy.gid, copy.mode) == (*ALICE, 0o750), "the copy is alice's, as she was"
    assert seen[f"{a}/notes.txt"] == Seen(*ALICE, 0o644, "v2"), "her own files are untouched"
    assert seen[f"{a}/gone.txt"] is None
    assert seen[f"{b}/bob.txt"] == Seen(*ALICE, 0o644, "bob v2"), "bob's files are untouched"
    assert "restored-" not in (seen[b].text if seen[b] else ""), "nothing restored into bob's"


def test_status_and_metrics_show_the_last_backup(target: Target, history: History) -> None:
    code, out, err = invoke(target, "status")
    assert code == 0, err
    assert re.search(r"last backup of the users' files: \S+Z ok: snapshot [0-9a-f]{8}", out), out
    token = target.host.check_output(
        f"cat {target.env.settings.paths.data_dir}/secrets/metrics_token"
    ).strip()
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


def test_a_wrong_password_and_a_target_that_does_not_answer_change_nothing_sftp_works(
    target: Target, history: History, tmp_path_factory: pytest.TempPathFactory, lab: LabHost
) -> None:
    """Each is one line that says what to change, and the repository, the password and the
    script on the host and the run's record are as they were. The same sftp target on a port
    where an SSH server answers (the lab host's own) takes the backup."""
    before = state(target, history)
    code, out, err = invoke(
        target, "data.backup", env={"HUBOPS_BACKUP_PASSWORD": "not-the-password-of-it"}
    )
    assert code == 1, out
    assert len(err.strip().splitlines()) == 1, err
    assert "the backup password does not open the repository" in err, err
    assert "wrong password or no key found" in err, err
    assert err.strip().endswith("nothing was changed"), err

    port = free_port()  # nothing listens there
    keys = tmp_path_factory.mktemp("backup-ssh")
    (keys / "id").write_text("not a key\n")
    (keys / "known_hosts").write_text("")
    env_file = history.checkout.env_file(target.name)
    saved = env_file.read_text()
    sftp = f"sftp:root@127.0.0.1:{keys}/repository"
    try:
        history.checkout.set_setting(
            target.name,
            "backup",
            {
                "target": sftp,
                "ssh_port": port,
                "ssh_identity": str(keys / "id"),
                "ssh_known_hosts": str(keys / "known_hosts"),
            },
        )
        code, out, err = invoke(target, "data.backup")
        assert code == 1, out
        assert len(err.strip().splitlines()) == 1, err
        assert f"the backup target {sftp} does not answer" in err, err
        assert f"port {port}: Connection refused" in err, err
        assert state(target, history) == before, "a bad password or target changed the host"

        history.checkout.set_setting(target.name, "backup.ssh_port", lab.ssh_port)
        history.checkout.set_setting(target.name, "backup.ssh_identity", str(lab.key_file))
        history.checkout.set_setting(target.name, "backup.ssh_known_hosts", str(lab.known_hosts))
        code, out, err = invoke(target, "data.backup")
    finally:
        env_file.write_text(saved)
    assert code == 0, err
    assert f"to {sftp}: " in out, out
    assert re.search(r"ok: snapshot [0-9a-f]{8}", out), out
    assert (keys / "repository" / "config").exists(), "the repository is on the SSH host"


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
    a, b = history.dir("alice"), history.dir("bob")
    seen = look(target, a, f"{a}/notes.txt", f"{a}/results/owned.csv", f"{b}/bob.txt")
    seen.update(look(target, history.users))
    assert seen[f"{a}/notes.txt"] == Seen(*ALICE, 0o644, "v1"), seen
    home = seen[a]
    assert home is not None
    assert "gone.txt" in home.text.split(), "the deleted file is back"
    assert "restored-" not in home.text, "the directory was replaced, not added to"
    assert (home.uid, home.gid, home.mode) == (*ALICE, 0o750), "still alice's, as she was"
    assert seen[f"{a}/results/owned.csv"] == Seen(*OWNER, 0o644, "1,2,3"), "owners kept"
    assert seen[f"{b}/bob.txt"] == Seen(*ALICE, 0o644, "bob v2"), "bob's files are untouched"
    leftovers = seen[history.users].text if seen[history.users] else ""
    assert ".hubops-restore-" not in leftovers, leftovers
    alice.client.start_server("alice")
    wait_for(
        lambda: alice.client.contents("alice", "GET", "notes.txt").json().get("content") == "v1",
        60,
        "alice to see her restored notes",
    )
