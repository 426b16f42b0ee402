"""The deploy's pure part, without Docker: a scripted fake of the Host protocol answers the
snapshot command. The swap unit's own tests are in test_swap.py.
"""

from __future__ import annotations

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
from hubops.plan.model import Plan
from hubops.plan.render import render
from tests.support.checkout import Checkout
from tests.support.scripted_host import ScriptedHost

REVS = {"proxy": "r1", "hub": "r1", "singleuser": "r1", "base": "r1"}
SECRETS = {"shared_password": SecretStr("shared-pass-1"), "admin_password": SecretStr("a" * 40)}


def scripted() -> ScriptedHost:
    """A root host: the deploy's read-only part asks who it is, then takes snapshots."""
    return ScriptedHost().on(r"^id -un", "root\n0\n")


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
    host = scripted()
    deployed(host, plan, env, config)
    changes = find_changes(
        host, plan, env.settings, config, {}, take_snapshot(host, plan, env.settings, host), LAYOUT
    )  # type: ignore[arg-type]
    assert changes.nothing, changes.lines()
    assert not interrupted(take_snapshot(host, plan, env.settings, host), plan, env.settings)  # type: ignore[arg-type]


def test_a_config_change_replaces_the_hub_and_keeps_the_proxy(rendered: tuple) -> None:  # type: ignore[type-arg]
    env, plan, config = rendered
    host = scripted()
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
    host = scripted()
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
    host = scripted()
    deployed(host, plan, env, config)
    changes = find_changes(
        host, plan, env.settings, config, SECRETS, take_snapshot(host, plan, env.settings, host)
    )  # type: ignore[arg-type]
    assert changes.secrets_changed, "no secret file on the host matches"
    assert changes.containers == {"hub": "replace (config or secrets changed)"}


def test_leftovers_of_a_cut_off_deploy_are_noticed(rendered: tuple) -> None:  # type: ignore[type-arg]
    env, plan, config = rendered
    host = scripted()
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
    host = scripted()
    deployed(host, plan, env, config)
    checkout.write_env("local2", "extends: local.yaml\nnetwork:\n  egress: none\n")
    changed = environments.load(checkout.root, "local2").settings
    changes = find_changes(
        host, plan, changed, config, {}, take_snapshot(host, plan, changed, host), LAYOUT
    )  # type: ignore[arg-type]
    assert changes.firewall == "apply the changed rules", changes.lines()
    assert changes.only_firewall, changes.lines()
    assert changes.containers == {}, "the hub and the proxy stay"
