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

import difflib
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hubops_hub.labels import LABEL_HASH, LABEL_JH
from pydantic import SecretStr

from hubops.config.secrets import PROXY_TOKEN, REGISTRY_PASSWORD
from hubops.config.settings import Environment
from hubops.deploy import firewall, network, swarm, tls
from hubops.deploy import swap as swap_unit
from hubops.deploy.backup import backup, prune_backups, restore_command
from hubops.deploy.firewall import Layout
from hubops.errors import DeployError, HubopsError
from hubops.host import docker as dockerhost
from hubops.host import lock
from hubops.host.base import Host, quote
from hubops.host.files import file_host
from hubops.host.rootfiles import root_command
from hubops.plan.model import CONFIG_FILE, DB_FILE, HUB_PORT, PROXY_PORT, ContainerSpec, Plan

PROXY_GID = 65534  # the proxy image runs as 65534:65534 and must read its token file
ROLES = ("proxy", "hub")  # start order: the proxy first, so that it keeps user routes


ImageFetcher = Callable[[Host, list[str]], None]
Progress = Callable[[str], None]


@dataclass
class Changes:
    """What a deploy would change, found without changing anything."""

    config_diff: str
    missing_images: list[str]
    secrets_changed: bool
    containers: dict[str, str]  # role -> why it must be (re)started; absent: it stays
    # a deploy user that is not root, and no hubops image on the host to read its files with
    files_unread: bool = False
    firewall: str | None = None  # why the firewall container must be (re)made or removed

    @property
    def only_firewall(self) -> bool:
        return bool(self.firewall) and not (
            self.config_changed or self.missing_images or self.secrets_changed or self.containers
        )

    @property
    def config_changed(self) -> bool:
        return bool(self.config_diff)

    @property
    def nothing(self) -> bool:
        return not (
            self.config_changed
            or self.missing_images
            or self.secrets_changed
            or self.containers
            or self.firewall
        )

    def lines(self) -> list[str]:
        out = [f"image {ref}: fetch" for ref in self.missing_images]
        if self.config_changed:
            out.append("config: write the new jupyterhub_config.py (diff above)")
        if self.secrets_changed:
            out.append("secrets: update the hub's secret files")
        out += [f"container {role}: {why}" for role, why in self.containers.items()]
        if self.firewall:
            out.append(f"firewall: {self.firewall}")
        if self.files_unread:
            out.append(
                "files: not read (the deploy user is not root and no hubops image is on the "
                "host yet; the deploy reads them as root once it has fetched the images)"
            )
        return out or ["nothing to change"]


@dataclass
class DeployResult:
    environment: str
    public_url: str
    changes: Changes
    done: list[str] = field(default_factory=list)
    backup: str | None = None
    seconds: float = 0.0
    hub_unavailable_s: float = 0.0


def take_snapshot(
    host: Host, plan: Plan, settings: Environment, files: Host | None
) -> dockerhost.Snapshot:
    """Everything a deploy compares, read from the host in one command (two for a deploy
    user that is not root: the engine's state, then the files through a root helper)."""
    _config, config_prev, _, secrets_prev = _saved(settings)
    return dockerhost.snapshot(
        host,
        read=[_config_path(settings), *_tls_files(settings)],
        images=list(dict.fromkeys([*plan.images, *(c.image for c in plan.containers)])),
        containers=[
            *(c.name for c in plan.containers),
            *(f"{c.name}-previous" for c in plan.containers),  # a swap that was cut off
            firewall.name(plan.environment),
            f"{firewall.name(plan.environment)}-next",  # a firewall handover that was cut off
        ],
        sums=[
            *(quote(p) for p in plan.generated_secrets.values()),
            f"{quote(_secrets_dir(settings))}/*",
            # files a deploy kept aside and has not dropped yet
            quote(config_prev),
            quote(f"{config_prev}.absent"),
            f"{quote(secrets_prev)}/*",
        ],
        files=files,
    )


def interrupted(snap: dockerhost.Snapshot, plan: Plan, settings: Environment) -> bool:
    """Whether an earlier deploy was cut off (its swap, or before it): see recover()."""
    _, config_prev, _, secrets_prev = _saved(settings)
    marks = (config_prev, f"{config_prev}.absent", f"{secrets_prev}/")
    return any(f"{c.name}-previous" in snap.containers for c in plan.containers) or any(
        mark in line for line in snap.sums.splitlines() for mark in marks
    )


def find_changes(
    host: Host,
    plan: Plan,
    settings: Environment,
    config_text: str,
    secrets: dict[str, SecretStr],
    snap: dockerhost.Snapshot | None = None,
    layout: Layout | None = None,
) -> Changes:
    """What a deploy of ``plan`` would change. Without ``snap`` (a dry run), the host is read
    here and the plan takes the addresses of the network as it is (None: it has none yet)."""
    unread = False
    if snap is None:
        layout = network.layout(host, plan)
        if layout is not None:
            plan = network.pinned(plan, layout)
        reader = file_host(host, plan)
        unread = reader is None
        snap = take_snapshot(host, plan, settings, reader)
    config_path = _config_path(settings)
    current_config = snap.files[config_path]
    diff = "".join(
        difflib.unified_diff(
            (current_config or "").splitlines(keepends=True),
            config_text.splitlines(keepends=True),
            fromfile=f"{host.name}:{config_path}",
            tofile=f"build/{plan.environment}/{CONFIG_FILE}",
        )
    )
    missing = [ref for ref in plan.images if snap.image_id(ref) is None]
    secrets_changed = _secrets_differ(snap, settings, secrets)
    containers: dict[str, str] = {}
    for role in ROLES:
        spec = plan.container(role)
        have = snap.containers.get(spec.name)
        if have is None:
            containers[role] = "start (none running)"
        elif spec.image in missing:
            containers[role] = "replace (new image)"
        elif role == "hub" and (diff or secrets_changed):
            containers[role] = "replace (config or secrets changed)"
        elif dockerhost.labels(have).get(LABEL_HASH) != _spec_hash(
            snap, spec, _hub_inputs(snap, config_text) if role == "hub" else {}
        ):
            containers[role] = "replace (spec or image changed)"
        elif not dockerhost.is_running(have):
            containers[role] = "replace (not running)"
    stale = _stale_certificate(host, plan, settings, snap, containers)
    if stale:
        containers["proxy"] = stale
    return Changes(
        diff,
        missing,
        secrets_changed,
        containers,
        files_unread=unread,
        firewall=_firewall_change(snap, plan, settings, layout),
    )


def _firewall_spec(plan: Plan, settings: Environment, layout: Layout) -> ContainerSpec:
    return firewall.container_spec(plan.environment, settings, layout, plan.container("hub").image)


def _firewall_change(
    snap: dockerhost.Snapshot, plan: Plan, settings: Environment, layout: Layout | None
) -> str | None:
    name = firewall.name(plan.environment)
    have = snap.containers.get(name)
    if f"{name}-next" in snap.containers:
        return f"apply the rules (a {name}-next of a deploy that was cut off is left)"
    if not settings.network.isolation:
        return "remove it and its rules (network.isolation is false)" if have else None
    if layout is None:
        return "apply the rules (the network gets its layout first)"
    if have is None:
        return "apply the rules (none kept yet)"
    if dockerhost.labels(have).get(LABEL_HASH) != _spec_hash(
        snap, _firewall_spec(plan, settings, layout), {}
    ):
        return "apply the changed rules"
    if not dockerhost.is_running(have):
        return "apply the rules again (its container does not run)"
    return None


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
    spec = _firewall_spec(plan, settings, layout)
    snap = dockerhost.snapshot(
        host, read=[], images=[spec.image], containers=[], sums=[], files=None
    )
    host.run(
        dockerhost.create_command(
            spec.model_copy(update={"name": nxt}), {LABEL_HASH: _spec_hash(snap, spec, {})}
        )
    )
    old = dockerhost.inspect(host, "container", name)
    if old is not None:
        host.run(quote("docker", "stop", "--time", "5", name), check=False)
    host.run(quote("docker", "start", nxt))
    progress("firewall: applying the rules")
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


def _tls_files(settings: Environment) -> list[str]:
    tls = settings.tls
    return [tls.cert, tls.key] if tls.enabled and tls.cert and tls.key else []


def _stale_certificate(
    host: Host,
    plan: Plan,
    settings: Environment,
    snap: dockerhost.Snapshot,
    containers: dict[str, str],
) -> str | None:
    """Why the running proxy must be replaced for the certificate on disk (None: it need not).

    The proxy reads the certificate when it starts: after a renewal it serves the old one.
    """
    files = _tls_files(settings)
    if not files or "proxy" in containers or "hub" in containers:
        return None
    on_disk = snap.files.get(files[0])
    served = tls.served_certificate(host, plan)
    if on_disk is None or served is None or tls.same_certificate(served, on_disk):
        return None
    return (
        f"reload (it serves {tls.fingerprint(served)[:23]}..., {files[0]} is "
        f"{tls.fingerprint(on_disk)[:23]}...)"
    )


def _tls_problem(settings: Environment, snap: dockerhost.Snapshot, host: Host) -> str | None:
    files = _tls_files(settings)
    if not files:
        return None
    cert, key = files
    for path, key_name in ((cert, "tls.cert"), (key, "tls.key")):
        if snap.files.get(path) is None:
            return (
                f"{key_name}: {path} is missing or unreadable on {host.name}; put the "
                f"{'certificate chain' if key_name == 'tls.cert' else 'private key'} there "
                f"or fix {key_name}"
            )
    problem = tls.key_problem(snap.files[cert] or "", snap.files[key] or "", cert, key)
    return f"tls.key: {problem}; use the key the certificate was issued for" if problem else None


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
    progress: Progress = lambda _: None,
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
    held = lock.acquire(host, plan.environment, wait=lock_wait, break_lock=break_lock)
    progress(f"took the deploy lock ({held.holder})")
    handed_over = False

    def hand_over() -> None:
        nonlocal handed_over
        handed_over = True

    try:
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
            hand_over,
        )
    finally:
        if not handed_over:
            lock.release(host, held)
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
    held: lock.Lock,
    hand_over: Callable[[], None],
) -> DeployResult:
    fetched: list[str] = []
    files = file_host(host, plan)
    if files is None:  # not root, and no hubops image on the host yet: fetch them first
        snap = take_snapshot(host, plan, settings, None)
        fetched = [ref for ref in plan.images if snap.image_id(ref) is None]
        progress(f"fetching {len(fetched)} image(s)")
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
            progress(f"repairing the network: {broken}")
            recovered += network.repair(host, plan)[1]
            # the new network has a new bridge: the firewall finds it when it starts
            host.run(quote("docker", "restart", firewall.name(plan.environment)), check=False)
    problem = _tls_problem(settings, snap, host) or _disk_problem(files, settings)
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
        _wait_healthy(host, plan, settings, timeout=health_timeout)
        return result

    paths = settings.paths
    hub = plan.container("hub")
    old_hub = snap.containers.get(hub.name)
    if changes.missing_images:  # first: a non-root deploy user's file work needs an image
        progress(f"fetching {len(changes.missing_images)} image(s)")
        fetch_images(host, changes.missing_images)
        result.done += [f"fetched {ref}" for ref in changes.missing_images]
    if changes.firewall:
        result.done.append(_apply_firewall(host, plan, settings, layout, progress))
    if changes.only_firewall:
        _wait_healthy(host, plan, settings, timeout=health_timeout)
        return result
    _make_dirs(files, plan)
    if files.run(f"test -s {quote(f'{paths.data_dir}/{DB_FILE}')}", check=False).ok:
        progress("backing up the DB, cookie secret and config")
        result.backup = backup(
            host, settings, _image_of(old_hub) or hub.image, hub.name, files=files
        )
        result.done.append(f"backup {result.backup}")
    progress("keeping the current config and secret files aside")
    files.run(_save_state(settings))
    try:
        if changes.secrets_changed:
            _write_secrets(files, settings, secrets)
            result.done.append("secrets written")
        result.done += [f"generated {name}" for name in _generate_secrets(files, plan)]
        if changes.config_changed:
            write_atomic(files, _config_path(settings), config_text, mode="0644")
            result.done.append(f"config {_config_path(settings)}")
        swap = _swap_for(
            host, files, plan, settings, changes, config_text, result, held, health_timeout
        )
    except BaseException:
        files.run(_restore_state(settings), check=False)
        raise
    progress("handing the swap to the host (it finishes or rolls back on its own)")
    stopped_at = time.monotonic()
    outcome = swap_unit.run_detached(
        host, swap, progress, timeout=health_timeout + 240, on_started=hand_over
    )
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
    held: lock.Lock,
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
        LABEL_HASH: _spec_hash(snap, hub, _hub_inputs(snap, config_text)),
        **({LABEL_JH: new_version} if new_version else {}),
    }
    replace_proxy = "proxy" in changes.containers
    return swap_unit.Swap(
        environment=plan.environment,
        hub=hub.name,
        proxy=proxy.name,
        create_hub=dockerhost.create_command(hub, labels),
        create_proxy=(
            dockerhost.create_command(proxy, {LABEL_HASH: _spec_hash(snap, proxy, {})})
            if replace_proxy
            else None
        ),
        health_urls=_health_urls(plan, settings),
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
        restore_files=root_command(files, _restore_state(settings)),
        finish=[root_command(files, _drop_state(settings)) + " || true"],
        lock=held,
    )


def recover(
    host: Host,
    files: Host,
    plan: Plan,
    settings: Environment,
    health_timeout: float,
    progress: Progress,
) -> list[str]:
    """Before anything else: finish or undo a swap that was cut off (the host restarted under
    the unit, say), and put back the files of a deploy that was killed before its swap.
    Returns what was done."""
    hub, proxy = plan.container("hub"), plan.container("proxy")
    names = [hub.name, f"{hub.name}-previous", proxy.name, f"{proxy.name}-previous"]
    state = dockerhost.snapshot(host, read=[], images=[], containers=names, sums=[], files=host)
    have = state.containers
    previous = [n for n in names if n.endswith("-previous") and n in have]
    current = have.get(hub.name)
    if previous and current is not None and dockerhost.is_running(current):
        try:
            _wait_healthy(host, plan, settings, timeout=min(health_timeout, 30))
        except HubopsError:
            pass
        else:  # the new hub serves: the swap was done, only its clean-up was cut off
            files.run(_drop_state(settings), check=False)
            host.run(quote("docker", "rm", "-f", *previous), check=False)
            progress("finished an earlier swap that was cut off after the new hub was healthy")
            return ["finished an interrupted swap"]
    if not previous:  # killed before its swap: the running hub goes with the saved files
        files.run(_restore_state(settings), check=False)
        progress("put back the config and secret files of a deploy killed before its swap")
        return ["restored the files of an interrupted deploy"]
    progress("an earlier swap was cut off before the new hub was healthy: rolling it back")
    for name in (hub.name, proxy.name):
        if f"{name}-previous" in have:
            host.run(quote("docker", "rm", "-f", name), check=False)
            host.run(quote("docker", "rename", f"{name}-previous", name))
            host.run(quote("docker", "start", name), check=False)
    files.run(_restore_state(settings), check=False)
    _wait_healthy(host, plan, settings, timeout=health_timeout)
    return ["rolled back an interrupted swap"]


# --- containers ------------------------------------------------------------------------------


def _spec_hash(snap: dockerhost.Snapshot, spec: ContainerSpec, inputs: dict[str, str]) -> str:
    image = snap.image_id(spec.image) or spec.image
    payload = json.dumps({"spec": spec.model_dump(), "image": image, **inputs}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def _hub_inputs(snap: dockerhost.Snapshot, config_text: str) -> dict[str, str]:
    """What the hub reads at start-up besides its spec: the config and the secret files."""
    live = "\n".join(line for line in snap.sums.splitlines() if ".previous" not in line)
    return {
        "config": hashlib.sha256(config_text.encode()).hexdigest(),
        "secrets": hashlib.sha256(live.encode()).hexdigest(),
    }


def _config_path(settings: Environment) -> str:
    return f"{settings.paths.config_dir}/{CONFIG_FILE}"


def _secrets_dir(settings: Environment) -> str:
    return f"{settings.paths.data_dir}/secrets"


def _image_of(container: dict[str, Any] | None) -> str | None:
    if container is None:
        return None
    image = (container.get("Config") or {}).get("Image")
    return str(image) if image else None


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


def _saved(settings: Environment) -> tuple[str, str, str, str]:
    config = _config_path(settings)
    secrets = _secrets_dir(settings)
    return config, f"{config}.previous", secrets, f"{secrets}.previous"


def _save_state(settings: Environment) -> str:
    """Root's command that keeps the config and secret files aside (for the rollback)."""
    config, config_prev, secrets, secrets_prev = (quote(p) for p in _saved(settings))
    return (
        f"rm -rf {config_prev} {secrets_prev} && "
        f"if [ -e {config} ]; then cp -p {config} {config_prev}; "
        f"else printf '' > {config_prev}.absent; fi && "
        f"if [ -d {secrets} ]; then cp -a {secrets} {secrets_prev}; fi"
    )


def _restore_state(settings: Environment) -> str:
    """Root's command that puts the files kept aside back (nothing when none were)."""
    config, config_prev, secrets, secrets_prev = (quote(p) for p in _saved(settings))
    return (
        f"if [ -e {config_prev} ]; then mv -f {config_prev} {config}; fi; "
        f"if [ -e {config_prev}.absent ]; then rm -f {config} {config_prev}.absent; fi; "
        f"if [ -d {secrets_prev} ]; then rm -rf {secrets} && mv {secrets_prev} {secrets}; fi; "
        "true"
    )


def _drop_state(settings: Environment) -> str:
    _config, config_prev, _secrets, secrets_prev = (quote(p) for p in _saved(settings))
    return f"rm -rf {config_prev} {config_prev}.absent {secrets_prev}"


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


def _health_urls(plan: Plan, settings: Environment) -> list[str]:
    """/hub/health on the hub itself and through the proxy (asked from inside the hub)."""
    proxy = plan.container("proxy")
    scheme = "https" if settings.tls.enabled else "http"
    prefix = ("/" + settings.public_url.split("://", 1)[1].partition("/")[2]).rstrip("/")
    return [
        f"http://127.0.0.1:{HUB_PORT}{prefix}/hub/health",
        f"{scheme}://{proxy.name}:{PROXY_PORT}{prefix}/hub/health",
    ]


def _wait_healthy(host: Host, plan: Plan, settings: Environment, timeout: float) -> None:
    """/hub/health answers on the hub itself and through the proxy (checked from the hub)."""
    hub = plan.container("hub")
    urls = _health_urls(plan, settings)
    deadline = time.monotonic() + timeout
    while True:
        # short rounds: a hub that crashes is noticed between them
        left = min(max(deadline - time.monotonic(), 1.0), 5.0)
        result = host.run(
            quote(
                "docker",
                "exec",
                hub.name,
                "python3",
                "-c",
                swap_unit.HEALTH_SCRIPT,
                f"{left:.0f}",
                *urls,
            ),
            check=False,
            timeout=left + 30,
        )
        if result.ok:
            return
        state = dockerhost.inspect(host, "container", hub.name)
        status = ((state or {}).get("State") or {}).get("Status")
        if status in ("exited", "dead", None):
            raise HubopsError(f"{hub.name} is {status or 'gone'}")
        if time.monotonic() >= deadline:
            raise HubopsError(f"not healthy: {(result.stderr or result.stdout).strip()[-300:]}")
        time.sleep(0.3)


# --- files and secrets ---------------------------------------------------------------------


def _make_dirs(host: Host, plan: Plan) -> None:
    for d in plan.host_dirs:
        host.run(
            quote("install", "-d", "-m", f"{d.mode:o}", "-o", str(d.uid), "-g", str(d.gid), d.path)
        )


def write_atomic(host: Host, path: str, text: str, mode: str, group: int = 0) -> None:
    """Write via a temp file in the same directory, then rename: never a half-written file.

    The content travels on stdin, never on a command line.
    """
    tmp = f"{path}.hubops-tmp"
    host.run(
        f"umask 077; cat > {quote(tmp)} && chown 0:{group} {quote(tmp)} && "
        f"chmod {mode} {quote(tmp)} && mv -f {quote(tmp)} {quote(path)}",
        stdin=text,
    )


def _secret_path(settings: Environment, name: str) -> str:
    return f"{settings.paths.data_dir}/secrets/{name}"


def _hub_secrets(secrets: dict[str, SecretStr]) -> dict[str, SecretStr]:
    """The secrets the hub reads (the registry password is for pulls only, never stored)."""
    return {k: v for k, v in secrets.items() if k != REGISTRY_PASSWORD.name}


def _secrets_differ(
    snap: dockerhost.Snapshot, settings: Environment, secrets: dict[str, SecretStr]
) -> bool:
    """Whether the hub's secret files on the host differ from ``secrets`` (by hash only)."""
    have = {}
    for line in snap.sums.splitlines():
        digest, _, path = line.partition("  ")
        have[path.strip()] = digest
    return any(
        have.get(_secret_path(settings, name))
        != hashlib.sha256(value.get_secret_value().encode()).hexdigest()
        for name, value in _hub_secrets(secrets).items()
    )


def _write_secrets(host: Host, settings: Environment, secrets: dict[str, SecretStr]) -> None:
    for name, value in sorted(_hub_secrets(secrets).items()):
        write_atomic(host, _secret_path(settings, name), value.get_secret_value(), mode="0600")


def _generate_secrets(host: Host, plan: Plan) -> list[str]:
    """Make the cookie secret and proxy token on the host, once; they never leave it."""
    made = []
    for name, path in plan.generated_secrets.items():
        group, mode = (PROXY_GID, "0640") if name == PROXY_TOKEN.name else (0, "0600")
        p = quote(path)
        result = host.run(
            f"if [ -s {p} ]; then echo kept; else umask 077; "
            f"head -c 32 /dev/urandom | od -An -vtx1 | tr -d ' \\n' > {p}.tmp && "
            f"chown 0:{group} {p}.tmp && chmod {mode} {p}.tmp && mv -f {p}.tmp {p} && "
            "echo made; fi"
        )
        if result.stdout.strip() == "made":
            made.append(name)
    return made
