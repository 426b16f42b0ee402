"""Hosts that steps run commands on: this machine, or a hub host over SSH.

Remote steps are functions that take a :class:`Host`, so they run the same on this machine
(``LocalHost``) and on a lab server (``SSHHost``, in :mod:`hubops.host.ssh`).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Result:
    command: str
    code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.code == 0


class Host(Protocol):
    """Something that runs shell commands as root (or a user allowed to use Docker)."""

    @property
    def name(self) -> str: ...

    def run(
        self, command: str, *, check: bool = True, stdin: str | None = None, timeout: float = 600
    ) -> Result: ...


@runtime_checkable
class Streaming(Protocol):
    """A host that can hand a command's output over as it comes (``invoke logs --follow``)."""

    def stream(self, command: str, sink: Callable[[bytes], object]) -> int: ...


def quote(*words: str) -> str:
    return " ".join(shlex.quote(w) for w in words)
