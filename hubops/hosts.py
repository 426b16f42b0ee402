"""Hosts that steps run commands on: this machine, or a hub host over SSH.

Remote steps are functions that take a :class:`Host`, so they run the same on this machine
(``LocalHost``) and on a lab server (``SSHHost``, in :mod:`hubops.ssh`).
"""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass
from typing import Protocol

from hubops.errors import CommandError


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


class LocalHost:
    """This machine."""

    name = "localhost"

    def run(
        self, command: str, *, check: bool = True, stdin: str | None = None, timeout: float = 600
    ) -> Result:
        proc = subprocess.run(
            ["bash", "-c", command],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        result = Result(command, proc.returncode, proc.stdout, proc.stderr)
        if check and not result.ok:
            raise CommandError(self.name, result)
        return result


def quote(*words: str) -> str:
    return " ".join(shlex.quote(w) for w in words)
