"""GPU allocation policies (pure functions of hubops_hub.gpus)."""

from __future__ import annotations

import random

import pytest
from hubops_hub.gpus import Holding, NoGPUAvailable, Policy, allocate, double_assigned, free_count

POOL = ("0", "1", "2", "3")


def held(*gpus: str, user: str = "u") -> Holding:
    return Holding(user=user, server="", gpus=gpus)


def test_none_gives_nothing_and_all_gives_every_gpu() -> None:
    assert allocate(Policy("none"), [], 2, "a") == []
    assert allocate(Policy("all"), [], 0, "a") is None, "all: every GPU whatever the count"
    assert allocate(Policy("all"), [held("0")], 1, "a") is None


def test_exclusive_hands_out_free_gpus_in_pool_order() -> None:
    policy = Policy("exclusive", pool=POOL)
    assert allocate(policy, [], 1, "a") == ["0"]
    assert allocate(policy, [held("0"), held("2")], 2, "a") == ["1", "3"]


def test_exclusive_never_shares_and_says_why_when_full() -> None:
    policy = Policy("exclusive", pool=POOL)
    full = [held(g, user=f"u{g}") for g in POOL]
    with pytest.raises(NoGPUAvailable) as info:
        allocate(policy, full, 1, "a")
    assert str(info.value) == (
        "all 4 GPUs are in use (by 4 servers); try again later or start without a GPU"
    )
    with pytest.raises(NoGPUAvailable, match="only 1 of 4 GPUs are free and 2 were asked for"):
        allocate(policy, full[:3], 2, "a")


def test_zero_gpus_always_works() -> None:
    full = [held(g) for g in POOL]
    assert allocate(Policy("exclusive", pool=POOL), full, 0, "a") == []


def test_shared_spreads_least_loaded_first_up_to_k() -> None:
    policy = Policy("shared", pool=("0", "1"), max_per_gpu=2)
    holdings: list[Holding] = []
    order = []
    for n in range(4):
        ids = allocate(policy, holdings, 1, f"u{n}")
        assert ids is not None
        order += ids
        holdings.append(held(*ids))
    assert order == ["0", "1", "0", "1"], "least loaded first, then pool order"
    with pytest.raises(NoGPUAvailable, match=r"all 2 GPUs are full \(2 servers each\)"):
        allocate(policy, holdings, 1, "late")


def test_pinned_users_win_over_groups() -> None:
    policy = Policy("pinned", pinned_users={"alice": ("3",)}, pinned_groups={"ml-lab": ("1", "2")})
    assert allocate(policy, [], 1, "alice", ["ml-lab"]) == ["3"]
    assert allocate(policy, [], 2, "bob", ["ml-lab"]) == ["1", "2"]
    with pytest.raises(NoGPUAvailable, match="no GPU is assigned to carol"):
        allocate(policy, [], 1, "carol", ["other"])
    with pytest.raises(NoGPUAvailable, match="bob may use 2 GPU"):
        allocate(policy, [], 3, "bob", ["ml-lab"])


def test_mig_and_uuid_ids_pass_through_unchanged() -> None:
    pool = ("GPU-5e1f0000-0000-4000-8000-000000000000", "MIG-5e1f0003-0001-4000-8000-000000000001")
    assert allocate(Policy("exclusive", pool=pool), [held(pool[0])], 1, "a") == [pool[1]]


def test_free_count_for_the_form() -> None:
    policy = Policy("exclusive", pool=POOL)
    assert free_count(policy, [held("1")]) == (3, 4)
    assert free_count(Policy("all"), []) == (0, 0)


def test_sequential_allocation_never_double_assigns() -> None:
    """Property: whatever order of grants and releases, no GPU is held twice."""
    rng = random.Random(7)
    policy = Policy("exclusive", pool=POOL)
    holdings: list[Holding] = []
    for _ in range(500):
        if holdings and rng.random() < 0.4:
            holdings.pop(rng.randrange(len(holdings)))
            continue
        try:
            ids = allocate(policy, holdings, rng.choice([1, 1, 2]), "u")
        except NoGPUAvailable:
            continue
        assert ids is not None
        holdings.append(held(*ids))
        assert double_assigned(holdings) == {}
