"""The benchmark suite: hubops and the hand-made setup, side by side, on this machine.

    nox -s bench                      # everything, results in results/bench-<time>/
    nox -s bench -- --quick           # fewer runs, no cold builds (a smoke run)
    nox -s bench -- --no-images --stacks none --data-backup 1   # the users' files' backups

Writes results.json and report.md (with matplotlib plots) into the results directory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import asdict
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import docker

from bench import databackup, extensions, measure
from bench.report import write_report
from bench.stacks import REPO, HubopsStack, PlainStack, Stack, SwarmStack, wait_healthy
from hubops.config import environments
from hubops.host.engine import ensure_docker, local_client
from hubops.host.local import LocalHost


def machine() -> dict[str, Any]:
    def field(path: str, key: str) -> str:
        line = next((ln for ln in Path(path).read_text().splitlines() if ln.startswith(key)), "")
        return line.partition(":")[2].strip()

    cpu = field("/proc/cpuinfo", "model name") or "?"
    mem_kib = int(field("/proc/meminfo", "MemTotal").split()[0])
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory_gib": round(mem_kib / (1 << 20), 1),
        "kernel": platform.release(),
        "os": platform.platform(),
        "docker": local_client().version()["Version"],
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def image_figures(client: docker.DockerClient, skip_cold: bool) -> dict[str, Any]:
    hub_stack = HubopsStack(client)
    out: dict[str, Any] = {"hubops": {}, "plain": {}}
    try:
        if not skip_cold:
            start = time.monotonic()
            built = hub_stack.build(no_cache=True)
            out["hubops"]["cold_build_s"] = time.monotonic() - start
            plain = PlainStack.build(client, no_cache=True)
            out["plain"]["cold_build_s"] = sum(plain.values())
        built = hub_stack.build()
        start = time.monotonic()
        built = hub_stack.build()
        out["hubops"]["noop_build_s"] = time.monotonic() - start
        out["hubops"]["sizes_mb"] = {b.pinned: b.size / 1e6 for b in built}
        ids = {b.image_id for b in built}
        data = hub_stack.env_data()
        data["singleuser"]["mem_limit"] = "3G"  # a config-only change
        hub_stack.set_env(data)
        start = time.monotonic()
        rebuilt = hub_stack.build()
        out["hubops"]["config_change_build_s"] = time.monotonic() - start
        out["hubops"]["config_change_rebuilt_images"] = sum(
            1 for b in rebuilt if b.image_id not in ids
        )
        PlainStack.build(client)
        start = time.monotonic()
        PlainStack.build(client)
        out["plain"]["noop_build_s"] = time.monotonic() - start
        out["plain"]["sizes_mb"] = {
            tag: client.images.get(tag).attrs["Size"] / 1e6
            for tag in (PlainStack.HUB_IMAGE, PlainStack.SINGLEUSER_IMAGE)
        }
        # a hand-made setup mounts its config, so a config change rebuilds nothing either
        out["plain"]["config_change_build_s"] = 0.0
        out["plain"]["config_change_rebuilt_images"] = 0
    finally:
        hub_stack.stop()
    return out


def stack_figures(stack: Stack, runs: int, sizes: list[int]) -> dict[str, Any]:
    tag = stack.name[0]
    stack.start()
    try:
        measure.stop_all(stack)
        latency = measure.spawn_latency(stack, runs, tag)
        out: dict[str, Any] = {
            "latency": {"runs": latency.runs, "p50_s": latency.p50, "p95_s": latency.p95}
        }
        out["concurrent"] = []
        for n in sizes:
            result = measure.concurrent_logins(stack, n, tag)
            out["concurrent"].append(asdict(result))
            if n == 10:
                out["memory"] = asdict(measure.memory(stack, n))
                out["memory"]["idle_user_mib"] = measure.Memory(**out["memory"]).idle_user_mib
            measure.stop_all(stack)
            print(
                f"{stack.name}: {n} concurrent: {result.wall_s:.1f}s, {result.failures} failures",
                *result.errors[:3],
                sep="\n  ",
                flush=True,
            )
        out["deploy"] = deploy_figures(stack)
        return out
    finally:
        stack.stop()


def swarm_figures(stack: Stack, runs: int) -> dict[str, Any]:
    """Login to JupyterLab ready on the swarm (the figure to set next to the single host's,
    measured in the same run)."""
    stack.start()
    try:
        measure.stop_all(stack)
        latency = measure.spawn_latency(stack, runs, "w")
        return {"latency": {"runs": latency.runs, "p50_s": latency.p50, "p95_s": latency.p95}}
    finally:
        stack.stop()


def concurrent_only(stack: Stack, sizes: list[int], tag: str) -> list[dict[str, Any]]:
    stack.start()
    try:
        out = []
        for n in sizes:
            measure.stop_all(stack)
            result = measure.concurrent_logins(stack, n, tag)
            out.append(asdict(result))
            print(f"{stack.name}: {n} concurrent: {result.wall_s:.1f}s, {result.failures} failures")
        return out
    finally:
        stack.stop()


def deploy_figures(stack: Stack) -> dict[str, Any]:
    users = [f"{stack.name[0]}dep{n}" for n in range(5)]
    for user in users:
        measure.login_to_lab(stack, user)
    if isinstance(stack, HubopsStack):
        start = time.monotonic()
        stack.deploy()
        noop = time.monotonic() - start
        data = stack.env_data()
        data["singleuser"]["start_timeout"] = 301  # a config change

        def change() -> Any:
            stack.set_env(data)
            return stack.deploy()
    else:
        noop = float("nan")  # there is no deploy tool: every change replaces the hub

        def change() -> Any:
            stack.redeploy()
            wait_healthy(stack.url)

    unavailable, _ = measure.availability_during(stack, change)
    alive = measure.servers_alive(stack, users)
    measure.stop_all(stack)
    return {
        "noop_deploy_s": noop,
        "config_change_unavailable_s": unavailable,
        "servers_before": len(users),
        "servers_lost": len(users) - alive,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=None, help="results directory")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="3 latency runs, 1 and 10 concurrent users, no cold builds",
    )
    parser.add_argument("--runs", type=int, default=None, help="latency runs per setup")
    parser.add_argument(
        "--sizes", default=None, help="concurrent logins to measure, e.g. 1,10,30,50"
    )
    parser.add_argument(
        "--stacks",
        default="hubops,plain,swarm",
        help="which setups to run (hubops, plain, swarm: hubops on a two-node swarm of this "
        "machine's engines, login latency only; none)",
    )
    parser.add_argument("--no-images", action="store_true", help="skip the image figures")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold builds only")
    parser.add_argument(
        "--extensions",
        action="store_true",
        help="what each server extension of the singleuser image costs (start, idle memory)",
    )
    parser.add_argument(
        "--data-backup",
        type=float,
        default=0.0,
        metavar="GB",
        help="backups of the users' files (restic in the hub image): a full backup of GB of "
        "random data, an unchanged and a 1 %% incremental one, a user's restore (e.g. 1)",
    )
    parser.add_argument(
        "--experiment",
        default="",
        help="config lines appended to hubops' rendered config, to measure a change "
        "before making it, e.g. 'c.JupyterHub.concurrent_spawn_limit = 10'",
    )
    args = parser.parse_args(argv)
    out = args.out or REPO / "results" / f"bench-{datetime.now():%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    ensure_docker(LocalHost())
    client = local_client()
    runs = args.runs or (3 if args.quick else 10)
    sizes = [int(n) for n in args.sizes.split(",")] if args.sizes else None
    sizes = sizes or ([1, 10] if args.quick else [1, 10, 30, 50])
    results: dict[str, Any] = {"machine": machine(), "quick": args.quick}
    factories = {
        "hubops": partial(HubopsStack, extra_config=args.experiment),
        "plain": PlainStack,
        "swarm": partial(SwarmStack, extra_config=args.experiment),
    }
    results["experiment"] = args.experiment
    hubops_timeout = environments.load(REPO, "local").settings.singleuser.start_timeout
    try:
        if not args.no_images:
            results["images"] = image_figures(client, args.quick or args.no_cold)
        if args.extensions:
            results["extensions"] = extensions.costs(client, "hubops/singleuser:base")
        if args.data_backup:
            results["data_backup"] = databackup.costs(client, args.data_backup)
            (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
        for name in (n for n in args.stacks.split(",") if n not in ("", "none")):
            stack = factories[name](client)
            print(f"== {stack.name}", flush=True)
            if name == "swarm":
                results[stack.name] = swarm_figures(stack, runs)
            else:
                results[stack.name] = stack_figures(stack, runs, sizes)
            (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
        plain = results.get("plain", {}).get("concurrent", [])
        failed = [c["users"] for c in plain if c["failures"]]
        if failed:
            # JupyterHub's default timeouts fail a large class here; measure plain again with
            # hubops' timeouts, so that the wall times can be compared at all.
            stack = PlainStack(client, "plain-timeouts", timeout=hubops_timeout)
            print(f"== {stack.name}", flush=True)
            results["plain_timeouts"] = {
                "timeout_s": hubops_timeout,
                "concurrent": concurrent_only(stack, failed, "t"),
            }
    finally:
        (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    write_report(results, out)
    print(f"results: {out / 'results.json'}\nreport:  {out / 'report.md'}")


if __name__ == "__main__":
    main()
