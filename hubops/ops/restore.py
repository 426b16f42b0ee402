"""Day-two work on a deployed hub that takes the deploy's lock and hands over as a deploy
does: a DB restore from a backup, and serving a renewed TLS certificate."""

from __future__ import annotations

from hubops.config.settings import Environment
from hubops.deploy import network, tls
from hubops.deploy import swap as swap_unit
from hubops.deploy.backup import backup, list_backups, restore_command, restore_files
from hubops.deploy.changes import image_of, tls_files, tls_problem
from hubops.deploy.health import health_urls, wait_healthy
from hubops.deploy.recover import recover
from hubops.deploy.state import drop_state, journal, restore_state, save_state
from hubops.deploy.steps import Progress, Step, quiet
from hubops.errors import BackupError, HubopsError
from hubops.host import docker as dockerhost
from hubops.host import lock
from hubops.host.base import Host, quote
from hubops.host.files import file_host
from hubops.host.rootfiles import root_command
from hubops.plan.model import Plan


def reload_certificate(
    host: Host, plan: Plan, settings: Environment, health_timeout: float = 90
) -> str:
    """Make the proxy serve the certificate on disk: restart it (it copies the certificate
    when it starts), then the hub (which puts every user's route back into the proxy). User
    servers keep running and users stay logged in. Returns what was done."""
    files = tls_files(settings)
    if not files:
        raise HubopsError(f"{plan.environment}: tls.enabled is false; there is no certificate")
    reader = file_host(host, plan)
    if reader is None:
        raise HubopsError(f"{host.name}: no hubops image on the host; deploy first")
    snap = dockerhost.snapshot(host, read=files, images=[], containers=[], sums=[], files=reader)
    problem = tls_problem(settings, snap, host)
    if problem:
        raise HubopsError(f"{problem}; the proxy keeps serving the old certificate")
    served = tls.served_certificate(host, plan)
    on_disk = snap.files[files[0]] or ""
    if served is not None and tls.same_certificate(served, on_disk):
        return f"the proxy already serves {files[0]} ({tls.fingerprint(on_disk)[:23]}...)"
    proxy, hub = plan.container("proxy"), plan.container("hub")
    host.run(quote("docker", "restart", "--time", "10", proxy.name))
    host.run(quote("docker", "restart", "--time", "20", hub.name))
    wait_healthy(host, plan, settings, timeout=health_timeout)
    served = tls.served_certificate(host, plan)
    if served is None or not tls.same_certificate(served, on_disk):
        raise HubopsError(
            f"{proxy.name} was restarted but does not serve {files[0]}; see docker logs "
            f"{proxy.name}"
        )
    return f"the proxy serves {files[0]} now ({tls.fingerprint(on_disk)[:23]}...)"


def restore_backup(
    host: Host,
    plan: Plan,
    settings: Environment,
    stamp: str,
    *,
    health_timeout: float = 90,
    progress: Progress = quiet,
    lock_wait: float = 0,
) -> str:
    """``invoke db.restore``: the DB, cookie secret and config of backup ``stamp`` replace the
    current ones, through the deploy's path: the lock, a backup of the current state first
    (returned: a restore can itself be undone), and the swap unit, which stops the hub, copies
    the files, starts it again and waits until it is healthy, or puts everything back."""
    with lock.held(host, plan.environment, wait=lock_wait) as held:
        files = file_host(host, plan)
        if files is None:
            raise HubopsError(f"{host.name}: no hubops image on the host yet; deploy first")
        recover(host, files, plan, settings, health_timeout, progress)
        known = list_backups(files, settings)
        if stamp not in known:
            restore_files(files, settings, stamp)  # raises, listing the backups
        layout = network.layout(host, plan)
        if layout is not None:
            plan = network.pinned(plan, layout)
        hub, proxy = plan.container("hub"), plan.container("proxy")
        current = dockerhost.inspect(host, "container", hub.name)
        if current is None:
            raise HubopsError(f"{host.name}: {hub.name} does not exist; deploy first")
        progress(Step.BACKUP, "backing up the current state first")
        safety = backup(host, settings, image_of(current) or hub.image, hub.name, files=files)
        files.run(save_state(settings))
        image = image_of(current) or hub.image
        recreate = hub.model_copy(update={"image": image})
        swap = swap_unit.Swap(
            environment=plan.environment,
            hub=hub.name,
            proxy=proxy.name,
            create_hub=dockerhost.create_command(recreate, dockerhost.labels(current)),
            create_proxy=None,
            health_urls=health_urls(plan, settings),
            health_timeout=health_timeout,
            prepare=(
                f"restoring backup {stamp}",
                root_command(files, restore_command(settings, stamp)),
            ),
            undo_prepare=(
                f"the state before (backup {safety})",
                root_command(files, restore_command(settings, safety)),
            ),
            restore_files=root_command(files, restore_state(settings)),
            finish=[root_command(files, drop_state(settings)) + " || true"],
            lock=held.lock,
            journal=journal(files, settings),
        )
        outcome = swap_unit.start(
            host, files, swap, progress, timeout=health_timeout + 240, on_started=held.hand_over
        )
        if outcome.state != "done":
            host.run(quote("docker", "rm", "-f", f"{hub.name}-failed"), check=False)
            raise BackupError(f"restoring backup {stamp} failed: {outcome.detail}")
        return safety
