"""Tasks on images: base-image, build, push."""

from __future__ import annotations

from invoke.context import Context

from hubops.cli import ENV_HELP, echo, repo_root, resolve_env, task
from hubops.config import environments, secrets
from hubops.config.check import check as check_env
from hubops.host.engine import local_client
from hubops.images import base as base_image
from hubops.images.build import build as build_images
from hubops.images.push import push as push_images
from hubops.images.push import record_pushed


@task(help={"env": ENV_HELP}, name="base-image")
def base_image_(c: Context, env: str | None = None) -> None:
    """Make the environment's bootstrap base image from Debian/Ubuntu packages (no registry)."""
    root = repo_root(c)
    loaded = environments.load(root, resolve_env(c, env))
    boot = loaded.settings.build.bootstrap
    made = base_image.bootstrap(local_client(), boot, loaded.settings.mirrors)
    echo(
        f"{made.ref}: {boot.distribution} {boot.suite}, {made.size / 1e6:.0f} MB, "
        f"made in {made.seconds:.0f}s"
    )


@task(
    help={
        "env": ENV_HELP,
        "image": "Build only this image or image:variant (repeatable), e.g. hub, singleuser:base.",
        "no-cache": "Build every step again instead of using the build cache.",
        "allow-dirty": "Build images with uncommitted changes for an environment that has a "
        "registry (refused otherwise: their -dirty tag would name different builds).",
    },
    iterable=["image"],
)
def build(
    c: Context,
    env: str | None = None,
    image: list[str] | None = None,
    no_cache: bool = False,
    allow_dirty: bool = False,
) -> None:
    """Build and tag the proxy, hub and singleuser images the environment uses."""
    root = repo_root(c)
    report = check_env(root, resolve_env(c, env))
    built = build_images(
        local_client(),
        root,
        report.env,
        only=image or None,
        no_cache=no_cache,
        allow_dirty=allow_dirty,
    )
    for b in built:
        state = "cached" if b.cached else "built"
        echo(f"{b.pinned:60} {b.size / 1e6:6.0f} MB  {b.seconds:5.1f}s {state}")
        echo(f"    tags: {', '.join(r.rpartition(':')[2] for r in b.refs)}")


@task(help={"env": ENV_HELP})
def push(c: Context, env: str | None = None) -> None:
    """Push every tag of the environment's images to its registry, verified by digest."""
    root = repo_root(c)
    name = resolve_env(c, env)
    report = check_env(root, name)
    values = secrets.resolve(root, name, report.env.settings)
    pushed = push_images(local_client(), report.env, root, values)
    for p in pushed:
        echo(f"{p.ref}  {p.digest}")
    echo(f"recorded in {record_pushed(root, name, pushed).relative_to(root)} (deploy pulls these)")
