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

import os
import string
from typing import Any

from escapism import escape

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
    non-root user cannot write. An existing directory keeps its content and owner.
    """
    if not name:
        raise ValueError("empty user name")
    path = os.path.join(root, prefix + escape_username(name))
    real_root = os.path.realpath(root)
    if os.path.dirname(os.path.realpath(path)) != real_root:
        raise ValueError(f"user directory {path!r} would leave {root!r}")
    try:
        os.mkdir(path, 0o750)
    except FileExistsError:
        return path
    os.chown(path, uid, gid)
    os.chmod(path, 0o750)
    return path


def pre_spawn_hook(root: str, prefix: str, uid: int, gid: int) -> Any:
    """A Spawner.pre_spawn_hook that makes the user's directory before the container starts."""

    def hook(spawner: Any) -> None:
        path = make_user_dir(root, prefix, spawner.user.name, uid, gid)
        spawner.log.info("user directory for %s: %s", spawner.user.name, path)

    return hook
