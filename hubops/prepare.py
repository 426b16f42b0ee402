"""``invoke host.prepare``: bring a fresh Debian/Ubuntu host to the state a deploy starts from.

Docker engine (installed and started where missing), the SSH user in the docker group, the
NVIDIA Container Toolkit where the host has NVIDIA GPUs, and a GPU smoke test. Idempotent: a
second run changes nothing and says so.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from hubops.engine import ensure_docker
from hubops.errors import HubopsError
from hubops.hosts import Host, quote
from hubops.rootfiles import as_admin
from hubops.settings import Environment

TOOLKIT_REPO = "https://nvidia.github.io/libnvidia-container"
TOOLKIT_KEYRING = "/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg"
TOOLKIT_LIST = "/etc/apt/sources.list.d/nvidia-container-toolkit.list"
DAEMON_JSON = "/etc/docker/daemon.json"
# hubops' firewall filters traffic between two containers of one network: such traffic meets
# iptables only with br_netfilter loaded and this sysctl on (Docker itself turns it on only
# for networks without inter-container traffic)
BRIDGE_MODULES_FILE = "/etc/modules-load.d/hubops.conf"
BRIDGE_SYSCTL_FILE = "/etc/sysctl.d/90-hubops.conf"
BRIDGE_SYSCTL = "net.bridge.bridge-nf-call-iptables"


@dataclass
class PrepareReport:
    host: str
    changed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    gpus: list[str] = field(default_factory=list)
    smoke: str = ""

    def lines(self) -> list[str]:
        out = [
            f"{self.host}: "
            + ("changed: " + "; ".join(self.changed) if self.changed else "nothing changed")
        ]
        out += [f"  ok      {k}" for k in self.kept]
        out += [f"  changed {c}" for c in self.changed]
        out.append(f"  GPUs    {', '.join(self.gpus) if self.gpus else 'none found'}")
        out.append(f"  smoke   {self.smoke}")
        return out


def list_gpus(host: Host) -> list[str]:
    result = host.run("nvidia-smi -L", check=False, timeout=60)
    return [line.strip() for line in result.stdout.splitlines() if line.startswith("GPU ")]


def has_nvidia_hardware(host: Host) -> bool:
    return host.run(
        "ls /dev/nvidia0 >/dev/null 2>&1 || (command -v lspci >/dev/null && lspci -nn | "
        "grep -qi 'nvidia')",
        check=False,
    ).ok


def prepare(host: Host, settings: Environment, smoke_image: str) -> PrepareReport:
    host = as_admin(host, "host.prepare installs packages and configures the Docker engine")
    report = PrepareReport(host=host.name)
    engine = ensure_docker(host)
    if engine.installed:
        report.changed.append(f"installed Docker {engine.version} (docker.io)")
    if engine.started:
        report.changed.append("started the Docker engine")
    if not engine.installed and not engine.started:
        report.kept.append(f"Docker {engine.version} running")

    _live_restore(host, report)
    _bridge_netfilter(host, report)
    user = settings.ssh.user if settings.ssh else None
    if user and user != "root":
        groups = host.run(f"id -nG {quote(user)}", check=False).stdout.split()
        if "docker" in groups:
            report.kept.append(f"{user} is in the docker group")
        else:
            host.run(f"usermod -aG docker {quote(user)}")
            report.changed.append(f"added {user} to the docker group (log in again to use it)")

    report.gpus = list_gpus(host)
    if not report.gpus:
        if has_nvidia_hardware(host):
            raise HubopsError(
                f"{host.name}: NVIDIA hardware but no working driver (nvidia-smi -L lists no "
                "GPU); install the NVIDIA driver for this GPU (e.g. apt install nvidia-driver) "
                "and reboot, then run host.prepare again"
            )
        report.smoke = "skipped: no NVIDIA GPU on this host"
        return report
    if host.run("command -v nvidia-ctk", check=False).ok:
        report.kept.append("NVIDIA Container Toolkit installed")
    else:
        _install_toolkit(host)
        report.changed.append("installed the NVIDIA Container Toolkit")
    runtimes = host.run("docker info --format '{{json .Runtimes}}'", check=False).stdout
    if "nvidia" not in runtimes:
        host.run("nvidia-ctk runtime configure --runtime=docker")
        _restart_docker(host)
        report.changed.append("configured Docker's nvidia runtime and restarted Docker")
    else:
        report.kept.append("Docker knows the nvidia runtime")
    report.smoke = gpu_smoke(host, smoke_image)
    return report


def gpu_smoke(host: Host, image: str) -> str:
    """A container given all GPUs runs nvidia-smi; returns what it listed."""
    result = host.run(
        quote(
            "docker",
            "run",
            "--rm",
            "--gpus",
            "all",
            "--entrypoint",
            "nvidia-smi",
            "--env",
            "NVIDIA_DRIVER_CAPABILITIES=utility",
            image,
            "-L",
        ),
        check=False,
        timeout=300,
    )
    if not result.ok or "GPU " not in result.stdout:
        raise HubopsError(
            f"{host.name}: GPU smoke test failed: a container given all GPUs could not run "
            f"nvidia-smi: {(result.stderr or result.stdout).strip()[-300:]}; run "
            "`invoke doctor` for the likely cause"
        )
    lines = [line for line in result.stdout.splitlines() if line.startswith("GPU ")]
    return f"a container sees {len(lines)} GPU(s)"


def _install_toolkit(host: Host) -> None:
    host.run(
        "set -e; export DEBIAN_FRONTEND=noninteractive; "
        "apt-get update -q; apt-get install -y -q --no-install-recommends curl gnupg "
        "ca-certificates; "
        f"curl -fsSL {TOOLKIT_REPO}/gpgkey | gpg --batch --yes --dearmor -o {TOOLKIT_KEYRING}; "
        f"curl -fsSL {TOOLKIT_REPO}/stable/deb/nvidia-container-toolkit.list | "
        f"sed 's#deb https://#deb [signed-by={TOOLKIT_KEYRING}] https://#g' > {TOOLKIT_LIST}; "
        "apt-get update -q; apt-get install -y -q nvidia-container-toolkit",
        timeout=1800,
    )


def _live_restore(host: Host, report: PrepareReport) -> None:
    """live-restore: user servers (with their kernels and training runs) keep running while
    dockerd restarts, e.g. for a docker.io upgrade. It is reloadable: no container restarts."""
    found = host.run(f"cat {DAEMON_JSON}", check=False)
    try:
        config = json.loads(found.stdout) if found.ok and found.stdout.strip() else {}
    except json.JSONDecodeError as exc:
        raise HubopsError(
            f"{host.name}: {DAEMON_JSON} is not valid JSON ({exc}); fix it, then run "
            "host.prepare again"
        ) from None
    if config.get("live-restore") is True:
        report.kept.append("live-restore on: user servers survive a restart of dockerd")
        return
    config["live-restore"] = True
    host.run(
        f"mkdir -p /etc/docker && cat > {DAEMON_JSON}.hubops-tmp && "
        f"mv -f {DAEMON_JSON}.hubops-tmp {DAEMON_JSON}",
        stdin=json.dumps(config, indent=2) + "\n",
    )
    if host.run("test -d /run/systemd/system", check=False).ok:
        host.run("systemctl reload docker.service", timeout=120)
    else:
        host.run('kill -HUP "$(cat /var/run/docker.pid)"')
    deadline = time.monotonic() + 30
    while (
        host.run("docker info --format '{{.LiveRestoreEnabled}}'", check=False).stdout.strip()
        != "true"
    ):
        if time.monotonic() > deadline:
            raise HubopsError(f"{host.name}: dockerd did not take live-restore from {DAEMON_JSON}")
        time.sleep(0.5)
    report.changed.append(
        f"set live-restore in {DAEMON_JSON} and reloaded dockerd: user servers survive a "
        "restart of the engine (an upgrade, say)"
    )


def _bridge_netfilter(host: Host, report: PrepareReport) -> None:
    """br_netfilter and bridge-nf-call-iptables=1, now and at every boot."""
    on = host.run(f"sysctl -n {BRIDGE_SYSCTL}", check=False).stdout.strip() == "1"
    kept = host.run(
        f"test -f {BRIDGE_MODULES_FILE} && test -f {BRIDGE_SYSCTL_FILE}", check=False
    ).ok
    if on and kept:
        report.kept.append(f"{BRIDGE_SYSCTL} = 1 (the firewall sees traffic inside a network)")
        return
    host.run(
        f"printf 'br_netfilter\\n' > {BRIDGE_MODULES_FILE} && "
        f"printf '{BRIDGE_SYSCTL} = 1\\n' > {BRIDGE_SYSCTL_FILE} && "
        f"{{ modprobe br_netfilter 2>/dev/null || true; }} && sysctl -q -w {BRIDGE_SYSCTL}=1"
    )
    report.changed.append(
        f"loaded br_netfilter and set {BRIDGE_SYSCTL} = 1 (and at boot: {BRIDGE_MODULES_FILE}, "
        f"{BRIDGE_SYSCTL_FILE}): hubops' firewall sees traffic between user servers"
    )


def _restart_docker(host: Host) -> None:
    if host.run("test -d /run/systemd/system", check=False).ok:
        host.run("systemctl restart docker.service", timeout=300)
    else:
        host.run("pkill -HUP dockerd", check=False)
