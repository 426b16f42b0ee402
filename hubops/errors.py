"""The one error path: every failure a user can fix is a :class:`HubopsError`.

Tasks turn these into one line on stderr and exit code 1. Anything else is a bug and keeps
its traceback. The tree, in full:

    HubopsError
    ├── ConfigError    an environment file is missing, malformed or invalid
    ├── SecretError    a secret a step needs is not available
    ├── BuildError     an image build failed, or is refused (a dirty tree for a registry)
    ├── PushError      a push failed or could not be verified
    ├── SSHError       the hub host cannot be reached or refuses us
    ├── CommandError   a command on a host failed (its exit code and output)
    ├── BackupError    a backup or restore failed, or names no backup
    ├── LockError      another deploy of the environment holds the host's lock
    └── DeployError    a deploy failed; the message says what was rolled back and what not

    RuleError (a ValueError): a broken cross-field rule inside schema validation, turned into
    a ConfigError that names the key's line
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hubops.host.base import Result


class HubopsError(Exception):
    """A failure the operator can fix: the message says what failed, the value, and what to do."""


class ConfigError(HubopsError):
    """An environment file is missing, malformed or invalid."""


class SecretError(HubopsError):
    """A secret that a step needs is not available."""


class BuildError(HubopsError):
    """An image build failed, or was refused before it started."""


class PushError(HubopsError):
    """A push failed or its result could not be verified."""


class SSHError(HubopsError):
    """The hub host cannot be reached or refuses us."""


class CommandError(HubopsError):
    """A command on a host failed: its exit code and the end of its output."""

    def __init__(self, host: str, result: Result, hint: str = "") -> None:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        super().__init__(
            f"{host}: `{result.command}` failed with exit code {result.code}"
            + (f": {tail}" if tail else "")
            + (f"\n{hint}" if hint else "")
        )
        self.result = result


class BackupError(HubopsError):
    """A backup or restore failed, or names a backup that does not exist."""


class LockError(HubopsError):
    """Another deploy of the environment holds the host's lock."""


class DeployError(HubopsError):
    """A deploy failed; the message says what was rolled back and what was not."""


class RuleError(ValueError):
    """Inside schema validation only: a cross-field rule broken at one key (``path``), so that
    the ConfigError it becomes names that key's file and line. A ValueError, as pydantic
    wants from validators."""

    def __init__(self, path: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.path = path
