"""Containers that image tests run against: a runner gives each one's testinfra host."""

from __future__ import annotations

from collections.abc import Callable

import testinfra

Runner = Callable[..., testinfra.host.Host]
