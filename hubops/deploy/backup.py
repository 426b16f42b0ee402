"""Backups of the hub's state on its host: the SQLite DBs (online backup), cookie secret, config.

A backup is ``<data_dir>/backups/<UTC timestamp>/``. The DBs (JupyterHub's, and the GPU
monitor's record of GPU-seconds per user and group) are copied with SQLite's online backup
API from inside a hub-image container (the host needs no sqlite3), so a running hub is never
read mid-write. The last N backups are kept.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

from hubops.config.settings import Environment
from hubops.errors import BackupError
from hubops.host.base import Host, quote
from hubops.plan.model import (
    CONFIG_FILE,
    COOKIE_SECRET_FILE,
    DB_FILE,
    GPU_USAGE_FILE,
    HUB_DATA_DIR,
)

BACKUP_ID = re.compile(r"^\d{8}T\d{6}(\.\d+)?Z$")

ONLINE_BACKUP = (
    "import sqlite3, sys; "
    "src = sqlite3.connect('file:' + sys.argv[1] + '?mode=ro', uri=True); "
    "dst = sqlite3.connect(sys.argv[2]); src.backup(dst); dst.close(); src.close()"
)


def backups_dir(settings: Environment) -> str:
    return f"{settings.paths.data_dir}/backups"


def list_backups(host: Host, settings: Environment) -> list[str]:
    result = host.run(f"ls -1 {quote(backups_dir(settings))} 2>/dev/null", check=False)
    return sorted(line for line in result.stdout.split() if BACKUP_ID.match(line))


def backup(
    host: Host,
    settings: Environment,
    hub_image: str,
    hub_container: str | None = None,
    files: Host | None = None,
) -> str:
    """Back up DB, cookie secret and config; returns the backup ID.

    ``host`` runs the engine's commands; ``files`` does root's file work (default: ``host``,
    for a root deploy user; see hubops.host.rootfiles).
    """
    files = files or host
    data = settings.paths.data_dir
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    target = f"{backups_dir(settings)}/{stamp}"
    files.run(f"install -d -m 700 {quote(backups_dir(settings))} {quote(target)}")
    running = (
        hub_container
        and host.run(
            f"docker inspect -f '{{{{.State.Running}}}}' {quote(hub_container)}", check=False
        ).stdout.strip()
        == "true"
    )
    for db in (DB_FILE, GPU_USAGE_FILE):
        if not files.run(f"test -s {quote(f'{data}/{db}')}", check=False).ok:
            continue
        inner_src = f"{HUB_DATA_DIR}/{db}"
        inner_dst = f"{HUB_DATA_DIR}/backups/{stamp}/{db}"
        if running:
            cmd = quote(
                "docker",
                "exec",
                str(hub_container),
                "python3",
                "-c",
                ONLINE_BACKUP,
                inner_src,
                inner_dst,
            )
        else:
            cmd = quote(
                "docker",
                "run",
                "--rm",
                "--network",
                "none",
                "--entrypoint",
                "python3",
                "--mount",
                f"type=bind,source={data},target={HUB_DATA_DIR}",
                hub_image,
                "-c",
                ONLINE_BACKUP,
                inner_src,
                inner_dst,
            )
        result = host.run(cmd, check=False, timeout=600)
        if not result.ok:
            files.run(f"rm -rf {quote(target)}", check=False)
            raise BackupError(
                f"{host.name}: the online backup of {data}/{db} failed: "
                f"{(result.stderr or result.stdout).strip()[-400:]}"
            )
    copies = [
        f"if [ -e {quote(source)} ]; then cp -p {quote(source)} {quote(target)}/; fi"
        for source in (f"{data}/{COOKIE_SECRET_FILE}", f"{settings.paths.config_dir}/{CONFIG_FILE}")
    ]
    files.run(" && ".join(copies))
    return stamp


def prune_backups(host: Host, settings: Environment, keep: int) -> list[str]:
    """Remove all but the newest ``keep`` backups; returns the removed IDs."""
    old = list_backups(host, settings)[:-keep] if keep > 0 else []
    if old:
        host.run("rm -rf " + " ".join(quote(f"{backups_dir(settings)}/{stamp}") for stamp in old))
    return old


def restore_files(
    host: Host, settings: Environment, stamp: str | None = None, db_only: bool = False
) -> str:
    """Copy a backup's files back (the newest when ``stamp`` is None). The hub must be stopped.

    Returns the backup ID restored.
    """
    known = list_backups(host, settings)
    if stamp is None:
        if not known:
            raise BackupError(f"{host.name}: there is no backup in {backups_dir(settings)}")
        stamp = known[-1]
    if stamp not in known:
        raise BackupError(
            f"{host.name}: no backup {stamp!r} in {backups_dir(settings)}; backups: "
            f"{', '.join(known) or 'none'}"
        )
    host.run(restore_command(settings, stamp, db_only))
    return stamp


def restore_command(settings: Environment, stamp: str, db_only: bool = False) -> str:
    """Root's shell command that copies a backup's files over the live ones, each atomically
    (for a host, or for the deploy's swap unit)."""
    source = f"{backups_dir(settings)}/{stamp}"
    data = settings.paths.data_dir
    files = [(DB_FILE, data)]
    if not db_only:  # a whole restore; a deploy's rollback keeps the GPU-seconds since
        files += [
            (GPU_USAGE_FILE, data),
            (COOKIE_SECRET_FILE, data),
            (CONFIG_FILE, settings.paths.config_dir),
        ]
    copies = []
    for name, directory in files:
        src, dst = f"{source}/{name}", f"{directory}/{name}"
        copies.append(
            f"if [ -e {quote(src)} ]; then cp -p {quote(src)} {quote(dst)}.hubops-tmp && "
            f"mv -f {quote(dst)}.hubops-tmp {quote(dst)}; fi"
        )
    return " && ".join(copies)
