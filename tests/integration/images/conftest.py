"""Image selection comes from the image table and the tested environment (--env): a test for
a variant runs on that variant and on every variant built on it that the environment uses."""

from __future__ import annotations
