"""The deploy's pure part and its swap unit, without Docker: a scripted fake of the Host protocol
answers the snapshot command, and the swap script runs under sh with a fake `docker` on PATH.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from pydantic import SecretStr

from hubops.config import environments
from hubops.deploy.firewall import Layout
from hubops.deploy.network import pinned
from hubops.deploy.run import (
    _config_path,
    _firewall_spec,
    _hub_inputs,
    _saved,
    _spec_hash,
    find_changes,
    interrupted,
    take_snapshot,
)
from hubops.deploy.swap import Swap
from hubops.host.base import Result
from hubops.host.lock import Lock
from hubops.plan.model import Plan
from hubops.plan.render import render
from tests.conftest import Checkout

REVS = {"proxy": "r1", "hub": "r1", "singleuser": "r1", "base": "r1"}
SECRETS = {"shared_password": SecretStr("shared-pass-1"), "admin_password": SecretStr("a" * 40)}
MARK = "=== hubops snapshot"


class ScriptedHost:
    """Answers the commands a deploy's read-only part sends, from a scripted host state."""

    name = "scripted"

    def __init__(self) -> None:
        self.files: dict[str, str] = {}
        self.images: list[dict[str, object]] = []
        self.containers: list[dict[str, object]] = []
        self.sums: list[str] = []
        self.commands: list[str] = []

    def run(
        self, command: str, *, check: bool = True, stdin: str | None = None, timeout: float = 600
    ) -> Result:
        self.commands.append(command)
        if command.startswith("id -un"):
            return Result(command, 0, "root\n0\n", "")
        if MARK in command:
            out = [f"{MARK} files"]
            for path in self._read_order(command):
                text = self.files.get(path)
                out.append(
                    "F -" if text is None else f"F {base64.b64encode(text.encode()).decode()}"
                )
            out.append(f"{MARK} images")
            out.append(json.dumps(self.images))
            out.append(f"{MARK} containers")
            out.append(json.dumps(self.containers))
            out.append(f"{MARK} sums")
            out += self.sums
            return Result(command, 0, "\n".join(out) + "\n", "")
        raise AssertionError(f"the read-only part sent an unexpected command: {command}")

    def _read_order(self, command: str) -> list[str]:
        paths = []
        for part in command.split("; "):
            if part.startswith("if [ -f "):
                paths.append(part.split("if [ -f ", 1)[1].split(" ]", 1)[0].strip("'"))
        return paths


LAYOUT = Layout.of("172.30.0.0/16")


@pytest.fixture
def rendered(checkout: Checkout) -> tuple[environments.LoadedEnvironment, Plan, str]:
    """The plan as a deploy holds it: the proxy and the hub at their network's addresses."""
    env = environments.load(checkout.root, "local")
    out = render(checkout.root, env, REVS)
    plan = pinned(out.plan, LAYOUT)
    return env, plan, (out.directory / "jupyterhub_config.py").read_text()


def deployed(
    host: ScriptedHost, plan: Plan, env: environments.LoadedEnvironment, config: str
) -> None:
    """Script the host as a finished deploy of ``plan`` leaves it."""
    host.files[_config_path(env.settings)] = config
    host.images = [{"Id": f"sha256:{n}", "RepoTags": [ref]} for n, ref in enumerate(plan.images)]
    snap = take_snapshot(host, plan, env.settings, host)  # type: ignore[arg-type]
    specs = [*plan.containers, _firewall_spec(plan, env.settings, LAYOUT)]
    host.containers = [
        {
            "Name": f"/{spec.name}",
            "State": {"Status": "running", "Running": True},
            "Config": {
                "Image": spec.image,
                "Labels": {
                    "org.hubops.spec-hash": _spec_hash(
                        snap, spec, _hub_inputs(snap, config) if spec.role == "hub" else {}
                    )
                },
            },
        }
        for spec in specs
    ]


def test_nothing_changed_means_nothing_to_do(rendered: tuple) -> None:  # type: ignore[type-arg]
    env, plan, config = rendered
    host = ScriptedHost()
    deployed(host, plan, env, config)
    changes = find_changes(
        host, plan, env.settings, config, {}, take_snapshot(host, plan, env.settings, host), LAYOUT
    )  # type: ignore[arg-type]
    assert changes.nothing, changes.lines()
    assert not interrupted(take_snapshot(host, plan, env.settings, host), plan, env.settings)  # type: ignore[arg-type]


def test_a_config_change_replaces_the_hub_and_keeps_the_proxy(rendered: tuple) -> None:  # type: ignore[type-arg]
    env, plan, config = rendered
    host = ScriptedHost()
    deployed(host, plan, env, config)
    changes = find_changes(
        host,
        plan,
        env.settings,
        config + "# more\n",
        {},
        take_snapshot(host, plan, env.settings, host),
    )  # type: ignore[arg-type]
    assert changes.containers == {"hub": "replace (config or secrets changed)"}
    assert "+# more" in changes.config_diff


def test_a_missing_image_and_a_stopped_proxy(rendered: tuple) -> None:  # type: ignore[type-arg]
    env, plan, config = rendered
    host = ScriptedHost()
    deployed(host, plan, env, config)
    hub = next(c for c in plan.containers if c.role == "hub")
    host.images = [i for i in host.images if i["RepoTags"] != [hub.image]]
    proxy = next(c for c in host.containers if c["Name"] == f"/{plan.containers[0].name}")
    proxy["State"] = {"Status": "exited", "Running": False}
    changes = find_changes(
        host, plan, env.settings, config, {}, take_snapshot(host, plan, env.settings, host)
    )  # type: ignore[arg-type]
    assert changes.missing_images == [hub.image]
    assert changes.containers == {"proxy": "replace (not running)", "hub": "replace (new image)"}


def test_changed_secrets_replace_the_hub(rendered: tuple) -> None:  # type: ignore[type-arg]
    env, plan, config = rendered
    host = ScriptedHost()
    deployed(host, plan, env, config)
    changes = find_changes(
        host, plan, env.settings, config, SECRETS, take_snapshot(host, plan, env.settings, host)
    )  # type: ignore[arg-type]
    assert changes.secrets_changed, "no secret file on the host matches"
    assert changes.containers == {"hub": "replace (config or secrets changed)"}


def test_leftovers_of_a_cut_off_deploy_are_noticed(rendered: tuple) -> None:  # type: ignore[type-arg]
    env, plan, config = rendered
    host = ScriptedHost()
    deployed(host, plan, env, config)
    _, config_prev, _, _ = _saved(env.settings)
    host.sums = [f"{'0' * 64}  {config_prev}"]
    assert interrupted(take_snapshot(host, plan, env.settings, host), plan, env.settings)  # type: ignore[arg-type]
    host.sums = []
    hub = dict(host.containers[1])
    hub["Name"] = f"/{plan.containers[1].name}-previous"
    host.containers.append(hub)
    assert interrupted(take_snapshot(host, plan, env.settings, host), plan, env.settings)  # type: ignore[arg-type]


# --- the swap unit, under sh with a fake docker ---------------------------------------------

FAKE_DOCKER = """#!/bin/sh
# a fake docker: containers are files in $STATE; `exec` answers health with $HEALTHY
echo "docker $*" >> "$STATE/calls"
case "$1" in
  container) [ -e "$STATE/c-$3" ] ;;
  inspect) [ -e "$STATE/c-$2" ] ;;
  stop) [ -e "$STATE/c-$4" ] ;;
  rename) [ -e "$STATE/c-$2" ] && mv "$STATE/c-$2" "$STATE/c-$3" ;;
  rm) shift 2; for n in "$@"; do rm -f "$STATE/c-$n"; done ;;
  create) touch "$STATE/c-$3" ;;
  start) [ -e "$STATE/c-$2" ] ;;
  exec) [ "$HEALTHY" = yes ] || { echo "not healthy"; exit 1; } ;;
  *) exit 0 ;;
esac
"""


def run_unit(tmp_path: Path, swap: Swap, healthy: bool) -> tuple[str, str, list[str]]:
    state = tmp_path / "state"
    state.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(docker.stat().st_mode | stat.S_IEXEC)
    (state / "c-hub").touch()
    (state / "c-proxy").touch()
    script = tmp_path / "unit.sh"
    script.write_text(swap.script().replace("d=/run/lock", f"d={tmp_path}"))
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "STATE": str(state),
        "HEALTHY": "yes" if healthy else "no",
    }
    log = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=60)
    status = (tmp_path / "hubops-t.swap.status").read_text().strip()
    return status, log.stdout, sorted(p.name for p in state.iterdir() if p.name.startswith("c-"))


def unit(**kw: object) -> Swap:
    values: dict[str, object] = {
        "environment": "t",
        "hub": "hub",
        "proxy": "proxy",
        "create_hub": "docker create --name hub image-new",
        "create_proxy": None,
        "health_urls": ["http://127.0.0.1:8081/hub/health"],
        "health_timeout": 5,
        "restore_files": "echo restored-files",
        "finish": ["echo dropped-saved-files"],
        "lock": Lock("t", "me@here pid 1 since now"),
    }
    return Swap(**{**values, **kw})  # type: ignore[arg-type]


def test_the_script_is_valid_sh() -> None:
    swap = unit(create_proxy="docker create --name proxy proxy-new", prepare=("upgrading", "true"))
    check = subprocess.run(["sh", "-n"], input=swap.script(), capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_a_healthy_new_hub_replaces_the_old_one(tmp_path: Path) -> None:
    lock_dir = tmp_path / "hubops-t.lock"
    lock_dir.mkdir()
    (lock_dir / "holder").write_text("me@here pid 1 since now\n")
    status, log, containers = run_unit(tmp_path, unit(), healthy=True)
    assert status == "done", log
    assert containers == ["c-hub", "c-proxy"], "the old hub is gone, the new one stays"
    assert "dropped-saved-files" in log
    assert not lock_dir.exists(), "the unit gave the lock back"


def test_an_unhealthy_new_hub_puts_everything_back(tmp_path: Path) -> None:
    status, log, containers = run_unit(
        tmp_path,
        unit(undo_prepare=("DB", "echo restored-db"), prepare=("migrating", "true")),
        healthy=False,
    )
    assert status.startswith("rollback-failed") or status.startswith("rolled-back"), status
    assert "put back: hub, DB, config and secret files" in status, status
    assert "restored-files" in log
    assert "c-hub" in containers, "the previous hub is back under its name"
    assert "c-hub-failed" in containers, "the failed one is kept, stopped, for its log"


def test_a_rules_change_alone_leaves_the_hub_and_proxy_running(
    rendered: tuple,  # type: ignore[type-arg]
    checkout: Checkout,
) -> None:
    env, plan, config = rendered
    host = ScriptedHost()
    deployed(host, plan, env, config)
    checkout.write_env("local2", "extends: local.yaml\nnetwork:\n  egress: none\n")
    changed = environments.load(checkout.root, "local2").settings
    changes = find_changes(
        host, plan, changed, config, {}, take_snapshot(host, plan, changed, host), LAYOUT
    )  # type: ignore[arg-type]
    assert changes.firewall == "apply the changed rules", changes.lines()
    assert changes.only_firewall, changes.lines()
    assert changes.containers == {}, "the hub and the proxy stay"
