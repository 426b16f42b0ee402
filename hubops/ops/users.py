"""Deleted users' directories: the hub archives a deleted user's directory
(``<user_data_dir>/.deleted/<dir>-<UTC time>.tar.gz``, hubops_hub.userdirs); ``invoke
users.purge`` deletes those archives for good."""

from __future__ import annotations

from collections.abc import Callable
from shlex import quote

from hubops_hub.userdirs import ARCHIVE_DIR, USER_DIR_PREFIX, archive_pattern

from hubops.config.settings import Environment
from hubops.errors import HubopsError
from hubops.host.base import Host


def archive_dir(settings: Environment) -> str:
    return f"{settings.paths.user_data_dir}/{ARCHIVE_DIR}"


def user_archives(files: Host, settings: Environment, user: str) -> list[str]:
    """The archives of ``user``'s directory on the host, oldest first."""
    try:
        pattern = archive_pattern(USER_DIR_PREFIX, user)
    except ValueError as exc:
        raise HubopsError(f"--user {user!r}: {exc}") from None
    listing = files.run(f"ls -1 {quote(archive_dir(settings))} 2>/dev/null", check=False)
    return [
        f"{archive_dir(settings)}/{name}"
        for name in sorted(listing.stdout.split())
        if pattern.fullmatch(name)
    ]


def purge(
    files: Host, settings: Environment, user: str, confirm: Callable[[list[str]], bool]
) -> list[str]:
    """Delete ``user``'s archives for good, once ``confirm`` (shown the list) says yes;
    returns what was deleted ([] when not confirmed)."""
    found = user_archives(files, settings, user)
    if not found:
        raise HubopsError(
            f"no archive of {user}'s directory in {archive_dir(settings)} on {files.name}: "
            "the hub archives a user's directory when the user is deleted"
        )
    if not confirm(found):
        return []
    files.run("rm -f -- " + " ".join(quote(p) for p in found))
    return found
