"""Tasks on environments: list, check, render."""

from __future__ import annotations

from invoke.context import Context
from invoke.exceptions import Exit

from hubops.cli import ENV_HELP, echo, repo_root, resolve_env, task
from hubops.config import environments
from hubops.config.check import check as check_env
from hubops.config.reference import update_readme
from hubops.errors import HubopsError
from hubops.images import table as images
from hubops.plan.render import render as render_env
from hubops.plan.render import render_values


@task()
def envs(c: Context) -> None:
    """List the environments in config/environments/."""
    root = repo_root(c)
    for name in environments.available(root):
        try:
            description = environments.load(root, name).settings.description
        except HubopsError:
            description = "(invalid: run invoke check --env " + name + ")"
        echo(f"{name:12} {description}")


@task(
    help={
        "env": ENV_HELP,
        "all": "Check every environment in config/environments/.",
        "strict": "Also require what build/push/deploy need from this machine: "
        "every secret and the SSH key file.",
    }
)
def check(c: Context, env: str | None = None, all: bool = False, strict: bool = False) -> None:
    """Validate environment files and the secrets they need; changes nothing."""
    root = repo_root(c)
    names = environments.available(root) if all else [resolve_env(c, env)]
    for name in names:
        echo(check_env(root, name, strict=strict).lines())


@task(help={"env": ENV_HELP})
def render(c: Context, env: str | None = None) -> None:
    """Write build/ENV/: jupyterhub_config.py and the deploy plan, or the chart's values.yaml
    (cluster kubernetes); no secrets."""
    root = repo_root(c)
    report = check_env(root, resolve_env(c, env))
    if report.env.settings.cluster == "kubernetes":
        path = render_values(root, report.env, images.revisions(root))
        echo(f"wrote {path.relative_to(root)}")
        return
    rendered = render_env(root, report.env, images.revisions(root))
    for path in rendered.files:
        echo(f"wrote {path.relative_to(root)}")


@task(help={"check": "Only report whether README.md is stale; exit 1 if it is."})
def docs(c: Context, check: bool = False) -> None:
    """Regenerate the configuration reference in README.md from the schema."""
    readme = repo_root(c) / "README.md"
    changed = update_readme(readme, check_only=check)
    if check and changed:
        raise Exit(
            message="error: README.md's configuration reference is stale; run: invoke docs", code=1
        )
    echo("README.md reference " + ("updated" if changed else "up to date"))
