"""What a deploy would change, found without changing anything: the host is read in one
snapshot (containers, images, file contents and sums), and compared with the plan.

Each container carries a hash of what made it (spec, image ID and, for the hub, the config and
secret files): a deploy that changes nothing restarts nothing."""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from hubops_hub.labels import LABEL_HASH
from pydantic import SecretStr

from hubops.config.settings import Environment
from hubops.deploy import firewall, network, tls
from hubops.deploy.firewall import Layout
from hubops.deploy.state import config_path, saved_paths, secrets_differ, secrets_dir
from hubops.host import docker as dockerhost
from hubops.host.base import Host, quote
from hubops.host.files import file_host
from hubops.plan.model import CONFIG_FILE, ContainerSpec, Plan

ROLES = ("proxy", "hub")  # start order: the proxy first, so that it keeps user routes


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


def take_snapshot(
    host: Host, plan: Plan, settings: Environment, files: Host | None
) -> dockerhost.Snapshot:
    """Everything a deploy compares, read from the host in one command (two for a deploy
    user that is not root: the engine's state, then the files through a root helper)."""
    _config, config_prev, _, secrets_prev = saved_paths(settings)
    return dockerhost.snapshot(
        host,
        read=[config_path(settings), *tls_files(settings)],
        images=list(dict.fromkeys([*plan.images, *(c.image for c in plan.containers)])),
        containers=[
            *(c.name for c in plan.containers),
            *(f"{c.name}-previous" for c in plan.containers),  # a swap that was cut off
            firewall.name(plan.environment),
            f"{firewall.name(plan.environment)}-next",  # a firewall handover that was cut off
        ],
        sums=[
            *(quote(p) for p in plan.generated_secrets.values()),
            f"{quote(secrets_dir(settings))}/*",
            # files a deploy kept aside and has not dropped yet
            quote(config_prev),
            quote(f"{config_prev}.absent"),
            f"{quote(secrets_prev)}/*",
        ],
        files=files,
    )


def interrupted(snap: dockerhost.Snapshot, plan: Plan, settings: Environment) -> bool:
    """Whether an earlier deploy was cut off (its swap, or before it): see recover()."""
    _, config_prev, _, secrets_prev = saved_paths(settings)
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
    config_file = config_path(settings)
    current_config = snap.files[config_file]
    diff = "".join(
        difflib.unified_diff(
            (current_config or "").splitlines(keepends=True),
            config_text.splitlines(keepends=True),
            fromfile=f"{host.name}:{config_file}",
            tofile=f"build/{plan.environment}/{CONFIG_FILE}",
        )
    )
    missing = [ref for ref in plan.images if snap.image_id(ref) is None]
    secrets_changed = secrets_differ(snap, settings, secrets)
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
        elif dockerhost.labels(have).get(LABEL_HASH) != spec_hash(
            snap, spec, hub_inputs(snap, config_text) if role == "hub" else {}
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


def firewall_spec(plan: Plan, settings: Environment, layout: Layout) -> ContainerSpec:
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
    if dockerhost.labels(have).get(LABEL_HASH) != spec_hash(
        snap, firewall_spec(plan, settings, layout), {}
    ):
        return "apply the changed rules"
    if not dockerhost.is_running(have):
        return "apply the rules again (its container does not run)"
    return None


def tls_files(settings: Environment) -> list[str]:
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
    files = tls_files(settings)
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


def tls_problem(settings: Environment, snap: dockerhost.Snapshot, host: Host) -> str | None:
    files = tls_files(settings)
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


def spec_hash(snap: dockerhost.Snapshot, spec: ContainerSpec, inputs: dict[str, str]) -> str:
    image = snap.image_id(spec.image) or spec.image
    payload = json.dumps({"spec": spec.model_dump(), "image": image, **inputs}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def hub_inputs(snap: dockerhost.Snapshot, config_text: str) -> dict[str, str]:
    """What the hub reads at start-up besides its spec: the config and the secret files."""
    live = "\n".join(line for line in snap.sums.splitlines() if ".previous" not in line)
    return {
        "config": hashlib.sha256(config_text.encode()).hexdigest(),
        "secrets": hashlib.sha256(live.encode()).hexdigest(),
    }


def image_of(container: dict[str, Any] | None) -> str | None:
    if container is None:
        return None
    image = (container.get("Config") or {}).get("Image")
    return str(image) if image else None
