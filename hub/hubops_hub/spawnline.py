"""The hub's two lines: spawns that wait for GPUs, and spawns that wait for a start slot.

A spawn whose GPUs are not free waits in the GPU line (``gpu.queue_timeout`` at most), and
every spawn then waits for one of ``hub.concurrent_starts`` start slots. Both lines are first
come, first served, and both are waited in before ``start()``, so JupyterHub's
``start_timeout`` counts from the moment the start itself begins (HubopsSpawner's
``run_pre_spawn_hook``; JupyterHub applies no timeout there).

Only the head of the GPU line is served: a request for 3 GPUs at the head holds those behind
it, even a request for 1 that would fit now. Letting smaller requests pass would starve the
larger one for as long as small ones keep coming, which on a busy pool is forever; a lab that
wants small requests served first gives them a profile with a shorter queue_timeout, or 0.

What a line holds is in this process's memory. It is also written to ``LINE_FILE`` at each
change, for one purpose: after a hub restart the waiting spawns are gone (JupyterHub drops a
spawn that has no container yet, and their progress pages lose their stream), and the spawn
form tells each of those users that the restart took their place and to start again. A hub
that stops cancels every task, the waiting spawns too, just as a user's cancel does; so a
cancelled spawn leaves the line at once but stays in the file until JupyterHub's stop of the
server clears its state (``forget``), which a user's cancel does and a shutdown does not. The hub
does not start their servers itself: it cannot know who is still at their screen, and a
server started for nobody holds a GPU until the culler stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tornado import web

from hubops_hub.gpus import Holding

LINE_FILE = "/srv/jupyterhub/hubops-spawn-line.json"  # in hubops.plan.model.HUB_DATA_DIR
POLL = 2.0  # seconds: the head of the GPU line looks at the holdings at least this often
RETRY_SECONDS = 3  # the failed-spawn page moves on to a new start after this many seconds
log = logging.getLogger("hubops.spawnline")


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


@dataclass(eq=False)
class Ticket:
    key: str  # the server: user name, or user/server
    user: str
    want: int  # GPUs (the GPU line), 1 (the start line)
    joined: float = field(default_factory=time.time)
    place: int = 0  # where it was when it was cancelled


class Line:
    """Tickets in the order they joined; every change wakes those who wait on it."""

    def __init__(self, what: str, on_change: Callable[[], None] | None = None) -> None:
        self.what = what
        self.tickets: list[Ticket] = []
        self.cancelled: dict[str, Ticket] = {}  # server key -> a ticket kept in the file
        self._changed = asyncio.Event()
        self._on_change = on_change

    def __len__(self) -> int:
        return len(self.tickets)

    def join(self, key: str, user: str, want: int) -> Ticket:
        ticket = Ticket(key, user, want)
        self.tickets.append(ticket)
        self.changed()
        return ticket

    def leave(self, ticket: Ticket, cancelled: bool = False) -> None:
        """Idempotent: a served, timed-out or cancelled spawn leaves, once. A cancelled one
        stays in the file until ``forget`` (see the module)."""
        if ticket in self.tickets:
            if cancelled:
                ticket.place = self.tickets.index(ticket) + 1
                self.cancelled[ticket.key] = ticket
            self.tickets.remove(ticket)
            self.changed()

    def forget(self, key: str) -> None:
        if self.cancelled.pop(key, None) is not None:
            self.changed()

    def place(self, key: str) -> int | None:
        """1 for the head of the line; None for a server not in it."""
        for n, ticket in enumerate(self.tickets, 1):
            if ticket.key == key:
                return n
        return None

    def first(self, ticket: Ticket) -> bool:
        return bool(self.tickets) and self.tickets[0] is ticket

    def changed(self) -> None:
        event, self._changed = self._changed, asyncio.Event()
        event.set()
        if self._on_change is not None:
            self._on_change()

    async def wait(self, timeout: float) -> None:
        """Until the line changes, or ``timeout`` seconds."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._changed.wait(), max(timeout, 0.0))


class Starts:
    """At most ``capacity`` starts at once; further spawns wait in ``line``."""

    def __init__(self, on_change: Callable[[], None] | None = None) -> None:
        self.capacity = 0
        self.running: dict[str, float] = {}  # server key -> when its start began (monotonic)
        self.line = Line("start", on_change)
        self.max_hold = 3600.0  # a slot whose start never said it ended is freed after this

    def _expire(self) -> None:
        now = time.monotonic()
        for key, began in list(self.running.items()):
            if now - began > self.max_hold:
                log.warning("start slot of %s held for %.0f s: freed", key, now - began)
                self.release(key)

    def free(self) -> bool:
        self._expire()
        return len(self.running) < self.capacity

    async def acquire(self, key: str, user: str) -> None:
        """Wait for a slot, first come, first served. A cancel leaves the line."""
        ticket = self.line.join(key, user, 1)
        try:
            while not (self.line.first(ticket) and self.free()):
                await self.line.wait(POLL)
            self.running[key] = time.monotonic()
        except asyncio.CancelledError:
            self.line.leave(ticket, cancelled=True)
            raise
        finally:
            self.line.leave(ticket)

    def release(self, key: str) -> None:
        """Idempotent: the start ended (ready, failed or cancelled)."""
        if self.running.pop(key, None) is not None:
            self.line.changed()


def default_starts(cores: int | None = None) -> int:
    """hub.concurrent_starts when unset: twice the host's cores, at least 2 (docs/benchmarks.md
    has the measurement behind it)."""
    return max(2, 2 * (cores or os.cpu_count() or 1))


# --- the hub's lines (one hub process, one event loop) ----------------------------------------

RESERVED: dict[str, Holding] = {}  # server key -> the GPUs its spawn left the GPU line with


def save(path: str | None = None) -> None:
    """Both lines as they are now, for the spawn form after a restart (see the module)."""
    path = path or LINE_FILE
    if not os.path.isdir(os.path.dirname(path)):
        return
    data = {
        "saved_at": time.time(),
        "lines": {
            line.what: [
                {"server": t.key, "user": t.user, "want": t.want, "joined": t.joined, "place": n}
                for n, t in [
                    *enumerate(line.tickets, 1),
                    *((t.place, t) for t in line.cancelled.values()),
                ]
            ]
            for line in (GPU_LINE, STARTS.line)
        },
    }
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("could not write %s: %s", path, exc)


def interrupted(path: str | None = None) -> dict[str, dict[str, Any]]:
    """Server key -> {line, place, joined} of the spawns that waited in a line when the last
    hub process ended (read once, before this process writes the file)."""
    try:
        with open(path or LINE_FILE, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    out: dict[str, dict[str, Any]] = {}
    for what, tickets in (data.get("lines") or {}).items():
        for t in tickets:
            out.setdefault(str(t["server"]), {"line": what, **t, "saved_at": data.get("saved_at")})
    return out


def _save_soon() -> None:
    save()


def forget(key: str) -> None:
    """JupyterHub stopped the server (its state is cleared): a cancelled spawn of it is not
    one that a restart interrupted."""
    GPU_LINE.forget(key)
    STARTS.line.forget(key)


GPU_LINE = Line("gpu", _save_soon)
STARTS = Starts(_save_soon)
# the lines of the last hub process: read when the hub imports this (its config), before
# anything in this process writes the file
_interrupted = interrupted()
_cleared = False


def restart_notice(key: str) -> str:
    """For the spawn form, once: the place this server's spawn had when the last hub process
    ended. The first call in this process also writes the file anew, so that a restart with
    no change to the lines in between does not tell it again."""
    global _cleared
    if not _cleared:
        _cleared = True
        save()
    entry = _interrupted.pop(key, None)
    if not entry:
        return ""
    what = "a GPU" if entry["line"] == "gpu" else "a start slot"
    when = time.strftime("%H:%M UTC", time.gmtime(float(entry.get("saved_at") or 0)))
    return (
        f"The hub restarted at {when} while you waited in line for {what} "
        f"({ordinal(int(entry['place']))} in line), and your place was lost: start again to "
        "take a new one."
    )


def status(key: str) -> str | None:
    """What a waiting spawn's progress page says; None where it waits in no line."""
    place = GPU_LINE.place(key)
    if place is not None:
        ticket = GPU_LINE.tickets[place - 1]
        want = f"{ticket.want} GPUs" if ticket.want != 1 else "a GPU"
        return (
            f"Waiting for {want}: you are {ordinal(place)} in line of {len(GPU_LINE)}. "
            "You keep your place if you close or reload this page; stop the server to leave."
        )
    place = STARTS.line.place(key)
    if place is not None:
        return (
            f"Waiting to start: {len(STARTS.running)} servers are starting; you are "
            f"{ordinal(place)} in line of {len(STARTS.line)}."
        )
    return None


# --- a failed spawn is tried again --------------------------------------------------------------


def retryable(exc: BaseException | None) -> bool:
    """A failure that a new try may not meet: not a refusal of the request itself (400: a bad
    request; 403: over the user's limit), which would only repeat."""
    return not (isinstance(exc, web.HTTPError) and exc.status_code in (400, 403))


def _retry_seconds(user: Any) -> int:
    if user is None:
        return 0
    for spawner in getattr(user, "spawners", {}).values():
        future = getattr(spawner, "_spawn_future", None)
        done = future is not None and future.done() and not future.cancelled()
        if done and not retryable(future.exception()):
            return 0
    return RETRY_SECONDS


def retry_vars() -> dict[str, Any]:
    """``JupyterHub.template_vars``: ``implicit_spawn_seconds`` for the failed-spawn page
    (not_running.html with failed; JupyterHub gives the page of a server that is merely not
    running its own value, 0), so a reload after a failed start leads to a new start in a few
    seconds instead of "Previous spawn failed" until the user finds Relaunch."""
    return {"implicit_spawn_seconds": _retry_seconds}
