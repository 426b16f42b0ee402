"""``invoke swarm.migrate``: move a single-host lab (cluster docker) to a swarm on the same host.

The host becomes the swarm's first manager. What carries over: the DB (users, groups, API
tokens, server records), the cookie secret (logins stay valid) and the users' directories.
Running servers do not: they are stopped (their files stay) and users start them again, as
swarm services.

Order: checks that change nothing (the new environment is swarm and the old one docker, the
host is a manager, the GPU kinds are advertised, the new places hold no other hub's state); a
backup of the old hub; the old containers stopped (not removed); the state copied where the new
environment keeps it elsewhere; the new environment deployed. Only when its hub is healthy are
the old containers, their firewall rules and their network removed. If anything fails before
that, the new environment's containers and services are removed and the old containers started
again: the lab is back as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hubops_hub.labels import LABEL_ENV, LABEL_ROLE
from pydantic import SecretStr

from hubops.config.settings import Environment
from hubops.deploy import firewall, swarm
from hubops.deploy.backup import backup
from hubops.deploy.run import DeployResult, ImageFetcher, deploy
from hubops.deploy.steps import Progress, Step, quiet
from hubops.errors import DeployError
from hubops.host.base import Host, quote
from hubops.host.files import file_host
from hubops.plan.model import COOKIE_SECRET_FILE, DB_FILE, USER_DIR_PREFIX, Plan


@dataclass(frozen=True)
class Side:
    """One environment of the move: its name, settings and plan."""

    name: str
    settings: Environment
    plan: Plan


@dataclass
class MigrateResult:
    backup: str | None = None
    stopped: list[str] = field(default_factory=list)
    copied: list[str] = field(default_factory=list)
    deploy: DeployResult | None = None
    removed: list[str] = field(default_factory=list)


def _problem(host: Host, files: Host, old: Side, new: Side) -> str | None:
    if new.settings.cluster != "swarm":
        return f"{new.name} has cluster {new.settings.cluster}; set cluster: swarm in its file"
    if old.settings.cluster != "docker":
        return f"{old.name} has cluster {old.settings.cluster}; it moves from cluster docker"
    if old.name == new.name:
        return "the old and the new environment must be two files (two names)"
    where = [
        (d.settings.ssh.host, d.settings.ssh.port) if d.settings.ssh else None for d in (old, new)
    ]
    if where[0] != where[1] or old.settings.paths.docker_socket != new.settings.paths.docker_socket:
        return (
            f"{old.name} and {new.name} are on different hosts or engines (ssh, "
            "paths.docker_socket); the move is on one host, which becomes the swarm's first "
            f"manager: give {new.name} the ssh and paths.docker_socket of {old.name}"
        )
    problem = swarm.manager_problem(host) or swarm.gpu_kind_problem(new.settings, swarm.nodes(host))
    if problem:
        return problem
    op, np = old.settings.paths, new.settings.paths
    if (
        np.data_dir != op.data_dir
        and files.run(f"test -e {quote(f'{np.data_dir}/{DB_FILE}')}", check=False).ok
    ):
        return (
            f"{np.data_dir}/{DB_FILE} exists: {new.name} has a hub DB of its own, which the "
            f"move would overwrite; point paths.data_dir of {new.name} at an empty place"
        )
    if (
        np.user_data_dir != op.user_data_dir
        and files.run(
            f"ls -d {quote(np.user_data_dir)}/{USER_DIR_PREFIX}* >/dev/null 2>&1", check=False
        ).ok
    ):
        return (
            f"{np.user_data_dir} holds users' directories already; point paths.user_data_dir "
            f"of {new.name} at an empty place (or at {op.user_data_dir} to keep them there)"
        )
    return None


def _containers(host: Host, env: str, running_only: bool) -> list[str]:
    out = host.run(
        quote(
            "docker",
            "ps",
            *([] if running_only else ["--all"]),
            "--filter",
            f"label={LABEL_ENV}={env}",
            "--format",
            f'{{{{.Names}}}} {{{{.Label "{LABEL_ROLE}"}}}}',
        )
    ).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def migrate(
    host: Host,
    old: Side,
    new: Side,
    config_text: str,
    secrets: dict[str, SecretStr],
    fetch_images: ImageFetcher,
    progress: Progress = quiet,
    health_timeout: float = 120,
) -> MigrateResult:
    """Move ``old`` (single host) to ``new`` (swarm) on ``host``; see the module's docstring."""
    files = file_host(host, old.plan) or host
    problem = _problem(host, files, old, new)
    if problem:
        raise DeployError(f"{problem}. Nothing was changed.")
    result = MigrateResult()
    op, np = old.settings.paths, new.settings.paths
    hub = next(c for c in old.plan.containers if c.role == "hub")
    if files.run(f"test -s {quote(f'{op.data_dir}/{DB_FILE}')}", check=False).ok:
        progress(Step.MIGRATE, f"backing up {old.name}'s DB, cookie secret and config")
        result.backup = backup(host, old.settings, hub.image, hub.name, files=files)
    running = _containers(host, old.name, running_only=True)
    progress(Step.MIGRATE, f"stopping {old.name}: {len(running)} container(s)")
    result.stopped = running
    made: list[str] = []  # what the move copied, taken back if it fails
    try:
        if running:  # a stop that fails halfway starts them again too
            host.run(quote("docker", "stop", "--time", "10", *running), timeout=300)
        if np.data_dir != op.data_dir:
            files.run(f"install -d -m 700 {quote(np.data_dir)}")
            for name in (DB_FILE, COOKIE_SECRET_FILE):
                src = f"{op.data_dir}/{name}"
                if files.run(f"test -e {quote(src)}", check=False).ok:
                    made.append(f"{np.data_dir}/{name}")
                    files.run(quote("cp", "-a", src, made[-1]))
                    result.copied.append(name)
        if np.user_data_dir != op.user_data_dir:
            files.run(f"install -d -m 755 {quote(np.user_data_dir)}")
            dirs = files.run(
                f"cd {quote(op.user_data_dir)} 2>/dev/null && ls -d {USER_DIR_PREFIX}* || true"
            ).stdout.split()
            for d in dirs:
                made.append(f"{np.user_data_dir}/{d}")
                files.run(quote("cp", "-a", f"{op.user_data_dir}/{d}", made[-1]))
            result.copied += dirs
        progress(Step.MIGRATE, f"deploying {new.name} (cluster swarm)")
        result.deploy = deploy(
            host,
            new.plan,
            new.settings,
            config_text,
            secrets,
            fetch_images,
            health_timeout=health_timeout,
            progress=progress,
        )
    except BaseException:
        progress(Step.MIGRATE, f"the move failed: removing {new.name}, starting {old.name} again")
        _remove_new(host, new)
        if made:
            files.run(quote("rm", "-rf", "--", *made), check=False)
        if running:
            host.run(quote("docker", "start", *running), check=False, timeout=300)
        raise
    leftovers = _containers(host, old.name, running_only=False)
    if leftovers:
        host.run(quote("docker", "rm", "--force", *leftovers), check=False)
    result.removed = leftovers
    if old.settings.network.isolation:
        firewall.run_in_host_network(host, hub.image, firewall.remove_command(old.name))
    host.run(quote("docker", "network", "rm", old.plan.network), check=False)
    return result


def _remove_new(host: Host, new: Side) -> None:
    services = host.run(
        quote("docker", "service", "ls", "--quiet", "--filter", f"label={LABEL_ENV}={new.name}"),
        check=False,
    ).stdout.split()
    if services:
        host.run(quote("docker", "service", "rm", *services), check=False)
    made = _containers(host, new.name, running_only=False)
    if made:
        host.run(quote("docker", "rm", "--force", *made), check=False)
