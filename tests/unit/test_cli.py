"""The invoke CLI: every task listed with help, --env applies to the whole command line."""

from __future__ import annotations

import inspect

import pytest
from invoke.collection import Collection

from tests.support.checkout import REPO_ROOT, Checkout
from tests.support.cli import run_invoke


def load_tasks() -> Collection:
    import importlib.util

    spec = importlib.util.spec_from_file_location("hubops_tasks", REPO_ROOT / "tasks.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ns = module.ns
    assert isinstance(ns, Collection)
    return ns


def all_tasks(ns: Collection, prefix: str = "") -> dict[str, object]:
    found: dict[str, object] = {f"{prefix}{n}": t for n, t in ns.tasks.items()}
    for name, sub in ns.collections.items():
        found.update(all_tasks(sub, f"{prefix}{name}."))
    return found


def test_every_task_and_option_has_help() -> None:
    tasks = all_tasks(load_tasks())
    expected = {"check", "render", "envs", "docs", "base-image", "build", "push"}
    assert expected <= set(tasks), f"tasks: {sorted(tasks)}"
    for name, task in tasks.items():
        doc = inspect.getdoc(task.body)  # type: ignore[attr-defined]
        assert doc, f"task {name} has no docstring (the --list text)"
        params = list(inspect.signature(task.body).parameters)[1:]  # type: ignore[attr-defined]
        given = {key.replace("-", "_") for key in task.help}  # type: ignore[attr-defined]
        missing = [p for p in params if p not in given]
        assert missing == [], f"task {name}: options without help: {missing}"


def test_list_shows_each_task_with_one_line(checkout: Checkout) -> None:
    result = run_invoke(checkout, "--list")
    assert result.returncode == 0, result.stderr
    for name in ("check", "render", "envs", "docs"):
        assert f"  {name} " in result.stdout, f"{name} missing from --list:\n{result.stdout}"


def test_env_given_once_applies_to_every_task_on_the_line(checkout: Checkout) -> None:
    """`invoke check render --env local` checks local, then renders local."""
    result = run_invoke(checkout, "check", "render", "--env", "local")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("local: ok"), f"check did not run first:\n{result.stdout}"
    assert "wrote build/local/jupyterhub_config.py" in result.stdout
    assert (checkout.root / "build/local/jupyterhub_config.py").is_file()


def test_check_all_checks_every_environment(checkout: Checkout) -> None:
    result = run_invoke(checkout, "check", "--all")
    assert result.returncode == 0, result.stderr
    checked = [line.split(":")[0] for line in result.stdout.splitlines() if " ok (" in line]
    assert checked == ["lab", "local"], f"checked: {checked}"


def test_check_shows_where_secrets_come_from_never_their_value(checkout: Checkout) -> None:
    value = "FAKE-oauth-secret-for-cli-1234"
    result = run_invoke(
        checkout,
        "check",
        "--env",
        "lab",
        env={"HUBOPS_OAUTH_CLIENT_SECRET": value, "HUBOPS_REGISTRY_PASSWORD": "x" * 12},
    )
    assert result.returncode == 0, result.stderr
    assert "oauth_client_secret: from environment variable HUBOPS_OAUTH_CLIENT_SECRET" in (
        result.stdout
    )
    assert value not in result.stdout + result.stderr, "a secret value was printed"


def test_an_env_default_from_config(checkout: Checkout) -> None:
    result = run_invoke(checkout, "check", env={"INVOKE_HUBOPS_ENV": "local"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("local: ok")


@pytest.mark.parametrize("stale", [True, False])
def test_docs_check_fails_only_when_the_reference_is_stale(checkout: Checkout, stale: bool) -> None:
    readme = checkout.root / "README.md"
    if stale:
        readme.write_text(readme.read_text().replace("| `hub.port` |", "| `hub.prt` |"))
    result = run_invoke(checkout, "docs", "--check")
    assert result.returncode == (1 if stale else 0), result.stdout + result.stderr


def test_a_followed_local_command_streams_and_stops_with_its_reader() -> None:
    """`invoke logs --follow` here: the first output arrives while the command still runs,
    and the command is stopped when the reader stops."""
    import os
    import subprocess

    from hubops.host.local import LocalHost

    class Enough(Exception):
        pass

    got: list[bytes] = []

    def sink(chunk: bytes) -> None:
        got.append(chunk)
        raise Enough

    marker = f"sleep 30.{os.getpid()}"  # a command line no other process has
    with pytest.raises(Enough):
        LocalHost().stream(f"echo first; {marker}; echo never", sink)
    assert got == [b"first\n"]
    left = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    assert left.stdout == "", "the command's processes were stopped with the reader"
