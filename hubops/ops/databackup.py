"""``invoke data.backup``: the users' files backed up with restic, by one script on the hub host.

One code path. hubops renders a small POSIX sh script onto the hub host,
``<paths.config_dir>/hubops-data-backup.sh`` (root, 0700): it finds the running hub's image and
runs ``python3 -m hubops_hub.databackup backup`` in a one-shot container of it, as root, on the
host's own engine (the host needs nothing but Docker). That container makes the repository when
it is missing, runs restic backup of ``paths.user_data_dir`` (every user's directory, and the
``.deleted/`` archives) and restic forget --prune with the retention, and writes the run's
record to ``<paths.data_dir>/hubops-user-backup.json``, which ``invoke status`` and the hub's
/hub/metrics read. ``invoke data.backup`` installs (refreshes) the script and the password file
and runs the script; ``invoke host.prepare`` installs a systemd timer whose service runs the
same script (:func:`units`).

Bad input changes nothing: before it writes anything, ``data.backup`` asks the target, in the
same kind of container, whether the repository opens with the password it would install. A
target that does not answer, a host key that is not known, or a repository that the password
does not open is one line (:func:`failure_line`), and the host is left as it was.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass
from typing import Any

from hubops_hub.databackup import (
    DATA,
    LOCAL_REPOSITORY,
    PASSWORD_NAME,
    RECORD_NAME,
    SSH_DIR,
    USERS,
)
from hubops_hub.labels import LABEL_ENV, LABEL_ROLE
from pydantic import SecretStr

from hubops.config.secrets import BACKUP_PASSWORD, SECRETS_DIR
from hubops.config.settings import Environment, sftp_target
from hubops.deploy.state import write_atomic
from hubops.errors import BackupError
from hubops.host import docker as dockerhost
from hubops.host.base import Host, quote
from hubops.plan.refs import names

SCRIPT_NAME = "hubops-data-backup.sh"  # in paths.config_dir
DEFAULT_REPOSITORY = "user-backups"  # in paths.data_dir, when backup.target is unset
ROLE = "data-backup"  # the one-shot containers' org.hubops.role
# root in the container, but only what reading every user's files and restoring their owners,
# modes and times needs
CAPS = ["CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID"]
# ssh for an sftp target: the key and known_hosts of backup.*, never a prompt, and fail fast
# when the backup host does not answer (restic would wait on ssh otherwise)
SSH_OPTIONS = (
    "-o BatchMode=yes -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes "
    "-o ConnectTimeout=10 -o ServerAliveInterval=30 -o ServerAliveCountMax=4"
)
RUN_TIMEOUT = 24 * 3600.0  # a first backup of a large lab takes hours
READ_MARK = "=== hubops: the script"
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


# --- where things are (pure) -----------------------------------------------------------------


def script_path(settings: Environment) -> str:
    return f"{settings.paths.config_dir}/{SCRIPT_NAME}"


def password_path(settings: Environment) -> str:
    return f"{settings.paths.data_dir}/secrets/{PASSWORD_NAME}"


def record_path(settings: Environment) -> str:
    return f"{settings.paths.data_dir}/{RECORD_NAME}"


def local_repository(settings: Environment) -> str | None:
    """The repository's directory on the hub host (None: an sftp target)."""
    target = settings.backup.target
    if target is None:
        return f"{settings.paths.data_dir}/{DEFAULT_REPOSITORY}"
    return None if sftp_target(target) else target


def repository(settings: Environment) -> str:
    """The repository as restic in the container names it."""
    return LOCAL_REPOSITORY if local_repository(settings) else str(settings.backup.target)


def shown_repository(settings: Environment) -> str:
    """The repository as the operator names it (a path on the hub host, or sftp:...)."""
    return local_repository(settings) or str(settings.backup.target)


def snapshot_host(env: str) -> str:
    """The name restic records as the snapshots' host: one repository may hold several
    environments' snapshots, and each sees, forgets and restores only its own."""
    return f"hubops-{env}"


def run_name(env: str, what: str = "backup") -> str:
    """The one-shot container's name: two backups (or two restores) never run at once."""
    return f"hubops-{env}-data-{what}"


def unit_name(env: str) -> str:
    return f"hubops-data-backup-{env}"


def sftp_command(settings: Environment) -> str | None:
    """restic's sftp.command for an sftp target (the key and known_hosts as mounted)."""
    target = settings.backup.target
    found = sftp_target(target) if target else None
    if found is None:
        return None
    user, host, _ = found
    return (
        f"ssh -i {SSH_DIR}/id -o UserKnownHostsFile={SSH_DIR}/known_hosts {SSH_OPTIONS} "
        f"-p {settings.backup.ssh_port} {user}@{host.strip('[]')} -s sftp"
    )


def keep_args(settings: Environment) -> list[str]:
    b = settings.backup
    keep = {"last": b.keep_last, "daily": b.keep_daily, "weekly": b.keep_weekly}
    keep["monthly"] = b.keep_monthly
    return [arg for kind, n in keep.items() for arg in (f"--keep-{kind}", str(n))]


def docker_run(
    settings: Environment,
    env: str,
    image: str,
    command: str,
    *args: str,
    name: str | None = None,
    users_writable: bool = False,
    password_stdin: bool = False,
) -> list[str]:
    """The ``docker run`` of a one-shot container of the hub image (``image``) that runs
    ``python3 -m hubops_hub.databackup ... COMMAND ARGS`` as root: the users' directories at
    /users (read-only unless ``users_writable``), the hub's data directory, the repository or
    the SSH files of an sftp target; no network for a repository on the host, the host's for
    sftp."""
    p = settings.paths
    local = local_repository(settings)
    users = f"type=bind,source={p.user_data_dir},target={USERS}"
    mounts = [
        users if users_writable else f"{users},readonly",
        f"type=bind,source={p.data_dir},target={DATA}",
    ]
    if local:
        mounts.append(f"type=bind,source={local},target={LOCAL_REPOSITORY}")
    else:
        b = settings.backup
        mounts += [
            f"type=bind,source={b.ssh_identity},target={SSH_DIR}/id,readonly",
            f"type=bind,source={b.ssh_known_hosts},target={SSH_DIR}/known_hosts,readonly",
        ]
    sftp = sftp_command(settings)
    return [
        "docker",
        "run",
        "--rm",
        *(["--name", name] if name else []),
        *(["--interactive"] if password_stdin else []),
        "--user",
        "0:0",
        "--hostname",
        f"{snapshot_host(env)}-{ROLE}",
        "--network",
        "none" if local else "host",
        "--label",
        f"{LABEL_ENV}={env}",
        "--label",
        f"{LABEL_ROLE}={ROLE}",
        "--cap-drop",
        "ALL",
        *(arg for cap in CAPS for arg in ("--cap-add", cap)),
        "--security-opt",
        "no-new-privileges",
        *(arg for m in mounts for arg in ("--mount", m)),
        "--entrypoint",
        "python3",
        image,
        "-m",
        "hubops_hub.databackup",
        "--repo",
        repository(settings),
        "--host",
        snapshot_host(env),
        *(["--sftp-command", sftp] if sftp else []),
        *(["--password-stdin"] if password_stdin else []),
        command,
        *args,
    ]


def script(settings: Environment, env: str) -> str:
    """The script on the hub host: ``invoke data.backup`` and the systemd timer run it."""
    hub = names(env)["hub"]
    local = local_repository(settings)
    argv = docker_run(settings, env, "IMAGE", "backup", *keep_args(settings), name=run_name(env))
    run = quote(*argv).replace(" IMAGE ", ' "$image" ')
    lines = [
        "#!/bin/sh",
        f"# hubops: back up the users' files of environment {env} ({settings.paths.user_data_dir})",
        f"# to {shown_repository(settings)} with restic. Made by `invoke data.backup` and `invoke",
        "# host.prepare`, which overwrite it: change backup.* in the environment file instead.",
        f"# The systemd timer {unit_name(env)}.timer runs it. restic runs in a one-shot",
        "# container of the running hub's image, as root: the repository is made when missing,",
        "# then restic backup, then restic forget --prune; the record of the run goes to",
        f"# {record_path(settings)} (invoke status, the hub's /hub/metrics).",
        "set -eu",
        f"PATH={HOST_PATH}",
        f"export DOCKER_HOST={quote('unix://' + settings.paths.docker_socket)}",
        "if ! image=$(docker container inspect --format '{{.Image}}' "
        f"{quote(hub)} 2>/dev/null); then",
        f"    echo {quote(f'error: there is no container {hub} on this host: deploy {env} first')}"
        " >&2",
        "    exit 2",
        "fi",
        *([f"install -d -m 700 {quote(local)}"] if local else []),
        f"exec {run}",
    ]
    return "\n".join(lines) + "\n"


def _systemd_quote(path: str) -> str:
    escaped = path.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'"{escaped}"'


def units(settings: Environment, env: str) -> dict[str, str]:
    """The systemd service that runs the script, and the timer that starts it (unit file name ->
    text); {} without backup.schedule."""
    schedule = settings.backup.schedule
    if schedule is None:
        return {}
    name = unit_name(env)
    service = "\n".join(
        [
            "# Made by `invoke host.prepare` (hubops); change backup.* in the environment file.",
            "[Unit]",
            f"Description=hubops: back up the users' files of {env} (restic)",
            "Wants=docker.service",
            "After=docker.service network-online.target",
            "",
            "[Service]",
            "Type=oneshot",
            f"ExecStart=/bin/sh {_systemd_quote(script_path(settings))}",
            "Nice=10",
            "IOSchedulingClass=idle",
            "",
        ]
    )
    timer = "\n".join(
        [
            "# Made by `invoke host.prepare` (hubops); change backup.schedule instead.",
            "[Unit]",
            f"Description=hubops: back up the users' files of {env} ({schedule})",
            "",
            "[Timer]",
            f"OnCalendar={schedule}",
            "Persistent=true",
            "",
            "[Install]",
            "WantedBy=timers.target",
            "",
        ]
    )
    return {f"{name}.service": service, f"{name}.timer": timer}


# --- what a run says (pure) ------------------------------------------------------------------


def failure_line(settings: Environment, env: str, kind: str | None, error: str | None) -> str:
    """One line for a failed check, backup or restore: what failed, restic's or ssh's words,
    and what to change."""
    repo = shown_repository(settings)
    said = error or "no output"
    b = settings.backup
    found = sftp_target(b.target) if b.target else None
    where = f"{found[0]}@{found[1]} port {b.ssh_port}" if found else repo
    if kind == "wrong-password":
        return (
            f"the backup password does not open the repository {repo} ({said}); give the "
            f"password it was made with as {BACKUP_PASSWORD.env_var} or backup_password in "
            f"{SECRETS_DIR / (env + '.yaml')} (the hub host keeps the one in use in "
            f"{password_path(settings)}), or point backup.target at another place"
        )
    if kind == "unreachable":
        return (
            f"the backup target {repo} does not answer ({said}); check that {where} is up "
            "and reachable from the hub host (backup.target, backup.ssh_port)"
        )
    if kind == "host-key":
        return (
            f"the backup host's SSH key is not the one in backup.ssh_known_hosts "
            f"({b.ssh_known_hosts} on the hub host) ({said}); after checking its fingerprint, "
            f"add it there: ssh-keyscan -p {b.ssh_port} {found[1] if found else 'HOST'} >> "
            f"{b.ssh_known_hosts}"
        )
    if kind == "login":
        return (
            f"{where} refuses the login with backup.ssh_identity ({b.ssh_identity}) ({said}); "
            f"add its public key to the authorized_keys of {found[0] if found else 'the user'} "
            "there"
        )
    if kind == "locked":
        return (
            f"the repository {repo} is locked by another restic run ({said}); wait for it to "
            "end (a lock left by a run that was killed goes after 30 minutes)"
        )
    return f"the backup container failed on {repo}: {said}"


def describe(record: dict[str, Any]) -> str:
    """A run's record in one line (``invoke data.backup``, ``invoke status``)."""
    when = record.get("time", "?")
    if not record.get("ok"):
        last = record.get("last_success")
        return (
            f"{when} FAILED: {record.get('error') or record.get('kind') or '?'}"
            f" (last success: {last or 'never'})"
        )
    added = record.get("bytes_added")
    return (
        f"{when} ok: snapshot {record.get('snapshot', '?')}, {record.get('files', '?')} files "
        f"({record.get('files_new', '?')} new, {record.get('files_changed', '?')} changed), "
        f"{_size(added) if isinstance(added, int) else '?'} added, "
        f"{record.get('seconds', '?')} s"
    )


def _size(n: int) -> str:
    for unit, size in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def last_json(stdout: str) -> dict[str, Any] | None:
    """The JSON object a hubops_hub.databackup command printed last, if any."""
    for line in reversed(stdout.strip().splitlines()):
        try:
            found = json.loads(line)
        except ValueError:
            continue
        if isinstance(found, dict):
            return found
    return None


# --- on the host ------------------------------------------------------------------------------


def applies(settings: Environment) -> bool:
    """Whether the users' files are paths.user_data_dir on the hub host: one host, or a swarm
    whose nodes share that path (not a cluster's volumes)."""
    return settings.cluster == "docker" or (
        settings.cluster == "swarm" and settings.swarm.user_data == "path"
    )


def supported(settings: Environment, env: str) -> None:
    if not applies(settings):
        raise BackupError(
            f"{env}: the users' files are volumes of the cluster, not paths.user_data_dir on "
            "the hub host; back them up with the cluster's own tools (the storage's "
            "snapshots, Velero)"
        )


def hub_image(host: Host, env: str) -> str:
    """The image of the environment's hub container: the one-shot containers run it."""
    hub = names(env)["hub"]
    found = dockerhost.inspect(host, "container", hub)
    if found is None:
        raise BackupError(f"{host.name}: there is no container {hub}: deploy {env} first")
    return str(found["Image"])


def run_module(
    host: Host, argv: list[str], stdin: str | None = None, timeout: float = 600
) -> dict[str, Any]:
    """Run a one-shot container; what hubops_hub.databackup printed (ok, or kind and error)."""
    done = host.run(quote(*argv), check=False, stdin=stdin, timeout=timeout)
    found = last_json(done.stdout)
    if found is None:
        tail = (done.stderr or done.stdout).strip()[-400:]
        if "No module named hubops_hub.databackup" in tail:
            tail = "the hub's image has no hubops_hub.databackup: deploy this version of hubops"
        elif "is already in use" in tail:
            tail = "another run of it holds the container's name; wait for it to end"
        raise BackupError(f"{host.name}: the backup container failed: {tail}")
    return found


def check_target(
    host: Host, files: Host, settings: Environment, env: str, image: str, password: SecretStr
) -> str:
    """Whether the repository ``exists`` and opens with ``password``, or is ``missing`` (it
    will be made); one clear line for anything else. Changes nothing."""
    local = local_repository(settings)
    if local and not files.run(f"test -d {quote(local)}", check=False).ok:
        return "missing"
    argv = docker_run(settings, env, image, "check", password_stdin=True)
    found = run_module(host, argv, stdin=password.get_secret_value() + "\n", timeout=120)
    if not found.get("ok"):
        raise BackupError(
            f"{host.name}: "
            + failure_line(settings, env, found.get("kind"), found.get("error"))
            + "; nothing was changed"
        )
    return str(found.get("repository"))


@dataclass(frozen=True)
class Installed:
    changed: list[str]  # what was written


def install(
    host: Host,
    files: Host,
    settings: Environment,
    env: str,
    password: SecretStr,
    image: str | None,
) -> Installed:
    """The password file and the script on the hub host, written where they differ. With a
    different password (or an sftp target) the target is asked first (``image``: the hub
    image; None: the host has no hub yet, nothing can be asked), and a bad one changes nothing."""
    pw_path, path = password_path(settings), script_path(settings)
    # one read (for a deploy user that is not root, each is a helper container): the
    # password's digest, then the script as it is
    found = files.run(
        f"sha256sum {quote(pw_path)} 2>/dev/null | cut -c1-64; echo {quote(READ_MARK)}; "
        f"cat {quote(path)} 2>/dev/null",
        check=False,
    ).stdout
    digest, _, current = found.partition(f"{READ_MARK}\n")
    wanted = hashlib.sha256(password.get_secret_value().encode()).hexdigest()
    same = digest.strip() == wanted
    if image is not None and (not same or local_repository(settings) is None):
        check_target(host, files, settings, env, image, password)
    changed: list[str] = []
    text = script(settings, env)
    if same and current == text:
        return Installed(changed)
    d = settings.paths.data_dir
    files.run(
        f"install -d -m 700 {quote(d)} {quote(d + '/secrets')} && "
        f"mkdir -p {quote(posixpath.dirname(path))}"
    )
    if not same:
        write_atomic(files, pw_path, password.get_secret_value(), mode="0600")
        changed.append(f"wrote the backup password to {pw_path}")
    if current != text:
        write_atomic(files, path, text, mode="0700")
        changed.append(f"wrote {path}")
    return Installed(changed)


def run_script(files: Host, settings: Environment, env: str) -> dict[str, Any]:
    """Run the script on the hub host, as the timer does; the run's record."""
    path = script_path(settings)
    done = files.run(quote("/bin/sh", path), check=False, timeout=RUN_TIMEOUT)
    found = last_json(done.stdout)
    if found is None:
        tail = (done.stderr or done.stdout).strip()[-400:]
        if "is already in use" in tail:
            tail = "another backup of this environment runs now; wait for it to end"
        raise BackupError(f"{files.name}: {path} failed: {tail}")
    if not found.get("ok"):
        raise BackupError(
            f"{files.name}: " + failure_line(settings, env, found.get("kind"), found.get("error"))
        )
    return found


def backup(
    host: Host, files: Host, settings: Environment, env: str, password: SecretStr
) -> tuple[Installed, dict[str, Any]]:
    """``invoke data.backup``: check the target, install the password and the script, run it."""
    supported(settings, env)
    image = hub_image(host, env)
    installed = install(host, files, settings, env, password, image)
    return installed, run_script(files, settings, env)


def read_record(files: Host, settings: Environment) -> dict[str, Any] | None:
    """The last run's record on the hub host (None: no run yet)."""
    found = files.run(f"cat {quote(record_path(settings))} 2>/dev/null", check=False)
    if not found.ok:
        return None
    try:
        record = json.loads(found.stdout)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None
