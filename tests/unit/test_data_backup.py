"""Backups of the users' files (hubops.ops.databackup, hubops.ops.datarestore, and
hubops_hub.databackup, which runs in the hub image): the settings and their one-line errors, the
containers and the script hubops runs on the hub host, the choice of a snapshot, what restic's
failures become, the run's record in the metrics, and the password's making.

The real runs (restic in the hub image, on a lab host over SSH) are in
tests/integration/verify/test_data_backup.py.
"""

from __future__ import annotations

import hashlib
import json
import re
import stat
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hubops_hub import databackup as inside
from hubops_hub.metrics import HubopsCollector
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from hubops.config import environments, secrets
from hubops.config.settings import Environment
from hubops.errors import BackupError, ConfigError, SecretError
from hubops.ops import databackup
from hubops.ops.datarestore import (
    Snapshot,
    choose,
    parse_at,
    restic_time,
    restore,
    snapshots,
    stamp,
)
from hubops.ops.prepare import BackupTimer, PrepareReport, data_backup_timer
from hubops.ops.status import read_status
from tests.support.checkout import Checkout
from tests.support.planned import planned
from tests.support.scripted_host import ScriptedHost

LAB_BACKUP = "backup:\n  target: {target}\n  ssh_identity: /root/.ssh/hubops-backup\n"


def load(checkout: Checkout, backup_yaml: str, base: str = "local") -> Environment:
    checkout.write_env("t", f"extends: {base}.yaml\n{backup_yaml}")
    return environments.load(checkout.root, "t").settings


# --- settings ----------------------------------------------------------------------------------


def test_unset_target_is_a_repository_in_the_data_dir(checkout: Checkout) -> None:
    """No backup section: restic's repository is <data_dir>/user-backups on the hub host, with
    a retention and a nightly schedule."""
    s = load(checkout, "")
    assert databackup.local_repository(s) == "/srv/jupyterhub/user-backups"
    assert databackup.repository(s) == inside.LOCAL_REPOSITORY
    assert databackup.keep_args(s) == [
        *("--keep-last", "3", "--keep-daily", "7"),
        *("--keep-weekly", "4", "--keep-monthly", "6"),
    ]
    assert s.backup.schedule == "*-*-* 03:00:00"


@pytest.mark.parametrize(
    ("target", "expect"),
    [
        ("s3:s3.amazonaws.com/bucket", "hubops runs restic with a path or sftp only"),
        ("rest:http://host:8000/", "hubops runs restic with a path or sftp only"),
        ("backups/hubops", "expected an absolute path on the host"),
        ("/srv/jupyterhub-users/backup", "inside paths.user_data_dir (/srv/jupyterhub-users)"),
        ("/srv", "is a system directory"),
        ("/var/lib/docker/restic", "inside /var/lib/docker"),
        ("sftp:-oProxyCommand=x@h:/r", "expected sftp:USER@HOST:/PATH with an absolute path"),
        ("sftp:backup@nas:relative", "expected sftp:USER@HOST:/PATH with an absolute path"),
        ("sftp:backup@nas:/srv/../etc", "without '..'"),
    ],
)
def test_a_bad_target_is_one_line_with_file_line_key_value_and_fix(
    checkout: Checkout, target: str, expect: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(checkout, f"backup:\n  target: '{target}'\n  ssh_identity: /root/.ssh/id\n")
    message = str(caught.value)
    assert "\n" not in message, message
    assert message.startswith("config/environments/t.yaml:3: backup.target: got "), message
    assert repr(target) in message, message
    assert expect in message, message


def test_an_sftp_target_needs_the_key_that_logs_in(checkout: Checkout) -> None:
    with pytest.raises(ConfigError) as caught:
        load(checkout, "backup:\n  target: sftp:backup@nas.lab:/srv/restic\n")
    assert "backup.target: got 'sftp:backup@nas.lab:/srv/restic', an sftp target, without " in (
        str(caught.value)
    )
    assert "set backup.ssh_identity" in str(caught.value)


def test_a_retention_that_keeps_nothing_is_refused(checkout: Checkout) -> None:
    zero = "".join(f"  keep_{k}: 0\n" for k in ("last", "daily", "weekly", "monthly"))
    with pytest.raises(ConfigError, match=r"t\.yaml:\d+: backup\.keep_last: is 0, and so are"):
        load(checkout, "backup:\n" + zero)


def test_a_schedule_on_two_lines_is_refused(checkout: Checkout) -> None:
    """The schedule goes into a unit file: a line break would add a directive."""
    with pytest.raises(ConfigError, match=r"backup\.schedule: got 'daily\\nExecStartPre=x'"):
        load(checkout, 'backup:\n  schedule: "daily\\nExecStartPre=x"\n')


def test_another_disk_and_an_sftp_host_are_accepted(checkout: Checkout) -> None:
    disk = load(checkout, "backup:\n  target: /mnt/backup/hubops\n")
    assert databackup.local_repository(disk) == "/mnt/backup/hubops"
    sftp = load(checkout, LAB_BACKUP.format(target="sftp:backup@[fd00::5]:/srv/restic/lab"))
    assert databackup.local_repository(sftp) is None
    assert databackup.repository(sftp) == "sftp:backup@[fd00::5]:/srv/restic/lab"


# --- the containers and the script -------------------------------------------------------------


def _mounts(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == "--mount"]


def test_a_local_repository_runs_without_network_and_reads_users_read_only(
    checkout: Checkout,
) -> None:
    s = load(checkout, "")
    argv = databackup.docker_run(s, "t", "sha256:abc", "backup", "--keep-last", "3")
    assert argv[:3] == ["docker", "run", "--rm"]
    assert argv[argv.index("--network") + 1] == "none"
    assert argv[argv.index("--user") + 1] == "0:0", "root: every user's files, owners kept"
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    assert _mounts(argv) == [
        "type=bind,source=/srv/jupyterhub-users,target=/users,readonly",
        "type=bind,source=/srv/jupyterhub,target=/srv/jupyterhub",
        "type=bind,source=/srv/jupyterhub/user-backups,target=/backup-target",
    ]
    tail = argv[argv.index("sha256:abc") :]
    assert tail == [
        *("sha256:abc", "-m", "hubops_hub.databackup", "--repo", "/backup-target"),
        *("--host", "hubops-t", "backup", "--keep-last", "3"),
    ]
    restore = databackup.docker_run(s, "t", "img", "restore", users_writable=True)
    assert _mounts(restore)[0] == "type=bind,source=/srv/jupyterhub-users,target=/users"


def test_an_sftp_target_uses_the_hosts_network_and_ssh_that_never_asks(
    checkout: Checkout,
) -> None:
    """BatchMode and a connect timeout: a backup host that does not answer fails in seconds,
    one that is unknown is refused, and nothing waits for a prompt."""
    s = load(
        checkout,
        LAB_BACKUP.format(target="sftp:backup@nas.lab:/srv/restic") + "  ssh_port: 2222\n",
    )
    argv = databackup.docker_run(s, "t", "img", "check", password_stdin=True)
    assert argv[argv.index("--network") + 1] == "host"
    assert "--interactive" in argv, "the password comes on stdin"
    assert _mounts(argv)[2:] == [
        "type=bind,source=/root/.ssh/hubops-backup,target=/run/hubops-backup/id,readonly",
        "type=bind,source=/root/.ssh/known_hosts,target=/run/hubops-backup/known_hosts,readonly",
    ]
    command = argv[argv.index("--sftp-command") + 1]
    for option in ("BatchMode=yes", "StrictHostKeyChecking=yes", "ConnectTimeout=10"):
        assert f"-o {option}" in command, command
    assert command.endswith("-p 2222 backup@nas.lab -s sftp"), command
    assert argv[argv.index("--repo") + 1] == "sftp:backup@nas.lab:/srv/restic"
    assert argv[-2:] == ["--password-stdin", "check"]


def test_the_script_finds_the_hubs_image_and_is_valid_sh(
    checkout: Checkout, tmp_path: Path
) -> None:
    """The script the timer runs: the engine's socket of paths.docker_socket, the running
    hub's image, the repository's directory made, then one exec of the backup container."""
    s = load(checkout, "paths:\n  docker_socket: /run/other/docker.sock\n")
    text = databackup.script(s, "t")
    assert text.startswith("#!/bin/sh\n")
    assert "export DOCKER_HOST=unix:///run/other/docker.sock\n" in text
    assert "docker container inspect --format '{{.Image}}' hubops-t-hub" in text
    assert "install -d -m 700 /srv/jupyterhub/user-backups\n" in text
    last = text.splitlines()[-1]
    assert last.startswith("exec docker run --rm --name hubops-t-data-backup "), last
    assert ' "$image" -m hubops_hub.databackup ' in last
    assert last.endswith("backup --keep-last 3 --keep-daily 7 --keep-weekly 4 --keep-monthly 6"), (
        last
    )
    path = tmp_path / "script.sh"
    path.write_text(text)
    checked = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def test_the_timer_runs_the_script_on_the_schedule(checkout: Checkout) -> None:
    s = load(checkout, "backup:\n  schedule: Mon..Fri 22:30\npaths:\n  config_dir: /etc/jh 50%\n")
    found = databackup.units(s, "t")
    assert sorted(found) == ["hubops-data-backup-t.service", "hubops-data-backup-t.timer"]
    assert "OnCalendar=Mon..Fri 22:30\n" in found["hubops-data-backup-t.timer"]
    service = found["hubops-data-backup-t.service"]
    assert 'ExecStart=/bin/sh "/etc/jh 50%%/hubops-data-backup.sh"\n' in service
    assert "Type=oneshot" in service
    assert databackup.units(load(checkout, "backup:\n  schedule: null\n"), "t") == {}


# --- what restic says --------------------------------------------------------------------------

# restic 0.14.0's own output, as it prints it
NO_REPO = (
    "Fatal: unable to open config file: stat /backup-target/config: no such file or directory\n"
    "Is there a repository at the following location?\n/backup-target\n"
)
WRONG = "Fatal: wrong password or no key found\n"
REFUSED = (
    "subprocess ssh: ssh: connect to host 127.0.0.1 port 1: Connection refused\n"
    "Fatal: unable to open repository at sftp:b@127.0.0.1:/r: unable to start the sftp "
    "session, error: EOF\n"
)
UNKNOWN_KEY = (
    "subprocess ssh: Host key verification failed.\n"
    "Fatal: unable to open repository at sftp:b@nas:/r: unable to start the sftp session, "
    "error: EOF\n"
)


@pytest.mark.parametrize(
    ("stderr", "kind", "said"),
    [
        (NO_REPO, "missing", "Fatal: unable to open config file"),
        (WRONG, "wrong-password", "Fatal: wrong password or no key found"),
        (REFUSED, "unreachable", "ssh: connect to host 127.0.0.1 port 1: Connection refused"),
        (UNKNOWN_KEY, "host-key", "Host key verification failed."),
        ("Fatal: something else\n", "failed", "Fatal: something else"),
    ],
)
def test_restics_failures_are_told_apart(stderr: str, kind: str, said: str) -> None:
    found_kind, detail = inside.classify(stderr)
    assert found_kind == kind
    assert said in detail


def test_each_failure_is_one_line_that_names_what_to_change(checkout: Checkout) -> None:
    s = load(checkout, LAB_BACKUP.format(target="sftp:backup@nas.lab:/srv/restic"))
    lines = {
        kind: databackup.failure_line(s, "t", kind, inside.classify(err)[1])
        for kind, err in (
            ("wrong-password", WRONG),
            ("unreachable", REFUSED),
            ("host-key", UNKNOWN_KEY),
        )
    }
    assert all("\n" not in line for line in lines.values()), lines
    assert (
        "HUBOPS_BACKUP_PASSWORD or backup_password in config/secrets/t.yaml"
        in (lines["wrong-password"])
    )
    assert "/srv/jupyterhub/secrets/backup_password" in lines["wrong-password"]
    assert lines["unreachable"].startswith(
        "the backup target sftp:backup@nas.lab:/srv/restic does not answer (ssh: connect to "
    ), lines["unreachable"]
    assert "backup@nas.lab port 22" in lines["unreachable"]
    assert "ssh-keyscan -p 22 nas.lab >> /root/.ssh/known_hosts" in lines["host-key"]


def test_the_backup_summary_and_the_retention_options() -> None:
    out = '{"message_type":"status","percent_done":1}\n' + json.dumps(
        {"message_type": "summary", "snapshot_id": "d1c73992", "data_added": 2442}
    )
    assert inside.summary_of(out)["snapshot_id"] == "d1c73992"
    assert inside.forget_args({"last": 3, "daily": 0, "weekly": 4}) == [
        *("--keep-last", "3", "--keep-weekly", "4")
    ]


# --- the snapshot a restore takes --------------------------------------------------------------

T0 = datetime(2024, 5, 1, 3, 0, 2, tzinfo=timezone.utc)
SNAPS = [
    Snapshot("aa11" + "0" * 60, "aa110000", T0),
    Snapshot("bb22" + "0" * 60, "bb220000", T0 + timedelta(days=1)),
    Snapshot("bb33" + "0" * 60, "bb330000", T0 + timedelta(days=2)),
]


def test_restic_times_with_nanoseconds_and_offsets() -> None:
    assert restic_time("2024-05-01T03:00:02.123456789Z") == T0.replace(microsecond=123456)
    assert restic_time("2024-05-01T05:00:02+02:00") == T0
    found = snapshots([{"id": "x", "short_id": "x", "time": "2024-05-01T03:00:02Z"}])
    assert found == [Snapshot("x", "x", T0)]


def test_the_newest_at_or_before_the_time_or_the_newest() -> None:
    assert choose(SNAPS, None, "r").short_id == "bb330000"
    between = T0 + timedelta(days=1, hours=5)
    assert choose(SNAPS, between, "r").short_id == "bb220000"
    assert choose(SNAPS, T0 + timedelta(days=1), "r").short_id == "bb220000", "at is inclusive"
    assert choose(list(reversed(SNAPS)), between, "r").short_id == "bb220000"


def test_a_snapshot_id_or_a_unique_prefix_names_one() -> None:
    assert choose(SNAPS, "aa11", "r").short_id == "aa110000"
    with pytest.raises(BackupError, match=r"--at bb: 2 snapshots start with it"):
        choose(SNAPS, "bb", "r")
    with pytest.raises(BackupError, match=r"--at cc: no snapshot with that ID in r"):
        choose(SNAPS, "cc", "r")


def test_no_snapshot_and_a_time_before_the_first_are_one_line() -> None:
    with pytest.raises(BackupError, match=r"no snapshot of this environment in r: run invoke"):
        choose([], None, "r")
    with pytest.raises(BackupError) as caught:
        choose(SNAPS, T0 - timedelta(seconds=1), "r")
    assert str(caught.value) == (
        "--at 2024-05-01T03:00:01Z is before the first snapshot (aa110000, taken "
        "2024-05-01T03:00:02Z); give a later time"
    )


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("2024-05-01T14:30", datetime(2024, 5, 1, 14, 30, tzinfo=timezone.utc)),
        ("2024-05-01 16:30+02:00", datetime(2024, 5, 1, 14, 30, tzinfo=timezone.utc)),
        ("2024-05-01T14:30:00Z", datetime(2024, 5, 1, 14, 30, tzinfo=timezone.utc)),
        ("2024-05-01", datetime(2024, 5, 1, tzinfo=timezone.utc)),
        ("d1c73992", "d1c73992"),
    ],
)
def test_at_is_a_time_utc_unless_it_says_otherwise_or_an_id(
    text: str, expect: datetime | str
) -> None:
    assert parse_at(text) == expect


def test_an_at_that_is_neither_is_one_line() -> None:
    with pytest.raises(BackupError, match=r"--at 'yesterday': expected an ISO time"):
        parse_at("yesterday")
    assert stamp(T0) == "20240501T030002Z"


# --- the record, in the hub's metrics -----------------------------------------------------------


def scrape(collector: HubopsCollector) -> dict[str, float]:
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("hubops_user_backup_")
    }


def test_the_metrics_show_the_last_run_and_the_last_success(tmp_path: Path) -> None:
    record = str(tmp_path / inside.RECORD_NAME)
    collector = HubopsCollector(state_url="http://127.0.0.1:9/none", backup_record=record)
    assert scrape(collector) == {}, "no run yet: no backup metrics"
    inside.write_record(
        {
            "ok": True,
            "time": "2024-05-01T03:00:00Z",
            "last_success": "2024-05-01T03:00:09Z",
            "seconds": 9.5,
            "files": 120,
            "bytes": 4096,
            "bytes_added": 512,
        },
        record,
    )
    assert stat.S_IMODE(Path(record).stat().st_mode) == 0o600
    assert scrape(collector) == {
        "hubops_user_backup_last_run_ok": 1.0,
        "hubops_user_backup_last_run_timestamp_seconds": T0.timestamp() - 2,
        "hubops_user_backup_last_success_timestamp_seconds": T0.timestamp() + 7,
        "hubops_user_backup_last_duration_seconds": 9.5,
        "hubops_user_backup_last_files": 120.0,
        "hubops_user_backup_last_bytes": 4096.0,
        "hubops_user_backup_last_added_bytes": 512.0,
    }
    failed = {"ok": False, "time": "2024-05-02T03:00:00Z", "last_success": "2024-05-01T03:00:09Z"}
    inside.write_record({**failed, "error": "x"}, record)
    assert scrape(collector) == {
        "hubops_user_backup_last_run_ok": 0.0,
        "hubops_user_backup_last_run_timestamp_seconds": T0.timestamp() - 2 + 86400,
        "hubops_user_backup_last_success_timestamp_seconds": T0.timestamp() + 7,
    }
    line = databackup.describe({**failed, "error": "Fatal: wrong password or no key found"})
    assert line == (
        "2024-05-02T03:00:00Z FAILED: Fatal: wrong password or no key found (last success: "
        "2024-05-01T03:00:09Z)"
    )


# --- the password -------------------------------------------------------------------------------


def test_the_password_is_made_once_in_the_secrets_file(checkout: Checkout) -> None:
    s = environments.load(checkout.root, "local").settings
    made, first = secrets.backup_password(checkout.root, "local", s, environ={})
    assert first, "none given: made"
    path = secrets.secrets_file(checkout.root, "local")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again, second = secrets.backup_password(checkout.root, "local", s, environ={})
    assert not second, "there is one: used"
    assert again.get_secret_value() == made.get_secret_value()
    given = {"HUBOPS_BACKUP_PASSWORD": "from-the-environment-42"}
    value, _ = secrets.backup_password(checkout.root, "local", s, environ=given)
    assert value.get_secret_value() == "from-the-environment-42"
    with pytest.raises(SecretError, match=r"backup_password from environment variable .* is 5"):
        secrets.backup_password(
            checkout.root, "local", s, environ={"HUBOPS_BACKUP_PASSWORD": "short"}
        )


# --- host.prepare's timer and invoke status, on a scripted host --------------------------------


class Files:
    """The files of a scripted hub host: what the steps write (atomically, content on stdin)
    and read back."""

    def __init__(self, host: ScriptedHost) -> None:
        self.written: dict[str, str] = {}
        host.on(r"^umask 077; cat > ", answer=self.write_atomic)
        host.on(r"^mkdir -p \S+ && cat > \S+ && mv -f ", answer=self.write_atomic)
        host.on(r"^sha256sum \S+ 2>/dev/null \| cut -c1-64; echo ", answer=self.read_both)
        host.on(r"^cat (\S+) 2>/dev/null$", answer=self.cat)

    def write_atomic(self, command: str, stdin: str | None) -> str:
        path = re.search(r"mv -f \S+ (\S+)$", command)
        assert path is not None, command
        assert stdin is not None, command
        self.written[path.group(1)] = stdin
        return ""

    def cat(self, command: str, _stdin: str | None) -> tuple[int, str]:
        path = command.split()[1]
        return (0, self.written[path]) if path in self.written else (1, "")

    def read_both(self, command: str, _stdin: str | None) -> str:
        """The password file's digest, a mark, the script (databackup.install's one read)."""
        password, script = command.split()[1], command.split()[-2]
        found = self.written.get(password)
        return (
            (hashlib.sha256(found.encode()).hexdigest() + "\n" if found is not None else "")
            + f"{databackup.READ_MARK}\n"
            + self.written.get(script, "")
        )


def systemd_host(
    files: dict[str, str] | None = None, *, systemd: bool = True
) -> tuple[ScriptedHost, Files]:
    host = ScriptedHost()
    host.on(r"^systemd-analyze calendar ", "  Original form: *-*-* 03:00:00\n")
    host.on(r"^docker container inspect hubops-t-hub$", "[]\n", 1)  # no hub yet
    host.on(r"^install -d -m 700 /srv/jupyterhub /srv/jupyterhub/secrets && mkdir -p ", "")
    store = Files(host)
    store.written.update(files or {})
    enabled = "hubops-data-backup-t.timer" in str(files)
    host.on(r"^systemctl is-enabled hubops-data-backup-t\.timer$", "", 0 if enabled else 1)
    host.on(r"^systemctl daemon-reload && systemctl enable --now hubops-data-backup-t\.timer$")
    host.on(r"^test -d /run/systemd/system$", "", 0 if systemd else 1)
    return host, store


def test_host_prepare_installs_the_script_the_password_and_a_timer(checkout: Checkout) -> None:
    """A systemd host without a hub yet: the password (0600) and the script (0700) are
    written, then the service and the timer, which is enabled; a second run changes nothing."""
    s = load(checkout, "")
    password = SecretStr("a-backup-password-0123")
    host, store = systemd_host()
    report = PrepareReport(host.name)
    data_backup_timer(host, report, s, BackupTimer("t", password))
    assert report.changed == [
        "wrote the backup password to /srv/jupyterhub/secrets/backup_password",
        "wrote /etc/jupyterhub/hubops-data-backup.sh",
        "installed the backup timer hubops-data-backup-t.timer (*-*-* 03:00:00): it runs "
        "/etc/jupyterhub/hubops-data-backup.sh",
    ]
    assert store.written["/srv/jupyterhub/secrets/backup_password"] == password.get_secret_value()
    assert host.sent(r"chmod 0600 \S+backup_password\.hubops-tmp"), "the password is 0600"
    assert host.sent(r"chmod 0700 \S+hubops-data-backup\.sh\.hubops-tmp"), "the script is 0700"
    assert store.written["/etc/jupyterhub/hubops-data-backup.sh"] == databackup.script(s, "t")
    timer = "/etc/systemd/system/hubops-data-backup-t.timer"
    assert store.written[timer] == databackup.units(s, "t")["hubops-data-backup-t.timer"]
    assert not any(password.get_secret_value() in c for c in host.commands), "never on a line"

    again, _ = systemd_host(store.written)
    second = PrepareReport(again.name)
    data_backup_timer(again, second, s, BackupTimer("t", password))
    assert second.changed == []
    assert second.kept == [
        "backup timer hubops-data-backup-t.timer (*-*-* 03:00:00) runs "
        "/etc/jupyterhub/hubops-data-backup.sh"
    ]


def test_without_systemd_prepare_says_what_runs_the_backup(checkout: Checkout) -> None:
    s = load(checkout, "")
    host, _ = systemd_host(systemd=False)
    report = PrepareReport(host.name)
    data_backup_timer(host, report, s, BackupTimer("t", SecretStr("a-backup-password-0123")))
    assert report.kept == [
        "no systemd on this host, so no backup timer: run /etc/jupyterhub/hubops-data-backup.sh "
        "from the host's scheduler (e.g. cron: 0 3 * * * /bin/sh "
        "/etc/jupyterhub/hubops-data-backup.sh)"
    ]
    assert host.sent(r"^systemctl") == []


def test_status_shows_the_last_run(checkout: Checkout) -> None:
    plan, settings = planned(checkout, "local")
    record = {"ok": True, "time": "2024-05-01T03:00:00Z", "snapshot": "d1c73992", "files": 3}
    host = ScriptedHost().on(r"^id -un; id -u$", "root\n0\n")
    host.on(r"^cat /srv/jupyterhub/hubops-user-backup\.json 2>/dev/null$", json.dumps(record))
    host.on(r"^docker container inspect hubops-local-hub$", "[]\n", 1)
    host.on(r"^docker ps --all --quiet ", "")
    host.on(r"^ls -1 /srv/jupyterhub/backups", "", 2)
    host.on(r"^cat /srv/jupyterhub/hubops-disk-usage\.json$", "", 1)
    assert read_status(host, settings, plan).last_data_backup == record
    assert databackup.describe({**record, "bytes_added": 2_500_000, "seconds": 4.2}) == (
        "2024-05-01T03:00:00Z ok: snapshot d1c73992, 3 files (? new, ? changed), 2.5 MB added, "
        "4.2 s"
    )


def test_a_restore_of_an_unknown_user_is_one_line_and_asks_nothing_else(
    checkout: Checkout,
) -> None:
    """No directory for the user on the host: one line that says where it would be, before any
    container runs or any server is stopped."""
    plan, settings = planned(checkout, "local")
    host = ScriptedHost().on(r"^test -d /srv/jupyterhub-users/jupyterhub-user-zed$", "", 1)
    with pytest.raises(BackupError) as caught:
        restore(host, host, plan, settings, "local", "zed", "2024-05-01", in_place=True)
    assert str(caught.value) == (
        "no user 'zed' on scripted: there is no directory "
        "/srv/jupyterhub-users/jupyterhub-user-zed (it is made at the user's first login; a "
        "deleted user's files are archived in /srv/jupyterhub-users/.deleted/)"
    )
    assert len(host.commands) == 1
    with pytest.raises(BackupError, match=r"--user 'a\\x01b': user name 'a\\x01b' holds a control"):
        restore(host, host, plan, settings, "local", "a\x01b")
