"""hubops' usage endpoint for the user's JupyterLab: their GPUs and their server's OOM kills.

A Jupyter server extension (enabled in /etc/jupyter/jupyter_server_config.py) with one
handler, ``GET <base_url>api/hubops/usage``, which the status bar item of the ``@hubops/usage``
labextension polls every 5 s:

- ``gpus``: what ``nvidia-smi --query-gpu`` answers inside the user's container, which is the
  user's own GPUs only (the NVIDIA runtime exposes those and no others); empty without a GPU.
- ``oom_kills``: the container's cgroup counter of processes the kernel killed for memory
  (``memory.events`` on cgroup v2, ``memory.oom_control`` on v1), so the front end can tell the
  user that their kernel died because the server hit its memory limit, not for no reason.
- ``memory_limit_bytes``: the server's limit (MEM_LIMIT, which JupyterHub's spawner sets).
- ``disk``: how much the user's directory (the server's root_dir) holds, against their disk quota
  (HUBOPS_DISK_QUOTA_BYTES, which hubops' spawner sets; absent: no quota). The first figure is
  the hub's last measurement (HUBOPS_DISK_USED_BYTES); the server measures again with a niced
  ``du`` once per HUBOPS_DISK_EVERY seconds (default 600), in the background, and when a
  JupyterLab opens (``?fresh=1`` on its first poll; at most once per FRESH_SECONDS).

Polling is not the user's activity: the handler does not count as API activity
(``_track_activity``), nor does jupyter-resource-usage's, which this extension marks the same
way, so a browser tab left open does not keep a server (and its GPU) from the idle culler.

Nothing here is imported by the server until the extension loads, and nothing runs until the
first request: nvidia-smi runs at most once per ``CACHE_SECONDS``, whatever the number of tabs.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from typing import Any

QUERY = ("index", "name", "utilization.gpu", "memory.used", "memory.total")
KEYS = ("index", "name", "utilization_gpu", "memory_used_mib", "memory_total_mib")
CGROUP_EVENTS = ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control")
CACHE_SECONDS = 2.0
FRESH_SECONDS = 10.0  # a JupyterLab that opens measures the disk again, at most this often
NVIDIA_SMI_TIMEOUT = 5.0


def parse_gpus(text: str) -> list[dict[str, Any]]:
    """Rows of ``--query-gpu=<QUERY> --format=csv,noheader,nounits``; a field nvidia-smi
    cannot read ("[N/A]", "[Not Supported]") is None."""
    gpus = []
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != len(QUERY):
            continue
        row: dict[str, Any] = {}
        for key, value in zip(KEYS, fields, strict=True):
            if key in ("index", "name"):
                row[key] = value
            else:
                try:
                    row[key] = float(value)
                except ValueError:
                    row[key] = None
        gpus.append(row)
    return gpus


def oom_kills(paths: tuple[str, ...] = CGROUP_EVENTS) -> int | None:
    """The container's count of OOM kills; None where no cgroup file says."""
    for path in paths:
        try:
            with open(path, encoding="ascii") as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            continue
    return None


def _env_int(name: str) -> int | None:
    try:
        value = int(os.environ.get(name, "0"))
    except ValueError:
        return None
    return value if value > 0 else None


class Disk:
    """The user's directory's disk use, measured in the background now and then."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path or os.environ.get("HOME") or os.getcwd()
        self.quota = _env_int("HUBOPS_DISK_QUOTA_BYTES")
        self.every = _env_int("HUBOPS_DISK_EVERY") or 600
        self.used = _env_int("HUBOPS_DISK_USED_BYTES")
        self.measured_at: float | None = None
        self._next = 0.0
        self._started = -FRESH_SECONDS
        self._task: asyncio.Task[None] | None = None

    def snapshot(self, fresh: bool = False) -> dict[str, Any]:
        """The last figures; a measurement starts when they are ``every`` seconds old, or
        (``fresh``: a JupyterLab that has just opened) more than FRESH_SECONDS old."""
        now = time.monotonic()
        due = now >= self._next or (fresh and now >= self._started + FRESH_SECONDS)
        if self._task is None and due:
            self._started, self._next = now, now + self.every
            self._task = asyncio.ensure_future(self._measure())
        over = self.quota is not None and self.used is not None and self.used > self.quota
        return {
            "used_bytes": self.used,
            "quota_bytes": self.quota,
            "over_quota": over,
            "measured_at": self.measured_at,
        }

    async def _measure(self) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(
                *("nice", "-n", "19", "du", "-sx", "--block-size=1", self.path),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
            out, _ = await proc.communicate()
            first = out.decode(errors="replace").split()
            if first and first[0].isdigit():  # du says 1 for an unreadable file, and counts
                self.used = int(first[0])
                self.measured_at = time.time()
        except OSError:
            pass
        finally:
            self._task = None


def memory_limit() -> int | None:
    try:
        value = int(os.environ.get("MEM_LIMIT", "0"))
    except ValueError:
        return None
    return value or None


class Usage:
    """nvidia-smi's answer, at most one run per CACHE_SECONDS."""

    def __init__(self) -> None:
        self._at = 0.0
        self._gpus: list[dict[str, Any]] = []
        self._error: str | None = None
        self._lock = asyncio.Lock()

    async def gpus(self) -> tuple[list[dict[str, Any]], str | None]:
        async with self._lock:
            if time.monotonic() - self._at >= CACHE_SECONDS:
                self._gpus, self._error = await self._query()
                self._at = time.monotonic()
            return self._gpus, self._error

    async def _query(self) -> tuple[list[dict[str, Any]], str | None]:
        smi = shutil.which("nvidia-smi")
        if smi is None:
            return [], None  # no GPU given to this server
        proc = await asyncio.create_subprocess_exec(
            smi,
            f"--query-gpu={','.join(QUERY)}",
            "--format=csv,noheader,nounits",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), NVIDIA_SMI_TIMEOUT)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            return [], f"nvidia-smi did not answer in {NVIDIA_SMI_TIMEOUT:.0f} s"
        if proc.returncode != 0:
            return [], (err or out).decode(errors="replace").strip()[:200] or "nvidia-smi failed"
        return parse_gpus(out.decode(errors="replace")), None


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "hubops_usage"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    from jupyter_server.base.handlers import APIHandler
    from jupyter_server.utils import url_path_join
    from tornado import web

    usage = Usage()
    disk = Disk(serverapp.root_dir)  # the user's files: their directory, mounted there

    class UsageHandler(APIHandler):  # type: ignore[misc]
        _track_activity = False  # the status bar polls it: not the user's activity

        @web.authenticated
        async def get(self) -> None:
            gpus, error = await usage.gpus()
            self.finish(
                {
                    "gpus": gpus,
                    "gpu_error": error,
                    "oom_kills": oom_kills(),
                    "memory_limit_bytes": memory_limit(),
                    "disk": disk.snapshot(fresh=self.get_argument("fresh", "") == "1"),
                }
            )

    try:  # jupyter-resource-usage's status bar polls api/metrics/v1 every 5 s
        from jupyter_resource_usage.api import ApiHandler
    except ImportError:
        pass
    else:
        ApiHandler._track_activity = False

    web_app = serverapp.web_app
    route = url_path_join(web_app.settings["base_url"], "api/hubops/usage")
    web_app.add_handlers(".*$", [(route, UsageHandler)])
