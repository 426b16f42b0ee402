"""hubops' gauges on the hub's own Prometheus endpoint (/hub/metrics, scope read:metrics).

Registered in the hub process's default registry when the spawner module is imported, so
JupyterHub serves them next to its own metrics. At each scrape the collector reads the GPU
monitor's view (``hubops_hub.gpumon``, a local socket, 2 s at most), the cull journal
(``hubops_hub.culling``) and the record of the users' files' last backup
(``hubops_hub.databackup``); spawn failures are counted by the spawner as they happen.
"""

from __future__ import annotations

import calendar
import os
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hubops_hub import culling, databackup, diskusage
from hubops_hub.gpumon import STATE_URL, read_state

MONITOR_ENV = "HUBOPS_GPU_MONITOR"  # set (to "1") in the hub container when the monitor runs
MIB = 1024 * 1024

SPAWN_FAILURES = Counter(
    "hubops_gpu_spawn_failures",
    "Spawns refused because the GPUs asked for were not free (reason: empty-pool), did not "
    "come free while the spawn waited in line (queue-timeout), or over the user's limit "
    "(over-limit).",
    ["reason"],
)


class HubopsCollector(Collector):
    def __init__(
        self,
        state_url: str = STATE_URL,
        journal: str = culling.JOURNAL,
        disk_usage: str = diskusage.USAGE_FILE,
        backup_record: str = databackup.RECORD,
    ) -> None:
        self.state_url = state_url
        self.journal = journal
        self.disk_usage = disk_usage
        self.backup_record = backup_record

    def collect(self) -> Iterator[Metric]:
        culls = CounterMetricFamily(
            "hubops_culls", "User servers stopped by the idle culler, by reason.", labels=["reason"]
        )
        found = culling.counts(self.journal)
        for reason in culling.REASONS:
            culls.add_metric([reason], found.get(reason, 0))
        yield culls
        yield from self.disk()
        yield from backup_metrics(databackup.read_record(self.backup_record))
        if not os.environ.get(MONITOR_ENV):
            return
        state = read_state(self.state_url)
        up = state is not None and state.get("sampled_at") is not None and not state.get("error")
        yield GaugeMetricFamily(
            "hubops_gpu_monitor_up",
            "1 when the GPU monitor's last sample succeeded.",
            value=int(up),
        )
        if state is None:
            return
        pool = state["pool"]
        for what, help_text in (
            ("total", "GPUs (pool IDs) the hub hands out."),
            ("held", "GPUs of the pool held by a running server."),
            ("free", "GPUs of the pool that can take one more server now."),
        ):
            yield GaugeMetricFamily(f"hubops_gpus_{what}", help_text, value=pool[what])
        labels = ["gpu", "uuid", "name"]
        util = GaugeMetricFamily(
            "hubops_gpu_utilization_ratio", "GPU utilisation, 0-1.", labels=labels
        )
        used = GaugeMetricFamily(
            "hubops_gpu_memory_used_bytes", "GPU memory in use.", labels=labels
        )
        total = GaugeMetricFamily("hubops_gpu_memory_total_bytes", "GPU memory.", labels=labels)
        idle = GaugeMetricFamily(
            "hubops_gpu_idle_seconds",
            "Seconds since the GPU was last at or above the busy utilisation.",
            labels=labels,
        )
        for g in state["gpus"]:
            key = [g["index"], g["uuid"], g["name"]]
            if g["utilization"] is not None:
                util.add_metric(key, g["utilization"] / 100)
            if g["memory_used_mib"] is not None:
                used.add_metric(key, g["memory_used_mib"] * MIB)
            if g["memory_total_mib"] is not None:
                total.add_metric(key, g["memory_total_mib"] * MIB)
            idle.add_metric(key, g["idle_seconds"])
        yield from (util, used, total, idle)
        holder = GaugeMetricFamily(
            "hubops_gpu_holder_idle_seconds",
            "Seconds since a GPU-holding server last used its GPU (or started).",
            labels=["user", "server", "gpus"],
        )
        for h in state["holders"]:
            holder.add_metric([h["user"], h["server"], ",".join(h["gpus"])], h["idle_seconds"])
        yield holder
        seconds = CounterMetricFamily(
            "hubops_gpu_seconds",
            "GPU-seconds per user and the group whose profile gave the GPU: held (GPUs times "
            "the time held) and busy (of those, the GPUs used at the monitor's samples).",
            labels=["user", "group", "state"],
        )
        for row in state.get("usage") or []:
            seconds.add_metric([row["user"], row["group"], "held"], row["held_seconds"])
            seconds.add_metric([row["user"], row["group"], "busy"], row["busy_seconds"])
        yield seconds

    def disk(self) -> Iterator[Metric]:
        """Users' disk use and quotas, as hubops-disk-usage last measured them."""
        usage = diskusage.read_usage(self.disk_usage)
        if usage is None:
            return
        used = GaugeMetricFamily(
            "hubops_user_disk_bytes", "Disk use of the user's directory.", labels=["user"]
        )
        quota = GaugeMetricFamily(
            "hubops_user_disk_quota_bytes", "The user's disk quota.", labels=["user"]
        )
        for user, entry in sorted((usage.get("users") or {}).items()):
            used.add_metric([user], int(entry.get("bytes") or 0))
            if entry.get("quota_bytes"):
                quota.add_metric([user], int(entry["quota_bytes"]))
        yield from (used, quota)
        yield GaugeMetricFamily(
            "hubops_user_disk_sampled_timestamp_seconds",
            "When users' disk use was last measured (Unix time).",
            value=float(usage.get("sampled_at") or 0),
        )
        fs = usage.get("filesystem") or {}
        if fs.get("free_bytes") is not None:
            yield GaugeMetricFamily(
                "hubops_user_data_free_bytes",
                "Free space on the filesystem of the users' directories.",
                value=int(fs["free_bytes"]),
            )


def _timestamp(text: object) -> float | None:
    """Seconds since the epoch of a record's UTC time (2024-05-01T03:00:02Z)."""
    if not isinstance(text, str):
        return None
    try:
        return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return None


def backup_metrics(record: dict[str, Any] | None) -> Iterator[Metric]:
    """The last backup of the users' files (hubops_hub.databackup's record), for an alert on
    its age or its failure; nothing before the first run."""
    if record is None:
        return
    yield GaugeMetricFamily(
        "hubops_user_backup_last_run_ok",
        "1 when the last backup of the users' files worked, 0 when it failed.",
        value=int(bool(record.get("ok"))),
    )
    for name, key, help_text in (
        ("last_run_timestamp_seconds", "time", "When the last backup of the users' files ran."),
        (
            "last_success_timestamp_seconds",
            "last_success",
            "When a backup of the users' files last worked.",
        ),
    ):
        when = _timestamp(record.get(key))
        if when is not None:
            yield GaugeMetricFamily(f"hubops_user_backup_{name}", help_text, value=when)
    if not record.get("ok"):
        return
    for name, key, help_text in (
        ("last_duration_seconds", "seconds", "How long the last backup took."),
        ("last_files", "files", "Files in the last snapshot."),
        ("last_bytes", "bytes", "Bytes of the users' files in the last snapshot."),
        ("last_added_bytes", "bytes_added", "Bytes the last backup added to the repository."),
    ):
        value = record.get(key)
        if isinstance(value, int | float):
            yield GaugeMetricFamily(f"hubops_user_backup_{name}", help_text, value=value)


_registered: list[HubopsCollector] = []


def register() -> None:
    """Once per process."""
    if not _registered:
        _registered.append(HubopsCollector())
        REGISTRY.register(_registered[0])
