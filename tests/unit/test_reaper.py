"""The hub's reaper (hubops_hub.reaper): which user containers are leftovers the hub's DB does
not know, and what the hub's API answer tells it."""

from __future__ import annotations

from typing import Any

from hubops_hub.labels import LABEL_ENV, LABEL_ROLE, LABEL_SERVER, LABEL_USER
from hubops_hub.reaper import Leftover, known_servers, leftovers

NOW = 10_000.0
HUB_STARTED = 9_900.0


def container(
    name: str, user: str, server: str = "", env: str = "lab", role: str = "user", age: float = 600
) -> dict[str, Any]:
    return {
        "Id": f"id-{name}",
        "Names": [f"/{name}"],
        "Created": int(NOW - age),
        "Labels": {LABEL_ENV: env, LABEL_ROLE: role, LABEL_USER: user, LABEL_SERVER: server},
    }


def test_a_server_the_hub_does_not_know_is_a_leftover_and_nothing_else_is() -> None:
    containers = [
        container("hubops-lab-user-alice", "alice"),  # known
        container("hubops-lab-user-bob", "bob"),  # restored away: a leftover
        container("hubops-lab-user-bob-gpu", "bob", "gpu"),  # a named server, known
        container("hubops-other-user-bob", "bob", env="other"),  # another environment
        container("hubops-lab-proxy", "", role="proxy"),  # not a user server
    ]
    known = {("alice", ""), ("bob", "gpu")}
    assert leftovers(containers, known, "lab", NOW, grace=120, hub_started=HUB_STARTED) == [
        Leftover("id-hubops-lab-user-bob", "hubops-lab-user-bob", "bob", "")
    ]


def test_a_spawn_in_flight_is_left_alone_but_not_a_container_older_than_the_hub() -> None:
    young = container("hubops-lab-user-carol", "carol", age=30)  # made 30 s ago
    assert leftovers([young], set(), "lab", NOW, grace=120, hub_started=HUB_STARTED) == []
    # the same age, but the hub (and this reaper) started after it: no spawn of this hub's
    assert leftovers([young], set(), "lab", NOW, grace=120, hub_started=NOW - 10) != []


def test_known_servers_are_every_active_server_of_every_user() -> None:
    users = [
        {"name": "alice", "servers": {"": {"ready": True}}},
        {"name": "bob", "servers": {"": {"pending": "spawn"}, "gpu": {"ready": True}}},
        {"name": "carol", "servers": {}},
        {"name": "dave"},
    ]
    assert known_servers(users) == {("alice", ""), ("bob", ""), ("bob", "gpu")}
