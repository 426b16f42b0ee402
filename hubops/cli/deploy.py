"""Tasks that put a hub on its host: deploy, and up (the quick start's engine, passwords,
images and deploy on this machine)."""

from __future__ import annotations

from invoke.context import Context

from hubops.cli import ENV_HELP, console, echo, rendered_env, repo_root, resolve_env, task
from hubops.config import environments, secrets
from hubops.deploy.changes import find_changes
from hubops.deploy.helm import deploy as helm_deploy
from hubops.deploy.run import deploy as deploy_env
from hubops.errors import HubopsError
from hubops.host.engine import local_client
from hubops.host.local import LocalHost
from hubops.host.target import image_fetcher, open_host
from hubops.images import table as images
from hubops.images.build import build as build_images
from hubops.ops.prepare import prepare


@task(
    help={
        "env": ENV_HELP,
        "dry-run": "Show what would change (config diff, images, containers); change nothing.",
        "transfer": "Copy images over SSH (docker save | docker load) instead of pulling them.",
        "timeout": "Seconds the new hub may take to become healthy before the rollback.",
        "wait": "Seconds to wait for another deploy of the environment to finish (default: "
        "refuse at once, saying who holds the lock).",
        "break-lock": "Take the environment's deploy lock from a deploy that died.",
    }
)
def deploy(
    c: Context,
    env: str | None = None,
    dry_run: bool = False,
    transfer: bool = False,
    timeout: int = 90,
    wait: int = 0,
    break_lock: bool = False,
) -> None:
    """Deploy the hub to the environment's host; roll back if it does not become healthy."""
    root = repo_root(c)
    name = resolve_env(c, env)
    chosen = environments.load(root, name)
    if chosen.settings.cluster == "kubernetes":  # the chart's release, with helm
        echo(helm_deploy(root, chosen, images.revisions(root), dry_run=dry_run))
        return
    rendered = rendered_env(root, name, digests="none" if transfer else "required")
    loaded = environments.load(root, name)
    values = secrets.resolve(root, name, loaded.settings)
    config_text = (rendered.directory / "jupyterhub_config.py").read_text()
    with open_host(root, loaded) as host:
        if dry_run:
            changes = find_changes(host, rendered.plan, loaded.settings, config_text, values)
            if changes.config_diff:
                echo(changes.config_diff.rstrip("\n"))
            echo(
                [f"dry run, {host.name}: nothing was changed"]
                + [f"  would: {line}" for line in changes.lines()]
            )
            return
        result = deploy_env(
            host,
            rendered.plan,
            loaded.settings,
            config_text,
            values,
            image_fetcher(loaded, values, transfer),
            health_timeout=timeout,
            progress=lambda _step, m: console.print(f"[bold]deploy[/] {m}"),
            lock_wait=wait,
            break_lock=break_lock,
        )
    what = "; ".join(result.done) if result.done else "nothing changed"
    echo(f"{name}: {what} ({result.seconds:.1f}s)")
    if result.hub_unavailable_s:
        echo(f"hub unavailable for {result.hub_unavailable_s:.1f}s while it was replaced")
    echo(f"JupyterHub is up: {result.public_url}")


@task(help={"env": ENV_HELP})
def up(c: Context, env: str | None = None) -> None:
    """Everything for a hub on this machine: engine, passwords, images, deploy (local envs)."""
    root = repo_root(c)
    name = resolve_env(c, env)
    loaded = environments.load(root, name)
    if loaded.settings.ssh is not None:
        raise HubopsError(
            f"up is for environments on this machine; {name} has an SSH host: run "
            f"invoke host.prepare build push deploy --env {name}"
        )
    report = prepare(LocalHost(), loaded.settings, loaded.settings.build.base_image)
    echo(report.lines())
    made = secrets.generate_missing(root, name, loaded.settings)
    if made:
        echo(f"made {', '.join(made)} in {secrets.secrets_file(root, name).relative_to(root)}")
    build_images(local_client(), root, loaded)
    deploy(c, env=name)
    file = secrets.secrets_file(root, name).relative_to(root)
    echo(
        f"log in with any user name and the shared_password in {file} (admins: the admin_password)"
    )
