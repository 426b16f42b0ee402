"""The deploy's pure part, without Docker: a scripted fake of the Host protocol answers the
snapshot command. The swap unit's own tests are in test_swap.py.
"""

from __future__ import annotations

import base64
import json

import pytest
from pydantic import SecretStr

from hubops.config import environments
from hubops.deploy.changes import (
    find_changes,
    firewall_spec,
    hub_inputs,
    interrupted,
    spec_hash,
    take_snapshot,
)
from hubops.deploy.firewall import Layout
from hubops.deploy.network import pinned
from hubops.deploy.state import config_path, saved_paths
from hubops.host.base import Result
from hubops.plan.model import Plan
from hubops.plan.render import render
from tests.support.checkout import Checkout

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
    host.files[config_path(env.settings)] = config
    host.images = [{"Id": f"sha256:{n}", "RepoTags": [ref]} for n, ref in enumerate(plan.images)]
    snap = take_snapshot(host, plan, env.settings, host)  # type: ignore[arg-type]
    specs = [*plan.containers, firewall_spec(plan, env.settings, LAYOUT)]
    host.containers = [
        {
            "Name": f"/{spec.name}",
            "State": {"Status": "running", "Running": True},
            "Config": {
                "Image": spec.image,
                "Labels": {
                    "org.hubops.spec-hash": spec_hash(
                        snap, spec, hub_inputs(snap, config) if spec.role == "hub" else {}
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
    _, config_prev, _, _ = saved_paths(env.settings)
    host.sums = [f"{'0' * 64}  {config_prev}"]
    assert interrupted(take_snapshot(host, plan, env.settings, host), plan, env.settings)  # type: ignore[arg-type]
    host.sums = []
    hub = dict(host.containers[1])
    hub["Name"] = f"/{plan.containers[1].name}-previous"
    host.containers.append(hub)
    assert interrupted(take_snapshot(host, plan, env.settings, host), plan, env.settings)  # type: ignore[arg-type]


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
