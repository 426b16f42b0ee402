"""The hub's GPU monitor: what each GPU and each GPU holder does, and since when it is idle.

A JupyterHub-managed service (``hubops-gpus``, started by the hub in the hub container). Every
``--every`` seconds it takes a sample of NVML: a short-lived probe container of the hub image
with every GPU (capability ``utility``: nvidia-smi and NVML, no compute) and the host's PID
namespace runs ``python3 -m hubops_hub.nvml``. The hub itself holds no GPU; the probe is the
one place that does, for a second. The holders are the user containers that carry GPU labels.

A holder is *busy* at a sample when one of its GPUs is at or above ``--busy`` percent
utilisation and the holder runs a process there (or holds that GPU alone); memory alone is not
use: a notebook that keeps a 40 GB model on a GPU and computes nothing is idle. In MIG mode
NVML has no utilisation, so a process on the MIG device counts as use. The monitor remembers
when each holder was last busy; before its first sample (after a hub restart) it assumes
nothing older than its own start.

At each sample it also charges GPU-seconds, held and busy, to each holder's user and group
(``hubops_hub.gpuusage``, a SQLite file that DB backups include).

It serves its view as JSON on 127.0.0.1 inside the hub container (``STATE_URL``): the idle
culler's arbiter (``hubops_hub.culling``), the hub's metrics (``hubops_hub.metrics``), the
spawn form and ``invoke gpus`` all read that same view.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from hubops_hub import gpuusage
from hubops_hub.gpus import HOLDING_STATES, Holding, Policy, free_ids
from hubops_hub.labels import (
    LABEL_ENV,
    LABEL_GPU_IDLE_TIMEOUT,
    LABEL_GPUS,
    LABEL_GROUP,
    LABEL_ROLE,
    LABEL_SERVER,
    LABEL_STARTED,
    LABEL_USER,
)
from hubops_hub.nvml import Sample

PORT = 10311
STATE_URL = f"http://127.0.0.1:{PORT}/state"
PROBE_ROLE = "gpu-probe"
log = logging.getLogger("hubops-gpus")


@dataclass(frozen=True)
class Holder:
    """A user container that holds GPUs (from its labels)."""

    container_id: str
    user: str
    server: str
    gpus: tuple[str, ...]  # pool IDs, or ("all",)
    started: float
    idle_timeout: int | None = None  # seconds (label); None: the culler's own timeout
    group: str = ""  # the group its GPU-seconds are charged to (label)


def holder_from_labels(container_id: str, labels: Mapping[str, str]) -> Holder | None:
    gpus = labels.get(LABEL_GPUS, "")
    if not gpus:
        return None
    timeout = labels.get(LABEL_GPU_IDLE_TIMEOUT, "")
    return Holder(
        container_id=container_id,
        user=labels.get(LABEL_USER, "?"),
        server=labels.get(LABEL_SERVER, ""),
        gpus=tuple(gpus.split(",")),
        started=float(labels.get(LABEL_STARTED) or 0),
        idle_timeout=int(timeout) if timeout.isdigit() else None,
        group=labels.get(LABEL_GROUP, ""),
    )


def gpu_uuids(holder: Holder, sample: Sample) -> list[str]:
    """The UUIDs of the physical GPUs a holder's IDs are, or are part of (MIG)."""
    if holder.gpus == ("all",):
        return [g.uuid for g in sample.gpus]
    out = []
    for gpu_id in holder.gpus:
        state = sample.state(gpu_id)
        if state is not None:
            out.append(state.uuid)
    return out


def known(holder: Holder, sample: Sample) -> bool:
    """Whether the sample can say what the holder does: each of its IDs is a GPU (or a MIG
    device of one) that NVML listed. Where not, the culler keeps the holder."""
    return holder.gpus == ("all",) or all(sample.state(g) is not None for g in holder.gpus)


def _app_gpu(app_gpu: str, sample: Sample) -> str:
    """The physical GPU's UUID of a process's GPU (NVML may name a MIG device)."""
    state = sample.state(app_gpu)
    return state.uuid if state else app_gpu


def busy_count(holder: Holder, sample: Sample, holders: Iterable[Holder], busy: int) -> int:
    """How many of ``holder``'s GPUs it used at ``sample`` (see the module's rule)."""
    others = Counter(u for h in holders for u in gpu_uuids(h, sample))
    mine = {
        _app_gpu(a.gpu_uuid, sample) for a in sample.apps if a.container_id == holder.container_id
    }
    n = 0
    for uuid in gpu_uuids(holder, sample):
        state = next(g for g in sample.gpus if g.uuid == uuid)
        if state.utilization is None:  # MIG: no utilisation from NVML; a process is use
            n += uuid in mine
        elif state.utilization >= busy and (uuid in mine or others[uuid] <= 1):
            n += 1
    return n


def holder_busy(holder: Holder, sample: Sample, holders: Iterable[Holder], busy: int) -> bool:
    """Whether ``holder`` used one of its GPUs at ``sample`` (see the module's rule)."""
    return busy_count(holder, sample, holders, busy) > 0


def charges(
    sample: Sample, holders: list[Holder], busy: int, previous: float | None, every: int
) -> list[gpuusage.Charge]:
    """GPU-seconds since the previous sample (taken at ``previous``; None: none), per holder:
    held, its GPUs times the time it held them; busy, the GPUs it used at this sample times
    the same time. Nothing where the gap is longer than gpuusage.MAX_GAP samples."""
    if previous is None or sample.at - previous > gpuusage.MAX_GAP * every:
        return []
    out = []
    for h in holders:
        seconds = sample.at - max(previous, h.started)
        gpus = len(gpu_uuids(h, sample))
        if seconds <= 0 or not gpus:
            continue
        used = busy_count(h, sample, holders, busy)
        out.append(gpuusage.Charge(h.user, h.group, seconds * gpus, seconds * used))
    return out


@dataclass
class Tracker:
    """When each holder and each GPU was last busy, over the samples seen."""

    busy: int  # percent
    since: float  # the monitor's start: nothing before it is known
    last_busy: dict[str, float] = field(default_factory=dict)  # container ID -> time
    gpu_last_busy: dict[str, float] = field(default_factory=dict)  # GPU UUID -> time

    def update(self, sample: Sample, holders: list[Holder]) -> None:
        for g in sample.gpus:
            if g.utilization is not None and g.utilization >= self.busy:
                self.gpu_last_busy[g.uuid] = sample.at
        for h in holders:
            if holder_busy(h, sample, holders, self.busy):
                self.last_busy[h.container_id] = sample.at
        held = {h.container_id for h in holders}
        self.last_busy = {k: v for k, v in self.last_busy.items() if k in held}

    def holder_idle(self, holder: Holder, now: float) -> float:
        return now - max(self.last_busy.get(holder.container_id, 0.0), holder.started, self.since)

    def gpu_idle(self, uuid: str, now: float) -> float:
        return now - max(self.gpu_last_busy.get(uuid, 0.0), self.since)


def view(
    sample: Sample | None,
    holders: list[Holder],
    tracker: Tracker,
    policy: Policy,
    now: float,
    error: str | None = None,
) -> dict[str, Any]:
    """The monitor's answer: GPUs, holders with their idle time, the pool's free devices."""
    out: dict[str, Any] = {
        "now": now,
        "monitor_since": tracker.since,
        "sampled_at": sample.at if sample else None,
        "error": error,
        "busy_utilization": tracker.busy,
        "gpus": [],
        "holders": [],
        "strays": [],
        "pool": pool_view(sample, holders, policy),
    }
    if sample is None:
        return out
    for g in sample.gpus:
        out["gpus"].append({**asdict(g), "idle_seconds": round(tracker.gpu_idle(g.uuid, now), 1)})
    ids = {h.container_id for h in holders}
    for h in holders:
        out["holders"].append(
            {
                **asdict(h),
                "gpus": list(h.gpus),
                "gpu_uuids": gpu_uuids(h, sample),
                "busy": holder_busy(h, sample, holders, tracker.busy),
                "known": known(h, sample),
                "idle_seconds": round(tracker.holder_idle(h, now), 1),
                "processes": [asdict(a) for a in sample.apps if a.container_id == h.container_id],
            }
        )
    out["strays"] = [asdict(a) for a in sample.apps if a.container_id not in ids]
    return out


def pool_view(sample: Sample | None, holders: list[Holder], policy: Policy) -> dict[str, Any]:
    """Total, held and free of the pool, and each free device described (index, model, MIG)."""
    holdings = [Holding(h.user, h.server, h.gpus) for h in holders]
    if policy.name in ("exclusive", "shared"):
        ids = list(policy.pool)
        free = free_ids(policy, holdings)
    else:  # pinned: each user's own GPUs, no pool (the form says so); all: every server
        # sees every GPU; none: no GPU
        ids = [g.index for g in sample.gpus] if sample and policy.name == "all" else []
        free = []
    held = {g for h in holders for g in h.gpus}
    devices = []
    for gpu_id in free:
        device = sample.device(gpu_id) if sample else None
        devices.append(
            {
                "id": gpu_id,
                "index": device.index if device else gpu_id,
                "model": device.model if device else "",
                "mig_profile": device.mig_profile if device else "",
                "describe": device.describe() if device else f"GPU {gpu_id}",
            }
        )
    return {
        "policy": policy.name,
        "total": len(ids),
        "held": len(ids) if "all" in held else len([g for g in ids if g in held]),
        "free": len(free),
        "free_devices": devices,
    }


def kinds(free_devices: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Free devices by kind: the model, and the MIG profile for a MIG device."""
    out: dict[str, list[dict[str, Any]]] = {}
    for d in free_devices:
        kind = f"{d['model']} MIG {d['mig_profile']}" if d["mig_profile"] else d["model"]
        out.setdefault(kind or "GPU", []).append(d)
    return out


def read_state(url: str = STATE_URL, timeout: float = 2.0) -> dict[str, Any] | None:
    """The monitor's view, or None when it does not answer (blocking; a local socket)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            data: dict[str, Any] = json.loads(r.read())
            return data
    except (OSError, ValueError):
        return None


# --- the service -----------------------------------------------------------------------------


class Monitor:
    def __init__(
        self,
        environment: str,
        image: str,
        every: int,
        busy: int,
        policy: Policy,
        probe_name: str = "",
    ):
        import docker  # the hub image's; imported here so the pure parts need none

        self.client = docker.from_env()
        self.environment = environment
        self.image = image
        self.every = every
        self.policy = policy
        self.tracker = Tracker(busy=busy, since=time.time())
        self.sample: Sample | None = None
        self.holders: list[Holder] = []
        self.error: str | None = "no sample yet"
        self.usage_db = gpuusage.USAGE_DB
        self.probe_seconds: float | None = None
        # one name per environment: a probe left behind by a killed monitor (a hub restart
        # in the middle of a sample) is removed by the next one, never piled up
        self.probe_name = probe_name or f"hubops-{environment}-gpu-probe"

    def probe(self) -> Sample:
        import docker
        import docker.errors

        name = self.probe_name
        with contextlib.suppress(docker.errors.NotFound):
            self.client.api.remove_container(name, force=True)
        out = self.client.containers.run(
            self.image,
            ["python3", "-m", "hubops_hub.nvml"],
            name=name,
            remove=True,
            stdout=True,
            stderr=False,
            device_requests=[
                docker.types.DeviceRequest(count=-1, capabilities=[["gpu", "utility"]])
            ],
            pid_mode="host",  # NVML's PIDs are the host's; /proc/<pid>/cgroup names the container
            network_mode="none",
            read_only=True,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            user="65534:65534",
            environment={"NVIDIA_DRIVER_CAPABILITIES": "utility"},
            labels={LABEL_ENV: self.environment, LABEL_ROLE: PROBE_ROLE},
        )
        return Sample.from_json(json.loads(out))

    def read_holders(self) -> list[Holder]:
        out = []
        for c in self.client.api.containers(
            all=True, filters={"label": [f"{LABEL_ENV}={self.environment}", LABEL_GPUS]}
        ):
            if c.get("State") not in HOLDING_STATES:  # as the spawner's allocation counts
                continue
            h = holder_from_labels(str(c["Id"]), c.get("Labels") or {})
            if h is not None:
                out.append(h)
        return out

    def step(self) -> None:
        begun = time.monotonic()
        try:
            sample = self.probe()
            self.probe_seconds = round(time.monotonic() - begun, 2)
            holders = self.read_holders()
        except Exception as exc:  # any failure: keep the last view, say why
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("GPU sample failed: %s", self.error)
            return
        self.tracker.update(sample, holders)
        previous = self.sample.at if self.sample else None
        self.sample, self.holders, self.error = sample, holders, None
        try:
            found = charges(sample, holders, self.tracker.busy, previous, self.every)
            gpuusage.record(self.usage_db, sample.at, found)
        except Exception as exc:  # the view goes on; the hours of this sample are lost
            log.warning("could not record GPU-seconds in %s: %s", self.usage_db, exc)

    def state(self) -> dict[str, Any]:
        """The view with the holders as they are now (labels, a quick engine call) and NVML as
        of the last sample: a spawn or stop since then shows at once."""
        try:
            holders = self.read_holders()
        except Exception:  # the engine does not answer now: the holders of the last sample
            holders = self.holders
        out = view(self.sample, holders, self.tracker, self.policy, time.time(), self.error)
        out["probe_seconds"] = self.probe_seconds  # what the last sample cost, start to end
        out["usage"] = gpuusage.totals(self.usage_db, by="both")  # since ever, for the metrics
        return out

    def run(self) -> None:
        monitor = self

        class StateHandler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/state":
                    self.send_error(404)
                    return
                body = json.dumps(monitor.state()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", PORT), StateHandler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        while True:
            started = time.monotonic()
            self.step()
            time.sleep(max(1.0, self.every - (time.monotonic() - started)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hubops-gpus", description=__doc__)
    parser.add_argument("--environment", help="the hubops environment (service mode)")
    parser.add_argument("--image", help="the hub image, run as the probe")
    parser.add_argument("--every", type=int, default=30, help="seconds between samples")
    parser.add_argument("--busy", type=int, default=5, help="utilisation that counts as use, %%")
    parser.add_argument("--policy", default="{}", help="the spawner's gpu_policy, as JSON")
    parser.add_argument("--print", action="store_true", help="print the running monitor's view")
    parser.add_argument(
        "--once",
        action="store_true",
        help="take one sample and print its view (idle times unknown), for `invoke gpus` "
        "where no monitor runs",
    )
    args = parser.parse_args(argv)
    if args.print:
        state = read_state()
        if state is None:
            print("the GPU monitor (hubops-gpus) does not answer", file=sys.stderr)
            return 1
        print(json.dumps(state))
        return 0
    if not args.environment or not args.image:
        parser.error("--environment and --image are needed (or --print)")
    logging.basicConfig(
        level=logging.INFO, format="[%(levelname)1.1s %(asctime)s hubops-gpus] %(message)s"
    )
    policy = Policy.from_dict(json.loads(args.policy))
    if args.once:  # its own probe name: a running monitor's next sample leaves it alone
        name = f"hubops-{args.environment}-gpu-probe-once"
        once = Monitor(args.environment, args.image, args.every, args.busy, policy, name)
        once.step()
        print(json.dumps({**once.state(), "once": True}))
        return 0
    Monitor(args.environment, args.image, args.every, args.busy, policy).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
