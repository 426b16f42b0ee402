"""GPU sharing on the SIMULATED lab host (4 fake GPUs; GPU 3 has 2 MIG devices): allocation
and release, pinned and MIG IDs, the empty-pool message, allocation across a hub restart,
20 concurrent spawns against a 4-GPU exclusive pool, and culling giving GPUs back."""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker.errors
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from hubops.host.target import open_host
from hubops.ops.gpus import read_monitor
from tests.support.checkout import Checkout
from tests.support.cli import run_invoke
from tests.support.hub import HubClient
from tests.support.labhost import SIMULATED_GPUS, LabHost
from tests.support.verify import LoggedIn, Target
from tests.support.wait import wait_for

POOL = [str(g.index) for g in SIMULATED_GPUS]
START_TIMEOUT = 30  # shorter than the storm's waits in line: they do not count
MIG = SIMULATED_GPUS[3].mig


def stop_all(admin: HubClient) -> None:
    for user in admin.api("GET", "users").json():
        if user.get("servers"):
            admin.stop_server(user["name"])


@pytest.fixture(scope="module", autouse=True)
def exclusive(target: Target, alice: LoggedIn) -> Iterator[None]:
    """The module runs with gpu.policy exclusive over the 4 simulated GPUs; then back."""
    if not target.simulated:
        pytest.skip("GPU sharing tests run on the SIMULATED lab host (without --env)")
    stop_all(alice.client)
    target.configure(
        gpu={"policy": "exclusive", "pool": POOL, "queue_timeout": 300},
        singleuser__start_timeout=START_TIMEOUT,
    )
    yield
    stop_all(alice.client)
    target.configure(gpu={"policy": "all"}, culling={"enabled": False})
    alice.client.start_server("alice")  # the later suites expect alice's server


def holdings(target: Target) -> dict[str, str]:
    """container name -> its GPU label, for this environment's user containers."""
    out = target.host.check_output(
        "docker ps --filter label=org.hubops.environment=%s --filter label=org.hubops.gpus "
        "--format '{{.Names}} {{.Label \"org.hubops.gpus\"}}'",
        target.name,
    )
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def visible_devices(target: Target, container: str) -> str:
    """NVIDIA_VISIBLE_DEVICES as the container's processes see it (Docker sets it from the
    device request when the container starts)."""
    out = target.in_container(container, "tr '\\0' '\\n' < /proc/1/environ").stdout
    return next(
        (e.split("=", 1)[1] for e in out.splitlines() if e.startswith("NVIDIA_VISIBLE_DEVICES=")),
        "",
    )


def device_ids(target: Target, container: str) -> list[str]:
    """The device IDs in the container's device request."""
    info = json.loads(target.host.check_output("docker inspect %s", container))[0]
    requests = info["HostConfig"].get("DeviceRequests") or []
    return [i for r in requests for i in (r.get("DeviceIDs") or [])]


def restart(admin: HubClient, user: str, **options: object) -> None:
    if admin.server_ready(user):
        admin.stop_server(user)
    admin.start_server(user, **options)


def test_a_server_gets_its_own_gpu_and_gives_it_back(target: Target, alice: LoggedIn) -> None:
    admin = alice.client
    restart(admin, "alice", gpus=1)
    held = holdings(target)
    ids = held[alice.container].split(",")
    assert len(ids) == 1, f"one GPU for alice: {held}"
    assert device_ids(target, alice.container) == ids, "the exact ID is in the device request"
    assert visible_devices(target, alice.container) == ids[0], "and reaches the container"
    seen = target.in_container(alice.container, "nvidia-smi -L").stdout
    listed = [line for line in seen.splitlines() if line.startswith("GPU ")]
    assert len(listed) == 1, f"alice sees exactly her GPU: {seen}"
    admin.stop_server("alice")
    wait_for(lambda: alice.container not in holdings(target), 30, "the GPU to come back")
    restart(admin, "alice", gpus=0)
    assert alice.container not in holdings(target), "gpus=0 holds no GPU"
    assert device_ids(target, alice.container) == []
    assert visible_devices(target, alice.container) == "void", (
        "no GPU even where the default runtime is nvidia"
    )
    admin.stop_server("alice")


def test_the_form_shows_how_many_gpus_are_free(target: Target, alice: LoggedIn) -> None:
    if alice.client.server_ready("alice"):
        alice.client.stop_server("alice")
    page = alice.client.session.get(
        alice.client.url("/hub/spawn"), verify=target.verify, timeout=30
    )
    assert page.status_code == 200, f"{page.status_code}: {page.text[-1500:]}"
    assert 'id="gpus-free"' in page.text, "the spawn form has the GPU chooser"
    assert "4 of 4 GPUs are free right now" in page.text, page.text[-2000:]


def test_a_storm_of_30_waits_in_line_and_is_served_in_order(
    target: Target, alice: LoggedIn
) -> None:
    """30 users ask for 1 GPU each at once on a pool of 4 (exclusive, gpu.queue_timeout 300):
    4 start, 26 wait in line with their places on the progress stream (a reload says the
    same); a cancel leaves the line; each GPU that frees goes to the head of the line, and
    the rest move up; no GPU is ever held twice, and nobody waits past the timeout."""
    admin = alice.client
    if admin.server_ready("alice"):
        admin.stop_server("alice")
    users = [f"storm{n:02d}" for n in range(30)]
    for user in users:
        assert admin.api("POST", f"users/{user}").status_code in (201, 409)

    def spawn(user: str) -> tuple[str, int]:
        r = admin.api("POST", f"users/{user}/server", json={"gpus": 1}, timeout=120)
        return user, r.status_code

    def held_by() -> dict[str, str]:
        """user -> GPU, from the labels; asserts that no GPU is held twice."""
        prefix = target.user_container("")
        found = {name.removeprefix(prefix): gpu for name, gpu in holdings(target).items()}
        gpus = list(found.values())
        assert len(gpus) == len(set(gpus)), f"a GPU is held twice: {found}"
        return found

    def ready(names: list[str]) -> bool:
        return all(admin.server_ready(u) for u in names)

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=30) as pool:
        statuses = dict(pool.map(spawn, users))
    assert set(statuses.values()) <= {201, 202}, f"every spawn is taken, none refused: {statuses}"
    first = wait_for(lambda: len(h := held_by()) == 4 and h, 120, "4 servers with a GPU")
    assert sorted(first.values()) == POOL
    wait_for(lambda: ready(list(first)), 120, "the first 4 servers")

    places = {u: admin.place_in_line(u) for u in users if u not in first}
    line = sorted(places, key=lambda u: places[u] or (99, 0))
    assert sorted(p for p in places.values() if p) == [(n, 26) for n in range(1, 27)], places
    assert admin.place_in_line(line[2]) == (3, 26), "a reload keeps the place"
    page = admin.session.get(admin.url("/hub/spawn/alice"), verify=target.verify, timeout=30)
    assert "0 of 4 GPUs are free right now; 26 spawns wait in line for one" in page.text, (
        "the spawn form says how many wait"
    )
    print(f"storm: 4 started, 26 in line after {time.monotonic() - start:.1f} s")

    # a cancel (stopping the pending server) leaves the line; those behind move up
    r = admin.api("DELETE", f"users/{line[1]}/server", timeout=60)
    assert r.status_code in (202, 204), r.text
    wait_for(lambda: admin.place_in_line(line[2]) == (2, 25), 30, "the line to move up")
    assert not admin.api("GET", f"users/{line[1]}").json().get("servers"), "no server left"
    line.pop(1)

    # one holder stops: the head of the line gets its GPU, the others move up
    holder = next(iter(first))
    admin.stop_server(holder)
    wait_for(lambda: admin.server_ready(line[0]), 120, "the head of the line to start")
    assert held_by()[line[0]] == first[holder], "the freed GPU went to the head"
    assert admin.place_in_line(line[1]) == (1, 24)
    assert admin.place_in_line(line[-1]) == (24, 24)
    served = [line.pop(0)]

    # the rest: stop every holder, and the next 4 in line start, in order
    while line:
        for user in list(held_by()):
            admin.api("DELETE", f"users/{user}/server", timeout=60)
        batch, line = line[:4], line[4:]
        wait_for(lambda b=batch: set(held_by()) == set(b), 180, f"{batch} to hold the GPUs")
        wait_for(lambda b=batch: ready(b), 120, f"{batch} ready")
        if line:
            assert admin.place_in_line(line[0]) == (1, len(line)), "the line moved up"
        served += batch
    waited = time.monotonic() - start
    print(f"storm: 29 served in line order, 1 cancelled, {waited:.1f} s")
    assert waited > START_TIMEOUT, "the last waited longer than start_timeout, and started"
    assert len(served) == 25
    for user in list(held_by()):
        admin.api("DELETE", f"users/{user}/server", timeout=60)
    wait_for(lambda: not held_by(), 60, "every GPU back")
    token = Path(target.env.settings.paths.data_dir, "secrets", "metrics_token").read_text()
    m = samples(scrape(target, token).text)
    failures = m.get("hubops_gpu_spawn_failures_total", [])
    assert not [v for lab_, v in failures if lab_.get("reason") == "queue-timeout" and v], (
        "nobody waited past gpu.queue_timeout"
    )
    # the pool full again, one spawn in line, and a hub restart (no line, for the refusals
    # that follow): the restart loses the place, and the spawn form says so
    for user in users[:4]:
        admin.api("POST", f"users/{user}/server", json={"gpus": 1}, timeout=120)
    wait_for(lambda: len(held_by()) == 4, 120, "4 holders")
    admin.api("POST", f"users/{users[-1]}/server", json={"gpus": 1}, timeout=120)
    assert admin.place_in_line(users[-1]) == (1, 1)
    target.configure(gpu={"policy": "exclusive", "pool": POOL, "queue_timeout": 0})
    page = admin.session.get(
        admin.url(f"/hub/spawn/{users[-1]}"), verify=target.verify, timeout=30
    ).text
    assert 'id="hubops-line-lost"' in page, page[-2000:]
    assert "(1st in line), and your place was lost: start again" in page, page[-2000:]


def test_the_empty_pool_message_reaches_the_progress_stream(
    target: Target, alice: LoggedIn
) -> None:
    admin = alice.client
    assert len(holdings(target)) == 4, "the previous test left the pool full"
    admin.api("POST", "users/alice/server", json={"gpus": 1}, timeout=60)
    events = admin.progress("alice")
    last = events[-1]
    assert last.get("failed"), f"the spawn must fail: {events}"
    assert last["message"] == (
        "Spawn failed: all 4 GPUs are in use (by 4 servers); try again later or start without a GPU"
    ), last


def test_the_empty_pool_message_reaches_the_browser(target: Target, alice: LoggedIn) -> None:
    from tests.support.browser import chromium
    from tests.support.verify import USERS

    bob = next(u for u in USERS if u.username == "bob")
    assert len(holdings(target)) == 4, "the pool is still full"
    with chromium() as browser:
        page = browser.new_context(ignore_https_errors=True).new_page()
        page.goto(f"{target.url}/hub/oauth_login", timeout=30_000)
        page.fill("#username", bob.username)
        page.fill("#password", bob.password)
        page.click("#sign-in")
        page.wait_for_url("**/hub/**", timeout=60_000)
        page.goto(f"{target.url}/hub/spawn/bob", timeout=30_000)
        if page.locator("#gpus").count():
            page.select_option("#gpus", "1")
            page.click("input[type=submit], button[type=submit]")
        page.get_by_text("all 4 GPUs are in use").wait_for(timeout=60_000)
        text = page.inner_text("body")
    # the spawn fails at once, so the hub shows the form again with the error above it
    assert (
        "Error: all 4 GPUs are in use (by 4 servers); try again later or start without a GPU"
        in text
    ), text[-1000:]
    assert "0 of 4 GPUs are free right now" in text, "the form says what is free"


def test_allocation_survives_a_hub_restart(target: Target, alice: LoggedIn) -> None:
    before = holdings(target)
    target.configure(
        singleuser={
            "image": "base",
            "mem_limit": "1G",
            "cpu_limit": 0.5,
            "pids_limit": 256,
            "start_timeout": 125,
        }
    )
    after = holdings(target)
    assert after == before, f"the new hub must not forget holdings: {before} -> {after}"
    r = alice.client.api("POST", "users/alice/server", json={"gpus": 1}, timeout=60)
    events = alice.client.progress("alice")
    assert events[-1].get("failed"), f"still no GPU free after the restart: {r.text} {events}"
    stop_all(alice.client)
    wait_for(lambda: holdings(target) == {}, 60, "every GPU back once the servers stop")


def test_pinned_and_mig_ids_reach_the_container(target: Target, alice: LoggedIn) -> None:
    target.configure(
        gpu={"policy": "pinned", "pinned_users": {"alice": [MIG[1]]}, "pinned_groups": {}}
    )
    restart(alice.client, "alice", gpus=1)
    assert device_ids(target, alice.container) == [MIG[1]], "the MIG UUID is passed as is"
    assert visible_devices(target, alice.container) == MIG[1]
    seen = target.in_container(alice.container, "nvidia-smi -L").stdout
    assert MIG[1] in seen, f"alice sees her MIG device: {seen}"
    alice.client.stop_server("alice")


def test_culling_gives_gpus_back(target: Target, alice: LoggedIn) -> None:
    target.configure(
        gpu={"policy": "exclusive", "pool": POOL},
        culling={"enabled": True, "timeout": 15, "every": 5},
    )
    restart(alice.client, "alice", gpus=1)
    assert alice.container in holdings(target)
    wait_for(lambda: alice.container not in holdings(target), 120, "the culler to stop alice")
    assert not alice.client.server_ready("alice"), "the idle server was culled"


def host_pid_of(lab: LabHost, container: str, marker: str) -> int:
    """Start ``sleep <marker>`` in a container; its PID on the host (as NVML reports it)."""
    c = lab.client.containers.get(container)
    c.exec_run(["sleep", marker], detach=True)
    rows = wait_for(
        lambda: [
            r for r in c.top(ps_args="-eo pid,args")["Processes"] if r[1] == f"sleep {marker}"
        ],
        10,
        f"sleep {marker} in {container}",
    )
    return int(rows[0][0])


def scrape(target: Target, token: str | None) -> requests.Response:
    headers = {"Authorization": f"token {token}"} if token else {}
    return requests.get(
        f"{target.url}/hub/metrics", headers=headers, verify=target.verify, timeout=30
    )


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def gpu_seconds(target: Target, token: str) -> dict[tuple[str, str], float]:
    """(user, held|busy) -> hubops_gpu_seconds_total on /hub/metrics (0 where none)."""
    out: dict[tuple[str, str], float] = {}
    for labels, value in samples(scrape(target, token).text).get("hubops_gpu_seconds_total", []):
        key = (labels["user"], labels["state"])
        out[key] = out.get(key, 0.0) + value
    for user in ("alice", "idler"):
        for state in ("held", "busy"):
            out.setdefault((user, state), 0.0)
    return out


def hms(text: str) -> float:
    h, m, s = (int(x) for x in text.split(":"))
    return float(h * 3600 + m * 60 + s)


def test_gpu_aware_culling_stops_the_idle_holder_keeps_the_busy_one_and_metrics_agree(
    target: Target, alice: LoggedIn, lab: LabHost
) -> None:
    """On the SIMULATED GPU host (the test says what the fake NVML reports, usage.json; the
    hub's monitor reads it through a real probe container with the GPUs and the host's PIDs):
    alice computes on her GPU, idler keeps 40 GB on his and computes nothing. Both are idle in
    Jupyter. With culling.timeout and gpu.idle_timeout at 20 s, idler is culled for GPU
    idleness, alice is kept well past the Jupyter timeout, and /hub/metrics, `invoke gpus`'
    view and the spawn form tell the same state."""
    if lab.gpusim is None or target.provider is None:
        pytest.skip("needs the suites' own deployment on the SIMULATED GPU host")
    admin = alice.client
    stop_all(admin)
    target.configure(
        gpu={"policy": "exclusive", "pool": POOL, "idle_timeout": 20, "sample_every": 5},
        culling={"enabled": True, "timeout": 20, "every": 5},
    )
    usage_file = lab.gpusim / "usage.json"
    assert admin.api("POST", "users/idler").status_code in (201, 409)
    try:
        admin.start_server("alice", gpus=1)
        r = admin.api("POST", "users/idler/server", json={"gpus": 1}, timeout=120)
        assert r.status_code in (201, 202), r.text
        wait_for(lambda: admin.server_ready("idler"), 60, "idler's server")
        held = holdings(target)
        idler = target.user_container("idler")
        gpu_a = SIMULATED_GPUS[int(held[alice.container])].uuid
        gpu_i = SIMULATED_GPUS[int(held[idler])].uuid
        pid_a = host_pid_of(lab, alice.container, "900.1")
        pid_i = host_pid_of(lab, idler, "900.2")
        usage_file.write_text(
            json.dumps(
                {
                    "gpus": {gpu_a: {"util": 90, "mem": 30000}, gpu_i: {"util": 0, "mem": 40000}},
                    "apps": [
                        {"gpu_uuid": gpu_a, "pid": pid_a, "used_memory": 30000},
                        {"gpu_uuid": gpu_i, "pid": pid_i, "used_memory": 40000},
                    ],
                }
            )
        )
        usage_file.chmod(0o644)
        idler_started = int(target.inspect(idler)["Config"]["Labels"]["org.hubops.started"])
        start = time.monotonic()
        wait_for(lambda: idler not in holdings(target), 120, "the culler to stop idler")
        culled_after = time.monotonic() - start
        idler_life = time.time() - idler_started
        token = Path(target.env.settings.paths.data_dir, "secrets", "metrics_token").read_text()
        before, at_before = gpu_seconds(target, token), time.monotonic()
        # alice has been idle in Jupyter longer than culling.timeout all along; she stays
        # through more than that again (five of the culler's checks), as she computes on
        # her GPU
        time.sleep(25)
        assert alice.container in holdings(target), "a server busy on its GPU is kept"
        after, elapsed = gpu_seconds(target, token), time.monotonic() - at_before
        # GPU-seconds, within one sample (5 s): alice held her GPU and used it all along;
        # idler held his from his start to the cull and never used it
        held = after["alice", "held"] - before["alice", "held"]
        busy = after["alice", "busy"] - before["alice", "busy"]
        print(f"GPU-seconds over {elapsed:.1f} s: alice held {held}, busy {busy}; {after}")
        assert abs(held - elapsed) <= 6, (held, elapsed)
        assert abs(busy - elapsed) <= 6, (busy, elapsed)
        assert after["idler", "busy"] == 0, "memory alone is not use"
        assert idler_life - 7 <= after["idler", "held"] <= idler_life + 1, (after, idler_life)
        table = run_invoke(
            Checkout(target.checkout_root),
            *("gpus", "--env", target.name, "--usage", "--since", "1h"),
            env={"COLUMNS": "200"},
        )
        assert table.returncode == 0, table.stderr
        shown = {
            found[1]: [hms(t) for t in re.findall(r"\d+:\d\d:\d\d", line)]
            for line in table.stdout.splitlines()
            if (found := re.search(r"\b(alice|idler)\b", line))
        }
        now = gpu_seconds(target, token)
        for user in ("alice", "idler"):
            assert abs(shown[user][0] - now[user, "held"]) <= 6, (user, shown, now)
            assert abs(shown[user][1] - now[user, "busy"]) <= 6, (user, shown, now)
        rows = {u: next(ln for ln in table.stdout.splitlines() if u in ln) for u in shown}
        share = {u: int(re.findall(r"(\d+)%", row)[0]) for u, row in rows.items()}
        assert share["idler"] == 0, table.stdout
        # alice held GPUs idle in this module's earlier tests too: her share is of all that
        expected = 100 * shown["alice"][1] / shown["alice"][0]
        assert abs(share["alice"] - expected) <= 1, (share, shown, table.stdout)
        assert admin.server_ready("alice")
        print(f"GPU-aware cull: idle holder stopped {culled_after:.0f} s after usage was set")

        # idler's spawn form says why his server stopped, and what is free, by kind
        page = admin.session.get(admin.url("/hub/spawn/idler"), verify=target.verify, timeout=30)
        assert page.status_code == 200, page.text[-1500:]
        assert 'id="hubops-last-stop"' in page.text, page.text[-2000:]
        assert "used neither the GPU nor Jupyter" in page.text
        assert "3 of 4 GPUs are free right now" in page.text
        assert "hubops SIMULATED GPU: GPU " in page.text, "free GPUs by kind and index"

        # asking for 2 GPUs (1 allowed): one spawn failure, counted
        r = admin.api("POST", "users/idler/server", json={"gpus": 2}, timeout=60)
        assert r.status_code == 403, r.text

        assert scrape(target, None).status_code in (401, 403), "metrics need the token"
        wait_for(
            lambda: samples(scrape(target, token).text).get("hubops_gpu_monitor_up") == [({}, 1)],
            30,
            "the monitor's sample",
        )
        m = samples(scrape(target, token).text)

        def one(name: str, **labels: str) -> float:
            (value,) = [
                v for lab_, v in m[name] if all(lab_.get(k) == x for k, x in labels.items())
            ]
            return value

        assert "jupyterhub_running_servers" in m, "JupyterHub's own metrics are there too"
        assert (one("hubops_gpus_total"), one("hubops_gpus_held"), one("hubops_gpus_free")) == (
            4,
            1,
            3,
        )
        assert one("hubops_gpu_utilization_ratio", uuid=gpu_a) == pytest.approx(0.9)
        assert one("hubops_gpu_memory_used_bytes", uuid=gpu_a) == 30000 * 2**20
        assert one("hubops_gpu_memory_used_bytes", uuid=gpu_i) == 40000 * 2**20
        assert one("hubops_gpu_memory_total_bytes", uuid=gpu_a) == 81559 * 2**20
        assert one("hubops_gpu_idle_seconds", uuid=gpu_a) < 15
        assert one("hubops_gpu_holder_idle_seconds", user="alice") < 15
        assert one("hubops_culls_total", reason="gpu-idle") >= 1
        assert one("hubops_gpu_spawn_failures_total", reason="over-limit") == 1

        with open_host(target.checkout_root, target.env) as host:
            view = read_monitor(host, target.container("hub"))
        assert view is not None, "invoke gpus reads the hub's monitor"
        print(f"GPU monitor: one sample (a probe container) took {view['probe_seconds']} s")
        (mine,) = view["holders"]
        assert (mine["user"], mine["busy"]) == ("alice", True)
        assert [p["pid"] for p in mine["processes"]] == [pid_a]
        assert view["pool"]["free"] == 3

    finally:
        usage_file.unlink(missing_ok=True)
        for c in (alice.container, target.user_container("idler")):
            with contextlib.suppress(docker.errors.NotFound):
                lab.client.containers.get(c).exec_run(["pkill", "-f", "sleep 900"])
