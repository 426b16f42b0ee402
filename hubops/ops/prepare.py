"""``invoke host.prepare``: bring a fresh Debian/Ubuntu host to the state a deploy starts from.

Docker engine (installed and started where missing), the SSH user in the docker group, the
NVIDIA Container Toolkit where the host has NVIDIA GPUs, and a GPU smoke test. With
``cluster: swarm`` and a GPU policy, a GPU host becomes a swarm GPU node: its GPUs advertised
as generic resources (daemon.json ``node-generic-resources`` KIND=GPU-UUID), the NVIDIA runtime
as Docker's default runtime, and the toolkit's ``swarm-resource`` set to DOCKER_RESOURCE_<KIND>,
the variable Docker sets in a task to the GPUs the swarm assigned it. The users' files' backup
(hubops.ops.databackup): its script and password, and a systemd timer that runs the script
where the host has systemd. Idempotent: a second run changes nothing and says so.
"""

from __future__ import annotations

import json
import posixpath
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from hubops_hub.diskusage import capability
from pydantic import SecretStr

from hubops.config.settings import Environment
from hubops.errors import HubopsError
from hubops.host import docker as dockerhost
from hubops.host import quota as quotas
from hubops.host.base import Host, quote
from hubops.host.engine import ensure_docker
from hubops.host.rootfiles import as_admin
from hubops.ops import databackup
from hubops.plan.refs import names

TOOLKIT_REPO = "https://nvidia.github.io/libnvidia-container"
TOOLKIT_KEYRING = "/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg"
TOOLKIT_LIST = "/etc/apt/sources.list.d/nvidia-container-toolkit.list"
DAEMON_JSON = "/etc/docker/daemon.json"
TOOLKIT_CONFIG = "/etc/nvidia-container-runtime/config.toml"
# Docker sets DOCKER_RESOURCE_<KIND, upper case> in a swarm task to the generic resources of
# that kind the swarm assigned it (swarmkit genericresource.EnvFormat); the toolkit's
# swarm-resource names the variables it reads the task's GPUs from
SWARM_RESOURCE_PREFIX = "DOCKER_RESOURCE_"
NVIDIA_RUNTIME = {"path": "nvidia-container-runtime", "runtimeArgs": []}
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
    todo: list[str] = field(default_factory=list)  # what only the admin can do

    def lines(self) -> list[str]:
        out = [
            f"{self.host}: "
            + ("changed: " + "; ".join(self.changed) if self.changed else "nothing changed")
        ]
        out += [f"  ok      {k}" for k in self.kept]
        out += [f"  changed {c}" for c in self.changed]
        out += [f"  to do   {t}" for t in self.todo]
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


def prepare(
    host: Host, settings: Environment, smoke_image: str, backup: BackupTimer | None = None
) -> PrepareReport:
    swarm = settings.cluster == "swarm"
    # checked before anything runs: a kind this run cannot advertise is refused at once
    kind = swarm_gpu_kind(settings) if swarm and settings.gpu.policy != "none" else None
    host = as_admin(host, "host.prepare installs packages and configures the Docker engine")
    report = PrepareReport(host=host.name)
    engine = ensure_docker(host)
    if engine.installed:
        report.changed.append(f"installed Docker {engine.version} (docker.io)")
    if engine.started:
        report.changed.append("started the Docker engine")
    if not engine.installed and not engine.started:
        report.kept.append(f"Docker {engine.version} running")

    _live_restore(host, report, swarm=swarm)
    _bridge_netfilter(host, report)
    _project_quotas(host, settings, report)
    user = settings.ssh.user if settings.ssh else None
    if user and user != "root":
        groups = host.run(f"id -nG {quote(user)}", check=False).stdout.split()
        if "docker" in groups:
            report.kept.append(f"{user} is in the docker group")
        else:
            host.run(f"usermod -aG docker {quote(user)}")
            report.changed.append(f"added {user} to the docker group (log in again to use it)")

    if backup is not None:
        data_backup_timer(host, report, settings, backup)

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
    restart = False
    if "nvidia" not in runtimes:
        host.run("nvidia-ctk runtime configure --runtime=docker")
        restart = True
        report.changed.append("configured Docker's nvidia runtime")
    else:
        report.kept.append("Docker knows the nvidia runtime")
    if kind is not None:
        restart = swarm_gpu_node(host, report, kind) or restart
    if restart:
        if _restart_docker(host):
            report.changed.append(f"restarted Docker to apply {DAEMON_JSON}")
        elif kind is None:
            report.changed.append(f"reloaded dockerd (SIGHUP, no systemd) to apply {DAEMON_JSON}")
        else:
            report.changed.append(
                f"reloaded dockerd (SIGHUP, no systemd) to apply {DAEMON_JSON}; it reads "
                "node-generic-resources only when it starts: restart dockerd by hand"
            )
    report.smoke = gpu_smoke(host, smoke_image)
    return report


@dataclass(frozen=True)
class BackupTimer:
    """What host.prepare needs for the users' files' backup: the environment and the password."""

    env: str
    password: SecretStr


SYSTEMD_UNITS = "/etc/systemd/system"


def data_backup_timer(
    host: Host,
    report: PrepareReport,
    settings: Environment,
    backup: BackupTimer,
    unit_dir: str = SYSTEMD_UNITS,
) -> None:
    """The users' files' backup on the hub host: its script and password (as `invoke
    data.backup` installs them), and where the host has systemd a service and a timer
    (backup.schedule) that run the same script. Without systemd it says so: the script is the
    command for the host's own scheduler."""
    env = backup.env
    units = databackup.units(settings, env)
    systemd = host.run("test -d /run/systemd/system", check=False).ok
    schedule = settings.backup.schedule
    if units and systemd:
        checked = host.run(quote("systemd-analyze", "calendar", str(schedule)), check=False)
        if not checked.ok:
            raise HubopsError(
                f"{host.name}: backup.schedule {schedule!r} is not a calendar expression "
                f"systemd takes ({(checked.stderr or checked.stdout).strip()[-200:]}); e.g. "
                "daily or *-*-* 03:00:00"
            )
    running = dockerhost.inspect(host, "container", names(env)["hub"])
    image = str(running["Image"]) if running else None  # no hub yet: nothing to ask
    installed = databackup.install(host, host, settings, env, backup.password, image)
    report.changed += installed.changed
    script = databackup.script_path(settings)
    timer = f"{databackup.unit_name(env)}.timer"
    if not systemd:
        report.kept.append(
            f"no systemd on this host, so no backup timer: run {script} from the host's "
            f"scheduler (e.g. cron: 0 3 * * * /bin/sh {script})"
        )
        return
    if not units:
        old = [f"{unit_dir}/{databackup.unit_name(env)}.{kind}" for kind in ("timer", "service")]
        if host.run(f"test -e {quote(old[0])}", check=False).ok:
            host.run(
                f"systemctl disable --now {quote(timer)} && rm -f {quote(old[0])} "
                f"{quote(old[1])} && systemctl daemon-reload"
            )
            report.changed.append(f"removed the backup timer {timer} (backup.schedule unset)")
        else:
            report.kept.append("no backup timer (backup.schedule unset)")
        return
    written = []
    for name, text in units.items():
        path = f"{unit_dir}/{name}"
        if host.run(f"cat {quote(path)} 2>/dev/null", check=False).stdout != text:
            _write_atomically(host, path, text)
            written.append(name)
    enabled = host.run(f"systemctl is-enabled {quote(timer)}", check=False).ok
    if written or not enabled:
        host.run(f"systemctl daemon-reload && systemctl enable --now {quote(timer)}")
        report.changed.append(f"installed the backup timer {timer} ({schedule}): it runs {script}")
    else:
        report.kept.append(f"backup timer {timer} ({schedule}) runs {script}")


def swarm_gpu_kind(settings: Environment) -> str:
    """The generic resource kind this node's GPUs are advertised as: the one gpu_kind of the
    profiles that reserve GPUs ("gpu" where none does). A node cannot know which of its GPUs
    is which kind, so several kinds are refused."""
    reserving = [p.gpu_kind for p in settings.singleuser.profiles if p.max_gpus]
    kinds = list(dict.fromkeys(reserving)) or ["gpu"]
    if len(kinds) > 1:
        raise HubopsError(
            f"singleuser.profiles reserve GPUs of {len(kinds)} kinds ({', '.join(kinds)}), and "
            "host.prepare cannot tell which of a node's GPUs is which kind; advertise them by "
            f"hand on each GPU node (node-generic-resources KIND=GPU-UUID in {DAEMON_JSON}, "
            f'swarm-resource = "{SWARM_RESOURCE_PREFIX}KIND,..." in {TOOLKIT_CONFIG}), or '
            "give the profiles one gpu_kind"
        )
    return kinds[0]


def swarm_resource_envvar(kind: str) -> str:
    """The variable Docker sets in a task to its assigned GPUs of ``kind``."""
    return (SWARM_RESOURCE_PREFIX + kind).upper()


def gpu_uuids(host: Host) -> list[str]:
    """The host's GPU UUIDs (GPU-...), in nvidia-smi's order."""
    found = host.run("nvidia-smi --query-gpu=uuid --format=csv,noheader", check=False, timeout=60)
    uuids = [line.strip() for line in found.stdout.splitlines() if line.strip().startswith("GPU-")]
    if found.ok and uuids:
        return uuids
    listed = host.run("nvidia-smi -L", check=False, timeout=60).stdout
    return re.findall(r"\(UUID: (GPU-[^)\s]+)\)", listed)


def swarm_gpu_node(
    host: Host,
    report: PrepareReport,
    kind: str,
    *,
    daemon_json: str = DAEMON_JSON,
    toolkit_config: str = TOOLKIT_CONFIG,
) -> bool:
    """Make ``host`` a swarm GPU node (the NVIDIA Container Toolkit's swarm support):
    daemon.json advertises every GPU as ``kind=GPU-UUID`` with the NVIDIA runtime as default
    runtime (a swarm task has no device request: only the default runtime can give it GPUs),
    and the toolkit's swarm-resource names DOCKER_RESOURCE_<KIND>. Returns whether daemon.json
    changed (dockerd reads node-generic-resources only when it starts: the caller restarts it)."""
    uuids = gpu_uuids(host)
    if not uuids:
        raise HubopsError(
            f"{host.name}: nvidia-smi lists GPUs but no GPU UUID "
            "(nvidia-smi --query-gpu=uuid --format=csv,noheader); the swarm needs the UUIDs "
            "to advertise the GPUs: check the NVIDIA driver, then run host.prepare again"
        )
    config = _read_daemon_json(host, daemon_json)
    changes = swarm_daemon_config(config, kind, uuids)
    if changes:
        _write_atomically(host, daemon_json, json.dumps(config, indent=2) + "\n")
        report.changed += [f"{daemon_json}: {c}" for c in changes]
    else:
        report.kept.append(
            f"swarm GPU node: {daemon_json} advertises {len(uuids)} GPU(s) as {kind}=GPU-..., "
            "default runtime nvidia"
        )
    envvar = swarm_resource_envvar(kind)
    found = host.run(f"cat {quote(toolkit_config)}", check=False)
    text, change = swarm_resource_text(found.stdout if found.ok else "", envvar)
    if change:
        _write_atomically(host, toolkit_config, text)
        report.changed.append(
            f"{toolkit_config}: {change}: the NVIDIA runtime gives a swarm task the GPUs the "
            f"swarm assigned it (${envvar})"
        )
    else:
        report.kept.append(f'{toolkit_config}: swarm-resource = "{envvar}"')
    return bool(changes)


def swarm_daemon_config(config: dict[str, object], kind: str, uuids: list[str]) -> list[str]:
    """Merge the swarm GPU node's keys into a daemon.json ``config`` (in place, every other key
    kept); what changed, or [] where nothing did."""
    changes = []
    existing = config.get("node-generic-resources", [])
    if not isinstance(existing, list) or not all(isinstance(e, str) for e in existing):
        raise HubopsError(
            f"node-generic-resources in {DAEMON_JSON} is not a list of KIND=VALUE strings "
            f"({existing!r}); fix it, then run host.prepare again"
        )
    wanted = [f"{kind}={u}" for u in uuids]
    # entries of this kind, or naming one of these GPUs (under another kind: one GPU must
    # not be handed out twice), are replaced by the wanted ones; all others are kept
    others = [
        e for e in existing if e.split("=", 1)[0] != kind and e.split("=", 1)[-1] not in uuids
    ]
    merged = others + wanted
    if sorted(merged) != sorted(existing):
        config["node-generic-resources"] = merged
        dropped = [e for e in existing if e not in merged]
        changes.append(
            f"advertised {len(uuids)} GPU(s) to the swarm as generic resources "
            f"(node-generic-resources {', '.join(wanted)})"
            + (f", replacing {', '.join(dropped)}" if dropped else "")
        )
    runtimes = config.get("runtimes")
    if runtimes is None:
        runtimes = config["runtimes"] = {}
    if not isinstance(runtimes, dict):
        raise HubopsError(
            f"runtimes in {DAEMON_JSON} is not a mapping ({runtimes!r}); fix it, then run "
            "host.prepare again"
        )
    if "nvidia" not in runtimes:
        runtimes["nvidia"] = dict(NVIDIA_RUNTIME)
        changes.append("added the nvidia runtime (nvidia-container-runtime)")
    if config.get("default-runtime") != "nvidia":
        before = config.get("default-runtime")
        config["default-runtime"] = "nvidia"
        changes.append(
            "set default-runtime nvidia"
            + (f" (was {before})" if before else "")
            + ": a swarm task has no device request, so only the default runtime can give it "
            "the GPUs the swarm assigned"
        )
    return changes


_TOML_TABLE = re.compile(r"^\s*\[")
_SWARM_RESOURCE = re.compile(r"^\s*swarm-resource\s*=\s*(.*?)\s*$")
_SWARM_RESOURCE_COMMENTED = re.compile(r"^\s*#\s*swarm-resource\s*=")


def swarm_resource_text(text: str, envvar: str) -> tuple[str, str | None]:
    """The toolkit's config.toml ``text`` with the top-level key swarm-resource naming
    ``envvar``, edited minimally, and what changed (None: nothing, the text as it was)."""
    lines = text.splitlines(keepends=True)
    top = next((i for i, line in enumerate(lines) if _TOML_TABLE.match(line)), len(lines))
    wanted = f'swarm-resource = "{envvar}"\n'
    for i in range(top):
        found = _SWARM_RESOURCE.match(lines[i])
        if found:
            value = re.match(r'"([^"]*)"', found.group(1))
            names = [n.strip() for n in value.group(1).split(",")] if value else []
            if envvar in names:
                return text, None
            lines[i] = wanted
            return "".join(lines), f"set swarm-resource to {envvar} (was {found.group(1)})"
    for i in range(top):
        if _SWARM_RESOURCE_COMMENTED.match(lines[i]):
            lines[i] = wanted
            return "".join(lines), f'uncommented swarm-resource = "{envvar}"'
    if top and not lines[top - 1].endswith("\n"):
        lines[top - 1] += "\n"
    lines[top:top] = [wanted, "\n"] if top < len(lines) else [wanted]
    return "".join(lines), f'added swarm-resource = "{envvar}"'


def fstab_with_prjquota(text: str, target: str) -> str | None:
    """/etc/fstab's ``text`` with prjquota added to the options of the entry mounted at
    ``target``; None where no entry mounts there (or it has the option already)."""
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        fields = line.split()
        if len(fields) < 4 or fields[0].startswith("#") or fields[1] != target:
            continue
        options = fields[3].split(",")
        if {"prjquota", "pquota"} & set(options):
            return None
        fields[3] = ",".join([o for o in options if o != "defaults"] + ["prjquota"])
        lines[i] = "\t".join(fields) + "\n"
        return "".join(lines)
    return None


# the host's tools that set a project and its limit (the hub runs them at each spawn, chrooted
# into the host's root): command -> Debian package
QUOTA_TOOLS = {
    "xfs": {"xfs_quota": "xfsprogs"},
    "ext4": {"chattr": "e2fsprogs", "setquota": "quota"},
}


def _quota_tools(host: Host, fstype: str, report: PrepareReport) -> None:
    tools = QUOTA_TOOLS[fstype]
    missing = [
        package
        for command, package in tools.items()
        if not host.run(f"command -v {command}", check=False).ok
    ]
    if not missing:
        report.kept.append(f"quota tools installed ({', '.join(tools)})")
        return
    host.run(
        "export DEBIAN_FRONTEND=noninteractive; apt-get update -q && apt-get install -y -q "
        "--no-install-recommends " + " ".join(missing),
        timeout=900,
    )
    report.changed.append(f"installed {', '.join(missing)} (the hub sets quotas with them)")


def _project_quotas(host: Host, settings: Environment, report: PrepareReport) -> None:
    """Project quotas for paths.user_data_dir, where singleuser.disk_quota asks for them and
    its filesystem allows: XFS gets prjquota in /etc/fstab (XFS takes quota options only at
    mount time, so the admin remounts); ext4 can get the project feature only unmounted, so
    there the admin is told what to run."""
    su = settings.singleuser
    if settings.cluster != "docker" or not su.has_disk_quota or su.disk_quota_mode == "soft":
        return
    m = quotas.mount_of(host, settings.paths.user_data_dir)
    can = capability(m.fstype, m.options)
    where = f"{m.target} ({m.fstype}, {m.source})"
    if m.fstype in QUOTA_TOOLS:
        _quota_tools(host, m.fstype, report)
    if can.mode == "hard":
        report.kept.append(f"project quotas on {where}")
        return
    if m.fstype == "xfs" and m.target != "/":
        fstab = host.run("cat /etc/fstab", check=False).stdout
        changed = fstab_with_prjquota(fstab, m.target)
        if changed is not None:
            host.run("cp -p /etc/fstab /etc/fstab.hubops-backup")
            _write_atomically(host, "/etc/fstab", changed)
            report.changed.append(f"added prjquota to /etc/fstab's entry for {m.target}")
        report.todo.append(
            f"project quotas on {where}: unmount and mount it again (umount {m.target} && "
            f"mount {m.target}), or reboot"
            + (
                ""
                if changed is not None
                else "; /etc/fstab "
                "has no entry for it: add prjquota to the options it is mounted with"
            )
        )
    elif m.fstype == "xfs":
        report.todo.append(
            f"project quotas on {where}: the root filesystem takes quota options from the "
            "kernel command line: add rootflags=prjquota (GRUB_CMDLINE_LINUX in "
            "/etc/default/grub, then update-grub) and reboot, or put paths.user_data_dir on "
            "a filesystem of its own"
        )
    else:
        report.todo.append(f"disk quotas on {where}: {can.reason}")


def _read_daemon_json(host: Host, path: str = DAEMON_JSON) -> dict[str, object]:
    found = host.run(f"cat {quote(path)}", check=False)
    try:
        config = json.loads(found.stdout) if found.ok and found.stdout.strip() else {}
    except json.JSONDecodeError as exc:
        raise HubopsError(
            f"{host.name}: {path} is not valid JSON ({exc}); fix it, then run host.prepare again"
        ) from None
    if not isinstance(config, dict):
        raise HubopsError(
            f"{host.name}: {path} is not a JSON object; fix it, then run host.prepare again"
        )
    return config


def _write_atomically(host: Host, path: str, text: str) -> None:
    """``text`` into ``path`` on ``host``: a temporary file beside it, then renamed over it."""
    tmp = f"{path}.hubops-tmp"
    host.run(
        f"mkdir -p {quote(posixpath.dirname(path))} && cat > {quote(tmp)} && "
        f"mv -f {quote(tmp)} {quote(path)}",
        stdin=text,
    )


def gpu_smoke_command(image: str) -> str:
    """A container of ``image`` given all GPUs lists them with nvidia-smi (the smoke test of
    host.prepare, and doctor's check that containers see the GPUs)."""
    return quote(
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
    )


def gpu_smoke(host: Host, image: str) -> str:
    """A container given all GPUs runs nvidia-smi; returns what it listed."""
    result = host.run(gpu_smoke_command(image), check=False, timeout=300)
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


def _live_restore(
    host: Host,
    report: PrepareReport,
    *,
    swarm: bool = False,
    daemon_json: str = DAEMON_JSON,
    reload: Callable[[Host, bool], None] | None = None,
) -> None:
    """live-restore: user servers (with their kernels and training runs) keep running while
    dockerd restarts, e.g. for a docker.io upgrade. It is reloadable: no container restarts.
    A swarm node is the exception: dockerd refuses swarm mode with live-restore ("--live-restore
    daemon configuration is incompatible with swarm mode"), so there it is turned off."""
    config = _read_daemon_json(host, daemon_json)
    want = not swarm
    if bool(config.get("live-restore")) is want:
        report.kept.append(
            "live-restore on: user servers survive a restart of dockerd"
            if want
            else "live-restore off (cluster swarm: dockerd refuses swarm mode with it)"
        )
        return
    config["live-restore"] = want
    _write_atomically(host, daemon_json, json.dumps(config, indent=2) + "\n")
    (reload or _reload_live_restore)(host, want)
    if want:
        report.changed.append(
            f"set live-restore in {daemon_json} and reloaded dockerd: user servers survive a "
            "restart of the engine (an upgrade, say)"
        )
    else:
        report.changed.append(
            f"turned live-restore off in {daemon_json} and reloaded dockerd: cluster swarm, and "
            "dockerd refuses swarm mode with live-restore (a restart of dockerd stops this "
            "node's containers; the swarm starts its tasks again)"
        )


def _reload_live_restore(host: Host, want: bool) -> None:
    """dockerd reloads daemon.json (SIGHUP) and reports live-restore as ``want``."""
    if host.run("test -d /run/systemd/system", check=False).ok:
        host.run("systemctl reload docker.service", timeout=120)
    else:
        host.run('kill -HUP "$(cat /var/run/docker.pid)"')
    deadline = time.monotonic() + 30
    expected = "true" if want else "false"
    while (
        host.run("docker info --format '{{.LiveRestoreEnabled}}'", check=False).stdout.strip()
        != expected
    ):
        if time.monotonic() > deadline:
            raise HubopsError(
                f"{host.name}: dockerd did not take live-restore {expected} from {DAEMON_JSON}"
            )
        time.sleep(0.5)


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


def _restart_docker(host: Host) -> bool:
    """Restart dockerd (systemd); without systemd only a SIGHUP (a reload). Whether it was a
    restart."""
    if host.run("test -d /run/systemd/system", check=False).ok:
        host.run("systemctl restart docker.service", timeout=300)
        return True
    host.run("pkill -HUP dockerd", check=False)
    return False
