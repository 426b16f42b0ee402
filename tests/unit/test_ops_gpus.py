"""``invoke gpus`` (hubops.ops.gpus) on a scripted host, no Docker: who holds which GPU (user
containers' labels, or a swarm's tasks), what the GPUs do (the hub's GPU monitor's view, else one
probe sample), and the table and lines the operator reads.

The views are made by the monitor's own code (hubops_hub.gpumon.view) from NVML samples, the
same JSON that ``python3 -m hubops_hub.gpumon --print`` (or ``--once``) prints in the hub.
"""

from __future__ import annotations

import json
import shlex
from datetime import datetime, timezone
from typing import Any

import pytest
from hubops_hub.gpumon import Holder, Tracker, holder_from_labels, view
from hubops_hub.gpus import Policy
from hubops_hub.labels import (
    LABEL_ENV,
    LABEL_GPUS,
    LABEL_IMAGE,
    LABEL_ROLE,
    LABEL_SERVER,
    LABEL_STARTED,
    LABEL_USER,
)
from hubops_hub.nvml import App, GPUState, Sample, parse_list

from hubops.config import environments
from hubops.config.settings import Environment, GPUSettings
from hubops.errors import HubopsError
from hubops.ops.gpus import (
    GPU_COLUMNS,
    GPUHolder,
    holders,
    parse_since,
    probe_once,
    read_view,
    report,
    swarm_holders,
    usage_rows,
)
from hubops.plan.hub_config import gpu_policy
from tests.support.checkout import Checkout
from tests.support.scripted_host import ScriptedHost, container

NOW = 1_750_000_000  # Sun 15 Jun 2025 15:06:40 UTC
GPU0 = "GPU-9c1f2a4e-1b7d-4a51-9f0e-3d2b1c0a9e8f"
GPU1 = "GPU-0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9"
GPU2 = "GPU-5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9"
GPU3 = "GPU-d1e2f3a4-b5c6-4d7e-8f90-a1b2c3d4e5f6"
USER_IMAGE = "registry.lab.example.org:5000/hubops/pytorch:r7"
HUB_IMAGE = "registry.lab.example.org:5000/hubops/hub:r7"
EXCLUSIVE = GPUSettings(policy="exclusive", pool=["0", "1", "2", "3"])
MONITOR_SILENT = "idle: ? (the hub's GPU monitor, hubops-gpus, does not answer)"


def user_container(
    user: str, gpus: str, started: int, server: str = "", running: bool = True
) -> dict[str, Any]:
    """A user container of environment ``lab`` as the spawner labels it."""
    name = f"hubops-lab-user-{user}" + (f"-{server}" if server else "")
    labels = {
        LABEL_ENV: "lab",
        LABEL_ROLE: "user",
        LABEL_USER: user,
        LABEL_SERVER: server,
        LABEL_IMAGE: USER_IMAGE,
        LABEL_STARTED: str(started),
    }
    if gpus:
        labels[LABEL_GPUS] = gpus
    return container(name, running=running, image=USER_IMAGE, labels=labels)


def lab_host(*containers: dict[str, Any]) -> ScriptedHost:
    """A host whose engine lists ``containers`` for ``invoke gpus --env lab``."""
    host = ScriptedHost()
    by_id = {str(c["Id"]): c for c in containers}
    listed = " ".join(by_id)
    host.on(
        r"^docker ps --all --quiet --filter label=org\.hubops\.environment=lab "
        r"--filter label=org\.hubops\.gpus$",
        "\n".join(by_id) + "\n" if listed else "",
    )
    host.on(
        r"^docker inspect ",
        answer=lambda command, _stdin: json.dumps([by_id[i] for i in command.split()[2:]]),
    )
    return host


def h200s(utilization: list[int], memory: list[int]) -> list[GPUState]:
    uuids = [GPU0, GPU1, GPU2, GPU3][: len(utilization)]
    return [
        GPUState(str(i), uuid, "NVIDIA H200", util, used, 143771)
        for i, (uuid, util, used) in enumerate(zip(uuids, utilization, memory, strict=True))
    ]


def h200_devices(count: int) -> str:
    uuids = [GPU0, GPU1, GPU2, GPU3][:count]
    return "".join(f"GPU {i}: NVIDIA H200 (UUID: {u})\n" for i, u in enumerate(uuids))


def monitor_holders(*containers: dict[str, Any]) -> list[Holder]:
    """The holders the monitor reads from the same containers (running ones)."""
    out = []
    for c in containers:
        h = holder_from_labels(str(c["Id"]), c["Config"]["Labels"])
        if h is not None and c["State"]["Running"]:
            out.append(h)
    return out


# two users on a 4-GPU lab: alice computes on GPU 0, bob's GPU 2 holds memory and idles; a
# transcoder that is no user server runs on GPU 3
ALICE = user_container("alice", "0", NOW - 2 * 3600)
BOB = user_container("bob", "2", NOW - 3 * 3600, server="big")
LAB_SAMPLE = Sample(
    at=NOW - 90,
    gpus=h200s([87, 0, 3, 41], [40211, 1, 20480, 900]),
    apps=[
        App(GPU0, 41873, 40198, "/opt/venv/bin/python3", str(ALICE["Id"])),
        App(GPU2, 5120, 20470, "python", str(BOB["Id"])),
        App(GPU3, 777, 890, "/usr/bin/ffmpeg", None),
    ],
    devices=parse_list(h200_devices(4)),
)


def monitor_view(sample: Sample, *containers: dict[str, Any], policy: Policy) -> dict[str, Any]:
    """The running monitor's view, now, after it took ``sample`` (running since 5 h)."""
    held = monitor_holders(*containers)
    tracker = Tracker(busy=5, since=NOW - 5 * 3600)
    tracker.update(sample, held)
    return view(sample, held, tracker, policy, now=NOW)


def once_view(sample: Sample, *containers: dict[str, Any], policy: Policy) -> dict[str, Any]:
    """What ``gpumon --once`` prints: one sample, a monitor that started with it."""
    held = monitor_holders(*containers)
    tracker = Tracker(busy=5, since=sample.at)
    tracker.update(sample, held)
    return {**view(sample, held, tracker, policy, now=sample.at + 2), "once": True}


@pytest.fixture
def lab(checkout: Checkout) -> Environment:
    """The lab example (GPU policy exclusive, pool 0-3) with its own busy threshold and socket."""
    checkout.set_setting("lab", "paths.docker_socket", "/run/docker-lab/docker.sock")
    checkout.set_setting("lab", "gpu.busy_utilization", 10)
    settings = environments.load(checkout.root, "lab").settings
    assert (settings.gpu.policy, settings.gpu.pool) == ("exclusive", ["0", "1", "2", "3"])
    return settings


# --- who holds which GPU ---------------------------------------------------------------------


def test_holders_come_from_the_gpu_labels_oldest_first() -> None:
    """Each user container with a GPU label is one holder, oldest first: its user, server
    ("(default)" for the unnamed one), GPU IDs, start, image, state and container name; a
    container whose GPU label is empty holds nothing."""
    carol = user_container("carol", "1,3", NOW - 600, server="train", running=False)
    dave = user_container("dave", "", NOW - 9000)
    dave["Config"]["Labels"][LABEL_GPUS] = ""
    host = lab_host(ALICE, carol, BOB, dave)

    found = holders(host, "lab")

    assert [(h.user, h.server, h.gpus) for h in found] == [
        ("bob", "big", ("2",)),
        ("alice", "(default)", ("0",)),
        ("carol", "train", ("1", "3")),
    ]
    assert found[0].since == datetime(2025, 6, 15, 12, 6, 40, tzinfo=timezone.utc)
    assert [h.container for h in found] == [
        "hubops-lab-user-bob-big",
        "hubops-lab-user-alice",
        "hubops-lab-user-carol-train",
    ]
    assert [h.state for h in found] == ["running", "running", "exited"]
    assert {h.image for h in found} == {USER_IMAGE}


def test_no_gpu_container_means_no_holder_and_no_inspect() -> None:
    """An environment where no container holds a GPU lists none, and asks the engine once."""
    host = lab_host()
    assert holders(host, "lab") == []
    assert host.sent(r"^docker inspect") == []


def test_swarm_holders_come_from_the_running_tasks_with_their_nodes() -> None:
    """On a swarm, each running task of a GPU service is a holder: the GPUs the swarm assigned
    it, the node's hostname (its ID where the node is unknown), its image and state; a service
    without a running task holds nothing; the oldest comes first, an unknown start before it."""
    services: dict[str, dict[str, str]] = {
        "svc-alice": {"user": "alice", "server": "", "started": str(NOW - 3600)},
        "svc-bob": {"user": "bob", "server": "big", "started": ""},
        "svc-carol": {"user": "carol", "server": "", "started": str(NOW - 60)},
    }
    tasks: dict[str, dict[str, Any]] = {
        "svc-alice": {"ID": "t-a", "node": "n-gpu1", "gpus": [GPU0, GPU1]},
        "svc-bob": {"ID": "t-b", "node": "n-gone", "gpus": [GPU2]},
    }

    def service_json(sid: str) -> dict[str, Any]:
        s = services[sid]
        labels = {LABEL_ENV: "lab", LABEL_USER: s["user"], LABEL_GPUS: "gpu:1"}
        labels |= {LABEL_SERVER: s["server"]} if s["server"] else {}
        labels |= {LABEL_STARTED: s["started"]} if s["started"] else {}
        return {"ID": sid, "Spec": {"Name": f"hubops-lab-user-{s['user']}", "Labels": labels}}

    def task_json(sid: str) -> dict[str, Any]:
        t = tasks[sid]
        return {
            "ID": t["ID"],
            "ServiceID": sid,
            "NodeID": t["node"],
            "Spec": {"ContainerSpec": {"Image": f"{USER_IMAGE}@sha256:{'ab' * 32}"}},
            "Status": {"State": "running"},
            "DesiredState": "running",
            "GenericResources": [
                {"NamedResourceSpec": {"Kind": "gpu", "Value": g}} for g in t["gpus"]
            ],
        }

    node = {
        "ID": "n-gpu1",
        "Description": {"Hostname": "gpu01"},
        "Spec": {"Role": "worker", "Availability": "active"},
        "Status": {"State": "ready", "Addr": "10.1.0.11"},
    }
    host = ScriptedHost()
    host.on(
        r"^docker service ls --quiet --filter label=org\.hubops\.environment=lab "
        r"--filter label=org\.hubops\.gpus$",
        "svc-alice\nsvc-bob\nsvc-carol\n",
    )
    host.on(r"^docker node ls --quiet$", "n-gpu1\n")
    host.on(r"^docker node inspect n-gpu1$", json.dumps([node]))
    host.on(
        r"^docker service inspect ",
        answer=lambda c, _: json.dumps([service_json(s) for s in c.split()[3:]]),
    )
    host.on(
        r"^docker service ps --quiet --filter desired-state=running ",
        answer=lambda c, _: tasks[c.split()[-1]]["ID"] + "\n" if c.split()[-1] in tasks else "",
    )
    by_task = {t["ID"]: sid for sid, t in tasks.items()}
    host.on(
        r"^docker inspect ",
        answer=lambda c, _: json.dumps([task_json(by_task[t]) for t in c.split()[2:]]),
    )
    found = swarm_holders(host, "lab")

    assert found == [
        GPUHolder(
            user="bob",
            server="big",
            gpus=(GPU2,),
            since=None,
            image=f"{USER_IMAGE}@sha256:{'ab' * 32}",
            state="running",
            node="n-gone",
        ),
        GPUHolder(
            user="alice",
            server="(default)",
            gpus=(GPU0, GPU1),
            since=datetime(2025, 6, 15, 14, 6, 40, tzinfo=timezone.utc),
            image=f"{USER_IMAGE}@sha256:{'ab' * 32}",
            state="running",
            node="gpu01",
        ),
    ]
    assert host.sent(r"^docker inspect") == ["docker inspect t-a", "docker inspect t-b"], (
        "carol's service has no running task to inspect"
    )


# --- what the GPUs do: the monitor's view, else one sample -------------------------------------


def test_the_running_monitor_s_view_is_read_and_nothing_is_probed(lab: Environment) -> None:
    """Where the hub's GPU monitor answers, its view is what `invoke gpus` shows: no probe
    runs, the hub container is not even inspected."""
    state = monitor_view(LAB_SAMPLE, ALICE, BOB, policy=Policy("exclusive", ("0", "1", "2", "3")))
    host = ScriptedHost().on(
        r"^docker exec hubops-lab-hub python3 -m hubops_hub\.gpumon --print$", json.dumps(state)
    )

    assert read_view(host, "lab", lab) == state
    assert len(host.commands) == 1


def test_a_silent_monitor_gives_one_sample_taken_in_the_running_hub(lab: Environment) -> None:
    """Where the monitor does not answer and the hub runs, one sample is taken in the hub
    container by the monitor's module, with the environment's name, the hub's own image, the
    busy threshold and the spawner's GPU policy."""
    once = once_view(LAB_SAMPLE, ALICE, BOB, policy=Policy("exclusive", ("0", "1", "2", "3")))
    host = ScriptedHost()
    host.on(r"gpumon --print$", "", 1)
    host.on(
        r"^docker container inspect hubops-lab-hub$",
        json.dumps([container("hubops-lab-hub", image=HUB_IMAGE)]),
    )
    host.on(r"^docker exec hubops-lab-hub python3 -m hubops_hub\.gpumon --once ", json.dumps(once))

    got = read_view(host, "lab", lab)

    assert got == once
    (probe,) = host.sent(r"--once")
    args = shlex.split(probe)
    assert args[:7] == [
        "docker",
        "exec",
        "hubops-lab-hub",
        "python3",
        "-m",
        "hubops_hub.gpumon",
        "--once",
    ]
    assert args[7:10] == ["--environment=lab", f"--image={HUB_IMAGE}", "--busy=10"]
    assert json.loads(args[10].removeprefix("--policy=")) == {
        "name": "exclusive",
        "pool": ["0", "1", "2", "3"],
        "max_per_gpu": 2,
        "pinned_users": {},
        "pinned_groups": {},
    }
    assert host.sent(r"^docker run") == [], "the hub runs: no one-off container"


def test_a_stopped_hub_is_probed_by_a_one_off_container_of_its_image(lab: Environment) -> None:
    """Where the hub container exists but is stopped, the sample comes from a one-off
    container of the hub's image, with no network and the engine's socket of paths.docker_socket
    mounted where the module looks for it; no `docker exec` into the stopped hub."""
    once = once_view(LAB_SAMPLE, ALICE, policy=Policy("exclusive", ("0", "1", "2", "3")))
    host = ScriptedHost()
    host.on(
        r"^docker container inspect hubops-lab-hub$",
        json.dumps([container("hubops-lab-hub", running=False, image=HUB_IMAGE)]),
    )
    host.on(r"^docker run --rm ", json.dumps(once))

    assert probe_once(host, "lab", lab) == once
    (run,) = host.sent(r"^docker run")
    args = shlex.split(run)
    module = args.index("python3")
    assert args[:module] == [
        "docker",
        "run",
        "--rm",
        "--network=none",
        "--mount",
        "type=bind,source=/run/docker-lab/docker.sock,target=/var/run/docker.sock",
        HUB_IMAGE,
    ]
    assert args[module : module + 4] == ["python3", "-m", "hubops_hub.gpumon", "--once"]
    assert f"--policy={json.dumps(gpu_policy(lab), sort_keys=True)}" in args
    assert host.sent(r"^docker exec") == []


def test_no_hub_means_no_view(lab: Environment) -> None:
    """Without a monitor and without a hub container there is nothing to ask: None, and no
    probe is started."""
    host = ScriptedHost()
    host.on(r"gpumon --print$", "Error response from daemon: No such container", 1)
    host.on(r"^docker container inspect hubops-lab-hub$", "Error: No such object", 1)

    assert read_view(host, "lab", lab) is None
    assert host.sent(r"^docker (run|exec .*--once)") == []


# --- the table and the lines under it ----------------------------------------------------------


def test_the_table_from_the_monitor_s_view() -> None:
    """With the monitor's view each holder's row shows its GPUs' use and memory, its processes
    by PID and container, how long it has been idle and since when it runs; under the table: a
    process outside the user servers, and the free GPUs by model as the spawn form counts them."""
    state = monitor_view(LAB_SAMPLE, ALICE, BOB, policy=Policy("exclusive", ("0", "1", "2", "3")))
    found = holders(lab_host(ALICE, BOB), "lab")

    out = report(found, state, EXCLUSIVE)

    assert len(GPU_COLUMNS) == len(out.rows[0])
    assert out.rows == [
        (
            "bob",
            "big",
            "2",
            "3%",
            "20480 MiB",
            "5120 (hubops-lab-user-bob-big)",
            "3.0 h",  # 3 % is under the busy 5 %: idle since it started, 3 h ago
            "2025-06-15 12:06 UTC",
            USER_IMAGE,
        ),
        (
            "alice",
            "(default)",
            "0",
            "87%",
            "40211 MiB",
            "41873 (hubops-lab-user-alice)",
            "90 s",  # busy at the sample, 90 s ago
            "2025-06-15 13:06 UTC",
            USER_IMAGE,
        ),
    ]
    assert out.notes == [
        f"GPU {GPU3}: pid 777 (/usr/bin/ffmpeg) runs outside hubops' user servers",
        "2 of 4 GPUs free",
        "  NVIDIA H200: GPU 1, GPU 3",
    ]


def test_one_sample_shows_idle_as_unknown_and_says_the_monitor_is_silent() -> None:
    """With one sample (``once``) the idle times are unknown ("?"), a line says the monitor
    does not answer, and the free GPUs are the sample's pool, as the monitor counts them."""
    found = holders(lab_host(ALICE, BOB), "lab")
    sample = once_view(LAB_SAMPLE, ALICE, BOB, policy=Policy("exclusive", ("0", "1", "2", "3")))

    out = report(found, sample, EXCLUSIVE)

    assert [(r[0], r[3], r[5], r[6]) for r in out.rows] == [
        ("bob", "3%", "5120 (hubops-lab-user-bob-big)", "?"),
        ("alice", "87%", "41873 (hubops-lab-user-alice)", "?"),
    ]
    assert out.notes == [
        MONITOR_SILENT,
        f"GPU {GPU3}: pid 777 (/usr/bin/ffmpeg) runs outside hubops' user servers",
        "2 of 4 GPUs free",
        "  NVIDIA H200: GPU 1, GPU 3",
    ]


def test_a_failed_probe_is_one_line_under_a_table_without_numbers(lab: Environment) -> None:
    """A probe that fails (no NVML in the probe container) leaves use, memory and processes
    unknown in the rows, and says why under the table, with the last of what the probe said."""
    host = lab_host(ALICE)
    host.on(r"gpumon --print$", "", 1)
    host.on(
        r"^docker container inspect hubops-lab-hub$",
        json.dumps([container("hubops-lab-hub", image=HUB_IMAGE)]),
    )
    host.on(
        r"gpumon --once ",
        "hubops GPU probe: nvidia-smi --query-gpu: NVIDIA-SMI has failed because it couldn't "
        "communicate with the NVIDIA driver\n",
        1,
    )
    found = holders(host, "lab")
    state = read_view(host, "lab", lab)
    assert state is not None

    out = report(found, state, lab.gpu)

    assert out.rows == [
        ("alice", "(default)", "0", "-", "-", "-", "?", "2025-06-15 13:06 UTC", USER_IMAGE)
    ]
    assert out.notes == [
        MONITOR_SILENT,
        "GPUs: ? (the GPU probe failed: hubops GPU probe: nvidia-smi --query-gpu: NVIDIA-SMI "
        "has failed because it couldn't communicate with the NVIDIA driver)",
        "3 of 4 GPUs free",
    ]


def test_a_holder_of_every_gpu_shows_each_gpu_s_use() -> None:
    """Under policy all a server holds "all": its row lists the use and memory of every GPU the
    sample saw, in index order."""
    alice = user_container("alice", "all", NOW - 2 * 3600)
    sample = Sample(
        at=NOW - 30,
        gpus=h200s([87, 0], [40211, 1]),
        apps=[App(GPU0, 41873, 40198, "/opt/venv/bin/python3", str(alice["Id"]))],
        devices=parse_list(h200_devices(2)),
    )
    state = monitor_view(sample, alice, policy=Policy("all"))

    out = report(holders(lab_host(alice), "lab"), state, GPUSettings(policy="all"))

    assert out.rows == [
        (
            "alice",
            "(default)",
            "all",
            "87%, 0%",
            "40211 MiB, 1 MiB",
            "41873 (hubops-lab-user-alice)",
            "30 s",
            "2025-06-15 13:06 UTC",
            USER_IMAGE,
        )
    ]
    assert not [n for n in out.notes if "GPUs free" in n], (
        "policy all hands out no GPUs from a pool: no 'N of M GPUs free' line"
    )


def test_without_a_gpu_policy_a_sample_adds_no_idle_or_pool_line() -> None:
    """Under policy none the monitor does not run by design: a one-off sample does not claim it
    is missing, and there is no pool to count; a stray process is still named."""
    sample = Sample(
        at=NOW,
        gpus=h200s([12, 0], [3000, 1]),
        apps=[App(GPU0, 4242, 2990, "python3", None)],
        devices=parse_list(h200_devices(2)),
    )
    state = once_view(sample, policy=Policy("none"))

    out = report([], state, GPUSettings(policy="none"))

    assert out.rows == []
    assert out.notes == [f"GPU {GPU0}: pid 4242 (python3) runs outside hubops' user servers"]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 30 * 86400), ("12h", 43200), ("90m", 5400), ("2w", 1209600), ("0", 0)],
)
def test_since_reads_as_operators_write_it(text: str, seconds: float) -> None:
    assert parse_since(text) == seconds


@pytest.mark.parametrize("text", ["month", "-3d", "", "d"])
def test_a_bad_since_is_one_clear_error(text: str) -> None:
    with pytest.raises(HubopsError) as info:
        parse_since(text)
    assert "invoke gpus --since: got" in str(info.value)
    assert "30d" in str(info.value)


def test_the_usage_table_gives_hours_and_the_busy_share() -> None:
    data = {
        "rows": [
            {"user": "alice", "held_seconds": 7200.0, "busy_seconds": 5400.0},
            {"user": "bob", "held_seconds": 3600.0, "busy_seconds": 0.0},
        ]
    }
    assert usage_rows(data, "user") == [
        ("alice", "2:00:00", "1:30:00", "75%"),
        ("bob", "1:00:00", "0:00:00", "0%"),
    ]
    groups = {"rows": [{"group": "", "held_seconds": 36.4, "busy_seconds": 36.0}]}
    assert usage_rows(groups, "group") == [("(no group)", "0:00:36", "0:00:36", "99%")]
