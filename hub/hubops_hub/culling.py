"""GPU-aware culling: jupyterhub-idle-culler with hubops' arbiter.

jupyterhub-idle-culler (2.0) asks ``IdleCuller.cull_arbiter_hook`` whether to stop each ready
server, given the time since the server's last Jupyter activity. hubops' arbiter adds what a
GPU holder does on its GPU (from the GPU monitor, ``hubops_hub.gpumon``) and the maximum age,
and leaves the decision to :func:`decide`:

- a server older than ``culling.max_age`` is stopped (reason ``max-age``);
- a server without a GPU is stopped after ``culling.timeout`` without Jupyter activity
  (``idle``), as without hubops;
- a server that holds a GPU is stopped once it has used neither its GPU nor Jupyter for its
  GPU idle timeout (``gpu-idle``): the profile's ``gpu_idle_timeout``, else
  ``gpu.idle_timeout``, else ``culling.timeout``. While it is busy on its GPU it is never
  stopped for Jupyter inactivity alone. When the monitor cannot say what its GPU does (no
  sample yet, a GPU ID NVML does not list), it is kept; once the monitor has had no sample
  for longer than that timeout, the plain rule applies, so a broken monitor does not keep
  every GPU.

Each stop is written, before the culler stops the server, to a journal in the hub's data
directory (one JSON line: time, user, server, reason, message): the hub counts culls by
reason from it (``hubops_culls_total``), and the spawn form shows a user why their last
server was stopped.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from hubops_hub.labels import LABEL_GPU_IDLE_TIMEOUT, LABEL_GPUS, LABEL_SERVER, LABEL_USER

# in the hub data dir (hubops.plan.model.HUB_DATA_DIR)
JOURNAL = "/srv/jupyterhub/hubops-culls.jsonl"
REASONS = ("idle", "gpu-idle", "max-age")


@dataclass(frozen=True)
class Verdict:
    cull: bool
    reason: str = ""  # one of REASONS when cull
    message: str = ""  # for the user and the log


KEEP = Verdict(False)


def span(seconds: float) -> str:
    """Seconds as people say them: 59 s, 30 min, 2.5 h."""
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds / 3600:.1f} h"


def decide(
    *,
    jupyter_idle: float,
    timeout: int,
    age: float | None = None,
    max_age: int = 0,
    holds_gpu: bool = False,
    gpu_idle: float | None = None,
    gpu_timeout: int | None = None,
    monitor_down: bool = False,
) -> Verdict:
    """Whether to stop a server, and why. ``gpu_idle``: seconds since the holder last used
    its GPU (None: unknown); ``gpu_timeout``: its GPU idle timeout (None: ``timeout``);
    ``monitor_down``: the GPU monitor has had no sample for longer than that timeout, so a
    holder whose use is unknown falls back to the plain rule (a broken monitor must not keep
    every GPU forever)."""
    if max_age and age is not None and age >= max_age:
        return Verdict(
            True,
            "max-age",
            f"it had run for {span(age)}, the longest a server may run here "
            f"({span(max_age)}, culling.max_age)",
        )
    if not holds_gpu or (gpu_idle is None and monitor_down):
        if jupyter_idle >= timeout:
            return Verdict(
                True,
                "idle",
                f"it was not used for {span(jupyter_idle)} "
                f"({span(timeout)} allowed, culling.timeout)"
                + (
                    "; its GPU use was unknown (the GPU monitor had no sample)" if holds_gpu else ""
                ),
            )
        return KEEP
    if gpu_idle is None:
        return KEEP
    limit = gpu_timeout or timeout
    idle = min(jupyter_idle, gpu_idle)
    if idle >= limit:
        return Verdict(
            True,
            "gpu-idle",
            f"it held a GPU and used neither the GPU nor Jupyter for {span(idle)} "
            f"({span(limit)} allowed, gpu.idle_timeout); the GPU went back to the pool",
        )
    return KEEP


# --- the journal -----------------------------------------------------------------------------


def record(
    path: str, user: str, server: str, verdict: Verdict, now: float, container: str = ""
) -> None:
    line = json.dumps(
        {
            "at": now,
            "user": user,
            "server": server,
            "reason": verdict.reason,
            "message": verdict.message,
            "container": container,
        }
    )
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def entries(path: str = JOURNAL) -> list[dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line cut off by a crash
    return out


def counts(path: str = JOURNAL) -> Counter[str]:
    """Culls by reason; a server the culler had to ask twice (its stop was slow or failed)
    counts once: one container, one cull."""
    seen: dict[str, str] = {}
    for n, e in enumerate(entries(path)):
        seen[str(e.get("container") or n)] = str(e.get("reason", ""))
    return Counter(seen.values())


def last_for(user: str, server: str = "", path: str = JOURNAL) -> dict[str, Any] | None:
    found = [e for e in entries(path) if e.get("user") == user and e.get("server", "") == server]
    return found[-1] if found else None


# --- the arbiter -----------------------------------------------------------------------------


class Arbiter:
    """``IdleCuller.cull_arbiter_hook``: called for each ready server with its Jupyter
    inactivity; the server model carries the spawner's state (scope admin:server_state), whose
    object_id is the user's container."""

    def __init__(self, max_age: int, journal: str, state_url: str) -> None:
        import docker

        self.client = docker.from_env()
        self.max_age = max_age
        self.journal = journal
        self.state_url = state_url

    def labels(self, container_id: str) -> dict[str, str]:
        import docker.errors

        try:
            info = self.client.api.inspect_container(container_id)
        except docker.errors.NotFound:
            return {}
        return dict((info.get("Config") or {}).get("Labels") or {})

    async def __call__(
        self, *, inactive: timedelta, inactive_limit: int, server: dict[str, Any], **_: Any
    ) -> bool:
        from hubops_hub.gpumon import read_state

        loop = asyncio.get_running_loop()
        container_id = str((server.get("state") or {}).get("object_id") or "")
        labels = await loop.run_in_executor(None, self.labels, container_id) if container_id else {}
        holds_gpu = bool(labels.get(LABEL_GPUS))
        timeout_label = labels.get(LABEL_GPU_IDLE_TIMEOUT, "")
        gpu_timeout = int(timeout_label) if timeout_label.isdigit() else None
        gpu_idle = None
        monitor_down = False
        if holds_gpu:
            state = await loop.run_in_executor(None, read_state, self.state_url)
            if state is not None:
                mine = {h["container_id"]: h for h in state.get("holders", [])}.get(container_id)
                if state.get("sampled_at") and not state.get("error") and mine and mine["known"]:
                    gpu_idle = float(mine["idle_seconds"])
                last = state.get("sampled_at") or state.get("monitor_since") or 0
                limit = gpu_timeout or inactive_limit
                monitor_down = float(state.get("now", 0)) - float(last) > limit
        started = server.get("started")
        age = None
        if started:
            from jupyterhub_idle_culler import parse_date, utcnow

            age = (utcnow() - parse_date(started)).total_seconds()
        verdict = decide(
            jupyter_idle=inactive.total_seconds(),
            timeout=inactive_limit,
            age=age,
            max_age=self.max_age,
            holds_gpu=holds_gpu,
            gpu_idle=gpu_idle,
            gpu_timeout=gpu_timeout,
            monitor_down=monitor_down,
        )
        if verdict.cull:
            full_name = str(server.get("full_name") or "/")  # "user/server name"
            user = labels.get(LABEL_USER) or full_name.split("/")[0]
            name = labels.get(LABEL_SERVER, str(server.get("name", "")))
            record(self.journal, user, name, verdict, time.time(), container_id)
            print(f"[hubops-culler] stopping {user}'s server: {verdict.message}", file=sys.stderr)
        return verdict.cull


def main() -> None:
    """jupyterhub-idle-culler's command line, with hubops' arbiter; HUBOPS_CULL_MAX_AGE is the
    maximum age (the culler's own --max-age stays 0: the arbiter decides, so it is counted)."""
    from jupyterhub_idle_culler import IdleCuller

    from hubops_hub.gpumon import STATE_URL

    arbiter = Arbiter(
        max_age=int(os.environ.get("HUBOPS_CULL_MAX_AGE", "0")),
        journal=JOURNAL,
        state_url=STATE_URL,
    )
    IdleCuller.launch_instance(cull_arbiter_hook=arbiter)


if __name__ == "__main__":
    main()
