"""A "lab host" on loopback: Debian's sshd with a throwaway key, whose sessions talk to a
second Docker engine of their own (its own data root, socket and bridge), so that a deploy
over SSH really has to bring its images there.

The second engine can play a GPU host (``gpu_hook_dir``): see tests/gpusim/.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import docker

from tests import gpusim
from tests.support.apt import ensure_commands
from tests.support.net import free_port
from tests.support.wait import wait_for

CANDIDATES = [ipaddress.ip_network(f"10.{n}.0.0/16") for n in range(200, 250)]


def used_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network this machine routes or has an address in, and every network of the
    engines here (also the ones the first engine will make: it walks 172.17-31 and
    192.168/16, so a test engine's block comes from 10.x, which neither default uses)."""
    found: list[ipaddress.IPv4Network] = []
    routes = subprocess.run(
        ["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True, check=False
    ).stdout
    addrs = subprocess.run(
        ["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=False
    ).stdout
    for word in (routes + " " + addrs).split():
        try:
            net = ipaddress.ip_network(word, strict=False)
        except ValueError:
            continue
        if isinstance(net, ipaddress.IPv4Network) and net.prefixlen > 0:
            found.append(net)
    try:
        client = docker.from_env()
        for network in client.networks.list():
            for config in (network.attrs.get("IPAM") or {}).get("Config") or []:
                if config.get("Subnet") and ":" not in config["Subnet"]:
                    found.append(ipaddress.ip_network(config["Subnet"]))
        client.close()
    except docker.errors.DockerException:
        pass
    return found


def free_block() -> ipaddress.IPv4Network:
    """A 10.x.0.0/16 that overlaps nothing here: the second engine's networks and bridge."""
    used = used_networks()
    for block in CANDIDATES:
        if not any(block.overlaps(net) for net in used):
            return block
    raise RuntimeError("no free 10.200-249.0.0/16 block for a test engine's networks")


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
    gpusim: Path | None = None  # the SIMULATED GPU host's files (tests/gpusim), if it is one

    def env_yaml(self, user: str | None = None) -> str:
        """The `ssh:` section of an environment that deploys to this host, as the non-root
        deploy user unless ``user`` says otherwise."""
        return (
            "ssh:\n  host: 127.0.0.1\n"
            f"  port: {self.ssh_port}\n  user: {user or self.deploy_user}\n"
            f"  key_file: {self.key_file}\n  known_hosts: {self.known_hosts}\n"
        )


@contextmanager
def second_engine(
    root: Path,
    path_prefix: Path | None = None,
    extra_args: tuple[str, ...] = (),
    own_containerd: bool = False,
) -> Iterator[Engine]:
    """A second dockerd: own data root, exec root, socket and bridge; never docker0.

    ``path_prefix`` goes first on its PATH (e.g. a fake nvidia-container-runtime-hook);
    ``extra_args`` go to dockerd (e.g. --config-file). ``own_containerd``: a containerd of its
    own, outside dockerd, as on a host with the containerd service: then containers outlive a
    dockerd restart with live-restore (dockerd's managed containerd dies with it: it logs to a
    pipe that dockerd holds). Yields the Engine: its DOCKER_HOST, its bridge's address (an
    address of this machine that its containers reach too), restart().
    """
    tag = uuid.uuid4().hex[:6]
    root.mkdir(parents=True, exist_ok=True)
    run = Path(f"/run/hubops-t-{tag}")  # short: unix socket paths are limited to 108 bytes
    bridge = f"hubops-t{tag}"
    block = free_block()
    pool = str(next(block.subnets(new_prefix=17)))  # the engine's networks: 10.x.0-127.0/24
    subnet = ".".join(str(block.network_address).split(".")[:2]) + ".200"  # its bridge
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
        rule = ["-s", pool, "-d", pool, "-j", "ACCEPT"]
        chain = "DOCKER-USER" if has_chain("DOCKER-USER") else "FORWARD"
        subprocess.run(["iptables", "-I", chain, *rule], check=True)
        cleanup.callback(subprocess.run, ["iptables", "-D", chain, *rule], check=False)
        log = cleanup.enter_context((root / "dockerd.log").open("a"))
        if own_containerd:
            sock_c = run / "containerd.sock"
            containerd = subprocess.Popen(
                [
                    "containerd",
                    "--config",
                    "/dev/null",
                    "--address",
                    str(sock_c),
                    "--root",
                    str(root / "containerd"),
                    "--state",
                    str(run / "containerd-state"),
                ],
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
            cleanup.callback(stop_process, containerd)
            wait_for(sock_c.exists, 30, f"containerd at {sock_c}")
            extra_args = (*extra_args, f"--containerd={sock_c}")
        args = [
            "dockerd",
            f"--data-root={root / 'docker'}",
            f"--exec-root={run / 'exec'}",
            f"--pidfile={run / 'dockerd.pid'}",
            f"--host=unix://{sock}",
            f"--bridge={bridge}",
            "--iptables=false",
            "--ip-masq=false",
            "--group=docker",  # the socket's group: the deploy user's way in
            f"--default-address-pool=base={pool},size=24",
            *extra_args,
        ]
        docker_host = f"unix://{sock}"
        engine = Engine(docker_host, f"{subnet}.1", args, env, log, root)
        cleanup.callback(shutil.rmtree, root / "docker", ignore_errors=True)
        # dockerd makes its data root a mount of its own, and leaves it behind when containers
        # outlived it (live-restore): detach it, or the directory cannot be removed
        cleanup.callback(
            subprocess.run, ["umount", "-l", str(root / "docker")], capture_output=True
        )
        cleanup.callback(engine.stop)
        engine.start()
        cleanup.callback(_remove_containers, docker_host)
        yield engine


@dataclass
class Engine:
    """A test dockerd: its socket, its bridge's address, and how to restart it."""

    docker_host: str
    gateway: str  # this machine's address on the engine's bridge: its containers reach it
    args: list[str]
    env: dict[str, str]
    log: IO[str]
    root: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=self.log, env=self.env)
        wait_for(
            lambda: docker.DockerClient(base_url=self.docker_host).ping(),
            60,
            f"the test dockerd (log: {self.root / 'dockerd.log'})",
        )

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def restart(self) -> None:
        """Stop dockerd (SIGTERM, as an upgrade does) and start it again."""
        self.stop()
        self.start()


def load_images(docker_host: str, refs: list[str]) -> None:
    """Give the engine at ``docker_host`` these images from this machine's engine (no
    registry here): docker save | docker load."""
    save = subprocess.Popen(["docker", "save", *refs], stdout=subprocess.PIPE)
    subprocess.run(
        ["docker", "load", "--quiet"],
        stdin=save.stdout,
        env={**os.environ, "DOCKER_HOST": docker_host},
        check=True,
        capture_output=True,
    )
    save.wait()


def has_chain(name: str) -> bool:
    return subprocess.run(["iptables", "-n", "-L", name], capture_output=True).returncode == 0


def stop_process(proc: subprocess.Popen[bytes]) -> None:
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
        # a backup host too: restic's sftp backend (invoke data.backup) asks for the subsystem
        "Subsystem sftp internal-sftp\n" + (f"SetEnv {env_lines}\n" if env_lines else "")
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


def add_user(name: str, groups: tuple[str, ...] = ()) -> None:
    """A system user with no password that may log in over SSH with the lab host's key (not
    locked: sshd with UsePAM no refuses locked accounts)."""
    subprocess.run(
        [
            "useradd",
            "--system",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--password",
            "*",
            "--shell",
            "/bin/bash",
            *(["--groups", ",".join(groups)] if groups else []),
            name,
        ],
        check=True,
    )


@contextmanager
def deploy_user() -> Iterator[str]:
    """A system user in the docker group, not root, that logs in with the lab host's key."""
    name = f"hubops-t{uuid.uuid4().hex[:6]}"
    subprocess.run(["groupadd", "--force", "--system", "docker"], check=True)
    add_user(name, groups=("docker",))
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
        engine = stack.enter_context(second_engine(root, path_prefix))
        docker_host, gateway = engine.docker_host, engine.gateway
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
            gpusim=path_prefix,
        )


SIMULATED_GPUS = gpusim.inventory(4, mig_on=(3,))
