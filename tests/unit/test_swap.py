"""The swap unit and the recovery of a unit that was cut off: one Swap, one rollback.

The scripts run under sh with a docker CLI double on PATH (tests/support/fake_docker.py);
:func:`hubops.deploy.recover.recover` runs as a deploy runs it, on this machine.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from hubops.config import environments
from hubops.config.settings import Environment
from hubops.deploy import swap as swap_unit
from hubops.deploy.recover import UNDO_WHY, recorded_swap, recover
from hubops.deploy.state import config_path, journal, swap_record
from hubops.deploy.steps import Step
from hubops.deploy.swap import Journal, Swap
from hubops.host.local import LocalHost
from hubops.host.lock import Lock
from hubops.plan.model import Plan
from hubops.plan.render import render
from tests.support import fake_docker
from tests.support.checkout import Checkout

REVS = {"proxy": "r1", "hub": "r1", "singleuser": "r1", "base": "r1"}


def unit(**kw: object) -> Swap:
    values: dict[str, object] = {
        "environment": "t",
        "hub": "hub",
        "proxy": "proxy",
        "create_hub": "docker create --name hub image-new",
        "create_proxy": None,
        "health_urls": ["http://127.0.0.1:8081/hub/health"],
        "health_timeout": 5,
        "restore_files": "echo restored-files",
        "finish": ["echo dropped-saved-files"],
        "lock": Lock("t", "me@here pid 1 since now"),
    }
    return Swap(**{**values, **kw})  # type: ignore[arg-type]


def run(tmp_path: Path, script: str) -> tuple[str, str]:
    """A unit's script under sh, its places in ``tmp_path``: (status, log)."""
    path = tmp_path / "unit.sh"
    path.write_text(script.replace("d=/run/lock", f"d={tmp_path}"))
    log = subprocess.run(["sh", str(path)], capture_output=True, text=True, timeout=60)
    return (tmp_path / "hubops-t.swap.status").read_text().strip(), log.stdout


def _rollback(script: str) -> str:
    found = re.search(r"^rollback\(\) \{\n.*?^\}$", script, re.S | re.M)
    assert found, "the script has a rollback function"
    return found.group(0)


@pytest.mark.parametrize("which", ["script", "finish", "undo"])
def test_every_script_of_a_swap_is_valid_sh(which: str) -> None:
    swap = unit(create_proxy="docker create --name proxy proxy-new", prepare=("upgrading", "true"))
    text = {
        "script": swap.script(),
        "finish": swap.finish_script(),
        "undo": swap.undo_script("why"),
    }[which]
    check = subprocess.run(["sh", "-n"], input=text, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_the_unit_and_its_recovery_share_one_rollback() -> None:
    """The rollback the unit runs and the one a recovery runs are the same text, rendered
    from the same Swap: they cannot drift apart."""
    swap = unit(
        create_proxy="docker create --name proxy proxy-new",
        prepare=("upgrading the DB", "true"),
        undo_prepare=("DB", "echo restored-db"),
    )
    assert _rollback(swap.script()) == _rollback(swap.undo_script("why"))
    assert "echo restored-db" in _rollback(swap.script()), "the DB's undo is part of it"


def test_a_record_gives_back_the_same_swap() -> None:
    swap = unit(
        prepare=("upgrading", "jupyterhub upgrade-db"),
        undo_prepare=("DB", "cp backup db"),
        journal=Journal("/srv/rec.json", "touch m", "test -e m", "rm -f m"),
    )
    assert Swap.from_json(swap.to_json()) == swap
    with pytest.raises(ValueError, match="not a swap record"):
        Swap.from_json('{"environment": "t"}')


def test_a_healthy_new_hub_replaces_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docker = fake_docker.install(monkeypatch, tmp_path, hub="running", proxy="running")
    lock_dir = tmp_path / "hubops-t.lock"
    lock_dir.mkdir()
    (lock_dir / "holder").write_text("me@here pid 1 since now\n")
    status, log = run(tmp_path, unit().script())
    assert status == "done", log
    assert fake_docker.containers(docker) == {"hub": "running", "proxy": "running"}, (
        "the old hub is gone, the new one runs"
    )
    assert "dropped-saved-files" in log
    assert f"{Step.HEALTHY.value} new hub healthy" in log, "each line names its step"
    assert not lock_dir.exists(), "the unit gave the lock back"


def test_an_unhealthy_new_hub_puts_everything_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docker = fake_docker.install(monkeypatch, tmp_path, hub="running", proxy="running")
    (docker / "new-unhealthy").touch()
    status, log = run(
        tmp_path,
        unit(undo_prepare=("DB", "echo restored-db"), prepare=("migrating", "true")).script(),
    )
    assert status.startswith("rolled-back"), status
    assert "put back: hub, DB, config and secret files" in status, status
    assert "restored-files" in log
    assert "restored-db" in log
    assert fake_docker.containers(docker) == {
        "hub": "running",
        "hub-failed": "exited unhealthy",
        "proxy": "running",
    }, "the previous hub is back under its name; the failed one is kept, stopped, for its log"


# --- recovery, as a deploy runs it -----------------------------------------------------------


@pytest.fixture
def lab(checkout: Checkout, tmp_path: Path) -> tuple[Plan, Environment]:
    """An environment whose state lives in ``tmp_path`` and whose name no other test uses."""
    name = f"swap{abs(hash(tmp_path)) % 10**8}"
    srv, etc = tmp_path / "srv", tmp_path / "etc"
    srv.mkdir()
    etc.mkdir()
    checkout.write_env(
        name,
        f"extends: local.yaml\npaths:\n  data_dir: {srv}\n  config_dir: {etc}\n",
    )
    env = environments.load(checkout.root, name)
    return render(checkout.root, env, REVS).plan, env.settings


def cut_off(
    plan: Plan, settings: Environment, log: Path, *, upgrade: bool, record: bool = True
) -> Swap:
    """The record a deploy wrote before its unit started (the unit itself is gone)."""
    host = LocalHost()
    swap = Swap(
        environment=plan.environment,
        hub=plan.container("hub").name,
        proxy=plan.container("proxy").name,
        create_hub="docker create --name never-run image",
        create_proxy=None,
        health_urls=["http://127.0.0.1:8081/hub/health"],
        health_timeout=5,
        prepare=("upgrading the DB", "true") if upgrade else None,
        undo_prepare=("DB", f"echo db-restored >> {log}") if upgrade else None,
        restore_files=f"echo files-restored >> {log}",
        finish=[f"echo saved-files-dropped >> {log}"],
        lock=Lock(plan.environment, "gone@here pid 1 since then"),
        journal=journal(host, settings),
    )
    if record:
        swap_unit.write_record(host, swap)
    return swap


def recovered(plan: Plan, settings: Environment) -> list[str]:
    seen: list[str] = []
    try:
        return recover(
            LocalHost(),
            LocalHost(),
            plan,
            settings,
            health_timeout=5,
            progress=lambda step, line: seen.append(f"{step.value} {line}"),
        )
    finally:
        for leftover in Path("/run/lock").glob(f"hubops-{plan.environment}.swap*"):
            leftover.unlink()


def said(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def test_a_swap_cut_off_after_its_new_hub_was_healthy_is_finished(
    lab: tuple[Plan, Environment], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan, settings = lab
    hub, proxy = plan.container("hub").name, plan.container("proxy").name
    docker = fake_docker.install(
        monkeypatch, tmp_path, **{hub: "running", f"{hub}-previous": "exited", proxy: "running"}
    )
    log = tmp_path / "log"
    cut_off(plan, settings, log, upgrade=True)
    assert recovered(plan, settings) == ["finished an interrupted swap"]
    assert fake_docker.containers(docker) == {hub: "running", proxy: "running"}
    assert said(log) == ["saved-files-dropped"], "the unit's own last steps ran, and no undo"
    assert not Path(swap_record(settings)).exists(), "the record is forgotten"


def test_a_db_upgrade_cut_off_midway_is_undone(
    lab: tuple[Plan, Environment], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The host stopped while the unit upgraded the DB: the new hub does not serve. The
    unit's own rollback runs: the DB comes back from the backup, the previous hub and the
    files kept aside come back, the failed hub goes."""
    plan, settings = lab
    hub, proxy = plan.container("hub").name, plan.container("proxy").name
    docker = fake_docker.install(
        monkeypatch,
        tmp_path,
        **{hub: "created unhealthy", f"{hub}-previous": "exited", proxy: "running"},
    )
    log = tmp_path / "log"
    swap = cut_off(plan, settings, log, upgrade=True)
    subprocess.run(swap.journal.mark_prepared, shell=True, check=True)  # the upgrade began
    assert recovered(plan, settings) == ["rolled back an interrupted swap"]
    assert fake_docker.containers(docker) == {hub: "running", proxy: "running"}
    assert said(log) == ["db-restored", "files-restored"]
    assert not Path(swap_record(settings)).exists()
    assert not Path(f"{swap_record(settings)}.prepared").exists()


def test_a_swap_cut_off_before_its_upgrade_began_leaves_the_db_alone(
    lab: tuple[Plan, Environment], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan, settings = lab
    hub, proxy = plan.container("hub").name, plan.container("proxy").name
    fake_docker.install(monkeypatch, tmp_path, **{f"{hub}-previous": "exited", proxy: "running"})
    log = tmp_path / "log"
    cut_off(plan, settings, log, upgrade=True)
    assert recovered(plan, settings) == ["rolled back an interrupted swap"]
    assert said(log) == ["files-restored"], "no DB was restored: the upgrade never began"


def test_a_deploy_killed_before_its_swap_gets_its_files_back(
    lab: tuple[Plan, Environment], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan, settings = lab
    hub, proxy = plan.container("hub").name, plan.container("proxy").name
    docker = fake_docker.install(monkeypatch, tmp_path, **{hub: "running", proxy: "running"})
    log = tmp_path / "log"
    cut_off(plan, settings, log, upgrade=True)
    assert recovered(plan, settings) == ["restored the files of an interrupted deploy"]
    assert said(log) == ["files-restored"]
    assert fake_docker.containers(docker) == {hub: "running", proxy: "running"}, "untouched"
    assert not any("docker stop" in c for c in fake_docker.calls(docker))
    assert not Path(swap_record(settings)).exists()


def test_without_a_record_the_swap_is_undone_from_the_plan(
    lab: tuple[Plan, Environment], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cut-off deploy of an older hubops left no record: the previous containers and the
    config kept aside come back all the same."""
    plan, settings = lab
    hub, proxy = plan.container("hub").name, plan.container("proxy").name
    docker = fake_docker.install(
        monkeypatch,
        tmp_path,
        **{
            hub: "running unhealthy",
            f"{hub}-previous": "exited",
            proxy: "running",
            f"{proxy}-previous": "exited",
        },
    )
    config = Path(config_path(settings))
    config.write_text("new config")
    Path(f"{config}.previous").write_text("old config")
    assert recovered(plan, settings) == ["rolled back an interrupted swap"]
    assert fake_docker.containers(docker) == {hub: "running", proxy: "running"}
    assert config.read_text() == "old config", "the config kept aside is back"
    assert not Path(f"{config}.previous").exists()


def test_recovery_that_cannot_bring_the_hub_back_says_so(
    lab: tuple[Plan, Environment], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan, settings = lab
    hub, proxy = plan.container("hub").name, plan.container("proxy").name
    fake_docker.install(
        monkeypatch,
        tmp_path,
        **{hub: "running unhealthy", f"{hub}-previous": "exited unhealthy", proxy: "running"},
    )
    cut_off(plan, settings, tmp_path / "log", upgrade=False)
    with pytest.raises(Exception, match=f"rollback-failed {UNDO_WHY}"):
        recovered(plan, settings)


def test_the_lock_of_a_cut_off_unit_is_not_given_back_by_its_recovery(
    lab: tuple[Plan, Environment], tmp_path: Path
) -> None:
    """Recovery runs under the lock of the deploy that recovers: the rollback it renders
    releases no lock."""
    plan, settings = lab
    swap = cut_off(plan, settings, tmp_path / "log", upgrade=False)
    assert "rm -rf" in _rollback(swap.script()), "the unit gives its lock back"
    again = recorded_swap(LocalHost(), plan, settings, health_timeout=5)
    assert again == replace(swap, lock=None), "the record, without the lock"
    assert "rm -rf" not in _rollback(again.undo_script("why"))
