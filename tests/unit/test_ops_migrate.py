"""``invoke swarm.migrate`` (hubops.ops.migrate) on a scripted host, no Docker, no SSH: what it
decides before anything changes. A move it refuses is one line that ends "Nothing was changed.",
and the host saw only questions; a move that fails after the old lab stopped puts it back.

The environments are the lab example (a GPU server over SSH, a deploy user in the docker group,
whose root file work runs in a helper container) and its swarm twin on the same host.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

import pytest
from pydantic import SecretStr

from hubops.config import environments
from hubops.config.settings import Environment
from hubops.deploy.steps import Step
from hubops.errors import CommandError, DeployError
from hubops.host.base import Host
from hubops.ops import migrate as migrate_module
from hubops.ops.migrate import Side, migrate
from hubops.plan.render import render
from tests.support.checkout import Checkout
from tests.support.scripted_host import ScriptedHost, container

REVS = {"proxy": "r1", "hub": "r1", "singleuser": "r1", "base": "r1"}
HOST = "gpu01.lab.example.org"
HUB_IMAGE = "registry.lab.example.org:5000/hubops/hub:r1"
NOTHING = ". Nothing was changed."
THERE = (0, "")  # the root helper's answer: done, or the path is there
# what the move may ask the host before it changes anything; the root helper's own commands
# (``docker run ... chroot /host /bin/sh -c CMD``) are judged by CMD
QUESTIONS = [
    r"^id -un; id -u$",
    r"^docker version --format ",
    r"^docker (container|image) inspect ",
    r"^docker info --format ",
    r"^docker node (ls|inspect) ",
    r"^test -[es] ",
    r"^ls -d ",
]
SWARM_TWIN = (
    "extends: lab.yaml\n"
    "cluster: swarm\n"
    "gpu:\n  pool: []\n  idle_timeout: null\n"  # the swarm hands out what nodes advertise
    "network:\n  isolation: false\n"
    "paths:\n  data_dir: /srv/jupyterhub-swarm\n  user_data_dir: /srv/jupyterhub-swarm-users\n"
)


def side(checkout: Checkout, name: str, as_name: str | None = None) -> Side:
    """Environment ``name`` as the task hands it over (``as_name``: under another name)."""
    env = environments.load(checkout.root, name)
    return Side(as_name or name, env.settings, render(checkout.root, env, REVS).plan)


def gpu_node(kind: str = "gpu") -> dict[str, Any]:
    """The host as a swarm node: a ready manager that advertises its 4 GPUs as ``kind``."""
    return {
        "ID": "k3x9node0001",
        "Description": {
            "Hostname": HOST,
            "Resources": {
                "GenericResources": [
                    {"NamedResourceSpec": {"Kind": kind, "Value": f"GPU-{i}0000000-aaaa"}}
                    for i in range(4)
                ]
            },
        },
        "Spec": {"Role": "manager", "Availability": "active"},
        "Status": {"State": "ready", "Addr": "10.1.0.10"},
    }


def lab_host(
    swarm: dict[str, Any] | None = None,
    node: dict[str, Any] | None = None,
    files: dict[str, tuple[int, str]] | None = None,
) -> ScriptedHost:
    """The GPU server, reached as ``hubops`` (docker group, not root), the old lab's hub
    running, the engine a swarm manager (``swarm``: its Swarm info instead), the host a node
    (``node``: as it is described). ``files``: the root helper's answers, pattern -> (exit
    code, stdout); any other file question answers 1 (nothing there)."""
    swarm = {"LocalNodeState": "active", "ControlAvailable": True} if swarm is None else swarm
    host = ScriptedHost(name=HOST)
    host.on(r"^id -un; id -u$", "hubops\n1001\n")
    host.on(r"^docker version --format ", "1.47\n")
    host.on(
        r"^docker container inspect hubops-lab-hub$",
        json.dumps([container("hubops-lab-hub", image=HUB_IMAGE, Image=f"sha256:{'7f' * 32}")]),
    )
    host.on(r"^docker container inspect ", "Error: No such object", 1)  # no other hub runs
    host.on(rf"^docker image inspect --format x {re.escape(HUB_IMAGE)}$", "x\n")
    host.on(r"^docker info --format ", json.dumps(swarm) + "\n")
    host.on(r"^docker node ls --quiet$", "k3x9node0001\n")
    host.on(r"^docker node inspect k3x9node0001$", json.dumps([node or gpu_node()]))
    answers = files or {}

    def as_root(command: str, _stdin: str | None) -> tuple[int, str]:
        inner = shlex.split(command)[-1]
        for pattern, answer in answers.items():
            if re.search(pattern, inner):
                return answer
        if re.match(r"(test -[es]|ls -d) ", inner):
            return 1, ""
        raise AssertionError(f"the root helper has no answer for: {inner}")

    host.on(r"--entrypoint chroot \S+ /host /bin/sh -c ", answer=as_root)
    return host


def helper_commands(host: ScriptedHost) -> list[str]:
    """Every command as the host runs it: a root helper's by the command it wraps."""
    return [shlex.split(c)[-1] if "--entrypoint chroot " in c else c for c in host.commands]


def changes(host: ScriptedHost) -> list[str]:
    """The commands sent that are no question."""
    return [c for c in helper_commands(host) if not any(re.search(q, c) for q in QUESTIONS)]


def refusal(host: Host, old: Side, new: Side) -> str:
    """The move's one-line refusal."""

    def no_images(_host: Host, _refs: list[str]) -> None:
        raise AssertionError("a refused move fetches no image")

    with pytest.raises(DeployError) as refused:
        migrate(host, old, new, "c.JupyterHub.log_level = 'INFO'\n", {}, no_images)
    message = str(refused.value)
    assert "\n" not in message, message
    return message


@pytest.fixture
def lab(checkout: Checkout) -> Side:
    """The lab example as it runs: one GPU server, cluster docker."""
    return side(checkout, "lab")


@pytest.fixture
def twin(checkout: Checkout) -> Side:
    """The lab's swarm twin: the same host and engine, its own data places."""
    checkout.write_env("lab-swarm", SWARM_TWIN)
    return side(checkout, "lab-swarm")


def test_a_move_between_the_wrong_clusters_is_refused(
    checkout: Checkout, lab: Side, twin: Side
) -> None:
    """The new environment must be a swarm and the old one a single host; each mix-up is named
    with the setting that fixes it, before the host is asked about its swarm."""
    checkout.write_env("lab-copy", "extends: lab.yaml\npaths:\n  data_dir: /srv/lab-copy\n")
    copy = side(checkout, "lab-copy")
    checkout.write_env("lab-swarm-2", SWARM_TWIN.replace("-swarm", "-swarm-2"))
    other_swarm = side(checkout, "lab-swarm-2")

    host = lab_host()
    assert refusal(host, lab, copy) == (
        "lab-copy has cluster docker; set cluster: swarm in its file" + NOTHING
    )
    assert refusal(host, twin, other_swarm) == (
        "lab-swarm has cluster swarm; it moves from cluster docker" + NOTHING
    )
    assert host.sent(r"^docker (info|node)") == []
    assert changes(host) == []


def test_one_environment_under_one_name_is_refused(checkout: Checkout, lab: Side) -> None:
    """The old and the new environment are two files: a swarm file under the old one's name is
    refused (the move would deploy over the lab it moves)."""
    checkout.write_env("lab-swarm", SWARM_TWIN)
    same_name = side(checkout, "lab-swarm", as_name="lab")
    host = lab_host()

    assert refusal(host, lab, same_name) == (
        "the old and the new environment must be two files (two names)" + NOTHING
    )
    assert changes(host) == []


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ssh.host", "gpu02.lab.example.org"),
        ("ssh.port", 2222),
        ("paths.docker_socket", "/run/docker-rootless/docker.sock"),
    ],
    ids=["another-host", "another-ssh-port", "another-engine"],
)
def test_a_move_to_another_host_or_engine_is_refused(
    checkout: Checkout, lab: Side, key: str, value: object
) -> None:
    """The move is on one host, which becomes the swarm's first manager: a new environment
    reached elsewhere (ssh host or port) or through another engine (paths.docker_socket) is
    refused with the settings to copy, before the host is asked about its swarm."""
    checkout.write_env("lab-swarm", SWARM_TWIN)
    checkout.set_setting("lab-swarm", key, value)
    new = side(checkout, "lab-swarm")
    host = lab_host()

    assert refusal(host, lab, new) == (
        "lab and lab-swarm are on different hosts or engines (ssh, paths.docker_socket); the "
        "move is on one host, which becomes the swarm's first manager: give lab-swarm the ssh "
        "and paths.docker_socket of lab" + NOTHING
    )
    assert host.sent(r"^docker (info|node)") == []
    assert changes(host) == []


@pytest.mark.parametrize(
    ("swarm", "says"),
    [
        (
            {"LocalNodeState": "inactive", "ControlAvailable": False},
            f"cluster is swarm, but {HOST}'s Docker engine is in no swarm "
            "(Swarm.LocalNodeState 'inactive'); run `docker swarm init` there",
        ),
        (
            {"LocalNodeState": "active", "ControlAvailable": False},
            f"cluster is swarm, but {HOST} is a swarm worker, not a manager",
        ),
    ],
    ids=["no-swarm", "worker"],
)
def test_a_host_that_is_no_swarm_manager_is_refused(
    lab: Side, twin: Side, swarm: dict[str, Any], says: str
) -> None:
    """The host must already be a swarm manager (the move does not init a swarm): an engine in
    no swarm, or a worker, is refused with what to run."""
    host = lab_host(swarm=swarm)

    message = refusal(host, lab, twin)

    assert message.startswith(says), message
    assert message.endswith(NOTHING)
    assert host.sent(r"test -e|ls -d") == [], "the data places are not looked at"
    assert changes(host) == []


def test_a_gpu_kind_no_node_advertises_is_refused(lab: Side, twin: Side) -> None:
    """The lab's GPU profiles reserve GPUs of kind "gpu"; a swarm whose nodes advertise their
    GPUs under another kind could never start them, so the move is refused naming the profile
    and the kinds that are advertised."""
    host = lab_host(node=gpu_node(kind="a100"))

    message = refusal(host, lab, twin)

    assert message.startswith(
        "singleuser.profiles.0.gpu_kind is 'gpu', which no node of the swarm advertises "
        "(advertised kinds: a100); "
    ), message
    assert message.endswith(NOTHING)
    assert changes(host) == []


def test_a_new_data_dir_with_a_hub_db_of_its_own_is_refused(lab: Side, twin: Side) -> None:
    """The new data_dir must not hold a hub DB, which the move would overwrite; the check looks
    in the root-owned place through the root helper (the deploy user is not root)."""
    host = lab_host(files={r"^test -e /srv/jupyterhub-swarm/jupyterhub\.sqlite$": THERE})

    assert refusal(host, lab, twin) == (
        "/srv/jupyterhub-swarm/jupyterhub.sqlite exists: lab-swarm has a hub DB of its own, "
        "which the move would overwrite; point paths.data_dir of lab-swarm at an empty place"
        + NOTHING
    )
    assert "test -e /srv/jupyterhub-swarm/jupyterhub.sqlite" in helper_commands(host)
    assert changes(host) == []


def test_a_new_user_data_dir_with_users_directories_is_refused(lab: Side, twin: Side) -> None:
    """The new user_data_dir must hold no users' directories (they would mix with the ones
    copied over); the line offers keeping them where they are."""
    host = lab_host(files={r"^ls -d /srv/jupyterhub-swarm-users/jupyterhub-user-\* ": THERE})

    assert refusal(host, lab, twin) == (
        "/srv/jupyterhub-swarm-users holds users' directories already; point "
        "paths.user_data_dir of lab-swarm at an empty place (or at /srv/jupyterhub-users to "
        "keep them there)" + NOTHING
    )
    assert changes(host) == []


def test_a_move_whose_deploy_fails_puts_the_old_lab_back(
    lab: Side, twin: Side, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the new deploy fails after the old lab stopped, the new environment's containers
    are removed, what was copied is deleted (the old DB, cookie secret and user directories are
    not touched) and the old containers start again; the deploy's error comes through."""
    backed_up: list[str] = []

    def fake_backup(
        _host: Host,
        settings: Environment,
        hub_image: str,
        hub_container: str | None = None,
        files: Host | None = None,
    ) -> str:
        backed_up.append(f"{settings.paths.data_dir} {hub_container}")
        return "20250615-150640"

    def failing_deploy(*_args: object, **_kwargs: object) -> None:
        raise DeployError("hubops-lab-swarm-hub did not become healthy within 120 s")

    monkeypatch.setattr(migrate_module, "backup", fake_backup)
    monkeypatch.setattr(migrate_module, "deploy", failing_deploy)
    host = lab_host(
        files={
            r"^test -[es] /srv/jupyterhub/jupyterhub(\.sqlite|_cookie_secret)$": THERE,
            r"^cd /srv/jupyterhub-users 2>/dev/null && ls -d jupyterhub-user-\* \|\| true$": (
                0,
                "jupyterhub-user-alice\n",
            ),
            r"^install -d ": THERE,
            r"^cp -a ": THERE,
            r"^rm -rf -- ": THERE,
        }
    )
    host.on(
        r"^docker ps --filter label=org\.hubops\.environment=lab --format ",
        "hubops-lab-proxy proxy\nhubops-lab-hub hub\nhubops-lab-user-alice user\n",
    )
    host.on(r"^docker stop --time 10 ", "")
    host.on(r"^docker service ls --quiet --filter label=org\.hubops\.environment=lab-swarm$", "")
    host.on(
        r"^docker ps --all --filter label=org\.hubops\.environment=lab-swarm --format ",
        "hubops-lab-swarm-hub hub\nhubops-lab-swarm-proxy proxy\n",
    )
    host.on(r"^docker rm --force ", "")
    host.on(r"^docker start ", "")
    said: list[str] = []

    with pytest.raises(DeployError, match="did not become healthy"):
        migrate(
            host,
            lab,
            twin,
            "c.JupyterHub.log_level = 'INFO'\n",
            {"oauth_client_secret": SecretStr("s" * 40)},
            lambda _host, _refs: None,
            progress=lambda step, line: said.append(f"{step.value} {line}"),
        )

    assert backed_up == ["/srv/jupyterhub hubops-lab-hub"], "the old hub was backed up first"
    old = "hubops-lab-proxy hubops-lab-hub hubops-lab-user-alice"
    assert host.sent(r"^docker stop ") == [f"docker stop --time 10 {old}"]
    assert host.sent(r"^docker rm ") == [
        "docker rm --force hubops-lab-swarm-hub hubops-lab-swarm-proxy"
    ], "only the new environment's containers are removed"
    (removed,) = [c for c in helper_commands(host) if c.startswith("rm -rf")]
    assert shlex.split(removed)[3:] == [
        "/srv/jupyterhub-swarm/jupyterhub.sqlite",
        "/srv/jupyterhub-swarm/jupyterhub_cookie_secret",
        "/srv/jupyterhub-swarm-users/jupyterhub-user-alice",
    ]
    assert host.sent(r"^docker start ") == [f"docker start {old}"]
    assert host.commands.index(host.sent(r"^docker start ")[0]) == len(host.commands) - 1, (
        "the old lab starts last, once the new one is gone"
    )
    assert host.sent(r"^docker network rm") == [], "the old network stays"
    assert f"{Step.MIGRATE.value} the move failed: removing lab-swarm, starting lab again" in said


def test_a_stop_that_fails_halfway_starts_the_old_lab_again(
    lab: Side, twin: Side, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`docker stop` of the old lab fails after stopping some of its containers (a container
    that does not stop in time): the old containers start again and nothing was copied."""
    monkeypatch.setattr(migrate_module, "backup", lambda *_a, **_k: "20250615-150640")
    host = lab_host(
        files={r"^test -[es] /srv/jupyterhub/jupyterhub(\.sqlite|_cookie_secret)$": THERE}
    )
    host.on(
        r"^docker ps --filter label=org\.hubops\.environment=lab --format ",
        "hubops-lab-proxy proxy\nhubops-lab-hub hub\n",
    )
    host.on(r"^docker stop --time 10 ", "Error response from daemon: cannot stop container", 1)
    host.on(r"^docker service ls --quiet --filter label=org\.hubops\.environment=lab-swarm$", "")
    host.on(r"^docker ps --all --filter label=org\.hubops\.environment=lab-swarm --format ", "")
    host.on(r"^docker start ", "")

    with pytest.raises(CommandError, match="cannot stop container"):
        migrate(
            host,
            lab,
            twin,
            "c.JupyterHub.log_level = 'INFO'\n",
            {"oauth_client_secret": SecretStr("s" * 40)},
            lambda _host, _refs: None,
        )

    assert host.sent(r"^docker start ") == ["docker start hubops-lab-proxy hubops-lab-hub"]
    assert not [c for c in helper_commands(host) if c.startswith(("cp ", "install "))]
