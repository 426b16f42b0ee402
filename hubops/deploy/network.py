"""The environment's Docker network: its fixed layout, name resolution checked, and repaired
without stopping anything.

The network has a pinned subnet (``network.subnet``, or the one Docker picked at the first
deploy): the proxy and the hub get its 2nd and 3rd addresses, user servers get theirs from its
upper half (``--ip-range``), so hubops' firewall rules can name them (hubops.deploy.firewall). A
network made by an older hubops (no ip-range) is remade the same way as a repair.

Docker 20.10 breaks the embedded DNS of the bridge networks that exist when a swarm is
initialised or left on the engine (checked on this project's machines): containers then no
longer resolve each other's names, and a hub restarted there crash-loops on the proxy's name.
The repair recreates the network with the same subnet and connects every container back with
the address it had, live: user servers keep running, and the routes the proxy holds (by
address) stay right.
"""

from __future__ import annotations

import itertools
import json
from ipaddress import ip_address
from typing import Any

from hubops_hub.labels import LABEL_ADDRESS_HUB, LABEL_ADDRESS_PROXY, LABEL_ENV

from hubops.deploy.firewall import Layout
from hubops.errors import DeployError
from hubops.host import docker as dockerhost
from hubops.host.base import Host, quote
from hubops.plan.model import Plan


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
    not_running = ("is not running", "no such container", "is restarting", "cannot connect to")
    if any(words in text for words in not_running):  # the last: the engine itself is down
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


def create(host: Host, plan: Plan, layout: Layout) -> None:
    """The environment's bridge network with ``layout``: its subnet, the user servers' range,
    and the proxy's and hub's addresses (in labels, read back by layout())."""
    host.run(
        quote(
            "docker",
            "network",
            "create",
            "--driver",
            "bridge",
            "--subnet",
            str(layout.subnet),
            "--gateway",
            str(layout.gateway),
            "--ip-range",
            str(layout.user_range),
            "--label",
            f"{LABEL_ENV}={plan.environment}",
            "--label",
            f"{LABEL_ADDRESS_PROXY}={layout.proxy}",
            "--label",
            f"{LABEL_ADDRESS_HUB}={layout.hub}",
            plan.network,
        )
    )


def _ipam(found: dict[str, Any]) -> dict[str, str]:
    configs = (found.get("IPAM") or {}).get("Config") or []
    return dict(configs[0]) if configs else {}


def _layout_of(found: dict[str, Any]) -> Layout | None:
    ipam = _ipam(found)
    if not ipam.get("IPRange") or not ipam.get("Subnet"):
        return None
    labels = found.get("Labels") or {}
    return Layout.of(ipam["Subnet"], labels.get(LABEL_ADDRESS_PROXY), labels.get(LABEL_ADDRESS_HUB))


def layout(host: Host, plan: Plan) -> Layout | None:
    """The layout of the environment's network as it is (None: no network, or one without
    the hubops layout yet)."""
    found = dockerhost.inspect(host, "network", plan.network)
    return None if found is None else _layout_of(found)


def ensure(host: Host, plan: Plan, wanted: str | None) -> tuple[Layout, list[str]]:
    """The environment's network with the hubops layout: made when missing (at ``wanted``,
    else where Docker finds room), remade in place when an older hubops made it. Returns the
    layout and what was done."""
    found = dockerhost.inspect(host, "network", plan.network)
    if found is None:
        create(host, plan, Layout.of(wanted or _free_subnet(host, plan)))
        made = layout(host, plan)
        if made is None:
            raise DeployError(f"{host.name}: {plan.network} was made but is not there")
        return made, [f"network {plan.network} ({made.subnet})"]
    ipam = _ipam(found)
    if wanted and ipam.get("Subnet") != wanted:
        raise DeployError(
            f"network.subnet is {wanted}, but {plan.network} on {host.name} has "
            f"{ipam.get('Subnet')}; a subnet cannot change under running servers: set "
            f"network.subnet: {ipam.get('Subnet')} (or remove it)"
        )
    have = _layout_of(found)
    if have is not None:
        return have, []
    return repair(host, plan)


def _reserve(found: dict[str, Any], plan: Plan) -> Layout:
    """Addresses for the proxy and the hub in the lower half of a network made by an older
    hubops: where they are now, unless another container holds that address (then the first
    free ones)."""
    subnet = Layout.of(_ipam(found)["Subnet"]).subnet
    members = {
        str(c["Name"]): str(c["IPv4Address"]).split("/")[0]
        for c in (found.get("Containers") or {}).values()
    }
    ours = {c.role: c.name for c in plan.containers}
    others = {
        ip for name, ip in members.items() if name.removesuffix("-previous") not in ours.values()
    }
    lower = next(iter(subnet.subnets(prefixlen_diff=1)))
    gateway = subnet.network_address + 1
    picked: list[str] = []
    for role in ("proxy", "hub"):
        now = members.get(ours[role]) or members.get(f"{ours[role]}-previous")
        candidates = itertools.chain([now] if now else [], (str(a) for a in lower.hosts()))
        picked.append(
            next(
                a
                for a in candidates
                if ip_address(a) in lower
                and ip_address(a) != gateway
                and a not in others
                and a not in picked
            )
        )
    return Layout.of(str(subnet), picked[0], picked[1])


def _free_subnet(host: Host, plan: Plan) -> str:
    """A subnet Docker's own allocator finds free (a network made and removed at once)."""
    probe = f"{plan.network}-probe"
    host.run(quote("docker", "network", "rm", probe), check=False)
    host.run(quote("docker", "network", "create", "--driver", "bridge", probe))
    try:
        found = dockerhost.inspect(host, "network", probe) or {}
        subnet = _ipam(found).get("Subnet")
    finally:
        host.run(quote("docker", "network", "rm", probe), check=False)
    if not subnet or ":" in subnet:
        raise DeployError(f"{host.name}: Docker gave no IPv4 subnet for {plan.network}")
    prefix = int(subnet.split("/")[1])
    if prefix > 24:
        raise DeployError(
            f"{host.name}: Docker's address pool gives /{prefix} networks, too small for a hub "
            "(the upper half holds the user servers); set network.subnet, e.g. 172.30.0.0/16"
        )
    return subnet


def repair(host: Host, plan: Plan) -> tuple[Layout, list[str]]:
    """Recreate the network with its subnet and layout (one for a network of an older
    hubops), and connect every container back at its address. Returns the layout and what
    was done."""
    found = json.loads(
        host.run(quote("docker", "network", "inspect", plan.network), timeout=60).stdout
    )[0]
    kept = _layout_of(found)
    lay = kept or _reserve(found, plan)
    members = {
        c["Name"]: c["IPv4Address"].split("/")[0] for c in (found.get("Containers") or {}).values()
    }
    for name in members:
        host.run(quote("docker", "network", "disconnect", "--force", plan.network, name))
    host.run(quote("docker", "network", "rm", plan.network))
    create(host, plan, lay)
    for name, ip in sorted(members.items()):
        host.run(quote("docker", "network", "connect", "--ip", ip, plan.network, name))
    what = f"network {plan.network} recreated ({lay.subnet}), {len(members)} container(s) back"
    if kept is None:
        what += f" with the hubops address layout (proxy {lay.proxy}, hub {lay.hub})"
    return lay, [what]


def pinned(plan: Plan, layout: Layout) -> Plan:
    """``plan`` with the proxy and the hub at their fixed addresses of ``layout``."""
    ips = {"proxy": str(layout.proxy), "hub": str(layout.hub)}
    containers = [
        c.model_copy(update={"ip": ips[c.role]}) if c.role in ips else c for c in plan.containers
    ]
    return plan.model_copy(update={"containers": containers})
