"""Hosts that steps run commands on: this machine, or a hub host over SSH.

Remote steps are functions that take a :class:`Host`, so they run the same on this machine
(``LocalHost``) and on a lab server (``SSHHost``, in :mod:`hubops.ssh`).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

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

    def stream(self, command: str, sink: Callable[[bytes], object]) -> int:
        return stream_local(command, sink)


@runtime_checkable
class Streaming(Protocol):
    """A host that can hand a command's output over as it comes (``invoke logs --follow``)."""

    def stream(self, command: str, sink: Callable[[bytes], object]) -> int: ...


def stream_local(command: str, sink: Callable[[bytes], object]) -> int:
    """``command`` here, its stdout and stderr to ``sink`` as they come; its exit status. When
    the reader stops (an exception from ``sink``, Ctrl-C), the command's whole process group
    is stopped with it (a `docker logs --follow` would run on otherwise)."""
    proc = subprocess.Popen(
        ["bash", "-c", command],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert proc.stdout is not None
    out = proc.stdout
    try:
        for chunk in iter(lambda: os.read(out.fileno(), 1 << 16), b""):
            sink(chunk)
        return proc.wait()
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
        out.close()


def quote(*words: str) -> str:
    return " ".join(shlex.quote(w) for w in words)
