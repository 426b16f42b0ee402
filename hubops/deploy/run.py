"""``invoke deploy``: put the rendered hub on its host, atomically, idempotently, one at a time.

Order: the environment's lock on the host (hubops.host.lock); recovery of a deploy that was cut
off (a swap the host did not finish, files of a deploy killed before its swap); checks that
change nothing (TLS pair, free disk); images (pull by digest or transfer); host directories;
backup (online SQLite backup, cookie secret, config); network; the current config and secret
files kept aside; secrets and config written; then the swap of the proxy and hub, run on the
host as one unit that outlives this process (hubops.deploy.swap): it finishes, or rolls back
everything it and this deploy changed (containers, config and secret files, the DB when it was
upgraded) on its own. Until the swap, the running hub is left alone, so a deploy killed at any
point leaves the site serving. The proxy is its own container and JupyterHub does not stop user
servers on shutdown, so replacing the hub neither stops nor disconnects them.

Each container carries a hash of what made it (spec, image ID and, for the hub, the config and
secret files): a deploy that changes nothing restarts nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from hubops_hub.labels import LABEL_HASH, LABEL_JH
from pydantic import SecretStr

from hubops.config.settings import Environment
from hubops.deploy import firewall, network, swarm
from hubops.deploy import swap as swap_unit
from hubops.deploy.backup import backup, prune_backups, restore_command
from hubops.deploy.changes import (
    ROLES,
    Changes,
    find_changes,
    firewall_spec,
    hub_inputs,
    image_of,
    interrupted,
    spec_hash,
    take_snapshot,
    tls_problem,
)
from hubops.deploy.firewall import Layout
from hubops.deploy.health import health_urls, wait_healthy
from hubops.deploy.recover import recover
from hubops.deploy.state import (
    config_path,
    drop_state,
    generate_secrets,
    journal,
    make_dirs,
    restore_state,
    save_state,
    write_atomic,
    write_secrets,
)
from hubops.deploy.steps import Progress, Step, quiet
from hubops.errors import DeployError
from hubops.host import docker as dockerhost
from hubops.host import lock
from hubops.host import quota as quotas
from hubops.host.base import Host, quote
from hubops.host.files import file_host
from hubops.host.rootfiles import root_command
from hubops.plan.model import DB_FILE, Plan

ImageFetcher = Callable[[Host, list[str]], None]


@dataclass
class DeployResult:
    environment: str
    public_url: str
    changes: Changes
    done: list[str] = field(default_factory=list)
    backup: str | None = None
    seconds: float = 0.0
    hub_unavailable_s: float = 0.0


def _apply_firewall(
    host: Host, plan: Plan, settings: Environment, layout: Layout | None, progress: Progress
) -> str:
    """Make or remove the firewall container. The old one is stopped first (its rules stay in
    the kernel: it never removes them), then the new one replaces the environment's chains in
    one iptables-restore and takes its name; the two never run at once, so neither undoes the
    other's rules. If the new one cannot apply its rules, the old one starts again. Returns
    what was done."""
    name = firewall.name(plan.environment)
    nxt = f"{name}-next"
    host.run(quote("docker", "rm", "-f", nxt), check=False)
    if not settings.network.isolation:
        host.run(quote("docker", "rm", "-f", name), check=False)
        firewall.run_in_host_network(
            host, plan.container("hub").image, firewall.remove_command(plan.environment)
        )
        return "firewall rules removed (network.isolation is false)"
    assert layout is not None, "network.ensure gives a layout wherever isolation is on"
    spec = firewall_spec(plan, settings, layout)
    snap = dockerhost.snapshot(
        host, read=[], images=[spec.image], containers=[], sums=[], files=None
    )
    host.run(
        dockerhost.create_command(
            spec.model_copy(update={"name": nxt}), {LABEL_HASH: spec_hash(snap, spec, {})}
        )
    )
    old = dockerhost.inspect(host, "container", name)
    if old is not None:
        host.run(quote("docker", "stop", "--time", "5", name), check=False)
    host.run(quote("docker", "start", nxt))
    progress(Step.FIREWALL, "firewall: applying the rules")
    deadline = time.monotonic() + 30
    while True:
        log = dockerhost.logs(host, nxt, lines=20)
        if firewall.APPLIED in log:
            break
        state = dockerhost.inspect(host, "container", nxt) or {}
        if time.monotonic() > deadline or not dockerhost.is_running(state):
            host.run(quote("docker", "rm", "-f", nxt), check=False)
            if old is not None:
                host.run(quote("docker", "start", name), check=False)
            raise DeployError(
                f"{host.name}: the firewall could not apply its rules (network.isolation): "
                f"{log.strip()[-400:] or 'no output'}; hubops needs a rootful engine that "
                "manages iptables (see the README, 'Isolation and hardening'), or set "
                "network.isolation: false. The running hub and the rules in force were left "
                "as they were"
            )
        time.sleep(0.2)
    host.run(quote("docker", "rm", "-f", name), check=False)
    host.run(quote("docker", "rename", nxt, name))
    return f"firewall {name} ({layout.subnet})"


def deploy(
    host: Host,
    plan: Plan,
    settings: Environment,
    config_text: str,
    secrets: dict[str, SecretStr],
    fetch_images: ImageFetcher,
    *,
    health_timeout: float = 90,
    keep_backups: int = 10,
    progress: Progress = quiet,
    lock_wait: float = 0,
    break_lock: bool = False,
) -> DeployResult:
    """Make the host run ``plan`` with ``config_text``; roll back if the new hub fails.

    ``host`` may log in as root or as a member of the docker group: root's file work then
    goes through a helper container (hubops.host.rootfiles), after the images are on the host.
    One deploy of an environment runs at a time (hubops.host.lock). The swap of the containers
    runs on the host as one unit that finishes or rolls back on its own (hubops.deploy.swap).
    """
    start = time.monotonic()
    with lock.held(host, plan.environment, wait=lock_wait, break_lock=break_lock) as held:
        progress(Step.LOCK, f"took the deploy lock ({held.lock.holder})")
        result = _deploy(
            host,
            plan,
            settings,
            config_text,
            secrets,
            fetch_images,
            health_timeout,
            keep_backups,
            progress,
            held,
        )
    result.seconds = time.monotonic() - start
    return result


def _deploy(
    host: Host,
    plan: Plan,
    settings: Environment,
    config_text: str,
    secrets: dict[str, SecretStr],
    fetch_images: ImageFetcher,
    health_timeout: float,
    keep_backups: int,
    progress: Progress,
    held: lock.Held,
) -> DeployResult:
    fetched: list[str] = []
    files = file_host(host, plan)
    if files is None:  # not root, and no hubops image on the host yet: fetch them first
        snap = take_snapshot(host, plan, settings, None)
        fetched = [ref for ref in plan.images if snap.image_id(ref) is None]
        progress(Step.FETCH, f"fetching {len(fetched)} image(s)")
        fetch_images(host, fetched)
        files = file_host(host, plan)
        if files is None:
            raise DeployError(f"{host.name}: the images were fetched but are not there")
    snap = take_snapshot(host, plan, settings, files)
    recovered: list[str] = []
    if interrupted(snap, plan, settings):
        recovered = recover(host, files, plan, settings, health_timeout, progress)
        snap = take_snapshot(host, plan, settings, files)
    if settings.cluster == "swarm":
        swarm.preflight(host, settings)
    proxy_now = snap.containers.get(plan.container("proxy").name)
    if proxy_now and dockerhost.is_running(proxy_now) and settings.cluster == "docker":
        broken = network.resolution_problem(host, plan, both=False)
        if broken:
            progress(Step.NETWORK, f"repairing the network: {broken}")
            recovered += network.repair(host, plan)[1]
            # the new network has a new bridge: the firewall finds it when it starts
            host.run(quote("docker", "restart", firewall.name(plan.environment)), check=False)
    problem = (
        tls_problem(settings, snap, host)
        or _disk_problem(files, settings)
        or _quota_problem(files, plan, settings, progress)
    )
    if problem:
        raise DeployError(f"{problem}. Nothing was changed.")
    layout: Layout | None = None
    if settings.cluster == "swarm":  # the swarm's overlay: addresses are its own
        recovered += swarm.ensure_network(host, plan)
    else:
        layout, made = network.ensure(host, plan, settings.network.subnet)
        recovered += made
        plan = network.pinned(plan, layout)
    changes = find_changes(host, plan, settings, config_text, secrets, snap, layout)
    result = DeployResult(plan.environment, plan.public_url, changes)
    result.done += recovered + [f"fetched {ref}" for ref in fetched]
    if changes.nothing:
        wait_healthy(host, plan, settings, timeout=health_timeout)
        return result

    paths = settings.paths
    hub = plan.container("hub")
    old_hub = snap.containers.get(hub.name)
    if changes.missing_images:  # first: a non-root deploy user's file work needs an image
        progress(Step.FETCH, f"fetching {len(changes.missing_images)} image(s)")
        fetch_images(host, changes.missing_images)
        result.done += [f"fetched {ref}" for ref in changes.missing_images]
    if changes.firewall:
        result.done.append(_apply_firewall(host, plan, settings, layout, progress))
    if changes.only_firewall:
        wait_healthy(host, plan, settings, timeout=health_timeout)
        return result
    make_dirs(files, plan)
    if files.run(f"test -s {quote(f'{paths.data_dir}/{DB_FILE}')}", check=False).ok:
        progress(Step.BACKUP, "backing up the DB, cookie secret and config")
        result.backup = backup(
            host, settings, image_of(old_hub) or hub.image, hub.name, files=files
        )
        result.done.append(f"backup {result.backup}")
    progress(Step.KEEP_FILES, "keeping the current config and secret files aside")
    files.run(save_state(settings))
    try:
        if changes.secrets_changed:
            write_secrets(files, settings, secrets)
            result.done.append("secrets written")
        result.done += [f"generated {name}" for name in generate_secrets(files, plan)]
        if changes.config_changed:
            write_atomic(files, config_path(settings), config_text, mode="0644")
            result.done.append(f"config {config_path(settings)}")
        swap = _swap_for(
            host, files, plan, settings, changes, config_text, result, held, health_timeout
        )
        progress(
            Step.HAND_OVER, "handing the swap to the host (it finishes or rolls back on its own)"
        )
        stopped_at = time.monotonic()
        outcome = swap_unit.start(
            host, files, swap, progress, timeout=health_timeout + 240, on_started=held.hand_over
        )
    except BaseException:
        if not held.handed_over:  # from then on, the unit puts the files back if it must
            files.run(restore_state(settings), check=False)
        raise
    if outcome.state != "done":
        hub_log = dockerhost.logs(host, f"{hub.name}-failed")
        host.run(quote("docker", "rm", "-f", f"{hub.name}-failed"), check=False)
        raise DeployError(
            f"{outcome.detail}. Not put back: the images fetched and the backup "
            f"{result.backup or '(none)'} stay.{_log_tail(hub_log)}"
        )
    result.hub_unavailable_s = time.monotonic() - stopped_at if old_hub is not None else 0.0
    result.done += [
        f"{role} {plan.container(role).name}" for role in ROLES if role in changes.containers
    ]
    prune_backups(files, settings, keep_backups)
    return result


def _log_tail(text: str) -> str:
    return f" The new hub's log ends:\n{text}" if text.strip() else ""


def _swap_for(
    host: Host,
    files: Host,
    plan: Plan,
    settings: Environment,
    changes: Changes,
    config_text: str,
    result: DeployResult,
    held: lock.Held,
    health_timeout: float,
) -> swap_unit.Swap:
    """The unit that replaces the containers ``changes`` names, and how it rolls back."""
    snap = take_snapshot(host, plan, settings, files)  # images and secret files as they are now
    hub, proxy = plan.container("hub"), plan.container("proxy")
    old = snap.containers.get(hub.name)
    new_version = _image_label(host, hub.image, LABEL_JH)
    old_version = dockerhost.labels(old).get(LABEL_JH) if old else None
    upgrade = bool(old_version and new_version and old_version != new_version)
    labels = {
        LABEL_HASH: spec_hash(snap, hub, hub_inputs(snap, config_text)),
        **({LABEL_JH: new_version} if new_version else {}),
    }
    replace_proxy = "proxy" in changes.containers
    return swap_unit.Swap(
        environment=plan.environment,
        hub=hub.name,
        proxy=proxy.name,
        create_hub=dockerhost.create_command(hub, labels),
        create_proxy=(
            dockerhost.create_command(proxy, {LABEL_HASH: spec_hash(snap, proxy, {})})
            if replace_proxy
            else None
        ),
        health_urls=health_urls(plan, settings),
        health_timeout=health_timeout,
        prepare=(
            (
                f"upgrading the DB to JupyterHub {new_version}",
                _upgrade_db_command(settings, hub.image),
            )
            if upgrade
            else None
        ),
        undo_prepare=(
            ("DB", root_command(files, restore_command(settings, result.backup, db_only=True)))
            if upgrade and result.backup
            else None
        ),
        restore_files=root_command(files, restore_state(settings)),
        finish=[root_command(files, drop_state(settings)) + " || true"],
        lock=held.lock,
        journal=journal(files, settings),
    )


# --- containers ------------------------------------------------------------------------------


def _image_label(host: Host, ref: str, key: str) -> str | None:
    found = dockerhost.inspect(host, "image", ref)
    value = ((found or {}).get("Config") or {}).get("Labels") or {}
    return str(value[key]) if value.get(key) else None


def _upgrade_db_command(settings: Environment, image: str) -> str:
    data = settings.paths.data_dir
    return quote(
        "docker",
        "run",
        "--rm",
        "--network",
        "none",
        "--mount",
        f"type=bind,source={data},target=/srv/jupyterhub",
        image,
        "jupyterhub",
        "upgrade-db",
        f"--db=sqlite:////srv/jupyterhub/{DB_FILE}",
    )


def _quota_problem(
    files: Host, plan: Plan, settings: Environment, progress: Progress
) -> str | None:
    """disk_quota_mode hard on a filesystem that cannot enforce it; else the mode the host
    gets, and the users whose use is above their new quota (allowed: they are told)."""
    if settings.cluster != "docker":
        return None
    can = quotas.host_capability(files, settings)  # root's view: the path may be private
    problem = quotas.hard_mode_problem(
        settings, can, f"config/environments/{plan.environment}.yaml"
    )
    if problem:
        return problem
    if settings.singleuser.has_disk_quota:
        progress(Step.DISK, f"disk quotas: {quotas.mode_line(settings, can)}")
        usage = quotas.read_usage(files, settings.paths.data_dir)
        for line in quotas.quota_warnings(settings, usage):
            progress(Step.DISK, f"warning: {line}")
    return None


def _disk_problem(files: Host, settings: Environment) -> str | None:
    """Room for a backup and new files where the hub's state lives, before anything changes."""
    data = settings.paths.data_dir
    out = files.run(
        f'p={quote(data)}; while [ ! -e "$p" ]; do p=$(dirname "$p"); done; '
        f'df -Pk "$p" | tail -n 1; du -sk {quote(f"{data}/{DB_FILE}")} 2>/dev/null || echo 0',
        check=False,
    ).stdout.split("\n")
    fields = out[0].split() if out else []
    if len(fields) < 6 or not fields[3].isdigit():
        return None
    free_kb = int(fields[3])
    db_kb = int((out[1].split() or ["0"])[0]) if len(out) > 1 and out[1].split() else 0
    need_kb = 2 * db_kb + 2048  # a backup of the DB, a second during an upgrade, the files
    if free_kb < need_kb:
        return (
            f"the disk of {data} ({fields[0]}, mounted at {fields[5]}) has {free_kb} KiB free, "
            f"and the deploy needs {need_kb} KiB there for the DB's backup and the new files; "
            "free space on it and deploy again"
        )
    return None


# --- files and secrets ---------------------------------------------------------------------
