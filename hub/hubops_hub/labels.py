"""Every label hubops puts on containers, images and networks, defined once: the hub's spawner
(this package) and the operator's tools (``hubops``) both read them.

User containers are the record of who holds which GPU (read by the spawner and by
``invoke gpus``); the hub and proxy containers carry what made them (spec hash, image).
"""

from __future__ import annotations

LABEL_PREFIX = "org.hubops"
LABEL_ENV = f"{LABEL_PREFIX}.environment"  # the hubops environment a container belongs to
LABEL_ROLE = f"{LABEL_PREFIX}.role"  # proxy, hub, user, build, test, root-helper
LABEL_GPUS = f"{LABEL_PREFIX}.gpus"  # comma-separated device IDs, or "all"
LABEL_USER = f"{LABEL_PREFIX}.user"
LABEL_SERVER = f"{LABEL_PREFIX}.server"
# the group whose profile gave the server its GPUs (GPU-hours are charged to it); "" for none
LABEL_GROUP = f"{LABEL_PREFIX}.group"
LABEL_STARTED = f"{LABEL_PREFIX}.started"  # Unix time the container was created
LABEL_IMAGE = f"{LABEL_PREFIX}.image"  # the image reference it runs, name@sha256:... after a push
LABEL_HASH = f"{LABEL_PREFIX}.spec-hash"  # hub and proxy: a hash of what made them
LABEL_JH = f"{LABEL_PREFIX}.jupyterhub.version"  # images and the hub: JupyterHub's version
LABEL_CUDA = f"{LABEL_PREFIX}.cuda"  # images: the CUDA version their user-space needs
# networks: the fixed addresses of the proxy and the hub (hubops.deploy.firewall.Layout)
LABEL_ADDRESS_PROXY = f"{LABEL_PREFIX}.address.proxy"
LABEL_ADDRESS_HUB = f"{LABEL_PREFIX}.address.hub"
# user containers holding GPUs: seconds of GPU and Jupyter idleness before the culler stops them
LABEL_GPU_IDLE_TIMEOUT = f"{LABEL_PREFIX}.gpu-idle-timeout"
