"""``invoke status`` and ``invoke logs``: day-two views of a running environment, read-only.

Everything is read on the hub host (this machine or over SSH): the containers (or, on a swarm,
the user services), the hub's own health endpoint and, read-only, its SQLite DB (users and
their servers' last activity), the backups directory. Nothing here changes the host.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from hubops_hub.labels import (
    LABEL_ENV,
    LABEL_GPUS,
    LABEL_JH,
    LABEL_ROLE,
    LABEL_SERVER,
    LABEL_STARTED,
    LABEL_USER,
)
from hubops_hub.userdirs import escape_username

from hubops.config.settings import Environment
from hubops.deploy.backup import list_backups
from hubops.deploy.health import health_urls
from hubops.errors import HubopsError
from hubops.host import docker as dockerhost
from hubops.host.base import Host, quote
from hubops.host.files import file_host
from hubops.host.quota import read_usage
from hubops.ops.databackup import read_record
from hubops.plan.model import DB_FILE, HUB_DATA_DIR, Plan

# Run in the hub container: its health (the URL: argv[1], under the hub's base_url), and
# (read-only) its DB's users and running servers.
_PROBE = f"""
import json, sqlite3, sys, urllib.request
out = {{}}
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
        out["health"] = r.status
except Exception as exc:
    out["health"] = str(exc)
db = sqlite3.connect("file:{HUB_DATA_DIR}/{DB_FILE}?mode=ro", uri=True)
out["users"] = db.execute("select count(*) from users").fetchone()[0]
out["servers"] = db.execute(
    "select u.name, s.name, s.started, s.last_activity from spawners s "
    "join users u on u.id = s.user_id where s.server_id is not null"
).fetchall()
print(json.dumps(out))
"""


@dataclass(frozen=True)
class Server:
    user: str
    name: str
    container: str  # container or (swarm) service name
    state: str
    started: datetime | None
    last_activity: str | None  # what the hub's DB says (UTC)
    gpus: str  # what it holds ("" none)


@dataclass(frozen=True)
class DiskUse:
    user: str
    used_bytes: int
    quota_bytes: int | None

    @property
    def over(self) -> bool:
        return self.quota_bytes is not None and self.used_bytes > self.quota_bytes


@dataclass
class Status:
    environment: str
    hub_state: str  # the hub container's state, or "missing"
    health: str  # "ok", or why not
    version: str  # JupyterHub's version in the hub image
    users: int | None
    servers: list[Server] = field(default_factory=list)
    last_deploy: str | None = None  # when the running hub container was made
    last_backup: str | None = None  # the newest backup's ID (a UTC time stamp)
    disk: list[DiskUse] = field(default_factory=list)  # the hub's last measurement
    disk_mode: str | None = None  # hard or soft, as the hub found it
    disk_sampled_at: datetime | None = None
    # the last run of the users' files' backup (hubops.ops.databackup's record), None: none yet
    last_data_backup: dict[str, Any] | None = None

    @property
    def gpus_held(self) -> list[str]:
        return [f"{s.user}: {s.gpus}" for s in self.servers if s.gpus]


def _when(stamp: str | None) -> datetime | None:
    return datetime.fromtimestamp(int(stamp), tz=timezone.utc) if stamp else None


def read_status(host: Host, settings: Environment, plan: Plan) -> Status:
    """The environment as it runs, read on ``host``."""
    hub = next(c for c in plan.containers if c.role == "hub")
    found = dockerhost.inspect(host, "container", hub.name)
    out = Status(plan.environment, "missing", "no hub container", "?", None)
    if found is not None:
        out.hub_state = str(found.get("State", {}).get("Status", "?"))
        out.version = dockerhost.labels(found).get(LABEL_JH, "?")
        out.last_deploy = str(found.get("Created", ""))[:19].replace("T", " ") + " UTC"
    activity: dict[tuple[str, str], str | None] = {}
    if found is not None and dockerhost.is_running(found):
        probe = host.run(
            quote(
                "docker", "exec", hub.name, "python3", "-c", _PROBE, health_urls(plan, settings)[0]
            ),
            check=False,
            timeout=60,
        )
        if probe.ok:
            data = json.loads(probe.stdout)
            out.health = "ok" if data["health"] == 200 else f"/hub/health: {data['health']}"
            out.users = int(data["users"])
            activity = {(u, s or ""): last for u, s, _, last in data["servers"]}
        else:
            out.health = f"the hub does not answer: {probe.stderr.strip()[-200:]}"
    elif found is not None:
        out.health = f"the hub container is {out.hub_state}"
    out.servers = _servers(host, settings, plan.environment, activity)
    files = file_host(host, plan)
    if files is not None:
        backups = list_backups(files, settings)
        out.last_backup = backups[-1] if backups else None
        _disk(out, read_usage(files, settings.paths.data_dir))
        out.last_data_backup = read_record(files, settings)
    return out


def _disk(out: Status, usage: dict[str, Any] | None) -> None:
    if not usage:
        return
    out.disk_mode = str(usage.get("mode") or "") or None
    if usage.get("sampled_at"):
        out.disk_sampled_at = datetime.fromtimestamp(float(usage["sampled_at"]), tz=timezone.utc)
    for user, entry in sorted((usage.get("users") or {}).items()):
        quota = entry.get("quota_bytes")
        out.disk.append(DiskUse(user, int(entry.get("bytes") or 0), int(quota) if quota else None))


def _servers(
    host: Host, settings: Environment, env: str, activity: dict[tuple[str, str], str | None]
) -> list[Server]:
    kind = "service" if settings.cluster == "swarm" else "container"
    listing = host.run(
        quote(
            "docker",
            *(["service", "ls"] if kind == "service" else ["ps", "--all"]),
            "--quiet",
            "--filter",
            f"label={LABEL_ENV}={env}",
            "--filter",
            f"label={LABEL_ROLE}=user",
        ),
        timeout=60,
    ).stdout.split()
    if not listing:
        return []
    out = []
    for item in json.loads(host.run(quote("docker", kind, "inspect", *listing)).stdout):
        if kind == "service":
            labels = (item.get("Spec") or {}).get("Labels") or {}
            name = str((item.get("Spec") or {}).get("Name", ""))
            state = "service"
        else:
            labels = dockerhost.labels(item)
            name = str(item.get("Name", "")).lstrip("/")
            state = str(item.get("State", {}).get("Status", "?"))
        user = str(labels.get(LABEL_USER, "?"))
        server = str(labels.get(LABEL_SERVER, ""))
        out.append(
            Server(
                user=user,
                name=server or "(default)",
                container=name,
                state=state,
                started=_when(labels.get(LABEL_STARTED)),
                last_activity=activity.get((user, server)),
                gpus=str(labels.get(LABEL_GPUS, "")),
            )
        )
    return sorted(out, key=lambda s: (s.user, s.name))


def logs_command(
    settings: Environment, plan: Plan, role: str, user: str | None, follow: bool, tail: int
) -> str:
    """The docker command that shows the logs of the hub, the proxy or ``user``'s server."""
    base = ["docker", "logs"]
    if user is not None:
        name = f"hubops-{plan.environment}-user-{escape_username(user)}"
        if settings.cluster == "swarm":
            base = ["docker", "service", "logs"]
    elif role in ("hub", "proxy"):
        name = next(c.name for c in plan.containers if c.role == role)
    else:
        raise HubopsError(f"logs: --role is hub or proxy, got {role!r} (or give --user NAME)")
    return quote(
        *base, "--timestamps", "--tail", str(tail), *(["--follow"] if follow else []), name
    )
