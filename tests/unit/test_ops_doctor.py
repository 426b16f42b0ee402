"""``invoke doctor`` (hubops.ops.doctor) against a scripted hub host: no Docker, no SSH.

Each test scripts what a real host answers (a healthy host, with one thing wrong) and reads
what the operator sees: a check's status, its detail and its fix hint. Doctor only reads: the
only containers it starts are throwaway ones (``docker run --rm``), and no test's host is sent
a command that changes it.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hubops_hub.labels import LABEL_CUDA

from hubops.config.settings import Environment
from hubops.deploy import firewall
from hubops.ops.doctor import NVML_ERROR, Check, run_checks
from hubops.plan.model import Plan
from tests.support.checkout import Checkout
from tests.support.planned import planned
from tests.support.scripted_host import Answer, ScriptedHost, container
from tests.support.tls import self_signed

# what real hosts print, for the commands doctor sends
ENGINE = "26.1.3 1.45\nrunc true\n"  # docker version (Version, API) && docker info (runtime, LR)
DAEMON_DOWN = (
    "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
    "Is the docker daemon running?\n"
)
SECURITY = '["name=apparmor","name=seccomp,profile=builtin","name=cgroupns"]\n'
ROOTLESS = '["name=seccomp,profile=builtin","name=rootless","name=cgroupns"]\n'
GPU_LIST = (
    "GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-11111111-2222-3333-4444-555555555555)\n"
    "GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-66666666-7777-8888-9999-aaaaaaaaaaaa)\n"
)
SMI = (
    "+-----------------------------------------------------------------------------------------+\n"
    "| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: 12.4     |\n"
    "|-----------------------------------------+------------------------+----------------------+\n"
)
NO_NVIDIA_RUNTIME = (
    'docker: Error response from daemon: could not select device driver "" with capabilities: '
    "[[gpu]].\n"
)
LOCAL_ENVS = {
    "gpu": "gpu:\n  policy: exclusive\n  pool: [0, 1]\n",
    "sw": "cluster: swarm\nnetwork:\n  isolation: false\nswarm:\n  user_data: volume\n",
    "tls": (
        "public_url: https://hub.example.org\n"
        "tls:\n  enabled: true\n"
        "  cert: /etc/jupyterhub/tls/fullchain.pem\n"
        "  key: /etc/jupyterhub/tls/privkey.pem\n"
    ),
    "gl": (
        "public_url: https://hub.example.org\n"
        "auth:\n  type: gitlab\n  gitlab_url: https://gitlab.example.org\n"
        "  client_id: abc123\n  allowed_users: [alice]\n"
    ),
    "remote": "ssh:\n  host: gpu01.example.org\n  user: hubops\n",
}

# a command that changes a host: doctor must never send one
CHANGES = re.compile(
    r"\bdocker\s+(rm|rmi|create|start|stop|kill|restart|pull|push|tag|commit|update|"
    r"network\s+(create|rm|connect|disconnect|prune)|swarm|service\s+(create|rm|update)|"
    r"node\s+(update|rm|promote|demote)|volume\s+(create|rm)|system\s+prune)\b"
    r"|(?<![\w-])(rm|rmdir|mkdir|touch|mv|cp|tee|chmod|chown|usermod|systemctl|modprobe|kill|"
    r"pkill|apt-get|iptables)\b"
    r"|\bsysctl\s+(-q\s+)?-w\b"
    r"|(?<![\d&])>(?!&|/dev/null)"
)


def load(checkout: Checkout, name: str = "local") -> tuple[Environment, Plan]:
    """The settings and the rendered plan of ``name`` (local.yaml with LOCAL_ENVS[name])."""
    text = None if name == "local" else "extends: local.yaml\n" + LOCAL_ENVS[name]
    plan, settings = planned(checkout, name, text)
    return settings, plan


def df_line(available_kb: int) -> str:
    """The last line of ``df -Pk`` for a 960 GB disk with ``available_kb`` free."""
    total = 960_302_804
    used = total - available_kb
    return f"/dev/nvme0n1p2 {total} {used} {available_kb} {used * 100 // total}% /\n"


# mount point -> (device, fstype, options): a healthy host keeps users' files apart
FILESYSTEMS = {
    "/": ("/dev/nvme0n1p2", "ext4", "rw,relatime"),
    "/srv/jupyterhub-users": ("/dev/nvme1n1", "xfs", "rw,relatime,attr2,inode64,prjquota"),
}


def _path_in(command: str) -> str:
    return re.search(r"p='?([^';]+)'?;", command).group(1)  # type: ignore[union-attr]


def _mount_point(path: str, filesystems: dict[str, tuple[str, str, str]]) -> str:
    return max(
        (m for m in filesystems if path == m or path.startswith(m.rstrip("/") + "/")), key=len
    )


def mounts(filesystems: dict[str, tuple[str, str, str]]) -> Answer:
    """``findmnt --json`` for the path the command names, as util-linux writes it."""

    def answer(command: str, _stdin: str | None) -> str:
        target = _mount_point(_path_in(command), filesystems)
        source, fstype, options = filesystems[target]
        found = {"target": target, "source": source, "fstype": fstype, "options": options}
        return json.dumps({"filesystems": [found]})

    return answer


def device_of(filesystems: dict[str, tuple[str, str, str]]) -> Answer:
    """``stat -c %d``: the device number of the filesystem that holds the path."""

    def answer(command: str, _stdin: str | None) -> str:
        return f"{sorted(filesystems).index(_mount_point(_path_in(command), filesystems)) + 2049}\n"

    return answer


def image_digest(ref: str) -> str:
    """The made-up content digest of image ``ref`` on the scripted host."""
    return hashlib.sha256(ref.encode()).hexdigest()


def _inspect(found: dict[str, dict[str, object]], kind: str) -> Answer:
    """``docker <kind> inspect NAME``: the object as a one-item list, or docker's error."""

    def answer(command: str, _stdin: str | None) -> tuple[int, str]:
        name = command.rsplit(" ", 1)[1]
        if name in found:
            return 0, json.dumps([found[name]])
        return 1, f"Error: No such {kind}: {name}\n"

    return answer


def healthy(
    host: ScriptedHost, plan: Plan, *, gpus: bool = False, cuda: str = "12.2"
) -> ScriptedHost:
    """Answer as a healthy host where ``plan`` is deployed and running (after the rules the
    test set first, which win): every image present (the single-user image labelled with the
    CUDA version ``cuda``), the firewall applied, disks roomy, the proxy's ports its own, the
    clock right, and (``gpus``) two A100s that containers see."""
    images: dict[str, dict[str, object]] = {
        ref: {
            "Id": f"sha256:{image_digest(ref)}",
            "RepoTags": [ref],
            "Config": {"Labels": {LABEL_CUDA: cuda} if "singleuser" in ref else {}},
        }
        for ref in plan.images
    }
    containers = {
        spec.name: container(
            spec.name, image=spec.image, Image=f"sha256:{image_digest(spec.image)}"
        )
        for spec in plan.containers
    }
    fw = firewall.name(plan.environment)
    containers[fw] = container(fw, image=plan.containers[0].image)
    proxy = next(c for c in plan.containers if c.role == "proxy")
    published = "".join(
        f"{p.container_port}/tcp -> {p.host_ip}:{p.host_port}\n" for p in proxy.ports
    )

    def listener(command: str, _stdin: str | None) -> str:
        port = re.search(r"sport = :(\d+)", command).group(1)  # type: ignore[union-attr]
        return (
            f"LISTEN 0      4096       127.0.0.1:{port}        0.0.0.0:*    "
            'users:(("docker-proxy",pid=2345,fd=4))\n'
        )

    host.on(r"^id -un; id -u$", "root\n0\n")
    host.on(r"^docker version --format '\{\{\.Server\.Version\}\}", ENGINE)
    host.on(r"^docker image inspect [^-\s]\S*$", answer=_inspect(images, "image"))
    host.on(r"^docker container inspect \S+$", answer=_inspect(containers, "container"))
    host.on(
        r"^docker exec \S+ getent hosts \S+$",
        answer=lambda command, _stdin: f"172.30.0.2      {command.split()[-1]}\n",
    )
    host.on(r"^docker info --format '\{\{json \.SecurityOptions\}\}'$", SECURITY)
    host.on(rf"^cat {re.escape(firewall.BRIDGE_NF)}$", "1\n")
    host.on(r"^docker logs --tail 200 \S+ 2>&1$", f"{firewall.APPLIED} on br-3f2a1c9d8e7b\n")
    host.on(r"/hubops-\S+\.lock/holder", "", 1)  # no lock directory: cat fails, prints nothing
    host.on(r"df -Pk", df_line(400_000_000))
    host.on(r"findmnt --json", answer=mounts(FILESYSTEMS))
    host.on(r'stat -c %d "\$p"', answer=device_of(FILESYSTEMS))
    host.on(r"^ss -Hltnp 'sport = :\d+'", answer=listener)
    host.on(rf"^docker port {re.escape(proxy.name)} 2>/dev/null$", published)
    if gpus:
        host.on(r"^nvidia-smi -L$", GPU_LIST)
        host.on(r"^nvidia-smi --query-gpu=driver_version", "550.54.15\n")
        host.on(r"^nvidia-smi$", SMI)
        host.on(r"^docker run --rm --gpus all ", GPU_LIST)
    else:
        host.on(r"^nvidia-smi -L$", "bash: line 1: nvidia-smi: command not found\n", 127)
        host.on(r"^ls /dev/nvidia0", "", 1)
    host.on(r"^date \+%s\.%N$", answer=lambda _c, _s: f"{time.time():.9f}\n")
    return host


def by_name(checks: list[Check]) -> dict[str, Check]:
    names = [c.name for c in checks]
    assert len(names) == len(set(names)), f"one check per name: {names}"
    return {c.name: c for c in checks}


def assert_read_only(host: ScriptedHost) -> None:
    """Nothing doctor sent changes the host; every container it ran was a throwaway one."""
    changing = [c for c in host.commands if CHANGES.search(c)]
    assert changing == [], changing
    kept = [c for c in host.sent(r"\bdocker run\b") if " --rm " not in c]
    assert kept == [], f"a container that stays: {kept}"


def pem_pair(not_after: datetime) -> tuple[str, str]:
    """A self-signed certificate valid until ``not_after`` and its key, as PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = self_signed(key, "hub.example.org", not_after, None)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


def sha256_colons(pem: str) -> str:
    """The SHA-256 fingerprint of a certificate, as a browser shows it."""
    return x509.load_pem_x509_certificate(pem.encode()).fingerprint(hashes.SHA256()).hex(":")


@pytest.mark.parametrize(
    "command",
    [
        "docker rm -f hubops-local-hub",
        "docker network disconnect hubops-local hubops-local-hub",
        "rm -rf /srv/jupyterhub",
        "sysctl -q -w net.bridge.bridge-nf-call-iptables=1",
        "printf 'x' > /etc/modules-load.d/hubops.conf",
    ],
)
def test_the_read_only_guard_catches_a_command_that_changes_the_host(command: str) -> None:
    """The guard every doctor test ends with is not vacuous: it refuses typical changes."""
    host = ScriptedHost().on(".", "")
    host.run(command)
    with pytest.raises(AssertionError):
        assert_read_only(host)


def test_a_healthy_host_passes_every_check_and_is_not_changed(checkout: Checkout) -> None:
    """On a healthy single-host deploy (local: no SSH, no GPU policy, no TLS, no OAuth) every
    check is ok or says why it does not apply, none has a fix hint, and only reads were sent."""
    settings, plan = load(checkout)
    host = healthy(ScriptedHost(), plan)

    checks = by_name(run_checks(host, settings, plan))

    assert {name: c.status for name, c in checks.items()} == {
        "ssh": "skip",
        "docker": "ok",
        "default runtime": "ok",
        "live restore": "ok",
        "image proxy": "ok",
        "image hub": "ok",
        "network": "ok",
        "swarm": "skip",
        "isolation": "ok",
        "deploy lock": "ok",
        "disk images (/var/lib/docker)": "ok",
        "disk hub data": "ok",
        "disk user data": "ok",
        "disk quota": "ok",
        "port 8000": "ok",
        "nvidia driver": "skip",
        "gpu in containers": "skip",
        "tls": "skip",
        "oauth provider": "skip",
        "clock": "ok",
    }
    assert [c for c in checks.values() if c.fix] == [], "nothing to fix"
    assert checks["docker"].detail == "Docker 26.1.3, API 1.45"
    assert checks["default runtime"].detail == "runc"
    assert (
        checks["image hub"].detail == f"hubops/hub:r1 (sha256:{image_digest('hubops/hub:r1')[:12]})"
    )
    assert checks["isolation"].detail == "hubops-local-firewall keeps the rules (egress: internet)"
    assert checks["deploy lock"].detail == "free"
    assert checks["disk images (/var/lib/docker)"].detail == "400.0 GB free at /var/lib/docker"
    assert checks["disk user data"].detail == "400.0 GB free at /srv/jupyterhub-users"
    assert checks["port 8000"].detail == "127.0.0.1:8000 served by the hub's proxy"
    assert checks["nvidia driver"].detail == "no NVIDIA GPU on this host"
    assert re.fullmatch(r"[+-]0\.0s from this machine", checks["clock"].detail)
    assert host.sent(r"\bdocker run\b") == [], "no GPU: no throwaway container either"
    assert_read_only(host)


def test_a_healthy_gpu_host_sees_its_gpus_in_a_throwaway_container(checkout: Checkout) -> None:
    """With a GPU policy on a host with two GPUs, a driver for CUDA 12.4 and an image that
    needs CUDA 12.2, the driver, CUDA and containers' GPU checks pass; the one container doctor
    runs is removed when it ends (--rm) and runs the hub's image."""
    settings, plan = load(checkout, "gpu")
    host = healthy(ScriptedHost(), plan, gpus=True, cuda="12.2")

    checks = by_name(run_checks(host, settings, plan))

    driver = checks["nvidia driver"]
    assert (driver.status, driver.fix) == ("ok", "")
    assert driver.detail == (
        "driver 550.54.15; 2 GPU(s): " + "; ".join(GPU_LIST.strip().splitlines())
    )
    singleuser = next(ref for ref in plan.images if "singleuser" in ref)
    cuda = checks[f"cuda {singleuser}"]
    assert (cuda.status, cuda.detail) == ("ok", "needs CUDA 12.2, driver has 12.4")
    assert [n for n in checks if n.startswith("cuda ")] == [f"cuda {singleuser}"], (
        "only images that name a CUDA version are checked"
    )
    seen = checks["gpu in containers"]
    assert (seen.status, seen.detail) == ("ok", "a container given all GPUs sees 2")
    (smoke,) = host.sent(r"\bdocker run\b")
    assert "--gpus all" in smoke
    assert "hubops/hub:r1" in smoke, "probes run in the hub's image, already on the host"
    assert_read_only(host)


@pytest.mark.parametrize(
    ("answer", "code", "detail"),
    [
        (DAEMON_DOWN, 1, DAEMON_DOWN.strip()),
        (
            "bash: line 1: docker: command not found\n",
            127,
            "bash: line 1: docker: command not found",
        ),
    ],
    ids=["daemon-stopped", "not-installed"],
)
def test_an_engine_that_does_not_answer_fails_with_its_message_and_the_prepare_hint(
    checkout: Checkout, answer: str, code: int, detail: str
) -> None:
    """A stopped daemon (or no docker at all) fails the docker check with the engine's own
    words and the fix 'invoke host.prepare'; the other checks still run, and those that ask
    the engine about hubops' containers find none."""
    settings, plan = load(checkout)
    host = healthy(ScriptedHost().on(r"^docker ", answer, code), plan)

    checks = by_name(run_checks(host, settings, plan))

    docker = checks["docker"]
    assert docker.status == "fail"
    assert docker.detail == detail
    assert docker.fix == "run invoke host.prepare (installs and starts the engine)"
    assert "default runtime" not in checks
    assert "live restore" not in checks
    assert checks["image hub"].status == "skip"
    assert checks["image hub"].detail == "hubops-local-hub is not deployed"
    assert checks["clock"].status == "ok", "the checks after it still ran"
    assert checks["network"].status == "skip", "a stopped engine is not reported as broken DNS"
    assert checks["network"].detail == "the engine does not answer (see docker)"
    assert_read_only(host)


@pytest.mark.parametrize(
    ("version", "api", "status"),
    [("19.03.15", "1.40", "fail"), ("20.10.0", "1.41", "ok"), ("24.0.7", "1.43", "ok")],
)
def test_an_engine_older_than_api_1_41_fails_with_an_upgrade_hint(
    checkout: Checkout, version: str, api: str, status: str
) -> None:
    """Docker 19.03 (API 1.40) is too old: fail, 'upgrade to Docker 20.10'; 20.10 (API 1.41,
    the minimum) and newer pass. An engine that is too old is not asked for the hub's image."""
    settings, plan = load(checkout)
    host = healthy(ScriptedHost().on(r"^docker version", f"{version} {api}\nrunc true\n"), plan)

    checks = by_name(run_checks(host, settings, plan))

    docker = checks["docker"]
    assert (docker.status, docker.detail) == (status, f"Docker {version}, API {api}")
    if status == "fail":
        assert docker.fix == "upgrade to Docker 20.10 or newer (API 1.41+)"
        assert host.sent(r"^docker image inspect") == []
        assert "live restore" not in checks
    else:
        assert docker.fix == ""
        assert host.sent(r"^docker image inspect hubops/hub:r1$") != []
    assert_read_only(host)


def test_nvidia_as_default_runtime_and_live_restore_off_are_warnings(
    checkout: Checkout,
) -> None:
    """An engine whose default runtime is nvidia, with live-restore off: two warnings, keep
    runc as the default, and host.prepare for this environment sets live-restore."""
    settings, plan = load(checkout)
    host = healthy(ScriptedHost().on(r"^docker version", "24.0.7 1.43\nnvidia false\n"), plan)

    checks = by_name(run_checks(host, settings, plan))

    runtime = checks["default runtime"]
    assert runtime.status == "warn"
    assert runtime.detail.startswith("nvidia: a container from a CUDA image sees every GPU")
    assert runtime.fix.startswith("keep runc as the default runtime")
    restore = checks["live restore"]
    assert restore.status == "warn"
    assert "stops every user server" in restore.detail
    assert restore.fix == "invoke host.prepare --env local (sets live-restore)"
    assert checks["docker"].status == "ok"


def test_a_swarm_manager_with_a_node_down_and_live_restore_on(checkout: Checkout) -> None:
    """cluster swarm on a manager whose engine has live-restore on (dockerd refuses swarm
    mode with it: fail), with one of two nodes down (warn, 'docker node ls'), the ready one
    advertising two GPUs; user servers on an overlay are not isolated (warn)."""
    settings, plan = load(checkout, "sw")
    nodes = [
        {
            "ID": "n1abcdefgh",
            "Description": {
                "Hostname": "gpu01",
                "Resources": {
                    "GenericResources": [
                        {"NamedResourceSpec": {"Kind": "gpu", "Value": "GPU-1111"}},
                        {"NamedResourceSpec": {"Kind": "gpu", "Value": "GPU-2222"}},
                    ]
                },
            },
            "Spec": {"Role": "manager", "Availability": "active"},
            "Status": {"State": "ready", "Addr": "10.0.0.1"},
        },
        {
            "ID": "n2abcdefgh",
            "Description": {"Hostname": "gpu02"},
            "Spec": {"Role": "worker", "Availability": "active"},
            "Status": {"State": "down", "Addr": "10.0.0.2"},
        },
    ]
    host = ScriptedHost()
    host.on(r"^docker version", "24.0.7 1.43\nnvidia true\n")
    host.on(
        r"^docker info --format '\{\{json \.Swarm\}\}'$",
        json.dumps({"NodeID": "n1abcdefgh", "LocalNodeState": "active", "ControlAvailable": True}),
    )
    host.on(r"^docker node ls --quiet$", "n1abcdefgh\nn2abcdefgh\n")
    host.on(r"^docker node inspect n1abcdefgh n2abcdefgh$", json.dumps(nodes))
    healthy(host, plan)

    checks = by_name(run_checks(host, settings, plan))

    restore = checks["live restore"]
    assert (restore.status, restore.detail) == ("fail", "on: dockerd refuses swarm mode with it")
    assert restore.fix == "invoke host.prepare --env sw"
    swarm = checks["swarm"]
    assert swarm.status == "warn"
    assert swarm.detail == "1 of 2 node(s) ready and active; GPUs advertised: gpu x2"
    assert swarm.fix == "docker node ls (on this manager)"
    assert "swarm GPUs" not in checks, "gpu.policy none reserves no kind"
    assert "shared user data" not in checks, "user data on volumes: no path to compare"
    isolation = checks["isolation"]
    assert isolation.status == "warn"
    assert "cluster kubernetes" in isolation.fix
    assert host.sent(firewall.BRIDGE_NF) == [], "no per-host firewall to look at"
    assert_read_only(host)


def test_a_swarm_worker_cannot_hold_the_hub(checkout: Checkout) -> None:
    """cluster swarm on a node that is a worker, not a manager: the swarm check fails and
    points to the README; the nodes are not listed (only a manager may)."""
    settings, plan = load(checkout, "sw")
    host = ScriptedHost()
    host.on(r"^docker version", "24.0.7 1.43\nrunc false\n")
    host.on(
        r"^docker info --format '\{\{json \.Swarm\}\}'$",
        json.dumps({"LocalNodeState": "active", "ControlAvailable": False}),
    )
    healthy(host, plan)

    checks = by_name(run_checks(host, settings, plan))

    swarm = checks["swarm"]
    assert swarm.status == "fail"
    assert "a swarm worker, not a manager" in swarm.detail
    assert swarm.fix == "see the README, 'Scaling out'"
    assert host.sent(r"^docker node ") == []
    assert checks["live restore"].status == "ok", "off, as swarm mode needs"


def test_a_nearly_full_disk_fails_with_the_free_space_it_needs(checkout: Checkout) -> None:
    """5 GB free under /var/lib/docker (images need 20) and 9.5 GB for user data (10
    needed) fail and say how much to free; 1.5 GB for the hub's data (1 needed) passes."""
    settings, plan = load(checkout)
    host = ScriptedHost()
    host.on(r"^p=/var/lib/docker;", df_line(5_000_000))
    host.on(r"^p=/srv/jupyterhub;", df_line(1_500_000))
    host.on(r"^p=/srv/jupyterhub-users;", df_line(9_500_000))
    healthy(host, plan)

    checks = by_name(run_checks(host, settings, plan))

    images = checks["disk images (/var/lib/docker)"]
    assert (images.status, images.detail) == ("fail", "5.0 GB free at /var/lib/docker")
    assert images.fix == "free space: at least 20 GB"
    users = checks["disk user data"]
    assert (users.status, users.detail) == ("fail", "9.5 GB free at /srv/jupyterhub-users")
    assert users.fix == "free space: at least 10 GB"
    hub = checks["disk hub data"]
    assert (hub.status, hub.detail, hub.fix) == ("ok", "1.5 GB free at /srv/jupyterhub", "")
    assert_read_only(host)


def quota_env(checkout: Checkout, mode: str) -> tuple[Environment, Plan]:
    text = f"extends: local.yaml\nsingleuser:\n  disk_quota: 20G\n  disk_quota_mode: {mode}\n"
    plan, settings = planned(checkout, f"quota-{mode}", text)
    return settings, plan


ONE_DISK = {"/": ("/dev/nvme0n1p2", "ext4", "rw,relatime")}


def test_hard_quotas_on_a_filesystem_that_cannot_enforce_them_fail_and_say_what_to_set(
    checkout: Checkout,
) -> None:
    """disk_quota_mode hard with the users' files on ext4 without prjquota: one failed check
    that names the file, the key, the value and the fix; and a warning that one user who
    fills that disk takes the hub's DB with it (data_dir is on it too)."""
    settings, plan = quota_env(checkout, "hard")
    host = ScriptedHost()
    host.on(r"findmnt --json", answer=mounts(ONE_DISK))
    host.on(r'stat -c %d "\$p"', answer=device_of(ONE_DISK))
    healthy(host, plan)

    checks = by_name(run_checks(host, settings, plan))

    quota = checks["disk quota"]
    assert quota.status == "fail"
    assert quota.detail.startswith(
        f"config/environments/{plan.environment}.yaml: singleuser.disk_quota_mode is 'hard', "
        "but /srv/jupyterhub-users cannot enforce quotas: ext4 without prjquota"
    )
    assert "Set singleuser.disk_quota_mode: auto (or soft)" in quota.detail
    shared = checks["disk shared"]
    assert shared.status == "warn"
    assert "paths.data_dir (/srv/jupyterhub) and paths.user_data_dir" in shared.detail
    assert_read_only(host)


@pytest.mark.parametrize(
    ("options", "mode"),
    [("rw,relatime,attr2,inode64,prjquota", "hard"), ("rw,relatime,attr2,inode64", "soft")],
)
def test_auto_quotas_are_hard_on_xfs_with_prjquota_and_soft_without(
    checkout: Checkout, options: str, mode: str
) -> None:
    """auto is what the filesystem can do; on a disk of their own the users' files cannot
    take the hub's DB down, so there is no warning either way."""
    settings, plan = quota_env(checkout, "auto")
    disks = {**FILESYSTEMS, "/srv/jupyterhub-users": ("/dev/nvme1n1", "xfs", options)}
    host = ScriptedHost()
    host.on(r"findmnt --json", answer=mounts(disks))
    healthy(host, plan)

    checks = by_name(run_checks(host, settings, plan))

    quota = checks["disk quota"]
    assert quota.status == "ok"
    assert quota.detail.startswith(f"{mode} (20G per user; /srv/jupyterhub-users is XFS")
    assert "disk shared" not in checks


def test_a_disk_whose_free_space_cannot_be_read_fails(checkout: Checkout) -> None:
    """df on a stale NFS mount of the user data fails: that disk's check fails and says
    which path it could not read; the other disks are still checked."""
    settings, plan = load(checkout)
    host = ScriptedHost()
    host.on(r"^p=/srv/jupyterhub-users;", "df: /srv/jupyterhub-users: Stale file handle\n", 1)
    healthy(host, plan)

    checks = by_name(run_checks(host, settings, plan))

    users = checks["disk user data"]
    assert users.status == "fail"
    assert users.detail == "cannot read free space of /srv/jupyterhub-users"
    assert checks["disk hub data"].status == "ok"


@pytest.mark.parametrize(
    ("rule", "detail", "fix"),
    [
        (
            (rf"^cat {re.escape(firewall.BRIDGE_NF)}$", "0\n", 0),
            f"{firewall.BRIDGE_NF} is 0: traffic between two user servers",
            "invoke host.prepare --env local (loads br_netfilter and sets it, for good)",
        ),
        (  # br_netfilter not loaded: no such file, cat prints nothing on stdout
            (rf"^cat {re.escape(firewall.BRIDGE_NF)}$", "", 1),
            f"{firewall.BRIDGE_NF} is missing: traffic between two user servers",
            "invoke host.prepare --env local (loads br_netfilter and sets it, for good)",
        ),
        (
            (r"^docker info --format '\{\{json \.SecurityOptions\}\}'$", ROOTLESS, 0),
            "the engine is rootless or remaps user namespaces",
            "set network.isolation: false, and keep user servers apart on this host by other means",
        ),
        (
            (
                r"^docker logs --tail 200 hubops-local-firewall",
                "iptables v1.8.9 (nf_tables): Could not fetch rule set generation id: "
                "Permission denied (you must be root)\n",
                0,
            ),
            "hubops-local-firewall does not keep the rules: iptables v1.8.9 (nf_tables)",
            "docker logs hubops-local-firewall; then invoke deploy --env local",
        ),
    ],
    ids=["sysctl-off", "br-netfilter-missing", "rootless", "rules-not-applied"],
)
def test_a_firewall_that_cannot_keep_user_servers_apart_fails(
    checkout: Checkout, rule: tuple[str, str, int], detail: str, fix: str
) -> None:
    """network.isolation on, but bridge-nf-call-iptables off or absent, a rootless engine, or
    a firewall container whose log lacks 'rules applied': the isolation check fails with
    what is wrong and the command that fixes it."""
    settings, plan = load(checkout)
    pattern, stdout, code = rule
    host = healthy(ScriptedHost().on(pattern, stdout, code), plan)

    checks = by_name(run_checks(host, settings, plan))

    isolation = checks["isolation"]
    assert isolation.status == "fail"
    assert isolation.detail.startswith(detail), isolation.detail
    assert isolation.fix == fix
    assert_read_only(host)


def test_a_missing_or_stopped_firewall_container(checkout: Checkout) -> None:
    """No firewall container yet: a warning, deploy makes it. One that exited, though its
    log once said 'rules applied': a failure, the rules are gone with it."""
    settings, plan = load(checkout)
    host = ScriptedHost()
    host.on(r"^docker container inspect hubops-local-firewall$", "Error: No such container\n", 1)
    healthy(host, plan)
    missing = by_name(run_checks(host, settings, plan))["isolation"]
    assert (missing.status, missing.detail) == ("warn", "no hubops-local-firewall yet")
    assert missing.fix == "invoke deploy --env local"

    stopped = container("hubops-local-firewall", running=False)
    host = ScriptedHost()
    host.on(r"^docker container inspect hubops-local-firewall$", json.dumps([stopped]))
    healthy(host, plan)
    exited = by_name(run_checks(host, settings, plan))["isolation"]
    assert exited.status == "fail"
    assert exited.detail == (
        f"hubops-local-firewall does not keep the rules: {firewall.APPLIED} on br-3f2a1c9d8e7b"
    )


def test_isolation_switched_off_is_a_warning_and_nothing_is_asked(checkout: Checkout) -> None:
    """network.isolation: false warns that user servers reach each other, without asking the
    engine or the kernel anything about the firewall."""
    checkout.set_setting("local", "network.isolation", False)
    settings, plan = load(checkout)
    host = healthy(ScriptedHost(), plan)

    isolation = by_name(run_checks(host, settings, plan))["isolation"]

    assert isolation.status == "warn"
    assert isolation.detail.startswith("network.isolation is false")
    assert isolation.fix.startswith("set network.isolation: true")
    assert host.sent(r"SecurityOptions|bridge-nf-call|-firewall") == []


def test_a_held_deploy_lock_is_a_warning_that_names_its_holder(checkout: Checkout) -> None:
    """Another deploy holds the lock: doctor says who and since when, and how to break a lock
    whose deploy died; it reads the lock and never takes it."""
    settings, plan = load(checkout)
    holder = "alice@laptop pid 4242 since 2024-05-01T10:00:00Z"
    host = healthy(ScriptedHost().on(r"/hubops-local\.lock/holder", holder + "\n"), plan)

    lock = by_name(run_checks(host, settings, plan))["deploy lock"]

    assert (lock.status, lock.detail) == ("warn", f"held by {holder}")
    assert lock.fix == ("wait for that deploy; if it died: invoke deploy --env local --break-lock")
    assert_read_only(host)


def test_a_proxy_that_cannot_resolve_the_hub_fails_the_network_check(
    checkout: Checkout,
) -> None:
    """The proxy cannot resolve the hub's name (getent exits 2, as after a swarm init broke
    the embedded DNS): fail, and deploy recreates the network without stopping anything. A
    container that is not running is no resolution problem."""
    settings, plan = load(checkout)
    host = ScriptedHost()
    host.on(r"^docker exec hubops-local-proxy getent hosts hubops-local-hub$", "", 2)
    healthy(host, plan)

    network = by_name(run_checks(host, settings, plan))["network"]

    assert network.status == "fail"
    assert network.detail.startswith("hubops-local-proxy cannot resolve hubops-local-hub on ")
    assert network.fix == (
        "invoke deploy --env local (recreates hubops-local, keeps every container running)"
    )

    stopped = "Error response from daemon: Container 3f2a1c9d8e7b is not running\n"
    host = healthy(ScriptedHost().on(r"^docker exec ", stopped, 1), plan)
    assert by_name(run_checks(host, settings, plan))["network"].status == "ok"


@pytest.mark.parametrize(
    ("rules", "owner"),
    [
        (
            [
                (
                    r"^ss ",
                    "LISTEN 0      511        0.0.0.0:8000      0.0.0.0:*    "
                    'users:(("nginx",pid=812,fd=6),("nginx",pid=811,fd=6))\n',
                    0,
                )
            ],
            "nginx",
        ),
        (  # no ss on the host: python3 tries to bind the port, and cannot
            [
                (r"^ss ", "", 127),
                (r"^python3 -c .*s\.bind\(\('0\.0\.0\.0', 8000\)\)", "OSError: [Errno 98]", 1),
            ],
            "another process",
        ),
    ],
    ids=["ss", "no-ss"],
)
def test_a_port_taken_by_another_program_fails(
    checkout: Checkout, rules: list[tuple[str, str, int]], owner: str
) -> None:
    """The proxy does not publish port 8000 (it does not run) and something else listens
    there: fail, naming the program where ss tells it, with the settings to change."""
    settings, plan = load(checkout)
    host = ScriptedHost().on(r"^docker port ", "Error: No such container\n", 1)
    for pattern, stdout, code in rules:
        host.on(pattern, stdout, code)
    healthy(host, plan)

    port = by_name(run_checks(host, settings, plan))["port 8000"]

    assert port.status == "fail"
    assert port.detail == f"127.0.0.1:8000 is taken: {owner}"
    assert port.fix == "stop what listens there, or change hub.port / hub.http_port"
    assert_read_only(host)


@pytest.mark.parametrize(
    ("stdout", "code", "detail", "fix_part"),
    [
        (NO_NVIDIA_RUNTIME, 125, NO_NVIDIA_RUNTIME.strip(), "NVIDIA Container Toolkit"),
        (NVML_ERROR + "\n", 255, NVML_ERROR, "cgroup"),
    ],
    ids=["no-nvidia-runtime", "nvml-lost"],
)
def test_gpus_that_containers_cannot_use_fail(
    checkout: Checkout, stdout: str, code: int, detail: str, fix_part: str
) -> None:
    """The driver sees the GPUs, but a container given all GPUs cannot: no NVIDIA runtime in
    the engine (host.prepare installs the toolkit), or NVML lost after a daemon reload (the
    cgroup driver issue)."""
    settings, plan = load(checkout, "gpu")
    host = ScriptedHost().on(r"^docker run --rm --gpus all ", stdout, code)
    healthy(host, plan, gpus=True)

    checks = by_name(run_checks(host, settings, plan))

    assert checks["nvidia driver"].status == "ok"
    seen = checks["gpu in containers"]
    assert seen.status == "fail"
    assert detail in seen.detail
    assert fix_part in seen.fix
    assert_read_only(host)


@pytest.mark.parametrize(
    ("hardware", "policy", "status", "detail", "fix"),
    [
        (
            True,
            "exclusive",
            "fail",
            "NVIDIA hardware, but nvidia-smi lists none",
            "install the NVIDIA driver and reboot",
        ),
        (
            False,
            "exclusive",
            "fail",
            "no NVIDIA GPU on this host",
            "gpu.policy needs GPUs: use a GPU host or set gpu.policy: none",
        ),
        (False, "none", "skip", "no NVIDIA GPU on this host", ""),
    ],
    ids=["no-driver", "no-gpu-but-policy", "no-gpu-no-policy"],
)
def test_a_host_without_working_gpus(
    checkout: Checkout, hardware: bool, policy: str, status: str, detail: str, fix: str
) -> None:
    """nvidia-smi lists no GPU: with NVIDIA hardware in the host the driver is missing
    (fail); without, it fails only where gpu.policy wants GPUs. No container is tried."""
    settings, plan = load(checkout, "gpu" if policy != "none" else "local")
    host = ScriptedHost()
    host.on(
        r"^nvidia-smi -L$",
        "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n",
        9,
    )
    host.on(r"^ls /dev/nvidia0", "", 0 if hardware else 1)
    healthy(host, plan)

    checks = by_name(run_checks(host, settings, plan))

    driver = checks["nvidia driver"]
    assert (driver.status, driver.detail, driver.fix) == (status, detail, fix)
    assert checks["gpu in containers"].status == "skip"
    assert host.sent(r"\bdocker run\b") == []


@pytest.mark.parametrize(
    ("need", "status"), [("12.8", "fail"), ("12.4", "ok"), ("11.8", "ok"), ("9.2", "ok")]
)
def test_an_image_that_needs_a_newer_cuda_than_the_driver_fails(
    checkout: Checkout, need: str, status: str
) -> None:
    """The single-user image's CUDA label against the driver's CUDA 12.4, compared as
    numbers (9.2 is older than 12.4): newer fails, asking for a driver upgrade."""
    settings, plan = load(checkout, "gpu")
    host = healthy(ScriptedHost(), plan, gpus=True, cuda=need)

    checks = by_name(run_checks(host, settings, plan))

    singleuser = next(ref for ref in plan.images if "singleuser" in ref)
    cuda = checks[f"cuda {singleuser}"]
    assert cuda.status == status
    if status == "fail":
        assert cuda.detail == f"needs CUDA {need}, the driver supports up to 12.4"
        assert cuda.fix == "upgrade the NVIDIA driver, or use an image for an older CUDA"
    else:
        assert cuda.detail == f"needs CUDA {need}, driver has 12.4"


def test_a_container_that_runs_another_image_than_the_checkout_deploys(
    checkout: Checkout,
) -> None:
    """The hub runs an older image than this checkout's plan: a warning naming both, and
    deploy as the fix; a container that is not there is skipped as not deployed."""
    settings, plan = load(checkout)
    old_hub = container("hubops-local-hub", image="hubops/hub:r0", Image="sha256:" + "e" * 64)
    host = ScriptedHost()
    host.on(r"^docker container inspect hubops-local-hub$", json.dumps([old_hub]))
    host.on(r"^docker container inspect hubops-local-proxy$", "Error: No such container\n", 1)
    healthy(host, plan)

    checks = by_name(run_checks(host, settings, plan))

    hub = checks["image hub"]
    assert hub.status == "warn"
    assert hub.detail == "hubops-local-hub runs hubops/hub:r0, this checkout deploys hubops/hub:r1"
    assert hub.fix == "invoke deploy --env local"
    proxy = checks["image proxy"]
    assert (proxy.status, proxy.detail) == ("skip", "hubops-local-proxy is not deployed")


def _tls_host(plan: Plan, cert: str, key: str, served: str | None) -> ScriptedHost:
    host = ScriptedHost()
    host.on(r"^cat /etc/jupyterhub/tls/fullchain\.pem$", cert)
    host.on(r"^cat /etc/jupyterhub/tls/privkey\.pem$", key)
    host.on(
        r"^docker exec hubops-tls-hub python3 -c ",
        served or "no TLS answer from hubops-tls-proxy:8000: [Errno 111] Connection refused\n",
        0 if served else 1,
    )
    return healthy(host, plan)


def test_a_certificate_that_expires_soon_is_a_warning(checkout: Checkout) -> None:
    """A certificate with 5 days left (under 14) whose key matches: a warning to renew it
    soon; the proxy serves that same certificate."""
    settings, plan = load(checkout, "tls")
    not_after = datetime.now(timezone.utc) + timedelta(days=5, hours=1)
    cert, key = pem_pair(not_after)
    host = _tls_host(plan, cert, key, served=cert)

    checks = by_name(run_checks(host, settings, plan))

    tls = checks["tls"]
    assert tls.status == "warn"
    assert tls.detail == f"key matches; valid until {not_after:%Y-%m-%d} (5 days)"
    assert tls.fix == "renew it soon"
    served = checks["tls served"]
    assert served.status == "ok"
    assert served.detail == (
        f"the proxy serves /etc/jupyterhub/tls/fullchain.pem ({sha256_colons(cert)[:23]}...)"
    )
    assert_read_only(host)


def test_an_expired_certificate_fails_and_the_proxy_is_not_asked(checkout: Checkout) -> None:
    """A certificate that expired two days ago: fail, 'renew it'; whether the proxy serves it
    is beside the point and not asked."""
    settings, plan = load(checkout, "tls")
    not_after = datetime.now(timezone.utc) - timedelta(days=2)
    cert, key = pem_pair(not_after)
    host = _tls_host(plan, cert, key, served=cert)

    checks = by_name(run_checks(host, settings, plan))

    tls = checks["tls"]
    assert (tls.status, tls.fix) == ("fail", "renew it")
    assert tls.detail == f"the certificate expired on {not_after:%Y-%m-%d}"
    assert "tls served" not in checks
    assert host.sent(r"python3 -c") == []


def test_a_renewed_certificate_the_proxy_does_not_serve_yet_fails(checkout: Checkout) -> None:
    """The certificate on disk was renewed after the proxy started, which still serves the
    old one: 'tls served' fails with both fingerprints, and tls.reload is the fix."""
    settings, plan = load(checkout, "tls")
    cert, key = pem_pair(datetime.now(timezone.utc) + timedelta(days=60))
    old, _ = pem_pair(datetime.now(timezone.utc) + timedelta(days=3))
    host = _tls_host(plan, cert, key, served=old)

    checks = by_name(run_checks(host, settings, plan))

    assert (checks["tls"].status, checks["tls"].fix) == ("ok", "")
    served = checks["tls served"]
    assert served.status == "fail"
    assert served.detail == (
        f"the proxy serves {sha256_colons(old)}, but /etc/jupyterhub/tls/fullchain.pem is "
        f"{sha256_colons(cert)} (renewed after the proxy started)"
    )
    assert served.fix == "invoke tls.reload --env tls (or invoke deploy)"


def test_a_key_that_is_not_the_certificate_s_fails(checkout: Checkout) -> None:
    """A key file that belongs to another certificate: fail, with the paths, and the fix is
    the key the certificate was issued for."""
    settings, plan = load(checkout, "tls")
    cert, _ = pem_pair(datetime.now(timezone.utc) + timedelta(days=60))
    _, other_key = pem_pair(datetime.now(timezone.utc) + timedelta(days=60))
    host = _tls_host(plan, cert, other_key, served=cert)

    tls = by_name(run_checks(host, settings, plan))["tls"]

    assert tls.status == "fail"
    assert tls.detail == (
        "/etc/jupyterhub/tls/privkey.pem is not the key of /etc/jupyterhub/tls/fullchain.pem"
    )
    assert tls.fix == "use the key the certificate was issued for"


def test_a_deploy_user_that_is_not_root_reads_tls_files_in_a_throwaway_helper(
    checkout: Checkout,
) -> None:
    """As a deploy user in the docker group (not root), the root-owned TLS files are read in
    a helper container of the hub's image: no network, removed when it ends."""
    settings, plan = load(checkout, "tls")
    cert, key = pem_pair(datetime.now(timezone.utc) + timedelta(days=60))
    host = ScriptedHost()
    host.on(r"^id -un; id -u$", "hubops\n1001\n")
    host.on(r"^docker version --format '\{\{\.Server\.APIVersion\}\}'$", "1.45\n")
    host.on(r"^docker image inspect --format x hubops/hub:r1$", "x\n")
    host.on(r"^docker run --rm --network none .* 'cat /etc/jupyterhub/tls/fullchain\.pem'$", cert)
    host.on(r"^docker run --rm --network none .* 'cat /etc/jupyterhub/tls/privkey\.pem'$", key)
    host.on(r"^docker exec hubops-tls-hub python3 -c ", cert)
    healthy(host, plan)

    checks = by_name(run_checks(host, settings, plan))

    assert checks["tls"].status == "ok"
    assert checks["tls served"].status == "ok"
    assert host.sent(r"^cat /etc/jupyterhub/tls/") == [], "the user cannot read them itself"
    helpers = host.sent(r"^docker run ")
    assert len(helpers) == 5, "the TLS files, and where the users' files are (3 probes)"
    assert all("--user 0:0" in c and "--volume /:/host" in c for c in helpers)
    assert_read_only(host)


@pytest.mark.parametrize(
    ("stdout", "code", "status"),
    [
        ("", 0, "ok"),
        ("urllib.error.HTTPError: HTTP Error 404: Not Found\n", 1, "ok"),
        (
            "urllib.error.URLError: <urlopen error [Errno -2] Name or service not known>\n",
            1,
            "fail",
        ),
    ],
    ids=["answers", "http-error", "no-dns"],
)
def test_the_oauth_provider_is_reached_from_the_hub_s_image(
    checkout: Checkout, stdout: str, code: int, status: str
) -> None:
    """GitLab login: a throwaway container of the hub's image opens the provider's URL. Any
    HTTP answer (even 404) means it is reachable; a name that does not resolve fails, with
    the host's DNS, firewall and proxy as the places to look."""
    settings, plan = load(checkout, "gl")
    host = ScriptedHost()
    host.on(r"^docker run --rm --entrypoint python3 hubops/hub:r1 -c ", stdout, code)
    healthy(host, plan)

    oauth = by_name(run_checks(host, settings, plan))["oauth provider"]

    assert oauth.status == status
    if status == "ok":
        assert oauth.detail == "https://gitlab.example.org answers from the host"
    else:
        assert oauth.detail.startswith("https://gitlab.example.org: urllib.error.URLError")
        assert oauth.fix == "check DNS, firewall and proxy settings of the hub host"
    (probe,) = host.sent(r"^docker run ")
    assert "https://gitlab.example.org" in probe
    assert_read_only(host)


@pytest.mark.parametrize(("skew", "status"), [(120.0, "fail"), (-45.0, "fail"), (12.0, "ok")])
def test_a_host_clock_off_by_more_than_30_s_fails(
    checkout: Checkout, skew: float, status: str
) -> None:
    """The host's clock against this machine's: more than 30 s off fails (OAuth tokens and
    TLS break) and asks for NTP; 12 s is tolerated."""
    settings, plan = load(checkout)
    host = ScriptedHost()
    host.on(r"^date \+%s\.%N$", answer=lambda _c, _s: f"{time.time() + skew:.9f}\n")
    healthy(host, plan)

    clock = by_name(run_checks(host, settings, plan))["clock"]

    assert clock.status == status
    assert clock.detail == f"{skew:+.1f}s from this machine"
    assert ("NTP" in clock.fix) is (status == "fail")


def test_a_check_that_breaks_is_a_failed_check_and_the_rest_still_run(
    checkout: Checkout,
) -> None:
    """The SSH connection drops on the first command (sshd's MaxStartups throttling, say): that
    check fails with the error, instead of ending doctor, and every later check still runs."""
    settings, plan = load(checkout, "remote")
    host = ScriptedHost(name="gpu01.example.org")
    dropped = "kex_exchange_identification: read: Connection reset by peer\n"
    host.on(r"^id -un && uname -r$", dropped, 255)
    healthy(host, plan)

    checks = run_checks(host, settings, plan)

    ssh = checks[0]
    assert (ssh.name, ssh.status) == ("ssh", "fail")
    assert "exit code 255" in ssh.detail
    assert ssh.detail.endswith(dropped.strip())
    named = by_name(checks)
    assert len(named) == 20, "every check of a healthy host is there"
    assert named["clock"].status == "ok"


def test_over_ssh_doctor_names_the_user_and_the_kernel(checkout: Checkout) -> None:
    """An environment reached over SSH: the first check says who doctor is on the host and
    which kernel it runs."""
    settings, plan = load(checkout, "remote")
    host = ScriptedHost(name="gpu01.example.org")
    host.on(r"^id -un && uname -r$", "hubops\n6.1.0-18-amd64\n")
    healthy(host, plan)

    ssh = by_name(run_checks(host, settings, plan))["ssh"]

    assert (ssh.status, ssh.detail) == ("ok", "gpu01.example.org as hubops (kernel 6.1.0-18-amd64)")
