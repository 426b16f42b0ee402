"""The one error path: every failure a user can fix is a :class:`HubopsError`.

Tasks turn these into one line on stderr and exit code 1. Anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations


class HubopsError(Exception):
    """A failure the operator can fix: the message says what failed, the value, and what to do."""


class ConfigError(HubopsError):
    """An environment file is missing, malformed or invalid."""


class SecretError(HubopsError):
    """A secret that a step needs is not available."""
