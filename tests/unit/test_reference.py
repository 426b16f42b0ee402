"""README.md's configuration reference is generated from the schema and must be current."""

from __future__ import annotations

from hubops.config.reference import reference, update_readme
from tests.support.checkout import REPO_ROOT


def test_readme_reference_is_current() -> None:
    stale = update_readme(REPO_ROOT / "README.md", check_only=True)
    assert not stale, "README.md's configuration reference is stale: run `invoke docs`"


def test_reference_lists_every_auth_type_and_nested_key() -> None:
    text = reference()
    for needle in (
        "`auth` with `type: gitlab`",
        "`auth` with `type: github`",
        "`auth` with `type: oidc`",
        "`auth` with `type: shared-password`",
        "| `auth.gitlab_url` |",
        "| `singleuser.images` |",
        "| `mirrors.ca_bundle` |",
        "| `ssh.key_file` |",
    ):
        assert needle in text, f"{needle!r} missing from the generated reference"


def test_readme_opens_with_exactly_two_quick_start_commands() -> None:
    text = (REPO_ROOT / "README.md").read_text()
    block = text.split("## Quick start", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands = [line for line in block.strip().splitlines() if line.strip()]
    assert commands == [
        "python3 -m hubops.quickstart up",
        "python3 -m hubops.quickstart test",
    ], f"quick start: {commands}"
    ci = (REPO_ROOT / ".ci/run").read_text().strip().splitlines()
    assert ci[-1] == commands[1], f".ci/run must end with the test command, ends: {ci[-1]}"
