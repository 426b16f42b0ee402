"""User names -> host directories, and the directories themselves.

The escaping is hubops' own, fixed here, so that upgrading DockerSpawner (whose default escape
has changed before) never renames a user's directory. It is escapism's scheme: lower-case
letters and digits stay, every other character becomes ``-XX`` (its UTF-8 bytes in hex). The
escape character ``-`` is itself escaped, so the mapping is one-to-one: ``a.b`` -> ``a-2eb``,
``a-b`` -> ``a-2db``. Slashes and dots are escaped: no path traversal. Names with control
characters (NUL included) are refused: escapism writes bytes below 0x10 with one hex digit,
which would make ``"\x01" + "0"`` and ``"\x10"`` collide.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import string
import tarfile
import time
from typing import Any

from escapism import escape

USER_DIR_PREFIX = "jupyterhub-user-"  # <user_data_dir>/jupyterhub-user-<escaped name>
SAFE = set(string.ascii_lowercase + string.digits)
ESCAPE_CHAR = "-"


def escape_username(name: str) -> str:
    """The stable, collision-free, path-safe form of a user name (DockerSpawner.escape).

    DockerSpawner also escapes server names with it; the default server's name is "".
    """
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name):
        raise ValueError(f"user name {name!r} holds a control character")
    return str(escape(name, safe=SAFE, escape_char=ESCAPE_CHAR)).lower()


def make_user_dir(root: str, prefix: str, name: str, uid: int, gid: int) -> str:
    """Create ``<root>/<prefix><escaped name>`` owned by uid:gid (mode 0750), if missing.

    Docker would create a missing bind-mount source owned by root, which the container's
    non-root user cannot write. An existing directory keeps its content; one that belongs to
    someone else (a per-user uid, before the environment went back to the shared uid) is
    handed back to uid:gid.
    """
    path = user_dir(root, prefix, name)
    try:
        os.mkdir(path, 0o750)
    except FileExistsError:
        st = os.stat(path)
        if (st.st_uid, st.st_gid) != (uid, gid):
            hand_over(path, uid, gid, 0o750)
        return path
    os.chown(path, uid, gid)
    os.chmod(path, 0o750)
    return path


def hand_over(path: str, uid: int, gid: int, mode: int) -> None:
    """Give a user's directory and everything in it to uid:gid; the top gets ``mode``."""
    os.chmod(path, mode)
    for top, dirs, files in os.walk(path):
        for entry in [top, *(os.path.join(top, n) for n in dirs + files)]:
            os.lchown(entry, uid, gid)


PER_USER_SPAN = 65536  # uids hubops hands out from singleuser.per_user_uid_start on


def user_dir(root: str, prefix: str, name: str) -> str:
    if not name:
        raise ValueError("empty user name")
    path = os.path.join(root, prefix + escape_username(name))
    if os.path.dirname(os.path.realpath(path)) != os.path.realpath(root):
        raise ValueError(f"user directory {path!r} would leave {root!r}")
    return path


def per_user_dir(root: str, prefix: str, name: str, start: int) -> tuple[str, int]:
    """The user's directory and uid with per-user uids: the directory's owner when it is one
    of hubops' uids, else the next free one (the directory is created, or taken over from the
    shared uid: chowned through, 0700). The uid is also the gid of the user's private group.

    The owners of the directories are the record: nothing else to keep in step. The hub calls
    this from its event loop, one spawn at a time, so two users never get the same uid.
    """
    path = user_dir(root, prefix, name)
    span = range(start, start + PER_USER_SPAN)
    try:
        owner = os.stat(path).st_uid
    except FileNotFoundError:
        owner = None
    if owner is not None and owner in span:
        return path, owner
    taken = set()
    with os.scandir(root) as entries:
        for entry in entries:
            if entry.name.startswith(prefix):
                uid = entry.stat(follow_symlinks=False).st_uid
                if uid in span:
                    taken.add(uid)
    free = next((u for u in span if u not in taken), None)
    if free is None:
        raise RuntimeError(f"all {PER_USER_SPAN} per-user uids from {start} on are taken")
    if owner is None:
        os.mkdir(path, 0o700)
    hand_over(path, free, free, 0o700)
    return path, free


def pre_spawn_hook(
    root: str, prefix: str, uid: int, gid: int, per_user_start: int | None = None
) -> Any:
    """A Spawner.pre_spawn_hook that makes the user's directory before the container starts.

    With ``per_user_start`` (singleuser.host_uids: per-user) the server runs as the user's own
    uid and private group. HOME is their directory in both modes (the hub's config sets it)."""

    def hook(spawner: Any) -> None:
        name = spawner.user.name
        if per_user_start is None:
            path = make_user_dir(root, prefix, name, uid, gid)
            spawner.log.info("user directory for %s: %s", name, path)
            return
        path, own = per_user_dir(root, prefix, name, per_user_start)
        spawner.extra_create_kwargs = {
            **(spawner.extra_create_kwargs or {}),
            "user": f"{own}:{own}",
        }
        spawner.log.info("user directory for %s: %s (uid %s)", name, path, own)

    return hook


ARCHIVE_DIR = ".deleted"  # in the user data directory: archives of deleted users' directories


def archive_name(prefix: str, name: str, when: float) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(when))
    return f"{prefix}{escape_username(name)}-{stamp}.tar.gz"


def archive_user_dir(root: str, prefix: str, name: str, when: float) -> str | None:
    """Archive a deleted user's directory as ``<root>/.deleted/<dir>-<UTC time>.tar.gz``
    (owners and modes kept, root-only), then remove the directory; the archive's path, or None
    when the user had no directory. The archive is complete before anything is removed: a
    failure leaves the directory as it was (and no partial archive)."""
    path = user_dir(root, prefix, name)
    if not os.path.isdir(path):
        return None
    folder = os.path.join(root, ARCHIVE_DIR)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    target = os.path.join(folder, archive_name(prefix, name, when))
    partial = target + ".partial"
    try:
        with tarfile.open(partial, "w:gz") as tar:
            tar.add(path, arcname=os.path.basename(path))
        os.chmod(partial, 0o600)
        os.replace(partial, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        raise
    shutil.rmtree(path)
    return target


def archive_pattern(prefix: str, name: str) -> re.Pattern[str]:
    """The file names of ``name``'s archives (``archive_name``'s), to match whole."""
    return re.compile(re.escape(prefix + escape_username(name)) + r"-\d{8}T\d{6}Z\.tar\.gz")


def archives(root: str, prefix: str, name: str) -> list[str]:
    """The archives of ``name``'s directory, oldest first."""
    folder = os.path.join(root, ARCHIVE_DIR)
    pattern = archive_pattern(prefix, name)
    try:
        found = sorted(f for f in os.listdir(folder) if pattern.fullmatch(f))
    except FileNotFoundError:
        return []
    return [os.path.join(folder, f) for f in found]
