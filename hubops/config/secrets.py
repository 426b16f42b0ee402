"""Secrets: where each one comes from, and how to get them without ever printing them.

Operator-provided secrets come from an environment variable (``HUBOPS_<NAME>``) or, failing
that, from the git-ignored file ``config/secrets/<env>.yaml``. Generated secrets (the cookie
secret and the proxy token) are made once on the hub host by the deploy and stay there.
No secret is ever rendered into a file of build/, baked into an image, or logged.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import SecretStr

from hubops.config.settings import OAUTH_TYPES, Environment, SharedPasswordAuth
from hubops.errors import SecretError

SECRETS_DIR = Path("config") / "secrets"


@dataclass(frozen=True)
class SecretSpec:
    name: str
    purpose: str
    generated: bool = False
    min_length: int = 1

    @property
    def env_var(self) -> str:
        return f"HUBOPS_{self.name.upper()}"


OAUTH_CLIENT_SECRET = SecretSpec("oauth_client_secret", "OAuth client secret of the hub")
SHARED_PASSWORD = SecretSpec(
    "shared_password", "password for every non-admin user (shared-password login)", min_length=8
)
ADMIN_PASSWORD = SecretSpec(
    "admin_password", "password for admin_users (shared-password login)", min_length=32
)
REGISTRY_PASSWORD = SecretSpec("registry_password", "password of registry.username")
COOKIE_SECRET = SecretSpec(
    "cookie_secret", "signs the hub's cookies; made on the hub host", generated=True
)
PROXY_TOKEN = SecretSpec(
    "proxy_token", "hub <-> proxy API token; made on the hub host", generated=True
)
METRICS_TOKEN = SecretSpec(
    "metrics_token",
    "API token of the metrics service: Prometheus reads /hub/metrics with it; made on the hub host",
    generated=True,
)

BACKUP_PASSWORD = SecretSpec(
    "backup_password",
    "encrypts the backups of the users' files (restic); made by `invoke data.backup` when "
    "missing, and copied to the hub host. Keep a copy away from the hub host: without it the "
    "backups cannot be read",
    min_length=16,
)
OPS_TOKEN = SecretSpec(
    "ops_token",
    "API token of hubops' own day-two tasks (data.restore --in-place stops the user's server "
    "through the hub's API); made on the hub host",
    generated=True,
)

ALL: tuple[SecretSpec, ...] = (
    OAUTH_CLIENT_SECRET,
    SHARED_PASSWORD,
    ADMIN_PASSWORD,
    REGISTRY_PASSWORD,
    COOKIE_SECRET,
    PROXY_TOKEN,
    METRICS_TOKEN,
    BACKUP_PASSWORD,
    OPS_TOKEN,
)


def needed(settings: Environment) -> list[SecretSpec]:
    """The operator-provided secrets this environment needs."""
    out: list[SecretSpec] = []
    if isinstance(settings.auth, OAUTH_TYPES):
        out.append(OAUTH_CLIENT_SECRET)
    if isinstance(settings.auth, SharedPasswordAuth):
        out.append(SHARED_PASSWORD)
        if settings.auth.admin_users:
            out.append(ADMIN_PASSWORD)
    if settings.registry.username:
        out.append(REGISTRY_PASSWORD)
    return out


def hub_secrets(settings: Environment) -> list[SecretSpec]:
    """Secrets the hub reads at run time (files in <data_dir>/secrets/ on the host)."""
    return [s for s in needed(settings) if s is not REGISTRY_PASSWORD] + [PROXY_TOKEN]


def secrets_file(repo_root: Path, env_name: str) -> Path:
    return repo_root / SECRETS_DIR / f"{env_name}.yaml"


@dataclass(frozen=True)
class SecretStatus:
    spec: SecretSpec
    source: str | None  # "env HUBOPS_X" or the file, None when missing

    def how_to_provide(self, env_name: str) -> str:
        return (
            f"set {self.spec.env_var} or add '{self.spec.name}: ...' to "
            f"{SECRETS_DIR / (env_name + '.yaml')}"
        )


def resolve(
    repo_root: Path,
    env_name: str,
    settings: Environment,
    environ: Mapping[str, str] | None = None,
) -> dict[str, SecretStr]:
    """Every secret this environment needs, or one SecretError naming each missing one."""
    values, statuses = _lookup(repo_root, env_name, settings, environ)
    missing = [s for s in statuses if s.source is None]
    if missing:
        raise SecretError(
            "\n".join(
                f"{env_name}: missing secret {s.spec.name} ({s.spec.purpose}); "
                f"{s.how_to_provide(env_name)}"
                for s in missing
            )
        )
    return values


def status(
    repo_root: Path,
    env_name: str,
    settings: Environment,
    environ: Mapping[str, str] | None = None,
) -> list[SecretStatus]:
    """Where each needed secret would come from, without reading out any value."""
    return _lookup(repo_root, env_name, settings, environ)[1]


def _lookup(
    repo_root: Path,
    env_name: str,
    settings: Environment,
    environ: Mapping[str, str] | None,
) -> tuple[dict[str, SecretStr], list[SecretStatus]]:
    env = os.environ if environ is None else environ
    from_file = _read_file(repo_root, env_name)
    values: dict[str, SecretStr] = {}
    statuses: list[SecretStatus] = []
    for spec in needed(settings):
        if env.get(spec.env_var):
            value, source = env[spec.env_var], f"environment variable {spec.env_var}"
        elif from_file.get(spec.name):
            value, source = from_file[spec.name], str(SECRETS_DIR / f"{env_name}.yaml")
        else:
            statuses.append(SecretStatus(spec, None))
            continue
        if len(value) < spec.min_length:
            raise SecretError(
                f"{env_name}: secret {spec.name} from {source} is {len(value)} characters; "
                f"expected at least {spec.min_length} (JupyterHub refuses shorter ones)"
            )
        values[spec.name] = SecretStr(value)
        statuses.append(SecretStatus(spec, source))
    return values, statuses


def _read_file(repo_root: Path, env_name: str) -> dict[str, str]:
    path = secrets_file(repo_root, env_name)
    rel = SECRETS_DIR / path.name
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        # never echo the file's content: it holds secrets
        raise SecretError(f"{rel}{line}: invalid YAML; fix the syntax on that line") from None
    if not isinstance(data, dict):
        raise SecretError(f"{rel}: expected a mapping such as 'oauth_client_secret: ...'")
    known = {s.name for s in ALL if not s.generated}
    for key, value in data.items():
        if key not in known:
            raise SecretError(
                f"{rel}: {key}: unknown secret; expected one of: {', '.join(sorted(known))}"
            )
        if not isinstance(value, str):
            raise SecretError(f"{rel}: {key}: expected a string (quote the value)")
    return {str(k): str(v) for k, v in data.items()}


def generate_missing(
    repo_root: Path, env_name: str, settings: Environment, environ: Mapping[str, str] | None = None
) -> list[str]:
    """Make random values for the missing passwords of a shared-password environment, in its
    git-ignored secrets file (mode 0600). For trying hubops out: OAuth secrets and registry
    passwords come from their providers and are never made up. Returns the names made."""
    import secrets as random

    _, statuses = _lookup(repo_root, env_name, settings, environ)
    makeable = {SHARED_PASSWORD.name: 16, ADMIN_PASSWORD.name: 40}
    todo = [s.spec for s in statuses if s.source is None and s.spec.name in makeable]
    if not todo:
        return []
    path = secrets_file(repo_root, env_name)
    data = _read_file(repo_root, env_name)
    for spec in todo:
        data[spec.name] = random.token_urlsafe(makeable[spec.name])[: makeable[spec.name] * 2]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.touch(mode=0o600)
    tmp.write_text(yaml.safe_dump(data, default_flow_style=False), encoding="utf-8")
    tmp.replace(path)
    return [spec.name for spec in todo]


def backup_password(
    repo_root: Path, env_name: str, settings: Environment, environ: Mapping[str, str] | None = None
) -> tuple[SecretStr, bool]:
    """The password of the users' backups (``HUBOPS_BACKUP_PASSWORD`` or the secrets file), made
    at random into the git-ignored secrets file (mode 0600) when there is none, as
    :func:`generate_missing` makes the passwords of a shared-password environment. Returns it
    and whether it was made now. Not in :func:`needed`: environments that never back up need
    no password to deploy."""
    import secrets as random

    env = os.environ if environ is None else environ
    spec = BACKUP_PASSWORD
    from_file = _read_file(repo_root, env_name)
    if env.get(spec.env_var):
        value, source = env[spec.env_var], f"environment variable {spec.env_var}"
    elif from_file.get(spec.name):
        value, source = from_file[spec.name], str(SECRETS_DIR / f"{env_name}.yaml")
    else:
        value = random.token_urlsafe(32)
        _write_file(secrets_file(repo_root, env_name), {**from_file, spec.name: value})
        return SecretStr(value), True
    if len(value) < spec.min_length:
        raise SecretError(
            f"{env_name}: secret {spec.name} from {source} is {len(value)} characters; "
            f"expected at least {spec.min_length}"
        )
    return SecretStr(value), False


def _write_file(path: Path, data: dict[str, str]) -> None:
    """The secrets file, mode 0600, replaced in one rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.touch(mode=0o600)
    tmp.write_text(yaml.safe_dump(data, default_flow_style=False), encoding="utf-8")
    tmp.replace(path)
