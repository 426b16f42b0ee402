"""Labels on user containers: the record of who holds which GPUs (read by the hub's spawner
and by ``invoke gpus``)."""

from __future__ import annotations

LABEL_ENV = "org.hubops.environment"
LABEL_GPUS = "org.hubops.gpus"  # comma-separated device IDs, or "all"
LABEL_USER = "org.hubops.user"
LABEL_SERVER = "org.hubops.server"
LABEL_STARTED = "org.hubops.started"  # Unix time the container was created
LABEL_IMAGE = "org.hubops.image"  # the image reference it runs, name@sha256:... after a push
