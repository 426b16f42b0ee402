"""The environment's Docker network: name resolution checked, and repaired without stopping
anything.

Docker 20.10 breaks the embedded DNS of the bridge networks that exist when a swarm is
initialised or left on the engine (checked on this project's machines): containers then no
longer resolve each other's names, and a hub restarted there crash-loops on the proxy's name.
The repair recreates the network with the same subnet and connects every container back with
the address it had, live: user servers keep running, and the routes the proxy holds (by
address) stay right.
"""

from __future__ import annotations

import json

from hubops_hub.labels import LABEL_ENV

from hubops.hosts import Host, quote
from hubops.plan import Plan


def _names(plan: Plan) -> tuple[str, str]:
    hub = next(c.name for c in plan.containers if c.role == "hub")
    proxy = next(c.name for c in plan.containers if c.role == "proxy")
    return hub, proxy


def resolves(host: Host, container: str, name: str) -> bool | None:
    """Whether ``container`` resolves ``name`` on its networks (None: it does not run)."""
    result = host.run(
        quote("docker", "exec", container, "getent", "hosts", name), check=False, timeout=30
    )
    if result.ok:
        return True
    text = (result.stderr + result.stdout).lower()
    if "is not running" in text or "no such container" in text or "is restarting" in text:
        return None
    return False


def resolution_problem(host: Host, plan: Plan, both: bool = True) -> str | None:
    """Why the hub and the proxy cannot find each other by name (None: they can)."""
    hub, proxy = _names(plan)
    checks = [(proxy, proxy), *([(proxy, hub), (hub, proxy)] if both else [])]
    for container, name in checks:
        if resolves(host, container, name) is False:
            return (
                f"{container} cannot resolve {name} on {plan.network} (the embedded DNS of an "
                "existing network breaks when a swarm is initialised or left on this engine)"
            )
    return None


def create(host: Host, plan: Plan, subnet: str | None = None) -> None:
    """The environment's bridge network (with ``subnet``: at that subnet, so containers can be
    connected back at their addresses)."""
    host.run(
        quote(
            "docker",
            "network",
            "create",
            "--driver",
            "bridge",
            *(["--subnet", subnet] if subnet else []),
            "--label",
            f"{LABEL_ENV}={plan.environment}",
            plan.network,
        )
    )


def repair(host: Host, plan: Plan) -> list[str]:
    """Recreate the network with its subnet, and connect every container back at its address.
    Returns what was done."""
    found = json.loads(
        host.run(quote("docker", "network", "inspect", plan.network), timeout=60).stdout
    )[0]
    subnet = found["IPAM"]["Config"][0]["Subnet"]
    members = {
        c["Name"]: c["IPv4Address"].split("/")[0] for c in (found.get("Containers") or {}).values()
    }
    for name in members:
        host.run(quote("docker", "network", "disconnect", "--force", plan.network, name))
    host.run(quote("docker", "network", "rm", plan.network))
    create(host, plan, subnet)
    for name, ip in sorted(members.items()):
        host.run(quote("docker", "network", "connect", "--ip", ip, plan.network, name))
    return [f"network {plan.network} recreated ({subnet}), {len(members)} container(s) back"]
