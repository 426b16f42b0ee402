"""Shared fixtures: a scratch checkout of this repo that a test may change freely."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.checkout import OPTIONS, REPO_ROOT, Checkout


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--env",
        default=None,
        help="Environment to test (a file config/environments/NAME.yaml): its images are "
        "built and tested, and its running deployment is verified. Default: the `local` "
        "images, and a deployment the suites make on a simulated GPU lab host.",
    )


def pytest_configure(config: pytest.Config) -> None:
    OPTIONS["env"] = str(config.getoption("--env") or "local")


@pytest.fixture
def checkout(tmp_path: Path) -> Checkout:
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copytree(REPO_ROOT / "config" / "environments", root / "config" / "environments")
    (root / "config" / "secrets").mkdir()
    for name in ("tasks.py", "invoke.yaml", "README.md"):
        shutil.copy(REPO_ROOT / name, root / name)
    return Checkout(root)


@pytest.fixture
def secrets_dir(tmp_path: Path) -> Callable[[dict[str, str]], Path]:
    """Make a hub secrets directory (as on the hub host) holding the given secrets."""

    def make(values: dict[str, str]) -> Path:
        d = tmp_path / "hub-secrets"
        d.mkdir(exist_ok=True)
        for name, value in values.items():
            (d / name).write_text(value + "\n", encoding="utf-8")
        return d

    return make
