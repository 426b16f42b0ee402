"""The invoke side of hubops: thin tasks over the typed modules, and the one error path.

Tasks resolve their arguments, call a function of hubops that takes no invoke Context, and
print the result. A :class:`~hubops.errors.HubopsError` becomes one message on stderr and exit
code 1 (:func:`task`); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from invoke.context import Context
from invoke.exceptions import Exit
from invoke.executor import Executor
from invoke.parser.context import ParserContext
from invoke.tasks import Task
from invoke.tasks import task as invoke_task
from rich.console import Console

from hubops.config import environments
from hubops.config.check import check as check_env
from hubops.errors import ConfigError, HubopsError
from hubops.images.push import digests_for_deploy, pushed_digests
from hubops.images.table import revisions
from hubops.plan.render import Rendered, render

ENV_HELP = "Environment: a file config/environments/NAME.yaml (applies to every task on the line)."

F = TypeVar("F", bound=Callable[..., Any])


def task(
    help: dict[str, str] | None = None,
    iterable: list[str] | None = None,
    name: str | None = None,
) -> Callable[[F], Task[Any]]:
    """``invoke.task`` whose HubopsErrors end the run with one message and exit code 1."""

    def decorate(body: F) -> Task[Any]:
        @functools.wraps(body)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return body(*args, **kwargs)
            except HubopsError as exc:
                raise Exit(message=f"error: {exc}", code=1) from None

        options: dict[str, Any] = {"help": help or {}, "iterable": iterable or []}
        if name:
            options["name"] = name
        made: Task[Any] = invoke_task(**options)(wrapper)
        return made

    return decorate


def repo_root(c: Context) -> Path:
    """The checkout that holds tasks.py (tasks.py puts it into the config as hubops.root)."""
    return Path(c.config.get("hubops", {}).get("root") or Path.cwd())


def resolve_env(c: Context, env: str | None) -> str:
    """--env flag -> project config ``hubops.env`` -> no default (the user must choose)."""
    if env:
        return env
    configured = c.config.get("hubops", {}).get("env")
    if configured:
        return str(configured)
    names = environments.available(repo_root(c))
    raise ConfigError(
        f"no environment given; add --env NAME (environments: {', '.join(names) or 'none'})"
    )


class EnvExecutor(Executor):
    """Makes ``--env`` given to one task on the command line apply to every task on it.

    ``invoke build push deploy --env lab`` hands ``--env`` to ``deploy`` only; this executor
    gives the same value to ``build`` and ``push``. Two different values are an error.
    """

    def execute(self, *tasks: Any) -> Any:
        contexts = [t for t in tasks if isinstance(t, ParserContext)]
        given = {ctx.args["env"].value for ctx in contexts if _env_arg_given(ctx)}
        if len(given) > 1:
            raise Exit(
                message=f"error: conflicting --env values on one command line: "
                f"{', '.join(sorted(given))}; give --env once",
                code=1,
            )
        if given:
            (value,) = given
            for ctx in contexts:
                if "env" in ctx.args and not ctx.args["env"].got_value:
                    ctx.args["env"].value = value
        return super().execute(*tasks)


def _env_arg_given(ctx: ParserContext) -> bool:
    return "env" in ctx.args and bool(ctx.args["env"].got_value)


def echo(lines: str | Sequence[str]) -> None:
    """Print a result for the operator."""
    print(lines if isinstance(lines, str) else "\n".join(lines))


console = Console(stderr=True)


def rendered_env(root: Path, name: str, strict: bool = True, digests: str = "known") -> Rendered:
    """The environment rendered, with its pushed images by digest (an environment with a
    registry). ``digests``: "required" (a deploy that pulls: every image of this checkout must
    have been pushed), "known" (those `invoke push` recorded) or "none" (tags: --transfer)."""
    report = check_env(root, name, strict=strict)
    revs = revisions(root)
    rendered = render(root, report.env, revs)
    if report.env.settings.registry.url and digests != "none":
        found = (
            digests_for_deploy(root, report.env, rendered.plan.images)
            if digests == "required"
            else pushed_digests(root, name)
        )
        rendered = render(root, report.env, revs, found)
    return rendered
