"""One deploy of an environment at a time: the lock on the host (here, this machine)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from hubops.errors import LockError
from hubops.host import lock
from hubops.host.local import LocalHost


@pytest.fixture
def env_name() -> Iterator[str]:
    name = f"locktest-{uuid.uuid4().hex[:8]}"
    yield name
    lock.release(LocalHost(), lock.Lock(name, ""), force=True)


def test_a_second_deploy_is_refused_with_who_since_and_how_to_break(env_name: str) -> None:
    host = LocalHost()
    held = lock.acquire(host, env_name)
    with pytest.raises(LockError) as info:
        lock.acquire(host, env_name)
    message = str(info.value)
    assert len(message.splitlines()) == 1, message
    assert held.holder in message, "who holds it, since when"
    assert f"invoke deploy --env {env_name} --break-lock" in message
    assert lock.holder(host, env_name) == held.holder, "doctor can read it without taking it"
    lock.release(host, held)
    assert lock.holder(host, env_name) is None


def test_a_second_deploy_waits_for_the_first(env_name: str) -> None:
    host = LocalHost()
    held = lock.acquire(host, env_name)
    threading.Timer(1.5, lambda: lock.release(host, held)).start()
    start = time.monotonic()
    second = lock.acquire(host, env_name, wait=20)
    assert time.monotonic() - start >= 1, "it waited"
    lock.release(host, second)


def test_a_lock_whose_holder_died_is_taken_over(env_name: str) -> None:
    """A deploy killed with SIGKILL leaves its lock; the next deploy on this machine sees the
    holder's process is gone and takes it over."""
    code = (
        "from hubops.host import lock; from hubops.host.local import LocalHost; "
        f"lock.acquire(LocalHost(), {env_name!r}); print('held', flush=True); "
        "import time; time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    proc.kill()
    proc.wait()
    taken = lock.acquire(LocalHost(), env_name)
    assert f"pid {proc.pid} " not in taken.holder
    lock.release(LocalHost(), taken)


def test_break_lock_takes_a_live_holders_lock(env_name: str) -> None:
    host = LocalHost()
    lock.acquire(host, env_name)
    taken = lock.acquire(host, env_name, break_lock=True)
    assert lock.holder(host, env_name) == taken.holder
    lock.release(host, taken)
