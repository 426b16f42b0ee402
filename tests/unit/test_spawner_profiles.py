"""HubopsSpawner's profiles: which choices and limits a user gets, by group."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from hubops_hub.spawner import GPURequestError, HubopsSpawner

IMAGES = {"Base": "hubops/singleuser:base-x", "PyTorch": "hubops/singleuser:pytorch-x"}
PROFILES = [
    {"groups": ["staff"], "images": None, "max_gpus": 2, "mem_limit": "64G", "cpu_limit": 16},
    {"groups": ["ml-lab"], "images": ["PyTorch"], "max_gpus": 1, "max_age": 3600},
    {"groups": [], "images": ["Base"], "max_gpus": 0},
]


def spawner(name: str, *groups: str, policy: str = "exclusive", **options: object) -> HubopsSpawner:
    user = SimpleNamespace(name=name, groups=[SimpleNamespace(name=g) for g in groups])
    s = HubopsSpawner(
        user=user,
        allowed_images=IMAGES,
        profiles=PROFILES,
        gpu_policy={"name": policy, "pool": ["0", "1"]},
    )
    s.user_options = dict(options)
    return s


@pytest.mark.parametrize(
    ("groups", "images", "max_gpus"),
    [
        (("staff", "ml-lab"), ["Base", "PyTorch"], 2),
        (("ml-lab",), ["PyTorch"], 1),
        ((), ["Base"], 0),
    ],
)
def test_first_matching_profile_decides(
    groups: tuple[str, ...], images: list[str], max_gpus: int
) -> None:
    s = spawner("u", *groups)
    assert list(s._get_allowed_images()) == images
    assert s.profile()["max_gpus"] == max_gpus


def test_default_gpu_count_follows_the_profile() -> None:
    assert spawner("a", "ml-lab")._requested_gpus() == 1, "a GPU user gets one by default"
    assert spawner("b")._requested_gpus() == 0, "a user without GPUs asks for none"
    assert spawner("c", "ml-lab", policy="none")._requested_gpus() == 0


@pytest.mark.parametrize("value", ["two", -1, "1.5"])
def test_a_bad_gpu_count_is_refused_clearly(value: object) -> None:
    with pytest.raises(GPURequestError) as info:
        spawner("a", "ml-lab", gpus=value)._requested_gpus()
    assert "gpus must be" in info.value.jupyterhub_message


def test_more_gpus_than_the_profile_allows_is_refused() -> None:
    s = spawner("bob", "ml-lab", gpus=2)
    with pytest.raises(GPURequestError) as info:
        asyncio.run(s.start())
    assert info.value.status_code == 403
    assert info.value.jupyterhub_message == "bob may use 1 GPU(s) at most; asked for 2"


def test_the_form_offers_what_the_profile_allows() -> None:
    s = spawner("carol", "staff")

    async def no_holdings() -> list[object]:
        return []

    s.holdings = no_holdings  # type: ignore[method-assign]
    form = asyncio.run(s.get_options_form())
    assert '<option value="PyTorch">' in form
    assert '<option value="2">2</option>' in form
    assert '<option value="1" selected>1</option>' in form, "one GPU is preselected"
    assert "2 of 2 GPUs are free right now" in form
    assert s.options_from_form({"image": ["PyTorch"], "gpus": ["2"]}) == {
        "image": "PyTorch",
        "gpus": "2",
    }


def test_the_spawner_returns_as_soon_as_the_server_accepts_connections() -> None:
    """The readiness wait ends on the first accepted connection, not on the hub's backoff."""

    async def scenario() -> tuple[float, int]:
        accepted = 0

        def on_connect(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal accepted
            accepted += 1
            writer.close()

        s = spawner("u")
        # a port that nobody listens on yet: the wait keeps trying until the server is up
        probe = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        port = probe.sockets[0].getsockname()[1]
        probe.close()
        await probe.wait_closed()

        async def open_later() -> asyncio.Server:
            await asyncio.sleep(0.5)
            return await asyncio.start_server(on_connect, "127.0.0.1", port)

        loop = asyncio.get_running_loop()
        start = loop.time()
        later = asyncio.create_task(open_later())
        await s._wait_listening("127.0.0.1", port)
        took = loop.time() - start
        server = await later
        server.close()
        await server.wait_closed()
        return took, accepted

    took, accepted = asyncio.run(scenario())
    assert accepted == 1, "the wait returns on the first accepted connection"
    assert 0.5 <= took < 5, f"returned after {took:.2f}s for a server that listened at 0.5s"


def test_the_wait_gives_up_at_http_timeout_and_leaves_the_verdict_to_the_hub() -> None:
    s = spawner("u")
    s.http_timeout = 1
    start = asyncio.run(_timed(s._wait_listening("127.0.0.1", _closed_port())))
    assert start >= 1, "kept trying until http_timeout"


async def _timed(awaitable: object) -> float:
    loop = asyncio.get_running_loop()
    start = loop.time()
    await awaitable  # type: ignore[misc]
    return loop.time() - start


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_server_without_a_gpu_sees_none_even_under_the_nvidia_runtime() -> None:
    s = spawner("a", policy="none")
    s._set_gpu_request([])
    assert s.gpu_env() == {"NVIDIA_VISIBLE_DEVICES": "void"}
    assert s.extra_host_config["device_requests"] == []
    with_gpu = spawner("b", "ml-lab")
    with_gpu._set_gpu_request(["1"])
    assert with_gpu.gpu_env() == {}, "the device request decides"
    everything = spawner("c", policy="all")
    everything._set_gpu_request(None)
    assert everything.gpu_env() == {}


def test_servers_are_not_auto_removed_so_they_survive_a_dockerd_restart() -> None:
    s = spawner("a", policy="none")
    s._set_gpu_request([])
    assert s.extra_host_config["auto_remove"] is False


def test_a_profile_s_limits_and_dev_shm_apply_to_the_server() -> None:
    """staff's profile: its memory and CPU limits, and its /dev/shm in bytes (the hub's config
    carries it worked out); a profile without one keeps the spawner's default."""
    s = HubopsSpawner(
        user=SimpleNamespace(name="a", groups=[SimpleNamespace(name="staff")]),
        profiles=[{**PROFILES[0], "shm_size": 32 * 2**30}, *PROFILES[1:]],
        extra_host_config={"shm_size": 2**30, "pids_limit": 4096},
    )
    s.apply_profile()
    assert s.mem_limit == 64 * 2**30
    assert s.cpu_limit == 16
    assert s.extra_host_config == {"shm_size": 32 * 2**30, "pids_limit": 4096}
    other = HubopsSpawner(
        user=SimpleNamespace(name="b", groups=[]),
        profiles=PROFILES,
        extra_host_config={"shm_size": 2**30},
    )
    other.apply_profile()
    assert other.extra_host_config == {"shm_size": 2**30}, "no size of its own: the default"


def test_gpu_hours_are_charged_to_the_group_whose_profile_applies() -> None:
    s = spawner("u", "ml-lab", "staff")
    assert s._charged_group() == "staff", "the first matching profile's group"
    labels = s.server_labels({}, "0")
    assert labels["org.hubops.group"] == "staff"
    assert spawner("v")._charged_group() == "", "a profile for everybody names no group"
