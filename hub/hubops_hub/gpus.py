"""GPU allocation: which device IDs a new server gets, from what the running servers hold.

Pure functions, no I/O: the spawner (``hubops_hub.spawner``) reads the holdings from the
engine (container labels), calls :func:`allocate` under a lock, and puts the IDs into the
container's device request and label. The IDs are the pool's own strings: GPU indices
("0"), GPU UUIDs ("GPU-...") or MIG device UUIDs ("MIG-..."), passed to Docker unchanged.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

POLICIES = ("none", "all", "exclusive", "shared", "pinned")
# container states in which a user container holds the GPUs of its label
HOLDING_STATES = frozenset({"created", "running", "restarting", "paused"})


class NoGPUAvailable(Exception):
    """The request cannot be met now; the message is meant for the user."""


@dataclass(frozen=True)
class Holding:
    """A server that holds GPUs now (from its container's labels)."""

    user: str
    server: str
    gpus: tuple[str, ...]


@dataclass(frozen=True)
class Policy:
    name: str = "none"
    pool: tuple[str, ...] = ()
    max_per_gpu: int = 1  # shared: servers on one GPU at most
    pinned_users: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    pinned_groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, p: Mapping[str, Any]) -> Policy:
        """From the spawner's ``gpu_policy`` (hubops.plan.hub_config.gpu_policy)."""
        return cls(
            name=p.get("name", "none"),
            pool=tuple(str(x) for x in p.get("pool", ())),
            max_per_gpu=int(p.get("max_per_gpu", 1)),
            pinned_users={k: tuple(map(str, v)) for k, v in p.get("pinned_users", {}).items()},
            pinned_groups={k: tuple(map(str, v)) for k, v in p.get("pinned_groups", {}).items()},
        )


def allocate(
    policy: Policy,
    holdings: Iterable[Holding],
    count: int,
    user: str,
    groups: Sequence[str] = (),
) -> list[str] | None:
    """Device IDs for a new server of ``user`` asking for ``count`` GPUs.

    Returns None for "every GPU" (policy ``all``, whatever the count), [] for no GPU, or the
    IDs. Raises NoGPUAvailable with a message for the user when the request cannot be met now.
    """
    if policy.name == "all":
        return None
    if count <= 0 or policy.name == "none":
        return []
    held = list(holdings)
    if policy.name == "pinned":
        return _pinned(policy, user, groups, count)
    load = Counter(gpu for h in held for gpu in h.gpus)
    capacity = policy.max_per_gpu if policy.name == "shared" else 1
    free = [gpu for gpu in policy.pool if load[gpu] < capacity]
    if len(free) < count:
        raise NoGPUAvailable(_busy_message(policy, held, load, count, capacity))
    # least loaded first, then pool order: spreads shared servers, keeps exclusive stable
    ranked = sorted(free, key=lambda gpu: (load[gpu], policy.pool.index(gpu)))
    return ranked[:count]


def _pinned(policy: Policy, user: str, groups: Sequence[str], count: int) -> list[str]:
    ids = policy.pinned_users.get(user)
    if ids is None:
        for group in groups:
            if group in policy.pinned_groups:
                ids = policy.pinned_groups[group]
                break
    if not ids:
        raise NoGPUAvailable(f"no GPU is assigned to {user}; ask an admin, or start without a GPU")
    if count > len(ids):
        raise NoGPUAvailable(
            f"{user} may use {len(ids)} GPU(s) ({', '.join(ids)}), asked for {count}"
        )
    return list(ids[:count])


def _busy_message(
    policy: Policy, held: list[Holding], load: Counter[str], count: int, capacity: int
) -> str:
    servers = sum(1 for h in held if set(h.gpus) & set(policy.pool))
    free = sum(1 for gpu in policy.pool if load[gpu] < capacity)
    total = len(policy.pool)
    if free == 0:
        what = "in use" if capacity == 1 else f"full ({capacity} servers each)"
        gpus = f"all {total} GPUs are" if total > 1 else "the only GPU is"
        return (
            f"{gpus} {what} (by {servers} server{'s' if servers != 1 else ''}); "
            "try again later or start without a GPU"
        )
    return (
        f"only {free} of {total} GPUs are free and {count} were asked for; ask for fewer, "
        "try again later or start without a GPU"
    )


def free_ids(policy: Policy, holdings: Iterable[Holding]) -> list[str]:
    """The pool's GPUs that can take one more server now, in pool order."""
    if policy.name in ("none", "all", "pinned"):
        return []
    load = Counter(gpu for h in holdings for gpu in h.gpus)
    capacity = policy.max_per_gpu if policy.name == "shared" else 1
    return [gpu for gpu in policy.pool if load[gpu] < capacity]


def free_count(policy: Policy, holdings: Iterable[Holding]) -> tuple[int, int]:
    """(free, total) GPUs of the pool, for the spawn form."""
    if policy.name in ("none", "all", "pinned"):
        return (0, 0)
    return (len(free_ids(policy, holdings)), len(policy.pool))


def double_assigned(holdings: Iterable[Holding], capacity: int = 1) -> dict[str, int]:
    """GPU -> servers, for every GPU held by more servers than ``capacity`` (should be {})."""
    load = Counter(gpu for h in holdings for gpu in h.gpus)
    return {gpu: n for gpu, n in load.items() if n > capacity}


# --- Docker Swarm: GPUs as generic resources (cluster: swarm) ------------------------------


def assigned_gpus(task: Mapping[str, Any]) -> tuple[str, ...]:
    """The GPU IDs the swarm assigned to a task (the named generic resources in its
    ``GenericResources``), as Docker puts them into DOCKER_RESOURCE_<KIND>."""
    return tuple(
        str(r["NamedResourceSpec"]["Value"])
        for r in task.get("GenericResources") or []
        if "NamedResourceSpec" in r
    )


def advertised_gpus(node: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """Generic resource kind -> the IDs a swarm node advertises (node-generic-resources
    KIND=ID); a kind advertised as a count only (KIND=N) gives KIND#0..N-1."""
    out: dict[str, list[str]] = {}
    resources = (node.get("Description") or {}).get("Resources") or {}
    for r in resources.get("GenericResources") or []:
        named = r.get("NamedResourceSpec")
        if named:
            out.setdefault(str(named["Kind"]), []).append(str(named["Value"]))
        discrete = r.get("DiscreteResourceSpec")
        if discrete:
            kind = str(discrete["Kind"])
            out.setdefault(kind, []).extend(f"{kind}#{i}" for i in range(int(discrete["Value"])))
    return {k: tuple(v) for k, v in out.items()}


def node_schedulable(node: Mapping[str, Any]) -> bool:
    """A swarm node that takes new tasks: ready and active."""
    return bool(
        (node.get("Status") or {}).get("State") == "ready"
        and (node.get("Spec") or {}).get("Availability") == "active"
    )
