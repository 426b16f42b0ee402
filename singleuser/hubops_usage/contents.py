"""Saving when the user's disk is full, or they are over a hard quota: one clear message.

jupyter_server's atomic save copies the old file aside, writes the new one in its place, and
puts the copy back when the write fails. A new file has no copy, so on a full disk the user saw
``[Errno 2] No such file or directory: '.~name' -> 'name'`` (the failed restore) instead of
why the save failed. This manager answers 507 with what happened and what to do, removes what a
failed first save of a new file left, and keeps the old content of an existing one (which
jupyter_server's copy restores). ``c.ServerApp.contents_manager_class`` names it.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from typing import Any

from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager
from tornado.web import HTTPError

WHY = {
    errno.ENOSPC: "the disk that holds your files is full",
    errno.EDQUOT: "your files are over your disk quota",
}


def full_disk(exc: BaseException | None) -> int | None:
    """ENOSPC or EDQUOT, where ``exc`` or an error it was raised while handling is one."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in WHY:
            return exc.errno
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def message(code: int) -> str:
    return (
        f"Not saved: {WHY[code]}. Delete files you do not need (large checkpoints, datasets, "
        "~/.cache), then save again. The last saved version of this file is kept."
    )


class HubopsFileManager(AsyncLargeFileManager):  # type: ignore[misc]
    @contextlib.contextmanager
    def atomic_writing(self, os_path: str, *args: Any, **kwargs: Any) -> Iterator[Any]:
        existed = os.path.isfile(os_path)
        try:
            with super().atomic_writing(os_path, *args, **kwargs) as f:
                yield f
        except (OSError, HTTPError) as exc:
            code = full_disk(exc)
            if code is None:
                raise
            if not existed:  # a first save: nothing to keep of a half-written file
                with contextlib.suppress(OSError):
                    os.remove(os_path)
            self.log.warning("could not save %s: %s", os_path, WHY[code])
            raise HTTPError(507, message(code)) from exc
