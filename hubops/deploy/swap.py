"""The swap of the proxy and hub containers, run on the hub host as one unit that outlives the
deploy that started it.

Everything before the swap leaves the running hub alone (images, directories, a backup,
versioned config files, the previous secrets kept aside). The swap itself stops the old
containers, keeps them as ``<name>-previous``, starts the new ones and waits until the hub is
healthy; on any failure it puts back everything it changed: the new containers go, the
previous ones come back and start, the DB is restored when it was upgraded, the previous
secret files come back. It runs detached (``setsid``) from the SSH session, so a deploy that
is killed (SIGKILL, Ctrl-C, a dropped connection) after it started leaves it to finish or roll
back on its own within seconds. It writes its progress to a log and its outcome to a status
file, which the deploy reads, and it gives the deploy lock back when it ends.

The unit's script lives in /run/lock, which a reboot wipes; the swap's record (:class:`Swap`
as JSON) lives on disk beside the hub's state, so that the next deploy can render the same
rollback again (:mod:`hubops.deploy.recover`).

The script is plain POSIX sh made from quoted values (``shlex``), run as the deploy user:
its Docker commands need the docker group, its file work goes through ``root`` (the deploy
user's way of doing root's file work, see hubops.host.rootfiles).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from hubops.deploy.steps import Progress, Step, parse
from hubops.errors import DeployError
from hubops.host.base import Host, quote
from hubops.host.lock import PLACES, Lock

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

FINAL = ("done", "rolled-back", "rollback-failed")


@dataclass(frozen=True)
class Journal:
    """The swap's record on the hub host, and root's commands around it: note on disk that the
    prepare step began (so that a recovery knows to undo it), ask whether it did, and forget
    both once the unit has ended. The defaults keep no record."""

    record: str = ""
    mark_prepared: str = "true"
    was_prepared: str = "false"
    forget: str = "true"


@dataclass
class Swap:
    """What the unit does, in order; every command is a complete shell command.

    This is the one definition of the swap and of its rollback: the unit's script, and the
    scripts that finish or undo a unit that was cut off (:mod:`hubops.deploy.recover`), are
    all rendered from it. The deploy writes it to the hub host (``record``, on disk, where a
    reboot does not wipe it as it wipes the unit in /run/lock) before the unit starts, and the
    unit forgets it when it ends."""

    environment: str
    hub: str  # container names
    proxy: str
    create_hub: str | None  # None: the hub stays
    create_proxy: str | None  # None: the proxy stays
    health_urls: list[str]
    health_timeout: float
    # between the old hub's stop and the new one's start: what it does (a line for the log),
    # the command (upgrade-db; a restore's file copies), and what undoes it on a rollback
    prepare: tuple[str, str] | None = None
    undo_prepare: tuple[str, str] | None = None  # (what was put back, the command)
    restore_files: str | None = None  # root's command: the previous config and secret files
    finish: list[str] = field(default_factory=list)  # after success (prune, drop saved state)
    lock: Lock | None = None
    journal: Journal = field(default_factory=lambda: Journal())

    def script(self) -> str:
        """The unit: stop the old, start the new, wait until it is healthy; or roll back."""
        q = quote
        lines = [*self._prelude(), 'status "running"']
        if self.create_hub or self.create_proxy:
            lines += [
                f"if docker container inspect {q(self.hub)} >/dev/null 2>&1; then",
                f'  say {Step.STOP_HUB.value} "stopping the old hub"',
                f"  docker rm -f {q(self.hub + '-previous')} >/dev/null 2>&1",
                f"  docker stop --time 20 {q(self.hub)} >/dev/null && "
                f"docker rename {q(self.hub)} {q(self.hub + '-previous')} || "
                'rollback "the old hub could not be stopped"',
                "fi",
            ]
        if self.create_proxy:
            prev = self.proxy + "-previous"
            lines += [
                f"if docker container inspect {q(self.proxy)} >/dev/null 2>&1; then",
                f'  say {Step.STOP_PROXY.value} "stopping the old proxy"',
                f"  docker rm -f {q(prev)} >/dev/null 2>&1",
                f"  docker stop --time 10 {q(self.proxy)} >/dev/null && "
                f"docker rename {q(self.proxy)} {q(prev)} || "
                'rollback "the old proxy could not be stopped"',
                "fi",
                f'say {Step.START_PROXY.value} "starting the new proxy"',
                f"{self.create_proxy} >/dev/null && docker start {q(self.proxy)} >/dev/null || "
                'rollback "the new proxy did not start"',
            ]
        if self.prepare:
            what, command = self.prepare
            lines += [
                f"say {Step.PREPARE.value} {q(what)}",
                f"prepared=1; {{ {self.journal.mark_prepared}; }} >/dev/null 2>&1; "
                f"{command} || rollback {q(what + ' failed')}",
            ]
        if self.create_hub or self.create_proxy:
            create = self.create_hub or (f"docker rename {q(self.hub + '-previous')} {q(self.hub)}")
            lines += [
                f'say {Step.START_HUB.value} "starting the new hub"',
                f"docker rm -f {q(self.hub + '-failed')} >/dev/null 2>&1",
                f"{create} >/dev/null && started=1 && docker start {q(self.hub)} >/dev/null || "
                'rollback "the new hub did not start"',
                f'say {Step.WAIT_HEALTHY.value} "new hub started; waiting for /hub/health"',
                'out=$(healthy) || rollback "the new hub did not become healthy ($out)"',
                f'say {Step.HEALTHY.value} "new hub healthy"',
            ]
        lines += self._finish()
        return "\n".join(lines) + "\n"

    def finish_script(self) -> str:
        """A unit cut off after its new hub was healthy: only its clean-up is left to do."""
        return "\n".join([*self._prelude(), 'status "running"', *self._finish()]) + "\n"

    def undo_script(self, why: str) -> str:
        """A unit cut off before its new hub was healthy (the host restarted under it, say):
        its own rollback, from what the host shows. A hub beside a ``-previous`` one is the
        new one; the prepare step is undone where the unit noted that it began."""
        q = quote
        return (
            "\n".join(
                [
                    *self._prelude(),
                    'status "running"',
                    f"if docker container inspect {q(self.hub + '-previous')} >/dev/null 2>&1; "
                    "then started=1; fi",
                    f"if {self.journal.was_prepared} >/dev/null 2>&1; then prepared=1; fi",
                    f"rollback {q(why)}",
                ]
            )
            + "\n"
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Swap:
        """A record as :meth:`to_json` wrote it; ValueError for anything else."""
        try:
            data = json.loads(text)
            held, journal = data.pop("lock"), data.pop("journal")
            for key in ("prepare", "undo_prepare"):
                data[key] = tuple(data[key]) if data[key] else None
            return cls(**data, lock=Lock(**held) if held else None, journal=Journal(**journal))
        except (TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"not a swap record: {exc}") from None

    def _prelude(self) -> list[str]:
        q = quote
        lines = [
            "#!/bin/sh",
            f"# hubops swap unit for {self.environment}: see hubops/deploy/swap.py",
            "set -u",
            PLACES,
            f'STATUS="$d/hubops-{self.environment}.swap.status"',
            'status() { printf "%s\\n" "$*" > "$STATUS.tmp" && mv -f "$STATUS.tmp" "$STATUS"; }',
            'say() { printf "%s\\n" "$*"; }',
            f"healthy() {{ docker exec {q(self.hub)} python3 -c {q(HEALTH_SCRIPT)} "
            f"{q(str(int(self.health_timeout)))} {q(*self.health_urls)} 2>&1; }}",
            "rollback() {",
            f'  say {Step.ROLLBACK.value} "rolling back: $1"; status "rolling-back $1"; back=""',
            f'  if [ "${{started:-}}" = 1 ] && docker container inspect {q(self.hub)} '
            ">/dev/null 2>&1; then  # the new hub stays, stopped, for its log",
            f"    docker rm -f {q(self.hub + '-failed')} >/dev/null 2>&1",
            f"    docker stop --time 5 {q(self.hub)} >/dev/null 2>&1",
            f"    docker rename {q(self.hub)} {q(self.hub + '-failed')}",
            "  fi",
            f"  if docker container inspect {q(self.hub + '-previous')} >/dev/null 2>&1; then",
            f"    docker rm -f {q(self.hub)} >/dev/null 2>&1",
            f'    docker rename {q(self.hub + "-previous")} {q(self.hub)} && back="$back hub,"',
            "  fi",
        ]
        if self.undo_prepare:
            what, command = self.undo_prepare
            lines += [f'  if [ "${{prepared:-}}" = 1 ]; then {command} && back="$back {what},"; fi']
        prev = self.proxy + "-previous"  # kept aside only where the proxy was replaced
        lines += [
            f"  if docker container inspect {q(prev)} >/dev/null 2>&1; then",
            f"    docker rm -f {q(self.proxy)} >/dev/null 2>&1",
            f"    docker rename {q(prev)} {q(self.proxy)} && "
            f'docker start {q(self.proxy)} >/dev/null && back="$back proxy,"',
            "  fi",
        ]
        if self.restore_files:
            lines += [f'  {self.restore_files} && back="$back config and secret files,"']
        lines += [
            f"  {{ {self.journal.forget}; }} >/dev/null 2>&1",
            f"  docker start {q(self.hub)} >/dev/null 2>&1",
            "  if out=$(healthy); then",
            '    status "rolled-back $1; put back:${back%,}; the previous hub serves again"',
            "  else",
            '    status "rollback-failed $1; put back:${back%,}; but the hub is not healthy: $out"',
            "  fi",
            *self._unlock(),
            "  exit 1",
            "}",
        ]
        return lines

    def _finish(self) -> list[str]:
        """After success: files kept aside go before the containers kept aside."""
        return [
            *self.finish,
            f"{{ {self.journal.forget}; }} >/dev/null 2>&1",
            f"docker rm -f {quote(self.hub + '-previous')} {quote(self.proxy + '-previous')} "
            ">/dev/null 2>&1",
            'status "done"',
            *self._unlock(),
            "exit 0",
        ]

    def _unlock(self) -> list[str]:
        if self.lock is None:
            return []
        path = f"$d/hubops-{self.lock.environment}.lock"
        return [
            f'  {PLACES}; if [ "$(cat {path}/holder 2>/dev/null)" = {quote(self.lock.holder)} ]; '
            f"then rm -rf {path}; fi"
        ]


@dataclass(frozen=True)
class Outcome:
    state: str  # done, rolled-back, rollback-failed
    detail: str
    log: str


def write_record(files: Host, swap: Swap) -> None:
    """The swap's record on the host (root's file work through ``files``), atomically."""
    if swap.journal.record:
        record = quote(swap.journal.record)
        files.run(
            f"umask 077; cat > {record}.tmp && mv -f {record}.tmp {record}", stdin=swap.to_json()
        )


def start(
    host: Host,
    files: Host,
    swap: Swap,
    progress: Progress,
    timeout: float,
    on_started: Callable[[], None] = lambda: None,
) -> Outcome:
    """Write the swap's record on the host, then run its unit there until it ends."""
    write_record(files, swap)
    return run_detached(host, swap.environment, swap.script(), progress, timeout, on_started)


def run_detached(
    host: Host,
    environment: str,
    script: str,
    progress: Progress,
    timeout: float,
    on_started: Callable[[], None] = lambda: None,
) -> Outcome:
    """Start a unit's ``script`` on the host in its own session, then follow it until it ends."""
    base = f"$d/hubops-{environment}.swap"
    started = host.run(
        f"{PLACES}; umask 077; rm -f {base}.status; cat > {base}.sh && "
        f'setsid -f sh {base}.sh >{base}.log 2>&1 </dev/null; echo "$d"',
        stdin=script,
        timeout=60,
    ).stdout.strip()
    on_started()
    seen = 0
    deadline = time.monotonic() + timeout
    place = started or "/tmp"
    status_file = f"{place}/hubops-{environment}.swap.status"
    log_file = f"{place}/hubops-{environment}.swap.log"
    while True:
        out = host.run(
            f"cat {quote(log_file)} 2>/dev/null; echo '=== status'; "
            f"cat {quote(status_file)} 2>/dev/null",
            check=False,
            timeout=60,
        ).stdout
        log, _, status = out.partition("=== status\n")
        lines = log.splitlines()
        for line in lines[seen:]:
            progress(*parse(line))
        seen = len(lines)
        state, _, detail = status.strip().partition(" ")
        if state in FINAL:
            return Outcome(state, detail, log)
        if time.monotonic() > deadline:
            raise DeployError(
                f"{host.name}: the swap unit has not finished after {timeout:.0f}s; it keeps "
                f"running on the host (its log: {log_file}); run the deploy again once it ends"
            )
        time.sleep(0.3)
