"""``invoke deploy``: put the rendered hub on its host, atomically and idempotently.

Order: host directories, backup (online SQLite backup, cookie secret, config), secrets,
images (pull or transfer), network, config (temp file + rename), proxy, DB upgrade when
JupyterHub's version changes, hub, health. The proxy is its own container and JupyterHub does
not stop user servers on shutdown, so replacing the hub neither stops nor disconnects them.

Each container carries a hash of what made it (spec, image ID and, for the hub, the config and
secret files): a deploy that changes nothing restarts nothing. If the new hub is not healthy in
time, the previous config, container, image and DB come back, and the error quotes its log.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import SecretStr

from hubops import dockerhost, tls
from hubops.backup import backup, prune_backups, restore_files
from hubops.errors import HubopsError
from hubops.hosts import Host, quote
from hubops.plan import (
    CONFIG_FILE,
    DB_FILE,
    HUB_PORT,
    LABEL_PREFIX,
    PROXY_PORT,
    ContainerSpec,
    Plan,
)
from hubops.rootfiles import root_files
from hubops.secrets import PROXY_TOKEN, REGISTRY_PASSWORD
from hubops.settings import Environment

LABEL_HASH = f"{LABEL_PREFIX}.spec-hash"
LABEL_JH = f"{LABEL_PREFIX}.jupyterhub.version"
PROXY_GID = 65534  # the proxy image runs as 65534:65534 and must read its token file
ROLES = ("proxy", "hub")  # start order: the proxy first, so that it keeps user routes


class DeployError(HubopsError):
    """The deploy failed; what it changed has been rolled back."""


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

    @property
    def config_changed(self) -> bool:
        return bool(self.config_diff)

    @property
    def nothing(self) -> bool:
        return not (
            self.config_changed or self.missing_images or self.secrets_changed or self.containers
        )

    def lines(self) -> list[str]:
        out = [f"image {ref}: fetch" for ref in self.missing_images]
        if self.config_changed:
            out.append("config: write the new jupyterhub_config.py (diff above)")
        if self.secrets_changed:
            out.append("secrets: update the hub's secret files")
        out += [f"container {role}: {why}" for role, why in self.containers.items()]
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


def helper_images(plan: Plan) -> list[str]:
    """Images of the plan that can do root's file work for a non-root deploy user."""
    return [_spec(plan, "hub").image, _spec(plan, "proxy").image]


def file_host(host: Host, plan: Plan) -> Host | None:
    """Who does root's file work on ``host`` (see hubops.rootfiles); None: nobody can yet (a
    deploy user that is not root, and no hubops image on the host)."""

    def candidates() -> list[str]:
        running = dockerhost.inspect(host, "container", _spec(plan, "hub").name)
        return [*helper_images(plan), *([str(running["Image"])] if running else [])]

    return root_files(host, candidates)


def take_snapshot(
    host: Host, plan: Plan, settings: Environment, files: Host | Literal["same"] | None = "same"
) -> dockerhost.Snapshot:
    """Everything a deploy compares, read from the host in one command (two for a deploy
    user that is not root: the engine's state, then the files through a root helper)."""
    return dockerhost.snapshot(
        host,
        read=[_config_path(settings), *_tls_files(settings)],
        images=list(dict.fromkeys([*plan.images, *(c.image for c in plan.containers)])),
        containers=[c.name for c in plan.containers],
        sums=[
            *(quote(p) for p in plan.generated_secrets.values()),
            f"{quote(_secrets_dir(settings))}/*",
        ],
        files=_same(host, files),
    )


def _same(host: Host, files: Host | Literal["same"] | None) -> Host | Literal["same"] | None:
    return "same" if files is host else files


def find_changes(
    host: Host,
    plan: Plan,
    settings: Environment,
    config_text: str,
    secrets: dict[str, SecretStr],
    snap: dockerhost.Snapshot | None = None,
) -> Changes:
    unread = False
    if snap is None:
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
        spec = _spec(plan, role)
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
    return Changes(diff, missing, secrets_changed, containers, files_unread=unread)


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
) -> DeployResult:
    """Make the host run ``plan`` with ``config_text``; roll back if the new hub fails.

    ``host`` may log in as root or as a member of the docker group: root's file work then
    goes through a helper container (hubops.rootfiles), after the images are on the host.
    """
    start = time.monotonic()
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
    problem = _tls_problem(settings, snap, host)
    if problem:
        raise DeployError(f"{problem}. Nothing was changed.")
    changes = find_changes(host, plan, settings, config_text, secrets, snap)
    result = DeployResult(plan.environment, plan.public_url, changes)
    result.done += [f"fetched {ref}" for ref in fetched]
    if changes.nothing:
        _wait_healthy(host, plan, settings, timeout=health_timeout)
        result.seconds = time.monotonic() - start
        return result

    paths = settings.paths
    config_path = _config_path(settings)
    hub = _spec(plan, "hub")
    old_hub = snap.containers.get(hub.name)
    if changes.missing_images:  # first: a non-root deploy user's file work needs an image
        progress(f"fetching {len(changes.missing_images)} image(s)")
        fetch_images(host, changes.missing_images)
        result.done += [f"fetched {ref}" for ref in changes.missing_images]
    _make_dirs(files, plan)
    if files.run(f"test -s {quote(f'{paths.data_dir}/{DB_FILE}')}", check=False).ok:
        progress("backing up the DB, cookie secret and config")
        result.backup = backup(
            host, settings, _image_of(old_hub) or hub.image, hub.name, files=files
        )
        prune_backups(files, settings, keep_backups)
        result.done.append(f"backup {result.backup}")
    old_config = snap.files[config_path]
    if changes.secrets_changed:
        _write_secrets(files, settings, secrets)
        result.done.append("secrets written")
    result.done += [f"generated {name}" for name in _generate_secrets(files, plan)]
    if dockerhost.inspect(host, "network", plan.network) is None:
        host.run(
            quote(
                "docker",
                "network",
                "create",
                "--driver",
                "bridge",
                "--label",
                f"{LABEL_PREFIX}.environment={plan.environment}",
                plan.network,
            )
        )
        result.done.append(f"network {plan.network}")
    if changes.config_changed:
        write_atomic(files, config_path, config_text, mode="0644")
        result.done.append(f"config {config_path}")

    def restore_config() -> None:
        if changes.config_changed:
            if old_config is None:
                files.run(f"rm -f {quote(config_path)}", check=False)
            else:
                write_atomic(files, config_path, old_config, mode="0644")

    snap = take_snapshot(host, plan, settings, files)  # images and secret files as they are now
    try:
        if "proxy" in changes.containers:
            proxy = _spec(plan, "proxy")
            progress(f"starting {proxy.name}")
            _recreate(host, proxy, {LABEL_HASH: _spec_hash(snap, proxy, {})})
            result.done.append(f"proxy {proxy.name}")
    except HubopsError:
        restore_config()
        raise
    if "hub" in changes.containers or "proxy" in changes.containers:
        progress(f"starting {hub.name}")
        want = _spec_hash(snap, hub, _hub_inputs(snap, config_text))
        result.hub_unavailable_s = _replace_hub(
            host, files, plan, settings, want, old_hub, health_timeout, progress, restore_config
        )
        result.done.append(f"hub {hub.name}")
    result.seconds = time.monotonic() - start
    return result


# --- containers ------------------------------------------------------------------------------


def _spec(plan: Plan, role: str) -> ContainerSpec:
    return next(c for c in plan.containers if c.role == role)


def _spec_hash(snap: dockerhost.Snapshot, spec: ContainerSpec, inputs: dict[str, str]) -> str:
    image = snap.image_id(spec.image) or spec.image
    payload = json.dumps({"spec": spec.model_dump(), "image": image, **inputs}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def _hub_inputs(snap: dockerhost.Snapshot, config_text: str) -> dict[str, str]:
    """What the hub reads at start-up besides its spec: the config and the secret files."""
    return {
        "config": hashlib.sha256(config_text.encode()).hexdigest(),
        "secrets": hashlib.sha256(snap.sums.encode()).hexdigest(),
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


def _recreate(host: Host, spec: ContainerSpec, labels: dict[str, str]) -> None:
    dockerhost.remove(host, spec.name)
    host.run(dockerhost.create_command(spec, labels))
    host.run(quote("docker", "start", spec.name))


def _replace_hub(
    host: Host,
    files: Host,
    plan: Plan,
    settings: Environment,
    want: str,
    old: dict[str, Any] | None,
    health_timeout: float,
    progress: Progress,
    restore_config: Callable[[], None],
) -> float:
    """Stop the old hub (kept as <name>-previous), start the new one, wait until healthy.

    Returns the seconds the hub was unavailable. On failure the previous config, DB (when it
    was upgraded) and hub come back, in that order, and the previous hub is healthy again.
    """
    spec = _spec(plan, "hub")
    previous = f"{spec.name}-previous"
    dockerhost.remove(host, previous)
    upgraded = False
    stopped_at = time.monotonic()
    if old is not None:
        progress("stopping the old hub")
        host.run(quote("docker", "stop", "--time", "20", spec.name))
        host.run(quote("docker", "rename", spec.name, previous))
        progress("old hub stopped")
    new_version = _image_label(host, spec.image, LABEL_JH)
    try:
        old_version = dockerhost.labels(old).get(LABEL_JH) if old else None
        if old_version and new_version and old_version != new_version:
            progress(f"upgrading the DB from JupyterHub {old_version} to {new_version}")
            upgraded = True
            _upgrade_db(host, settings, spec.image)
        labels = {LABEL_HASH: want, **({LABEL_JH: new_version} if new_version else {})}
        host.run(dockerhost.create_command(spec, labels))
        host.run(quote("docker", "start", spec.name))
        progress("new hub started; waiting for /hub/health")
        _wait_healthy(host, plan, settings, timeout=health_timeout)
        progress("new hub healthy")
    except HubopsError as exc:
        hub_log = dockerhost.logs(host, spec.name)
        dockerhost.remove(host, spec.name)
        restore_config()
        back = "state (no hub ran before)"
        if old is not None:
            if upgraded:
                restore_files(files, settings, db_only=True)
            host.run(quote("docker", "rename", previous, spec.name))
            host.run(quote("docker", "start", spec.name))
            try:
                _wait_healthy(host, plan, settings, timeout=health_timeout)
                back = "hub, config and DB, which serve again"
            except HubopsError as again:
                back = f"hub, config and DB, but it is not healthy either ({again})"
        raise DeployError(
            f"the new hub did not become healthy ({exc}); rolled back to the previous {back}. "
            f"The new hub's log ends:\n{hub_log}"
        ) from None
    dockerhost.remove(host, previous)
    return time.monotonic() - stopped_at if old is not None else 0.0


def _image_label(host: Host, ref: str, key: str) -> str | None:
    found = dockerhost.inspect(host, "image", ref)
    value = ((found or {}).get("Config") or {}).get("Labels") or {}
    return str(value[key]) if value.get(key) else None


def _upgrade_db(host: Host, settings: Environment, image: str) -> None:
    data = settings.paths.data_dir
    host.run(
        quote(
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
        ),
        timeout=300,
    )


HEALTH_SCRIPT = """
import ssl, sys, time, urllib.request
deadline = time.monotonic() + float(sys.argv[1])
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
while True:
    try:
        for url in sys.argv[2:]:
            urllib.request.urlopen(url, timeout=3, context=ctx).read()
        sys.exit(0)
    except Exception as exc:
        if time.monotonic() > deadline:
            sys.exit(f"{url}: {exc}")
        time.sleep(0.2)
"""


def _wait_healthy(host: Host, plan: Plan, settings: Environment, timeout: float) -> None:
    """/hub/health answers on the hub itself and through the proxy (checked from the hub)."""
    hub, proxy = _spec(plan, "hub"), _spec(plan, "proxy")
    scheme = "https" if settings.tls.enabled else "http"
    prefix = ("/" + settings.public_url.split("://", 1)[1].partition("/")[2]).rstrip("/")
    urls = [
        f"http://127.0.0.1:{HUB_PORT}{prefix}/hub/health",
        f"{scheme}://{proxy.name}:{PROXY_PORT}{prefix}/hub/health",
    ]
    deadline = time.monotonic() + timeout
    while True:
        # short rounds: a hub that crashes is noticed between them
        left = min(max(deadline - time.monotonic(), 1.0), 5.0)
        result = host.run(
            quote("docker", "exec", hub.name, "python3", "-c", HEALTH_SCRIPT, f"{left:.0f}", *urls),
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


def reload_certificate(
    host: Host, plan: Plan, settings: Environment, health_timeout: float = 90
) -> str:
    """Make the proxy serve the certificate on disk: restart it (it copies the certificate
    when it starts), then the hub (which puts every user's route back into the proxy). User
    servers keep running and users stay logged in. Returns what was done."""
    files = _tls_files(settings)
    if not files:
        raise HubopsError(f"{plan.environment}: tls.enabled is false; there is no certificate")
    reader = file_host(host, plan)
    if reader is None:
        raise HubopsError(f"{host.name}: no hubops image on the host; deploy first")
    snap = dockerhost.snapshot(
        host, read=files, images=[], containers=[], sums=[], files=_same(host, reader)
    )
    problem = _tls_problem(settings, snap, host)
    if problem:
        raise HubopsError(f"{problem}; the proxy keeps serving the old certificate")
    served = tls.served_certificate(host, plan)
    on_disk = snap.files[files[0]] or ""
    if served is not None and tls.same_certificate(served, on_disk):
        return f"the proxy already serves {files[0]} ({tls.fingerprint(on_disk)[:23]}...)"
    proxy, hub = _spec(plan, "proxy"), _spec(plan, "hub")
    host.run(quote("docker", "restart", "--time", "10", proxy.name))
    host.run(quote("docker", "restart", "--time", "20", hub.name))
    _wait_healthy(host, plan, settings, timeout=health_timeout)
    served = tls.served_certificate(host, plan)
    if served is None or not tls.same_certificate(served, on_disk):
        raise HubopsError(
            f"{proxy.name} was restarted but does not serve {files[0]}; see docker logs "
            f"{proxy.name}"
        )
    return f"the proxy serves {files[0]} now ({tls.fingerprint(on_disk)[:23]}...)"
