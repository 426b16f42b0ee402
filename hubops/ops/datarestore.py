"""``invoke data.restore``: one user's files back from the restic repository of ``data.backup``.

The snapshot is the newest at or before ``--at`` (an ISO time, UTC unless it says otherwise, or
a snapshot ID; :func:`choose`, pure), the newest without it. The files are restored by the
same kind of one-shot container of the hub image as the backups (hubops.ops.databackup), into a
directory of root's beside the users' directories, then moved into place with one rename:

- by default to ``<user's directory>/restored-<UTC time>/``, owners and modes as in the
  backup; the user's other files, and every other user's, are not touched;
- with ``--in-place`` the user's server is stopped first, through the hub's API (the hub's
  ``hubops-ops`` service token, used from inside the hub container: it never leaves the host),
  then the restored directory takes the place of the user's directory. A failure before that
  swap leaves the old files as they were.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from hubops_hub.databackup import USERS
from hubops_hub.userdirs import USER_DIR_PREFIX, escape_username

from hubops.config.secrets import OPS_TOKEN
from hubops.config.settings import Environment
from hubops.deploy.health import health_urls
from hubops.errors import BackupError
from hubops.host.base import Host, quote
from hubops.ops.databackup import (
    docker_run,
    failure_line,
    hub_image,
    password_path,
    run_module,
    run_name,
    shown_repository,
    supported,
)
from hubops.plan.model import HUB_SECRETS_DIR, Plan

SNAPSHOT_ID = re.compile(r"[0-9a-f]{4,64}")


@dataclass(frozen=True)
class Snapshot:
    id: str
    short_id: str
    time: datetime


def restic_time(text: str) -> datetime:
    """A time as restic writes it (RFC 3339 with up to nine fractional digits)."""
    found = re.fullmatch(
        r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text.strip()
    )
    if found is None:
        raise BackupError(f"restic gave a snapshot time hubops cannot read: {text!r}")
    whole, fraction, zone = found.groups()
    micro = (fraction or "0")[:6].ljust(6, "0")
    return datetime.fromisoformat(f"{whole}.{micro}{'+00:00' if zone == 'Z' else zone}")


def snapshots(items: list[dict[str, Any]]) -> list[Snapshot]:
    found = [Snapshot(str(s["id"]), str(s["short_id"]), restic_time(str(s["time"]))) for s in items]
    return sorted(found, key=lambda s: s.time)


def parse_at(text: str) -> datetime | str:
    """``--at``: a snapshot ID (hex, 4 to 64 digits) or an ISO time (a date alone is its
    midnight; no offset means UTC)."""
    value = text.strip()
    if SNAPSHOT_ID.fullmatch(value) and not value.isdigit():
        return value
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "T", 1))
    except ValueError:
        raise BackupError(
            f"--at {text!r}: expected an ISO time such as 2024-05-01T14:30 (UTC unless it "
            "has an offset such as +02:00), a date, or a snapshot ID (invoke status shows "
            "the last one)"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def utc(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def choose(found: list[Snapshot], at: datetime | str | None, repo: str) -> Snapshot:
    """The newest snapshot at or before ``at`` (a time), the one ``at`` names (an ID), or the
    newest; one clear line when there is none."""
    if not found:
        raise BackupError(
            f"there is no snapshot of this environment in {repo}: run invoke data.backup first"
        )
    ordered = sorted(found, key=lambda s: s.time)
    if at is None:
        return ordered[-1]
    if isinstance(at, str):
        named = [s for s in ordered if s.id.startswith(at)]
        if len(named) == 1:
            return named[0]
        if named:
            raise BackupError(
                f"--at {at}: {len(named)} snapshots start with it "
                f"({', '.join(s.short_id for s in named)}); give more of the ID"
            )
        raise BackupError(
            f"--at {at}: no snapshot with that ID in {repo}; the snapshots: "
            + ", ".join(f"{s.short_id} ({utc(s.time)})" for s in ordered[-10:])
        )
    before = [s for s in ordered if s.time <= at]
    if not before:
        first = ordered[0]
        raise BackupError(
            f"--at {utc(at)} is before the first snapshot ({first.short_id}, taken "
            f"{utc(first.time)}); give a later time"
        )
    return before[-1]


def stamp(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


# Run in the hub container: stop every server of a user through the hub's API with the ops
# service's token, and wait until the hub says they are gone. argv: API URL, user, token file,
# seconds. Prints one JSON object: state "stopped", "not-running", "unknown-user" or "error".
STOP_SERVERS = """
import json, sys, time, urllib.error, urllib.parse, urllib.request
api, user, token_file, timeout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
try:
    token = open(token_file).read().strip()
except OSError as exc:
    print(json.dumps({"state": "error", "detail": "no-token: " + str(exc)})); sys.exit(1)
name = urllib.parse.quote(user, safe="")
def call(method, path):
    req = urllib.request.Request(api + path, method=method,
                                 headers={"Authorization": "token " + token})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read()
            return r.status, json.loads(body) if body else None
    except urllib.error.HTTPError as exc:
        return exc.code, None
def servers():
    code, model = call("GET", "/users/" + name)
    if code == 404:
        return None
    if code != 200:
        print(json.dumps({"state": "error", "detail": f"GET /users/{user}: HTTP {code}"}))
        sys.exit(1)
    return (model or {}).get("servers") or {}
found = servers()
if found is None:
    print(json.dumps({"state": "unknown-user"})); sys.exit(0)
if not found:
    print(json.dumps({"state": "not-running"})); sys.exit(0)
for server in found:
    path = f"/users/{name}/server" if not server else f"/users/{name}/servers/{server}"
    code, _ = call("DELETE", path)
    if code not in (202, 204, 400, 404):
        print(json.dumps({"state": "error", "detail": f"DELETE {path}: HTTP {code}"}))
        sys.exit(1)
deadline = time.monotonic() + timeout
while servers():
    if time.monotonic() > deadline:
        print(json.dumps({"state": "error", "detail": f"still running after {timeout:.0f} s"}))
        sys.exit(1)
    time.sleep(0.5)
print(json.dumps({"state": "stopped", "servers": sorted(found)}))
"""


def api_url(plan: Plan, settings: Environment) -> str:
    """The hub's REST API as seen from inside the hub container."""
    return health_urls(plan, settings)[0].removesuffix("/health") + "/api"


def stop_servers(host: Host, plan: Plan, settings: Environment, user: str) -> str:
    """Stop ``user``'s servers through the hub's API; what was found (stopped, not-running,
    unknown-user)."""
    hub = plan.container("hub").name
    done = host.run(
        quote(
            "docker",
            "exec",
            hub,
            "python3",
            "-c",
            STOP_SERVERS,
            api_url(plan, settings),
            user,
            f"{HUB_SECRETS_DIR}/{OPS_TOKEN.name}",
            "120",
        ),
        check=False,
        timeout=180,
    )
    try:
        found: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        found = {"state": "error", "detail": (done.stderr or done.stdout).strip()[-300:]}
    state = str(found.get("state"))
    if state == "error":
        detail = str(found.get("detail", ""))
        if detail.startswith("no-token"):
            detail = (
                f"the hub has no {OPS_TOKEN.name} yet (deployed by an older hubops): run "
                "invoke deploy, then restore again"
            )
        raise BackupError(
            f"{host.name}: could not stop {user}'s server through the hub's API ({detail}); "
            "nothing was restored"
        )
    return state


@dataclass(frozen=True)
class Restored:
    user: str
    snapshot: Snapshot
    path: str  # on the hub host
    in_place: bool
    servers: str  # what stop_servers found ("" when not asked)


def restore(
    host: Host,
    files: Host,
    plan: Plan,
    settings: Environment,
    env: str,
    user: str,
    at: str | None = None,
    in_place: bool = False,
    now: datetime | None = None,
) -> Restored:
    """``invoke data.restore``: ``user``'s files from the snapshot ``at`` chooses."""
    supported(settings, env)
    try:
        directory = USER_DIR_PREFIX + escape_username(user)
    except ValueError as exc:
        raise BackupError(f"--user {user!r}: {exc}") from None
    when = parse_at(at) if at else None
    user_dir = f"{settings.paths.user_data_dir}/{directory}"
    if not files.run(f"test -d {quote(user_dir)}", check=False).ok:
        raise BackupError(
            f"no user {user!r} on {host.name}: there is no directory {user_dir} (it is made "
            "at the user's first login; a deleted user's files are archived in "
            f"{settings.paths.user_data_dir}/.deleted/)"
        )
    if not files.run(f"test -s {quote(password_path(settings))}", check=False).ok:
        raise BackupError(
            f"{host.name}: no backup password in {password_path(settings)}: run invoke "
            f"data.backup --env {env} first"
        )
    image = hub_image(host, env)
    repo = shown_repository(settings)
    listed = run_module(host, docker_run(settings, env, image, "snapshots"))
    if not listed.get("ok"):
        raise BackupError(
            f"{host.name}: " + failure_line(settings, env, listed.get("kind"), listed.get("error"))
        )
    chosen = choose(snapshots(list(listed.get("snapshots") or [])), when, repo)
    stopped = stop_servers(host, plan, settings, user) if in_place else ""
    argv = docker_run(
        settings,
        env,
        image,
        "restore",
        "--snapshot",
        chosen.id,
        "--directory",
        directory,
        "--stamp",
        stamp(now or datetime.now(timezone.utc)),
        *(["--in-place"] if in_place else []),
        name=run_name(env, "restore"),
        users_writable=True,
    )
    done = run_module(host, argv, timeout=24 * 3600.0)
    if not done.get("ok"):
        kind, error = done.get("kind"), done.get("error")
        if kind == "not-in-snapshot":
            raise BackupError(
                f"snapshot {chosen.short_id} ({utc(chosen.time)}) holds no files of {user} "
                f"({directory}): the user had no directory then; give a later --at"
            )
        raise BackupError(
            f"{host.name}: " + failure_line(settings, env, kind, error) + "; the user's files "
            "were not changed"
        )
    inner = str(done.get("path", ""))
    path = settings.paths.user_data_dir + inner.removeprefix(USERS)
    return Restored(user, chosen, path, in_place, stopped)
