"""This machine as a :class:`~hubops.host.base.Host`: commands run here, through bash."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable

from hubops.errors import CommandError
from hubops.host.base import Result


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
