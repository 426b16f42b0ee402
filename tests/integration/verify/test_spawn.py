"""A spawned user server: the chosen image as the non-root user, on the internal network,
with the configured limits, without the Docker socket, and JupyterLab answering."""

from __future__ import annotations

import json

from tests.support.verify import LoggedIn, Target


def inspect(target: Target, name: str) -> dict[str, object]:
    out = target.host.check_output(f"docker inspect {name}")
    result: dict[str, object] = json.loads(out)[0]
    return result


def test_runs_the_chosen_image_as_the_non_root_user(target: Target, alice: LoggedIn) -> None:
    info = inspect(target, alice.container)
    image = info["Config"]["Image"]  # type: ignore[index]
    expected = next(iter(_choices(target).values()))
    assert image == expected, f"{alice.container} runs {image}, expected {expected}"
    ids = target.in_container(alice.container, "id -u; id -g").stdout.split()
    assert ids == ["1000", "100"], f"{alice.container} runs as {ids}"


def test_is_on_the_internal_network_only(target: Target, alice: LoggedIn) -> None:
    networks = inspect(target, alice.container)["NetworkSettings"]["Networks"]  # type: ignore[index]
    assert list(networks) == [f"hubops-{target.name}"], f"networks: {list(networks)}"
    ports = inspect(target, alice.container)["HostConfig"]["PortBindings"]  # type: ignore[index]
    assert not ports, f"a user server publishes no host port: {ports}"


def test_has_the_configured_limits(target: Target, alice: LoggedIn) -> None:
    su = target.env.settings.singleuser
    host_config = inspect(target, alice.container)["HostConfig"]
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    want = int(su.mem_limit[:-1]) * units[su.mem_limit[-1]] if su.mem_limit else 0
    assert host_config["Memory"] == want, f"memory {host_config['Memory']}, want {want} (0: none)"  # type: ignore[index]
    if su.cpu_limit:
        quota = host_config["CpuQuota"] / host_config["CpuPeriod"]  # type: ignore[index,operator]
        assert abs(quota - su.cpu_limit) < 1e-6, f"CPU quota {quota}, want {su.cpu_limit}"
    else:
        assert host_config["CpuQuota"] in (0, -1), (
            f"no CPU limit was set: {host_config['CpuQuota']}"
        )  # type: ignore[index]


def test_has_no_docker_socket(target: Target, alice: LoggedIn) -> None:
    mounts = inspect(target, alice.container)["Mounts"]
    assert not [m for m in mounts if "docker.sock" in m["Source"]], mounts  # type: ignore[union-attr,index]
    probe = target.in_container(alice.container, "test -e /var/run/docker.sock")
    assert probe.rc != 0, "the Docker socket is visible inside a user server"


def test_jupyterlab_answers(target: Target, alice: LoggedIn) -> None:
    assert alice.client.lab_status("alice") == 200


def _choices(target: Target) -> dict[str, str]:
    from hubops.images import table as images
    from hubops.plan.refs import singleuser_choices
    from tests.support.checkout import REPO_ROOT

    return singleuser_choices(target.env.settings, images.revisions(REPO_ROOT))
