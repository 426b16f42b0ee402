"""One deploy of an environment at a time: a lock on the hub host.

The lock is a directory (``mkdir`` is atomic) in ``/run/lock`` (a tmpfs that every user may
write to on Debian and Ubuntu; ``/tmp`` elsewhere), named after the environment, holding who
took it: ``user@machine pid N since TIME``. A second deploy waits for it up to a timeout, or
refuses at once, with one line that says who holds it, since when, and how to break it. A lock
whose holder was a process of this machine that no longer runs (a deploy killed with SIGKILL)
is stale: the next deploy takes it over and says so. ``--dry-run`` and ``doctor`` never take
it.
"""

from __future__ import annotations

import getpass
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone

from hubops.errors import LockError
from hubops.host.base import Host, quote

PLACES = "d=/run/lock; [ -d $d ] && [ -w $d ] || d=/tmp"


@dataclass(frozen=True)
class Lock:
    environment: str
    holder: str


def _path(env_name: str) -> str:
    return f"$d/hubops-{env_name}.lock"


def holder_line() -> str:
    since = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{getpass.getuser()}@{socket.gethostname()} pid {os.getpid()} since {since}"


def _stale(holder: str) -> bool:
    """A holder that was a process of this machine that is gone."""
    words = holder.split()
    if len(words) < 3 or words[1] != "pid" or "@" not in words[0]:
        return False
    machine = words[0].split("@", 1)[1]
    if machine != socket.gethostname():
        return False
    try:
        os.kill(int(words[2]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError):
        return False
    return False


def acquire(host: Host, env_name: str, wait: float = 0, break_lock: bool = False) -> Lock:
    """Take the environment's deploy lock on ``host``, or raise LockError."""
    me = holder_line()
    path = _path(env_name)
    deadline = time.monotonic() + wait
    if break_lock:
        release(host, Lock(env_name, me), force=True)
    while True:
        result = host.run(
            f"{PLACES}; if mkdir {path} 2>/dev/null; then printf '%s\\n' {quote(me)} > "
            f"{path}/holder; echo TAKEN; else cat {path}/holder 2>/dev/null || echo '?'; fi",
            check=False,
            timeout=30,
        )
        out = result.stdout.strip()
        if out == "TAKEN":
            return Lock(env_name, me)
        if _stale(out):
            release(host, Lock(env_name, out), force=True)
            continue
        if time.monotonic() >= deadline:
            raise LockError(
                f"{host.name}: another deploy of {env_name} holds the lock: {out}; wait for it "
                f"(--wait SECONDS), or if it died, break the lock: invoke deploy --env "
                f"{env_name} --break-lock (on the host: rm -r /run/lock/hubops-{env_name}.lock)"
            )
        time.sleep(1)


def release(host: Host, lock: Lock, force: bool = False) -> None:
    """Give the lock back (only ours, unless ``force``)."""
    path = _path(lock.environment)
    if force:
        host.run(f"{PLACES}; rm -rf {path}", check=False, timeout=30)
        return
    host.run(
        f'{PLACES}; if [ "$(cat {path}/holder 2>/dev/null)" = {quote(lock.holder)} ]; then '
        f"rm -rf {path}; fi",
        check=False,
        timeout=30,
    )


def holder(host: Host, env_name: str) -> str | None:
    """Who holds the lock now (None: nobody); for doctor and status, which never take it."""
    out = host.run(
        f"{PLACES}; cat {_path(env_name)}/holder 2>/dev/null", check=False, timeout=30
    ).stdout.strip()
    return out or None


class Held:
    """A lock this process holds, until it hands it over (to a swap unit on the host, which
    gives it back when it ends) or gives it back itself."""

    def __init__(self, lock: Lock) -> None:
        self.lock = lock
        self.handed_over = False

    def hand_over(self) -> None:
        self.handed_over = True


@contextmanager
def held(host: Host, env_name: str, wait: float = 0, break_lock: bool = False) -> Iterator[Held]:
    """The environment's deploy lock for a block of work: given back when the block ends,
    however it ends, unless the block handed it over."""
    taken = Held(acquire(host, env_name, wait=wait, break_lock=break_lock))
    try:
        yield taken
    finally:
        if not taken.handed_over:
            release(host, taken.lock)
