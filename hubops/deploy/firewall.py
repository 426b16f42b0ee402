"""The environment's network isolation: iptables rules that hubops keeps on the hub host.

Docker has no policy between containers of one network: with its defaults every user server
reaches every other one on any port, the proxy's API, and every port of the host. Docker's own
answer is its DOCKER-USER chain, which it leaves to the admin and evaluates before its own
rules; hubops keeps two chains of its own per environment there:

- ``HUBOPS-<id>`` (from DOCKER-USER, for traffic from or to the network): inside the network,
  only user servers and the proxy -> the hub's port, the proxy and the hub -> user servers'
  port, the hub -> the proxy's API, anyone -> the proxy's public port; from outside, only the
  proxy's public port (published); out of the network, per ``network.egress``.
- ``HUBOPS-<id>-IN`` (from INPUT, for traffic from the network to the host itself): user
  servers reach the public hub port and DNS only.

The rules name the hub's and the proxy's addresses, which therefore are fixed: the network has
a pinned subnet, the proxy and the hub its 2nd and 3rd addresses, and user servers get theirs
from its upper half (hubops.deploy.network). Allowed traffic RETURNs to Docker's own rules; hubops
only ever drops.

A small container (``hubops-<env>-firewall``, restart unless-stopped) applies them: it runs the
host's own iptables (chroot into the host's root, mounted read-only), so the rules use the
same backend (nft or legacy) as dockerd's, and they come back after a reboot before any user
server starts. It checks them every 10 s and puts back what a firewall reload removed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, ip_network

from hubops_hub.labels import LABEL_ENV, LABEL_IMAGE, LABEL_ROLE

from hubops.config.settings import PRIVATE_NETWORKS, Environment
from hubops.host import docker as dockerhost
from hubops.host.base import Host, quote
from hubops.plan.model import (
    HUB_PORT,
    PROXY_API_PORT,
    PROXY_PORT,
    PROXY_REDIRECT_PORT,
    USER_PORT,
    ContainerSpec,
    Mount,
)

APPLIED = "hubops-firewall: rules applied"


@dataclass(frozen=True)
class Layout:
    """The addresses of one environment's network: the gateway is its first address, user
    servers get theirs from its upper half, the proxy and the hub have fixed ones in its lower
    half (its 2nd and 3rd, unless a network of an older hubops had others taken)."""

    subnet: IPv4Network
    proxy: IPv4Address
    hub: IPv4Address

    @property
    def gateway(self) -> IPv4Address:
        return self.subnet.network_address + 1

    @property
    def user_range(self) -> IPv4Network:
        return list(self.subnet.subnets(prefixlen_diff=1))[1]

    @classmethod
    def of(cls, subnet: str, proxy: str | None = None, hub: str | None = None) -> Layout:
        net = ip_network(subnet)
        assert isinstance(net, IPv4Network)
        return cls(
            net,
            IPv4Address(proxy) if proxy else net.network_address + 2,
            IPv4Address(hub) if hub else net.network_address + 3,
        )


def chain(environment: str) -> str:
    """iptables chain names are at most 28 characters: a hash of the environment name."""
    return "HUBOPS-" + hashlib.sha256(environment.encode()).hexdigest()[:10].upper()


def rules(environment: str, settings: Environment, layout: Layout) -> str:
    """The two chains, in iptables-restore form (``--noflush``: other chains stay)."""
    fwd, inp = chain(environment), chain(environment) + "-IN"
    s, h, p = str(layout.subnet), f"{layout.hub}/32", f"{layout.proxy}/32"
    public = [PROXY_PORT, *([PROXY_REDIRECT_PORT] if settings.hub.http_port else [])]
    host_ports = [settings.hub.port, *([settings.hub.http_port] if settings.hub.http_port else [])]
    egress = settings.network.egress
    est = "-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN"
    lines = [
        "*filter",
        f":{fwd} - [0:0]",
        f":{inp} - [0:0]",
        f"-A {fwd} {est}",
        f"-A {fwd} -s {s} -d {h} -p tcp --dport {HUB_PORT} -j RETURN",
        f"-A {fwd} -s {p} -d {s} -p tcp --dport {USER_PORT} -j RETURN",
        f"-A {fwd} -s {h} -d {s} -p tcp --dport {USER_PORT} -j RETURN",
        f"-A {fwd} -s {h} -d {p} -p tcp --dport {PROXY_API_PORT} -j RETURN",
        f"-A {fwd} -d {p} -p tcp -m multiport --dports {_ports(public)} -j RETURN",
        f"-A {fwd} -s {s} -d {s} -j DROP",
        f"-A {fwd} -d {s} -j DROP",
        f"-A {fwd} -s {h} -j RETURN",
        f"-A {fwd} -s {p} -j RETURN",
    ]
    if egress == "none":
        lines.append(f"-A {fwd} -s {s} -j DROP")
    elif egress == "internet":
        lines += [f"-A {fwd} -s {s} -d {cidr} -j RETURN" for cidr in settings.network.egress_allow]
        lines += [f"-A {fwd} -s {s} -p {proto} --dport 53 -j RETURN" for proto in ("udp", "tcp")]
        lines += [f"-A {fwd} -s {s} -d {cidr} -j DROP" for cidr in PRIVATE_NETWORKS]
    lines += [
        f"-A {inp} {est}",
        f"-A {inp} -s {h} -j RETURN",
        f"-A {inp} -s {p} -j RETURN",
        f"-A {inp} -p tcp -m multiport --dports {_ports(host_ports)} -j RETURN",
    ]
    if egress != "none":
        lines += [f"-A {inp} -p {proto} --dport 53 -j RETURN" for proto in ("udp", "tcp")]
    lines += [f"-A {inp} -j DROP", "COMMIT"]
    return "\n".join(lines) + "\n"


def _ports(ports: list[int]) -> str:
    return ",".join(str(x) for x in dict.fromkeys(ports))


def _jumps(environment: str) -> list[tuple[str, str]]:
    """(parent chain, rule): the parent is DOCKER-USER, or FORWARD where the engine keeps no
    iptables rules of its own ($FWD in the program). They match the network's bridge ($BR,
    found from the gateway's address at each check: a network remade by a repair has a new
    one), so the rules of a network that is gone never apply to a later one with its subnet."""
    fwd = chain(environment)
    return [
        ("$FWD", f'-i "$BR" -j {fwd}'),
        ("$FWD", f'-o "$BR" -j {fwd}'),
        ("INPUT", f'-i "$BR" -j {fwd}-IN'),
    ]


BRIDGE_NF = "/proc/sys/net/bridge/bridge-nf-call-iptables"


def script(environment: str, settings: Environment, layout: Layout) -> str:
    """The firewall container's program (POSIX sh, run with the host's tools): apply the
    rules, say so, then check them every 10 s and put back what was removed or moved."""
    jumps = _jumps(environment)
    fwd = chain(environment)
    text = rules(environment, settings, layout)
    counts = f"{text.count(f'-A {fwd} ')} {text.count(f'-A {fwd}-IN ')}"
    insert = "\n".join(
        f"  iptables -w -C {parent} {rule} 2>/dev/null || iptables -w -I {parent} 1 {rule} "
        "|| return 1"
        for parent, rule in jumps
    )
    check = "\n".join(
        f"  iptables -w -C {parent} {rule} 2>/dev/null || return 1" for parent, rule in jumps
    )
    keep = " ".join(
        f'-e "-A {p} {rule}"'
        for parent, rule in jumps
        for p in (["DOCKER-USER", "FORWARD"] if parent == "$FWD" else [parent])
    ).replace('"$BR"', "$BR")
    return f"""set -u
RULES={quote(text)}
GW={quote(str(layout.gateway))}
say() {{ echo "hubops-firewall: $*"; }}
locate() {{
  FWD=DOCKER-USER
  iptables -w -n -L DOCKER-USER >/dev/null 2>&1 || FWD=FORWARD
  BR=$(ip -4 -o addr show to "$GW/32" 2>/dev/null | awk '{{print $2; exit}}')
  [ -n "$BR" ] || {{ say "no interface has $GW: is the network there?" >&2; return 1; }}
}}
bridged() {{
  # traffic between two containers of one bridge meets iptables only with this on
  [ "$(cat {BRIDGE_NF} 2>/dev/null)" = 1 ] && return 0
  echo 1 > {BRIDGE_NF} 2>/dev/null && [ "$(cat {BRIDGE_NF})" = 1 ] && return 0
  say "{BRIDGE_NF} is not 1: containers of one network bypass iptables; on the host run \
modprobe br_netfilter && sysctl -w net.bridge.bridge-nf-call-iptables=1 (invoke host.prepare \
does, for good)" >&2
  return 1
}}
apply() {{
  locate && bridged || return 1
  printf '%s' "$RULES" | iptables-restore -w --noflush || return 1
{insert}
  for p in DOCKER-USER FORWARD INPUT; do
    iptables -w -S "$p" 2>/dev/null | grep -E -- '-j {fwd}(-IN)?$' | grep -vxF {keep} |
      sed 's/^-A /-D /' | while read -r rule; do eval iptables -w $rule; done
  done
}}
intact() {{
  locate && bridged || return 1
  n=$(iptables -w -S {fwd} 2>/dev/null | grep -c '^-A ')
  n_in=$(iptables -w -S {fwd}-IN 2>/dev/null | grep -c '^-A ')
  [ "$n $n_in" = {quote(counts)} ] || return 1
{check}
}}
trap 'exit 0' TERM INT
until apply; do say "could not apply the rules; trying again in 5 s" >&2; sleep 5; done
echo {quote(APPLIED)} "on $BR"
while sleep 10 & wait $!; do
  intact || {{ apply && say "the rules were changed from outside or the bridge moved: put back"; }}
done
"""


def remove_command(environment: str) -> str:
    """Root's shell command that takes the environment's rules out (nothing when none)."""
    fwd = chain(environment)
    return (
        f"for parent in DOCKER-USER FORWARD INPUT; do "
        f"iptables -w -S \"$parent\" 2>/dev/null | grep -E -- '-j {fwd}(-IN)?$' | "
        f"sed 's/^-A /-D /' | while read -r rule; do eval iptables -w $rule; done; "
        f'done; for c in {fwd} {fwd}-IN; do iptables -w -F "$c" 2>/dev/null; '
        f'iptables -w -X "$c" 2>/dev/null; done; true'
    )


def name(environment: str) -> str:
    return f"hubops-{environment}-firewall"


def run_in_host_network(host: Host, image: str, command: str) -> None:
    """``command`` as root with the host's tools in the host's network namespace (a one-off
    container with the firewall's rights), for a deploy user that is root or not."""
    spec = _with_host_tools("hubops-firewall-once", image, command, {LABEL_ROLE: "root-helper"})
    host.run(dockerhost.run_once_command(spec))


def container_spec(
    environment: str, settings: Environment, layout: Layout, image: str
) -> ContainerSpec:
    """The container that keeps the rules."""
    labels = {LABEL_ENV: environment, LABEL_ROLE: "firewall", LABEL_IMAGE: image}
    return _with_host_tools(name(environment), image, script(environment, settings, layout), labels)


def _with_host_tools(
    container: str, image: str, program: str, labels: dict[str, str]
) -> ContainerSpec:
    """A container that runs ``program`` with the host's own tools: host network, the host's
    root read-only, no capability but NET_ADMIN, NET_RAW (iptables) and SYS_CHROOT."""
    return ContainerSpec(
        role="firewall",
        name=container,
        image=image,
        command=["/host", "/bin/sh", "-c", program],
        entrypoint="chroot",
        environment={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
        ports=[],
        mounts=[Mount(source="/", target="/host", read_only=True)],
        network="host",
        labels=labels,
        user="0:0",
        cap_drop=["ALL"],
        cap_add=["NET_ADMIN", "NET_RAW", "SYS_CHROOT"],
        security_opt=["no-new-privileges"],
        pids_limit=64,
        read_only=True,
    )
