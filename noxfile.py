"""Test and lint sessions. `nox` runs the default ones (what CI runs); `nox -l` lists all.

Slow or hardware-specific sessions are opt-in: `nox -s gpu -- --env lab`.
"""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True


@nox.session(tags=["lint"])
def lint(session: nox.Session) -> None:
    """ruff, ruff format --check, mypy strict on hubops/, actionlint, shellcheck, hadolint."""
    session.install("-e", ".[lint]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")
    session.run("actionlint")
    scripts = [".ci/run", *_files("*.sh")]
    session.run("shellcheck", *scripts)
    session.run("hadolint", "--failure-threshold", "warning", *_files("Dockerfile"))


def _files(pattern: str) -> list[str]:
    """Files named like ``pattern`` in the image contexts and hubops/."""
    return sorted(str(p) for d in ("hub", "singleuser", "hubops") for p in Path(d).rglob(pattern))


@nox.session(tags=["test"])
def unit(session: nox.Session) -> None:
    """Unit tests: schema, bad input, rendering, secrets, CLI wiring. No Docker needed."""
    session.install("-e", ".[test]")
    session.run("pytest", "tests/unit", *session.posargs)


@nox.session(default=False, tags=["gpu"])
def gpu(session: nox.Session) -> None:
    """The verify suites against a real deployment with real GPUs: `-- --env NAME` (opt-in).

    GPU visibility, the CUDA smoke test in the pytorch variant, and the hub, TLS and OAuth
    redirect checks; without GPUs the GPU tests skip and say why.
    """
    session.install("-e", ".[test]")
    session.run("pytest", "-rs", "tests/integration/verify", *session.posargs)


@nox.session(tags=["test"])
def integration(session: nox.Session) -> None:
    """Integration tests on real parts: Docker engine, registry (started by the fixtures)."""
    session.install("-e", ".[test]")
    # the slowest tests' times, so that the suite's time is spent where it tells something
    session.run("pytest", "--durations=30", "tests/integration", *session.posargs)


@nox.session(default=False, tags=["pytorch"])
def pytorch(session: nox.Session) -> None:
    """Only the pytorch variant's build and checks (also part of `integration`; no GPU needed).

    torch imports, its CUDA matches the image's label, the CUDA libraries load and are in the
    image once; prints the image's size and build time (about 3 GB of wheels when cold).
    """
    session.install("-e", ".[test]")
    session.run(
        "pytest",
        "-m",
        "pytorch",
        "-s",
        "tests/integration/images/test_pytorch.py",
        *session.posargs,
    )


@nox.session(default=False, tags=["bench"])
def bench(session: nox.Session) -> None:
    """Benchmarks (not tests): hubops vs a hand-made setup; writes results/bench-*/."""
    session.install("-e", ".[test,bench]")
    session.run("python", "-m", "bench.run", *session.posargs)
