"""GPU sharing on the SIMULATED lab host (4 fake GPUs; GPU 3 has 2 MIG devices): allocation
and release, pinned and MIG IDs, the empty-pool message, allocation across a hub restart,
20 concurrent spawns against a 4-GPU exclusive pool, and culling giving GPUs back."""

from __future__ import annotations

import contextlib
import json
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
from tests.support.hub import HubClient
from tests.support.labhost import SIMULATED_GPUS, LabHost
from tests.support.verify import LoggedIn, Target
from tests.support.wait import wait_for

POOL = [str(g.index) for g in SIMULATED_GPUS]
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
    target.configure(gpu={"policy": "exclusive", "pool": POOL})
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


def test_twenty_concurrent_spawns_never_double_assign(target: Target, alice: LoggedIn) -> None:
    """20 users ask for 1 GPU each at once: 4 get one, 16 get the clear message, 0 doubles."""
    admin = alice.client
    if admin.server_ready("alice"):
        admin.stop_server("alice")
    users = [f"load{n:02d}" for n in range(20)]
    for user in users:
        assert admin.api("POST", f"users/{user}").status_code in (201, 409)

    def spawn(user: str) -> tuple[str, int, str]:
        r = admin.api("POST", f"users/{user}/server", json={"gpus": 1}, timeout=120)
        message = (
            r.json().get("message", "")
            if r.headers.get("content-type", "").startswith("application/json") and r.text
            else ""
        )
        return user, r.status_code, message

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(spawn, users))
    held = wait_for(lambda: (h := holdings(target)) and len(h) >= 4 and h, 120, "4 grants")
    seconds = time.monotonic() - start
    granted = [u for u, status, _ in results if status in (201, 202)]
    refused = [(u, m) for u, status, m in results if status not in (201, 202)]
    gpus = [gpu for value in held.values() for gpu in value.split(",")]
    doubles = len(gpus) - len(set(gpus))
    print(
        f"concurrent spawns: {len(users)}, grants: {len(held)}, refusals: {len(refused)}, "
        f"double assignments: {doubles}, {seconds:.1f}s"
    )
    assert doubles == 0, f"a GPU was assigned twice: {held}"
    assert sorted(gpus) == POOL, f"all 4 GPUs are handed out once: {held}"
    assert len(granted) == 4, f"4 spawns granted, got {len(granted)}: {results}"
    assert len(refused) == 16, f"16 refused: {refused}"
    for user, message in refused:
        assert "all 4 GPUs are in use (by 4 servers)" in message, f"{user}: {message!r}"


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
        start = time.monotonic()
        wait_for(lambda: idler not in holdings(target), 120, "the culler to stop idler")
        culled_after = time.monotonic() - start
        # alice has been idle in Jupyter longer than culling.timeout all along; she stays
        # through more than that again (five of the culler's checks), as she computes on
        # her GPU
        time.sleep(25)
        assert alice.container in holdings(target), "a server busy on its GPU is kept"
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

        token = Path(target.env.settings.paths.data_dir, "secrets", "metrics_token").read_text()
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
