"""Day-two tasks on a deployed hub: host.prepare, doctor, gpus, status, logs, db.backup,
db.restore, tls.reload, swarm.migrate."""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path

from hubops_hub.diskusage import human
from invoke.context import Context
from rich.console import Console
from rich.table import Table

from hubops.cli import ENV_HELP, console, echo, rendered_env, repo_root, resolve_env, task
from hubops.config import environments, secrets
from hubops.deploy import backup as backups
from hubops.deploy import swarm
from hubops.errors import HubopsError
from hubops.host.base import Host, Streaming
from hubops.host.files import file_host
from hubops.host.target import image_fetcher, open_host
from hubops.ops import databackup, datarestore
from hubops.ops.doctor import run_checks
from hubops.ops.gpus import (
    GPU_COLUMNS,
    USAGE_COLUMNS,
    holders,
    parse_since,
    read_usage,
    read_view,
    swarm_holders,
    usage_rows,
)
from hubops.ops.gpus import report as gpu_report
from hubops.ops.migrate import Side, migrate
from hubops.ops.prepare import BackupTimer, prepare
from hubops.ops.restore import reload_certificate, restore_backup
from hubops.ops.status import logs_command, read_status
from hubops.ops.users import purge
from hubops.plan.hub_config import gpu_monitor
from hubops.plan.render import Rendered


@task(
    help={
        "env": "The new environment (cluster: swarm) on the same host.",
        "from_": "The single-host environment (cluster: docker) that moves.",
        "transfer": "Bring the images over SSH instead of pulling them from the registry.",
        "timeout": "Seconds the new hub may take to become healthy.",
    }
)
def swarm_migrate(
    c: Context,
    env: str | None = None,
    from_: str | None = None,
    transfer: bool = False,
    timeout: int = 120,
) -> None:
    """Move a single-host lab to a swarm on the same host: DB, cookie secret, user files."""
    root = repo_root(c)
    name = resolve_env(c, env)
    if not from_:
        raise HubopsError("swarm.migrate: --from names the single-host environment that moves")
    old_env = environments.load(root, from_)
    new_env = environments.load(root, name)
    old_r = rendered_env(root, from_, strict=False, digests="none")
    new_r = rendered_env(root, name, digests="none" if transfer else "required")
    values = secrets.resolve(root, name, new_env.settings)
    with open_host(root, new_env) as host:
        result = migrate(
            host,
            Side(from_, old_env.settings, old_r.plan),
            Side(name, new_env.settings, new_r.plan),
            (new_r.directory / "jupyterhub_config.py").read_text(),
            dict(values),
            image_fetcher(new_env, values, transfer),
            progress=lambda _step, m: console.print(f"[bold]migrate[/] {m}"),
            health_timeout=timeout,
        )
    echo(
        [
            f"{from_} -> {name}: backup {result.backup or '(no DB yet)'}",
            f"  stopped {len(result.stopped)} container(s), copied {len(result.copied)} item(s)",
            f"  removed {len(result.removed)} old container(s) and network",
            f"JupyterHub is up on the swarm: {new_env.settings.public_url}",
        ]
    )


@task(help={"env": ENV_HELP})
def tls_reload(c: Context, env: str | None = None) -> None:
    """Serve the renewed certificate: restart the proxy, then the hub (servers keep running)."""
    root = repo_root(c)
    name = resolve_env(c, env)
    rendered = rendered_env(root, name, strict=False)
    loaded = environments.load(root, name)
    with open_host(root, loaded) as host:
        echo(f"{name}: {reload_certificate(host, rendered.plan, loaded.settings)}")


@task(help={"env": ENV_HELP})
def host_prepare(c: Context, env: str | None = None) -> None:
    """Install and start Docker (and the NVIDIA toolkit on GPU hosts), then a GPU smoke test.

    Also installs the users' files' backup (script, password, and a systemd timer where the
    host has systemd)."""
    root = repo_root(c)
    name = resolve_env(c, env)
    loaded = environments.load(root, name)
    timer = None
    if databackup.applies(loaded.settings):  # the users' files' backup and its timer
        password, made = secrets.backup_password(root, name, loaded.settings)
        if made:
            echo(f"made backup_password in {secrets.secrets_file(root, name).relative_to(root)}")
        timer = BackupTimer(name, password)
    with open_host(root, loaded) as host:
        echo(prepare(host, loaded.settings, loaded.settings.build.base_image, timer).lines())


@task(help={"env": ENV_HELP})
def doctor(c: Context, env: str | None = None) -> None:
    """Read-only preflight checks of the hub host, with a fix hint for each failure."""
    root = repo_root(c)
    name = resolve_env(c, env)
    rendered = rendered_env(root, name, strict=False)
    loaded = environments.load(root, name)
    with open_host(root, loaded) as host:
        checks = run_checks(host, loaded.settings, rendered.plan)
    table = Table(title=f"doctor: {name}")
    for column in ("check", "status", "detail", "fix"):
        table.add_column(column, overflow="fold")
    colors = {"ok": "green", "warn": "yellow", "fail": "red", "skip": "dim"}
    for ch in checks:
        table.add_row(ch.name, f"[{colors[ch.status]}]{ch.status}[/]", ch.detail, ch.fix)
    Console().print(table)
    failed = [ch.name for ch in checks if ch.status == "fail"]
    if failed:
        raise HubopsError(f"doctor: {len(failed)} check(s) failed: {', '.join(failed)}")


@task(
    help={
        "env": ENV_HELP,
        "usage": "show GPU-hours held and busy per user (or group) instead of the holders",
        "since": "with --usage: how far back, e.g. 30d, 12h, 90m (default: since the first sample)",
        "by": "with --usage: user (default) or group (the group whose profile gave the GPU)",
    }
)
def gpus(
    c: Context,
    env: str | None = None,
    usage: bool = False,
    since: str = "0",
    by: str = "user",
) -> None:
    """Show who holds which GPU: user, server, GPU IDs, since when, image; or, with --usage,
    the GPU-hours each user or group held, and how much of that time they computed."""
    root = repo_root(c)
    name = resolve_env(c, env)
    loaded = environments.load(root, name)
    if usage:
        _gpu_usage(root, name, loaded, since, by)
        return
    if loaded.settings.cluster == "swarm":
        _swarm_gpus(root, name, loaded)
        return
    with open_host(root, loaded) as host:
        found = holders(host, name)
        view = read_view(host, name, loaded.settings) or {}
    g = loaded.settings.gpu
    report = gpu_report(found, view, g)
    table = Table(
        title=f"GPUs of {name}: policy {g.policy}"
        + (f", pool {', '.join(g.pool)}" if g.pool else "")
    )
    for column in GPU_COLUMNS:
        table.add_column(column, overflow="fold")
    for row in report.rows:
        table.add_row(*row)
    Console().print(table)
    if report.notes:
        echo(report.notes)


def _gpu_usage(
    root: Path, name: str, loaded: environments.LoadedEnvironment, since: str, by: str
) -> None:
    if by not in USAGE_COLUMNS:
        raise HubopsError(f"invoke gpus --by: got {by!r}; expected user or group")
    seconds = parse_since(since)
    if loaded.settings.cluster != "docker" or not gpu_monitor(loaded.settings):
        raise HubopsError(
            f"config/environments/{name}.yaml: GPU-hours come from hubops' GPU monitor, which "
            f"runs on a single host (cluster docker) with a gpu.policy other than none; this "
            f"environment has cluster {loaded.settings.cluster} and gpu.policy "
            f"{loaded.settings.gpu.policy}"
        )
    with open_host(root, loaded) as host:
        data = read_usage(host, name, loaded.settings, seconds, by)
    span_text = f"the last {since}" if seconds else "since the first sample"
    table = Table(title=f"GPU-hours of {name} by {by}, {span_text}")
    for column in USAGE_COLUMNS[by]:
        table.add_column(column, overflow="fold")
    rows = usage_rows(data, by)
    for row in rows:
        table.add_row(*row)
    Console().print(table)
    if not rows:
        echo(["no GPU was held in that time"])
    echo(
        [
            "GPU-hours as h:mm:ss; held: GPUs times the time a server held them; busy: of "
            "that, the GPUs it used "
            f"at the monitor's samples (every {loaded.settings.gpu.sample_every} s, from "
            f"{loaded.settings.gpu.busy_utilization}% utilisation)"
        ]
    )


def _swarm_gpus(root: Path, name: str, loaded: environments.LoadedEnvironment) -> None:
    """cluster swarm: the holdings from the swarm's tasks, and what the nodes advertise."""
    with open_host(root, loaded) as host:
        found = swarm_holders(host, name)
        nodes = swarm.nodes(host)
    table = Table(title=f"GPUs of {name}: swarm generic resources")
    for column in ("user", "server", "GPUs", "node", "since", "image", "state"):
        table.add_column(column, overflow="fold")
    for h in found:
        since = h.since.strftime("%Y-%m-%d %H:%M UTC") if h.since else "?"
        table.add_row(h.user, h.server, ", ".join(h.gpus), h.node, since, h.image, h.state)
    Console().print(table)
    held = {gpu for h in found for gpu in h.gpus}
    for node in nodes:
        for kind, ids in sorted(node.gpus.items()):
            free = len([x for x in ids if x not in held])
            echo(f"{node.hostname} ({node.role}): {free} of {len(ids)} {kind} free")


@task(help={"env": ENV_HELP})
def status(c: Context, env: str | None = None) -> None:
    """Show how the environment runs: hub health and version, users, servers (age, last
    activity, GPUs), the last deploy and backups, and each user's disk use against their
    quota. Read-only, here or over SSH."""
    root = repo_root(c)
    name = resolve_env(c, env)
    loaded = environments.load(root, name)
    rendered = rendered_env(root, name, strict=False, digests="none")
    with open_host(root, loaded) as host:
        found = read_status(host, loaded.settings, rendered.plan)
    now = datetime.now(timezone.utc)
    echo(
        [
            f"{name} on {host.name}: hub {found.hub_state}, health {found.health}, "
            f"JupyterHub {found.version}",
            f"users {found.users if found.users is not None else '?'}, "
            f"servers {len(found.servers)}, GPUs held {len(found.gpus_held)}",
            f"last deploy {found.last_deploy or 'never'}, last backup "
            f"{found.last_backup or 'none'}",
        ]
    )
    run = found.last_data_backup
    echo(f"last backup of the users' files: {databackup.describe(run) if run else 'none'}")
    if found.servers:
        table = Table(title=f"servers of {name}")
        for column in ("user", "server", "state", "age", "last activity", "GPUs", "container"):
            table.add_column(column, overflow="fold")
        for s in found.servers:
            age = f"{(now - s.started).total_seconds() / 60:.0f} min" if s.started else "?"
            table.add_row(
                s.user, s.name, s.state, age, s.last_activity or "?", s.gpus or "-", s.container
            )
        Console().print(table)
    if found.disk:
        when = found.disk_sampled_at.strftime("%H:%M UTC") if found.disk_sampled_at else "?"
        echo([f"users' disk use: {found.disk_mode} quotas, measured at {when}"])
        table = Table(title="disk use")
        for column in ("user", "used", "quota", ""):
            table.add_column(column, overflow="fold")
        for d in found.disk:
            table.add_row(
                d.user,
                human(d.used_bytes),
                human(d.quota_bytes) if d.quota_bytes else "-",
                "OVER QUOTA" if d.over else "",
            )
        Console().print(table)


@task(
    help={
        "env": ENV_HELP,
        "user": "Show this user's server instead of the hub.",
        "role": "hub (default) or proxy.",
        "follow": "Keep printing new lines until interrupted.",
        "tail": "How many of the last lines to show first.",
    }
)
def logs(
    c: Context,
    env: str | None = None,
    user: str | None = None,
    role: str = "hub",
    follow: bool = False,
    tail: int = 200,
) -> None:
    """Print the logs of the hub, the proxy or a user's server. Read-only, here or over SSH."""
    root = repo_root(c)
    name = resolve_env(c, env)
    loaded = environments.load(root, name)
    rendered = rendered_env(root, name, strict=False, digests="none")
    command = logs_command(loaded.settings, rendered.plan, role, user, follow, tail)
    out = sys.stdout.buffer
    with open_host(root, loaded) as host:
        if not isinstance(host, Streaming):
            raise HubopsError(f"{host.name}: this host cannot stream a command's output")
        try:
            code = host.stream(command, lambda chunk: (out.write(chunk), out.flush()))
        except KeyboardInterrupt:
            return
    if code != 0:
        raise HubopsError(f"logs: `{command}` on {host.name} ended with exit status {code}")


@task(help={"env": ENV_HELP, "keep": "How many backups to keep (older ones are removed)."})
def db_backup(c: Context, env: str | None = None, keep: int = 10) -> None:
    """Back up the hub's SQLite DB (online), cookie secret and config on its host."""
    root = repo_root(c)
    name = resolve_env(c, env)
    rendered = rendered_env(root, name, strict=False)
    loaded = environments.load(root, name)
    hub = next(ct for ct in rendered.plan.containers if ct.role == "hub")
    with open_host(root, loaded) as host:
        files = _files(host, rendered)
        stamp = backups.backup(host, loaded.settings, hub.image, hub.name, files=files)
        removed = backups.prune_backups(files, loaded.settings, keep)
    echo(
        f"backup {stamp} in {backups.backups_dir(loaded.settings)}/{stamp}"
        + (f" (removed {len(removed)} old)" if removed else "")
    )


@task(help={"env": ENV_HELP, "backup": "Backup ID (a directory name in <data_dir>/backups)."})
def db_restore(c: Context, env: str | None = None, backup: str | None = None) -> None:
    """Restore the DB, cookie secret and config from a backup, then restart the hub.

    The current state is backed up first, so a restore can itself be undone.
    """
    root = repo_root(c)
    name = resolve_env(c, env)
    rendered = rendered_env(root, name, strict=False)
    loaded = environments.load(root, name)
    with open_host(root, loaded) as host:
        files = _files(host, rendered)
        if backup is None:
            listing = backups.list_backups(files, loaded.settings)
            raise HubopsError(
                f"--backup is required; backups on {host.name}: {', '.join(listing) or 'none'}"
            )
        safety = restore_backup(
            host,
            rendered.plan,
            loaded.settings,
            backup,
            progress=lambda _step, m: console.print(f"[bold]restore[/] {m}"),
        )
    echo(f"restored backup {backup} (the state before is backup {safety}); hub restarted")


@task(
    help={
        "env": ENV_HELP,
        "user": "The deleted user whose archived directory goes for good.",
        "yes": "Do not ask (for scripts).",
    }
)
def users_purge(c: Context, env: str | None = None, user: str = "", yes: bool = False) -> None:
    """Delete for good the archives of a deleted user's directory (the hub archives it in
    <user_data_dir>/.deleted/ when the user is deleted)."""
    if not user:
        raise HubopsError("--user is required: the deleted user whose archives go")
    root = repo_root(c)
    name = resolve_env(c, env)
    rendered = rendered_env(root, name, strict=False)
    loaded = environments.load(root, name)

    def confirm(found: list[str]) -> bool:
        for path in found:
            echo(f"  {path}")
        if yes:
            return True
        if not sys.stdin.isatty():
            raise HubopsError(
                f"users.purge deletes {len(found)} archive(s) of {user} for good: "
                "confirm at a terminal, or pass --yes"
            )
        answer = input(f"delete {len(found)} archive(s) of {user} for good? [y/N] ")
        return answer.strip().lower() in ("y", "yes")

    with open_host(root, loaded) as host:
        gone = purge(_files(host, rendered), loaded.settings, user, confirm)
    echo(f"deleted {len(gone)} archive(s) of {user}" if gone else "nothing deleted")


def _files(host: Host, rendered: Rendered) -> Host:
    """Who does root's file work on the host (hubops.host.rootfiles)."""
    files = file_host(host, rendered.plan)
    if files is None:
        raise HubopsError(f"{host.name}: no hubops image on the host yet; deploy first")
    return files


# --- users' files: data.backup, data.restore (hubops.ops.databackup, hubops.ops.datarestore) ---


@task(help={"env": ENV_HELP})
def data_backup(c: Context, env: str | None = None) -> None:
    """Back up the users' files with restic (incremental, encrypted), as the host's timer does.

    Checks the target first, installs the password and the script
    <paths.config_dir>/hubops-data-backup.sh on the hub host and runs it: the repository is
    made when missing, then backup, then forget --prune with backup.keep_*."""
    root = repo_root(c)
    name = resolve_env(c, env)
    rendered = rendered_env(root, name, strict=False, digests="none")
    loaded = environments.load(root, name)
    password, made = secrets.backup_password(root, name, loaded.settings)
    if made:
        echo(
            f"made backup_password in {secrets.secrets_file(root, name).relative_to(root)}: "
            "keep a copy away from the hub host (without it the backups cannot be read)"
        )
    with open_host(root, loaded) as host:
        installed, record = databackup.backup(
            host, _files(host, rendered), loaded.settings, name, password
        )
    if installed.changed:
        echo([f"  {line}" for line in installed.changed])
    echo(
        f"{name}: backed up {loaded.settings.paths.user_data_dir} to "
        f"{databackup.shown_repository(loaded.settings)}: {databackup.describe(record)}"
    )


@task(
    help={
        "env": ENV_HELP,
        "user": "The user whose files come back.",
        "at": "The newest snapshot at or before this time (ISO, UTC unless it has an offset: "
        "2024-05-01T14:30), or a snapshot ID; default: the newest.",
        "in-place": "Stop the user's server and replace their directory with the snapshot's "
        "(files changed since are lost); default: into <their directory>/restored-<UTC time>/.",
    }
)
def data_restore(
    c: Context,
    env: str | None = None,
    user: str = "",
    at: str | None = None,
    in_place: bool = False,
) -> None:
    """Restore a user's files from the backups (data.backup): into restored-<time>/ in their
    directory, or in place."""
    if not user:
        raise HubopsError("--user is required: the user whose files come back")
    root = repo_root(c)
    name = resolve_env(c, env)
    rendered = rendered_env(root, name, strict=False, digests="none")
    loaded = environments.load(root, name)
    with open_host(root, loaded) as host:
        done = datarestore.restore(
            host, _files(host, rendered), rendered.plan, loaded.settings, name, user, at, in_place
        )
    snap = f"snapshot {done.snapshot.short_id} ({datarestore.utc(done.snapshot.time)})"
    if done.in_place:
        stopped = {
            "stopped": "stopped their server",
            "not-running": "no server ran",
            "unknown-user": "the hub does not know them (no server to stop)",
        }
        echo(f"{user}: {stopped.get(done.servers, done.servers)}; {done.path} is now as in {snap}")
    else:
        echo(f"{user}: the files of {snap} are in {done.path}")
