"""Root's file work on the hub host, for a deploy user that is root or only in the docker group.

The hub's state lives in root-owned places: ``paths.config_dir``, ``paths.data_dir`` (0700,
with the DB, the cookie secret and the secrets at 0600), the backups, and the TLS key (often
0600 root, e.g. certbot's). A deploy user that is root does this work itself. A deploy user
that is only in the docker group (``ssh.user: hubops`` in the lab example) asks the engine,
which runs as root: a short-lived helper container from a hubops image that is already on the
host (no network, the host's root filesystem mounted, ``chroot`` into it) runs the same shell
command with the host's own tools, as root.

The trade-off, against ``sudo``: nothing on the host needs configuring (no sudoers entry for
a deploy user, no password prompt in a non-interactive SSH session), and it is no new power:
membership of the docker group already is root on that host, as Docker's documentation says.
It costs about half a second per file step, and it needs the engine without user-namespace
remapping (where container root is no host root) and a hubops image on the host (the deploy
fetches its images before its first file step). ``host.prepare`` is different: it installs
packages and configures the engine, so it needs root or passwordless sudo.
"""

from __future__ import annotations

from collections.abc import Callable

from hubops_hub.labels import LABEL_ROLE

from hubops.errors import CommandError, HubopsError
from hubops.host.base import Host, Result, quote

HELPER_LABEL = f"{LABEL_ROLE}=root-helper"
HOST_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class AsRoot:
    """Runs shell commands as root in the host's filesystem, through the engine."""

    def __init__(self, host: Host, image: str) -> None:
        self.host = host
        self.image = image

    @property
    def name(self) -> str:
        return self.host.name

    def wrap(self, command: str, interactive: bool = False) -> str:
        return quote(
            "docker",
            "run",
            "--rm",
            *(["--interactive"] if interactive else []),
            "--network",
            "none",
            "--user",
            "0:0",
            "--label",
            HELPER_LABEL,
            "--env",
            HOST_PATH,
            "--volume",
            "/:/host",
            "--entrypoint",
            "chroot",
            self.image,
            "/host",
            "/bin/sh",
            "-c",
            command,
        )

    def run(
        self, command: str, *, check: bool = True, stdin: str | None = None, timeout: float = 600
    ) -> Result:
        wrapped = self.wrap(command, interactive=stdin is not None)
        outer = self.host.run(wrapped, check=False, stdin=stdin, timeout=timeout)
        result = Result(command, outer.code, outer.stdout, outer.stderr)
        if check and not result.ok:
            raise CommandError(self.name, result, "(run as root in a helper container)")
        return result


def whoami(host: Host) -> tuple[str, int]:
    """The deploy user's name and uid on the host."""
    out = host.run("id -un; id -u", timeout=30).stdout.split()
    return out[0], int(out[1])


def check_docker_access(host: Host, user: str) -> None:
    """One clear error for a deploy user that may not use the engine."""
    result = host.run("docker version --format '{{.Server.APIVersion}}'", check=False)
    if result.ok:
        return
    text = (result.stderr or result.stdout).strip()
    if "permission denied" in text.lower():
        raise HubopsError(
            f"{host.name}: {user} may not use Docker (permission denied on the engine's "
            f"socket); as root on the host run `usermod -aG docker {user}` (or invoke "
            "host.prepare with a root ssh.user once), then deploy again"
        )
    raise HubopsError(f"{host.name}: the Docker engine does not answer: {text[-300:]}")


def root_files(host: Host, images: Callable[[], list[str]]) -> Host | None:
    """A host that does root's file work: ``host`` itself for root, else a helper from the
    first of ``images()`` present on the host (None: no hubops image there yet)."""
    user, uid = whoami(host)
    if uid == 0:
        return host
    check_docker_access(host, user)
    for image in images():
        if host.run(quote("docker", "image", "inspect", "--format", "x", image), check=False).ok:
            return AsRoot(host, image)
    return None


class Sudo:
    """Runs shell commands through passwordless sudo (host.prepare as a non-root user)."""

    def __init__(self, host: Host) -> None:
        self.host = host

    @property
    def name(self) -> str:
        return self.host.name

    def run(
        self, command: str, *, check: bool = True, stdin: str | None = None, timeout: float = 600
    ) -> Result:
        outer = self.host.run(
            quote("sudo", "-n", "bash", "-c", command), check=False, stdin=stdin, timeout=timeout
        )
        result = Result(command, outer.code, outer.stdout, outer.stderr)
        if check and not result.ok:
            raise CommandError(self.name, result, "(run with sudo)")
        return result


def as_admin(host: Host, why: str) -> Host:
    """``host`` for root, through sudo for a user who may; else one clear error."""
    user, uid = whoami(host)
    if uid == 0:
        return host
    if host.run("sudo -n true", check=False).ok:
        return Sudo(host)
    raise HubopsError(
        f"{host.name}: {why}, so it needs root or passwordless sudo, and {user} has neither; "
        f"run it once with ssh.user: root (or give {user} sudo), then deploy as {user}"
    )


def root_command(files: Host, command: str) -> str:
    """``command`` as a shell command that does root's file work through ``files``: itself
    for root, else the helper container's command line (for scripts run on the host)."""
    if isinstance(files, AsRoot):
        return files.wrap(command)
    return command
