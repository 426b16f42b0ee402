"""Whether a deployed hub serves: /hub/health on the hub itself and through the proxy, asked
from inside the hub container (the same script the swap unit runs)."""

from __future__ import annotations

import time

from hubops.config.settings import Environment
from hubops.deploy import swap as swap_unit
from hubops.errors import HubopsError
from hubops.host import docker as dockerhost
from hubops.host.base import Host, quote
from hubops.plan.model import HUB_PORT, PROXY_PORT, Plan


def health_urls(plan: Plan, settings: Environment) -> list[str]:
    """/hub/health on the hub itself and through the proxy (asked from inside the hub)."""
    proxy = plan.container("proxy")
    scheme = "https" if settings.tls.enabled else "http"
    prefix = ("/" + settings.public_url.split("://", 1)[1].partition("/")[2]).rstrip("/")
    return [
        f"http://127.0.0.1:{HUB_PORT}{prefix}/hub/health",
        f"{scheme}://{proxy.name}:{PROXY_PORT}{prefix}/hub/health",
    ]


def wait_healthy(host: Host, plan: Plan, settings: Environment, timeout: float) -> None:
    """/hub/health answers on the hub itself and through the proxy (checked from the hub)."""
    hub = plan.container("hub")
    urls = health_urls(plan, settings)
    deadline = time.monotonic() + timeout
    while True:
        # short rounds: a hub that crashes is noticed between them
        left = min(max(deadline - time.monotonic(), 1.0), 5.0)
        result = host.run(
            quote(
                "docker",
                "exec",
                hub.name,
                "python3",
                "-c",
                swap_unit.HEALTH_SCRIPT,
                f"{left:.0f}",
                *urls,
            ),
            check=False,
            timeout=left + 30,
        )
        if result.ok:
            return
        state = dockerhost.inspect(host, "container", hub.name)
        status = ((state or {}).get("State") or {}).get("Status")
        if status in ("exited", "dead", None):
            raise HubopsError(f"{hub.name} is {status or 'gone'}")
        if time.monotonic() >= deadline:
            raise HubopsError(f"not healthy: {(result.stderr or result.stdout).strip()[-300:]}")
        time.sleep(0.3)
