"""Before anything else, a deploy finishes or undoes one that was cut off.

A swap unit runs on the hub host and ends on its own; it is cut off only when the host itself
stops under it (a reboot, the engine restarted, the unit killed by hand). Its script lived in
/run/lock and is gone then, but its record (:class:`~hubops.deploy.swap.Swap`, written on disk
before it started) is not, and the host's containers show how far it got. The three ways out,
each rendered from the same Swap as the unit itself:

- **finish**: ``-previous`` containers are left and the current hub is healthy: the swap was
  done and only its clean-up was cut off. The unit's own last steps run
  (:meth:`~hubops.deploy.swap.Swap.finish_script`: the files and containers kept aside go).
- **undo**: ``-previous`` containers are left and the current hub does not serve: the unit's
  own rollback runs (:meth:`~hubops.deploy.swap.Swap.undo_script`): the new hub goes, the
  previous containers come back, the prepare step is undone where the unit noted on disk that
  it began (a DB upgrade cut off midway: the DB comes back from the deploy's backup; a restore
  cut off: the state from before it), and the config and secret files come back.
- **put files back**: no ``-previous`` container, but files kept aside: the deploy was killed
  before its swap stopped anything, and the running hub goes with the files kept aside (the
  unit's ``restore_files``).

A cut-off deploy of an older hubops left no record: the same three ways run from a Swap made
from the plan, which restores the files and containers (never a DB, as before).
"""

from __future__ import annotations

from dataclasses import replace

from hubops.config.settings import Environment
from hubops.deploy import swap as swap_unit
from hubops.deploy.health import health_urls, wait_healthy
from hubops.deploy.state import drop_state, journal, restore_state, swap_record
from hubops.deploy.steps import Progress, Step
from hubops.errors import DeployError, HubopsError
from hubops.host import docker as dockerhost
from hubops.host.base import Host, quote
from hubops.host.rootfiles import root_command
from hubops.plan.model import Plan

UNDO_WHY = "a swap cut off before its new hub was healthy"


def recorded_swap(
    files: Host, plan: Plan, settings: Environment, health_timeout: float
) -> swap_unit.Swap:
    """The swap that was cut off, as its record says, or as a plan makes it without one."""
    found = files.run(f"cat {quote(swap_record(settings))}", check=False)
    if found.ok and found.stdout.strip():
        try:
            return replace(swap_unit.Swap.from_json(found.stdout), lock=None)
        except ValueError:
            pass  # a record cut off midway: the unit never started
    return swap_unit.Swap(
        environment=plan.environment,
        hub=plan.container("hub").name,
        proxy=plan.container("proxy").name,
        create_hub=None,
        create_proxy=None,
        health_urls=health_urls(plan, settings),
        health_timeout=health_timeout,
        restore_files=root_command(files, restore_state(settings)),
        finish=[root_command(files, drop_state(settings)) + " || true"],
        journal=journal(files, settings),
    )


def recover(
    host: Host,
    files: Host,
    plan: Plan,
    settings: Environment,
    health_timeout: float,
    progress: Progress,
) -> list[str]:
    """Finish or undo a deploy that was cut off (see the module's text). Returns what was done."""
    swap = recorded_swap(files, plan, settings, health_timeout)
    names = [swap.hub, f"{swap.hub}-previous", swap.proxy, f"{swap.proxy}-previous"]
    state = dockerhost.snapshot(host, read=[], images=[], containers=names, sums=[], files=host)
    have = state.containers
    previous = [n for n in names if n.endswith("-previous") and n in have]
    current = have.get(swap.hub)
    if previous and current is not None and dockerhost.is_running(current):
        try:
            wait_healthy(host, plan, settings, timeout=min(health_timeout, 30))
        except HubopsError:
            pass
        else:
            _run(host, swap.environment, swap.finish_script(), progress, health_timeout)
            progress(
                Step.RECOVER,
                "finished an earlier swap that was cut off after the new hub was healthy",
            )
            return ["finished an interrupted swap"]
    if not previous:
        host.run(swap.restore_files or "true", check=False)
        host.run(swap.journal.forget, check=False)
        progress(
            Step.RECOVER, "put back the config and secret files of a deploy killed before its swap"
        )
        return ["restored the files of an interrupted deploy"]
    progress(
        Step.RECOVER, "an earlier swap was cut off before the new hub was healthy: rolling it back"
    )
    outcome = _run(host, swap.environment, swap.undo_script(UNDO_WHY), progress, health_timeout)
    host.run(quote("docker", "rm", "-f", f"{swap.hub}-failed"), check=False)
    if outcome.state != "rolled-back":
        raise DeployError(f"{outcome.state} {outcome.detail}. Nothing else was changed.")
    wait_healthy(host, plan, settings, timeout=health_timeout)
    return ["rolled back an interrupted swap"]


def _run(
    host: Host, environment: str, script: str, progress: Progress, health_timeout: float
) -> swap_unit.Outcome:
    return swap_unit.run_detached(host, environment, script, progress, timeout=health_timeout + 240)
