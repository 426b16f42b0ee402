"""host.prepare on a swarm GPU node: daemon.json (node-generic-resources, default runtime
nvidia), the toolkit's swarm-resource, live-restore off. The real functions run on this
machine (LocalHost) against files under tmp_path; nothing touches /etc or a real dockerd."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from hubops.config.settings import Environment
from hubops.errors import HubopsError
from hubops.host.base import Result
from hubops.host.local import LocalHost
from hubops.ops.prepare import (
    NVIDIA_RUNTIME,
    PrepareReport,
    _live_restore,
    gpu_uuids,
    prepare,
    swarm_gpu_kind,
    swarm_gpu_node,
    swarm_resource_envvar,
    swarm_resource_text,
)

UUID_A = "GPU-11111111-2222-3333-4444-555555555555"
UUID_B = "GPU-66666666-7777-8888-9999-aaaaaaaaaaaa"

# SIMULATED: a stand-in for the NVIDIA driver's nvidia-smi, listing two made-up GPUs (no GPU
# is involved). FAKE_SMI_NO_QUERY=1 makes the --query-gpu form fail, as old drivers may.
FAKE_NVIDIA_SMI = f"""#!/bin/sh
# SIMULATED nvidia-smi for unit tests: two made-up GPUs
case "$*" in
  *--query-gpu=uuid*)
    [ "${{FAKE_SMI_NO_QUERY:-}}" = 1 ] && exit 6
    printf '%s\\n%s\\n' {UUID_A} {UUID_B} ;;
  -L)
    printf 'GPU 0: NVIDIA A100-SXM4-40GB (UUID: %s)\\nGPU 1: NVIDIA A100-SXM4-40GB (UUID: %s)\\n' \\
      {UUID_A} {UUID_B} ;;
  *) exit 2 ;;
esac
"""

# the top of the config.toml that the NVIDIA Container Toolkit packages install
SHIPPED_TOML = """disable-require = false
#swarm-resource = "DOCKER_RESOURCE_GPU"
#accept-nvidia-visible-devices-envvar-when-unprivileged = true
#accept-nvidia-visible-devices-as-volume-mounts = false

[nvidia-container-cli]
#root = "/run/nvidia/driver"
environment = []
load-kmods = true
ldconfig = "@/sbin/ldconfig"

[nvidia-container-runtime]
#debug = "/var/log/nvidia-container-runtime.log"
"""


@pytest.fixture
def fake_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(FAKE_NVIDIA_SMI)
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return smi


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    etc = tmp_path / "etc"
    return {
        "daemon_json": etc / "docker" / "daemon.json",
        "toolkit_config": etc / "nvidia-container-runtime" / "config.toml",
    }


def _run(files: dict[str, Path], kind: str = "gpu") -> tuple[bool, PrepareReport]:
    report = PrepareReport(host="localhost")
    changed = swarm_gpu_node(
        LocalHost(),
        report,
        kind,
        daemon_json=str(files["daemon_json"]),
        toolkit_config=str(files["toolkit_config"]),
    )
    return changed, report


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _env(**overrides: Any) -> Environment:
    data: dict[str, Any] = {
        "public_url": "https://hub.example.org",
        "auth": {
            "type": "gitlab",
            "gitlab_url": "https://git.example.org",
            "client_id": "id",
            "allowed_users": ["a"],
        },
        "singleuser": {"image": "base"},
        "cluster": "swarm",
        "gpu": {"policy": "exclusive"},
        "network": {"isolation": False},
    }
    data.update(overrides)
    return Environment.model_validate(data)


def test_daemon_json_is_merged_and_the_commented_swarm_resource_is_uncommented(
    fake_smi: Path, files: dict[str, Path]
) -> None:
    before = {
        "log-driver": "journald",
        "live-restore": False,
        # as `nvidia-ctk runtime configure` writes it: kept as it is
        "runtimes": {"nvidia": {"args": [], "path": "nvidia-container-runtime"}},
        "node-generic-resources": ["ssd=1"],
    }
    _write(files["daemon_json"], json.dumps(before))
    _write(files["toolkit_config"], SHIPPED_TOML)

    changed, report = _run(files)

    assert changed is True, "daemon.json changed: Docker must restart"
    after = json.loads(files["daemon_json"].read_text())
    assert after["log-driver"] == "journald"
    assert after["live-restore"] is False
    assert after["runtimes"] == before["runtimes"], "an existing nvidia runtime is kept"
    assert after["default-runtime"] == "nvidia"
    assert after["node-generic-resources"] == ["ssd=1", f"gpu={UUID_A}", f"gpu={UUID_B}"]
    assert files["toolkit_config"].read_text() == SHIPPED_TOML.replace(
        '#swarm-resource = "DOCKER_RESOURCE_GPU"', 'swarm-resource = "DOCKER_RESOURCE_GPU"'
    ), "only the commented line changed"
    assert not list(files["daemon_json"].parent.glob("*.hubops-tmp")), "no temporary file left"
    text = "\n".join(report.lines())
    assert "node-generic-resources" in text
    assert f"gpu={UUID_A}" in text
    assert "default-runtime nvidia" in text
    assert 'uncommented swarm-resource = "DOCKER_RESOURCE_GPU"' in text
    assert len(report.changed) == 3, report.changed


def test_a_second_run_changes_nothing(fake_smi: Path, files: dict[str, Path]) -> None:
    _write(files["daemon_json"], json.dumps({"debug": True}))
    _write(files["toolkit_config"], SHIPPED_TOML)
    _run(files)
    daemon_before = files["daemon_json"].read_bytes()
    toml_before = files["toolkit_config"].read_bytes()

    changed, report = _run(files)

    assert changed is False, "no restart of Docker"
    assert report.changed == []
    assert files["daemon_json"].read_bytes() == daemon_before
    assert files["toolkit_config"].read_bytes() == toml_before
    assert any("advertises 2 GPU(s) as gpu=GPU-" in k for k in report.kept), report.kept
    assert any('swarm-resource = "DOCKER_RESOURCE_GPU"' in k for k in report.kept), report.kept


def test_missing_files_are_created_and_the_kind_names_the_variable(
    fake_smi: Path, files: dict[str, Path]
) -> None:
    changed, report = _run(files, kind="a100")

    assert changed is True
    after = json.loads(files["daemon_json"].read_text())
    assert after == {
        "node-generic-resources": [f"a100={UUID_A}", f"a100={UUID_B}"],
        "runtimes": {"nvidia": NVIDIA_RUNTIME},
        "default-runtime": "nvidia",
    }
    assert files["toolkit_config"].read_text() == 'swarm-resource = "DOCKER_RESOURCE_A100"\n'
    assert any("added the nvidia runtime" in c for c in report.changed), report.changed


def test_a_gpu_advertised_under_another_kind_is_replaced(
    fake_smi: Path, files: dict[str, Path]
) -> None:
    stale = "gpu=GPU-00000000-dead-beef-0000-000000000000"  # a GPU no longer in the host
    _write(
        files["daemon_json"],
        json.dumps({"node-generic-resources": [f"NVIDIA-GPU={UUID_A}", stale, "fpga=1"]}),
    )
    _write(files["toolkit_config"], SHIPPED_TOML)

    _, report = _run(files)

    after = json.loads(files["daemon_json"].read_text())
    assert after["node-generic-resources"] == ["fpga=1", f"gpu={UUID_A}", f"gpu={UUID_B}"]
    assert any(f"replacing NVIDIA-GPU={UUID_A}, {stale}" in c for c in report.changed)


def test_absent_key_is_added_at_top_level_before_the_first_table() -> None:
    text = "disable-require = false\n[nvidia-container-cli]\nenvironment = []\n"
    new, change = swarm_resource_text(text, "DOCKER_RESOURCE_GPU")
    assert new == (
        'disable-require = false\nswarm-resource = "DOCKER_RESOURCE_GPU"\n\n'
        "[nvidia-container-cli]\nenvironment = []\n"
    )
    assert change == 'added swarm-resource = "DOCKER_RESOURCE_GPU"'
    # a key of that name inside a table is another key: the top-level one is still added
    inside = '[nvidia-container-cli]\n#swarm-resource = "X"\n'
    new, change = swarm_resource_text(inside, "DOCKER_RESOURCE_GPU")
    assert new == 'swarm-resource = "DOCKER_RESOURCE_GPU"\n\n' + inside
    assert change is not None
    assert change.startswith("added")


def test_an_existing_correct_value_is_untouched_and_another_is_replaced() -> None:
    right = 'swarm-resource = "DOCKER_RESOURCE_GPU"  # for the swarm\n[nvidia-container-cli]\n'
    assert swarm_resource_text(right, "DOCKER_RESOURCE_GPU") == (right, None)
    listed = 'swarm-resource = "DOCKER_RESOURCE_FPGA, DOCKER_RESOURCE_GPU"\n'
    assert swarm_resource_text(listed, "DOCKER_RESOURCE_GPU") == (listed, None)
    other = 'swarm-resource = "DOCKER_RESOURCE_A100"\n[x]\n'
    new, change = swarm_resource_text(other, "DOCKER_RESOURCE_GPU")
    assert new == 'swarm-resource = "DOCKER_RESOURCE_GPU"\n[x]\n'
    assert change == 'set swarm-resource to DOCKER_RESOURCE_GPU (was "DOCKER_RESOURCE_A100")'


def test_the_variable_is_docker_resource_and_the_kind_in_upper_case() -> None:
    assert swarm_resource_envvar("gpu") == "DOCKER_RESOURCE_GPU"
    assert swarm_resource_envvar("a100") == "DOCKER_RESOURCE_A100"


def test_uuids_come_from_the_query_or_else_from_the_list(
    fake_smi: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert gpu_uuids(LocalHost()) == [UUID_A, UUID_B]
    monkeypatch.setenv("FAKE_SMI_NO_QUERY", "1")
    assert gpu_uuids(LocalHost()) == [UUID_A, UUID_B]


def test_the_kind_is_the_one_the_gpu_profiles_reserve() -> None:
    assert swarm_gpu_kind(_env()) == "gpu", "no profile reserves GPUs: the default kind"
    profiles = [
        {"groups": ["cpu"], "max_gpus": 0, "gpu_kind": "ignored"},
        {"groups": ["ml"], "max_gpus": 2, "gpu_kind": "a100"},
        {"max_gpus": 1, "gpu_kind": "a100"},
    ]
    env = _env(singleuser={"image": "base", "profiles": profiles})
    assert swarm_gpu_kind(env) == "a100"


class _NoCommands:
    name = "nowhere"

    def run(
        self, command: str, *, check: bool = True, stdin: str | None = None, timeout: float = 600
    ) -> Result:
        raise AssertionError(f"no command may run, got {command!r}")


def test_several_kinds_are_refused_in_one_line_before_anything_runs() -> None:
    profiles = [{"groups": ["a"], "max_gpus": 1, "gpu_kind": "a100"}, {"max_gpus": 1}]
    env = _env(singleuser={"image": "base", "profiles": profiles})
    with pytest.raises(HubopsError) as info:
        prepare(_NoCommands(), env, "unused")
    message = str(info.value)
    assert len(message.splitlines()) == 1, message
    assert "2 kinds (a100, gpu)" in message
    assert "by hand" in message
    assert "node-generic-resources KIND=GPU-UUID" in message


def test_live_restore_is_turned_off_on_a_swarm_node_and_kept_off(tmp_path: Path) -> None:
    daemon_json = tmp_path / "daemon.json"
    daemon_json.write_text(json.dumps({"live-restore": True, "debug": True}))
    reloads: list[bool] = []

    def reload(host: object, want: bool) -> None:  # instead of a real dockerd's SIGHUP
        reloads.append(want)

    report = PrepareReport(host="localhost")
    _live_restore(LocalHost(), report, swarm=True, daemon_json=str(daemon_json), reload=reload)
    assert json.loads(daemon_json.read_text()) == {"live-restore": False, "debug": True}
    assert reloads == [False]
    assert len(report.changed) == 1
    assert "turned live-restore off" in report.changed[0]
    assert "swarm" in report.changed[0]

    again = PrepareReport(host="localhost")
    _live_restore(LocalHost(), again, swarm=True, daemon_json=str(daemon_json), reload=reload)
    assert again.changed == [], "a second run changes nothing"
    assert reloads == [False], "and reloads nothing"
    assert any("live-restore off" in k for k in again.kept), again.kept


def test_live_restore_is_still_turned_on_without_swarm(tmp_path: Path) -> None:
    daemon_json = tmp_path / "docker" / "daemon.json"  # absent: made
    reloads: list[bool] = []
    report = PrepareReport(host="localhost")
    _live_restore(
        LocalHost(),
        report,
        daemon_json=str(daemon_json),
        reload=lambda host, want: reloads.append(want),
    )
    assert json.loads(daemon_json.read_text()) == {"live-restore": True}
    assert reloads == [True]
    assert any("set live-restore" in c for c in report.changed), report.changed
