"""The typed schema of an environment file (``config/environments/<name>.yaml``).

Every field has a description: the README's configuration reference is generated from them
(``invoke docs``). Unknown keys are errors. Cross-field rules live in model validators whose
messages say what to change.
"""

from __future__ import annotations

import re
from ipaddress import ip_address, ip_network
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

from hubops.errors import RuleError
from hubops.images import table as images

# --- reusable value types -------------------------------------------------------------------


def _check_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            "expected an absolute URL that starts with http:// or https://, "
            "e.g. https://hub.lab.example.org"
        )
    if parts.query or parts.fragment:
        raise ValueError("expected a URL without ?query or #fragment")
    return value.rstrip("/")


def _check_abs_posix(value: str) -> str:
    if "\0" in value:
        raise ValueError("expected a path without NUL bytes")
    if value.startswith("//"):  # POSIX keeps a leading "//"; Linux reads it as "/"
        value = "/" + value.lstrip("/")
    path = PurePosixPath(value)
    if not path.is_absolute():
        raise ValueError(f"expected an absolute path on the host, e.g. /{value.lstrip('./')}")
    if ".." in path.parts:
        raise ValueError("expected a path without '..' components")
    return str(path)


def _check_ip(value: str) -> str:
    try:
        return str(ip_address(value))
    except ValueError:
        raise ValueError("expected an IP address such as 0.0.0.0 or 127.0.0.1") from None


_MEM = re.compile(r"^[1-9][0-9]*[KMGT]?$")


def _check_mem(value: str) -> str:
    if not _MEM.match(value):
        raise ValueError("expected a size such as 512M, 8G or 1T (an integer and K/M/G/T)")
    return value


_MEM_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def mem_bytes(size: str) -> int:
    """A validated size (512M, 8G) in bytes, as Docker reads it (K/M/G/T: powers of 1024)."""
    unit = size[-1] if size[-1] in _MEM_UNITS else ""
    return int(size.removesuffix(unit)) * _MEM_UNITS[unit]


def size_text(n: int) -> str:
    """Bytes as the largest unit that holds them whole (4G, 1536M, 512K), as sizes are written."""
    for unit in ("T", "G", "M", "K"):
        if n % _MEM_UNITS[unit] == 0:
            return f"{n // _MEM_UNITS[unit]}{unit}"
    return str(n)


DEFAULT_SHM = "1G"  # /dev/shm of a server without a memory limit (Docker's own: 64M)


def _check_user_name(value: str) -> str:
    if not value or value != value.strip() or "/" in value or "\0" in value:
        raise ValueError("expected a user or group name without slashes or surrounding spaces")
    return value


def _check_group_name(value: str) -> str:
    if not value or value != value.strip() or any(ord(ch) < 32 for ch in value):
        raise ValueError(
            "expected a group name without surrounding spaces or control characters, e.g. "
            "ml-lab, ml-lab/vision (a GitLab subgroup) or my-org:my-team (a GitHub team)"
        )
    return value


def _check_image_choice(value: str) -> str:
    if not value or value != value.strip():
        raise ValueError("expected an image: a hubops variant name or an image reference")
    if images.is_variant_name(value):
        names = [v.name for v in images.spec(images.SINGLEUSER).variants]
        if value not in names:
            raise ValueError(
                f"expected a hubops singleuser variant ({', '.join(names)}) or a full image "
                "reference such as registry.example.org/team/image:tag"
            )
    return value


# Directories hubops must never use as a state, config or data directory: the root, the
# system's own directories, and the container engine's state (a bind mount of /var/lib/docker
# into the hub or into every user server would hand them the engine).
SYSTEM_DIRS = frozenset(
    (
        *("/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32"),
        *("/media", "/mnt", "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp"),
        *("/usr", "/var", "/var/lib", "/var/log", "/var/run", "/var/tmp"),
    )
)
SYSTEM_TREES = (
    *("/bin", "/boot", "/dev", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/sbin", "/sys"),
    *("/usr", "/var/lib/docker", "/var/lib/containerd", "/var/lib/dpkg", "/var/lib/apt"),
    *("/run/docker", "/run/containerd", "/etc/docker", "/etc/ssh", "/etc/systemd"),
)


def _check_host_dir(value: str) -> str:
    value = _check_abs_posix(value)
    path = PurePosixPath(value)
    if value in SYSTEM_DIRS:
        raise ValueError(
            f"{value} is {'the root' if value == '/' else 'a system directory'}; use a "
            "directory of its own, e.g. /srv/jupyterhub-users"
        )
    for tree in SYSTEM_TREES:
        if path.is_relative_to(tree):
            raise ValueError(
                f"{value} is inside {tree}, which belongs to the system or the container "
                "engine; use a directory of its own, e.g. /srv/jupyterhub-users"
            )
    return value


HttpUrl = Annotated[str, AfterValidator(_check_url)]
HostPath = Annotated[str, AfterValidator(_check_abs_posix)]
HostDir = Annotated[str, AfterValidator(_check_host_dir)]
IPAddress = Annotated[str, AfterValidator(_check_ip)]
MemSize = Annotated[str, AfterValidator(_check_mem)]
Port = Annotated[int, Field(ge=1, le=65535)]
UserName = Annotated[str, AfterValidator(_check_user_name)]
GroupName = Annotated[str, AfterValidator(_check_group_name)]
ImageChoice = Annotated[str, AfterValidator(_check_image_choice)]


class Section(BaseModel):
    """Base for every section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --- sections --------------------------------------------------------------------------------


class HubSettings(Section):
    bind_address: IPAddress = Field(
        "0.0.0.0",
        description="Host address the public port is published on "
        "(0.0.0.0 for every interface, 127.0.0.1 for this machine only).",
    )
    port: Port = Field(8000, description="Host port that serves the hub (443 is usual with TLS).")
    http_port: Port | None = Field(
        None,
        description="With TLS: a plain-http host port that redirects to https "
        "(usually 80). Unset: plain http is refused.",
    )
    concurrent_spawn_limit: int = Field(
        500,
        ge=1,
        description="How many spawns may be under way at once, counting those that wait in "
        "line (for a GPU, or for one of hub.concurrent_starts); JupyterHub refuses more "
        "with HTTP 429. It caps the lines' length, so keep it above the size of a class.",
    )
    concurrent_starts: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="How many user containers may start (create, boot, answer) at the same "
        "time; further spawns wait in line, their place shown, and singleuser.start_timeout "
        "counts from their own start. Unset: twice the host's cores (at least 2). "
        "cluster docker.",
    )


class TLSSettings(Section):
    enabled: bool = Field(False, description="Serve https with the certificate and key below.")
    cert: HostPath | None = Field(
        None, description="Certificate chain (PEM) on the hub host; required when enabled."
    )
    key: HostPath | None = Field(
        None, description="Private key (PEM) on the hub host; required when enabled."
    )

    @model_validator(mode="after")
    def _cert_and_key(self) -> TLSSettings:
        if self.enabled:
            missing = [name for name in ("cert", "key") if getattr(self, name) is None]
            if missing:
                raise ValueError(
                    f"tls.enabled is true but tls.{missing[0]} is not set; give the path of "
                    f"the PEM {'certificate' if missing[0] == 'cert' else 'private key'} on the "
                    "hub host, or set tls.enabled: false"
                )
        return self


def _is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


_ALLOWED_USERS: Any = Field(
    default_factory=list, description="User names allowed to log in (besides allowed groups)."
)
_ADMIN_USERS: Any = Field(
    default_factory=list,
    description="User names that are JupyterHub admins (the hub's admin role). A name removed "
    "here loses admin rights at the next deploy.",
)
_ALLOW_ALL: Any = Field(
    False, description="Allow every user the provider authenticates (use with care)."
)
_CLIENT_ID: Any = Field(description="OAuth client (application) ID registered with the provider.")
_SCOPES: Any = Field(
    None,
    description="OAuth scopes to request. Unset: the least that works, which depends on "
    "whether groups are used (see the README, 'Logins and groups').",
)


class _OAuthBase(Section):
    client_id: str = _CLIENT_ID
    allowed_users: list[UserName] = _ALLOWED_USERS
    allowed_groups: list[GroupName] = Field(
        default_factory=list,
        description="Provider groups whose members may log in: GitLab group paths (ml-lab, "
        "ml-lab/vision), GitHub organizations or org:team, values of the OIDC groups claim.",
    )
    admin_users: list[UserName] = _ADMIN_USERS
    allow_all: bool = _ALLOW_ALL
    ca_bundle: HostPath | None = Field(
        None,
        description="CA bundle (PEM) on the hub host that signed the provider's TLS "
        "certificate (an internal CA); the hub trusts it for its calls to the provider. "
        "Unset: the hub image's trust store.",
    )
    scopes: list[str] | None = _SCOPES

    @model_validator(mode="after")
    def _somebody_may_log_in(self) -> _OAuthBase:
        if not (self.allow_all or self.allowed_users or self.allowed_groups or self.admin_users):
            raise ValueError(
                "nobody would be allowed to log in; set auth.allowed_users, "
                "auth.allowed_groups or auth.allow_all: true"
            )
        return self

    def default_scopes(self, groups: bool) -> list[str]:
        """The least privilege that works, with or without the user's groups."""
        raise NotImplementedError

    def scope_problem(self, scopes: list[str], groups: bool) -> str | None:
        """Why ``scopes`` cannot work (None: they can)."""
        raise NotImplementedError

    def effective_scopes(self, groups: bool) -> list[str]:
        return list(self.scopes) if self.scopes is not None else self.default_scopes(groups)


GITLAB_USER_SCOPES = ("read_user", "read_api", "api")  # what GitLab's /api/v4/user accepts
# what lets hubops list a user's organizations and teams (GitHub: "read:org or user")
GITHUB_ORG_SCOPES = ("read:org", "write:org", "admin:org", "user")


class GitLabAuth(_OAuthBase):
    type: Literal["gitlab"] = Field(description="Log in with a (self-hosted) GitLab.")
    gitlab_url: HttpUrl = Field(
        description="Base URL of the GitLab instance, e.g. https://gitlab.lab.example.org."
    )
    scopes: list[str] | None = Field(
        None,
        description="OAuth scopes to request. Unset: read_user, plus openid when groups are "
        "used (GitLab tells a user's groups only in its OpenID userinfo). Enable the same "
        "scopes in the GitLab application.",
    )

    def default_scopes(self, groups: bool) -> list[str]:
        return ["read_user", "openid"] if groups else ["read_user"]

    def scope_problem(self, scopes: list[str], groups: bool) -> str | None:
        if not set(scopes) & set(GITLAB_USER_SCOPES):
            return (
                "GitLab answers /api/v4/user, which says who logged in, only for read_user, "
                "read_api or api; add read_user"
            )
        if groups and "openid" not in scopes:
            return (
                "groups are used (auth.allowed_groups, profiles or pinned GPUs), and GitLab "
                "tells a user's groups only in its OpenID userinfo, which needs the openid "
                "scope (a read_user token gets 403 insufficient_scope from the group APIs); "
                "add openid and enable it in the GitLab application, or remove auth.scopes"
            )
        return None


class GitHubAuth(_OAuthBase):
    type: Literal["github"] = Field(description="Log in with GitHub.")
    github_url: HttpUrl = Field("https://github.com", description="GitHub (Enterprise) base URL.")
    scopes: list[str] | None = Field(
        None,
        description="OAuth scopes to request. Unset: read:user, plus read:org when groups are "
        "used (GitHub shows private organization and team membership only with read:org).",
    )

    def default_scopes(self, groups: bool) -> list[str]:
        return ["read:user", "read:org"] if groups else ["read:user"]

    def scope_problem(self, scopes: list[str], groups: bool) -> str | None:
        if groups and not set(scopes) & set(GITHUB_ORG_SCOPES):
            return (
                "groups are used (auth.allowed_groups, profiles or pinned GPUs), and GitHub "
                "lists a user's organizations and teams only to tokens with read:org (or the "
                "wider user); add read:org, or remove auth.scopes"
            )
        return None


class OIDCAuth(_OAuthBase):
    type: Literal["oidc"] = Field(description="Log in with a generic OpenID Connect provider.")
    issuer: HttpUrl | None = Field(
        None,
        description="The provider's issuer URL, e.g. https://idp.example.org/realms/lab; the "
        "endpoints are found at <issuer>/.well-known/openid-configuration (by `invoke check "
        "--strict` and by the hub). https is required except on loopback.",
    )
    authorize_url: HttpUrl | None = Field(
        None, description="The provider's authorization endpoint (overrides discovery)."
    )
    token_url: HttpUrl | None = Field(
        None, description="The provider's token endpoint (overrides discovery)."
    )
    userdata_url: HttpUrl | None = Field(
        None, description="The provider's userinfo endpoint (overrides discovery)."
    )
    username_claim: str = Field(
        "preferred_username", description="Claim of the user info that is the user name."
    )
    groups_claim: str = Field(
        "groups", description="Claim of the user info that lists the user's groups."
    )
    scopes: list[str] | None = Field(
        None,
        description="OAuth scopes to request. Unset: openid, profile and email, plus groups "
        "when groups are used (the scope Dex and most providers release the groups claim "
        "for; list your provider's scope here if it differs).",
    )

    @model_validator(mode="after")
    def _issuer_or_endpoints(self) -> OIDCAuth:
        explicit = {
            "authorize_url": self.authorize_url,
            "token_url": self.token_url,
            "userdata_url": self.userdata_url,
        }
        missing = [k for k, v in explicit.items() if v is None]
        if self.issuer is None and missing:
            raise RuleError(
                ("auth",),
                f"auth.issuer is not set and auth.{missing[0]} is missing; give the issuer "
                "(e.g. issuer: https://idp.example.org/realms/lab) to find the endpoints by "
                "discovery, or all of authorize_url, token_url and userdata_url",
            )
        if self.issuer is not None:
            parts = urlsplit(self.issuer)
            if parts.scheme != "https" and not _is_loopback_host(parts.hostname or ""):
                raise RuleError(
                    ("auth", "issuer"),
                    f"got {self.issuer!r}; an issuer must use https:// (plain http is allowed "
                    "only on loopback, for tests): tokens and user data travel over it",
                )
        return self

    def default_scopes(self, groups: bool) -> list[str]:
        return ["openid", "profile", "email", *(["groups"] if groups else [])]

    def scope_problem(self, scopes: list[str], groups: bool) -> str | None:
        if "openid" not in scopes:
            return "an OpenID provider answers its userinfo endpoint only for openid; add openid"
        return None


class SharedPasswordAuth(Section):
    type: Literal["shared-password"] = Field(
        description="One shared password for everybody: for trying hubops out, not for a lab."
    )
    allowed_users: list[UserName] = _ALLOWED_USERS
    admin_users: list[UserName] = Field(
        default_factory=list,
        description="User names that are admins; they log in with the admin password secret. "
        "A name removed here loses admin rights at the next deploy.",
    )
    allow_all: bool = Field(True, description="Any user name may log in with the shared password.")


Auth = Annotated[
    GitLabAuth | GitHubAuth | OIDCAuth | SharedPasswordAuth, Field(discriminator="type")
]
OAUTH_TYPES = (GitLabAuth, GitHubAuth, OIDCAuth)


_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_GPU_ID = re.compile(rf"[0-9]+|GPU-{_UUID}|MIG-{_UUID}")


def _matching(pattern: re.Pattern[str], expected: str) -> AfterValidator:
    """A validator that takes a whole match of ``pattern`` only."""

    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"expected {expected}")
        return value

    return AfterValidator(check)


GPUId = Annotated[
    str,
    BeforeValidator(lambda v: str(v) if isinstance(v, int) and not isinstance(v, bool) else v),
    _matching(
        _GPU_ID,
        "a GPU index (0, 1), a GPU UUID (GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx) or a MIG "
        "device UUID (MIG-...), as `nvidia-smi -L` lists them",
    ),
]


class GPUSettings(Section):
    policy: Literal["none", "all", "exclusive", "shared", "pinned"] = Field(
        "none",
        description="none: no GPU; all: every server gets every GPU of the host; exclusive: "
        "each server gets its own GPUs from the pool; shared: servers spread over the pool, "
        "least-loaded first, at most max_per_gpu on one GPU; pinned: users and groups get "
        "fixed GPUs.",
    )
    pool: list[GPUId] = Field(
        default_factory=list,
        description="GPUs to hand out (exclusive, shared): indices (0, 1), GPU UUIDs "
        "(GPU-...) or MIG device UUIDs (MIG-...), passed to Docker as given.",
    )
    max_per_gpu: int = Field(2, ge=1, description="shared: how many servers may share one GPU.")
    pinned_users: dict[str, list[GPUId]] = Field(
        default_factory=dict, description="pinned: user -> the GPU IDs that user gets."
    )
    pinned_groups: dict[GroupName, list[GPUId]] = Field(
        default_factory=dict,
        description="pinned: group -> the GPU IDs its members get (a user's own entry wins).",
    )
    idle_timeout: int | None = Field(
        None,
        ge=10,
        description="Seconds a server that holds a GPU may use neither its GPU nor Jupyter "
        "before the idle culler stops it and the GPU goes back; while it is busy on its GPU "
        "it is never stopped for Jupyter inactivity alone. Unset: culling.timeout. A "
        "profile's gpu_idle_timeout wins. cluster docker.",
    )
    sample_every: int = Field(
        30,
        ge=5,
        le=3600,
        description="Seconds between two samples of GPU use (NVML, through a probe container "
        "with the GPUs): the resolution of GPU idle time, the metrics and `invoke gpus`.",
    )
    queue_timeout: int | None = Field(
        None,
        ge=0,
        description="exclusive and shared: seconds a spawn waits in line for its GPUs when "
        "not enough are free; first come, first served, the place shown on the progress "
        "page; 0: refuse at once. Unset: 600. A profile's queue_timeout wins. cluster docker.",
    )
    busy_utilization: int = Field(
        5,
        ge=1,
        le=100,
        description="GPU utilisation (percent) from which a sample counts as use of the GPU; "
        "memory held without computing is not use.",
    )

    @model_validator(mode="after")
    def _pool_fits_policy(self) -> GPUSettings:
        if len(set(self.pool)) != len(self.pool):
            raise ValueError(f"gpu.pool lists a GPU twice: {self.pool}")
        if self.policy == "pinned" and not (self.pinned_users or self.pinned_groups):
            raise ValueError(
                "gpu.policy pinned needs gpu.pinned_users or gpu.pinned_groups "
                "(user or group -> GPU IDs)"
            )
        return self


_GPU_KIND = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,62}")
GPUKind = Annotated[
    str, _matching(_GPU_KIND, "a resource kind: letters, digits, '.', '_', '-' (gpu, a100)")
]


class SwarmSettings(Section):
    user_data: Literal["path", "volume"] = Field(
        "path",
        description="Where user files live so that every node sees the same: path "
        "(paths.user_data_dir, which every node mounts at the same place, e.g. over NFS; "
        "doctor checks each node) or volume (a named volume jupyterhub-user-NAME per user, "
        "made by volume_driver with volume_options on whichever node runs the server).",
    )
    volume_driver: str = Field(
        "local",
        description="user_data volume: the volume driver (local with NFS options, or a "
        "multi-host plugin).",
    )
    volume_options: dict[str, str] = Field(
        default_factory=dict,
        description="user_data volume: the driver's options; {username} is replaced, e.g. "
        "{type: nfs, o: 'addr=10.1.2.3,rw', device: ':/export/users/{username}'}.",
    )

    @model_validator(mode="after")
    def _volume_options_need_volume(self) -> SwarmSettings:
        if self.user_data == "path" and self.volume_options:
            raise RuleError(
                ("swarm", "volume_options"),
                "set, but swarm.user_data is path (paths.user_data_dir on every node): set "
                "swarm.user_data: volume, or remove swarm.volume_options",
            )
        return self


_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,51}[a-z0-9])?")
_DNS_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_QUANTITY = re.compile(r"[1-9][0-9]*(Ki|Mi|Gi|Ti|Pi)")
KubeLabel = Annotated[
    str,
    _matching(
        _DNS_LABEL,
        "a Kubernetes name: lower-case letters, digits and '-', starting and ending with a "
        "letter or digit, at most 53 characters (e.g. jupyterhub)",
    ),
]
KubeName = Annotated[
    str,
    _matching(
        _DNS_NAME,
        "a Kubernetes object name: lower-case letters, digits, '-' and '.', starting and "
        "ending with a letter or digit (e.g. hubops-oauth)",
    ),
]
Quantity = Annotated[
    str, _matching(_QUANTITY, "a storage size in Kubernetes units, e.g. 10Gi, 500Mi or 1Ti")
]


class KubernetesSettings(Section):
    context: str | None = Field(
        None,
        description="The kubectl context of the cluster (`kubectl config get-contexts -o "
        "name`); required with cluster kubernetes, so that a deploy never goes to whichever "
        "context happens to be current.",
    )
    namespace: KubeLabel = Field("jupyterhub", description="Namespace of the Helm release.")
    release: KubeLabel = Field("jupyterhub", description="Name of the Helm release.")
    service_type: Literal["LoadBalancer", "NodePort", "ClusterIP"] = Field(
        "LoadBalancer",
        description="Type of the chart's proxy-public Service, which serves public_url.",
    )
    tls_secret: KubeName | None = Field(
        None,
        description="A kubernetes.io/tls Secret in the namespace (keys tls.crt and tls.key) "
        "that the proxy serves https with; unset: plain http (or TLS ends in front of the "
        "cluster). The key stays in the cluster, never in values.yaml.",
    )
    oauth_secret: KubeName = Field(
        "hubops-oauth",
        description="Secret in the namespace whose key oauth_client_secret holds the OAuth "
        "client secret; the hub reads it as OAUTH_CLIENT_SECRET, and values.yaml only names it.",
    )
    image_pull_secret: KubeName | None = Field(
        None,
        description="A kubernetes.io/dockerconfigjson Secret in the namespace that the nodes "
        "pull registry.url's images with; unset: the registry needs no login to pull.",
    )
    storage_capacity: Quantity = Field(
        "10Gi", description="Size of each user's volume (one PersistentVolumeClaim per user)."
    )
    storage_class: KubeName | None = Field(
        None,
        description="StorageClass of the users' volumes; unset: the cluster's default class.",
    )
    shared_data_claim: KubeName | None = Field(
        None,
        description="An existing PersistentVolumeClaim in the namespace that every user "
        "sees read-only at singleuser.shared_data_mount; unset: none.",
    )
    db: Literal["sqlite-pvc", "postgres"] = Field(
        "sqlite-pvc",
        description="The hub's database: sqlite-pvc (SQLite on a volume of its own) or "
        "postgres (db_url).",
    )
    db_capacity: Quantity = Field("1Gi", description="sqlite-pvc: size of the hub's volume.")
    db_url: str | None = Field(
        None,
        description="postgres: postgresql://USER@HOST:PORT/DB, without the password "
        "(db_password_secret holds it).",
    )
    db_password_secret: KubeName | None = Field(
        None,
        description="postgres: Secret in the namespace whose key db_password holds the "
        "database password; the hub reads it as PGPASSWORD.",
    )

    @model_validator(mode="after")
    def _db_fits(self) -> KubernetesSettings:
        if self.db == "postgres":
            if self.db_url is None:
                raise RuleError(
                    ("kubernetes", "db"),
                    "is postgres but kubernetes.db_url is not set; give "
                    "postgresql://USER@HOST:PORT/DB (the password goes in the Secret "
                    "kubernetes.db_password_secret), or set kubernetes.db: sqlite-pvc",
                )
            parts = urlsplit(self.db_url)
            if parts.password is not None:  # checked first: the message must not show it
                raise RuleError(
                    ("kubernetes", "db_url"),
                    "holds a password, which would end up in values.yaml; remove it from the "
                    "URL and put it in the Secret kubernetes.db_password_secret (key "
                    "db_password)",
                )
            if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
                raise RuleError(
                    ("kubernetes", "db_url"),
                    f"got {self.db_url!r}; expected postgresql://USER@HOST:PORT/DB",
                )
        elif self.db_url is not None or self.db_password_secret is not None:
            raise RuleError(
                ("kubernetes", "db_url" if self.db_url is not None else "db_password_secret"),
                "is set, but kubernetes.db is sqlite-pvc; set kubernetes.db: postgres, or "
                "remove it",
            )
        return self


class Toleration(Section):
    key: str | None = Field(None, description="Taint key, e.g. nvidia.com/gpu (unset: any).")
    operator: Literal["Equal", "Exists"] = Field(
        "Equal", description="Equal (the taint's value is value) or Exists (any value)."
    )
    value: str | None = Field(None, description="Taint value (operator Equal).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to tolerate (unset: all)."
    )


class Profile(Section):
    groups: list[GroupName] = Field(
        default_factory=list,
        description="Groups this profile is for (empty: everybody): the user's provider "
        "groups and the groups of `groups:`. The first profile that matches one of the "
        "user's groups applies.",
    )
    images: list[str] | None = Field(
        None,
        description="Display names (keys of singleuser.images) these users may choose; unset: all.",
    )
    max_gpus: int = Field(
        0, ge=0, description="GPUs one user may hold at once (the form offers 0..max_gpus)."
    )
    mem_limit: MemSize | None = Field(None, description="Memory limit (overrides singleuser).")
    shm_size: MemSize | None = Field(
        None, description="Size of /dev/shm (overrides singleuser; see singleuser.shm_size)."
    )
    cpu_limit: float | None = Field(None, gt=0, description="CPU limit (overrides singleuser).")
    disk_quota: MemSize | None = Field(
        None, description="Disk quota of each user's directory (overrides singleuser.disk_quota)."
    )
    max_age: int = Field(
        0, ge=0, description="Stop these users' servers after this many seconds (0: never)."
    )
    gpu_idle_timeout: int | None = Field(
        None,
        ge=10,
        description="These users' gpu.idle_timeout: seconds a GPU holder may use neither its "
        "GPU nor Jupyter before it is stopped (unset: gpu.idle_timeout).",
    )
    queue_timeout: int | None = Field(
        None,
        ge=0,
        description="These users' gpu.queue_timeout: seconds a spawn waits in line for its "
        "GPUs (0: refuse at once; unset: gpu.queue_timeout).",
    )
    gpu_kind: GPUKind = Field(
        "gpu",
        description="cluster swarm and kubernetes: the kind of GPU these servers reserve. "
        "Swarm: the generic resource kind the nodes advertise (node-generic-resources "
        "KIND=ID). Kubernetes: the resource nvidia.com/KIND (gpu, or a MIG profile such as "
        "mig-1g.10gb under the device plugin's mixed strategy).",
    )
    node_labels: dict[str, str] = Field(
        default_factory=dict,
        description="cluster swarm and kubernetes: run these servers only on nodes with these "
        "labels, e.g. {gpu: a100} (swarm: node.labels.gpu==a100; kubernetes: nodeSelector).",
    )
    tolerations: list[Toleration] = Field(
        default_factory=list,
        description="cluster kubernetes: node taints these servers tolerate, e.g. GPU nodes "
        "tainted nvidia.com/gpu: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}].",
    )


class SingleuserSettings(Section):
    image: ImageChoice | None = Field(
        None,
        description="The one image every user gets: a hubops variant name (base, pytorch) or "
        "a full image reference. Use either this or images.",
    )
    images: dict[str, ImageChoice] | None = Field(
        None,
        description="A choice of images: display name -> hubops variant or image reference. "
        "The first is the default.",
    )
    notebook_dir: HostPath = Field(
        "/home/jovyan/work",
        description="Directory inside the user container that holds "
        "the user's files (the user's host directory is mounted here).",
    )
    shared_data_mount: HostPath = Field(
        "/home/jovyan/shared",
        description="Where paths.shared_data_dir appears in user containers (read-only).",
    )
    uid: int = Field(1000, ge=1, description="uid of the non-root user in the image.")
    gid: int = Field(100, ge=0, description="gid of the non-root user in the image.")
    mem_limit: MemSize | None = Field(None, description="Memory limit per user server.")
    shm_size: MemSize | None = Field(
        None,
        description="Size of /dev/shm in each user server. PyTorch's DataLoader workers pass "
        "every batch through it, and Docker's default of 64M makes them die with 'bus error'. "
        f"Unset: half of the server's memory limit, or {DEFAULT_SHM} without a limit. It "
        "counts against the memory limit, so it cannot be larger.",
    )
    cpu_limit: float | None = Field(None, gt=0, description="CPU limit per user server.")
    disk_quota: MemSize | None = Field(
        None,
        description="How much each user's directory (in paths.user_data_dir) may hold, e.g. "
        "50G; unset: no limit. A profile's disk_quota wins. See disk_quota_mode.",
    )
    disk_quota_mode: Literal["auto", "hard", "soft"] = Field(
        "auto",
        description="hard: the filesystem enforces disk_quota (XFS project quotas, or ext4 "
        "with the project feature and prjquota; `invoke doctor` says which the host can "
        "do); a write past it fails with 'Disk quota exceeded'. soft: usage is measured "
        "every disk_usage_every seconds and shown (JupyterLab's status bar, `invoke "
        "status`, /hub/metrics); a user over quota is told at spawn and in JupyterLab, and "
        "nothing stops the writes. auto: hard where the filesystem can enforce it, else soft.",
    )
    disk_usage_every: int = Field(
        600,
        ge=60,
        description="Seconds between measurements of every user's directory (niced du, in "
        "the hub container).",
    )
    start_timeout: int = Field(120, ge=10, description="Seconds a user server may take to start.")
    pids_limit: int = Field(
        4096,
        ge=64,
        le=1_000_000,
        description="Processes and threads one user server may have at once: a fork bomb "
        "stops there instead of exhausting the host's PIDs for everyone. Deep-learning "
        "workloads run many threads (data loader workers times BLAS threads); raise it "
        "rather than remove it.",
    )
    host_uids: Literal["shared", "per-user"] = Field(
        "shared",
        description="shared: every user server runs as singleuser.uid:gid, so on the host "
        "all users' directories belong to that one uid (0750), readable by a host account "
        "with that uid or gid. per-user: each user gets a uid (and a private group of the "
        "same number) of their own from per_user_uid_start on, their directory is theirs "
        "alone (0700), and the server runs as that uid with HOME in that directory.",
    )
    per_user_uid_start: int = Field(
        200000,
        ge=1000,
        le=2**31 - 70000,
        description="per-user: the first uid handed out (the next 65536 are hubops'); keep "
        "the range clear of host accounts and of /etc/subuid ranges.",
    )
    profiles: list[Profile] = Field(
        default_factory=list,
        description="Per-group choices and limits (images, GPUs, memory, CPU, maximum age); "
        "the first that matches applies.",
    )

    @model_validator(mode="after")
    def _one_image_source(self) -> SingleuserSettings:
        if (self.image is None) == (self.images is None):
            raise ValueError(
                "set exactly one of singleuser.image (one image for everybody) and "
                "singleuser.images (display name -> image)"
            )
        if self.images is not None and not self.images:
            raise ValueError("singleuser.images is empty; list at least one image")
        return self

    def shm_size_for(self, profile: Profile | None = None) -> str:
        """/dev/shm of a server of ``profile`` (None: without one): the profile's shm_size,
        singleuser.shm_size, half of the memory limit that applies, or DEFAULT_SHM."""
        given = (profile.shm_size if profile else None) or self.shm_size
        if given:
            return given
        mem = (profile.mem_limit if profile else None) or self.mem_limit
        return size_text(mem_bytes(mem) // 2) if mem else DEFAULT_SHM

    def disk_quota_for(self, profile: Profile | None = None) -> str | None:
        """The disk quota of a user of ``profile`` (None: without one); None: no limit."""
        return (profile.disk_quota if profile else None) or self.disk_quota

    @property
    def has_disk_quota(self) -> bool:
        return bool(self.disk_quota or any(p.disk_quota for p in self.profiles))

    @property
    def choices(self) -> dict[str, str]:
        """Display name -> image spec; the first is the default."""
        if self.images is not None:
            return dict(self.images)
        assert self.image is not None
        return {"default": self.image}


class CullingSettings(Section):
    enabled: bool = Field(True, description="Stop user servers that have been idle.")
    timeout: int = Field(3600, ge=10, description="Seconds of inactivity before a stop.")
    every: int = Field(300, ge=5, description="Seconds between checks.")
    max_age: int = Field(
        0, ge=0, description="Stop servers older than this many seconds (0: no limit)."
    )


class PathSettings(Section):
    config_dir: HostDir = Field(
        "/etc/jupyterhub", description="Host directory of the rendered hub config."
    )
    data_dir: HostDir = Field(
        "/srv/jupyterhub",
        description="Host directory of the hub state: SQLite DB, cookie secret, proxy token, "
        "secrets, backups.",
    )
    user_data_dir: HostDir = Field(
        "/srv/jupyterhub-users",
        description="Host directory that holds one jupyterhub-user-<name> directory per user.",
    )
    shared_data_dir: HostDir | None = Field(
        None,
        description="Host directory every user sees read-only at singleuser.shared_data_mount "
        "(datasets, course material); unset: none.",
    )
    docker_socket: HostPath = Field(
        "/var/run/docker.sock",
        description="The Docker engine's socket on the host; mounted into the hub only.",
    )

    @model_validator(mode="after")
    def _apart(self) -> PathSettings:
        named = [
            ("config_dir", self.config_dir),
            ("data_dir", self.data_dir),
            ("user_data_dir", self.user_data_dir),
            *([("shared_data_dir", self.shared_data_dir)] if self.shared_data_dir else []),
        ]
        for i, (key_a, a) in enumerate(named):
            for key_b, b in named[i + 1 :]:
                pa, pb = PurePosixPath(a), PurePosixPath(b)
                if pa == pb or pa.is_relative_to(pb) or pb.is_relative_to(pa):
                    inner, outer = (key_a, key_b) if pa.is_relative_to(pb) else (key_b, key_a)
                    raise RuleError(
                        ("paths", inner),
                        f"got {getattr(self, inner)!r}, which is "
                        f"{'the same directory as' if pa == pb else 'inside'} paths.{outer} "
                        f"({getattr(self, outer)}); give each its own directory, side by side "
                        "(e.g. /etc/jupyterhub, /srv/jupyterhub, /srv/jupyterhub-users)",
                    )
        return self


PRIVATE_NETWORKS = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",  # carrier-grade NAT
    "169.254.0.0/16",  # link-local: cloud metadata services
)


def _check_cidr(value: str) -> str:
    try:
        net = ip_network(value, strict=True)
    except ValueError:
        net = None
    if net is None or net.version != 4:
        raise ValueError(
            "expected an IPv4 network in CIDR form with no host bits, e.g. 10.1.2.0/24 or "
            "10.1.2.3/32"
        )
    return str(net)


def _check_subnet(value: str) -> str:
    value = _check_cidr(value)
    net = ip_network(value)
    if net.version != 4 or not 8 <= net.prefixlen <= 24:
        raise ValueError(
            "expected an IPv4 network from /8 to /24 (the upper half holds the user servers), "
            "e.g. 172.30.0.0/16"
        )
    return value


CIDR = Annotated[str, AfterValidator(_check_cidr)]
Subnet = Annotated[str, AfterValidator(_check_subnet)]


class NetworkSettings(Section):
    isolation: bool = Field(
        True,
        description="Firewall the environment's Docker network (iptables rules that hubops "
        "keeps in the host's DOCKER-USER and INPUT chains, from a small container): a user "
        "server reaches the hub's API and, per egress, the outside; nothing else (no other "
        "user's server, not the proxy's API, no host port but the public hub port). Turn off "
        "only where hubops may not manage iptables (a rootless or user-namespaced engine).",
    )
    egress: Literal["internet", "all", "none"] = Field(
        "internet",
        description="What user servers reach outside the hub: internet (public addresses, and "
        "DNS anywhere; not the private ranges 10/8, 172.16/12, 192.168/16, 100.64/10 and "
        "169.254/16, where the lab's own services and cloud metadata live), all (also the "
        "private ranges), none (nothing: no pip install). Needs isolation.",
    )
    egress_allow: list[CIDR] = Field(
        default_factory=list,
        description="Private networks user servers may reach all the same (egress internet), "
        "e.g. the lab's PyPI mirror or NFS server: [10.1.2.3/32].",
    )
    subnet: Subnet | None = Field(
        None,
        description="The environment's Docker network (IPv4, /8 to /24): the proxy and the "
        "hub get its 2nd and 3rd addresses, user servers its upper half. Unset: Docker picks "
        "a free one at the first deploy and hubops keeps it.",
    )

    @model_validator(mode="after")
    def _egress_allow_needs_internet(self) -> NetworkSettings:
        if self.egress_allow and self.egress != "internet":
            raise RuleError(
                ("network", "egress_allow"),
                f"got {list(self.egress_allow)!r} with network.egress {self.egress}; it lists "
                "exceptions to egress internet (private networks user servers may reach all "
                "the same): set network.egress: internet, or remove network.egress_allow",
            )
        return self

    @model_validator(mode="after")
    def _egress_needs_isolation(self) -> NetworkSettings:
        if not self.isolation and (self.egress != "internet" or self.egress_allow):
            raise RuleError(
                ("network", "egress"),
                f"got {self.egress!r} with network.isolation: false; egress rules are part of "
                "the isolation: set network.isolation: true, or remove network.egress and "
                "network.egress_allow",
            )
        return self


class RegistrySettings(Section):
    url: str | None = Field(
        None,
        description="Registry host[:port][/path] that images are pushed to and pulled from; "
        "unset: images stay on the engine that built them.",
    )
    username: str | None = Field(
        None, description="Registry user; its password is the registry_password secret."
    )
    insecure: bool = Field(
        False,
        description="Plain http instead of https: only for a registry on loopback or a "
        "trusted network (the Docker engine must list it in insecure-registries unless it is "
        "on 127.0.0.0/8).",
    )

    @model_validator(mode="after")
    def _url_shape(self) -> RegistrySettings:
        if self.url is not None and ("://" in self.url or not self.url.strip("/")):
            raise ValueError(
                f"registry.url must be host[:port][/path] without a scheme, got {self.url!r}; "
                "e.g. registry.lab.example.org:5000"
            )
        return self


SSHUser = Annotated[
    str,
    _matching(
        re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}"),
        "a login name: letters, digits, '_', '.' and '-', not starting with '-' or '.', at "
        "most 32 characters (e.g. hubops)",
    ),
]
SSHHost = Annotated[
    str,
    _matching(
        re.compile(r"[A-Za-z0-9_\[][A-Za-z0-9_.:%\[\]-]{0,252}"),
        "a host name or an IP address (e.g. gpu01.lab.example.org), not starting with '-' "
        "and without spaces",
    ),
]


class SSHSettings(Section):
    host: SSHHost = Field(description="Host name or address of the hub server.")
    port: Port = Field(22, description="SSH port.")
    user: SSHUser = Field("root", description="SSH user; it must be allowed to use Docker.")
    key_file: str | None = Field(
        None, description="Private key file on the operator's machine (default: ssh-agent)."
    )
    known_hosts: str = Field(
        "~/.ssh/known_hosts",
        description="known_hosts file that must hold the host's key (unknown keys are refused).",
    )


class MirrorSettings(Section):
    apt: HttpUrl | None = Field(
        None, description="Debian/Ubuntu mirror for base images and apt in builds."
    )
    apt_security: HttpUrl | None = Field(
        None, description="Mirror of the distribution's security archive (base images)."
    )
    pip_index_url: HttpUrl | None = Field(None, description="PyPI mirror (index URL).")
    npm_registry: HttpUrl | None = Field(None, description="npm registry mirror.")
    ca_bundle: str | None = Field(
        None,
        description="Extra CA bundle (PEM) on the operator's machine that builds trust, for "
        "TLS interception or an internal CA; relative paths are relative to the repo.",
    )


class BootstrapSettings(Section):
    distribution: Literal["debian", "ubuntu"] = Field(
        "debian", description="Distribution of the base image `invoke base-image` makes."
    )
    suite: str = Field(
        "bookworm", description="Release (suite) to bootstrap, e.g. bookworm, jammy, noble."
    )
    image: str = Field(
        "hubops/base:bookworm", description="Name:tag the bootstrapped image is imported as."
    )


class BuildSettings(Section):
    base_image: str = Field(
        "debian:bookworm-slim",
        description="FROM image of the hub and proxy images (Debian or Ubuntu).",
    )
    singleuser_base_image: str = Field(
        "ubuntu:24.04",
        description="FROM image of the singleuser images: a plain OS image (the frameworks' "
        "wheels bring their CUDA user-space, so a CUDA runtime image would ship it twice); "
        "the bootstrapped image (bootstrap.image) where nothing can be pulled.",
    )
    bootstrap: BootstrapSettings = Field(
        default_factory=BootstrapSettings,
        description="`invoke base-image`: a base image made from packages, without a registry. "
        "`invoke build` makes it first when a base image names it and it is missing.",
    )


# --- backups of the users' files (invoke data.backup, data.restore) -------------------------

# restic's sftp backend as restic writes it: sftp:USER@HOST:/PATH (an absolute path; the port is
# backup.ssh_port). Neither the user nor the host may start with '-' (ssh would read an option).
_SFTP_TARGET = re.compile(
    r"sftp:(?P<user>[A-Za-z0-9_][A-Za-z0-9_.-]{0,31})@"
    r"(?P<host>[A-Za-z0-9_][A-Za-z0-9_.-]{0,252}|\[[0-9A-Fa-f:.]+\]):(?P<path>/[^\s]*)"
)
BACKUP_TARGET_EXAMPLES = (
    "unset (a repository under <paths.data_dir>/user-backups), an absolute path on the hub "
    "host such as /mnt/backup/hubops (another disk), or sftp:USER@HOST:/PATH such as "
    "sftp:backup@nas.lab.example.org:/srv/restic/hubops (another machine over SSH)"
)


def sftp_target(value: str) -> tuple[str, str, str] | None:
    """(user, host, path) of an sftp target, or None for a path on the hub host."""
    found = _SFTP_TARGET.fullmatch(value)
    return (found["user"], found["host"], found["path"]) if found else None


def _check_backup_target(value: str) -> str:
    if value.startswith("sftp:"):
        found = sftp_target(value)
        if found is None:
            raise ValueError(
                "expected sftp:USER@HOST:/PATH with an absolute path, e.g. "
                "sftp:backup@nas.lab.example.org:/srv/restic/hubops (the port is "
                "backup.ssh_port)"
            )
        path = found[2]
        if ".." in PurePosixPath(path).parts:
            raise ValueError("expected an sftp path without '..' components")
        return value
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", value):
        raise ValueError(
            f"expected {BACKUP_TARGET_EXAMPLES}; hubops runs restic with a path or sftp only"
        )
    return _check_host_dir(value)


BackupTarget = Annotated[str, AfterValidator(_check_backup_target)]
_CALENDAR = re.compile(r"[A-Za-z0-9*:.,/~ +-]{1,100}")


class BackupSettings(Section):
    target: BackupTarget | None = Field(
        None,
        description="Where the restic repository of the users' files lives (incremental, "
        "deduplicated, encrypted with the backup_password secret). Unset: "
        "<paths.data_dir>/user-backups on the hub host, the same disk as the files (it undoes "
        "a deleted file, not a lost disk). An absolute path on the hub host (another disk, an "
        "NFS mount), or sftp:USER@HOST:/PATH (another machine over SSH: ssh_identity, "
        "ssh_known_hosts, ssh_port).",
    )
    keep_last: int = Field(
        3,
        ge=0,
        description="Retention: the newest N snapshots, whatever their age (a run by hand "
        "before a risky change is not pruned by the night's run). Applied with restic forget "
        "--prune after each backup.",
    )
    keep_daily: int = Field(
        7, ge=0, description="Retention: the last snapshot of each of the last N days."
    )
    keep_weekly: int = Field(
        4, ge=0, description="Retention: the last snapshot of each of the last N weeks."
    )
    keep_monthly: int = Field(
        6, ge=0, description="Retention: the last snapshot of each of the last N months."
    )
    schedule: str | None = Field(
        "*-*-* 03:00:00",
        description="When the hub host's systemd timer runs the backup (OnCalendar, e.g. "
        "daily, *-*-* 03:00:00, Mon..Fri 22:30); `invoke host.prepare` installs the timer "
        "where the host has systemd. Unset: no timer (run `invoke data.backup`, or the script "
        "<paths.config_dir>/hubops-data-backup.sh from your own scheduler).",
    )
    ssh_port: Port = Field(22, description="sftp target: the backup host's SSH port.")
    ssh_identity: HostPath | None = Field(
        None,
        description="sftp target: the private key (on the hub host, root's, mode 0600) that "
        "logs in to the backup host; its public key goes into the backup user's "
        "authorized_keys there. Required with an sftp target.",
    )
    ssh_known_hosts: HostPath = Field(
        "/root/.ssh/known_hosts",
        description="sftp target: known_hosts file on the hub host that holds the backup "
        "host's key; an unknown or changed key is refused (ssh BatchMode, no prompt).",
    )

    @model_validator(mode="after")
    def _keeps_something(self) -> BackupSettings:
        if not (self.keep_last or self.keep_daily or self.keep_weekly or self.keep_monthly):
            raise RuleError(
                ("backup", "keep_last"),
                "is 0, and so are keep_daily, keep_weekly and keep_monthly: restic forget "
                "would keep nothing; keep at least one snapshot, e.g. keep_last: 3",
            )
        return self

    @model_validator(mode="after")
    def _schedule_is_one_line(self) -> BackupSettings:
        if self.schedule is not None and not _CALENDAR.fullmatch(self.schedule):
            raise RuleError(
                ("backup", "schedule"),
                f"got {self.schedule!r}; expected a systemd OnCalendar expression on one line "
                "(letters, digits, spaces and * : . , / ~ + -), e.g. daily or "
                "*-*-* 03:00:00 (`systemd-analyze calendar EXPR` checks one)",
            )
        return self

    @model_validator(mode="after")
    def _sftp_has_a_key(self) -> BackupSettings:
        if self.target and sftp_target(self.target) and self.ssh_identity is None:
            raise RuleError(
                ("backup", "target"),
                f"got {self.target!r}, an sftp target, without backup.ssh_identity; set "
                "backup.ssh_identity to the private key on the hub host that logs in there "
                "(e.g. /root/.ssh/hubops-backup, made with ssh-keygen -t ed25519)",
            )
        return self


class Environment(Section):
    """One deployment of hubops."""

    extends: str | None = Field(
        None,
        description="Another file in config/environments/ whose settings this one starts "
        "from (mappings merge, other values replace).",
    )
    description: str = Field("", description="One line about this environment.")
    public_url: HttpUrl = Field(
        description="URL users open; the OAuth callback is <public_url>/hub/oauth_callback."
    )
    hub: HubSettings = Field(default_factory=HubSettings, description="The hub and its port.")
    tls: TLSSettings = Field(default_factory=TLSSettings, description="TLS termination.")
    auth: Auth = Field(description="How users log in.")
    singleuser: SingleuserSettings = Field(description="The users' JupyterLab servers.")
    gpu: GPUSettings = Field(default_factory=GPUSettings, description="GPU policy.")
    groups: dict[GroupName, list[UserName]] = Field(
        default_factory=dict,
        description="Groups and members that hubops adds on top of the provider's groups "
        "(for users outside the provider, or for shared-password logins); profiles and "
        "pinned GPUs refer to both kinds.",
    )
    culling: CullingSettings = Field(default_factory=CullingSettings, description="Idle culling.")
    paths: PathSettings = Field(
        default_factory=PathSettings, description="Directories on the hub host."
    )
    network: NetworkSettings = Field(
        default_factory=NetworkSettings,
        description="The environment's Docker network: isolation of user servers and egress.",
    )
    registry: RegistrySettings = Field(
        default_factory=RegistrySettings, description="Image registry."
    )
    ssh: SSHSettings | None = Field(
        None, description="How to reach the hub host; unset: this machine's Docker engine."
    )
    mirrors: MirrorSettings = Field(
        default_factory=MirrorSettings, description="Package mirrors and CA bundle for builds."
    )
    build: BuildSettings = Field(default_factory=BuildSettings, description="How images are built.")
    cluster: Literal["docker", "swarm", "kubernetes"] = Field(
        "docker",
        description="What runs the hub and the user servers: docker (one host's engine), "
        "swarm (Docker Swarm: the hub on a manager, user servers as services on any node), "
        "kubernetes (zero-to-jupyterhub: `invoke render` writes the chart's values, `invoke "
        "deploy` runs helm).",
    )
    swarm: SwarmSettings = Field(
        default_factory=SwarmSettings, description="cluster swarm: user data across nodes."
    )
    kubernetes: KubernetesSettings = Field(
        default_factory=KubernetesSettings,
        description="cluster kubernetes: the cluster, the Helm release and the cluster's own "
        "resources (Secrets, storage) that the chart's values refer to.",
    )
    backup: BackupSettings = Field(
        default_factory=BackupSettings,
        description="Backups of the users' files (paths.user_data_dir) with restic: `invoke "
        "data.backup`, `invoke data.restore`, and a systemd timer (`invoke host.prepare`).",
    )

    @model_validator(mode="after")
    def _tls_matches_url(self) -> Environment:
        scheme = urlsplit(self.public_url).scheme
        if self.tls.enabled and scheme != "https":
            raise ValueError(
                f"tls.enabled is true but public_url {self.public_url!r} is http://; "
                "use https:// in public_url"
            )
        if self.hub.http_port is not None and not self.tls.enabled:
            raise ValueError(
                "hub.http_port redirects plain http to https and needs tls.enabled: true; "
                "remove hub.http_port"
            )
        return self

    @model_validator(mode="after")
    def _pool_fits_policy(self) -> Environment:
        g = self.gpu
        if self.cluster == "docker" and g.policy in ("exclusive", "shared") and not g.pool:
            raise RuleError(
                ("gpu", "pool"),
                f"is empty, and gpu.policy {g.policy} hands out GPUs from it; list the "
                "GPUs, e.g. pool: [0, 1, 2, 3]",
            )
        return self

    @model_validator(mode="after")
    def _fits_swarm(self) -> Environment:
        if self.cluster != "swarm":
            return self
        if self.gpu.policy not in ("none", "exclusive"):
            raise RuleError(
                ("gpu", "policy"),
                f"got {self.gpu.policy!r} with cluster swarm; a swarm hands each GPU a node "
                "advertises (node-generic-resources) to one server at a time: set gpu.policy: "
                "exclusive (or none)",
            )
        if self.gpu.pool:
            raise RuleError(
                ("gpu", "pool"),
                "set with cluster swarm, where the GPUs are the ones the nodes advertise "
                "(node-generic-resources, set by `invoke host.prepare` on each GPU node): "
                "remove gpu.pool",
            )
        if self.network.isolation:
            raise RuleError(
                ("network", "isolation"),
                "is true with cluster swarm; hubops' firewall filters one host's bridge, and "
                "overlay traffic between nodes never passes it, so user servers of a swarm "
                "reach each other: set network.isolation: false to accept that (or use "
                "cluster kubernetes, whose NetworkPolicy isolates them)",
            )
        return self

    @model_validator(mode="after")
    def _shm_fits_memory(self) -> Environment:
        """/dev/shm is memory of the server's cgroup: no larger than its memory limit."""
        su = self.singleuser
        places: list[tuple[tuple[str, ...], Profile | None]] = [(("singleuser",), None)]
        places += [(("singleuser", "profiles", str(i)), p) for i, p in enumerate(su.profiles)]
        for path, profile in places:
            own = profile.shm_size if profile else su.shm_size
            if own is None and su.shm_size is None:
                continue  # half of the memory limit: it fits
            key = (*path, "shm_size") if own else ("singleuser", "shm_size")
            if self.cluster == "swarm" and own:
                raise RuleError(
                    key,
                    f"is {own} with cluster swarm; Docker's service API has no shm size, so "
                    "swarm servers keep Docker's 64M /dev/shm: remove it (or use cluster "
                    "docker or kubernetes)",
                )
            mem = (profile.mem_limit if profile else None) or su.mem_limit
            shm = su.shm_size_for(profile)
            if mem and mem_bytes(shm) > mem_bytes(mem):
                limit = (
                    f"{'.'.join(path)}.mem_limit"
                    if profile and profile.mem_limit
                    else "singleuser.mem_limit"
                )
                raise RuleError(
                    key,
                    f"is {shm}, larger than the memory limit {mem} ({limit}); /dev/shm is "
                    f"memory of the server itself: set at most {mem}, or raise the limit",
                )
        return self

    @model_validator(mode="after")
    def _disk_quota_fits_cluster(self) -> Environment:
        """Disk quotas are measured and enforced on the one host's user_data_dir."""
        su = self.singleuser
        if self.cluster != "swarm":
            return self
        places = [(("singleuser", "disk_quota"), su.disk_quota)] + [
            (("singleuser", "profiles", str(i), "disk_quota"), p.disk_quota)
            for i, p in enumerate(su.profiles)
        ]
        for key, value in places:
            if value is None:
                continue
            raise RuleError(
                key,
                f"is {value} with cluster swarm, where users' files live on the nodes (a "
                "shared filesystem or volumes) and the hub host cannot measure or enforce "
                "them: remove it, and use the shared filesystem's own quotas",
            )
        return self

    @model_validator(mode="after")
    def _gpu_idle_needs_monitor(self) -> Environment:
        """GPU-aware culling needs held GPUs, the culler, and the monitor (cluster docker)."""
        timeouts: list[tuple[tuple[str, ...], int | None]] = [
            (("gpu", "idle_timeout"), self.gpu.idle_timeout),
            *(
                (("singleuser", "profiles", str(i), "gpu_idle_timeout"), p.gpu_idle_timeout)
                for i, p in enumerate(self.singleuser.profiles)
            ),
        ]
        for path, value in timeouts:
            if value is None:
                continue
            key = ".".join(path)
            if self.cluster == "swarm":
                raise RuleError(
                    path,
                    f"is {value} with cluster swarm, where hubops has no GPU monitor on the "
                    "nodes; remove it (culling.timeout applies)",
                )
            if self.gpu.policy == "none":
                raise RuleError(
                    path, f"is {value}, but gpu.policy is none, so no server holds a GPU; remove it"
                )
            if not self.culling.enabled:
                raise RuleError(
                    path,
                    f"is {value}, but culling.enabled is false, so nothing is stopped; set "
                    f"culling.enabled: true, or remove {key}",
                )
        return self

    @model_validator(mode="after")
    def _lines_fit(self) -> Environment:
        """gpu.queue_timeout needs a pool that can run out (exclusive, shared); both lines
        are the hub's own, on a single host."""
        timeouts: list[tuple[tuple[str, ...], int | None]] = [
            (("gpu", "queue_timeout"), self.gpu.queue_timeout),
            *(
                (("singleuser", "profiles", str(i), "queue_timeout"), p.queue_timeout)
                for i, p in enumerate(self.singleuser.profiles)
            ),
        ]
        for path, value in timeouts:
            if value is None:
                continue
            if self.cluster == "swarm":
                raise RuleError(
                    path,
                    f"is {value} with cluster swarm, where the swarm's scheduler places "
                    "services and keeps no line: a spawn whose GPUs are not free is refused; "
                    "remove it",
                )
            if self.gpu.policy not in ("exclusive", "shared"):
                raise RuleError(
                    path,
                    f"is {value}, but gpu.policy is {self.gpu.policy}, which hands out no "
                    "GPUs from a pool (none: no GPU; all: every GPU to every server; pinned: "
                    "each user's own), so nobody waits for one; remove it, or use gpu.policy "
                    "exclusive or shared",
                )
        if self.hub.concurrent_starts is not None and self.cluster == "swarm":
            raise RuleError(
                ("hub", "concurrent_starts"),
                f"is {self.hub.concurrent_starts} with cluster swarm, where each node starts "
                "its own tasks; remove it",
            )
        return self

    @model_validator(mode="after")
    def _shared_password_stays_private(self) -> Environment:
        # cluster kubernetes refuses shared-password login as a whole, after validation
        # (hubops.config.z2jh.misfit, called where the file is loaded), with its own line
        if (
            self.cluster != "kubernetes"
            and isinstance(self.auth, SharedPasswordAuth)
            and not self.tls.enabled
            and not ip_address(self.hub.bind_address).is_loopback
        ):
            raise RuleError(
                ("hub", "bind_address"),
                f"got {self.hub.bind_address!r} with auth.type shared-password and no TLS: "
                "anyone on the network who learns the one password logs in as any user, and "
                "it travels in clear text; log in through gitlab, github or oidc, or keep "
                "hub.bind_address: 127.0.0.1 (reach it over an SSH tunnel), or turn on tls",
            )
        return self

    @model_validator(mode="after")
    def _profiles_name_known_things(self) -> Environment:
        known = set(self.singleuser.choices)
        for n, profile in enumerate(self.singleuser.profiles):
            unknown = [i for i in profile.images or [] if i not in known]
            if unknown:
                raise ValueError(
                    f"singleuser.profiles.{n}.images names {unknown[0]!r}, which is not in "
                    f"singleuser.images; expected one of: {', '.join(sorted(known))}"
                )
            missing = [g for g in profile.groups if g not in self.groups]
            if missing and isinstance(self.auth, SharedPasswordAuth):
                raise RuleError(
                    ("singleuser", "profiles", str(n), "groups"),
                    f"names {missing[0]!r}, which is not in groups; a shared-password login "
                    "has no provider groups, so define it there (group: [members])",
                )
        return self

    @model_validator(mode="after")
    def _scopes_can_work(self) -> Environment:
        auth = self.auth
        if isinstance(auth, OAUTH_TYPES) and auth.scopes is not None:
            problem = auth.scope_problem(list(auth.scopes), self.uses_provider_groups)
            if problem:
                raise RuleError(("auth", "scopes"), f"got {list(auth.scopes)!r}; {problem}")
        return self

    @model_validator(mode="after")
    def _backup_target_apart(self) -> Environment:
        """A repository inside the users' directories would back itself up (and users could
        reach it); one inside the hub's config directory would be shipped with the config."""
        target = self.backup.target
        if target is None or sftp_target(target):
            return self
        where = PurePosixPath(target)
        for key in ("user_data_dir", "config_dir", "shared_data_dir"):
            place = getattr(self.paths, key)
            if place and (where == PurePosixPath(place) or where.is_relative_to(place)):
                raise RuleError(
                    ("backup", "target"),
                    f"got {target!r}, which is inside paths.{key} ({place}); give the "
                    "repository a directory of its own, best on another disk, e.g. "
                    "/mnt/backup/hubops",
                )
            if PurePosixPath(place or "/nonexistent").is_relative_to(where):
                raise RuleError(
                    ("backup", "target"),
                    f"got {target!r}, which holds paths.{key} ({place}); give the repository "
                    "a directory of its own, e.g. /mnt/backup/hubops",
                )
        return self

    @property
    def uses_provider_groups(self) -> bool:
        """Whether logins must learn the user's groups from the provider: an OAuth login with
        allowed groups, or with profiles or pinned GPUs that name groups."""
        if not isinstance(self.auth, OAUTH_TYPES):
            return False
        return bool(
            self.auth.allowed_groups
            or any(p.groups for p in self.singleuser.profiles)
            or self.gpu.pinned_groups
        )

    @property
    def oauth_scopes(self) -> list[str]:
        """The scopes the hub asks the provider for (explicit, or the least that works)."""
        if not isinstance(self.auth, OAUTH_TYPES):
            return []
        return self.auth.effective_scopes(self.uses_provider_groups)

    @property
    def oauth_callback_url(self) -> str:
        return f"{self.public_url}/hub/oauth_callback"

    @property
    def is_local(self) -> bool:
        return self.ssh is None


def resolve_repo_path(repo_root: Path, value: str) -> Path:
    """A path from an environment file on the operator's machine: ~ and repo-relative."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else repo_root / path
