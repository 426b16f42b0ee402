"""The hub's reaper: user servers that the hub's DB does not know are removed.

A JupyterHub-managed service (``hubops-reaper``, started by the hub in the hub container, so at
every hub start: after ``invoke db.restore`` and after every deploy that restarts the hub). At
its start and every ``--every`` seconds it compares this environment's user containers (their
``org.hubops.environment`` and ``role=user`` labels) with the servers the hub knows (running or
starting, from the hub's API), and removes the containers of servers it does not know: a
server started after the backup that a restore went back to, or the server of a user deleted
while it ran. Such a container holds memory and, under an exclusive policy, a GPU that nothing
would free; its name blocks the user's next spawn.

Removing one stops it and deletes the container only: the user's files are in their directory
(or volume), which stays, and the GPUs it held go back to the pool (the pool is read from the
running containers' labels). Containers of other environments on the same engine are never
looked at. A container made since this hub started and younger than ``--grace`` seconds is
left alone: a spawn in flight creates its container before the hub's API lists the server as
started (one made before the hub started is no spawn of this hub's).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hubops_hub.labels import LABEL_ENV, LABEL_ROLE, LABEL_SERVER, LABEL_USER

log = logging.getLogger("hubops-reaper")


@dataclass(frozen=True)
class Leftover:
    container_id: str
    name: str
    user: str
    server: str


def leftovers(
    containers: Iterable[Mapping[str, Any]],
    known: set[tuple[str, str]],
    environment: str,
    now: float,
    grace: float,
    hub_started: float = 0.0,
) -> list[Leftover]:
    """The user containers of ``environment`` (Docker's container list entries) whose
    (user, server) is not in ``known``, made before ``hub_started`` or more than ``grace``
    seconds ago."""
    out = []
    for c in containers:
        labels = c.get("Labels") or {}
        if labels.get(LABEL_ENV) != environment or labels.get(LABEL_ROLE) != "user":
            continue
        user, server = labels.get(LABEL_USER, ""), labels.get(LABEL_SERVER, "")
        if not user or (user, server) in known:
            continue
        created = float(c.get("Created") or now)
        if created >= hub_started and now - created < grace:
            continue
        names = c.get("Names") or [""]
        out.append(Leftover(str(c.get("Id", "")), names[0].lstrip("/"), user, server))
    return out


def known_servers(users: Iterable[Mapping[str, Any]]) -> set[tuple[str, str]]:
    """(user, server name) of every server the hub counts as running or starting."""
    return {(u["name"], name) for u in users for name in (u.get("servers") or {})}


def hub_users(
    api_url: str, token: str, page: int = 200, state: str = "active"
) -> list[dict[str, Any]]:
    """Every user (with ``state`` "active": those with a running or starting server, with
    their servers; "": all), page by page."""
    users: list[dict[str, Any]] = []
    offset = 0
    while True:
        request = urllib.request.Request(
            f"{api_url.rstrip('/')}/users?"
            + (f"state={state}&" if state else "")
            + f"offset={offset}&limit={page}",
            headers={
                "Authorization": f"token {token}",
                "Accept": "application/jupyterhub-pagination+json",
            },
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            body = json.load(response)
        items = body["items"] if isinstance(body, dict) else body
        users.extend(items)
        following = (body.get("_pagination") or {}).get("next") if isinstance(body, dict) else None
        if not following or not items:
            return users
        offset = int(following["offset"])


class Reaper:
    def __init__(self, environment: str, grace: float) -> None:
        import docker  # the hub image's; imported here so the pure parts need none

        self.client = docker.from_env()
        self.environment = environment
        self.grace = grace
        self.started = time.time()
        self.api_url = os.environ["JUPYTERHUB_API_URL"]
        self.token = os.environ["JUPYTERHUB_API_TOKEN"]

    def step(self) -> list[Leftover]:
        import docker.errors

        containers = self.client.api.containers(
            all=True,
            filters={"label": [f"{LABEL_ENV}={self.environment}", f"{LABEL_ROLE}=user"]},
        )
        if not containers:
            return []
        known = known_servers(hub_users(self.api_url, self.token))
        found = leftovers(
            containers, known, self.environment, time.time(), self.grace, self.started
        )
        for left in found:
            who = f"{left.user}'s server" + (f" {left.server!r}" if left.server else "")
            log.warning(
                "removing %s (%s): the hub does not know it (a DB restore, or a deleted user); "
                "the user's files stay",
                left.name,
                who,
            )
            try:
                self.client.api.stop(left.container_id, timeout=10)
                self.client.api.remove_container(left.container_id, v=False)
            except docker.errors.NotFound:
                continue
        return found

    def run(self, every: int) -> None:
        while True:
            try:
                self.step()
            except Exception as exc:  # the hub starting, the engine busy: try again soon
                log.error("could not check for leftover servers: %s", exc)
                time.sleep(min(every, 5))
                continue
            time.sleep(every)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hubops-reaper", description=__doc__)
    parser.add_argument("--environment", required=True, help="the hubops environment")
    parser.add_argument("--every", type=int, default=300, help="seconds between checks")
    parser.add_argument("--grace", type=int, default=120, help="age a leftover must have, s")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="[%(levelname)1.1s %(asctime)s hubops-reaper] %(message)s"
    )
    Reaper(args.environment, args.grace).run(args.every)
    return 0


if __name__ == "__main__":
    sys.exit(main())
