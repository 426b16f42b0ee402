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
