"""A "lab host" on loopback: Debian's sshd with a throwaway key, whose sessions talk to a
second Docker engine of their own (its own data root, socket and bridge), so that a deploy
over SSH really has to bring its images there.

The second engine can play a GPU host (``gpu_hook_dir``): see tests/gpusim/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import docker

from tests.support.apt import ensure_commands
from tests.support.net import free_port
from tests.support.wait import wait_for

POOL = "172.30.0.0/16"  # the second engine's networks


@dataclass(frozen=True)
class LabHost:
    ssh_port: int
    key_file: Path
    known_hosts: Path
    docker_host: str
    gateway_ip: str  # this machine's address on the engine's bridge: its containers reach it
    client: docker.DockerClient
    root: Path
    deploy_user: str  # a user in the docker group, not root (as `hubops` in lab.yaml)

    def env_yaml(self, user: str | None = None) -> str:
        """The `ssh:` section of an environment that deploys to this host, as the non-root
        deploy user unless ``user`` says otherwise."""
        return (
            "ssh:\n  host: 127.0.0.1\n"
            f"  port: {self.ssh_port}\n  user: {user or self.deploy_user}\n"
            f"  key_file: {self.key_file}\n  known_hosts: {self.known_hosts}\n"
        )


@contextmanager
def second_engine(root: Path, path_prefix: Path | None = None) -> Iterator[tuple[str, str]]:
    """A second dockerd: own data root, exec root, socket and bridge; never docker0.

    ``path_prefix`` goes first on its PATH (e.g. a fake nvidia-container-runtime-hook).
    Yields its DOCKER_HOST and its bridge's address (an address of this machine that its
    containers reach too).
    """
    tag = uuid.uuid4().hex[:6]
    root.mkdir(parents=True, exist_ok=True)
    run = Path(f"/run/hubops-t-{tag}")  # short: unix socket paths are limited to 108 bytes
    bridge = f"hubops-t{tag}"
    subnet = f"172.31.{int(tag[:2], 16) % 200 + 20}"
    sock = run / "docker.sock"
    env = {**os.environ}
    if path_prefix is not None:
        env["PATH"] = f"{path_prefix}:{env['PATH']}"
    with ExitStack() as cleanup:
        run.mkdir(parents=True)
        cleanup.callback(shutil.rmtree, run, ignore_errors=True)
        subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
        cleanup.callback(subprocess.run, ["ip", "link", "delete", bridge], check=False)
        subprocess.run(["ip", "addr", "add", f"{subnet}.1/24", "dev", bridge], check=True)
        subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
        # This engine leaves iptables alone (two engines must not both manage it). The first
        # engine's FORWARD policy drops bridged traffic it does not know, so let this engine's
        # containers talk to each other, and to nothing else.
        rule = ["-s", POOL, "-d", POOL, "-j", "ACCEPT"]
        chain = "DOCKER-USER" if _has_chain("DOCKER-USER") else "FORWARD"
        subprocess.run(["iptables", "-I", chain, *rule], check=True)
        cleanup.callback(subprocess.run, ["iptables", "-D", chain, *rule], check=False)
        log = cleanup.enter_context((root / "dockerd.log").open("w"))
        proc = subprocess.Popen(
            [
                "dockerd",
                f"--data-root={root / 'docker'}",
                f"--exec-root={run / 'exec'}",
                f"--pidfile={run / 'dockerd.pid'}",
                f"--host=unix://{sock}",
                f"--bridge={bridge}",
                "--iptables=false",
                "--ip-masq=false",
                "--group=docker",  # the socket's group: the deploy user's way in
                f"--default-address-pool=base={POOL},size=24",
            ],
            stdout=log,
            stderr=log,
            env=env,
        )
        cleanup.callback(shutil.rmtree, root / "docker", ignore_errors=True)
        cleanup.callback(_stop, proc)
        docker_host = f"unix://{sock}"
        cleanup.callback(_remove_containers, docker_host)
        wait_for(
            lambda: docker.DockerClient(base_url=docker_host).ping(),
            60,
            f"the second dockerd (log: {root / 'dockerd.log'})",
        )
        yield docker_host, f"{subnet}.1"


def _has_chain(name: str) -> bool:
    return subprocess.run(["iptables", "-n", "-L", name], capture_output=True).returncode == 0


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _remove_containers(docker_host: str) -> None:
    client = docker.DockerClient(base_url=docker_host)
    try:
        for container in client.containers.list(all=True):
            container.remove(force=True)
    except docker.errors.DockerException:
        pass
    finally:
        client.close()


@contextmanager
def sshd(root: Path, set_env: dict[str, str]) -> Iterator[tuple[int, Path, Path]]:
    """Debian's sshd on 127.0.0.1 with key auth for root; yields (port, key, known_hosts)."""
    ensure_commands({"sshd": "openssh-server", "ssh-keygen": "openssh-client"})
    root.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(exist_ok=True)
    host_key, user_key = root / "host_key", root / "user_key"
    for key in (host_key, user_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    # sshd reads a user's authorized keys as that user: keep them where the deploy user can
    keys = Path(tempfile.mkdtemp(prefix="hubops-sshkeys-"))
    keys.chmod(0o755)
    (keys / "authorized_keys").write_text(Path(f"{user_key}.pub").read_text())
    (keys / "authorized_keys").chmod(0o644)
    port = free_port()
    known_hosts = root / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {Path(f'{host_key}.pub').read_text()}")
    env_lines = " ".join(f"{k}={v}" for k, v in set_env.items())
    (root / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
        f"PidFile {root / 'sshd.pid'}\nAuthorizedKeysFile {keys / 'authorized_keys'}\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        + (f"SetEnv {env_lines}\n" if env_lines else "")
    )
    log = (root / "sshd.log").open("w")
    proc = subprocess.Popen(
        [shutil.which("sshd") or "/usr/sbin/sshd", "-D", "-e", "-f", str(root / "sshd_config")],
        stdout=log,
        stderr=log,
    )
    try:
        wait_for(lambda: _listening(port), 30, f"sshd on port {port}")
        yield port, user_key, known_hosts
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
        shutil.rmtree(keys, ignore_errors=True)


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def deploy_user() -> Iterator[str]:
    """A system user in the docker group, not root, that logs in with the lab host's key."""
    name = f"hubops-t{uuid.uuid4().hex[:6]}"
    subprocess.run(["groupadd", "--force", "--system", "docker"], check=True)
    subprocess.run(
        [
            "useradd",
            "--system",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--password",
            "*",  # no password, but not locked: sshd (UsePAM no) refuses locked accounts
            "--shell",
            "/bin/bash",
            "--groups",
            "docker",
            name,
        ],
        check=True,
    )
    try:
        yield name
    finally:
        remove_user(name)


def remove_user(name: str) -> None:
    """userdel, after the user's last SSH session has gone."""
    subprocess.run(["pkill", "-KILL", "-u", name], check=False)
    wait_for(
        lambda: subprocess.run(["userdel", name], capture_output=True).returncode in (0, 6),
        15,
        f"userdel {name}",
    )


@contextmanager
def lab_host(root: Path, path_prefix: Path | None = None) -> Iterator[LabHost]:
    """sshd + a second engine that its sessions use (DOCKER_HOST), and a deploy user."""
    with ExitStack() as stack:
        user = stack.enter_context(deploy_user())
        docker_host, gateway = stack.enter_context(second_engine(root, path_prefix))
        session_env = {"DOCKER_HOST": docker_host}
        if path_prefix is not None:
            session_env["PATH"] = f"{path_prefix}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"
        port, key, known = stack.enter_context(sshd(root / "ssh", session_env))
        client = docker.DockerClient(base_url=docker_host)
        stack.callback(client.close)
        yield LabHost(
            ssh_port=port,
            key_file=key,
            known_hosts=known,
            docker_host=docker_host,
            gateway_ip=gateway,
            client=client,
            root=root,
            deploy_user=user,
        )
