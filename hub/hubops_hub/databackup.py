"""Users' files backed up with restic: what runs inside the one-shot container of the hub image.

hubops starts this module as root in a container of the hub's own image on the hub host's
engine (``python3 -m hubops_hub.databackup ...``), so the host needs nothing but Docker: the
users' directories (``paths.user_data_dir``) are mounted at :data:`USERS`, the hub's data
directory at :data:`DATA` (the password file, the run record, restic's cache) and a local
repository at :data:`LOCAL_REPOSITORY`. Each command prints one JSON object on stdout and exits
0 when it worked, 1 when not; ``kind`` and ``error`` then say why, in restic's or ssh's own
words (hubops turns them into one line that names the setting to change).

- ``check``: does the repository open with this password (``missing``: there is none yet)?
  Changes nothing.
- ``backup``: the repository is made when missing, then ``restic backup`` of :data:`USERS`
  (incremental, deduplicated, encrypted), then ``restic forget --prune`` with the retention;
  every run, failed or not, is written to :data:`RECORD` (the hub's metrics and ``invoke
  status`` read it), keeping the time of the last success.
- ``snapshots``: this environment's snapshots, oldest first.
- ``restore``: one user's directory from one snapshot, into a directory of root's beside the
  users' directories (:data:`RESTORE_PREFIX`), then moved into place with rename(2): as
  ``restored-<UTC time>/`` inside the user's own directory, or (``--in-place``) swapped for the
  directory itself; a failure leaves the user's files as they were.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

DATA = "/srv/jupyterhub"  # paths.data_dir in the container (as in the hub: HUB_DATA_DIR)
RECORD_NAME = "hubops-user-backup.json"  # the last run, in paths.data_dir
RECORD = f"{DATA}/{RECORD_NAME}"
PASSWORD_NAME = "backup_password"  # in <data_dir>/secrets/
PASSWORD_FILE = f"{DATA}/secrets/{PASSWORD_NAME}"
CACHE = f"{DATA}/user-backups-cache"  # restic's cache: an incremental run reads no old pack
USERS = "/users"  # paths.user_data_dir in the container: the path the snapshots hold
LOCAL_REPOSITORY = "/backup-target"  # a repository on the hub host, mounted here
SSH_DIR = "/run/hubops-backup"  # an sftp target's identity and known_hosts, mounted here
RESTORE_PREFIX = ".hubops-restore-"  # root's work directories in paths.user_data_dir
EXCLUDES = (f"{USERS}/{RESTORE_PREFIX}*",)

# restic 0.14's words for each failure (it has one exit code for all of them)
NO_REPOSITORY = ("unable to open config file", "Is there a repository at the following location")
WRONG_PASSWORD = ("wrong password or no key found",)
HOST_KEY = ("Host key verification failed", "REMOTE HOST IDENTIFICATION HAS CHANGED")
REFUSED_LOGIN = ("Permission denied",)
UNREACHABLE = (
    "Connection refused",
    "Connection timed out",
    "No route to host",
    "Could not resolve hostname",
    "Network is unreachable",
    "unable to start the sftp session",
    "connection closed",
)
LOCKED = ("repository is already locked",)


def classify(stderr: str) -> tuple[str, str]:
    """(kind, the lines that say why) of a failed restic command: ``missing`` (no repository
    there), ``wrong-password``, ``host-key``, ``login``, ``unreachable``, ``locked`` or
    ``failed``."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    said = [line for line in lines if line.startswith(("ssh:", "Fatal:", "subprocess ssh:"))]
    detail = "; ".join(said or lines[-2:]) or "no output"
    detail = detail.replace("subprocess ssh: ", "")
    for kind, words in (
        ("wrong-password", WRONG_PASSWORD),
        ("host-key", HOST_KEY),
        ("login", REFUSED_LOGIN),
        ("unreachable", UNREACHABLE),
        ("locked", LOCKED),
        ("missing", NO_REPOSITORY),
    ):
        if any(w in stderr for w in words):
            return kind, detail[-500:]
    return "failed", detail[-500:]


class Failed(Exception):
    def __init__(self, kind: str, error: str) -> None:
        super().__init__(error)
        self.kind = kind
        self.error = error


Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False)


class Restic:
    """restic against one repository, as one environment (``--host``)."""

    def __init__(
        self, repository: str, host: str, sftp_command: str | None = None, run: Runner = _run
    ) -> None:
        self.repository = repository
        self.host = host
        self.sftp_command = sftp_command
        self.runner = run

    def argv(self, *args: str) -> list[str]:
        options = ["-o", f"sftp.command={self.sftp_command}"] if self.sftp_command else []
        return ["restic", "--repo", self.repository, "--cache-dir", CACHE, *options, *args]

    def run(self, *args: str, quiet: bool = True) -> subprocess.CompletedProcess[str]:
        return self.runner(self.argv(*(["--quiet"] if quiet else []), *args))

    def must(self, *args: str) -> str:
        done = self.run(*args)
        if done.returncode != 0:
            raise Failed(*classify(done.stderr))
        return done.stdout

    def opens(self) -> bool:
        """Whether the repository opens (False: there is none); raises for anything else."""
        done = self.run("cat", "config")
        if done.returncode == 0:
            return True
        kind, error = classify(done.stderr)
        if kind == "missing":
            return False
        raise Failed(kind, error)

    def snapshots(self) -> list[dict[str, Any]]:
        found = json.loads(self.must("snapshots", "--json", "--host", self.host) or "[]")
        return sorted(
            ({"id": s["id"], "short_id": s["short_id"], "time": s["time"]} for s in found),
            key=lambda s: str(s["time"]),
        )


def forget_args(keep: dict[str, int]) -> list[str]:
    """``restic forget`` options for the retention (only the kinds that keep something)."""
    out = []
    for kind in ("last", "daily", "weekly", "monthly"):
        if keep.get(kind):
            out += [f"--keep-{kind}", str(keep[kind])]
    return out


def summary_of(stdout: str) -> dict[str, Any]:
    """The summary line of ``restic backup --json``."""
    for line in reversed(stdout.splitlines()):
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and item.get("message_type") == "summary":
            return item
    raise Failed("failed", "restic backup printed no summary")


def now_iso(when: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if when is None else when))


def read_record(path: str = RECORD) -> dict[str, Any] | None:
    """The last run's record, or None when there is none (or it cannot be read)."""
    try:
        with open(path, encoding="utf-8") as f:
            found = json.load(f)
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def write_record(record: dict[str, Any], path: str = RECORD) -> None:
    tmp = f"{path}.tmp"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        json.dump(record, f, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def backup(restic: Restic, keep: dict[str, int], record: str = RECORD) -> dict[str, Any]:
    """Make the repository when missing, back up, forget and prune; the run's record."""
    started = time.time()
    last = read_record(record) or {}
    out: dict[str, Any] = {
        "time": now_iso(started),
        "repository": restic.repository,
        "last_success": last.get("last_success"),
    }
    # every restic command derives the key again (scrypt, ~0.5 s): a run asks for nothing it
    # does not need, and makes the repository or clears stale locks only when restic says so
    args = ("backup", "--json", "--host", restic.host, *(f"--exclude={p}" for p in EXCLUDES))
    try:
        done = restic.run(*args, USERS, quiet=False)
        if done.returncode not in (0, 3) and classify(done.stderr)[0] == "missing":
            restic.must("init")
            out["initialised"] = True
            done = restic.run(*args, USERS, quiet=False)
        # 3: the snapshot was made, but some files could not be read (they were named)
        if done.returncode not in (0, 3):
            raise Failed(*classify(done.stderr))
        summary = summary_of(done.stdout)
        out.update(
            snapshot=summary.get("snapshot_id"),
            files=summary.get("total_files_processed"),
            files_new=summary.get("files_new"),
            files_changed=summary.get("files_changed"),
            bytes=summary.get("total_bytes_processed"),
            bytes_added=summary.get("data_added"),
        )
        if done.returncode == 3:
            out["warning"] = "some files could not be read: " + classify(done.stderr)[1]
        forget = ("forget", "--prune", "--host", restic.host, *forget_args(keep))
        pruned = restic.run(*forget)
        if pruned.returncode != 0 and classify(pruned.stderr)[0] == "locked":
            restic.run("unlock")  # only locks restic itself calls stale (a killed run's)
            pruned = restic.run(*forget)
        if pruned.returncode != 0:
            raise Failed(*classify(pruned.stderr))
        out.update(ok=True, error=None, kind=None, last_success=now_iso())
    except Failed as exc:
        out.update(ok=False, error=exc.error, kind=exc.kind)
    except OSError as exc:  # restic itself missing: an image of an older hubops
        out.update(ok=False, error=str(exc), kind="failed")
    out["seconds"] = round(time.time() - started, 3)
    write_record(out, record)
    return out


def restore(
    restic: Restic, snapshot: str, directory: str, stamp: str, in_place: bool, users: str = USERS
) -> dict[str, Any]:
    """Restore ``<users>/<directory>`` from ``snapshot``; where it went."""
    if "/" in directory or directory in ("", ".", "..") or directory.startswith("."):
        raise Failed("bad-directory", f"not a user directory name: {directory!r}")
    current = os.path.join(users, directory)
    if os.path.islink(current) or not os.path.isdir(current):
        raise Failed("no-directory", f"{current} is not a directory")
    listed = restic.must("ls", "--json", snapshot, USERS)
    names = set()
    for line in listed.splitlines():
        try:
            node = json.loads(line)
        except ValueError:
            continue
        if node.get("struct_type") == "node" and node.get("type") == "dir":
            names.add(node.get("name"))
    if directory not in names:
        raise Failed("not-in-snapshot", f"snapshot {snapshot} holds no {USERS}/{directory}")
    work = os.path.join(users, f"{RESTORE_PREFIX}{directory}-{stamp}")
    os.mkdir(work, 0o700)  # root's, beside the users' directories: no user can reach in
    try:
        restic.must("restore", snapshot, "--target", work, "--include", f"{USERS}/{directory}")
        got = os.path.join(work, USERS.lstrip("/"), directory)
        if not os.path.isdir(got):
            raise Failed("failed", f"restic restored nothing of {USERS}/{directory}")
        if in_place:
            old = f"{work}-old"
            os.rename(current, old)
            try:
                os.rename(got, current)
            except OSError:
                os.rename(old, current)
                raise
            shutil.rmtree(old)
            path = current
        else:
            path = os.path.join(current, f"restored-{stamp}")
            # rename(2) does not follow a symlink the user may have put at that name: it
            # fails on one (ENOTDIR), as on a file or a non-empty directory of that name
            os.rename(got, path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"path": path}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m hubops_hub.databackup")
    parser.add_argument("--repo", required=True)
    parser.add_argument("--host", required=True, help="the environment's name in the snapshots")
    parser.add_argument("--sftp-command", default=None)
    parser.add_argument(
        "--password-stdin", action="store_true", help="the password on stdin, not in the file"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check")
    sub.add_parser("snapshots")
    b = sub.add_parser("backup")
    for kind in ("last", "daily", "weekly", "monthly"):
        b.add_argument(f"--keep-{kind}", type=int, default=0)
    r = sub.add_parser("restore")
    r.add_argument("--snapshot", required=True)
    r.add_argument("--directory", required=True)
    r.add_argument("--stamp", required=True)
    r.add_argument("--in-place", action="store_true")
    args = parser.parse_args(argv)
    if args.password_stdin:
        os.environ["RESTIC_PASSWORD"] = sys.stdin.read().rstrip("\n")
        os.environ.pop("RESTIC_PASSWORD_FILE", None)
    else:
        os.environ.setdefault("RESTIC_PASSWORD_FILE", PASSWORD_FILE)
    restic = Restic(args.repo, args.host, args.sftp_command)
    out: dict[str, Any]
    try:
        if args.command == "check":
            out = {"ok": True, "repository": "exists" if restic.opens() else "missing"}
        elif args.command == "snapshots":
            out = {"ok": True, "snapshots": restic.snapshots()}
        elif args.command == "backup":
            keep = {k: getattr(args, f"keep_{k}") for k in ("last", "daily", "weekly", "monthly")}
            out = backup(restic, keep)
        else:
            out = {
                "ok": True,
                **restore(restic, args.snapshot, args.directory, args.stamp, args.in_place),
            }
    except Failed as exc:
        out = {"ok": False, "kind": exc.kind, "error": exc.error}
    except OSError as exc:
        out = {"ok": False, "kind": "failed", "error": str(exc)}
    print(json.dumps(out, sort_keys=True), flush=True)
    return 0 if out.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
