"""``invoke gpus``: who holds which GPU, read from the user containers on the hub host."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone

from hubops_hub.gpumon import holder_from_labels
from hubops_hub.labels import LABEL_ENV, LABEL_GPUS

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
        h = holder_from_labels(str(c["Id"]), c["Config"].get("Labels") or {})
        if h is None:
            continue
        out.append(
            GPUHolder(
                user=h.user,
                server=h.server or "(default)",
                gpus=h.gpus,
                since=datetime.fromtimestamp(h.started, tz=timezone.utc) if h.started else None,
                image=str(c["Config"].get("Image", "")),
                state=str(c["State"].get("Status", "")),
            )
        )
    return sorted(out, key=lambda h: h.since or datetime.min.replace(tzinfo=timezone.utc))
