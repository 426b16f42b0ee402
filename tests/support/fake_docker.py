"""A docker CLI double for the swap unit's unit tests: containers are files in a state
directory, and every call is written to its ``calls`` file.

    FAKE_DOCKER_STATE=DIR python3 -m tests.support.fake_docker ARGS...

``c-NAME`` is a container, its text its state (created, running, exited) and, for a hub whose
/hub/health fails, ``unhealthy``; ``docker exec`` answers as such a hub would. Containers that
``create`` makes are healthy, or unhealthy while the file ``new-unhealthy`` exists.

It refuses what Docker 20.10 refuses for the commands the unit sends: a name already in use
(create, rename: 409 Conflict), and an unknown container (inspect, start, stop, rename, exec,
and rm even with --force, as Debian's 20.10 CLI does; the 28.x CLI prints the error but exits 0
there), each with exit code 1, so that no script may lean on either. :func:`install` puts it
on PATH as ``docker``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest


def _no_such(name: str) -> int:
    print(f"Error: No such container: {name}", file=sys.stderr)
    return 1


def _conflict(name: str) -> int:
    print(
        f'Error response from daemon: Conflict. The container name "/{name}" is already in use',
        file=sys.stderr,
    )
    return 1


def _inspect(state: Path, names: list[str]) -> int:
    found = []
    for name in names:
        c = state / f"c-{name}"
        if not c.exists():
            continue
        status = c.read_text().split()[0]
        found.append(
            {"Name": f"/{name}", "State": {"Status": status, "Running": status == "running"}}
        )
    print(json.dumps(found))
    return 0 if len(found) == len(names) else 1


def main(args: list[str]) -> int:
    state = Path(os.environ["FAKE_DOCKER_STATE"])
    with (state / "calls").open("a") as calls:
        calls.write("docker " + " ".join(args) + "\n")
    words = [a for a in args if not a.startswith("-")]
    cmd = args[0]
    if cmd == "container" and args[1] == "inspect":
        return _inspect(state, args[2:])
    if cmd == "inspect":
        return _inspect(state, args[1:])
    if cmd == "create":
        name = args[args.index("--name") + 1]
        if (state / f"c-{name}").exists():
            return _conflict(name)
        sick = " unhealthy" if (state / "new-unhealthy").exists() else ""
        (state / f"c-{name}").write_text("created" + sick)
        return 0
    if cmd in ("start", "stop", "restart"):
        name = words[-1]
        c = state / f"c-{name}"
        if not c.exists():
            return _no_such(name)
        words_now = c.read_text().split()
        c.write_text(" ".join(["exited" if cmd == "stop" else "running", *words_now[1:]]))
        return 0
    if cmd == "rename":
        old, new = words[1], words[2]
        if not (state / f"c-{old}").exists():
            return _no_such(old)
        if (state / f"c-{new}").exists():
            return _conflict(new)
        (state / f"c-{old}").rename(state / f"c-{new}")
        return 0
    if cmd == "rm":
        code = 0
        for name in [a for a in args[1:] if not a.startswith("-")]:
            c = state / f"c-{name}"
            if c.exists():
                c.unlink()
            else:
                code = _no_such(name)
        return code
    if cmd == "exec":
        name = words[1]
        c = state / f"c-{name}"
        if not c.exists():
            return _no_such(name)
        status = c.read_text().split()
        if status[0] != "running":
            print(f"Error response from daemon: Container {name} is not running", file=sys.stderr)
            return 1
        if "unhealthy" in status:
            print("http://127.0.0.1:8081/hub/health: HTTP Error 503")
            return 1
        return 0
    if cmd == "run":  # a one-off (the DB upgrade): only its call is kept
        return 0
    print(f"fake docker: {cmd} is not scripted", file=sys.stderr)
    return 2


def install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **containers: str) -> Path:
    """This double as ``docker`` on PATH for this test, with ``containers`` (name -> state,
    e.g. "running", "running unhealthy"); returns its state directory."""
    state = tmp_path / "docker-state"
    state.mkdir()
    for name, status in containers.items():
        (state / f"c-{name}").write_text(status)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(f'#!/bin/sh\nexec {sys.executable} {Path(__file__).resolve()} "$@"\n')
    docker.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DOCKER_STATE", str(state))
    return state


def containers(state: Path) -> dict[str, str]:
    """Name -> state (and health) of the double's containers."""
    return {p.name[2:]: p.read_text().strip() for p in sorted(state.glob("c-*"))}


def calls(state: Path) -> list[str]:
    path = state / "calls"
    return path.read_text().splitlines() if path.exists() else []


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
