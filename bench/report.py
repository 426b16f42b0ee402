"""results.json -> report.md with plots (matplotlib), hubops/plain ratios and the targets."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

TARGETS = [
    ("single login to JupyterLab (p50)", "latency_ratio", "<= 0.5x plain"),
    ("30 concurrent logins, wall time", "concurrent30_ratio", "<= 0.5x plain, 0 failures"),
    ("idle user server RSS", "idle_mib", "<= 70 MiB"),
    ("no-op deploy", "noop_deploy_s", "<= 3 s"),
    ("user servers lost on redeploy", "servers_lost", "0"),
]


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(b) else float("nan")


def _pct(times: list[float], q: float) -> float | None:
    """The q-quantile of sorted ``times`` (nearest rank); None for none."""
    return times[min(len(times) - 1, round(q * (len(times) - 1)))] if times else None


def _concurrent(stack: dict[str, Any], n: int) -> dict[str, Any] | None:
    return next((c for c in stack.get("concurrent", []) if c["users"] == n), None)


def comparable(results: dict[str, Any], n: int) -> dict[str, Any] | None:
    """Plain's figure for n users, or, where plain failed logins (JupyterHub's default
    timeouts), the run of plain with hubops' timeouts: a wall time of failures means nothing."""
    plain = _concurrent(results.get("plain", {}), n)
    if plain and plain["failures"]:
        return _concurrent(results.get("plain_timeouts", {}), n)
    return plain


def summary(results: dict[str, Any]) -> dict[str, Any]:
    h, p = results.get("hubops", {}), results.get("plain", {})
    s: dict[str, Any] = {}
    if h.get("latency") and p.get("latency"):
        s["latency_ratio"] = ratio(h["latency"]["p50_s"], p["latency"]["p50_s"])
    h30, p30 = _concurrent(h, 30), comparable(results, 30)
    if h30 and p30:
        s["concurrent30_ratio"] = ratio(h30["wall_s"], p30["wall_s"])
        s["concurrent30_failures"] = h30["failures"]
    if h.get("memory"):
        s["idle_mib"] = h["memory"]["idle_user_mib"]
    if h.get("deploy"):
        s["noop_deploy_s"] = h["deploy"]["noop_deploy_s"]
        s["servers_lost"] = h["deploy"]["servers_lost"]
    return s


def _met(key: str, value: float, s: dict[str, Any]) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "not measured"
    ok = {
        "latency_ratio": value <= 0.5,
        "concurrent30_ratio": value <= 0.5 and s.get("concurrent30_failures", 1) == 0,
        "idle_mib": value <= 70,
        "noop_deploy_s": value <= 3,
        "servers_lost": value == 0,
    }[key]
    return "met" if ok else "**not met**"


def _bars(ax: Any, labels: list[str], hubops: list[float], plain: list[float]) -> None:
    x = range(len(labels))
    ax.bar([i - 0.2 for i in x], hubops, 0.4, label="hubops")
    ax.bar([i + 0.2 for i in x], plain, 0.4, label="plain")
    ax.set_xticks(list(x), labels)


def plots(results: dict[str, Any], out: Path) -> list[str]:
    files = []

    def save(fig: Any, ax: Any, name: str, title: str, ylabel: str) -> None:
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        files.append(name)
        plt.close(fig)

    h, p = results.get("hubops", {}), results.get("plain", {})
    if h.get("latency") and p.get("latency"):
        fig, ax = plt.subplots(figsize=(5, 3))
        keys = ["p50_s", "p95_s"]
        _bars(ax, ["p50", "p95"], [h["latency"][k] for k in keys], [p["latency"][k] for k in keys])
        save(fig, ax, "latency.png", "login to JupyterLab ready", "seconds")
    if h.get("concurrent") and p.get("concurrent"):
        fig, ax = plt.subplots(figsize=(5, 3))
        t = results.get("plain_timeouts", {})
        for name, stack in (("hubops", h), ("plain", p), ("plain, hubops' timeouts", t)):
            runs = [c for c in stack.get("concurrent", []) if not c["failures"]]
            if runs:
                xs = [c["users"] for c in runs]
                ax.plot(xs, [c["wall_s"] for c in runs], marker="o", label=name)
        ax.set_xlabel("users logging in at once")
        save(
            fig,
            ax,
            "concurrent.png",
            "concurrent logins (runs without failures)",
            "seconds until all ready",
        )
    if h.get("memory") and p.get("memory"):
        fig, ax = plt.subplots(figsize=(5, 3))
        keys = ["idle_user_mib", "hub_rss_mib", "proxy_rss_mib"]
        _bars(
            ax,
            ["user server", "hub", "proxy"],
            [h["memory"][k] for k in keys],
            [p["memory"][k] for k in keys],
        )
        save(fig, ax, "memory.png", "memory with 10 idle users", "MiB (RSS)")
    return files


def _f(value: Any, unit: str = "", digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}{unit}"


def write_report(results: dict[str, Any], out: Path, image_prefix: str = "") -> Path:
    s = summary(results)
    m = results.get("machine", {})
    h, p = results.get("hubops", {}), results.get("plain", {})
    images = results.get("images", {})
    lines = [
        "# hubops benchmarks",
        "",
        f"Measured {m.get('date', '?')} on {m.get('cpu', '?')} ({m.get('cores', '?')} cores), "
        f"{m.get('memory_gib', '?')} GiB, Docker {m.get('docker', '?')}, {m.get('os', '?')}."
        + (" **Quick run** (fewer samples)." if results.get("quick") else "")
        + (
            f" **Experiment:** `{results['experiment']}` added to hubops' config."
            if results.get("experiment")
            else ""
        ),
        "",
        "hubops is compared, in the same run, with the hand-made setup it replaces "
        "(`bench/plain/`: one jupyterhub_config.py with shared-password login, DockerSpawner "
        "with its defaults, the proxy inside the hub, `docker run`). Ratios are hubops / plain.",
        "",
        "## Targets",
        "",
        "| target | goal | measured | |",
        "|---|---|---|---|",
    ]
    for label, key, goal in TARGETS:
        value = s.get(key)
        shown = _f(value, "x", 2) if key.endswith("ratio") else _f(value, "", 2)
        lines.append(f"| {label} | {goal} | {shown} | {_met(key, value, s)} |")
    lines += [
        "",
        "## Spawn latency (login to JupyterLab ready)",
        "",
        "| | hubops | plain | ratio |",
        "|---|---|---|---|",
    ]
    if h.get("latency") and p.get("latency"):
        for key in ("p50_s", "p95_s"):
            lines.append(
                f"| {key[:3]} | {_f(h['latency'][key], ' s', 2)} | "
                f"{_f(p['latency'][key], ' s', 2)} | "
                f"{_f(ratio(h['latency'][key], p['latency'][key]), 'x', 2)} |"
            )
        lines.append(f"| runs | {len(h['latency']['runs'])} | {len(p['latency']['runs'])} | |")
    w = results.get("swarm", {})
    if w.get("latency") and h.get("latency"):
        lines += [
            "",
            "## Swarm (login to JupyterLab ready)",
            "",
            "hubops with `cluster: swarm` on a two-node swarm of this machine's engines (the "
            "hub on the manager, servers as services; https, as a non-loopback hub needs), "
            "next to hubops on a single host, in this run.",
            "",
            "| | single host | swarm | ratio |",
            "|---|---|---|---|",
        ]
        for key in ("p50_s", "p95_s"):
            lines.append(
                f"| {key[:3]} | {_f(h['latency'][key], ' s', 2)} | "
                f"{_f(w['latency'][key], ' s', 2)} | "
                f"{_f(ratio(w['latency'][key], h['latency'][key]), 'x', 2)} |"
            )
        lines.append(f"| runs | {len(h['latency']['runs'])} | {len(w['latency']['runs'])} | |")
    t = results.get("plain_timeouts", {})
    lines += [
        "",
        "## Concurrent logins",
        "",
        "Wall time until every user's JupyterLab answers; the hub's event-loop lag is the "
        "slowest answer to `/hub/api` (asked every 100 ms) during the logins; CPU is the hub, "
        "proxy and user containers' CPU time divided by the servers started.",
        "",
        "| users | hubops wall | plain wall | plain wall, hubops' timeouts | ratio | "
        "failures (hubops / plain / plain, hubops' timeouts) | hub lag max (hubops / plain) | "
        "CPU s per spawn (hubops / plain) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in h.get("concurrent", []):
        n = c["users"]
        q = _concurrent(p, n) or {}
        r = _concurrent(t, n) or {}
        base = comparable(results, n) or {}
        lines.append(
            f"| {n} | {_f(c['wall_s'], ' s')} | {_f(q.get('wall_s'), ' s')} | "
            f"{_f(r.get('wall_s'), ' s')} | "
            f"{_f(ratio(c['wall_s'], base.get('wall_s', float('nan'))), 'x', 2)} | "
            f"{c['failures']} / {q.get('failures', 'n/a')} / {r.get('failures', '-')} | "
            f"{_f(c['lag_max_s'], ' s', 2)} / {_f(q.get('lag_max_s'), ' s', 2)} | "
            f"{_f(c['cpu_s_per_spawn'], '', 2)} / {_f(q.get('cpu_s_per_spawn'), '', 2)} |"
        )
    lines += [
        "",
        "Each login's time to JupyterLab, for the logins that got there:",
        "",
        "| users | setup | ready | p50 | p95 | slowest |",
        "|---|---|---|---|---|---|",
    ]
    for c in h.get("concurrent", []):
        n = c["users"]
        for name, run in (
            ("hubops", c),
            ("plain", _concurrent(p, n)),
            ("plain, hubops' timeouts", _concurrent(t, n)),
        ):
            if run:
                times = sorted(run.get("times") or [])
                lines.append(
                    f"| {n} | {name} | {len(times)} of {n} | {_f(_pct(times, 0.5), ' s')} | "
                    f"{_f(_pct(times, 0.95), ' s')} | {_f(times[-1] if times else None, ' s')} |"
                )
    if t:
        lines += [
            "",
            "Where plain failed logins, the ratio is taken against the run of plain with "
            "hubops' timeouts (start and HTTP: "
            f"{results.get('plain_timeouts', {}).get('timeout_s', '?')} s), the first change "
            "an admin makes after such a morning.",
        ]
    errors = [
        (name, e)
        for name, stack in (("hubops", h), ("plain", p), ("plain, hubops' timeouts", t))
        for c in stack.get("concurrent", [])
        for e in c.get("errors", [])[:2]
    ]
    if errors:
        lines += ["", "Failed logins (two per run at most):", ""]
        lines += [f"- {name}: `{e}`" for name, e in errors]
    if h.get("memory") and p.get("memory"):
        lines += [
            "",
            "## Memory (10 idle users)",
            "",
            "| | hubops | plain | ratio |",
            "|---|---|---|---|",
        ]
        for key, label in (
            ("idle_user_mib", "user server RSS (median)"),
            ("hub_rss_mib", "hub RSS (plain: with its proxy inside)"),
            ("proxy_rss_mib", "proxy RSS"),
        ):
            a, b = h["memory"][key], p["memory"][key]
            lines.append(
                f"| {label} | {_f(a, ' MiB')} | {_f(b, ' MiB')} | {_f(ratio(a, b), 'x', 2)} |"
            )
    if images:
        hi, pi = images.get("hubops", {}), images.get("plain", {})
        lines += ["", "## Images", "", "| | hubops | plain | ratio |", "|---|---|---|---|"]
        for key, label, unit in (
            ("cold_build_s", "cold build, all images", " s"),
            ("noop_build_s", "no-op rebuild", " s"),
            ("config_change_build_s", "rebuild after a config-only change", " s"),
            ("config_change_rebuilt_images", "images rebuilt by that change", ""),
        ):
            a, b = hi.get(key), pi.get(key)
            digits = 0 if key.endswith("images") else 1
            lines.append(
                f"| {label} | {_f(a, unit, digits)} | {_f(b, unit, digits)} | "
                f"{_f(ratio(a, b) if a is not None and b else float('nan'), 'x', 2)} |"
            )
        lines += ["", "| image | size |", "|---|---|"]
        for name, size in {**hi.get("sizes_mb", {}), **pi.get("sizes_mb", {})}.items():
            lines.append(f"| `{name}` | {size:.0f} MB |")
    if h.get("deploy") and p.get("deploy"):
        hd, pd = h["deploy"], p["deploy"]
        lines += [
            "",
            "## Deploy",
            "",
            "| | hubops | plain |",
            "|---|---|---|",
            f"| no-op deploy | {_f(hd['noop_deploy_s'], ' s', 2)} | "
            "none (every change replaces the hub) |",
            f"| hub unavailable during a config-change deploy | "
            f"{_f(hd['config_change_unavailable_s'], ' s', 1)} | "
            f"{_f(pd['config_change_unavailable_s'], ' s', 1)} |",
            f"| user servers lost (of {hd['servers_before']}) | {hd['servers_lost']} | "
            f"{pd['servers_lost']} |",
        ]
    ext = results.get("extensions")
    if ext:
        lines += [
            "",
            "## Singleuser server extensions (one server, median of starts)",
            "",
            "| server | ready after `docker run` | idle memory |",
            "|---|---|---|",
        ] + [
            f"| {label} | {_f(v['ready_s'], ' s', 2)} | {_f(v['idle_mib'], ' MiB')} |"
            for label, v in ext.items()
        ]
    lines += _data_backup(results.get("data_backup"))
    files = plots(results, out)
    if files:
        lines += ["", "## Plots", ""] + [f"![{f}]({image_prefix}{f})" for f in files]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _data_backup(b: dict[str, Any] | None) -> list[str]:
    """The users' files' backups (bench/databackup.py)."""
    if not b:
        return []
    gb, mb = 1e9, 1e6
    full, same, incr = b["full"], b["unchanged"], b["incremental"]
    one = b["restore_one_user"]
    return [
        "",
        "## Backups of the users' files (`invoke data.backup`: restic in the hub image)",
        "",
        f"{b['data_bytes'] / gb:.2f} GB of incompressible random data in {b['files']} files "
        f"(4 KiB to 128 MiB) over {b['users']} users' directories, a local repository, "
        f"{b['restic']}; the container the hub host's script runs.",
        "",
        "| run | time | added to the repository | repository |",
        "|---|---|---|---|",
        f"| full | {_f(full['seconds'], ' s')} | {full['bytes_added'] / mb:.0f} MB | "
        f"{full['repo_bytes'] / mb:.0f} MB |",
        f"| nothing changed | {_f(same['seconds'], ' s')} | {same['bytes_added'] / mb:.2f} MB | |",
        f"| 1 % changed ({incr['changed_bytes'] / mb:.0f} MB: files rewritten, files added) | "
        f"{_f(incr['seconds'], ' s')} | {incr['bytes_added'] / mb:.1f} MB | "
        f"+{incr['repo_growth_bytes'] / mb:.1f} MB |",
        f"| restore the largest user ({one['bytes'] / mb:.0f} MB) into restored-&lt;time&gt;/ | "
        f"{_f(one['seconds'], ' s')} | | |",
    ]


def main(argv: list[str] | None = None) -> None:
    """Write a run's report somewhere else, e.g. docs/: ``python -m bench.report
    results/bench-<time>/results.json docs --name benchmarks.md``. Plots go into a folder next
    to the report, and bench/tuning.md (what was tuned, and why) is appended."""
    import argparse
    import json
    import shutil

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("results", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--name", default="benchmarks.md")
    parser.add_argument("--note", default="", help="a paragraph put under the title")
    args = parser.parse_args(argv)
    results = json.loads(args.results.read_text())
    plot_dir = args.out / Path(args.name).stem
    plot_dir.mkdir(parents=True, exist_ok=True)
    report = write_report(results, plot_dir, image_prefix=f"{plot_dir.name}/")
    tuning = Path(__file__).with_name("tuning.md").read_text()
    text = report.read_text()
    if args.note:
        title, rest = text.split("\n", 1)
        text = f"{title}\n\n{args.note}\n{rest}"
    (args.out / args.name).write_text(text + "\n" + tuning)
    report.unlink()
    shutil.copy(args.results, plot_dir / "results.json")
    print(args.out / args.name)


if __name__ == "__main__":
    main()
