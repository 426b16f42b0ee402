"""Settings -> the values of the zero-to-jupyterhub Helm chart (cluster kubernetes).

What each setting becomes in the chart's values, or why it has none, is the mapping table
(:mod:`hubops.config.z2jh`), which refuses what the chart cannot express before this runs.

:func:`values` only computes plain data; ``hubops.plan.render`` writes it to
build/<env>/values.yaml and ``hubops.deploy.helm`` hands it to helm. No secret value enters the
values: the OAuth client secret, the TLS key and the database password stay in Secrets of the
cluster that the values name.

The chart runs its own images for the hub and the proxy (quay.io/jupyterhub/k8s-hub 4.4.0 with
JupyterHub 5.5, KubeSpawner 7 and OAuthenticator 17.4): hubops' hub image, its DockerSpawner and
its own authenticators are not used, so ``hub.config`` names the stock classes and their traits.
The users' images are hubops' own, pulled by the nodes from ``registry.url``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import yaml

from hubops.config.settings import (
    PRIVATE_NETWORKS,
    Environment,
    GitHubAuth,
    GitLabAuth,
    NetworkSettings,
    OIDCAuth,
    Profile,
    SharedPasswordAuth,
    mem_bytes,
)
from hubops.config.z2jh import (
    CLIENT_SECRET_ENV,
    CLIENT_SECRET_KEY,
    DB_PASSWORD_ENV,
    DB_PASSWORD_KEY,
    USER_INFO_KEY,
    Z2JH_CHART_VERSION,
)
from hubops.images.table import image_name_and_tag
from hubops.plan.auth import allowed, oauth_client
from hubops.plan.refs import singleuser_choices

GPU_RESOURCE_PREFIX = "nvidia.com/"  # the NVIDIA device plugin's resources (MIG: mixed strategy)
# What a user server requests (reserves) of memory: the chart's own default, lowered to the
# limit where the limit is smaller (a request above the limit makes the pod invalid).
MEM_GUARANTEE = "1G"
SHARED_DATA_VOLUME = "shared-data"
SHM_VOLUME = "shm"

# auth.type -> the JupyterHub.authenticator_class entry point of the chart's hub image
AUTH_ENTRY_POINTS = {"gitlab": "gitlab", "github": "github", "oidc": "generic-oauth"}
AUTH_CLASS_NAMES = {  # entry point -> class name (its section in hub.config)
    "gitlab": "GitLabOAuthenticator",
    "github": "GitHubOAuthenticator",
    "generic-oauth": "GenericOAuthenticator",
}


# --- settings -> values ----------------------------------------------------------------------


def values(settings: Environment, revs: Mapping[str, str]) -> dict[str, Any]:
    """The chart's values for one environment (merged by helm over the chart's defaults).

    Assumes a validated environment with cluster kubernetes (:func:`misfit` found nothing)."""
    su = settings.singleuser
    choices = singleuser_choices(settings, revs)
    default_image = next(iter(choices.values()))
    name, tag = image_name_and_tag(default_image)
    profile = effective_profile(settings)
    k = settings.kubernetes

    auth_class, auth_traits = authenticator(settings)
    hub_config: dict[str, Any] = {
        "JupyterHub": {"authenticator_class": auth_class},
        AUTH_CLASS_NAMES[auth_class]: auth_traits,
        "KubeSpawner": {
            "notebook_dir": su.notebook_dir,
            "gid": su.gid,
            "http_timeout": su.start_timeout,
        },
    }
    extra_env: dict[str, Any] = {
        CLIENT_SECRET_ENV: _secret_ref(k.oauth_secret, CLIENT_SECRET_KEY),
    }
    db: dict[str, Any]
    if k.db == "postgres":
        db = {"type": "postgres", "url": k.db_url}
        if k.db_password_secret is not None:
            extra_env[DB_PASSWORD_ENV] = _secret_ref(k.db_password_secret, DB_PASSWORD_KEY)
    else:
        db = {"type": "sqlite-pvc", "pvc": {"storage": k.db_capacity}}

    hub: dict[str, Any] = {
        "baseUrl": (urlsplit(settings.public_url).path.rstrip("/") or "") + "/",
        "concurrentSpawnLimit": settings.hub.concurrent_spawn_limit,
        "config": hub_config,
        "extraEnv": extra_env,
        "db": db,
        # the admin role's members are made exact at every start: a name removed from
        # auth.admin_users loses admin rights at the next deploy (as with cluster docker)
        "loadRoles": {"admin": {"users": sorted(settings.auth.admin_users)}},
    }

    storage: dict[str, Any] = {
        "type": "dynamic",
        "capacity": k.storage_capacity,
        "homeMountPath": su.notebook_dir,
    }
    if k.storage_class is not None:
        storage["dynamic"] = {"storageClass": k.storage_class}
    # /dev/shm: z2jh's way is a memory-backed emptyDir (PyTorch's DataLoader needs more than
    # the runtime's 64M)
    storage["extraVolumes"] = [
        {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": su.shm_size_for(None)}}
    ]
    storage["extraVolumeMounts"] = [{"name": SHM_VOLUME, "mountPath": "/dev/shm"}]
    if k.shared_data_claim is not None:
        storage["extraVolumes"].append(
            {
                "name": SHARED_DATA_VOLUME,
                "persistentVolumeClaim": {"claimName": k.shared_data_claim, "readOnly": True},
            }
        )
        storage["extraVolumeMounts"].append(
            {"name": SHARED_DATA_VOLUME, "mountPath": su.shared_data_mount, "readOnly": True}
        )

    singleuser: dict[str, Any] = {
        "image": {"name": name, "tag": tag},
        "uid": su.uid,
        "fsGid": su.gid,
        "startTimeout": su.start_timeout,
        # the image's own start command, as with cluster docker (hubops' images start the
        # server without the user's own packages; the chart's default names
        # jupyterhub-singleuser), and the user's volume as their home
        "cmd": None,
        "extraEnv": {"HOME": su.notebook_dir},
        "storage": storage,
        "networkPolicy": network_policy(settings.network),
        "memory": _memory(su.mem_limit),
        "cpu": {"limit": su.cpu_limit} if su.cpu_limit is not None else {},
    }
    if profile.tolerations:
        # here, not in kubespawner_override: an override replaces the list, and would drop
        # the chart's own user-pod tolerations (scheduling.userPods.tolerations)
        singleuser["extraTolerations"] = [
            t.model_dump(exclude_none=True) for t in profile.tolerations
        ]
    profile_list = profile_entries(settings, choices, profile)
    if profile_list:
        singleuser["profileList"] = profile_list

    proxy: dict[str, Any] = {"service": {"type": k.service_type}}
    if k.tls_secret is not None:
        proxy["https"] = {"enabled": True, "type": "secret", "secret": {"name": k.tls_secret}}

    c = settings.culling
    cull: dict[str, Any] = {"enabled": c.enabled}
    if c.enabled:
        cull.update(timeout=c.timeout, every=c.every, maxAge=c.max_age)

    out: dict[str, Any] = {"hub": hub, "proxy": proxy, "singleuser": singleuser, "cull": cull}
    if k.image_pull_secret is not None:
        out["imagePullSecrets"] = [k.image_pull_secret]
    return out


def values_yaml(env_name: str, settings: Environment, revs: Mapping[str, str]) -> str:
    """:func:`values` as the YAML file that ``helm --values`` reads."""
    head = (
        f"# zero-to-jupyterhub {Z2JH_CHART_VERSION} values of environment {env_name}, written "
        "by `invoke render`; do not edit.\n# No secret is in here: the values name the "
        "cluster's Secrets.\n"
    )
    text = yaml.dump(
        values(settings, revs), Dumper=PlainDumper, sort_keys=False, allow_unicode=True
    )
    return head + text


class PlainDumper(yaml.SafeDumper):
    """Writes every value in place: no &anchors and *aliases for values used twice."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _secret_ref(name: str, key: str) -> dict[str, Any]:
    return {"valueFrom": {"secretKeyRef": {"name": name, "key": key}}}


def _memory(limit: str | None) -> dict[str, Any]:
    """singleuser.memory: the limit, and a guarantee that does not exceed it."""
    if limit is None:
        return {"guarantee": MEM_GUARANTEE}
    guarantee = limit if mem_bytes(limit) < mem_bytes(MEM_GUARANTEE) else MEM_GUARANTEE
    return {"limit": limit, "guarantee": guarantee}


def effective_profile(settings: Environment) -> Profile:
    """The one profile every user gets: the first (which names no groups, see TABLE), or,
    without profiles, what hubops' spawner gives then (one GPU unless the policy is none)."""
    if settings.singleuser.profiles:
        return settings.singleuser.profiles[0]
    return Profile(max_gpus=0 if settings.gpu.policy == "none" else 1)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "server"


def profile_entries(
    settings: Environment, choices: Mapping[str, str], profile: Profile
) -> list[dict[str, Any]]:
    """singleuser.profileList: one entry per image the profile offers, each with the
    profile's limits and node labels, and a choice of 0..max_gpus GPUs of its kind. Empty
    when there is nothing to choose (one image, no GPUs): singleuser.* says it all then."""
    offered = {
        display: ref
        for display, ref in choices.items()
        if profile.images is None or display in profile.images
    }
    gpus = profile.max_gpus if settings.gpu.policy == "exclusive" else 0
    override: dict[str, Any] = {}
    if profile.mem_limit is not None:
        memory = _memory(profile.mem_limit)
        override.update(mem_limit=memory["limit"], mem_guarantee=memory["guarantee"])
    if profile.cpu_limit is not None:
        override["cpu_limit"] = profile.cpu_limit
    if profile.node_labels:
        override["node_selector"] = dict(profile.node_labels)
    if len(offered) < 2 and gpus == 0 and not override:
        return []
    entries = []
    for n, (display, ref) in enumerate(offered.items()):
        entry: dict[str, Any] = {
            "display_name": display,
            "slug": _slug(display),
            "description": ref,
            "kubespawner_override": {"image": ref, **copy.deepcopy(override)},
        }
        if n == 0:
            entry["default"] = True
        if gpus:
            resource = GPU_RESOURCE_PREFIX + profile.gpu_kind
            entry["profile_options"] = {
                "gpus": {
                    "display_name": f"GPUs ({resource})",
                    "choices": {
                        str(count): {
                            "display_name": str(count),
                            "default": count == 1,
                            "kubespawner_override": (
                                {"extra_resource_limits": {resource: count}} if count else {}
                            ),
                        }
                        for count in range(gpus + 1)
                    },
                }
            }
        entries.append(entry)
    return entries


def network_policy(n: NetworkSettings) -> dict[str, Any]:
    """singleuser.networkPolicy: the chart's NetworkPolicy lets only the hub and the proxy
    reach a user server; egress as network.egress says, by explicit ipBlocks where the chart's
    own rules differ from hubops' (its nonPrivateIPs leaves 100.64/10 and 169.254/16 open)."""
    if not n.isolation:
        return {"enabled": False}
    rules = {"nonPrivateIPs": False, "privateIPs": False, "cloudMetadataServer": False}
    egress: list[dict[str, Any]] = []
    if n.egress == "internet":
        egress.append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": [*PRIVATE_NETWORKS]}}]})
        if n.egress_allow:
            egress.append({"to": [{"ipBlock": {"cidr": cidr}} for cidr in n.egress_allow]})
    elif n.egress == "all":
        egress.append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]})
    return {"enabled": True, "egressAllowRules": rules, "egress": egress}


def authenticator(settings: Environment) -> tuple[str, dict[str, Any]]:
    """The authenticator's entry point name and its traits (hub.config.<ClassName>).

    GitLab with groups logs in through GitLab's OpenID endpoints with GenericOAuthenticator:
    the stock GitLabOAuthenticator checks groups through GitLab's group API, which needs the
    read_api scope (every project the user can see); GitLab's OpenID userinfo lists the
    user's groups (full paths) for the openid scope, which is what hubops uses."""
    auth = settings.auth
    assert not isinstance(auth, SharedPasswordAuth), "refused by misfit()"
    groups = settings.uses_provider_groups
    access = allowed(auth)
    traits: dict[str, Any] = {
        **oauth_client(settings),
        "allowed_users": access.pop("allowed_users"),
        "admin_users": sorted(auth.admin_users),
        **access,
    }
    if isinstance(auth, GitHubAuth):
        traits["github_url"] = auth.github_url
        if auth.allowed_groups:
            traits["allowed_organizations"] = sorted(auth.allowed_groups)
        return AUTH_ENTRY_POINTS["github"], traits
    if isinstance(auth, GitLabAuth) and not groups:
        traits["gitlab_url"] = auth.gitlab_url
        return AUTH_ENTRY_POINTS["gitlab"], traits
    if isinstance(auth, GitLabAuth):
        traits.update(
            login_service="GitLab",
            authorize_url=f"{auth.gitlab_url}/oauth/authorize",
            token_url=f"{auth.gitlab_url}/oauth/token",
            userdata_url=f"{auth.gitlab_url}/oauth/userinfo",
            username_claim="nickname",  # the GitLab user name in its OpenID userinfo
        )
        claim = "groups"
    else:
        assert isinstance(auth, OIDCAuth)
        traits.update(
            authorize_url=auth.authorize_url,
            token_url=auth.token_url,
            userdata_url=auth.userdata_url,
            username_claim=auth.username_claim,
        )
        claim = auth.groups_claim
    if groups:
        traits.update(
            manage_groups=True,
            auth_state_groups_key=f"{USER_INFO_KEY}.{claim}",
            allowed_groups=sorted(auth.allowed_groups),
        )
    return AUTH_ENTRY_POINTS["oidc"], traits


# --- the mapping table -----------------------------------------------------------------------
