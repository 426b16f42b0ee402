"""The steps a deploy announces, by name. Progress goes to the caller as (step, line): the line
is for people and may be reworded at will; the step is what code (and the fault suite, which
kills a deploy at each step) keys on.

The swap unit runs as sh on the hub host: it prints ``<step> <line>`` (its ``say``), and
:func:`parse` splits such a line again.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum


class Step(Enum):
    """A step of a deploy (or of the day-two work that goes the deploy's way), in order."""

    LOCK = "lock"  # took the environment's deploy lock
    FETCH = "fetch"  # fetching images
    RECOVER = "recover"  # finishing or undoing a deploy that was cut off
    NETWORK = "network"  # repairing the network
    FIREWALL = "firewall"  # applying the firewall's rules
    DISK = "disk"  # the disk quota mode the host gets, and who is over their quota
    BACKUP = "backup"  # backing up the DB, cookie secret and config
    KEEP_FILES = "keep-files"  # keeping the current config and secret files aside
    HAND_OVER = "hand-over"  # handing the swap to the host
    # the swap unit, on the host
    STOP_HUB = "stop-hub"
    STOP_PROXY = "stop-proxy"
    START_PROXY = "start-proxy"
    PREPARE = "prepare"  # between the stop and the start: a DB upgrade, a restore's copies
    START_HUB = "start-hub"
    WAIT_HEALTHY = "wait-healthy"
    HEALTHY = "healthy"
    ROLLBACK = "rollback"
    MIGRATE = "migrate"  # invoke swarm.migrate's own steps
    OUTPUT = "output"  # any other line the unit printed (a command's error)


Progress = Callable[[Step, str], None]


def quiet(step: Step, line: str) -> None:
    """A Progress that says nothing."""


def parse(line: str) -> tuple[Step, str]:
    """A line of the swap unit's log: its step and what it says."""
    word, _, rest = line.partition(" ")
    for step in Step:
        if step.value == word:
            return step, rest
    return Step.OUTPUT, line
