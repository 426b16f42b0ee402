"""Users' disk use against their quota: measured, shown, and (hard mode) enforced.

Soft mode (``singleuser.disk_quota_mode``; auto where the filesystem cannot enforce): a
JupyterHub-managed service (``hubops-disk-usage``, in the hub container, where
``paths.user_data_dir`` is mounted at its own path) measures every user's directory with a
niced ``du`` every ``--every`` seconds and writes what it found to ``USAGE_FILE`` in the hub's
data directory: the hub's metrics (``hubops_user_disk_bytes``), the spawn's progress page and
``invoke status`` read it there. Nothing stops a write past the quota; the user is told.

Hard mode: the filesystem enforces the quota with a project quota per user directory (XFS
project quotas, or ext4 with the project feature mounted with prjquota). The hub sets it at
each spawn, so a new user and a changed quota are covered, with the host's own quota tools
(``hard_quota_script``), from a one-shot privileged container that chroots into the host's
root as hubops' root helper does: the hub holds the Docker socket already, and the tools need
the filesystem's device. Measuring goes on as in soft mode.

Which mode a filesystem can do is decided from its type and mount options
(``capability``), both on the host (``invoke doctor``, ``invoke deploy``) and in the hub (its
mount table shows the bind mount's superblock options).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hubops_hub.userdirs import user_dir

log = logging.getLogger("hubops-disk-usage")

USAGE_FILE = "/srv/jupyterhub/hubops-disk-usage.json"  # in hubops.plan.model.HUB_DATA_DIR
PROJECTS_FILE = "/srv/jupyterhub/hubops-disk-projects.json"  # user dir -> project ID
FIRST_PROJECT = 10000
GIB = 2**30

# the mount options that turn project quota accounting and enforcement on
XFS_PROJECT_OPTIONS = {"prjquota", "pquota", "pqnoenforce"}
EXT4_PROJECT_OPTIONS = {"prjquota"}


@dataclass(frozen=True)
class Capability:
    mode: str  # "hard" or "soft": what this filesystem can do
    fstype: str
    reason: str  # one line: why (and, for soft, what would make it hard)


def capability(fstype: str, options: Iterable[str]) -> Capability:
    """What a filesystem of ``fstype`` mounted with ``options`` (mount and superblock
    options together) can do for disk quotas."""
    opts = {o.split("=", 1)[0] for o in options}
    if fstype == "xfs":
        if "pqnoenforce" in opts:
            return Capability(
                "soft", fstype, "XFS with pqnoenforce: project quotas are counted, not enforced"
            )
        if opts & XFS_PROJECT_OPTIONS:
            return Capability("hard", fstype, "XFS mounted with prjquota: project quotas")
        return Capability(
            "soft",
            fstype,
            "XFS without prjquota: add prjquota to its mount options in /etc/fstab and "
            "remount (`invoke host.prepare` does it where it can)",
        )
    if fstype == "ext4":
        if opts & EXT4_PROJECT_OPTIONS:
            return Capability("hard", fstype, "ext4 mounted with prjquota: project quotas")
        return Capability(
            "soft",
            fstype,
            "ext4 without prjquota: unmounted, run `tune2fs -O project,quota <device>`, "
            "then mount it with prjquota (in /etc/fstab)",
        )
    return Capability(
        "soft",
        fstype,
        f"{fstype or 'this filesystem'} has no project quotas hubops can set: put "
        "paths.user_data_dir on XFS (mounted with prjquota) or ext4 (project feature)",
    )


def mount_of(path: str, mountinfo: str) -> tuple[str, str, list[str]]:
    """(mount point, fstype, mount and superblock options) of the mount holding ``path``,
    from ``/proc/self/mountinfo``'s text: the longest mount point that contains it."""
    best: tuple[str, str, list[str]] = ("", "", [])
    for line in mountinfo.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 6:
            continue
        point = fields[4].replace("\\040", " ")
        tail = line.partition(" - ")[2]
        rest = tail.split()
        fstype, super_opts = rest[0], rest[2] if len(rest) > 2 else ""
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best[0]):
            best = (point, fstype, fields[5].split(",") + super_opts.split(","))
    return best


def path_capability(path: str, mountinfo_file: str = "/proc/self/mountinfo") -> Capability:
    with open(mountinfo_file, encoding="utf-8") as f:
        _, fstype, options = mount_of(os.path.realpath(path), f.read())
    return capability(fstype, options)


def effective_mode(wanted: str, can: Capability) -> str:
    """disk_quota_mode ``wanted`` on a filesystem that ``can``: "hard" or "soft"."""
    return "hard" if wanted == "hard" or (wanted == "auto" and can.mode == "hard") else "soft"


def hard_quota_script(fstype: str, directory: str, project: int, limit_bytes: int) -> str:
    """The shell commands that give ``directory`` (and everything in it) project ``project``
    and a hard block limit of ``limit_bytes``, on its filesystem (mounted at ``directory``'s
    mount point, which the quota tools find from the path)."""
    d = _sh(directory)
    if fstype == "xfs":
        return (
            f"xfs_quota -x -c 'project -s -p {d} {project}' {d} && "
            f"xfs_quota -x -c 'limit -p bhard={limit_bytes} {project}' {d}"
        )
    if fstype == "ext4":
        kib = -(-limit_bytes // 1024)
        return f"chattr -R +P -p {project} {d} && setquota -P {project} 0 {kib} 0 0 {d}"
    raise ValueError(f"no project quotas on {fstype}")


def _sh(word: str) -> str:
    return "'" + word.replace("'", "'\"'\"'") + "'"


def project_id(dirname: str, path: str = PROJECTS_FILE) -> int:
    """The project ID of a user directory (its name), handed out once and kept in ``path``."""
    try:
        with open(path, encoding="utf-8") as f:
            known: dict[str, int] = json.load(f)
    except FileNotFoundError:
        known = {}
    if dirname not in known:
        known[dirname] = max([FIRST_PROJECT - 1, *known.values()]) + 1
        write_json(path, known)
    return known[dirname]


# --- measuring ---------------------------------------------------------------------------


def du_command(path: str) -> list[str]:
    """Disk use of ``path`` in bytes (blocks, as quotas count), on its own filesystem, at
    the lowest CPU and I/O priority."""
    return ["nice", "-n", "19", "ionice", "-c", "3", "du", "-sx", "--block-size=1", path]


def measure(path: str, timeout: float = 3600) -> int | None:
    """Bytes used under ``path``; None where it is missing. Files that vanish or cannot be
    read while du walks count as what du could see."""
    if not os.path.isdir(path):
        return None
    result = subprocess.run(
        du_command(path), capture_output=True, text=True, timeout=timeout, check=False
    )
    first = result.stdout.split()
    if not first or not first[0].isdigit():
        raise OSError(f"du {path}: {result.stderr.strip()[-200:] or 'no answer'}")
    return int(first[0])


def quota_for(
    groups: Iterable[str], default: int | None, profiles: list[dict[str, Any]]
) -> int | None:
    """The quota of a user in ``groups``: the first profile that matches them (as the spawner
    picks it: one that names none matches everybody) gives its own, else ``default``."""
    mine = set(groups)
    for p in profiles:
        wanted = set(p.get("groups") or [])
        if not wanted or wanted & mine:
            return int(p["disk_quota"]) if p.get("disk_quota") else default
    return default


def write_json(path: str, data: Any) -> None:
    """Write ``data`` to ``path`` whole or not at all (a full disk leaves the old file)."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".hubops-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, sort_keys=True)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_usage(path: str = USAGE_FILE) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def over_quota(entry: Mapping[str, Any] | None) -> bool:
    if not entry or not entry.get("quota_bytes"):
        return False
    return int(entry.get("bytes") or 0) > int(entry["quota_bytes"])


def human(n: int) -> str:
    """Bytes as JupyterLab's status bar shows them: GiB with one decimal, MiB below 1 GiB."""
    return f"{n / GIB:.1f} GiB" if n >= GIB else f"{round(n / 2**20)} MiB"


def over_quota_message(used: int, quota: int) -> str:
    return (
        f"Your files use {human(used)}, over your disk quota of {human(quota)}. Your server "
        "starts: delete or move files (large checkpoints, datasets, ~/.cache) to get under it."
    )


class DiskUsage:
    def __init__(
        self,
        root: str,
        prefix: str,
        default: int | None,
        profiles: list[dict[str, Any]],
        mode: str,
        out: str = USAGE_FILE,
    ) -> None:
        self.root, self.prefix, self.default, self.profiles = root, prefix, default, profiles
        self.mode, self.out = mode, out
        self.api_url = os.environ["JUPYTERHUB_API_URL"]
        self.token = os.environ["JUPYTERHUB_API_TOKEN"]

    def step(self) -> dict[str, Any]:
        from hubops_hub.reaper import hub_users

        users: dict[str, dict[str, Any]] = {}
        for u in hub_users(self.api_url, self.token, state=""):
            name = str(u["name"])
            try:
                used = measure(user_dir(self.root, self.prefix, name))
            except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
                log.error("could not measure %s's directory: %s", name, exc)
                continue
            if used is None:
                continue  # never spawned: no directory yet
            quota = quota_for(u.get("groups") or [], self.default, self.profiles)
            groups = sorted(str(g) for g in u.get("groups") or [])
            users[name] = {"bytes": used, "quota_bytes": quota, "groups": groups}
            if over_quota(users[name]):
                log.warning(
                    "%s is over their disk quota: %s of %s", name, human(used), human(quota or 0)
                )
        fs = os.statvfs(self.root)
        can = path_capability(self.root)
        sample = {
            "sampled_at": time.time(),
            "mode": effective_mode(self.mode, can),
            "filesystem": {
                "type": can.fstype,
                "total_bytes": fs.f_blocks * fs.f_frsize,
                "free_bytes": fs.f_bavail * fs.f_frsize,
            },
            "users": users,
        }
        write_json(self.out, sample)
        return sample

    def run(self, every: int) -> None:
        """Measure now and every ``every`` seconds; SIGUSR1 (to this process, in the hub
        container) measures at once, e.g. after an operator freed space."""
        wake = threading.Event()
        signal.signal(signal.SIGUSR1, lambda *_: wake.set())
        while True:
            wake.clear()
            try:
                self.step()
            except Exception as exc:  # the hub starting, a full data disk: try again soon
                log.error("could not measure users' disk use: %s", exc)
                wake.wait(min(every, 10))
                continue
            wake.wait(every)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hubops-disk-usage", description=__doc__)
    parser.add_argument("--dir", required=True, help="paths.user_data_dir (same path here)")
    parser.add_argument("--prefix", required=True, help="the user directories' name prefix")
    parser.add_argument("--every", type=int, default=600, help="seconds between measurements")
    parser.add_argument("--quota", type=int, default=0, help="singleuser.disk_quota, bytes")
    parser.add_argument("--profiles", default="[]", help="JSON: [{groups, disk_quota}]")
    parser.add_argument("--mode", default="auto", choices=("auto", "hard", "soft"))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="[%(levelname)1.1s %(asctime)s hubops-disk-usage] %(message)s"
    )
    usage = DiskUsage(
        args.dir, args.prefix, args.quota or None, json.loads(args.profiles), args.mode
    )
    usage.run(args.every)
    return 0


if __name__ == "__main__":
    sys.exit(main())
