"""Settings -> the values a deployment is made of.

Everything computed lives here, as plain typed values: names of containers and networks, image
references, the JupyterHub traits per class, and the specs of the proxy and hub containers.
``render`` only places these values into files; ``deploy`` only carries them out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

from hubops_hub.labels import LABEL_ENV, LABEL_IMAGE, LABEL_ROLE
from pydantic import BaseModel, ConfigDict

from hubops import images
from hubops.secrets import COOKIE_SECRET, METRICS_TOKEN, PROXY_TOKEN, hub_secrets
from hubops.settings import (
    Environment,
    GitHubAuth,
    GitLabAuth,
    OIDCAuth,
    SharedPasswordAuth,
)

# Paths inside the hub container. The host paths come from the environment's `paths`.
HUB_CONFIG_DIR = "/etc/jupyterhub"
HUB_DATA_DIR = "/srv/jupyterhub"
HUB_SECRETS_DIR = f"{HUB_DATA_DIR}/secrets"
CONFIG_FILE = "jupyterhub_config.py"
DB_FILE = "jupyterhub.sqlite"
COOKIE_SECRET_FILE = "jupyterhub_cookie_secret"
PROXY_TLS_SOURCE = "/etc/hubops/tls"  # cert and key as mounted from the host
PROXY_TLS_DIR = "/run/hubops-tls"  # readable copies for the unprivileged proxy process
DOCKER_SOCKET = "/var/run/docker.sock"

HUB_PORT = 8081
PROXY_PORT = 8000
PROXY_API_PORT = 8001
PROXY_REDIRECT_PORT = 8080
USER_PORT = 8888  # DockerSpawner's port of a user server
USER_DIR_PREFIX = "jupyterhub-user-"

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
METRICS_SERVICE = "metrics"  # the scraper's identity: its token reads /hub/metrics


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
    ip: str | None = None  # its fixed address on the network (hubops.firewall.Layout)
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


def names(env_name: str) -> dict[str, str]:
    prefix = f"hubops-{env_name}"
    return {
        "network": prefix,
        "proxy": f"{prefix}-proxy",
        "hub": f"{prefix}-hub",
        "user_prefix": f"{prefix}-user",
    }


def hub_image(settings: Environment, revs: Mapping[str, str], digests: Digests = None) -> str:
    """The hub image's reference (by digest once pushed): the hub, and the GPU monitor's
    probe, run it."""
    return images.by_digest(images.pinned_ref(settings.registry.url, "hub", revs["hub"]), digests)


def singleuser_choices(
    settings: Environment, revs: Mapping[str, str], digests: Digests = None
) -> dict[str, str]:
    """Display name -> image reference (by digest once pushed), the default first."""
    registry = settings.registry.url
    return {
        display: images.by_digest(images.resolve_singleuser(value, registry, revs), digests)
        for display, value in settings.singleuser.choices.items()
    }


def hub_config(
    env_name: str, settings: Environment, revs: Mapping[str, str], digests: Digests = None
) -> HubConfig:
    n = names(env_name)
    parts = urlsplit(settings.public_url)
    base_url = (parts.path.rstrip("/") or "") + "/"
    hub: dict[str, Any] = {
        "public_url": settings.public_url + "/",
        "base_url": base_url,
        "hub_bind_url": f"http://0.0.0.0:{HUB_PORT}",
        "hub_connect_url": f"http://{n['hub']}:{HUB_PORT}",
        "db_url": f"sqlite:///{HUB_DATA_DIR}/{DB_FILE}",
        "cookie_secret_file": f"{HUB_DATA_DIR}/{COOKIE_SECRET_FILE}",
        "cleanup_servers": False,
        "cleanup_proxy": False,
        "concurrent_spawn_limit": settings.hub.concurrent_spawn_limit,
        "spawner_class": SWARM_SPAWNER_CLASS if settings.cluster == "swarm" else SPAWNER_CLASS,
    }
    traits: dict[str, dict[str, Any]] = {"JupyterHub": hub}
    secret_traits: dict[str, dict[str, str]] = {
        "ConfigurableHTTPProxy": {"auth_token": PROXY_TOKEN.name}
    }
    traits["ConfigurableHTTPProxy"] = {
        "should_start": False,
        "api_url": f"http://{n['proxy']}:{PROXY_API_PORT}",
    }

    auth_traits, auth_secrets = _authenticator(settings)
    cls = AUTH_CLASSES[settings.auth.type]
    hub["authenticator_class"] = f"{AUTH_MODULE}.{cls}"
    traits[cls] = auth_traits
    secret_traits[cls] = auth_secrets
    # Admins through the admin role: JupyterHub makes its membership exact at every start,
    # so a name removed from auth.admin_users loses admin rights at the next deploy.
    roles: list[dict[str, Any]] = [{"name": "admin", "users": sorted(settings.auth.admin_users)}]
    if settings.groups and not settings.uses_provider_groups:
        hub["load_groups"] = {
            name: {"users": sorted(members)} for name, members in sorted(settings.groups.items())
        }

    su = settings.singleuser
    choices = singleuser_choices(settings, revs, digests)
    spawner: dict[str, Any] = {
        "image": next(iter(choices.values())),
        "allowed_images": choices if len(choices) > 1 else {},
        "network_name": n["network"],
        "use_internal_ip": True,
        "prefix": n["user_prefix"],
        "remove": True,
        "notebook_dir": su.notebook_dir,
        "volumes": user_volumes(settings),
        "mem_limit": su.mem_limit,
        "cpu_limit": su.cpu_limit,
        "start_timeout": su.start_timeout,
        "http_timeout": su.start_timeout,
        "extra_create_kwargs": {"labels": {LABEL_ENV: env_name, LABEL_ROLE: "user"}},
        "extra_host_config": {
            "security_opt": NO_NEW_PRIVILEGES,
            "cap_drop": ["ALL"],
            "cap_add": USER_CAPS,
            "pids_limit": su.pids_limit,
        },
    }
    if settings.cluster == "swarm":
        # services: no host config; the same capabilities through the container spec (Docker
        # 20.10's service API has no pids limit and no no-new-privileges)
        del spawner["extra_host_config"]
        swarm: dict[str, Any] = {
            "extra_endpoint_spec": {"mode": "dnsrr"},  # no IPVS needed, and none here
            "extra_container_spec": {"cap_drop": ["ALL"], "cap_add": USER_CAPS},
        }
        if settings.swarm.user_data == "volume":
            swarm["volume_driver"] = settings.swarm.volume_driver
            swarm["volume_driver_options"] = dict(settings.swarm.volume_options)
        traits["SwarmSpawner"] = swarm
    traits["DockerSpawner"] = spawner
    traits["HubopsSpawner"] = {
        "hubops_environment": env_name,
        "gpu_policy": gpu_policy(settings),
        "profiles": [p.model_dump() for p in su.profiles],
        "gpu_idle_timeout": settings.gpu.idle_timeout or 0,
    }
    # an API-only service whose token (generated on the host) may read /hub/metrics
    services: list[dict[str, Any]] = [{"name": METRICS_SERVICE}]
    roles.append(
        {"name": METRICS_SERVICE, "scopes": ["read:metrics"], "services": [METRICS_SERVICE]}
    )
    if gpu_monitor(settings):
        g = settings.gpu
        services.append(
            {
                "name": GPU_MONITOR,
                "command": [
                    "python3",
                    "-m",
                    "hubops_hub.gpumon",
                    f"--environment={env_name}",
                    f"--image={hub_image(settings, revs, digests)}",
                    f"--every={g.sample_every}",
                    f"--busy={g.busy_utilization}",
                    f"--policy={json.dumps(gpu_policy(settings), sort_keys=True)}",
                ],
            }
        )
    if settings.culling.enabled:
        c = settings.culling
        services.append(
            {
                "name": "idle-culler",
                "command": [
                    "python3",
                    "-m",
                    "hubops_hub.culling",
                    f"--timeout={c.timeout}",
                    f"--cull-every={cull_every(settings)}",
                    "--max-age=0",  # the arbiter applies culling.max_age, and counts it
                ],
                "environment": {"HUBOPS_CULL_MAX_AGE": str(c.max_age)},
            }
        )
        roles.append({"name": "idle-culler", "scopes": CULLER_SCOPES, "services": ["idle-culler"]})
    hub["services"] = services
    hub["load_roles"] = roles
    objects = {
        "DockerSpawner": {
            "escape": PyObject(module="hubops_hub.userdirs", name="escape_username"),
        }
    }
    if settings.cluster == "docker" or settings.swarm.user_data == "path":
        objects["DockerSpawner"]["pre_spawn_hook"] = PyObject(
            module="hubops_hub.userdirs",
            name="pre_spawn_hook",
            args=[
                settings.paths.user_data_dir,
                USER_DIR_PREFIX,
                su.uid,
                su.gid,
                su.per_user_uid_start if su.host_uids == "per-user" else None,
            ],
        )
    return HubConfig(
        environment=env_name,
        secrets_dir=HUB_SECRETS_DIR,
        traits=traits,
        secret_traits=secret_traits,
        objects=objects,
        service_tokens={METRICS_SERVICE: METRICS_TOKEN.name},
    )


def gpu_monitor(settings: Environment) -> bool:
    """Whether the hub runs the GPU monitor: a single host that hands out GPUs."""
    return settings.cluster == "docker" and settings.gpu.policy != "none"


def cull_every(settings: Environment) -> int:
    """culling.every, or less where a GPU idle timeout is shorter than two rounds of it."""
    timeouts = [settings.gpu.idle_timeout] + [
        p.gpu_idle_timeout for p in settings.singleuser.profiles
    ]
    shortest = min((t for t in timeouts if t), default=None)
    every = settings.culling.every
    return min(every, max(5, shortest // 2)) if shortest else every


def _authenticator(settings: Environment) -> tuple[dict[str, Any], dict[str, str]]:
    """The authenticator's traits, and its secret traits (trait -> secret file name)."""
    auth = settings.auth
    common: dict[str, Any] = {
        "admins": sorted(auth.admin_users),
        "allowed_users": sorted(auth.allowed_users),
        "allow_all": auth.allow_all,
        # JupyterHub 5 lets every user already in the DB in when allowed_users is set; then a
        # user removed from allowed_users or from an allowed group could still log in.
        "allow_existing_users": False,
    }
    if isinstance(auth, SharedPasswordAuth):
        secrets = {"user_password": "shared_password"}
        if auth.admin_users:
            secrets["admin_password"] = "admin_password"
        return common, secrets
    oauth: dict[str, Any] = {
        **common,
        "client_id": auth.client_id,
        "oauth_callback_url": settings.oauth_callback_url,
        "scope": settings.oauth_scopes,
        "enable_auth_state": False,
    }
    if settings.uses_provider_groups:
        oauth.update(
            manage_groups=True,
            allowed_groups=sorted(auth.allowed_groups),
            auth_state_groups_key=AUTH_GROUPS_KEY,
            static_groups={g: sorted(m) for g, m in sorted(settings.groups.items())},
        )
    if auth.ca_bundle is not None:
        oauth["http_request_kwargs"] = {"ca_certs": OAUTH_CA_FILE}
    if isinstance(auth, GitLabAuth):
        oauth["gitlab_url"] = auth.gitlab_url
    elif isinstance(auth, GitHubAuth):
        oauth["github_url"] = auth.github_url
    else:
        assert isinstance(auth, OIDCAuth)
        if auth.issuer is not None:
            oauth["issuer"] = auth.issuer
        for trait in ("authorize_url", "token_url", "userdata_url"):
            if getattr(auth, trait) is not None:
                oauth[trait] = getattr(auth, trait)
        oauth.update(username_claim=auth.username_claim, groups_claim=auth.groups_claim)
    return oauth, {"client_secret": "oauth_client_secret"}


def user_volumes(settings: Environment) -> dict[str, Any]:
    """The user's own directory (read-write) and the shared data directory (read-only)."""
    su, paths = settings.singleuser, settings.paths
    own = f"{paths.user_data_dir}/{USER_DIR_PREFIX}{{username}}"
    if settings.cluster == "swarm" and settings.swarm.user_data == "volume":
        own = f"{USER_DIR_PREFIX}{{username}}"  # a named volume, made by the volume driver
    volumes: dict[str, Any] = {
        own: {
            "bind": su.notebook_dir,
            "mode": "rw",
        }
    }
    if paths.shared_data_dir is not None:
        volumes[paths.shared_data_dir] = {"bind": su.shared_data_mount, "mode": "ro"}
    return volumes


def gpu_policy(settings: Environment) -> dict[str, Any]:
    """The GPU policy as HubopsSpawner takes it (it allocates device IDs at spawn time)."""
    g = settings.gpu
    return {
        "name": g.policy,
        "pool": list(g.pool),
        "max_per_gpu": g.max_per_gpu,
        "pinned_users": {k: list(v) for k, v in g.pinned_users.items()},
        "pinned_groups": {k: list(v) for k, v in g.pinned_groups.items()},
    }


def _oauth_ca_mount(settings: Environment) -> list[Mount]:
    ca = getattr(settings.auth, "ca_bundle", None)
    return [Mount(source=ca, target=OAUTH_CA_FILE)] if ca is not None else []


def plan(
    env_name: str, settings: Environment, revs: Mapping[str, str], digests: Digests = None
) -> Plan:
    """What the host runs. ``digests`` (tag -> digest, from `invoke push`) pins every image to
    exactly what the registry verified."""
    n = names(env_name)
    paths = settings.paths
    registry = settings.registry.url
    proxy_image = images.by_digest(images.pinned_ref(registry, "proxy", revs["proxy"]), digests)
    hub_ref = hub_image(settings, revs, digests)
    labels = {LABEL_ENV: env_name}

    proxy_cmd = [
        "configurable-http-proxy",
        "--ip=0.0.0.0",
        f"--port={PROXY_PORT}",
        "--api-ip=0.0.0.0",
        f"--api-port={PROXY_API_PORT}",
        f"--default-target=http://{n['hub']}:{HUB_PORT}",
        f"--error-target=http://{n['hub']}:{HUB_PORT}/hub/error",
    ]
    proxy_mounts = [
        Mount(
            source=f"{paths.data_dir}/secrets/{PROXY_TOKEN.name}",
            target=f"{HUB_SECRETS_DIR}/{PROXY_TOKEN.name}",
        )
    ]
    ports = [
        PortBinding(
            container_port=PROXY_PORT,
            host_ip=settings.hub.bind_address,
            host_port=settings.hub.port,
        )
    ]
    tls = settings.tls
    proxy_env: dict[str, str] = {}
    if tls.enabled:
        assert tls.cert is not None
        assert tls.key is not None
        proxy_mounts += [
            Mount(source=tls.cert, target=f"{PROXY_TLS_SOURCE}/cert.pem"),
            Mount(source=tls.key, target=f"{PROXY_TLS_SOURCE}/key.pem"),
        ]
        proxy_env = {"HUBOPS_TLS_SOURCE": PROXY_TLS_SOURCE, "HUBOPS_TLS_DIR": PROXY_TLS_DIR}
        proxy_cmd += [f"--ssl-cert={PROXY_TLS_DIR}/cert.pem", f"--ssl-key={PROXY_TLS_DIR}/key.pem"]
        if settings.hub.http_port is not None:
            proxy_cmd += [
                f"--redirect-port={PROXY_REDIRECT_PORT}",
                f"--redirect-to={settings.hub.port}",
            ]
            ports.append(
                PortBinding(
                    container_port=PROXY_REDIRECT_PORT,
                    host_ip=settings.hub.bind_address,
                    host_port=settings.hub.http_port,
                )
            )
    proxy = ContainerSpec(
        role="proxy",
        name=n["proxy"],
        image=proxy_image,
        command=proxy_cmd,
        environment={
            "CONFIGPROXY_AUTH_TOKEN_FILE": f"{HUB_SECRETS_DIR}/{PROXY_TOKEN.name}",
            **proxy_env,
        },
        ports=ports,
        mounts=proxy_mounts,
        network=n["network"],
        labels={**labels, LABEL_ROLE: "proxy", LABEL_IMAGE: proxy_image},
        cap_drop=["ALL"],
        cap_add=PROXY_CAPS,
        security_opt=NO_NEW_PRIVILEGES,
        pids_limit=PROXY_PIDS_LIMIT,
        read_only=True,
        tmpfs={PROXY_TLS_DIR: "size=1m,mode=0700", "/tmp": "size=16m,mode=1777"},
    )
    hub = ContainerSpec(
        role="hub",
        name=n["hub"],
        image=hub_ref,
        command=["jupyterhub", "-f", f"{HUB_CONFIG_DIR}/{CONFIG_FILE}"],
        # hubops_hub.metrics.MONITOR_ENV: the hub's metrics and spawn form read the monitor
        environment={"HUBOPS_GPU_MONITOR": "1"} if gpu_monitor(settings) else {},
        ports=[],
        mounts=[
            Mount(source=paths.docker_socket, target=DOCKER_SOCKET, read_only=False),
            Mount(source=paths.config_dir, target=HUB_CONFIG_DIR),
            Mount(source=paths.data_dir, target=HUB_DATA_DIR, read_only=False),
            Mount(source=paths.user_data_dir, target=paths.user_data_dir, read_only=False),
            *_oauth_ca_mount(settings),
        ],
        network=n["network"],
        labels={**labels, LABEL_ROLE: "hub", LABEL_IMAGE: hub_ref},
        cap_drop=["ALL"],
        cap_add=HUB_CAPS,
        security_opt=NO_NEW_PRIVILEGES,
        pids_limit=HUB_PIDS_LIMIT,
        read_only=True,
        tmpfs={"/tmp": "size=64m,mode=1777"},
    )
    host_dirs = [
        HostDir(path=paths.config_dir, mode=0o755),
        HostDir(path=paths.data_dir, mode=0o700),
        HostDir(path=f"{paths.data_dir}/secrets", mode=0o700),
        HostDir(path=paths.user_data_dir, mode=0o755),
    ]
    return Plan(
        environment=env_name,
        revisions=dict(revs),
        public_url=settings.public_url,
        network=n["network"],
        images=[
            proxy_image,
            hub_ref,
            *dict.fromkeys(singleuser_choices(settings, revs, digests).values()),
        ],
        host_dirs=host_dirs,
        hub_secrets=[s.name for s in hub_secrets(settings)],
        generated_secrets={
            COOKIE_SECRET.name: f"{paths.data_dir}/{COOKIE_SECRET_FILE}",
            PROXY_TOKEN.name: f"{paths.data_dir}/secrets/{PROXY_TOKEN.name}",
            METRICS_TOKEN.name: f"{paths.data_dir}/secrets/{METRICS_TOKEN.name}",
        },
        containers=[proxy, hub],
    )
