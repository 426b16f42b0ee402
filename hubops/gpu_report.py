"""``invoke gpus``: who holds which GPU, read from the user containers on the hub host."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone

from hubops_hub.labels import LABEL_ENV, LABEL_GPUS, LABEL_SERVER, LABEL_STARTED, LABEL_USER

from hubops.hosts import Host, quote


@dataclass(frozen=True)
class GPUHolder:
    user: str
    server: str
    gpus: tuple[str, ...]
    since: datetime | None
    image: str
    state: str
    node: str = ""  # cluster swarm: the node the server's task runs on


def holders(host: Host, environment: str) -> list[GPUHolder]:
    """Every user container of the environment that holds GPUs, oldest first."""
    listing = host.run(
        quote(
            "docker",
            "ps",
            "--all",
            "--quiet",
            "--filter",
            f"label={LABEL_ENV}={environment}",
            "--filter",
            f"label={LABEL_GPUS}",
        )
    ).stdout.split()
    if not listing:
        return []
    out = []
    for c in json.loads(host.run(quote("docker", "inspect", *listing)).stdout):
        labels = c["Config"].get("Labels") or {}
        gpus = labels.get(LABEL_GPUS, "")
        if not gpus:
            continue
        started = labels.get(LABEL_STARTED)
        out.append(
            GPUHolder(
                user=labels.get(LABEL_USER, "?"),
                server=labels.get(LABEL_SERVER, "") or "(default)",
                gpus=tuple(gpus.split(",")),
                since=datetime.fromtimestamp(int(started), tz=timezone.utc) if started else None,
                image=str(c["Config"].get("Image", "")),
                state=str(c["State"].get("Status", "")),
            )
        )
    return sorted(out, key=lambda h: h.since or datetime.min.replace(tzinfo=timezone.utc))
