"""GPU-seconds per user and group, held and busy, from the GPU monitor's samples.

The monitor (``hubops_hub.gpumon``) adds, at each sample, the time since its previous sample
(or since the holder's start, whichever is later) to each holder: times the GPUs it holds
(held), and times those of its GPUs it used at that sample (busy, the monitor's own rule; see
``gpumon.busy_count``). A sample that comes more than ``MAX_GAP`` samples after the one before
(the monitor was down) adds nothing for the gap: what happened then is not known.

They are kept by the hour in a SQLite file of their own in the hub's data directory
(``USAGE_DB``): a hub restart loses nothing, and hubops' DB backups copy it with the hub's
DB (hubops.deploy.backup). Groups are the ones the servers' labels name: the group whose
profile gave the GPU, at the time of the spawn.

    python3 -m hubops_hub.gpuusage --since 2592000 --by user   # JSON, for `invoke gpus --usage`
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

USAGE_DB = "/srv/jupyterhub/hubops-gpu-usage.sqlite"  # hubops.plan.model.GPU_USAGE_FILE
MAX_GAP = 3  # samples: a longer gap between two samples is not counted
HOUR = 3600

SCHEMA = """
CREATE TABLE IF NOT EXISTS gpu_seconds (
    hour INTEGER NOT NULL,      -- Unix time of the hour's start (UTC)
    user TEXT NOT NULL,
    grp TEXT NOT NULL,          -- "" for a profile that names no group
    held REAL NOT NULL,         -- GPU-seconds held
    busy REAL NOT NULL,         -- GPU-seconds busy
    PRIMARY KEY (hour, user, grp)
)
"""


@dataclass(frozen=True)
class Charge:
    user: str
    group: str
    held: float  # GPU-seconds
    busy: float


def connect(path: str = USAGE_DB) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=10)
    db.execute(SCHEMA)
    return db


def record(path: str, at: float, charges: Iterable[Charge]) -> None:
    """Add the charges of one sample (taken at ``at``) to its hour, in one transaction."""
    rows = [
        (int(at // HOUR) * HOUR, c.user, c.group, c.held, c.busy)
        for c in charges
        if c.held > 0 or c.busy > 0
    ]
    if not rows:
        return
    db = connect(path)
    try:
        with db:
            db.executemany(
                "INSERT INTO gpu_seconds (hour, user, grp, held, busy) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (hour, user, grp) DO UPDATE SET held = held + excluded.held, "
                "busy = busy + excluded.busy",
                rows,
            )
    finally:
        db.close()


def totals(path: str = USAGE_DB, since: float = 0.0, by: str = "both") -> list[dict[str, Any]]:
    """GPU-seconds since ``since`` (Unix time; 0: ever; the hour that holds it counts whole),
    per user and group (``by`` both), per user, or per group; the most held first."""
    columns = {"both": "user, grp", "user": "user", "group": "grp"}[by]
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    except sqlite3.OperationalError:
        return []
    try:
        rows = db.execute(
            f"SELECT {columns}, SUM(held), SUM(busy) FROM gpu_seconds "
            f"WHERE hour >= ? GROUP BY {columns} ORDER BY SUM(held) DESC, {columns}",
            (int(since // HOUR) * HOUR,),
        ).fetchall()
    except sqlite3.OperationalError:  # no table yet: nothing was ever held
        return []
    finally:
        db.close()
    out = []
    for row in rows:
        *keys, held, busy = row
        entry: dict[str, Any] = {"held_seconds": round(held, 1), "busy_seconds": round(busy, 1)}
        if by in ("both", "user"):
            entry["user"] = keys[0]
        if by in ("both", "group"):
            entry["group"] = keys[-1]
        out.append(entry)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hubops-gpu-usage", description=__doc__)
    parser.add_argument("--db", default=USAGE_DB)
    parser.add_argument("--since", type=float, default=0, help="seconds back; 0: ever")
    parser.add_argument("--by", choices=("user", "group", "both"), default="user")
    args = parser.parse_args(argv)
    now = time.time()
    since = now - args.since if args.since else 0.0
    rows = totals(args.db, since, args.by)
    print(json.dumps({"now": now, "since": since, "by": args.by, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
