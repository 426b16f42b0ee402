"""Test and lint sessions. `nox` runs the default ones (what CI runs); `nox -l` lists all.

Slow or hardware-specific sessions are opt-in: `nox -s gpu -- --env lab`.
"""

from __future__ import annotations

import nox

nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True


@nox.session(tags=["lint"])
def lint(session: nox.Session) -> None:
    """ruff check, ruff format --check, mypy strict on hubops/, actionlint, shellcheck."""
    session.install("-e", ".[lint]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")
    session.run("actionlint")
    session.run("shellcheck", ".ci/run")


@nox.session(tags=["test"])
def unit(session: nox.Session) -> None:
    """Unit tests: schema, bad input, rendering, secrets, CLI wiring. No Docker needed."""
    session.install("-e", ".[test]")
    session.run("pytest", "tests/unit", *session.posargs)


@nox.session(default=False, tags=["gpu"])
def gpu(session: nox.Session) -> None:
    """GPU checks against a host with real NVIDIA GPUs (opt-in); they skip without GPUs."""
    session.install("-e", ".[test]")
    session.run("pytest", "-m", "gpu", "-rs", "tests", *session.posargs)
