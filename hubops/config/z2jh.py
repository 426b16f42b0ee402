"""The mapping table: every setting of an environment file and what it becomes in the
zero-to-jupyterhub chart's values (z2jh 4.4.0), or why it has no equivalent there.

One table, :data:`TABLE`, refuses in one line an environment with cluster kubernetes that sets
such a setting (:func:`misfit`, called by :func:`hubops.config.environments.load` after
validation, so that its error names the file and line) and is the README's mapping table
(:func:`mapping_markdown`); a unit test walks the settings model so that no setting is missing
from it. The values themselves are computed in :mod:`hubops.plan.z2jh`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from hubops.config.secrets import OAUTH_CLIENT_SECRET
from hubops.config.settings import (
    Environment,
    OIDCAuth,
)
from hubops.images import table as images
from hubops.images.table import has_tag

Z2JH_CHART_VERSION = "4.4.0"


Z2JH_CHART_REPO = "https://hub.jupyter.org/helm-chart/"


Z2JH_CHART_NAME = "jupyterhub"


# OAuthenticator reads client_secret from $OAUTH_CLIENT_SECRET when nothing else sets it (for
# GitLab and GitHub after $GITLAB_CLIENT_SECRET / $GITHUB_CLIENT_SECRET, which stay unset):
# oauthenticator/oauth2.py, OAuthenticator._client_secret_default.
CLIENT_SECRET_ENV = "OAUTH_CLIENT_SECRET"


CLIENT_SECRET_KEY = OAUTH_CLIENT_SECRET.name  # the key in the Secret kubernetes.oauth_secret


DB_PASSWORD_ENV = "PGPASSWORD"  # libpq (psycopg2 in the hub image) reads it


DB_PASSWORD_KEY = "db_password"


# OAuthenticator keeps the provider's user info under this key of auth_state
# (OAuthenticator.user_auth_state_key), where auth_state_groups_key looks up the groups.
USER_INFO_KEY = "oauth_user"


Fits = Callable[[Any, Environment], bool]


@dataclass(frozen=True)
class Row:
    """One setting (``a.b``; ``a[].b`` for each item of a list) and what it is in the chart.

    ``z2jh`` names the chart's keys (empty: no equivalent). ``fits`` says which values the
    chart can express (unset: every value when ``z2jh`` is given, only the default when not);
    for any other value, ``why`` and ``fix`` make the one-line error."""

    setting: str
    z2jh: str
    why: str
    fix: str = ""
    fits: Fits | None = None

    def accepts(self, value: Any, default: Any, env: Environment) -> bool:
        if self.fits is not None:
            return self.fits(value, env)
        return bool(self.z2jh) or value == default


def _op(setting: str, why: str) -> Row:
    """A setting of the operator's side (builds, pushes, the file itself): not in the chart."""
    return Row(setting, "(operator side, not in the chart)", why)


def _none(setting: str, why: str, fix: str) -> Row:
    return Row(setting, "", why, fix)


_SHAPE_REVS = {image.name: "rev" for image in images.IMAGES}  # only the shape of a ref matters


def _tagged(value: Any, env: Environment) -> bool:
    """singleuser.image(s): every image, as the nodes will pull it, has a tag."""
    given = [value] if isinstance(value, str) else list((value or {}).values())
    return all(has_tag(images.resolve_singleuser(v, env.registry.url, _SHAPE_REVS)) for v in given)


_HOST_DIR = "a directory on the hub host, and a cluster has no one host"


_SSH_WHY = "the cluster is reached through kubectl's context (kubernetes.context), not SSH"


_SWARM = "swarm only"


_OIDC_ONLY = "GenericOAuthenticator"


TABLE: tuple[Row, ...] = (
    _op("extends", "read when the environment file is loaded"),
    _op("description", "not deployed"),
    Row(
        "public_url",
        "hub.baseUrl; hub.config.<Authenticator>.oauth_callback_url",
        "its path is the hub's base URL; <public_url>/hub/oauth_callback the OAuth callback",
    ),
    _none(
        "hub.bind_address",
        "the chart's proxy-public Service listens on the addresses its type gives it",
        "remove hub.bind_address; choose the Service with kubernetes.service_type",
    ),
    _none(
        "hub.port",
        "the chart's proxy-public Service serves port 80, and 443 with kubernetes.tls_secret",
        "remove hub.port",
    ),
    _none(
        "hub.http_port",
        "with kubernetes.tls_secret the chart serves port 80 and redirects it to https",
        "remove hub.http_port",
    ),
    Row("hub.concurrent_spawn_limit", "hub.concurrentSpawnLimit", ""),
    _none(
        "hub.concurrent_starts",
        "pods start on the nodes, and the kubelets pace them; a pod that cannot start waits "
        "Pending and JupyterHub's start_timeout applies",
        "remove hub.concurrent_starts",
    ),
    *(
        _none(
            f"tls.{key}",
            "the certificate and key are files on the hub host; in a cluster they are a TLS "
            "Secret, and a private key never goes into values.yaml",
            "create the Secret (kubectl create secret tls NAME --cert=... --key=...), set "
            "kubernetes.tls_secret: NAME and remove tls",
        )
        for key in ("enabled", "cert", "key")
    ),
    Row(
        "auth.type",
        "hub.config.JupyterHub.authenticator_class (gitlab, github, generic-oauth)",
        "shared-password is refused on purpose: one password for everybody is for trying "
        "hubops out on one machine, not for a hub that the cluster's network reaches",
        "log in through gitlab, github or oidc",
        fits=lambda v, env: v != "shared-password",
    ),
    Row(
        "auth.client_id",
        "hub.config.<Authenticator>.client_id; the client secret: hub.extraEnv."
        f"{CLIENT_SECRET_ENV} from the Secret kubernetes.oauth_secret (key {CLIENT_SECRET_KEY})",
        "",
    ),
    Row("auth.allowed_users", "hub.config.<Authenticator>.allowed_users", ""),
    Row(
        "auth.allowed_groups",
        "github: GitHubOAuthenticator.allowed_organizations; gitlab and oidc: "
        "GenericOAuthenticator.allowed_groups with manage_groups and auth_state_groups_key "
        f"{USER_INFO_KEY}.<groups claim>",
        "GitLab with groups logs in at GitLab's OpenID endpoints (its userinfo lists the "
        "groups for the openid scope; the stock GitLabOAuthenticator would need read_api)",
    ),
    Row(
        "auth.admin_users",
        "hub.config.<Authenticator>.admin_users; hub.loadRoles.admin.users",
        "the admin role's members are made exact at every start",
    ),
    Row("auth.allow_all", "hub.config.<Authenticator>.allow_all", ""),
    _none(
        "auth.ca_bundle",
        "a file on the hub host; the chart's hub image trusts its own CA store",
        "remove auth.ca_bundle (give the provider a certificate from a public CA)",
    ),
    Row("auth.scopes", "hub.config.<Authenticator>.scope", "explicit, or the least that works"),
    Row(
        "auth.gitlab_url",
        "GitLabOAuthenticator.gitlab_url; with groups: GenericOAuthenticator.authorize_url, "
        "token_url, userdata_url at <gitlab_url>/oauth/...",
        "",
    ),
    Row("auth.github_url", "GitHubOAuthenticator.github_url", ""),
    Row(
        "auth.issuer",
        "",
        "the chart's GenericOAuthenticator (OAuthenticator 17.4) has no OpenID discovery; "
        "hubops' hub image does it, and the endpoints must be given instead",
        "give auth.authorize_url, auth.token_url and auth.userdata_url (`invoke check "
        "--strict` prints what discovery finds)",
        fits=lambda v, env: (
            v is None
            or not isinstance(env.auth, OIDCAuth)
            or None not in (env.auth.authorize_url, env.auth.token_url, env.auth.userdata_url)
        ),
    ),
    *(
        Row(f"auth.{key}", f"{_OIDC_ONLY}.{key}", "")
        for key in ("authorize_url", "token_url", "userdata_url", "username_claim")
    ),
    Row(
        "auth.groups_claim",
        f"{_OIDC_ONLY}.auth_state_groups_key ({USER_INFO_KEY}.<groups_claim>)",
        "",
    ),
    Row(
        "singleuser.image",
        "singleuser.image.name and .tag",
        "a hubops variant becomes its pinned tag at registry.url; a reference needs a tag "
        "(the chart's singleuser.image.tag)",
        "give the image as repo:tag (or repo:tag@sha256:...)",
        fits=_tagged,
    ),
    Row(
        "singleuser.images",
        "singleuser.image (the first); singleuser.profileList (one entry per image, "
        "kubespawner_override.image)",
        "a hubops variant becomes its pinned tag at registry.url; a reference needs a tag",
        "give each image as repo:tag (or repo:tag@sha256:...)",
        fits=_tagged,
    ),
    Row(
        "singleuser.notebook_dir",
        "singleuser.storage.homeMountPath; singleuser.extraEnv.HOME; "
        "hub.config.KubeSpawner.notebook_dir",
        "the user's volume is mounted there and is their HOME (dotfiles, pip --user installs)",
    ),
    Row(
        "singleuser.shared_data_mount",
        "singleuser.storage.extraVolumeMounts",
        "where kubernetes.shared_data_claim is mounted read-only",
    ),
    Row("singleuser.uid", "singleuser.uid", ""),
    Row("singleuser.gid", "singleuser.fsGid; hub.config.KubeSpawner.gid", ""),
    Row(
        "singleuser.mem_limit",
        "singleuser.memory.limit (and .guarantee, at most 1G)",
        "Kubernetes reserves the guarantee on the node",
    ),
    Row(
        "singleuser.shm_size",
        "singleuser.storage.extraVolumes and extraVolumeMounts: an emptyDir with medium "
        "Memory and sizeLimit, mounted at /dev/shm",
        "unset: half of singleuser.mem_limit, or 1G; the volume counts against the pod's "
        "memory limit",
    ),
    _none(
        "singleuser.disk_quota",
        "each user's volume is their limit: its size is kubernetes.storage_capacity, and "
        "the storage class enforces it",
        "remove singleuser.disk_quota and set kubernetes.storage_capacity",
    ),
    _none(
        "singleuser.disk_quota_mode",
        "a volume's size is always enforced by its storage (see singleuser.disk_quota)",
        "remove singleuser.disk_quota_mode",
    ),
    _none(
        "singleuser.disk_usage_every",
        "hubops measures one host's user directories; the volumes' use is the storage "
        "provider's (kubelet_volume_stats_used_bytes)",
        "remove singleuser.disk_usage_every",
    ),
    Row(
        "singleuser.cpu_limit",
        "singleuser.cpu.limit",
        "without a guarantee Kubernetes requests (reserves) the limit",
    ),
    Row(
        "singleuser.start_timeout",
        "singleuser.startTimeout; hub.config.KubeSpawner.http_timeout",
        "",
    ),
    _none(
        "singleuser.pids_limit",
        "KubeSpawner sets no per-pod PID limit; the kubelet's podPidsLimit (node "
        "configuration) caps every pod, so the default is not enforced by the chart either",
        "remove singleuser.pids_limit and set podPidsLimit in the nodes' kubelet configuration",
    ),
    Row(
        "singleuser.host_uids",
        "",
        "each user has a volume of their own and every server runs as singleuser.uid; "
        "per-user host uids need the one host directory that a cluster does not have",
        "remove singleuser.host_uids (shared)",
        fits=lambda v, env: v == "shared",
    ),
    _none(
        "singleuser.per_user_uid_start",
        "per-user host uids only (see singleuser.host_uids)",
        "remove singleuser.per_user_uid_start",
    ),
    Row(
        "singleuser.profiles[].groups",
        "",
        "KubeSpawner 7's profile_list offers every profile to every user; choosing one by "
        "group needs a Python callable, which values.yaml cannot hold",
        "keep one profile with groups: [] (its images, limits and GPUs apply to everybody), "
        "or use cluster docker or swarm",
        fits=lambda v, env: not v,
    ),
    Row(
        "singleuser.profiles[].images",
        "singleuser.profileList (the entries offered)",
        "the first profile applies to everybody",
    ),
    Row(
        "singleuser.profiles[].max_gpus",
        "singleuser.profileList[].profile_options.gpus: choices 0..max_gpus, each "
        "kubespawner_override.extra_resource_limits {nvidia.com/<gpu_kind>: N}",
        "gpu.policy exclusive; the device plugin hands each GPU to one pod",
    ),
    Row(
        "singleuser.profiles[].mem_limit",
        "singleuser.profileList[].kubespawner_override.mem_limit (and mem_guarantee)",
        "",
    ),
    Row("singleuser.profiles[].cpu_limit", "singleuser.profileList[].kubespawner_override", ""),
    _none(
        "singleuser.profiles[].shm_size",
        "a profile's own /dev/shm would need the whole volume list in its kubespawner_override",
        "set singleuser.shm_size for every server instead",
    ),
    _none(
        "singleuser.profiles[].disk_quota",
        "every user's volume has one size (kubernetes.storage_capacity)",
        "remove it and set kubernetes.storage_capacity",
    ),
    _none(
        "singleuser.profiles[].max_age",
        "the chart's idle culler has one maximum age for all servers (cull.maxAge)",
        "remove it and set culling.max_age",
    ),
    Row(
        "singleuser.profiles[].gpu_kind",
        "the resource nvidia.com/<gpu_kind> in extra_resource_limits",
        "gpu, or a MIG profile (mig-1g.10gb) under the device plugin's mixed strategy",
    ),
    Row(
        "singleuser.profiles[].node_labels",
        "singleuser.profileList[].kubespawner_override.node_selector",
        "",
    ),
    *(
        Row(
            f"singleuser.profiles[].tolerations[].{key}",
            f"singleuser.extraTolerations[].{key}",
            "added to the chart's own user-pod tolerations (an override would replace them)",
        )
        for key in ("key", "operator", "value", "effect")
    ),
    Row(
        "gpu.policy",
        "(none: no GPU choice; exclusive: the profile's GPU choice)",
        "the NVIDIA device plugin hands each GPU or MIG slice to one pod; sharing a GPU is "
        "the device plugin's time-slicing configuration, and all/pinned have no scheduler "
        "equivalent",
        "set gpu.policy: exclusive (or none), and configure time-slicing in the device "
        "plugin to share GPUs",
        fits=lambda v, env: v in ("none", "exclusive"),
    ),
    _none(
        "gpu.pool",
        "the GPUs are those the nodes' device plugin advertises (nvidia.com/<gpu_kind>)",
        "remove gpu.pool",
    ),
    _none("gpu.max_per_gpu", "gpu.policy shared only", "remove gpu.max_per_gpu"),
    _none(
        "gpu.idle_timeout",
        "the chart's culler sees Jupyter activity only; hubops' GPU monitor runs on a single host",
        "remove it (cull.timeout applies), and watch GPU use with NVIDIA's dcgm-exporter",
    ),
    _none(
        "gpu.queue_timeout",
        "a pod whose GPUs are not free waits Pending in Kubernetes' scheduler, with no place "
        "in line, until singleuser.startTimeout",
        "remove it; give the start more time with singleuser.start_timeout",
    ),
    _none(
        "singleuser.profiles[].queue_timeout",
        "a pod whose GPUs are not free waits Pending in Kubernetes' scheduler (see "
        "gpu.queue_timeout)",
        "remove it",
    ),
    _none(
        "gpu.sample_every",
        "hubops' GPU monitor runs on a single host",
        "remove it",
    ),
    _none(
        "gpu.busy_utilization",
        "hubops' GPU monitor runs on a single host",
        "remove it",
    ),
    _none(
        "singleuser.profiles[].gpu_idle_timeout",
        "the chart's culler sees Jupyter activity only",
        "remove it (cull.timeout applies)",
    ),
    _none("gpu.pinned_users", "gpu.policy pinned only", "remove gpu.pinned_users"),
    _none("gpu.pinned_groups", "gpu.policy pinned only", "remove gpu.pinned_groups"),
    _none(
        "groups",
        "hubops' own authenticators add these to the provider's groups at every login; the "
        "chart's stock OAuthenticator takes a user's groups from the provider only",
        "put the users in a provider group, or list them in auth.allowed_users",
    ),
    Row("culling.enabled", "cull.enabled", ""),
    Row("culling.timeout", "cull.timeout", ""),
    Row("culling.every", "cull.every", ""),
    Row("culling.max_age", "cull.maxAge", ""),
    _none(
        "paths.config_dir",
        f"{_HOST_DIR}; the chart keeps the hub's config in a Secret",
        "remove paths.config_dir",
    ),
    _none(
        "paths.data_dir",
        f"{_HOST_DIR}; the hub's database is kubernetes.db",
        "remove paths.data_dir",
    ),
    _none(
        "paths.user_data_dir",
        f"{_HOST_DIR}; each user gets a volume (kubernetes.storage_capacity, storage_class)",
        "remove paths.user_data_dir",
    ),
    _none(
        "paths.shared_data_dir",
        _HOST_DIR,
        "put the data on a PersistentVolumeClaim, set kubernetes.shared_data_claim and remove "
        "paths.shared_data_dir",
    ),
    _none(
        "paths.docker_socket",
        "KubeSpawner talks to the Kubernetes API, not to a Docker engine",
        "remove paths.docker_socket",
    ),
    Row(
        "network.isolation",
        "singleuser.networkPolicy.enabled",
        "only the hub and the proxy reach a user server",
    ),
    Row(
        "network.egress",
        "singleuser.networkPolicy.egressAllowRules and .egress (ipBlocks)",
        "internet: 0.0.0.0/0 except the private ranges; all: 0.0.0.0/0 (the chart still "
        "blocks the cloud metadata server, singleuser.cloudMetadata); none: only the hub. "
        "DNS stays allowed (the chart's dnsPorts rules): servers find the hub by name",
    ),
    Row("network.egress_allow", "singleuser.networkPolicy.egress (ipBlocks)", ""),
    _none(
        "network.subnet",
        "user servers get addresses from the cluster's pod network",
        "remove network.subnet",
    ),
    Row(
        "registry.url",
        "singleuser.image.name; profileList[].kubespawner_override.image",
        "the nodes pull hubops' images from it: a node cannot load an image built elsewhere",
        "set registry.url and run `invoke build push` first",
        fits=lambda v, env: v is not None,
    ),
    _op(
        "registry.username",
        "`invoke push` logs in with it; the nodes pull with kubernetes.image_pull_secret",
    ),
    _op(
        "registry.insecure",
        "`invoke push`; the nodes' container runtime must trust the registry itself",
    ),
    *(
        _none(f"ssh.{key}", _SSH_WHY, "remove ssh")
        for key in ("host", "port", "user", "key_file", "known_hosts")
    ),
    *(
        _op(f"mirrors.{key}", "image builds")
        for key in ("apt", "apt_security", "pip_index_url", "npm_registry", "ca_bundle")
    ),
    *(
        _op(f"build.{key}", "image builds")
        for key in (
            "base_image",
            "singleuser_base_image",
            "bootstrap.distribution",
            "bootstrap.suite",
            "bootstrap.image",
        )
    ),
    _op("cluster", "kubernetes selects this mapping"),
    *(
        _none(
            f"backup.{key}",
            "hubops backs up paths.user_data_dir on the hub host with restic; in a cluster "
            "the users' files are volumes: back them up with the cluster's own tools (the "
            "storage's snapshots, Velero)",
            "remove backup",
        )
        for key in (
            "target",
            "keep_last",
            "keep_daily",
            "keep_weekly",
            "keep_monthly",
            "schedule",
            "ssh_port",
            "ssh_identity",
            "ssh_known_hosts",
        )
    ),
    *(
        _none(f"swarm.{key}", _SWARM, f"remove swarm.{key}")
        for key in ("user_data", "volume_driver", "volume_options")
    ),
    Row(
        "kubernetes.context",
        "helm --kube-context",
        "required, so that a deploy never goes to whichever context is current",
        "set kubernetes.context to one of `kubectl config get-contexts -o name`",
        fits=lambda v, env: v is not None,
    ),
    Row("kubernetes.namespace", "helm --namespace", ""),
    Row("kubernetes.release", "helm release name", ""),
    Row("kubernetes.service_type", "proxy.service.type", ""),
    Row(
        "kubernetes.tls_secret",
        "proxy.https.enabled, .type secret, .secret.name",
        "https needs an https:// public_url",
        "use https:// in public_url",
        fits=lambda v, env: v is None or env.public_url.startswith("https://"),
    ),
    Row(
        "kubernetes.oauth_secret",
        f"hub.extraEnv.{CLIENT_SECRET_ENV}.valueFrom.secretKeyRef",
        "",
    ),
    Row("kubernetes.image_pull_secret", "imagePullSecrets", ""),
    Row("kubernetes.storage_capacity", "singleuser.storage.capacity", ""),
    Row("kubernetes.storage_class", "singleuser.storage.dynamic.storageClass", ""),
    Row("kubernetes.shared_data_claim", "singleuser.storage.extraVolumes", ""),
    Row("kubernetes.db", "hub.db.type", ""),
    Row("kubernetes.db_capacity", "hub.db.pvc.storage", ""),
    Row("kubernetes.db_url", "hub.db.url", ""),
    Row(
        "kubernetes.db_password_secret",
        f"hub.extraEnv.{DB_PASSWORD_ENV}.valueFrom.secretKeyRef",
        "",
    ),
)


def _found(
    obj: BaseModel, parts: list[str], path: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], Any, Any]]:
    """(key path, value, the field's default) of each place ``parts`` names in ``obj``."""
    name = parts[0].removesuffix("[]")
    fields = type(obj).model_fields
    if name not in fields:  # another member of a union (auth.gitlab_url on GitHub)
        return
    value = getattr(obj, name)
    if len(parts) == 1:
        yield (*path, name), value, fields[name].get_default(call_default_factory=True)
        return
    items = list(enumerate(value)) if parts[0].endswith("[]") else [(None, value)]
    for index, item in items:
        if isinstance(item, BaseModel):
            where = (*path, name) if index is None else (*path, name, str(index))
            yield from _found(item, parts[1:], where)


def misfit(settings: Environment) -> tuple[tuple[str, ...], str] | None:
    """The first setting the chart cannot express: its key path and the one-line reason."""
    for row in TABLE:
        for path, value, default in _found(settings, row.setting.split("."), ()):
            if not row.accepts(value, default, settings):
                shown = value.model_dump() if isinstance(value, BaseModel) else value
                what = "" if row.z2jh else ", which has no z2jh equivalent"
                return path, f"got {shown!r} with cluster kubernetes{what}: {row.why}; {row.fix}"
    return None


def no_equivalent() -> list[Row]:
    """The settings that the chart cannot express at all (only their default is accepted)."""
    return [row for row in TABLE if not row.z2jh]


def mapping_markdown() -> str:
    """The mapping table for the README: setting -> z2jh key, or why there is none."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")

    lines = [
        f"| setting | z2jh {Z2JH_CHART_VERSION} values | notes |",
        "|---|---|---|",
    ]
    for row in TABLE:
        target = row.z2jh or "no equivalent"
        notes = f"{row.why}; {row.fix}" if row.fix else row.why
        lines.append(f"| `{row.setting}` | {cell(target)} | {cell(notes)} |")
    return "\n".join(lines) + "\n"
