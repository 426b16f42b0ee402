"""``invoke doctor``: read-only preflight checks of a hub host, each with a fix hint.

Nothing here changes the host: every check only reads (files, ``docker info``, a throwaway
container that is removed). A check that cannot apply (no GPU, no TLS) says so and is skipped.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal

from cryptography import x509
from hubops_hub.labels import LABEL_CUDA
from hubops_hub.oidc import discovery_url

from hubops.config.settings import OAUTH_TYPES, Environment
from hubops.deploy import firewall, network, swarm, tls
from hubops.host import docker as dockerhost
from hubops.host import lock
from hubops.host import quota as quotas
from hubops.host.base import Host, quote
from hubops.host.engine import MIN_API
from hubops.host.rootfiles import root_files
from hubops.ops.prepare import gpu_smoke_command, has_nvidia_hardware, list_gpus
from hubops.plan.model import OAUTH_CA_FILE, Plan

Status = Literal["ok", "warn", "fail", "skip"]
MIN_FREE_GB = {"images (/var/lib/docker)": 20.0, "hub data": 1.0, "user data": 10.0}
CERT_WARN_DAYS = 14
MAX_SKEW_S = 30.0
NVML_ERROR = "Failed to initialize NVML: Unknown Error"


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


@dataclass
class Context:
    host: Host
    settings: Environment
    plan: Plan
    gpus: list[str]
    probe_image: str | None  # an image on the host to run probes in (the hub's), if any
    engine: bool = False  # the engine answered (checks that ask it about containers need it)

    def files(self) -> Host | None:
        """Who reads root's files on the host (the host itself for root; see rootfiles)."""
        return root_files(self.host, lambda: [self.probe_image] if self.probe_image else [])


def run_checks(host: Host, settings: Environment, plan: Plan) -> list[Check]:
    ctx = Context(host, settings, plan, gpus=[], probe_image=None)
    checks: list[Check] = []
    for check in CHECKS:
        try:
            checks.extend(check(ctx))
        except Exception as exc:  # a check that breaks is a failed check, not a crash
            checks.append(Check(check.__name__.removeprefix("check_"), "fail", str(exc)[-300:]))
    return checks


def check_ssh(ctx: Context) -> list[Check]:
    if ctx.settings.ssh is None:
        return [Check("ssh", "skip", "local environment: no SSH")]
    who = ctx.host.run("id -un && uname -r", timeout=30).stdout.split()
    return [Check("ssh", "ok", f"{ctx.host.name} as {who[0]} (kernel {who[-1]})")]


def check_docker(ctx: Context) -> list[Check]:
    result = ctx.host.run(
        "docker version --format '{{.Server.Version}} {{.Server.APIVersion}}' && "
        "docker info --format '{{.DefaultRuntime}} {{.LiveRestoreEnabled}}'",
        check=False,
    )
    if not result.ok:
        return [
            Check(
                "docker",
                "fail",
                result.stderr.strip()[-200:] or "no engine",
                "run invoke host.prepare (installs and starts the engine)",
            )
        ]
    version, api, runtime, live_restore = result.stdout.split()
    if tuple(int(x) for x in api.split(".")) < MIN_API:
        return [
            Check(
                "docker",
                "fail",
                f"Docker {version}, API {api}",
                "upgrade to Docker 20.10 or newer (API 1.41+)",
            )
        ]
    ctx.engine = True
    hub = next(c for c in ctx.plan.containers if c.role == "hub")
    if dockerhost.image_id(ctx.host, hub.image):
        ctx.probe_image = hub.image
    checks = [Check("docker", "ok", f"Docker {version}, API {api}")]
    if runtime == "nvidia":
        checks.append(
            Check(
                "default runtime",
                "warn",
                "nvidia: a container from a CUDA image sees every GPU unless told otherwise; "
                "hubops' user servers without a GPU get NVIDIA_VISIBLE_DEVICES=void, other "
                "containers on this engine do not",
                "keep runc as the default runtime unless the host runs Docker Swarm GPU nodes",
            )
        )
    else:
        checks.append(Check("default runtime", "ok", runtime))
    if ctx.settings.cluster == "swarm":
        checks.append(
            Check(
                "live restore",
                "ok" if live_restore != "true" else "fail",
                "off, as swarm mode needs"
                if live_restore != "true"
                else "on: dockerd refuses swarm mode with it",
                ""
                if live_restore != "true"
                else f"invoke host.prepare --env {ctx.plan.environment}",
            )
        )
    elif live_restore == "true":
        checks.append(
            Check("live restore", "ok", "user servers keep running when dockerd restarts")
        )
    else:
        checks.append(
            Check(
                "live restore",
                "warn",
                "off: a restart of the Docker engine (an upgrade, say) stops every user server",
                f"invoke host.prepare --env {ctx.plan.environment} (sets live-restore)",
            )
        )
    return checks


def check_lock(ctx: Context) -> list[Check]:
    """Who holds the deploy lock (read, never taken)."""
    holder = lock.holder(ctx.host, ctx.plan.environment)
    if holder is None:
        return [Check("deploy lock", "ok", "free")]
    return [
        Check(
            "deploy lock",
            "warn",
            f"held by {holder}",
            f"wait for that deploy; if it died: invoke deploy --env {ctx.plan.environment} "
            "--break-lock",
        )
    ]


def check_network(ctx: Context) -> list[Check]:
    if not ctx.engine:  # a stopped engine is not a broken DNS: the docker check says why
        return [Check("network", "skip", "the engine does not answer (see docker)")]
    problem = network.resolution_problem(ctx.host, ctx.plan)
    if problem:
        return [
            Check(
                "network",
                "fail",
                problem,
                f"invoke deploy --env {ctx.plan.environment} (recreates {ctx.plan.network}, "
                "keeps every container running)",
            )
        ]
    return [Check("network", "ok", "the hub and the proxy resolve each other (or do not run)")]


def check_swarm(ctx: Context) -> list[Check]:
    """cluster swarm: a manager, its nodes, and user data that every node sees the same."""
    if ctx.settings.cluster != "swarm":
        return [Check("swarm", "skip", f"cluster is {ctx.settings.cluster}")]
    problem = swarm.manager_problem(ctx.host)
    if problem:
        return [Check("swarm", "fail", problem, "see the README, 'Scaling out'")]
    found = swarm.nodes(ctx.host)
    ready = [n for n in found if n.state == "ready" and n.availability == "active"]
    kinds = sorted({f"{k} x{len(v)}" for n in ready for k, v in n.gpus.items()})
    checks = [
        Check(
            "swarm",
            "ok" if len(ready) == len(found) else "warn",
            f"{len(ready)} of {len(found)} node(s) ready and active; GPUs advertised: "
            f"{', '.join(kinds) or 'none'}",
            "" if len(ready) == len(found) else "docker node ls (on this manager)",
        )
    ]
    kind_problem = swarm.gpu_kind_problem(ctx.settings, found)
    if kind_problem:
        checks.append(Check("swarm GPUs", "fail", kind_problem))
    if ctx.settings.swarm.user_data == "path" and ctx.probe_image:
        path = ctx.settings.paths.user_data_dir
        seen = swarm.shared_path_check(ctx.host, path, ctx.probe_image)
        bad = {node: why for node, why in seen.items() if why != "ok"}
        checks.append(
            Check(
                "shared user data",
                "fail" if bad else "ok",
                "; ".join(f"{node}: {why}" for node, why in sorted(bad.items()))
                if bad
                else f"every node ({len(seen)}) sees {path} as this host does",
                f"mount {path} at the same place on every node (NFS), and load or pull "
                "the images there"
                if bad
                else "",
            )
        )
    return checks


def check_isolation(ctx: Context) -> list[Check]:
    """The firewall that keeps user servers apart (hubops.deploy.firewall): its container applied
    the rules, on an engine where it can."""
    env = ctx.plan.environment
    if ctx.settings.cluster == "swarm":
        return [
            Check(
                "isolation",
                "warn",
                "cluster swarm: user servers on the overlay reach each other, the proxy's API "
                "and the hub (no per-host firewall sees overlay traffic)",
                "use cluster kubernetes (NetworkPolicy) where users must be kept apart",
            )
        ]
    if not ctx.settings.network.isolation:
        return [
            Check(
                "isolation",
                "warn",
                "network.isolation is false: every user server reaches every other one, the "
                "proxy's API and the host's ports",
                "set network.isolation: true unless the engine is rootless or user-namespaced",
            )
        ]
    security = ctx.host.run("docker info --format '{{json .SecurityOptions}}'", check=False)
    if "rootless" in security.stdout or "userns" in security.stdout:
        return [
            Check(
                "isolation",
                "fail",
                "the engine is rootless or remaps user namespaces: hubops' firewall cannot "
                "set the host's iptables rules",
                "set network.isolation: false, and keep user servers apart on this host by "
                "other means",
            )
        ]
    bridged = ctx.host.run(f"cat {firewall.BRIDGE_NF}", check=False).stdout.strip()
    if bridged != "1":
        return [
            Check(
                "isolation",
                "fail",
                f"{firewall.BRIDGE_NF} is {bridged or 'missing'}: traffic between two user "
                "servers of one network bypasses iptables, so the firewall cannot stop it",
                f"invoke host.prepare --env {env} (loads br_netfilter and sets it, for good)",
            )
        ]
    name = firewall.name(env)
    found = dockerhost.inspect(ctx.host, "container", name)
    if found is None:
        return [Check("isolation", "warn", f"no {name} yet", f"invoke deploy --env {env}")]
    log = dockerhost.logs(ctx.host, name, lines=200)
    if not dockerhost.is_running(found) or firewall.APPLIED not in log:
        return [
            Check(
                "isolation",
                "fail",
                f"{name} does not keep the rules: {log.strip()[-200:] or 'not running'}",
                f"docker logs {name}; then invoke deploy --env {env}",
            )
        ]
    egress = ctx.settings.network.egress
    return [Check("isolation", "ok", f"{name} keeps the rules (egress: {egress})")]


def check_disk(ctx: Context) -> list[Check]:
    p = ctx.settings.paths
    places = {
        "images (/var/lib/docker)": "/var/lib/docker",
        "hub data": p.data_dir,
        "user data": p.user_data_dir,
    }
    out = []
    for what, path in places.items():
        # the nearest existing parent: a path the deploy has not made yet still has a disk
        result = ctx.host.run(
            f'p={quote(path)}; while [ ! -e "$p" ]; do p=$(dirname "$p"); done; '
            'df -Pk "$p" | tail -n 1',
            check=False,
        )
        fields = result.stdout.split()
        if not result.ok or len(fields) < 4:
            out.append(Check(f"disk {what}", "fail", f"cannot read free space of {path}"))
            continue
        free_gb = int(fields[3]) / 1e6
        need = MIN_FREE_GB[what]
        status: Status = "ok" if free_gb >= need else "fail"
        out.append(
            Check(
                f"disk {what}",
                status,
                f"{free_gb:.1f} GB free at {path}",
                "" if status == "ok" else f"free space: at least {need:.0f} GB",
            )
        )
    return out


def check_quota(ctx: Context) -> list[Check]:
    """Which disk quota mode the host can do for paths.user_data_dir, and whether one user
    filling it can take the hub's DB down with it."""
    settings = ctx.settings
    if settings.cluster != "docker":
        return [Check("disk quota", "skip", f"cluster {settings.cluster}: not the hub host's")]
    su, p = settings.singleuser, settings.paths
    files = ctx.files() or ctx.host  # root's view: a deploy user may not see the paths
    can = quotas.host_capability(files, settings)
    env_file = f"config/environments/{ctx.plan.environment}.yaml"
    out = []
    problem = quotas.hard_mode_problem(settings, can, env_file)
    if problem:
        out.append(Check("disk quota", "fail", problem))
    else:
        out.append(Check("disk quota", "ok", quotas.mode_line(settings, can)))
    hard = su.has_disk_quota and su.disk_quota_mode != "soft" and can.mode == "hard"
    if not hard and quotas.same_filesystem(files, p.data_dir, p.user_data_dir):
        out.append(
            Check(
                "disk shared",
                "warn",
                f"paths.data_dir ({p.data_dir}) and paths.user_data_dir ({p.user_data_dir}) "
                "are on one filesystem with no hard quota: a user who fills it stops the "
                "hub's DB writes, and every login with them",
                "put paths.user_data_dir on a filesystem of its own (a partition, a volume), "
                "or set singleuser.disk_quota on XFS with prjquota",
            )
        )
    return out


def check_ports(ctx: Context) -> list[Check]:
    proxy = next(c for c in ctx.plan.containers if c.role == "proxy")
    out = []
    for port in proxy.ports:
        owner = _port_owner(ctx.host, port.host_port)
        ours = _published_by(ctx.host, proxy.name, port.host_port)
        where = f"{port.host_ip}:{port.host_port}"
        if owner is None or ours:
            detail = "served by the hub's proxy" if ours else "free"
            out.append(Check(f"port {port.host_port}", "ok", f"{where} {detail}"))
        else:
            out.append(
                Check(
                    f"port {port.host_port}",
                    "fail",
                    f"{where} is taken: {owner}",
                    "stop what listens there, or change hub.port / hub.http_port",
                )
            )
    return out


def _port_owner(host: Host, port: int) -> str | None:
    result = host.run(f"ss -Hltnp 'sport = :{port}' 2>/dev/null", check=False)
    if result.ok and result.stdout.strip():
        match = re.search(r'users:\(\("([^"]+)"', result.stdout)
        return match.group(1) if match else result.stdout.strip()[:80]
    if result.ok:
        return None
    # no ss: try to bind the port with the host's python3
    probe = host.run(
        'python3 -c "import socket,sys; s=socket.socket(); '
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
        f"s.bind(('0.0.0.0', {port}))\"",
        check=False,
    )
    return None if probe.ok else "another process"


def _published_by(host: Host, container: str, port: int) -> bool:
    result = host.run(f"docker port {quote(container)} 2>/dev/null", check=False)
    return result.ok and any(
        line.rstrip().endswith(f":{port}") for line in result.stdout.splitlines()
    )


def check_gpu(ctx: Context) -> list[Check]:
    ctx.gpus = list_gpus(ctx.host)
    if not ctx.gpus:
        if has_nvidia_hardware(ctx.host):
            return [
                Check(
                    "nvidia driver",
                    "fail",
                    "NVIDIA hardware, but nvidia-smi lists none",
                    "install the NVIDIA driver and reboot",
                )
            ]
        status: Status = "fail" if ctx.settings.gpu.policy != "none" else "skip"
        return [
            Check(
                "nvidia driver",
                status,
                "no NVIDIA GPU on this host",
                "gpu.policy needs GPUs: use a GPU host or set gpu.policy: none"
                if status == "fail"
                else "",
            )
        ]
    driver = ctx.host.run(
        "nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -n1", check=False
    ).stdout.strip()
    out = [
        Check(
            "nvidia driver",
            "ok",
            f"driver {driver}; {len(ctx.gpus)} GPU(s): " + "; ".join(ctx.gpus),
        )
    ]
    supported = _driver_cuda(ctx.host)
    for image, need in _image_cuda(ctx).items():
        if supported is None:
            out.append(Check(f"cuda {image}", "warn", "cannot read the driver's CUDA version"))
        elif _ver(need) > _ver(supported):
            out.append(
                Check(
                    f"cuda {image}",
                    "fail",
                    f"needs CUDA {need}, the driver supports up to {supported}",
                    "upgrade the NVIDIA driver, or use an image for an older CUDA",
                )
            )
        else:
            out.append(Check(f"cuda {image}", "ok", f"needs CUDA {need}, driver has {supported}"))
    return out


def check_gpu_containers(ctx: Context) -> list[Check]:
    if not ctx.gpus:
        return [Check("gpu in containers", "skip", "no NVIDIA GPU on this host")]
    if ctx.probe_image is None:
        return [Check("gpu in containers", "skip", "no hub image on the host yet (deploy first)")]
    result = ctx.host.run(gpu_smoke_command(ctx.probe_image), check=False, timeout=120)
    text = result.stdout + result.stderr
    if NVML_ERROR in text:
        return [
            Check(
                "gpu in containers",
                "fail",
                NVML_ERROR,
                "containers lost the GPUs after a daemon reload (systemd cgroup driver): "
                "restart them, and set no-cgroups or the cgroupfs driver; see NVIDIA "
                "container toolkit troubleshooting",
            )
        ]
    if not result.ok:
        return [
            Check(
                "gpu in containers",
                "fail",
                text.strip()[-200:],
                "run invoke host.prepare (NVIDIA Container Toolkit)",
            )
        ]
    seen = sum(1 for line in result.stdout.splitlines() if line.startswith("GPU "))
    return [Check("gpu in containers", "ok", f"a container given all GPUs sees {seen}")]


def check_tls(ctx: Context) -> list[Check]:
    settings = ctx.settings.tls
    if not settings.enabled:
        return [Check("tls", "skip", "TLS is not enabled")]
    assert settings.cert is not None
    assert settings.key is not None
    reader = ctx.files()
    if reader is None:
        return [Check("tls", "skip", "no hubops image on the host to read the files as root")]
    cert_pem = reader.run(f"cat {quote(settings.cert)}", check=False)
    key_pem = reader.run(f"cat {quote(settings.key)}", check=False)
    if not cert_pem.ok or not key_pem.ok:
        missing = settings.cert if not cert_pem.ok else settings.key
        return [
            Check(
                "tls",
                "fail",
                f"cannot read {missing}",
                "put the certificate and key there, or fix tls.cert / tls.key",
            )
        ]
    problem = tls.key_problem(cert_pem.stdout, key_pem.stdout, settings.cert, settings.key)
    if problem:
        return [Check("tls", "fail", problem, "use the key the certificate was issued for")]
    cert = x509.load_pem_x509_certificate(cert_pem.stdout.encode())
    left = cert.not_valid_after_utc - datetime.now(timezone.utc)
    if left < timedelta(0):
        return [
            Check(
                "tls",
                "fail",
                f"the certificate expired on {cert.not_valid_after_utc:%F}",
                "renew it",
            )
        ]
    status: Status = "ok" if left > timedelta(days=CERT_WARN_DAYS) else "warn"
    return [
        Check(
            "tls",
            status,
            f"key matches; valid until {cert.not_valid_after_utc:%F} ({left.days} days)",
            "" if status == "ok" else "renew it soon",
        ),
        _served(ctx, cert_pem.stdout),
    ]


def _served(ctx: Context, on_disk: str) -> Check:
    """Whether the proxy serves the certificate on disk (it reads it when it starts)."""
    served = tls.served_certificate(ctx.host, ctx.plan)
    cert = ctx.settings.tls.cert
    if served is None:
        return Check("tls served", "skip", "the hub or proxy does not run (deploy first)")
    if not tls.same_certificate(served, on_disk):
        return Check(
            "tls served",
            "fail",
            f"the proxy serves {tls.fingerprint(served)}, but {cert} is "
            f"{tls.fingerprint(on_disk)} (renewed after the proxy started)",
            f"invoke tls.reload --env {ctx.plan.environment} (or invoke deploy)",
        )
    return Check("tls served", "ok", f"the proxy serves {cert} ({tls.fingerprint(served)[:23]}...)")


def check_oauth(ctx: Context) -> list[Check]:
    auth = ctx.settings.auth
    if not isinstance(auth, OAUTH_TYPES):
        return [Check("oauth provider", "skip", f"{auth.type} login needs no provider")]
    issuer = getattr(auth, "issuer", None)
    url = (
        (discovery_url(issuer) if issuer else None)
        or getattr(auth, "gitlab_url", None)
        or getattr(auth, "authorize_url", None)
        or getattr(auth, "github_url", "")
    )
    if ctx.probe_image is None:
        return [Check("oauth provider", "skip", "no hub image on the host yet (deploy first)")]
    # as the hub sees it: from its image, trusting auth.ca_bundle when one is set
    script = (
        "import ssl, sys, urllib.request\n"
        "c = ssl.create_default_context(cafile=sys.argv[2] or None)\n"
        "urllib.request.urlopen(sys.argv[1], timeout=10, context=c)"
    )
    mount = []
    if auth.ca_bundle is not None:
        mount = ["--mount", f"type=bind,source={auth.ca_bundle},target={OAUTH_CA_FILE},readonly"]
    result = ctx.host.run(
        quote(
            "docker",
            "run",
            "--rm",
            *mount,
            "--entrypoint",
            "python3",
            ctx.probe_image,
            "-c",
            script,
            str(url),
            OAUTH_CA_FILE if mount else "",
        ),
        check=False,
        timeout=60,
    )
    if result.ok or "HTTP Error" in result.stderr:  # an HTTP answer means it is reachable
        return [Check("oauth provider", "ok", f"{url} answers from the host")]
    return [
        Check(
            "oauth provider",
            "fail",
            f"{url}: {result.stderr.strip()[-200:]}",
            "check DNS, firewall and proxy settings of the hub host",
        )
    ]


def check_clock(ctx: Context) -> list[Check]:
    before = time.time()
    remote = float(ctx.host.run("date +%s.%N").stdout.strip().replace("N", "0"))
    skew = remote - (before + time.time()) / 2
    status: Status = "ok" if abs(skew) <= MAX_SKEW_S else "fail"
    return [
        Check(
            "clock",
            status,
            f"{skew:+.1f}s from this machine",
            ""
            if status == "ok"
            else "run NTP (systemd-timesyncd or chrony) on the host; "
            "OAuth tokens and TLS fail with a wrong clock",
        )
    ]


def _driver_cuda(host: Host) -> str | None:
    match = re.search(r"CUDA Version:\s*([\d.]+)", host.run("nvidia-smi", check=False).stdout)
    return match.group(1) if match else None


def _image_cuda(ctx: Context) -> dict[str, str]:
    out = {}
    for ref in ctx.plan.images:
        found = dockerhost.inspect(ctx.host, "image", ref)
        need = (((found or {}).get("Config") or {}).get("Labels") or {}).get(LABEL_CUDA)
        if need and need != "none":
            out[ref] = str(need)
    return out


def _ver(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:2])


def check_images(ctx: Context) -> list[Check]:
    """Which image each hubops container runs (by digest after a push), against the plan."""
    out = []
    for spec in ctx.plan.containers:
        found = dockerhost.inspect(ctx.host, "container", spec.name)
        if found is None:
            out.append(Check(f"image {spec.role}", "skip", f"{spec.name} is not deployed"))
            continue
        running = str((found.get("Config") or {}).get("Image", ""))
        image_id = str(found.get("Image", ""))[:19]
        if running == spec.image:
            out.append(Check(f"image {spec.role}", "ok", f"{running} ({image_id})"))
        else:
            out.append(
                Check(
                    f"image {spec.role}",
                    "warn",
                    f"{spec.name} runs {running}, this checkout deploys {spec.image}",
                    f"invoke deploy --env {ctx.plan.environment}",
                )
            )
    return out


CHECKS: list[Callable[[Context], list[Check]]] = [
    check_ssh,
    check_docker,
    check_images,
    check_network,
    check_swarm,
    check_isolation,
    check_lock,
    check_disk,
    check_quota,
    check_ports,
    check_gpu,
    check_gpu_containers,
    check_tls,
    check_oauth,
    check_clock,
]
