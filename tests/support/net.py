"""Loopback ports for the servers tests start."""

from __future__ import annotations

import socket


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def drop_firewall_rules(environment: str) -> None:
    """Take an environment's firewall rules out of this machine's iptables (the test engines
    run here, so their firewall containers keep the rules in this machine's chains; a
    removed container leaves them, as on a real host)."""
    import subprocess

    from hubops.deploy.firewall import remove_command

    subprocess.run(["sh", "-c", remove_command(environment)], check=False, capture_output=True)
