"""Measurements against a running stack (see stacks.py): logins, memory, CPU, deploys."""

from __future__ import annotations

import json
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import docker
import requests

from bench.stacks import ADMIN_PASSWORD, PASSWORD, Stack
from tests.support.hub import HubClient

READY_TIMEOUT = 300.0


def login_to_lab(stack: Stack, user: str, timeout: float = READY_TIMEOUT) -> float:
    """Seconds from posting the login form to JupyterLab answering through the proxy.

    Waits as a browser on the hub's spawn-pending page does: on the progress event stream,
    then opens JupyterLab (polling the lab instead would load the hub with requests that no
    browser makes).
    """
    client = HubClient(stack.url, verify=stack.verify)
    client.session.get(
        client.url("/hub/login"), timeout=30, verify=stack.verify
    )  # the form, as a browser has it
    start = time.monotonic()
    response = client.login(user, PASSWORD, timeout=timeout)
    if response.status_code != 200:
        raise RuntimeError(f"{stack.name}: {user}'s login: {response.status_code}")
    wait_ready(client, user, timeout)
    deadline = start + timeout
    while time.monotonic() < deadline:
        try:
            if client.lab_status(user) == 200:
                return time.monotonic() - start
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{stack.name}: {user}'s JupyterLab not ready in {timeout:.0f}s")


def wait_ready(client: HubClient, user: str, timeout: float) -> None:
    """Follow /hub/api/users/<user>/server/progress until it says ready (or failed)."""
    with client.api("GET", f"users/{user}/server/progress", stream=True, timeout=timeout) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{user}'s spawn progress: {r.status_code} {r.text[:200]}")
        for line in r.iter_lines():
            if not line.startswith(b"data:"):
                continue
            event = json.loads(line[5:])
            if event.get("failed"):
                raise RuntimeError(f"{user}'s spawn failed: {event.get('message')}")
            if event.get("ready"):
                return


def admin(stack: Stack) -> HubClient:
    client = HubClient(stack.url, verify=stack.verify)
    response = client.login("admin", ADMIN_PASSWORD, next_url="/hub/home")
    assert response.status_code == 200, f"{stack.name}: admin login {response.status_code}"
    return client


def stop_all(stack: Stack) -> None:
    """Stop every user server and wait until their containers are gone or stopped."""
    client = admin(stack)
    users = client.api("GET", "users").json()
    running = [u["name"] for u in users if u.get("servers")]
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda name: client.api("DELETE", f"users/{name}/server"), running))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if not stack.user_containers():
            break
        time.sleep(0.5)
    for name in [u["name"] for u in users if u["name"] != "admin"]:
        client.api("DELETE", f"users/{name}")


@dataclass
class Latency:
    runs: list[float]

    @property
    def p50(self) -> float:
        return statistics.median(self.runs)

    @property
    def p95(self) -> float:
        ordered = sorted(self.runs)
        return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def spawn_latency(stack: Stack, runs: int, tag: str) -> Latency:
    out = []
    for n in range(runs):
        out.append(login_to_lab(stack, f"{tag}lat{n:02d}"))
        stop_all(stack)
    return Latency(out)


class LagProbe:
    """Asks the hub for /hub/api every 100 ms and records how long each answer takes."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            start = time.monotonic()
            try:
                session.get(f"{self.url}/hub/api", timeout=30)
                self.samples.append(time.monotonic() - start)
            except requests.RequestException:
                self.samples.append(30.0)
            self._stop.wait(0.1)

    def __enter__(self) -> LagProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=35)


@dataclass
class Concurrent:
    users: int
    wall_s: float
    failures: int
    lag_max_s: float
    lag_p95_s: float
    cpu_s_per_spawn: float
    times: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def cpu_seconds(client: docker.DockerClient, names: list[str]) -> float:
    total = 0.0
    for name in names:
        try:
            stats = client.api.stats(name, stream=False, one_shot=True)
        except docker.errors.NotFound:
            continue
        total += stats["cpu_stats"]["cpu_usage"]["total_usage"] / 1e9
    return total


def concurrent_logins(stack: Stack, users: int, tag: str) -> Concurrent:
    names = [f"{tag}c{users}u{n:02d}" for n in range(users)]
    infra_before = cpu_seconds(stack.client, stack.infra_containers())

    errors: list[str] = []

    def one(name: str) -> float | None:
        try:
            return login_to_lab(stack, name)
        except Exception as exc:  # a failed login is a data point, not a crash
            errors.append(f"{name}: {type(exc).__name__}: {exc}"[:300])
            return None

    start = time.monotonic()
    with LagProbe(stack.url) as probe, ThreadPoolExecutor(max_workers=users) as pool:
        results = list(pool.map(one, names))
    wall = time.monotonic() - start
    user_cpu = cpu_seconds(stack.client, [c.name for c in stack.user_containers()])
    infra = cpu_seconds(stack.client, stack.infra_containers()) - infra_before
    ok = [r for r in results if r is not None]
    samples = sorted(probe.samples) or [0.0]
    return Concurrent(
        users=users,
        wall_s=wall,
        failures=users - len(ok),
        lag_max_s=samples[-1],
        lag_p95_s=samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))],
        cpu_s_per_spawn=(user_cpu + infra) / max(len(ok), 1),
        times=ok,
        errors=sorted(errors),
    )


def rss_mib(client: docker.DockerClient, name: str) -> float:
    """Resident memory of a container's processes (anonymous memory, no page cache)."""
    stats = client.api.stats(name, stream=False, one_shot=True)["memory_stats"]
    detail = stats.get("stats", {})
    rss = detail.get("total_rss", detail.get("rss", detail.get("anon", 0)))
    return float(rss) / (1 << 20)


@dataclass
class Memory:
    users: int
    user_rss_mib: list[float]
    hub_rss_mib: float
    proxy_rss_mib: float

    @property
    def idle_user_mib(self) -> float:
        return statistics.median(self.user_rss_mib) if self.user_rss_mib else 0.0


def memory(stack: Stack, users: int, settle_s: float = 20) -> Memory:
    time.sleep(settle_s)  # idle servers: let start-up garbage go
    user = [rss_mib(stack.client, c.name) for c in stack.user_containers()]
    infra = stack.infra_containers()
    hub = rss_mib(stack.client, infra[0])
    proxy = rss_mib(stack.client, infra[1]) if len(infra) > 1 else 0.0
    return Memory(users=users, user_rss_mib=user, hub_rss_mib=hub, proxy_rss_mib=proxy)


def availability_during(stack: Stack, action: Any) -> tuple[float, Any]:
    """Run ``action`` while probing /hub/health every 50 ms; returns the longest run of
    failed probes (seconds the hub was unavailable) and the action's result."""
    outages: list[float] = []
    down_since: list[float | None] = [None]
    done = threading.Event()

    def probe() -> None:
        session = requests.Session()
        while not done.is_set():
            now = time.monotonic()
            try:
                ok = session.get(f"{stack.url}/hub/health", timeout=2).status_code == 200
            except requests.RequestException:
                ok = False
            if not ok and down_since[0] is None:
                down_since[0] = now
            if ok and down_since[0] is not None:
                outages.append(now - down_since[0])
                down_since[0] = None
            time.sleep(0.05)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    result = action()
    deadline = time.monotonic() + 120
    while down_since[0] is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    done.set()
    thread.join(timeout=5)
    return (max(outages) if outages else 0.0), result


def servers_alive(stack: Stack, users: list[str]) -> int:
    """How many of ``users`` still have a running server that answers through the proxy."""
    client = admin(stack)
    alive = 0
    for name in users:
        model = client.api("GET", f"users/{name}").json()
        if (model.get("servers") or {}).get("", {}).get("ready"):
            alive += 1
    return alive
