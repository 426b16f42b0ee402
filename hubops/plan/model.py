"""Settings -> the values a deployment is made of.

Everything computed lives here, as plain typed values: names of containers and networks, image
references, the JupyterHub traits per class, and the specs of the proxy and hub containers.
``render`` only places these values into files; ``deploy`` only carries them out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from hubops_hub.userdirs import USER_DIR_PREFIX as USER_DIR_PREFIX  # one definition: the hub's
from pydantic import BaseModel, ConfigDict

# Paths inside the hub container. The host paths come from the environment's `paths`.
HUB_CONFIG_DIR = "/etc/jupyterhub"
HUB_DATA_DIR = "/srv/jupyterhub"
HUB_SECRETS_DIR = f"{HUB_DATA_DIR}/secrets"
CONFIG_FILE = "jupyterhub_config.py"
DB_FILE = "jupyterhub.sqlite"
# the GPU monitor's GPU-seconds per user and group (hubops_hub.gpuusage.USAGE_DB), in DB backups
GPU_USAGE_FILE = "hubops-gpu-usage.sqlite"
COOKIE_SECRET_FILE = "jupyterhub_cookie_secret"
PROXY_TLS_SOURCE = "/etc/hubops/tls"  # cert and key as mounted from the host
PROXY_TLS_DIR = "/run/hubops-tls"  # readable copies for the unprivileged proxy process
DOCKER_SOCKET = "/var/run/docker.sock"

HUB_PORT = 8081
PROXY_PORT = 8000
PROXY_API_PORT = 8001
PROXY_REDIRECT_PORT = 8080
USER_PORT = 8888  # DockerSpawner's port of a user server

Digests = Mapping[str, str] | None  # tag reference -> pushed digest

# Hardening (see the README, "Isolation and hardening"). Every container drops all of
# Docker's default capabilities and gets back only what its own start needs; none may gain
# privileges (setuid binaries, file capabilities) after it started.
NO_NEW_PRIVILEGES = ["no-new-privileges"]
# the proxy starts as root for a moment: it reads the token and the TLS key, chowns its copies
# of them (CHOWN) and drops to 65534:65534 with setpriv (SETUID, SETGID)
PROXY_CAPS = ["CHOWN", "SETGID", "SETUID"]
# the hub (root in its container, and it holds the engine's socket, which is root on the host
# anyway) makes users' directories and hands them to their owner (CHOWN, FOWNER); with
# per-user uids it reaches into directories that only their owner may open (DAC_OVERRIDE)
HUB_CAPS = ["CHOWN", "DAC_OVERRIDE", "FOWNER"]
# a user server runs as its non-root user from its first process: it needs no capability
USER_CAPS: list[str] = []
PROXY_PIDS_LIMIT = 256
HUB_PIDS_LIMIT = 1024

SPAWNER_CLASS = "hubops_hub.spawner.HubopsSpawner"
SWARM_SPAWNER_CLASS = "hubops_hub.spawner.HubopsSwarmSpawner"
PROXY_CLASS = "hubops_hub.proxy.HubopsProxy"  # the proxy's traffic is not activity
AUTH_MODULE = "hubops_hub.auth"
AUTH_CLASSES = {  # auth.type -> class in AUTH_MODULE (its section in the config)
    "gitlab": "HubopsGitLabOAuthenticator",
    "github": "HubopsGitHubOAuthenticator",
    "oidc": "HubopsOIDCAuthenticator",
    "shared-password": "HubopsSharedPasswordAuthenticator",
}
AUTH_GROUPS_KEY = "hubops_groups"  # hubops_hub.auth.GROUPS_KEY
OAUTH_CA_FILE = "/etc/hubops/oauth-ca.pem"  # auth.ca_bundle as mounted into the hub
# admin:server_state: the server model carries the spawner's state, whose object_id is the
# user's container, so that the arbiter (hubops_hub.culling) can find what it holds
CULLER_SCOPES = [
    "list:users",
    "read:users:activity",
    "read:servers",
    "delete:servers",
    "admin:server_state",
]
GPU_MONITOR = "hubops-gpus"  # the GPU monitor's service (hubops_hub.gpumon)
REAPER = "hubops-reaper"  # removes user servers the hub's DB does not know (hubops_hub.reaper)
REAPER_SCOPES = ["list:users", "read:servers"]
DISK_USAGE = "hubops-disk-usage"  # measures users' directories (hubops_hub.diskusage)
DISK_USAGE_SCOPES = ["list:users", "read:users:groups"]
METRICS_SERVICE = "metrics"  # the scraper's identity: its token reads /hub/metrics
# hubops' own day-two tasks (data.restore --in-place stops a user's server): an API-only
# service whose token is generated on the hub host and used there, from inside the hub
OPS_SERVICE = "hubops-ops"
OPS_SCOPES = ["read:users:name", "read:servers", "delete:servers"]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Mount(_Frozen):
    source: str
    target: str
    read_only: bool = True


class PortBinding(_Frozen):
    container_port: int
    host_ip: str
    host_port: int


class ContainerSpec(_Frozen):
    role: Literal["proxy", "hub", "firewall"]
    name: str
    image: str
    command: list[str]
    environment: dict[str, str]
    ports: list[PortBinding]
    mounts: list[Mount]
    network: str
    labels: dict[str, str]
    restart_policy: str = "unless-stopped"
    entrypoint: str | None = None
    ip: str | None = None  # its fixed address on the network (hubops.deploy.firewall.Layout)
    user: str | None = None
    cap_drop: list[str] = []
    cap_add: list[str] = []
    security_opt: list[str] = []
    pids_limit: int | None = None
    read_only: bool = False
    tmpfs: dict[str, str] = {}  # path -> mount options


class HostDir(_Frozen):
    path: str
    uid: int = 0
    gid: int = 0
    mode: int = 0o755


class Plan(_Frozen):
    """What a deployment of one environment consists of. Holds no secret values."""

    environment: str
    revisions: dict[str, str]
    public_url: str
    network: str
    images: list[str]
    host_dirs: list[HostDir]
    hub_secrets: list[str]
    # generated on the hub host once: name -> host path
    generated_secrets: dict[str, str]
    containers: list[ContainerSpec]

    def container(self, role: str) -> ContainerSpec:
        """The spec of the container with ``role`` (proxy, hub)."""
        return next(c for c in self.containers if c.role == role)

    @property
    def helper_images(self) -> list[str]:
        """Images of the plan that can do root's file work for a non-root deploy user."""
        return [self.container("hub").image, self.container("proxy").image]


class PyObject(_Frozen):
    """A Python object of the hub image: ``module.name``, called with ``args`` unless None."""

    module: str
    name: str
    args: list[Any] | None = None


class HubConfig(_Frozen):
    """The values of jupyterhub_config.py, per traitlets class."""

    environment: str
    secrets_dir: str
    # class name -> trait name -> plain value (str, int, float, bool, None, list, dict)
    traits: dict[str, dict[str, Any]]
    # class name -> trait name -> secret file name in secrets_dir
    secret_traits: dict[str, dict[str, str]]
    # class name -> trait name -> code of hubops_hub (hooks, the user name escape)
    objects: dict[str, dict[str, PyObject]]
    # service name -> secret file name of its API token (JupyterHub.service_tokens)
    service_tokens: dict[str, str] = {}
