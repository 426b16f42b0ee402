"""The hub host over SSH (fabric/paramiko), with strict host-key checking.

An unknown host key is refused, never added silently: the operator adds it to the known_hosts
file once (``ssh-keyscan`` or one interactive ``ssh``), as with any other server.
"""

from __future__ import annotations

import logging
import select
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType

import paramiko
from fabric import Connection

from hubops.config.settings import SSHSettings
from hubops.errors import CommandError, SSHError
from hubops.host.base import Result

log = logging.getLogger(__name__)


class SSHHost:
    """Runs commands on the hub host over one SSH connection."""

    def __init__(self, settings: SSHSettings, known_hosts: Path, key_file: Path | None) -> None:
        self.settings = settings
        self.name = f"ssh://{settings.user}@{settings.host}:{settings.port}"
        connect_kwargs: dict[str, object] = {"allow_agent": key_file is None}
        if key_file is not None:
            connect_kwargs["key_filename"] = str(key_file)
            connect_kwargs["look_for_keys"] = False
        self.conn = Connection(
            host=settings.host,
            user=settings.user,
            port=settings.port,
            connect_timeout=15,
            connect_kwargs=connect_kwargs,
        )
        client = self.conn.client
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        self._known_hosts = known_hosts
        self._key_file = key_file
        if known_hosts.exists():
            client.load_host_keys(str(known_hosts))

    def __enter__(self) -> SSHHost:
        self.open()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> None:
        s = self.settings
        try:
            self.conn.open()
        except paramiko.SSHException as exc:
            if "not found in known_hosts" in str(exc):
                raise SSHError(
                    f"{self.name}: the host key of {s.host} is not in {self._known_hosts}; "
                    f"check it, then add it: ssh-keyscan -p {s.port} {s.host} >> "
                    f"{self._known_hosts} (or set ssh.known_hosts)"
                ) from None
            raise SSHError(
                f"{self.name}: SSH failed: {exc}; check ssh.user and ssh.key_file"
            ) from None
        except (TimeoutError, OSError) as exc:
            raise SSHError(
                f"{self.name}: cannot connect ({exc}); check ssh.host and ssh.port, and that "
                "sshd runs there"
            ) from None

    def close(self) -> None:
        self.conn.close()

    def run(
        self, command: str, *, check: bool = True, stdin: str | None = None, timeout: float = 600
    ) -> Result:
        data = [stdin.encode()] if stdin is not None else []
        result = self._exec(command, data, timeout)
        if check and not result.ok:
            raise CommandError(self.name, result)
        return result

    def _exec(self, command: str, chunks: Iterable[bytes], timeout: float) -> Result:
        """One command on a fresh channel of the connection: stdin from ``chunks`` (then EOF),
        stdout and stderr read as they come (neither can fill up and stall the other)."""
        transport = self.conn.client.get_transport()
        if transport is None or not transport.is_active():
            raise SSHError(f"{self.name}: the SSH connection is closed")
        channel = transport.open_session(timeout=30)
        deadline = time.monotonic() + timeout
        try:
            channel.exec_command(command)
            for chunk in chunks:
                channel.sendall(chunk)
            channel.shutdown_write()
            out, err = bytearray(), bytearray()
            while True:
                if time.monotonic() > deadline:
                    raise SSHError(f"{self.name}: `{command}` did not finish within {timeout:.0f}s")
                select.select([channel], [], [], 0.5)
                while channel.recv_ready():
                    out += channel.recv(1 << 16)
                while channel.recv_stderr_ready():
                    err += channel.recv_stderr(1 << 16)
                if (
                    channel.exit_status_ready()
                    and not channel.recv_ready()
                    and not channel.recv_stderr_ready()
                ):
                    break
            code = channel.recv_exit_status()
        finally:
            channel.close()
        return Result(command, code, out.decode(errors="replace"), err.decode(errors="replace"))

    def stream(self, command: str, sink: Callable[[bytes], object]) -> int:
        """``command`` there, its output to ``sink`` as it comes, until it ends (or the
        caller is interrupted); its exit status."""
        transport = self.conn.client.get_transport()
        if transport is None or not transport.is_active():
            raise SSHError(f"{self.name}: the SSH connection is closed")
        channel = transport.open_session(timeout=30)
        try:
            channel.set_combine_stderr(True)
            channel.exec_command(command)
            channel.shutdown_write()
            while True:
                select.select([channel], [], [], 0.5)
                while channel.recv_ready():
                    sink(channel.recv(1 << 16))
                if channel.exit_status_ready() and not channel.recv_ready():
                    return int(channel.recv_exit_status())
        finally:
            channel.close()

    def pipe_in(self, command: str, producer: list[str]) -> Result:
        """Run ``command`` there with the stdout of ``producer`` (a command here) on its stdin.

        Large transfers (docker save | docker load) go through the system's OpenSSH client
        when there is one (several times faster than paramiko), with the same key, port and
        strict known_hosts file; else through this connection.
        """
        ssh = shutil.which("ssh")
        source = subprocess.Popen(producer, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out = source.stdout
        assert out is not None
        try:
            if ssh is None:
                result = self.stream_in(command, iter(lambda: out.read(1 << 20), b""))
            else:
                args = [
                    ssh,
                    "-p",
                    str(self.settings.port),
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    "StrictHostKeyChecking=yes",
                    "-o",
                    f"UserKnownHostsFile={self._known_hosts}",
                ]
                if self._key_file is not None:
                    args += ["-i", str(self._key_file), "-o", "IdentitiesOnly=yes"]
                # "--": nothing after it is an option, whatever the settings hold
                args += ["--", f"{self.settings.user}@{self.settings.host}", command]
                proc = subprocess.run(args, stdin=out, capture_output=True, check=False)
                result = Result(
                    command,
                    proc.returncode,
                    proc.stdout.decode(errors="replace"),
                    proc.stderr.decode(errors="replace"),
                )
        finally:
            out.close()
            _, err = source.communicate()
        if source.returncode != 0:
            raise SSHError(f"`{' '.join(producer)}` failed here: {err.decode().strip()[-300:]}")
        if not result.ok:
            raise CommandError(self.name, result)
        return result

    def stream_in(self, command: str, chunks: Iterable[bytes]) -> Result:
        """Run ``command`` with the bytes of ``chunks`` on its stdin (large, binary)."""
        result = self._exec(command, chunks, timeout=3600)
        if not result.ok:
            raise CommandError(self.name, result)
        return result
