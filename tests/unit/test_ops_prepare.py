"""``invoke host.prepare`` (hubops.ops.prepare) on a scripted host: no Docker, no SSH, no apt.

What it changes on a fresh GPU host, in which order; that a second run on a prepared host
changes nothing; and how it stops, with what to do, where it cannot go on. The swarm GPU node
part is tested in test_prepare_swarm.py.
"""

from __future__ import annotations

import json

import pytest

from hubops.config import environments
from hubops.config.settings import Environment
from hubops.errors import HubopsError
from hubops.ops import prepare as prepare_module
from hubops.ops.prepare import (
    BRIDGE_SYSCTL,
    PrepareReport,
    _bridge_netfilter,
    _live_restore,
    gpu_smoke,
    prepare,
)
from tests.support.checkout import Checkout
from tests.support.scripted_host import ScriptedHost

GPU_LIST = (
    "GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-11111111-2222-3333-4444-555555555555)\n"
    "GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-66666666-7777-8888-9999-aaaaaaaaaaaa)\n"
)
RUNC_ONLY = '{"io.containerd.runc.v2":{"path":"runc"},"runc":{"path":"runc"}}\n'
WITH_NVIDIA = (
    '{"io.containerd.runc.v2":{"path":"runc"},"nvidia":{"path":"nvidia-container-runtime"},'
    '"runc":{"path":"runc"}}\n'
)
SMOKE_IMAGE = "hubops/hub:r1"
# commands that change a host (what a second run must not send)
CHANGING = (
    r"usermod|apt-get|nvidia-ctk runtime configure|systemctl (restart|reload|enable)|"
    r"pkill|kill -HUP|sysctl -q -w|mkdir -p|modprobe"
)


@pytest.fixture
def settings(checkout: Checkout) -> Environment:
    """An environment deployed over SSH as ``hubops`` (a user in the docker group)."""
    checkout.write_env(
        "gpu01", "extends: local.yaml\nssh:\n  host: gpu01.example.org\n  user: hubops\n"
    )
    return environments.load(checkout.root, "gpu01").settings


def prepared(host: ScriptedHost) -> ScriptedHost:
    """Answer, after the rules the test set first, as a root host that host.prepare already
    prepared: Docker 24 runs (systemd), live-restore on, br_netfilter set for good, hubops in
    the docker group, two GPUs, the toolkit and Docker's nvidia runtime installed."""
    host.on(r"^id -un; id -u$", "root\n0\n")
    host.on(r"^docker version --format '\{\{\.Server\.Version\}\}'$", "24.0.7\n")
    host.on(r"^cat /etc/docker/daemon\.json$", '{"live-restore": true}\n')
    host.on(rf"^sysctl -n {BRIDGE_SYSCTL}$", "1\n")
    host.on(r"^test -f /etc/modules-load\.d/hubops\.conf && test -f ", "")
    host.on(r"^id -nG hubops$", "hubops users docker\n")
    host.on(r"^nvidia-smi -L$", GPU_LIST)
    host.on(r"^command -v nvidia-ctk$", "/usr/bin/nvidia-ctk\n")
    host.on(r"^docker info --format '\{\{json \.Runtimes\}\}'$", WITH_NVIDIA)
    host.on(r"^test -d /run/systemd/system$", "")
    host.on(r"^docker run --rm --gpus all ", GPU_LIST)
    return host


def test_a_fresh_gpu_host_gets_what_a_deploy_needs_in_order(settings: Environment) -> None:
    """A GPU host with Docker but no toolkit, bridge-nf-call-iptables off and the deploy user
    outside the docker group: host.prepare sets the sysctl for good, adds the user, installs
    the toolkit, configures the nvidia runtime, restarts Docker (systemd) once, and only then
    runs the GPU smoke test; the report lists each change."""
    host = ScriptedHost(name="gpu01")
    host.on(rf"^sysctl -n {BRIDGE_SYSCTL}$", "0\n")
    host.on(r"^test -f /etc/modules-load\.d/hubops\.conf && test -f ", "", 1)
    host.on(r"^printf 'br_netfilter\\n' > /etc/modules-load\.d/hubops\.conf && ", "")
    host.on(r"^id -nG hubops$", "hubops users\n")
    host.on(r"^usermod -aG docker hubops$", "")
    host.on(r"^command -v nvidia-ctk$", "", 1)
    host.on(r"^set -e; export DEBIAN_FRONTEND=noninteractive; apt-get update", "")
    host.on(r"^docker info --format '\{\{json \.Runtimes\}\}'$", RUNC_ONLY)
    host.on(r"^nvidia-ctk runtime configure --runtime=docker$", "")
    host.on(r"^systemctl restart docker\.service$", "")
    prepared(host)

    report = prepare(host, settings, SMOKE_IMAGE)

    assert report.changed == [
        f"loaded br_netfilter and set {BRIDGE_SYSCTL} = 1 (and at boot: "
        "/etc/modules-load.d/hubops.conf, /etc/sysctl.d/90-hubops.conf): hubops' firewall "
        "sees traffic between user servers",
        "added hubops to the docker group (log in again to use it)",
        "installed the NVIDIA Container Toolkit",
        "configured Docker's nvidia runtime",
        "restarted Docker to apply /etc/docker/daemon.json",
    ]
    assert report.kept[0] == "Docker 24.0.7 running"
    assert report.gpus == GPU_LIST.strip().splitlines()
    assert report.smoke == "a container sees 2 GPU(s)"
    order = [
        host.commands.index(c)
        for c in (
            *host.sent(r"apt-get install -y -q nvidia-container-toolkit"),
            *host.sent(r"^nvidia-ctk runtime configure"),
            *host.sent(r"^systemctl restart docker"),
            *host.sent(r"^docker run --rm --gpus all"),
        )
    ]
    assert len(order) == 4, "each once"
    assert order == sorted(order), "toolkit, runtime, restart, then the smoke test"
    (bridge,) = host.sent(r"^printf 'br_netfilter")
    assert f"sysctl -q -w {BRIDGE_SYSCTL}=1" in bridge, "now, not only at the next boot"
    assert report.lines()[0].startswith("gpu01: changed: loaded br_netfilter")


def test_a_second_run_on_a_prepared_host_changes_nothing(settings: Environment) -> None:
    """On a host that host.prepare already prepared, it sends no command that changes
    anything, does not restart Docker, and says 'nothing changed'; the smoke test still
    runs."""
    host = prepared(ScriptedHost(name="gpu01"))

    report = prepare(host, settings, SMOKE_IMAGE)

    assert report.changed == []
    assert host.sent(CHANGING) == []
    lines = report.lines()
    assert lines[0] == "gpu01: nothing changed"
    assert "  ok      hubops is in the docker group" in lines
    assert "  ok      NVIDIA Container Toolkit installed" in lines
    assert "  ok      Docker knows the nvidia runtime" in lines
    assert lines[-2] == f"  GPUs    {', '.join(GPU_LIST.strip().splitlines())}"
    assert lines[-1] == "  smoke   a container sees 2 GPU(s)"


def test_without_systemd_docker_is_only_reloaded_and_the_report_says_so(
    settings: Environment,
) -> None:
    """No systemd (a container-like host): the nvidia runtime is applied by a SIGHUP to
    dockerd instead of a restart, and the report says it was a reload."""
    host = ScriptedHost()
    host.on(r"^docker info --format '\{\{json \.Runtimes\}\}'$", RUNC_ONLY)
    host.on(r"^nvidia-ctk runtime configure --runtime=docker$", "")
    host.on(r"^test -d /run/systemd/system$", "", 1)
    host.on(r"^pkill -HUP dockerd$", "")
    prepared(host)

    report = prepare(host, settings, SMOKE_IMAGE)

    assert report.changed == [
        "configured Docker's nvidia runtime",
        "reloaded dockerd (SIGHUP, no systemd) to apply /etc/docker/daemon.json",
    ]
    assert host.sent(r"^systemctl") == []


def test_nvidia_hardware_without_a_driver_stops_before_the_toolkit(
    settings: Environment,
) -> None:
    """nvidia-smi lists no GPU but the host has an NVIDIA card: host.prepare stops with what
    to install, and installs no toolkit for a driver that is not there."""
    host = ScriptedHost(name="gpu01")
    host.on(
        r"^nvidia-smi -L$",
        "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n",
        9,
    )
    host.on(r"^ls /dev/nvidia0 .*lspci -nn \| grep -qi 'nvidia'", "")
    prepared(host)

    with pytest.raises(HubopsError) as info:
        prepare(host, settings, SMOKE_IMAGE)

    message = str(info.value)
    assert message.startswith("gpu01: NVIDIA hardware but no working driver")
    assert "install the NVIDIA driver" in message
    assert "run host.prepare again" in message
    assert host.sent(r"nvidia-ctk|apt-get|docker run") == []


def test_a_host_without_gpus_skips_the_gpu_steps(settings: Environment) -> None:
    """No NVIDIA GPU and no NVIDIA hardware: nothing GPU-related is asked or installed, and
    the report says the smoke test was skipped and why."""
    host = ScriptedHost()
    host.on(r"^nvidia-smi -L$", "bash: line 1: nvidia-smi: command not found\n", 127)
    host.on(r"^ls /dev/nvidia0 ", "", 1)
    prepared(host)

    report = prepare(host, settings, SMOKE_IMAGE)

    assert report.gpus == []
    assert report.smoke == "skipped: no NVIDIA GPU on this host"
    assert "  GPUs    none found" in report.lines()
    assert host.sent(r"nvidia-ctk|Runtimes|docker run") == []


@pytest.mark.parametrize(
    ("now", "at_boot", "writes"),
    [("1\n", 0, False), ("1\n", 1, True), ("0\n", 0, True)],
    ids=["on-for-good", "on-until-reboot", "off"],
)
def test_bridge_netfilter_is_set_now_and_for_every_boot(
    now: str, at_boot: int, writes: bool
) -> None:
    """bridge-nf-call-iptables is kept only when it is 1 now and its module and sysctl files
    make it so at boot; set by hand (lost at the next reboot) or off, both are written and
    the sysctl set at once."""
    host = ScriptedHost()
    host.on(rf"^sysctl -n {BRIDGE_SYSCTL}$", now)
    host.on(r"^test -f /etc/modules-load\.d/hubops\.conf && test -f ", "", at_boot)
    host.on(r"^printf 'br_netfilter\\n' > ", "")
    report = PrepareReport(host="h")

    _bridge_netfilter(host, report)

    assert len(host.sent(r"^printf 'br_netfilter")) == int(writes)
    assert len(report.changed) == int(writes)
    assert len(report.kept) == int(not writes)


@pytest.mark.parametrize(
    ("text", "why"),
    [('{"live-restore": true,}\n', "is not valid JSON"), ("[]\n", "is not a JSON object")],
    ids=["broken-json", "a-list"],
)
def test_a_daemon_json_it_cannot_read_stops_prepare_and_is_not_overwritten(
    settings: Environment, text: str, why: str
) -> None:
    """A hand-edited daemon.json that is not a JSON object: host.prepare stops with the file
    and what to do, before it writes daemon.json or reloads Docker."""
    host = prepared(ScriptedHost(name="gpu01").on(r"^cat /etc/docker/daemon\.json$", text))

    with pytest.raises(HubopsError) as info:
        prepare(host, settings, SMOKE_IMAGE)

    message = str(info.value)
    assert message.startswith(f"gpu01: /etc/docker/daemon.json {why}")
    assert message.endswith("fix it, then run host.prepare again")
    assert host.sent(r"daemon\.json\.hubops-tmp|systemctl|kill") == []


class FakeClock:
    """Stands in for the ``time`` module in prepare: each sleep moves time on at once."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept = 0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += 1


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(prepare_module, "time", fake)
    return fake


def test_live_restore_is_written_atomically_and_reloaded_until_dockerd_reports_it(
    clock: FakeClock,
) -> None:
    """live-restore missing (no systemd): daemon.json is rewritten through a temporary file
    renamed over it, every other key kept, then dockerd gets a SIGHUP and is asked until it
    reports live-restore on."""
    host = ScriptedHost()
    host.on(r"^cat /etc/docker/daemon\.json$", '{"log-driver": "journald"}\n')
    host.on(r"^mkdir -p /etc/docker && cat > /etc/docker/daemon\.json\.hubops-tmp && ", "")
    host.on(r"^test -d /run/systemd/system$", "", 1)
    host.on(r'^kill -HUP "\$\(cat /var/run/docker\.pid\)"$', "")
    host.on(r"^docker info --format '\{\{\.LiveRestoreEnabled\}\}'$", "false\n", times=2)
    host.on(r"^docker info --format '\{\{\.LiveRestoreEnabled\}\}'$", "true\n")
    report = PrepareReport(host="h")

    _live_restore(host, report)

    (write,) = host.sent(r"daemon\.json\.hubops-tmp")
    assert write.endswith("mv -f /etc/docker/daemon.json.hubops-tmp /etc/docker/daemon.json"), (
        "renamed over it: a reader never sees half a file"
    )
    written = host.stdins[host.commands.index(write)]
    assert written is not None
    assert json.loads(written) == {"log-driver": "journald", "live-restore": True}
    assert len(host.sent(r"LiveRestoreEnabled")) == 3, "asked until it said true"
    assert clock.slept == 2
    assert len(report.changed) == 1
    assert report.changed[0].startswith("set live-restore in /etc/docker/daemon.json")


def test_a_dockerd_that_never_takes_live_restore_is_an_error_after_30_s(
    clock: FakeClock,
) -> None:
    """dockerd reloaded (systemd) but still reports live-restore off after 30 s: an error that
    names the file, instead of waiting for ever."""
    host = ScriptedHost(name="gpu01")
    host.on(r"^cat /etc/docker/daemon\.json$", "")
    host.on(r"^mkdir -p /etc/docker && cat > ", "")
    host.on(r"^test -d /run/systemd/system$", "")
    host.on(r"^systemctl reload docker\.service$", "")
    host.on(r"^docker info --format '\{\{\.LiveRestoreEnabled\}\}'$", "false\n")

    with pytest.raises(HubopsError) as info:
        _live_restore(host, PrepareReport(host="gpu01"))

    assert str(info.value) == (
        "gpu01: dockerd did not take live-restore true from /etc/docker/daemon.json"
    )
    assert 55 <= clock.slept <= 65, "about 30 s of half-second waits"


def test_a_failed_gpu_smoke_test_says_why_and_points_to_doctor() -> None:
    """The container given all GPUs cannot start (no NVIDIA runtime): the error carries
    Docker's message and sends the operator to `invoke doctor`."""
    refusal = (
        'docker: Error response from daemon: could not select device driver "" with '
        "capabilities: [[gpu]].\n"
    )
    host = ScriptedHost(name="gpu01").on(r"^docker run --rm --gpus all ", refusal, 125)

    with pytest.raises(HubopsError) as info:
        gpu_smoke(host, SMOKE_IMAGE)

    message = str(info.value)
    assert message.startswith("gpu01: GPU smoke test failed")
    assert refusal.strip() in message
    assert "`invoke doctor`" in message
    (smoke,) = host.commands
    assert smoke.endswith(f"{SMOKE_IMAGE} -L")
