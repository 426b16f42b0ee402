"""What backing up the users' files costs (``invoke data.backup``): restic in the hub image.

A users' directory of ``size_gb`` (default 1 GB) of incompressible random data in files of
mixed sizes, over 20 users: many small files (4-64 KiB, a notebook's outputs, code), some
medium (1-8 MiB) and a few large (32-128 MiB, data and checkpoints). Then, with the same
container the script on the hub host runs (hubops.ops.databackup.docker_run, the image built
from this checkout), each on this machine's engine:

- the first (full) backup: time, and the repository's size on disk;
- a backup with nothing changed: time (the nightly run of a quiet lab);
- after 1 % of the bytes changed (half rewritten files, half new ones): time, and the bytes
  the backup added to the repository;
- the restore of the largest user's directory into ``restored-<time>/``: time.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import docker

from hubops.config import environments
from hubops.config.settings import Environment, PathSettings
from hubops.images.build import build
from hubops.ops import databackup
from hubops.ops.datarestore import stamp

USERS = 20
KIB, MIB = 1024, 1024 * 1024
# (share of the bytes, smallest file, largest file)
MIX = ((0.15, 4 * KIB, 64 * KIB), (0.35, 1 * MIB, 8 * MIB), (0.50, 32 * MIB, 128 * MIB))
ENV = "bench"


def make_files(root: Path, size: int, rng: random.Random) -> list[Path]:
    """``size`` bytes of random data in files of the mixed sizes, spread over the users."""
    made = []
    for share, low, high in MIX:
        left = int(size * share)
        while left > 0:
            n = min(left, rng.randint(low, high))
            user = root / f"jupyterhub-user-bench{rng.randrange(USERS):02d}"
            path = user / f"d{rng.randrange(8)}" / f"f{len(made):06d}.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(os.urandom(n))
            made.append(path)
            left -= n
    return made


def change(files: list[Path], fraction: float, rng: random.Random) -> int:
    """Rewrite files, then add new ones, until ``fraction`` of the bytes are new: half each."""
    total = sum(p.stat().st_size for p in files)
    budget, changed = int(total * fraction), 0
    for path in rng.sample(files, len(files)):
        size = path.stat().st_size
        if changed + size > budget / 2:
            continue
        path.write_bytes(os.urandom(size))
        changed += size
    extra = budget - changed
    new = files[0].parent / "new-since-the-first-backup.bin"
    new.write_bytes(os.urandom(extra))
    return changed + extra


def du(path: Path) -> int:
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def settings_for(root: Path) -> Environment:
    base = environments.load(Path(__file__).resolve().parents[1], "local").settings
    paths = PathSettings(
        config_dir=str(root / "etc"), data_dir=str(root / "srv"), user_data_dir=str(root / "users")
    )
    return base.model_copy(update={"paths": paths})


def run(argv: list[str]) -> tuple[float, dict[str, Any]]:
    start = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - start
    found = databackup.last_json(done.stdout)
    if found is None or not found.get("ok"):
        raise RuntimeError(f"{argv[-1]} failed: {done.stdout[-500:]} {done.stderr[-500:]}")
    return seconds, found


def costs(client: docker.DockerClient, size_gb: float = 1.0, seed: int = 24) -> dict[str, Any]:
    repo = Path(__file__).resolve().parents[1]
    (hub,) = build(client, repo, environments.load(repo, "local"), only=["hub"])
    image = hub.pinned
    rng = random.Random(seed)
    root = Path(tempfile.mkdtemp(prefix="hubops-bench-backup-"))
    try:
        s = settings_for(root)
        (root / "srv" / "secrets").mkdir(parents=True)
        (root / "srv" / "secrets" / "backup_password").write_text("bench-password-0123456789")
        local = databackup.local_repository(s)
        assert local is not None
        Path(local).mkdir(mode=0o700)
        start = time.monotonic()
        files = make_files(root / "users", int(size_gb * 1e9), rng)
        made_s = time.monotonic() - start
        data = du(root / "users")
        keep = databackup.keep_args(s)

        def backup() -> tuple[float, dict[str, Any]]:
            return run(databackup.docker_run(s, ENV, image, "backup", *keep))

        full_s, full = backup()
        repo_full = du(Path(local))
        noop_s, noop = backup()
        changed = change(files, 0.01, rng)
        incr_s, incr = backup()
        repo_after = du(Path(local))
        sizes = {d.name: du(d) for d in (root / "users").iterdir()}
        user = max(sizes, key=lambda name: sizes[name])  # the user with the most data
        user_bytes = sizes[user]
        restore_s, _ = run(
            databackup.docker_run(
                s,
                ENV,
                image,
                "restore",
                "--snapshot",
                str(incr["snapshot"]),
                "--directory",
                user,
                "--stamp",
                stamp(datetime.now(timezone.utc)),
                users_writable=True,
            )
        )
        return {
            "image": image,
            "data_bytes": data,
            "files": len(files),
            "users": USERS,
            "make_files_s": made_s,
            "full": {
                "seconds": full_s,
                "bytes_added": full["bytes_added"],
                "repo_bytes": repo_full,
            },
            "unchanged": {"seconds": noop_s, "bytes_added": noop["bytes_added"]},
            "incremental": {
                "changed_bytes": changed,
                "seconds": incr_s,
                "bytes_added": incr["bytes_added"],
                "repo_growth_bytes": repo_after - repo_full,
            },
            "restore_one_user": {"bytes": user_bytes, "seconds": restore_s},
            "restic": _restic_version(image),
        }
    finally:
        # root-owned files (restic's cache, the restored copy): the same container removes them
        rm = ["--entrypoint", "rm", image, "-rf", "/x/srv", "/x/users"]
        subprocess.run(["docker", "run", "--rm", "-v", f"{root}:/x", *rm], check=False)
        shutil.rmtree(root, ignore_errors=True)


def _restic_version(image: str) -> str:
    out = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "restic", image, "version"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip()
