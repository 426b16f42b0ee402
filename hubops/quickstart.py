"""The README's two quick-start commands, runnable before anything is installed.

    python3 -m hubops.quickstart up      # set everything up, bring up the `local` environment
    python3 -m hubops.quickstart test    # install what the tests need, run the whole suite

Only the standard library is used here: this module makes the virtual environment (.venv)
that everything else is installed into. Extra arguments after ``test`` go to nox, e.g.
``python3 -m hubops.quickstart test -s unit``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"


def _say(message: str) -> None:
    print(f"==> {message}", flush=True)


def _run(*cmd: str | Path, env: dict[str, str] | None = None, quiet: bool = False) -> None:
    """Run a step; a quiet step's output goes to build/quickstart.log, shown if it fails."""
    _say(" ".join(str(c) for c in cmd))
    if not quiet:
        subprocess.run([str(c) for c in cmd], cwd=ROOT, check=True, env=env)
        return
    log = ROOT / "build" / "quickstart.log"
    log.parent.mkdir(exist_ok=True)
    with log.open("a") as f:
        proc = subprocess.run(
            [str(c) for c in cmd],
            cwd=ROOT,
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if proc.returncode != 0:
        print(log.read_text()[-4000:], file=sys.stderr)
        raise subprocess.CalledProcessError(proc.returncode, [str(c) for c in cmd])


def _can_make_venvs() -> bool:
    probe = subprocess.run(
        [sys.executable, "-c", "import ensurepip, venv"], capture_output=True, check=False
    )
    return probe.returncode == 0


def _apt_install(*packages: str) -> None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        sys.exit(
            f"error: this needs the Debian/Ubuntu packages {', '.join(packages)}; "
            f"run as root, or install them: apt-get install -y {' '.join(packages)}"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run("apt-get", "update", "-q", env=env)
    _run("apt-get", "install", "-y", "-q", "--no-install-recommends", *packages, env=env)


def ensure_venv(extras: str) -> Path:
    """.venv with hubops installed (editable) with the given extras; returns its bin/."""
    if sys.version_info < (3, 10):  # noqa: UP036 (this module may run under an older python3)
        sys.exit(f"error: hubops needs Python 3.10 or newer; this is {sys.version.split()[0]}")
    python = VENV / "bin" / "python"
    if not python.exists():
        if not _can_make_venvs():
            minor = f"{sys.version_info.major}.{sys.version_info.minor}"
            _apt_install(f"python{minor}-venv")
        _run(sys.executable, "-m", "venv", VENV)
    _run(python, "-m", "pip", "install", "--upgrade", "pip", quiet=True)
    _run(python, "-m", "pip", "install", "-e", f".[{extras}]" if extras else ".", quiet=True)
    return VENV / "bin"


def up() -> None:
    """Command 1: install the tooling, then bring up the `local` environment on this machine
    (Docker engine, passwords, images, deploy)."""
    bin_dir = ensure_venv("")
    _run(bin_dir / "invoke", "up", "--env", "local")


def test(nox_args: list[str]) -> None:
    """Command 2: install what the tests need and run every default nox session."""
    bin_dir = ensure_venv("")
    _run(bin_dir / "python", "-m", "pip", "install", "nox", quiet=True)
    _run(bin_dir / "nox", *nox_args)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python3 -m hubops.quickstart",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=["up", "test"])
    args, rest = parser.parse_known_args(argv)
    try:
        if args.command == "up":
            up()
        else:
            test(rest)
    except subprocess.CalledProcessError as exc:
        sys.exit(
            f"error: step failed with exit code {exc.returncode}: {' '.join(map(str, exc.cmd))}"
        )


if __name__ == "__main__":
    main()
