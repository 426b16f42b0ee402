"""``invoke status`` and ``invoke logs`` (hubops.ops.status) on a scripted host: what the
operator is shown for realistic answers of the hub host, and that nothing on it is changed.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone

import pytest

from hubops.config.settings import Environment
from hubops.errors import HubopsError
from hubops.ops.status import Server, logs_command, read_status
from hubops.plan.model import Plan
from tests.support.checkout import Checkout
from tests.support.planned import planned
from tests.support.scripted_host import ScriptedHost, container

ENV_LABEL = "org.hubops.environment"
ROLE_LABEL = "org.hubops.role"
USER_LABEL = "org.hubops.user"
SERVER_LABEL = "org.hubops.server"
STARTED_LABEL = "org.hubops.started"
GPUS_LABEL = "org.hubops.gpus"
JH_LABEL = "org.hubops.jupyterhub.version"

# what a status may send: inspections, listings, the hub's read-only probe, who-am-I
READ_ONLY = (
    r"^docker (container|service|image|network) inspect ",
    r"^docker (ps --all|service ls) --quiet ",
    r"^docker exec hubops-\w+-hub python3 -c ",
    r"^docker version --format ",
    r"^id -un; id -u$",
    r"^cat /srv/jupyterhub/hubops-user-backup\.json 2>/dev/null$",
    r"^docker run --rm --network none --user 0:0 .* -c 'cat /srv/jupyterhub/hubops-user-backup",
    r"^ls -1 /srv/jupyterhub/backups 2>/dev/null$",
    r"^docker run --rm --network none --user 0:0 .* -c 'ls -1 /srv/jupyterhub/backups "
    r"2>/dev/null'$",
    r"^cat /srv/jupyterhub/hubops-disk-usage\.json$",
    r"^docker run --rm --network none --user 0:0 .* -c 'cat /srv/jupyterhub/"
    r"hubops-disk-usage\.json'$",
)
NO_USAGE = r"cat /srv/jupyterhub/hubops-disk-usage\.json"

ALICE_STARTED = datetime(2024, 5, 2, 9, 0, tzinfo=timezone.utc)
BOB_STARTED = datetime(2024, 5, 2, 11, 30, tzinfo=timezone.utc)


@pytest.fixture
def local(checkout: Checkout) -> tuple[Plan, Environment]:
    return planned(checkout, "local")


def assert_read_only(host: ScriptedHost) -> None:
    for command in host.commands:
        assert any(re.search(p, command, re.S) for p in READ_ONLY), (
            f"a status sent a command that is not a read: {command[:200]}"
        )


def hub_container(env: str = "local", *, running: bool = True) -> dict[str, object]:
    return container(
        f"hubops-{env}-hub",
        running=running,
        image="hubops/hub:r1",
        labels={ENV_LABEL: env, ROLE_LABEL: "hub", JH_LABEL: "5.2.1"},
        Image="sha256:" + "a" * 64,
        Created="2024-05-02T08:14:03.918273645Z",
    )


def user_container(
    user: str, server: str, started: datetime, *, gpus: str = "", running: bool = True
) -> dict[str, object]:
    labels = {
        ENV_LABEL: "local",
        ROLE_LABEL: "user",
        USER_LABEL: user,
        SERVER_LABEL: server,
        STARTED_LABEL: str(int(started.timestamp())),
        **({GPUS_LABEL: gpus} if gpus else {}),
    }
    name = f"hubops-local-user-{user}" + (f"--{server}" if server else "")
    return container(name, running=running, image="hubops/singleuser:base-r1", labels=labels)


def probe(health: object, users: int, servers: list[list[str | None]]) -> str:
    """What the status probe prints in the hub container (see status._PROBE)."""
    return json.dumps({"health": health, "users": users, "servers": servers}) + "\n"


def root_host(data_backup: str | None = None) -> ScriptedHost:
    """A root host; ``data_backup``: the record of the users' files' last backup (None: none)."""
    host = ScriptedHost().on(r"^id -un; id -u$", "root\n0\n")
    return host.on(
        r"^cat /srv/jupyterhub/hubops-user-backup\.json 2>/dev/null$",
        *((data_backup, 0) if data_backup is not None else ("", 1)),
    )


def running_hub_host(health: object = 200, data_backup: str | None = None) -> ScriptedHost:
    """A root host whose hub runs with two users' servers (bob's exited, alice's holding GPU
    1) and two backups beside a directory that is no backup."""
    host = root_host(data_backup)
    host.on(r"^docker container inspect hubops-local-hub$", json.dumps([hub_container()]))
    host.on(
        r"^docker exec hubops-local-hub python3 -c ",
        probe(
            health,
            4,
            [
                ["alice", "", "2024-05-02 09:00:01.000000", "2024-05-02 10:41:07.123456"],
                ["carol", "", "2024-05-01 07:00:00.000000", None],
            ],
        ),
    )
    host.on(
        r"^docker ps --all --quiet --filter label=org\.hubops\.environment=local "
        r"--filter label=org\.hubops\.role=user$",
        "9c1e4b7a2f30\n4d8a0e6b1c52\n",
    )
    host.on(
        r"^docker container inspect 9c1e4b7a2f30 4d8a0e6b1c52$",
        json.dumps(
            [
                user_container("bob", "", BOB_STARTED, running=False),
                user_container("alice", "", ALICE_STARTED, gpus="1"),
            ]
        ),
    )
    host.on(
        r"^ls -1 /srv/jupyterhub/backups 2>/dev/null$",
        "20240502T020000.000118Z\n20240430T020000.000042Z\nlost+found\n",
    )
    host.on(NO_USAGE, "cat: no such file\n", 1)
    return host


def test_a_healthy_hub_shows_its_version_users_servers_and_newest_backup(
    local: tuple[Plan, Environment],
) -> None:
    """A running, healthy hub: its state, version (the image's label), user count, servers by
    user with their age, last activity and GPUs, when it was deployed and the newest backup.
    """
    plan, settings = local
    host = running_hub_host()
    status = read_status(host, settings, plan)
    assert status.environment == "local"
    assert (status.hub_state, status.health, status.version) == ("running", "ok", "5.2.1")
    assert status.users == 4
    assert status.last_deploy == "2024-05-02 08:14:03 UTC"
    assert status.last_backup == "20240502T020000.000118Z", "the newest, not the last listed"
    assert status.servers == [
        Server(
            user="alice",
            name="(default)",
            container="hubops-local-user-alice",
            state="running",
            started=ALICE_STARTED,
            last_activity="2024-05-02 10:41:07.123456",
            gpus="1",
        ),
        Server(
            user="bob",
            name="(default)",
            container="hubops-local-user-bob",
            state="exited",
            started=BOB_STARTED,
            last_activity=None,
            gpus="",
        ),
    ]
    assert status.gpus_held == ["alice: 1"]


def test_status_changes_nothing_and_reads_the_db_read_only(
    local: tuple[Plan, Environment],
) -> None:
    """Every command a status sends is a read, and the hub's DB is opened read-only (a
    status never writes to the DB of a running hub)."""
    plan, settings = local
    host = running_hub_host()
    read_status(host, settings, plan)
    assert_read_only(host)
    [probe_command] = host.sent(r"^docker exec ")
    assert "jupyterhub.sqlite?mode=ro" in probe_command
    assert "/hub/health" in probe_command


def test_an_unhealthy_hub_says_what_its_health_endpoint_answered(
    local: tuple[Plan, Environment],
) -> None:
    """A hub that runs but answers /hub/health with an error: the health line says what it
    answered; users and servers are still shown."""
    plan, settings = local
    host = running_hub_host(health="HTTP Error 503: Service Unavailable")
    status = read_status(host, settings, plan)
    assert status.health == "/hub/health: HTTP Error 503: Service Unavailable"
    assert status.users == 4
    assert [s.user for s in status.servers] == ["alice", "bob"]


def test_a_hub_that_cannot_be_probed_says_why(local: tuple[Plan, Environment]) -> None:
    """The probe itself fails (docker exec into a hub that is restarting): the health says the
    hub does not answer, with docker's words, and the user count is unknown."""
    plan, settings = local
    host = root_host()
    host.on(r"^docker container inspect hubops-local-hub$", json.dumps([hub_container()]))
    host.on(
        r"^docker exec hubops-local-hub ",
        "Error response from daemon: Container 3f1e is restarting, wait until the container "
        "is running\n",
        1,
    )
    host.on(r"^docker ps --all --quiet ", "")
    host.on(r"^ls -1 /srv/jupyterhub/backups", "", 2)
    host.on(NO_USAGE, "cat: no such file\n", 1)
    status = read_status(host, settings, plan)
    assert status.health == (
        "the hub does not answer: Error response from daemon: Container 3f1e is restarting, "
        "wait until the container is running"
    )
    assert status.users is None
    assert status.servers == []
    assert status.last_backup is None, "no backups directory: no backup"
    assert not host.sent(r"^docker container inspect (?!hubops-local-hub$)"), (
        "no user containers: none inspected"
    )


def test_a_stopped_hub_is_not_probed(local: tuple[Plan, Environment]) -> None:
    """An exited hub: its state is the health line, and nothing is run inside it."""
    plan, settings = local
    host = root_host()
    host.on(
        r"^docker container inspect hubops-local-hub$",
        json.dumps([hub_container(running=False)]),
    )
    host.on(r"^docker ps --all --quiet ", "")
    host.on(r"^ls -1 /srv/jupyterhub/backups", "20240501T020000Z\n")
    host.on(NO_USAGE, "cat: no such file\n", 1)
    status = read_status(host, settings, plan)
    assert (status.hub_state, status.health) == ("exited", "the hub container is exited")
    assert status.version == "5.2.1", "the version is read from the container, running or not"
    assert status.users is None
    assert status.last_backup == "20240501T020000Z"
    assert not host.sent(r"^docker exec ")
    assert_read_only(host)


def test_a_fresh_host_shows_a_missing_hub_and_no_backup(local: tuple[Plan, Environment]) -> None:
    """Nothing deployed yet, a deploy user that is not root and no hubops image: the hub is
    missing, its version and users unknown, and no helper container is started to list
    backups (there is no image to start it from)."""
    plan, settings = local
    host = ScriptedHost()
    host.on(r"^id -un; id -u$", "hubops\n1001\n")
    host.on(r"^docker version --format ", "1.45\n")
    host.on(
        r"^docker container inspect hubops-local-hub$",
        "Error: No such container: hubops-local-hub\n",
        1,
    )
    host.on(r"^docker image inspect --format x hubops/(hub|proxy):r1$", "Error: No such image\n", 1)
    host.on(r"^docker ps --all --quiet ", "")
    status = read_status(host, settings, plan)
    assert (status.hub_state, status.health) == ("missing", "no hub container")
    assert (status.version, status.users, status.last_deploy) == ("?", None, None)
    assert (status.servers, status.last_backup) == ([], None)
    assert not host.sent(r"^docker exec |^ls |^docker run ")
    assert_read_only(host)


def test_a_non_root_deploy_user_lists_backups_through_a_helper_container(
    local: tuple[Plan, Environment],
) -> None:
    """A deploy user only in the docker group: the root-owned backups directory is listed by a
    helper container of a hubops image on the host, and the newest backup is shown."""
    plan, settings = local
    host = ScriptedHost()
    host.on(r"^id -un; id -u$", "hubops\n1001\n")
    host.on(r"^docker version --format ", "1.45\n")
    host.on(
        r"^docker container inspect hubops-local-hub$",
        json.dumps([hub_container(running=False)]),
    )
    host.on(r"^docker image inspect --format x hubops/hub:r1$", "x\n")
    host.on(r"^docker ps --all --quiet ", "")
    host.on(
        r"^docker run --rm .* hubops/hub:r1 /host /bin/sh -c 'ls -1 /srv/jupyterhub/backups ",
        "20240430T020000Z\n20240501T020000Z\n",
    )
    host.on(NO_USAGE, "cat: no such file\n", 1)
    host.on(r"^docker run --rm .* -c 'cat /srv/jupyterhub/hubops-user-backup\.json ", "", 1)
    status = read_status(host, settings, plan)
    assert status.last_backup == "20240501T020000Z"
    assert not host.sent(r"^ls "), "the deploy user cannot read the backups itself"
    assert_read_only(host)


def test_swarm_servers_are_read_from_the_services(checkout: Checkout) -> None:
    """cluster swarm: user servers are services; their user, server, GPUs and start come from
    the service spec's labels."""
    plan, settings = planned(
        checkout, "sw", "extends: local.yaml\ncluster: swarm\nnetwork:\n  isolation: false\n"
    )
    host = root_host()
    host.on(r"^docker container inspect hubops-sw-hub$", json.dumps([hub_container("sw")]))
    host.on(
        r"^docker exec hubops-sw-hub ",
        probe(200, 2, [["dora", "gpu", "2024-05-02 09:00:01", "2024-05-02 12:00:00.000001"]]),
    )
    host.on(
        r"^docker service ls --quiet --filter label=org\.hubops\.environment=sw "
        r"--filter label=org\.hubops\.role=user$",
        "k2x9qv0b8w1m\n",
    )
    service = {
        "ID": "k2x9qv0b8w1maz3l5c7d9e0f1",
        "Spec": {
            "Name": "hubops-sw-user-dora--gpu",
            "Labels": {
                ENV_LABEL: "sw",
                ROLE_LABEL: "user",
                USER_LABEL: "dora",
                SERVER_LABEL: "gpu",
                STARTED_LABEL: str(int(ALICE_STARTED.timestamp())),
                GPUS_LABEL: "NVIDIA-GPU:1",
            },
        },
    }
    host.on(r"^docker service inspect k2x9qv0b8w1m$", json.dumps([service]))
    host.on(r"^ls -1 /srv/jupyterhub/backups", "")
    host.on(NO_USAGE, "cat: no such file\n", 1)
    status = read_status(host, settings, plan)
    assert status.servers == [
        Server(
            user="dora",
            name="gpu",
            container="hubops-sw-user-dora--gpu",
            state="service",
            started=ALICE_STARTED,
            last_activity="2024-05-02 12:00:00.000001",
            gpus="NVIDIA-GPU:1",
        )
    ]
    assert not host.sent(r"^docker ps "), "a swarm's servers are services, not local containers"
    assert_read_only(host)


def test_the_health_probe_asks_under_the_public_url_path(checkout: Checkout) -> None:
    """A hub served under a path (public_url http://host/jupyter) has its health endpoint at
    /jupyter/hub/health; the status probe must ask there."""
    plan, settings = planned(
        checkout, "pre", "extends: local.yaml\npublic_url: http://127.0.0.1:8000/jupyter\n"
    )
    host = root_host()
    host.on(r"^docker container inspect hubops-pre-hub$", json.dumps([hub_container("pre")]))
    host.on(r"^docker exec hubops-pre-hub ", probe(200, 0, []))
    host.on(r"^docker ps --all --quiet ", "")
    host.on(r"^ls -1 /srv/jupyterhub/backups", "")
    host.on(NO_USAGE, "cat: no such file\n", 1)
    read_status(host, settings, plan)
    [probe_command] = host.sent(r"^docker exec ")
    assert "127.0.0.1:8081/jupyter/hub/health" in probe_command


@pytest.mark.parametrize(
    ("role", "user", "follow", "tail", "expected"),
    [
        ("hub", None, False, 200, "docker logs --timestamps --tail 200 hubops-local-hub"),
        ("proxy", None, True, 5, "docker logs --timestamps --tail 5 --follow hubops-local-proxy"),
        # --user wins over the (default) role; the name is DockerSpawner's escaped one
        ("hub", "alice", False, 50, "docker logs --timestamps --tail 50 hubops-local-user-alice"),
        (
            "hub",
            "Alice.Smith",
            True,
            10,
            "docker logs --timestamps --tail 10 --follow hubops-local-user--41lice-2e-53mith",
        ),
    ],
)
def test_logs_command_of_the_hub_the_proxy_and_a_user(
    local: tuple[Plan, Environment],
    role: str,
    user: str | None,
    follow: bool,
    tail: int,
    expected: str,
) -> None:
    """`invoke logs`: docker logs of the hub's or the proxy's container, or of a user's
    server, with timestamps, the last ``tail`` lines, and --follow when asked."""
    plan, settings = local
    assert logs_command(settings, plan, role, user, follow, tail) == expected


def test_logs_of_a_user_on_a_swarm_are_the_service_logs(checkout: Checkout) -> None:
    """cluster swarm: a user's server is a service, so its logs come from docker service
    logs; the hub's are still its container's."""
    plan, settings = planned(
        checkout, "sw", "extends: local.yaml\ncluster: swarm\nnetwork:\n  isolation: false\n"
    )
    assert (
        logs_command(settings, plan, "hub", "bob", True, 100)
        == "docker service logs --timestamps --tail 100 --follow hubops-sw-user-bob"
    )
    assert (
        logs_command(settings, plan, "hub", None, False, 100)
        == "docker logs --timestamps --tail 100 hubops-sw-hub"
    )


def test_logs_of_an_unknown_role_is_one_clear_error(local: tuple[Plan, Environment]) -> None:
    """A role other than hub or proxy (without --user) is refused with one line saying what is
    accepted."""
    plan, settings = local
    with pytest.raises(HubopsError) as raised:
        logs_command(settings, plan, "singleuser", None, False, 200)
    assert str(raised.value) == (
        "logs: --role is hub or proxy, got 'singleuser' (or give --user NAME)"
    )
