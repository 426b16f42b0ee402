"""The files a deploy writes on the hub host, and how it keeps the current ones aside.

The config and the hub's secret files are written atomically (a temp file, then a rename; the
content on stdin). Before a deploy changes any of them it keeps the current ones aside
(``<file>.previous``); the swap unit drops them once the new hub is healthy, or puts them back.
Each function here returns root's command, or does root's file work through the host it is
given (the deploy user's way of doing root's file work, see hubops.host.rootfiles)."""

from __future__ import annotations

import hashlib

from pydantic import SecretStr

from hubops.config.secrets import PROXY_TOKEN, REGISTRY_PASSWORD
from hubops.config.settings import Environment
from hubops.deploy.swap import Journal
from hubops.host import docker as dockerhost
from hubops.host.base import Host, quote
from hubops.host.rootfiles import root_command
from hubops.plan.model import CONFIG_FILE, Plan

PROXY_GID = 65534  # the proxy image runs as 65534:65534 and must read its token file


def config_path(settings: Environment) -> str:
    return f"{settings.paths.config_dir}/{CONFIG_FILE}"


def secrets_dir(settings: Environment) -> str:
    return f"{settings.paths.data_dir}/secrets"


def saved_paths(settings: Environment) -> tuple[str, str, str, str]:
    config = config_path(settings)
    secrets = secrets_dir(settings)
    return config, f"{config}.previous", secrets, f"{secrets}.previous"


def save_state(settings: Environment) -> str:
    """Root's command that keeps the config and secret files aside (for the rollback)."""
    config, config_prev, secrets, secrets_prev = (quote(p) for p in saved_paths(settings))
    return (
        f"rm -rf {config_prev} {secrets_prev} && "
        f"if [ -e {config} ]; then cp -p {config} {config_prev}; "
        f"else printf '' > {config_prev}.absent; fi && "
        f"if [ -d {secrets} ]; then cp -a {secrets} {secrets_prev}; fi"
    )


def restore_state(settings: Environment) -> str:
    """Root's command that puts the files kept aside back (nothing when none were)."""
    config, config_prev, secrets, secrets_prev = (quote(p) for p in saved_paths(settings))
    return (
        f"if [ -e {config_prev} ]; then mv -f {config_prev} {config}; fi; "
        f"if [ -e {config_prev}.absent ]; then rm -f {config} {config_prev}.absent; fi; "
        f"if [ -d {secrets_prev} ]; then rm -rf {secrets} && mv {secrets_prev} {secrets}; fi; "
        "true"
    )


def drop_state(settings: Environment) -> str:
    _config, config_prev, _secrets, secrets_prev = (quote(p) for p in saved_paths(settings))
    return f"rm -rf {config_prev} {config_prev}.absent {secrets_prev}"


def make_dirs(host: Host, plan: Plan) -> None:
    for d in plan.host_dirs:
        host.run(
            quote("install", "-d", "-m", f"{d.mode:o}", "-o", str(d.uid), "-g", str(d.gid), d.path)
        )


def write_atomic(host: Host, path: str, text: str, mode: str, group: int = 0) -> None:
    """Write via a temp file in the same directory, then rename: never a half-written file.

    The content travels on stdin, never on a command line.
    """
    tmp = f"{path}.hubops-tmp"
    host.run(
        f"umask 077; cat > {quote(tmp)} && chown 0:{group} {quote(tmp)} && "
        f"chmod {mode} {quote(tmp)} && mv -f {quote(tmp)} {quote(path)}",
        stdin=text,
    )


def _secret_path(settings: Environment, name: str) -> str:
    return f"{settings.paths.data_dir}/secrets/{name}"


def _hub_secrets(secrets: dict[str, SecretStr]) -> dict[str, SecretStr]:
    """The secrets the hub reads (the registry password is for pulls only, never stored)."""
    return {k: v for k, v in secrets.items() if k != REGISTRY_PASSWORD.name}


def secrets_differ(
    snap: dockerhost.Snapshot, settings: Environment, secrets: dict[str, SecretStr]
) -> bool:
    """Whether the hub's secret files on the host differ from ``secrets`` (by hash only)."""
    have = {}
    for line in snap.sums.splitlines():
        digest, _, path = line.partition("  ")
        have[path.strip()] = digest
    return any(
        have.get(_secret_path(settings, name))
        != hashlib.sha256(value.get_secret_value().encode()).hexdigest()
        for name, value in _hub_secrets(secrets).items()
    )


def write_secrets(host: Host, settings: Environment, secrets: dict[str, SecretStr]) -> None:
    for name, value in sorted(_hub_secrets(secrets).items()):
        write_atomic(host, _secret_path(settings, name), value.get_secret_value(), mode="0600")


def generate_secrets(host: Host, plan: Plan) -> list[str]:
    """Make the cookie secret and proxy token on the host, once; they never leave it."""
    made = []
    for name, path in plan.generated_secrets.items():
        group, mode = (PROXY_GID, "0640") if name == PROXY_TOKEN.name else (0, "0600")
        p = quote(path)
        result = host.run(
            f"if [ -s {p} ]; then echo kept; else umask 077; "
            f"head -c 32 /dev/urandom | od -An -vtx1 | tr -d ' \\n' > {p}.tmp && "
            f"chown 0:{group} {p}.tmp && chmod {mode} {p}.tmp && mv -f {p}.tmp {p} && "
            "echo made; fi"
        )
        if result.stdout.strip() == "made":
            made.append(name)
    return made


def swap_record(settings: Environment) -> str:
    """Where the swap's record lives on the hub host: on disk, beside the hub's state."""
    return f"{settings.paths.data_dir}/hubops-swap.json"


def journal(files: Host, settings: Environment) -> Journal:
    """The swap's record on the hub host (beside the hub's state), and root's commands around
    it: a mark that the prepare step began, whether it did, and forgetting both."""
    record = swap_record(settings)
    mark = quote(f"{record}.prepared")
    return Journal(
        record=record,
        mark_prepared=root_command(files, f"touch {mark}"),
        was_prepared=root_command(files, f"test -e {mark}"),
        forget=root_command(files, f"rm -f {quote(record)} {mark}"),
    )
