"""The hub's client of configurable-http-proxy, without the proxy's traffic as activity.

CHP stamps a route's ``last_activity`` on every byte it carries: JupyterLab's polls, the status
bar's usage polls, the websocket pings of a browser tab left open in the background.
JupyterHub copies that stamp to the user's server every ``last_activity_interval``
(``JupyterHub.update_last_activity``), so the idle culler would never stop a server, nor give
back its GPU, while a tab is open somewhere. hubops counts what the user's server itself
reports instead (``JUPYTERHUB_ACTIVITY_URL``: its kernels, terminals and API calls, without the
calls marked as polling), and drops the routes' stamps, as JupyterHub does for a proxy that
keeps none ("no last activity data (possibly proxy other than CHP)").
"""

from __future__ import annotations

from typing import Any

from jupyterhub.proxy import ConfigurableHTTPProxy


def without_traffic_stamps(routes: dict[str, Any]) -> dict[str, Any]:
    for route in routes.values():
        (route.get("data") or {}).pop("last_activity", None)
    return routes


class HubopsProxy(ConfigurableHTTPProxy):  # type: ignore[misc]
    async def get_all_routes(self) -> dict[str, Any]:
        return without_traffic_stamps(await super().get_all_routes())
