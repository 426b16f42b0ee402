"""What a host's filesystems can do for users' disk quotas, and what users use, read on the host.

The decision itself (a filesystem type and its mount options -> hard or soft) is the hub's
(``hubops_hub.diskusage.capability``), so that the hub, ``invoke doctor`` and ``invoke deploy``
never disagree. Here it is fed from ``findmnt`` on the host, for the nearest existing parent of
a path (a deploy may not have made the directory yet).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from hubops_hub.diskusage import (
    USAGE_FILE,
    Capability,
    capability,
    effective_mode,
    human,
    quota_for,
)

from hubops.config.settings import Environment, mem_bytes
from hubops.errors import HubopsError
from hubops.host.base import Host, quote

_NEAREST = 'p={path}; while [ ! -e "$p" ]; do p=$(dirname "$p"); done; '


@dataclass(frozen=True)
class Mount:
    target: str  # the mount point
    source: str  # the device
    fstype: str
    options: list[str]


def mount_of(host: Host, path: str) -> Mount:
    """The filesystem that holds ``path`` (or, while it is missing, its nearest parent)."""
    result = host.run(
        _NEAREST.format(path=quote(path))
        + 'findmnt --json --output TARGET,SOURCE,FSTYPE,OPTIONS --target "$p"',
        check=False,
    )
    try:
        found = json.loads(result.stdout)["filesystems"][0]
    except (ValueError, KeyError, IndexError, TypeError):
        raise HubopsError(
            f"{host.name}: cannot tell which filesystem holds {path} (findmnt: "
            f"{(result.stderr or result.stdout).strip()[-200:] or 'no answer'}); install "
            "util-linux"
        ) from None
    return Mount(
        str(found.get("target", "")),
        str(found.get("source", "")),
        str(found.get("fstype", "")),
        str(found.get("options", "")).split(","),
    )


def host_capability(host: Host, settings: Environment) -> Capability:
    m = mount_of(host, settings.paths.user_data_dir)
    return capability(m.fstype, m.options)


def mode_line(settings: Environment, can: Capability) -> str:
    """One line: the disk quota mode this environment gets on a host that ``can``."""
    su = settings.singleuser
    mode = effective_mode(su.disk_quota_mode, can)
    what = f"{su.disk_quota} per user" if su.disk_quota else "no quota set"
    if any(p.disk_quota for p in su.profiles):
        what += " (profiles: " + ", ".join(str(p.disk_quota or "-") for p in su.profiles) + ")"
    return f"{mode} ({what}; {settings.paths.user_data_dir} is {can.reason})"


def hard_mode_problem(settings: Environment, can: Capability, env_file: str) -> str | None:
    """Why ``disk_quota_mode: hard`` cannot work on this host (None: it can, or is not asked)."""
    su = settings.singleuser
    if su.disk_quota_mode != "hard" or can.mode == "hard":
        return None
    return (
        f"{env_file}: singleuser.disk_quota_mode is 'hard', but {settings.paths.user_data_dir} "
        f"cannot enforce quotas: {can.reason}. Set singleuser.disk_quota_mode: auto (or soft) "
        "to measure and show usage instead"
    )


def same_filesystem(host: Host, a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` (their nearest existing parents) are on one filesystem."""
    ids = []
    for path in (a, b):
        result = host.run(_NEAREST.format(path=quote(path)) + 'stat -c %d "$p"', check=False)
        ids.append(result.stdout.strip())
    return bool(ids[0]) and ids[0] == ids[1]


def read_usage(files: Host, data_dir: str) -> dict[str, Any] | None:
    """The hub's last measurement of users' disk use (hubops_hub.diskusage), if any."""
    result = files.run("cat " + quote(f"{data_dir}/{PurePosixPath(USAGE_FILE).name}"), check=False)
    if not result.ok:
        return None
    try:
        data = json.loads(result.stdout)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def quota_warnings(settings: Environment, usage: dict[str, Any] | None) -> list[str]:
    """Users whose last measured use is above the quota these settings give them."""
    su = settings.singleuser
    default = mem_bytes(su.disk_quota) if su.disk_quota else None
    profiles = [
        {"groups": p.groups, "disk_quota": mem_bytes(p.disk_quota) if p.disk_quota else None}
        for p in su.profiles
    ]
    out = []
    for name, entry in sorted(((usage or {}).get("users") or {}).items()):
        quota = quota_for(entry.get("groups") or [], default, profiles)
        used = int(entry.get("bytes") or 0)
        if quota and used > quota:
            out.append(
                f"{name} uses {human(used)}, over the new disk quota of {human(quota)}: they can "
                "still start their server and delete files"
            )
    return out
