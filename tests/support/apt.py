"""Install Debian packages that a test fixture needs, when they are missing (CI runs as root)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def ensure_commands(packages: dict[str, str]) -> None:
    """``{command: package}``: apt-get install the packages whose command is missing."""
    missing = sorted({pkg for cmd, pkg in packages.items() if shutil.which(cmd) is None})
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.fail(f"needs the Debian packages {missing}; run as root or install them")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, capture_output=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
        check=True,
        env=env,
        capture_output=True,
    )
