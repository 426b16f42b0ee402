"""The firewall's rules and program, without touching this machine's rules: iptables-restore
--test parses them as the kernel's tables would take them, sh -n parses the program."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from hubops.config import environments
from hubops.config.settings import Environment
from hubops.deploy.firewall import Layout, chain, remove_command, rules, script
from tests.support.checkout import Checkout

LAYOUT = Layout.of("172.30.0.0/16")


def settings(checkout: Checkout, network: str) -> Environment:
    checkout.write_env("fw", "extends: lab.yaml\n" + network)
    return environments.load(checkout.root, "fw").settings


def test_the_layout_keeps_the_hub_and_proxy_out_of_the_users_range() -> None:
    assert (str(LAYOUT.gateway), str(LAYOUT.proxy), str(LAYOUT.hub)) == (
        "172.30.0.1",
        "172.30.0.2",
        "172.30.0.3",
    )
    assert str(LAYOUT.user_range) == "172.30.128.0/17"
    assert LAYOUT.hub not in LAYOUT.user_range


def test_chain_names_fit_iptables() -> None:
    name = chain("a" * 63)
    assert len(name + "-IN") <= 28, name
    assert chain("lab") != chain("lab2")


@pytest.mark.parametrize(
    ("network", "present", "absent"),
    [
        ("", ["-d 10.0.0.0/8 -j DROP", "--dport 53 -j RETURN"], ["-s 172.30.0.0/16 -j DROP"]),
        (
            "network:\n  egress_allow: [10.1.2.3/32]\n",
            ["-s 172.30.0.0/16 -d 10.1.2.3/32 -j RETURN"],
            [],
        ),
        ("network:\n  egress: none\n", ["-A HUBOPS-"], ["--dport 53 -j RETURN"]),
        ("network:\n  egress: all\n", [], ["-d 10.0.0.0/8 -j DROP", "-s 172.30.0.0/16 -j DROP"]),
    ],
)
def test_egress_modes(
    checkout: Checkout, network: str, present: list[str], absent: list[str]
) -> None:
    text = rules("fw", settings(checkout, network), LAYOUT)
    for line in present:
        assert line in text, f"{line!r} missing:\n{text}"
    for line in absent:
        assert line not in text, f"{line!r} present:\n{text}"
    if "egress: none" in network:
        assert text.index("-s 172.30.0.0/16 -j DROP") > text.index("-s 172.30.0.2/32 -j RETURN"), (
            "the hub and the proxy keep their egress under egress: none"
        )


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("iptables-restore") is None,
    reason="iptables-restore --test needs root and iptables",
)
@pytest.mark.parametrize("network", ["", "network:\n  egress: none\n", "network:\n  egress: all\n"])
def test_iptables_takes_the_rules(checkout: Checkout, network: str) -> None:
    text = rules("fw", settings(checkout, network), LAYOUT)
    result = subprocess.run(
        ["iptables-restore", "--test", "--noflush"], input=text, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_the_program_and_the_removal_are_valid_sh(checkout: Checkout) -> None:
    for program in (script("fw", settings(checkout, ""), LAYOUT), remove_command("fw")):
        result = subprocess.run(["sh", "-n"], input=program, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("iptables") is None,
    reason="applies and removes rules: needs root and iptables",
)
def test_the_removal_takes_out_everything_the_program_put_in(checkout: Checkout) -> None:
    """The program's apply step for a network whose bridge is a bridge interface of this test
    holding the gateway address (TEST-NET-1: nothing uses it); then the bridge moves (as when
    a repair remakes the network) and the next apply follows it and drops the old jumps;
    then the removal takes out everything."""
    import uuid

    env = f"unit-{uuid.uuid4().hex[:8]}"
    layout = Layout.of("192.0.2.0/24")
    program = script(env, settings(checkout, ""), layout)
    links = [f"hbt{uuid.uuid4().hex[:6]}" for _ in range(2)]

    def bridge_at(link: str) -> None:
        for old in links:
            subprocess.run(["ip", "link", "delete", old], capture_output=True)
        subprocess.run(["ip", "link", "add", link, "type", "bridge"], check=True)
        subprocess.run(["ip", "addr", "add", "192.0.2.1/24", "dev", link], check=True)

    def apply() -> list[str]:
        done = subprocess.run(
            ["sh", "-c", program.split("trap ")[0] + "apply\n"], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        listed = subprocess.run(["iptables", "-w", "-S"], capture_output=True, text=True).stdout
        return [line for line in listed.splitlines() if f"-j {chain(env)}" in line]

    try:
        bridge_at(links[0])
        jumps = apply()
        assert len(jumps) == 3, jumps
        assert all(links[0] in j for j in jumps), jumps
        bridge_at(links[1])
        jumps = apply()
        assert len(jumps) == 3, jumps
        assert all(links[1] in j for j in jumps), f"the old bridge's jumps stay: {jumps}"
    finally:
        subprocess.run(["sh", "-c", remove_command(env)], check=True)
        for link in links:
            subprocess.run(["ip", "link", "delete", link], capture_output=True)
    listed = subprocess.run(["iptables", "-w", "-S"], capture_output=True, text=True).stdout
    assert chain(env) not in listed, "a rule or chain was left behind"
