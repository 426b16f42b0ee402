"""Settings -> the JupyterHub traits per class (:class:`~hubops.plan.model.HubConfig`), which
:mod:`hubops.plan.render` places into jupyterhub_config.py."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from hubops_hub.labels import LABEL_ENV, LABEL_ROLE

from hubops.config.secrets import METRICS_TOKEN, OPS_TOKEN, PROXY_TOKEN
from hubops.config.settings import (
    Environment,
    GitHubAuth,
    GitLabAuth,
    OIDCAuth,
    Profile,
    SharedPasswordAuth,
    mem_bytes,
)
from hubops.plan.auth import allowed, oauth_client
from hubops.plan.model import (
    AUTH_CLASSES,
    AUTH_GROUPS_KEY,
    AUTH_MODULE,
    COOKIE_SECRET_FILE,
    CULLER_SCOPES,
    DB_FILE,
    DISK_USAGE,
    DISK_USAGE_SCOPES,
    GPU_MONITOR,
    HUB_DATA_DIR,
    HUB_PORT,
    HUB_SECRETS_DIR,
    METRICS_SERVICE,
    NO_NEW_PRIVILEGES,
    OAUTH_CA_FILE,
    OPS_SCOPES,
    OPS_SERVICE,
    PROXY_API_PORT,
    PROXY_CLASS,
    REAPER,
    REAPER_SCOPES,
    SPAWNER_CLASS,
    SWARM_SPAWNER_CLASS,
    USER_CAPS,
    USER_DIR_PREFIX,
    Digests,
    HubConfig,
    PyObject,
)
from hubops.plan.refs import hub_image, names, singleuser_choices


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
        "proxy_class": PROXY_CLASS,
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
        # the user's directory is their home, in both host_uids modes: dotfiles, settings,
        # registered kernels and pip's user installs persist with their files
        "environment": {"HOME": su.notebook_dir},
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
            "shm_size": mem_bytes(su.shm_size_for(None)),
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
        "profiles": [_profile(settings, p) for p in su.profiles],
        "gpu_idle_timeout": settings.gpu.idle_timeout or 0,
    }
    # an API-only service whose token (generated on the host) may read /hub/metrics
    services: list[dict[str, Any]] = [{"name": METRICS_SERVICE}]
    roles.append(
        {"name": METRICS_SERVICE, "scopes": ["read:metrics"], "services": [METRICS_SERVICE]}
    )
    # hubops' day-two tasks, from inside the hub container: its token stays on the host
    services.append({"name": OPS_SERVICE})
    roles.append({"name": OPS_SERVICE, "scopes": OPS_SCOPES, "services": [OPS_SERVICE]})
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
    if settings.cluster != "swarm":  # a swarm's servers are services, on other nodes
        services.append(
            {
                "name": REAPER,
                "command": ["python3", "-m", "hubops_hub.reaper", f"--environment={env_name}"],
            }
        )
        roles.append({"name": REAPER, "scopes": REAPER_SCOPES, "services": [REAPER]})
    if settings.cluster == "docker":  # one host: the users' directories are in the hub too
        services.append(
            {
                "name": DISK_USAGE,
                "command": [
                    "python3",
                    "-m",
                    "hubops_hub.diskusage",
                    f"--dir={settings.paths.user_data_dir}",
                    f"--prefix={USER_DIR_PREFIX}",
                    f"--every={su.disk_usage_every}",
                    f"--quota={mem_bytes(su.disk_quota) if su.disk_quota else 0}",
                    f"--profiles={json.dumps(_disk_profiles(settings), sort_keys=True)}",
                    f"--mode={su.disk_quota_mode}",
                ],
            }
        )
        roles.append({"name": DISK_USAGE, "scopes": DISK_USAGE_SCOPES, "services": [DISK_USAGE]})
        traits["HubopsSpawner"].update(
            disk_quota=mem_bytes(su.disk_quota) if su.disk_quota else 0,
            disk_quota_mode=su.disk_quota_mode,
            disk_usage_every=su.disk_usage_every,
            hub_image=hub_image(settings, revs, digests),
            queue_timeout=queue_timeout(settings),
            concurrent_starts=settings.hub.concurrent_starts or 0,
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
    objects: dict[str, dict[str, PyObject]] = {
        "DockerSpawner": {
            "escape": PyObject(module="hubops_hub.userdirs", name="escape_username"),
        }
    }
    if settings.cluster == "docker":
        # a spawn that failed for a passing reason is tried again on the next visit, not
        # shown as a dead "Previous spawn failed" (hubops_hub.spawnline.retry_vars)
        objects["JupyterHub"] = {
            "template_vars": PyObject(module="hubops_hub.spawnline", name="retry_vars", args=[])
        }
    if settings.cluster == "docker" or settings.swarm.user_data == "path":
        # a deleted user's directory is archived there (HubopsSpawner.delete_forever)
        traits["HubopsSpawner"]["user_data_dir"] = settings.paths.user_data_dir
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
        service_tokens={METRICS_SERVICE: METRICS_TOKEN.name, OPS_SERVICE: OPS_TOKEN.name},
    )


QUEUE_TIMEOUT = 600  # gpu.queue_timeout when unset, where the policy hands out a pool


def queue_timeout(settings: Environment) -> int:
    """Seconds a spawn waits in line for its GPUs (0: refused at once, as without a line)."""
    if settings.gpu.policy not in ("exclusive", "shared"):
        return 0
    g = settings.gpu.queue_timeout
    return QUEUE_TIMEOUT if g is None else g


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
    common: dict[str, Any] = {"admins": sorted(auth.admin_users), **allowed(auth)}
    if isinstance(auth, SharedPasswordAuth):
        secrets = {"user_password": "shared_password"}
        if auth.admin_users:
            secrets["admin_password"] = "admin_password"
        return common, secrets
    oauth: dict[str, Any] = {**common, **oauth_client(settings), "enable_auth_state": False}
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


def _disk_profiles(settings: Environment) -> list[dict[str, Any]]:
    """Each profile's groups and disk quota (bytes; None: singleuser.disk_quota), in order."""
    return [
        {"groups": list(p.groups), "disk_quota": mem_bytes(p.disk_quota) if p.disk_quota else None}
        for p in settings.singleuser.profiles
    ]


def _profile(settings: Environment, profile: Profile) -> dict[str, Any]:
    """A profile as HubopsSpawner takes it: its settings, with the /dev/shm size its servers
    get in bytes (a single host: swarm services have none)."""
    out = profile.model_dump()
    su = settings.singleuser
    out["shm_size"] = mem_bytes(su.shm_size_for(profile)) if settings.cluster == "docker" else None
    out["disk_quota"] = mem_bytes(profile.disk_quota) if profile.disk_quota else None
    return out
