"""The hub's lines (hubops_hub.spawnline, HubopsSpawner's run_pre_spawn_hook): spawns that wait
for GPUs and for a start slot, first come, first served; and GPU-seconds per user and group
(hubops_hub.gpumon.charges, hubops_hub.gpuusage)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from hubops_hub import gpuusage, spawnline
from hubops_hub.gpumon import Holder, charges
from hubops_hub.gpus import Holding
from hubops_hub.nvml import App
from hubops_hub.spawner import GPURequestError, HubopsSpawner
from tornado import web

from tests.support.nvml_samples import GPU0, sample

POOL = ["0", "1", "2", "3"]


@pytest.fixture(autouse=True)
def fresh_lines(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test gets empty lines, and a line file of its own."""
    monkeypatch.setattr(spawnline, "LINE_FILE", str(tmp_path / "line.json"))
    monkeypatch.setattr(spawnline, "GPU_LINE", spawnline.Line("gpu", spawnline._save_soon))
    monkeypatch.setattr(spawnline, "STARTS", spawnline.Starts(spawnline._save_soon))
    monkeypatch.setattr(spawnline, "RESERVED", {})
    monkeypatch.setattr(spawnline, "POLL", 0.05)
    monkeypatch.setattr(spawnline, "_interrupted", {})
    monkeypatch.setattr(spawnline, "_cleared", False)


class Engine:
    """What the labels of the user containers say: server key -> GPUs."""

    def __init__(self) -> None:
        self.held: dict[str, tuple[str, ...]] = {}


class LineSpawner(HubopsSpawner):
    """HubopsSpawner with the engine's holdings from memory (the line's logic is the real one)."""

    engine: Engine

    async def holdings(self) -> list[Holding]:
        key = self._line_key()
        out = [h for k, h in spawnline.RESERVED.items() if k != key]
        return out + [Holding(k, "", gpus) for k, gpus in self.engine.held.items()]

    def take(self) -> None:
        """The container is created: its labels hold the reserved GPUs."""
        key = self._line_key()
        self.engine.held[key] = spawnline.RESERVED.pop(key).gpus
        spawnline.GPU_LINE.changed()


def spawner(engine: Engine, name: str, gpus: int = 1, queue_timeout: int = 60) -> LineSpawner:
    user = SimpleNamespace(name=name, groups=[SimpleNamespace(name="ml")])
    s = LineSpawner(
        user=user,
        profiles=[{"groups": ["ml"], "max_gpus": 4}],
        gpu_policy={"name": "exclusive", "pool": POOL},
        queue_timeout=queue_timeout,
    )
    s.engine = engine
    s.user_options = {"gpus": gpus}
    return s


async def wait_gpus(s: LineSpawner) -> None:
    profile = s.apply_profile()
    await s._wait_for_gpus(s._line_key(), s._requested_gpus(), profile)


def places() -> list[str]:
    return [t.key for t in spawnline.GPU_LINE.tickets]


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0.01)


def test_waiters_are_served_in_order_as_gpus_free_and_never_twice() -> None:
    async def scenario() -> None:
        engine = Engine()
        first = [spawner(engine, f"u{n}") for n in range(4)]
        for s in first:
            await wait_gpus(s)
            s.take()
        assert sorted(g for gpus in engine.held.values() for g in gpus) == POOL
        waiters = [spawner(engine, f"w{n}") for n in range(3)]
        tasks = [asyncio.ensure_future(wait_gpus(s)) for s in waiters]
        await settle()
        assert places() == ["w0", "w1", "w2"], "first come, first served"
        assert spawnline.status("w1") == spawnline.status("w1"), "a reload says the same"
        assert "you are 2nd in line of 3" in (spawnline.status("w1") or "")

        del engine.held["u2"]  # a holder stops: its GPU goes to the head of the line
        await tasks[0]
        assert spawnline.RESERVED["w0"].gpus == ("2",)
        assert places() == ["w1", "w2"], "the others move up"
        assert not tasks[1].done(), "one GPU freed, one waiter served"
        assert "you are 1st in line of 2" in (spawnline.status("w1") or "")
        # the reserved GPU counts as held until the container carries it
        assert await waiters[1].free_gpus() == (0, 4)
        waiters[0].take()

        del engine.held["u0"]
        await tasks[1]
        waiters[1].take()
        gpus = [g for held in engine.held.values() for g in held]
        assert len(gpus) == len(set(gpus)) == 4, f"no GPU twice: {engine.held}"
        tasks[2].cancel()

    asyncio.run(scenario())


def test_a_cancel_leaves_the_line_and_those_behind_move_up() -> None:
    async def scenario() -> None:
        engine = Engine()
        engine.held = {f"u{n}": (g,) for n, g in enumerate(POOL)}
        waiters = [spawner(engine, f"w{n}") for n in range(3)]
        tasks = [asyncio.ensure_future(wait_gpus(s)) for s in waiters]
        await settle()
        tasks[0].cancel()  # JupyterHub's stop of a pending server cancels the spawn
        await settle()
        assert places() == ["w1", "w2"]
        assert spawnline.status("w0") is None
        saved = json.loads(Path(spawnline.LINE_FILE).read_text())["lines"]["gpu"]
        assert [(t["server"], t["place"]) for t in saved] == [("w1", 1), ("w2", 2), ("w0", 1)], (
            "a hub that stops cancels its waiting spawns too: kept until the server's stop"
        )
        waiters[0].clear_state()  # JupyterHub's stop of the server: the user's own cancel
        saved = json.loads(Path(spawnline.LINE_FILE).read_text())["lines"]["gpu"]
        assert [t["server"] for t in saved] == ["w1", "w2"]
        del engine.held["u3"]
        await tasks[1]
        assert spawnline.RESERVED["w1"].gpus == ("3",)
        tasks[2].cancel()

    asyncio.run(scenario())


def test_a_request_for_several_gpus_at_the_head_holds_those_behind_it() -> None:
    async def scenario() -> None:
        engine = Engine()
        engine.held = {"u0": ("0",), "u1": ("1",), "u2": ("2",)}
        big = asyncio.ensure_future(wait_gpus(spawner(engine, "big", gpus=2)))
        await settle()
        small = asyncio.ensure_future(wait_gpus(spawner(engine, "small", gpus=1)))
        await settle()
        assert not small.done(), "GPU 3 is free, but the request for 2 came first"
        assert places() == ["big", "small"]
        del engine.held["u0"]
        await big
        assert sorted(spawnline.RESERVED["big"].gpus) == ["0", "3"]
        small.cancel()

    asyncio.run(scenario())


def test_nobody_waits_past_the_queue_timeout_and_0_refuses_at_once() -> None:
    async def scenario() -> None:
        engine = Engine()
        engine.held = {f"u{n}": (g,) for n, g in enumerate(POOL)}
        with pytest.raises(GPURequestError) as info:
            await asyncio.wait_for(wait_gpus(spawner(engine, "w", queue_timeout=1)), 5)
        assert info.value.status_code == 503
        assert "no GPU came free in 1 s of waiting in line" in info.value.jupyterhub_message
        assert places() == [], "a timed-out spawn leaves the line"
        await wait_gpus(spawner(engine, "now", queue_timeout=0))  # no line: create refuses
        assert places() == []
        assert "now" not in spawnline.RESERVED

    asyncio.run(scenario())


def test_a_profile_s_queue_timeout_wins() -> None:
    s = spawner(Engine(), "a", queue_timeout=600)
    assert s._queue_timeout({"queue_timeout": 5}) == 5
    assert s._queue_timeout({"queue_timeout": None}) == 600


def test_starts_wait_for_a_slot_first_come_first_served() -> None:
    async def scenario() -> None:
        starts = spawnline.STARTS
        starts.capacity = 2
        order: list[str] = []

        async def one(key: str) -> None:
            await starts.acquire(key, key)
            order.append(key)

        tasks = [asyncio.ensure_future(one(f"s{n}")) for n in range(5)]
        await settle()
        assert order == ["s0", "s1"]
        assert len(starts.line) == 3
        assert "2 servers are starting; you are 1st in line of 3" in (spawnline.status("s2") or "")
        tasks[3].cancel()  # a cancel leaves the line
        await settle()
        assert [t.key for t in starts.line.tickets] == ["s2", "s4"]
        starts.release("s0")
        starts.release("s0")  # idempotent
        await settle()
        assert order == ["s0", "s1", "s2"]
        starts.release("s1")
        await asyncio.gather(tasks[4])
        assert order == ["s0", "s1", "s2", "s4"]

    asyncio.run(scenario())


def test_a_slot_whose_start_never_ended_is_freed() -> None:
    starts = spawnline.Starts()
    starts.capacity = 1
    starts.max_hold = 0
    starts.running["lost"] = 0.0
    assert starts.free(), "a slot held past start_timeout + http_timeout is given back"


def test_the_default_start_slots_follow_the_cores() -> None:
    assert spawnline.default_starts(1) == 2
    assert spawnline.default_starts(2) == 4
    assert spawnline.default_starts(16) == 32


def test_after_a_restart_the_form_tells_those_who_waited_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        spawnline.GPU_LINE.join("w0", "w0", 1)
        spawnline.GPU_LINE.join("w1", "w1", 2)

    asyncio.run(scenario())
    saved = json.loads(Path(spawnline.LINE_FILE).read_text())
    assert [t["server"] for t in saved["lines"]["gpu"]] == ["w0", "w1"]
    # a new hub process: empty lines, the file of the old one, read at import
    spawnline.GPU_LINE.tickets.clear()
    spawnline._interrupted = spawnline.interrupted()
    spawnline.GPU_LINE.changed()  # a change before anyone looked: the file is read already
    notice = spawnline.restart_notice("w1")
    assert "The hub restarted at" in notice, notice
    assert "(2nd in line)" in notice, notice
    assert "start again" in notice
    assert spawnline.restart_notice("w1") == "", "told once"
    spawnline._interrupted = spawnline.interrupted()  # the restart after that
    spawnline._cleared = False
    assert spawnline.restart_notice("w0") == "", "does not tell it again"


def test_a_failed_start_is_retried_but_a_refusal_is_not() -> None:
    def user_with(exc: BaseException) -> SimpleNamespace:
        future: asyncio.Future[None] = asyncio.new_event_loop().create_future()
        future.set_exception(exc)
        return SimpleNamespace(spawners={"": SimpleNamespace(_spawn_future=future)})

    seconds = spawnline.retry_vars()["implicit_spawn_seconds"]
    assert seconds(user_with(TimeoutError("start_timeout"))) == spawnline.RETRY_SECONDS
    assert seconds(user_with(web.HTTPError(503, "no GPU came free"))) == spawnline.RETRY_SECONDS
    assert seconds(user_with(web.HTTPError(403, "over the limit"))) == 0
    assert seconds(None) == 0


# --- GPU-seconds -------------------------------------------------------------------------------


def test_gpu_seconds_are_held_by_the_gpu_and_busy_by_the_gpus_used() -> None:
    busy = Holder("a" * 64, "alice", "", ("0",), started=0, group="ml-lab")
    idle = Holder("b" * 64, "bob", "", ("1",), started=95, group="")
    s = sample(130, 90, 0, [App(GPU0, 11, 1000, "python3", busy.container_id)])
    found = {c.user: c for c in charges(s, [busy, idle], 5, previous=100, every=30)}
    assert (found["alice"].held, found["alice"].busy, found["alice"].group) == (30, 30, "ml-lab")
    assert (found["bob"].held, found["bob"].busy) == (30, 0), "held from the previous sample"
    late = Holder("c" * 64, "carol", "", ("0", "1"), started=120)
    (c,) = charges(s, [late], 5, previous=100, every=30)
    assert c.held == 20, "2 GPUs for the 10 s since its start"
    assert charges(s, [busy], 5, previous=None, every=30) == [], "the first sample: no time"
    assert charges(s, [busy], 5, previous=30, every=30) == [], "a gap (monitor down): unknown"


def test_gpu_seconds_add_up_by_user_and_group_and_since(tmp_path: Path) -> None:
    db = str(tmp_path / "usage.sqlite")
    assert gpuusage.totals(db) == [], "no file yet: nothing held"
    day = 86400 * 20000
    gpuusage.record(db, day + 10, [gpuusage.Charge("alice", "ml-lab", 30, 30)])
    gpuusage.record(db, day + 40, [gpuusage.Charge("alice", "ml-lab", 30, 0)])
    gpuusage.record(db, day + 40, [gpuusage.Charge("bob", "", 60, 6)])
    gpuusage.record(db, day + 90000, [gpuusage.Charge("bob", "ml-lab", 10, 0)])
    assert gpuusage.totals(db, by="user") == [
        {"held_seconds": 70.0, "busy_seconds": 6.0, "user": "bob"},
        {"held_seconds": 60.0, "busy_seconds": 30.0, "user": "alice"},
    ]
    by_group = {r["group"]: r["held_seconds"] for r in gpuusage.totals(db, by="group")}
    assert by_group == {"ml-lab": 70.0, "": 60.0}
    assert gpuusage.totals(db, since=day + 80000, by="user") == [
        {"held_seconds": 10.0, "busy_seconds": 0.0, "user": "bob"}
    ]
