"""The hub host of an environment, and how images get there."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import SecretStr

from hubops.config.environments import LoadedEnvironment
from hubops.config.secrets import REGISTRY_PASSWORD
from hubops.config.settings import resolve_repo_path
from hubops.errors import CommandError, HubopsError
from hubops.host import docker as dockerhost
from hubops.host.base import Host, quote
from hubops.host.local import LocalHost
from hubops.host.ssh import SSHHost


@contextmanager
def open_host(repo_root: Path, env: LoadedEnvironment) -> Iterator[Host]:
    """This machine for an environment without ``ssh``, else an SSH connection to its host."""
    ssh = env.settings.ssh
    if ssh is None:
        yield LocalHost()
        return
    key = resolve_repo_path(repo_root, ssh.key_file) if ssh.key_file else None
    with SSHHost(ssh, resolve_repo_path(repo_root, ssh.known_hosts), key) as host:
        yield host


def image_fetcher(
    env: LoadedEnvironment, secrets: dict[str, SecretStr], transfer: bool
) -> Callable[[Host, list[str]], None]:
    """How images reach the host: docker save | docker load over SSH, or a registry pull."""
    s = env.settings
    if transfer:
        return transfer_images
    if s.registry.url:
        password = secrets.get(REGISTRY_PASSWORD.name)
        return lambda host, refs: pull_images(
            host, refs, s.registry.url or "", s.registry.username, password
        )

    def missing(host: Host, refs: list[str]) -> None:
        where = "this machine" if s.ssh is None else host.name
        hint = (
            f"build them: invoke build --env {env.name}"
            if s.ssh is None
            else "set registry.url, or deploy with --transfer to copy them over SSH"
        )
        raise HubopsError(f"images missing on {where}: {', '.join(refs)}; {hint}")

    return missing


def pull_images(
    host: Host, refs: list[str], registry: str, username: str | None, password: SecretStr | None
) -> None:
    """docker pull on the host, logged in through a throwaway DOCKER_CONFIG (nothing kept)."""
    pulls = " && ".join(quote("docker", "pull", "--quiet", ref) for ref in refs)
    if username and password is not None:
        command = (
            'cfg=$(mktemp -d) && trap \'rm -rf "$cfg"\' EXIT && export DOCKER_CONFIG="$cfg" && '
            f"docker login --username {quote(username)} --password-stdin {quote(registry)} "
            f">/dev/null && {pulls}"
        )
        stdin: str | None = password.get_secret_value()
    else:
        command, stdin = pulls, None
    try:
        host.run(command, stdin=stdin, timeout=3600)
    except CommandError as exc:
        raise HubopsError(
            f"{host.name}: pulling from {registry} failed; was `invoke push` run, and can the "
            f"host reach the registry?\n{exc}"
        ) from None


def transfer_images(host: Host, refs: list[str]) -> None:
    """docker save here | docker load there, for sites without a registry."""
    if not isinstance(host, SSHHost):
        raise HubopsError("--transfer copies images over SSH; this environment has no ssh host")
    host.pipe_in("docker load --quiet", ["docker", "save", *refs])
    missing = [ref for ref in refs if dockerhost.image_id(host, ref) is None]
    if missing:
        raise HubopsError(f"{host.name}: after docker load, still missing: {', '.join(missing)}")
