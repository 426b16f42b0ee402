"""Users are isolated from each other and from the machinery, proven from inside a user server
with real connection attempts. Every address tried belongs to this suite: its lab engine's
containers and networks, and listeners it opens on this machine's side of those networks.

A dropped connection times out; a refused one means the packet arrived. Each "blocked" below
has a positive control: the same listener answers someone who may reach it.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from hubops.deploy.firewall import Layout
from hubops.plan.model import HUB_PORT, PROXY_API_PORT, PROXY_PORT, USER_PORT
from tests.support.labhost import LabHost, used_networks
from tests.support.verify import LoggedIn, Target
from tests.support.wait import wait_for

PROBE = """
import base64, json, socket, sys
out = {}
for label, host, port in json.loads(base64.b64decode(sys.argv[1])):
    s = socket.socket()
    s.settimeout(2.5)
    try:
        s.connect((host, port))
        out[label] = "open"
    except socket.timeout:
        out[label] = "blocked"
    except ConnectionRefusedError:
        out[label] = "refused"
    except OSError as exc:
        out[label] = f"error {exc.errno}"
    finally:
        s.close()
print(json.dumps(out))
"""


def probe(target: Target, container: str, tries: dict[str, tuple[str, int]]) -> dict[str, str]:
    """label -> open, blocked (dropped: no answer), refused or error, from ``container``."""
    code = base64.b64encode(PROBE.encode()).decode()
    listed = [[label, host, port] for label, (host, port) in tries.items()]
    args = base64.b64encode(json.dumps(listed).encode()).decode()
    result = target.in_container(
        container,
        f"python3 -c \"import base64; exec(base64.b64decode('{code}'))\" '{args}'",
    )
    assert result.rc == 0, result.stderr
    found: dict[str, str] = json.loads(result.stdout)
    return found


def address(target: Target, container: str) -> str:
    networks = target.inspect(container)["NetworkSettings"]["Networks"]
    return str(networks[f"hubops-{target.name}"]["IPAddress"])


def layout(target: Target) -> Layout:
    found = json.loads(target.host.check_output(f"docker network inspect hubops-{target.name}"))
    labels = found[0]["Labels"]
    return Layout.of(
        found[0]["IPAM"]["Config"][0]["Subnet"],
        labels["org.hubops.address.proxy"],
        labels["org.hubops.address.hub"],
    )


@contextmanager
def listener(host: str) -> Iterator[int]:
    """A TCP listener of this test on ``host`` (an address of this machine): accepts, closes."""
    server = socket.create_server((host, 0))
    server.settimeout(0.5)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                conn.close()
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()


@pytest.fixture(scope="module")
def simulated(target: Target) -> None:
    if not target.simulated:
        pytest.skip("the isolation suite builds its own listeners on the lab host (no --env)")


def test_addresses_follow_the_layout(
    target: Target, simulated: None, alice: LoggedIn, bob: LoggedIn
) -> None:
    lay = layout(target)
    assert address(target, target.container("proxy")) == str(lay.proxy)
    assert address(target, target.container("hub")) == str(lay.hub)
    for user in (alice, bob):
        ip = ipaddress.ip_address(address(target, user.container))
        assert ip in lay.user_range, f"{user.container} has {ip}, outside {lay.user_range}"


def serve_as_bob(target: Target, bob: LoggedIn) -> None:
    """bob runs something of his own without auth, as students do (TensorBoard, http.server)."""
    if probe(target, bob.container, {"own": ("127.0.0.1", 9000)})["own"] == "open":
        return
    target.host.check_output(
        f"docker exec -d {bob.container} python3 -m http.server 9000 --bind 0.0.0.0"
    )
    wait_for(
        lambda: probe(target, bob.container, {"own": ("127.0.0.1", 9000)})["own"] == "open",
        20,
        "bob's own http.server",
    )


def test_a_user_server_reaches_the_hub_and_nothing_else_on_its_network(
    target: Target, simulated: None, alice: LoggedIn, bob: LoggedIn
) -> None:
    bob_ip = address(target, bob.container)
    hub, proxy = target.container("hub"), target.container("proxy")
    serve_as_bob(target, bob)
    tries = {
        "hub API": (hub, HUB_PORT),
        "proxy public port": (proxy, PROXY_PORT),
        "proxy API": (proxy, PROXY_API_PORT),
        "bob's server": (bob_ip, USER_PORT),
        "bob's http.server": (bob_ip, 9000),
    }
    seen = probe(target, alice.container, tries)
    assert seen == {
        "hub API": "open",
        "proxy public port": "open",
        "proxy API": "blocked",
        "bob's server": "blocked",
        "bob's http.server": "blocked",
    }, seen
    # positive controls: the same ports answer those who may reach them
    control = probe(
        target,
        hub,
        {"proxy API": (proxy, PROXY_API_PORT), "bob's server": (bob_ip, USER_PORT)},
    )
    assert control == {"proxy API": "open", "bob's server": "open"}, control


def test_a_user_server_reaches_no_port_of_the_host(
    target: Target, simulated: None, alice: LoggedIn, lab: LabHost
) -> None:
    """The host's side of the environment's network and of the engine's bridge: a listener of
    this test on each, and the test OAuth provider, answer the hub but not a user server."""
    assert target.provider is not None
    provider = target.provider.gitlab_url.split("://")[1].split("/")[0]
    gw = str(layout(target).gateway)
    with listener(gw) as port_gw, listener(lab.gateway_ip) as port_bridge:
        tries = {
            "host on the env network": (gw, port_gw),
            "host on the engine bridge": (lab.gateway_ip, port_bridge),
            "OAuth provider": (provider.split(":")[0], int(provider.split(":")[1])),
        }
        seen = probe(target, alice.container, tries)
        assert set(seen.values()) == {"blocked"}, seen
        control = probe(target, target.container("hub"), tries)
        assert set(control.values()) == {"open"}, control


@pytest.fixture(scope="module")
def outside(target: Target, simulated: None, lab: LabHost) -> Iterator[dict[str, str]]:
    """Two servers outside the hub's network, on networks of this suite's lab engine: one on
    a public-range address (198.18.0.0/15, the benchmarking range: never routed on the
    internet) standing in for the internet, one on a private address standing in for the
    lab's LAN. This machine forwards between the lab engine's networks only where the suite
    says so (the lab engine manages no iptables): the stand-in's rules go before the final
    RETURN of DOCKER-USER, after hubops' own jumps, as an admin's would."""
    image = next(iter(_choices(target).values()))
    tag = uuid.uuid4().hex[:6]
    used = used_networks()
    public = next(
        n
        for n in ipaddress.ip_network("198.18.0.0/15").subnets(new_prefix=24)
        if not any(n.overlaps(u) for u in used)
    )
    nets = [
        lab.client.networks.create(f"hubops-t-inet-{tag}", ipam=_ipam(str(public))),
        lab.client.networks.create(f"hubops-t-lan-{tag}"),
    ]
    rules = [
        ["-s", str(public), "-j", "ACCEPT"],
        ["-d", str(public), "-j", "ACCEPT"],
    ]
    containers = []
    try:
        for rule in rules:
            position = _before_final_return()
            subprocess.run(["iptables", "-w", "-I", "DOCKER-USER", position, *rule], check=True)
        found = {}
        for label, net in zip(("internet", "lan"), nets, strict=True):
            c = lab.client.containers.run(
                image,
                ["python3", "-m", "http.server", "8080"],
                name=f"hubops-t-{label}-{tag}",
                network=net.name,
                detach=True,
                labels={"org.hubops.role": "test"},
            )
            containers.append(c)
            c.reload()
            found[label] = c.attrs["NetworkSettings"]["Networks"][net.name]["IPAddress"]
        for ip in found.values():
            wait_for(lambda ip=ip: _open_from_here(ip, 8080), 30, f"the stand-in at {ip}")
        yield found
    finally:
        for c in containers:
            c.remove(force=True)
        for rule in rules:
            subprocess.run(["iptables", "-w", "-D", "DOCKER-USER", *rule], check=False)
        for net in nets:
            net.remove()


def test_egress_follows_the_setting(
    target: Target, simulated: None, alice: LoggedIn, outside: dict[str, str]
) -> None:
    tries = {label: (ip, 8080) for label, ip in outside.items()}
    try:
        seen = probe(target, alice.container, tries)
        assert seen == {"internet": "open", "lan": "blocked"}, f"egress internet: {seen}"
        target.configure(network={"egress_allow": [f"{outside['lan']}/32"]})
        seen = probe(target, alice.container, tries)
        assert seen == {"internet": "open", "lan": "open"}, f"egress_allow: {seen}"
        target.configure(network={"egress": "none"})
        seen = probe(target, alice.container, tries)
        assert seen == {"internet": "blocked", "lan": "blocked"}, f"egress none: {seen}"
        control = probe(target, target.container("hub"), tries)
        assert control == {"internet": "open", "lan": "open"}, f"the hub still reaches: {control}"
        assert alice.client.lab_status("alice") == 200, "alice's server still serves her"
    finally:
        target.configure(network=None)


def test_what_a_user_server_reaches_without_and_with_isolation(
    target: Target,
    simulated: None,
    alice: LoggedIn,
    bob: LoggedIn,
    lab: LabHost,
    outside: dict[str, str],
    reach_table: dict[str, tuple[str, str]],
) -> None:
    """Every path at once, with network.isolation false (Docker's defaults: the deploy removes
    the firewall and its rules) and back on; the table is in the test summary."""
    serve_as_bob(target, bob)
    bob_ip = address(target, bob.container)
    hub, proxy = target.container("hub"), target.container("proxy")
    assert target.provider is not None
    provider = target.provider.gitlab_url.split("://")[1].split("/")[0].split(":")
    gw = str(layout(target).gateway)
    with listener(gw) as port_gw, listener(lab.gateway_ip) as port_bridge:
        tries = {
            "the hub's API (hub:8081)": (hub, HUB_PORT),
            "the public hub (proxy:8000)": (proxy, PROXY_PORT),
            "the proxy's API (proxy:8001)": (proxy, PROXY_API_PORT),
            "another user's server (bob:8888)": (bob_ip, USER_PORT),
            "another user's own service (bob:9000)": (bob_ip, 9000),
            "a host port on the env network's gateway": (gw, port_gw),
            "a host port on the engine's bridge": (lab.gateway_ip, port_bridge),
            "a host service (the OAuth provider)": (provider[0], int(provider[1])),
            "the internet (stand-in, 198.18/15)": (outside["internet"], 8080),
            "the lab's LAN (stand-in, private)": (outside["lan"], 8080),
        }
        try:
            target.configure(network={"isolation": False})
            before = probe(target, alice.container, tries)
        finally:
            target.configure(network=None)
        after = probe(target, alice.container, tries)
    reach_table.update({k: (before[k], after[k]) for k in tries})
    assert set(before.values()) == {"open"}, f"Docker's defaults: {before}"
    allowed = {"the hub's API (hub:8081)", "the public hub (proxy:8000)"}
    allowed.add("the internet (stand-in, 198.18/15)")
    assert {k for k, v in after.items() if v == "open"} == allowed, after
    assert {v for k, v in after.items() if k not in allowed} == {"blocked"}, after


def test_the_firewall_puts_back_rules_removed_from_outside(
    target: Target, simulated: None, alice: LoggedIn, bob: LoggedIn
) -> None:
    """A firewall reload (or an admin's iptables -F) drops hubops' chains: the firewall
    container puts them back within its 10 s check."""
    from hubops.deploy.firewall import chain

    bob_ip = address(target, bob.container)
    subprocess.run(["iptables", "-w", "-F", chain(target.name)], check=True)
    wait_for(
        lambda: probe(target, alice.container, {"bob": (bob_ip, USER_PORT)})["bob"] == "blocked",
        30,
        "the rules to come back",
    )
    logs = target.host.check_output(f"docker logs {_firewall(target)} 2>&1")
    assert "put back" in logs, logs


def _firewall(target: Target) -> str:
    return f"hubops-{target.name}-firewall"


def _before_final_return() -> str:
    out = subprocess.run(
        ["iptables", "-w", "-S", "DOCKER-USER"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    rules = [line for line in out if line.startswith("-A ")]
    last = len(rules) if rules and rules[-1] == "-A DOCKER-USER -j RETURN" else len(rules) + 1
    return str(max(last, 1))


def _ipam(subnet: str) -> object:
    import docker

    return docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=subnet)])


def _open_from_here(ip: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((ip, port)) == 0


def _choices(target: Target) -> dict[str, str]:
    from hubops.images import table as images
    from hubops.plan.refs import singleuser_choices
    from tests.support.checkout import REPO_ROOT

    return singleuser_choices(target.env.settings, images.revisions(REPO_ROOT))
