"""What the plan gives the hub for GPU-aware culling and metrics: the GPU monitor only on a
single host that hands out GPUs, the culler with hubops' arbiter and the scope that shows it a
server's container, a metrics service with a generated token, and a culler round short
enough for the shortest GPU idle timeout."""

from __future__ import annotations

import pytest

from hubops.config import environments
from hubops.errors import ConfigError
from hubops.plan.containers import plan
from hubops.plan.hub_config import cull_every, hub_config
from hubops.plan.model import CULLER_SCOPES, GPU_MONITOR, METRICS_SERVICE, OPS_SERVICE
from tests.support.checkout import Checkout

REVS = {"proxy": "r1", "hub": "r1", "singleuser": "r1", "base": "r1"}


def services(checkout: Checkout, env: str) -> dict[str, dict[str, object]]:
    loaded = environments.load(checkout.root, env)
    config = hub_config(env, loaded.settings, REVS)
    return {s["name"]: s for s in config.traits["JupyterHub"]["services"]}


def test_the_lab_runs_the_gpu_monitor_and_the_arbiter(checkout: Checkout) -> None:
    found = services(checkout, "lab")
    monitor = found[GPU_MONITOR]["command"]
    assert isinstance(monitor, list)
    assert monitor[:3] == ["python3", "-m", "hubops_hub.gpumon"]
    assert any(a.startswith("--image=") and "/hub:" in a for a in monitor), monitor
    culler = found["idle-culler"]["command"]
    assert isinstance(culler, list)
    assert culler[:3] == ["python3", "-m", "hubops_hub.culling"]
    assert "--max-age=0" in culler, "the arbiter applies culling.max_age, and counts it"
    assert "admin:server_state" in CULLER_SCOPES
    loaded = environments.load(checkout.root, "lab")
    config = hub_config("lab", loaded.settings, REVS)
    assert config.traits["HubopsSpawner"]["gpu_idle_timeout"] == 1800
    assert config.service_tokens == {METRICS_SERVICE: "metrics_token", OPS_SERVICE: "ops_token"}
    roles = {r["name"]: r for r in config.traits["JupyterHub"]["load_roles"]}
    assert roles[METRICS_SERVICE]["scopes"] == ["read:metrics"]
    p = plan("lab", loaded.settings, REVS)
    assert "metrics_token" in p.generated_secrets
    hub = next(c for c in p.containers if c.role == "hub")
    assert hub.environment == {"HUBOPS_GPU_MONITOR": "1"}


def test_no_monitor_without_gpus(checkout: Checkout) -> None:
    checkout.set_setting("lab", "gpu", {"policy": "none"})
    found = services(checkout, "lab")
    assert GPU_MONITOR not in found
    assert METRICS_SERVICE in found


def test_the_culler_runs_often_enough_for_the_shortest_gpu_timeout(checkout: Checkout) -> None:
    checkout.set_setting("lab", "culling.every", 300)
    checkout.set_setting("lab", "gpu.idle_timeout", 120)
    assert cull_every(environments.load(checkout.root, "lab").settings) == 60
    checkout.set_setting("lab", "gpu.idle_timeout", None)
    assert cull_every(environments.load(checkout.root, "lab").settings) == 300


def test_a_gpu_idle_timeout_on_a_swarm_or_without_gpus_is_one_clear_error(
    checkout: Checkout,
) -> None:
    checkout.set_setting("lab", "gpu", {"policy": "none", "idle_timeout": 600})
    with pytest.raises(ConfigError, match=r"gpu\.idle_timeout.*is 600, but gpu\.policy is none"):
        environments.load(checkout.root, "lab")
    checkout.set_setting("lab", "gpu", {"policy": "exclusive", "idle_timeout": 600})
    checkout.set_setting("lab", "network.isolation", False)
    checkout.set_setting("lab", "cluster", "swarm")
    with pytest.raises(ConfigError, match=r"gpu\.idle_timeout.*cluster swarm.*remove it"):
        environments.load(checkout.root, "lab")
