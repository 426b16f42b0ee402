"""Running invoke as an operator does: the CLI in its own process, in a checkout."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.checkout import Checkout


def run_invoke(
    checkout: Checkout,
    *args: str,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HUBOPS_")}
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=checkout.root,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
