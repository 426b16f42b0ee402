"""A real Docker Swarm of this machine's engines: a manager and a worker, each a dockerd in a
network namespace of its own, joined by a bridge in this machine's namespace.

Swarm is never initialised on an engine that holds other deployments (Docker 20.10 breaks the
name resolution of an engine's existing bridge networks when a swarm is initialised or left
there), so the swarm gets engines of its own. Each runs in its own network namespace with
iptables on: their rules stay in their namespaces and never meet the first engine's.

- this machine: bridge ``hbsw<tag>`` at ``<block>.250.254``; the tests reach the hub at the
  manager's address and the containers reach this machine's listeners (the OAuth provider)
  there;
- manager: ``<block>.250.1``, the node the hub deploys to (its socket is a file: LocalHost's
  docker CLI reaches it with DOCKER_HOST);
- worker: ``<block>.250.2``, a SIMULATED GPU node: it advertises 2 fake GPUs as swarm generic
  resources (``node-generic-resources gpu=<UUID>``) and runs the simulated NVIDIA runtime as
  its default runtime, the way `invoke host.prepare` sets up a real swarm GPU node.

Overlay networks carry VXLAN between the two namespaces; the kernel has no IPVS, so services
use endpoint mode dnsrr.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
from pydantic import SecretStr

from hubops.config import environments
from hubops.deploy.run import DeployResult, deploy
from hubops.host.local import LocalHost
from hubops.host.target import image_fetcher
from hubops.images import table as images
from hubops.plan.model import Plan
from hubops.plan.render import render
from tests import gpusim
from tests.support.checkout import REPO_ROOT, Checkout
from tests.support.hub import HubClient
from tests.support.labhost import free_block, has_chain, load_images, stop_process
from tests.support.net import free_port
from tests.support.verify import CLIENT_SECRET
from tests.support.wait import wait_for

SWARM_GPUS = gpusim.inventory(2)
GPU_KIND = "gpu"


@dataclass(frozen=True)
class Node:
    name: str
    address: str
    docker_host: str
    root: Path


@dataclass(frozen=True)
class TestSwarm:
    __test__ = False  # not a test class (pytest collects Test*)

    manager: Node
    worker: Node
    gateway: str  # this machine's address on the swarm's link: the nodes reach it
    gpus: tuple[str, ...]  # the worker's advertised (SIMULATED) GPU UUIDs

    @property
    def nodes(self) -> tuple[Node, Node]:
        return self.manager, self.worker

    def client(self, node: Node | None = None) -> docker.DockerClient:
        return docker.DockerClient(base_url=(node or self.manager).docker_host, timeout=120)

    def load_images(self, refs: list[str]) -> None:
        """Give every node these images from this machine's engine (no registry here)."""
        for node in self.nodes:
            load_images(node.docker_host, refs)


def _nameservers() -> list[str]:
    found = []
    for line in Path("/etc/resolv.conf").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver" and "." in parts[1]:
            found += [] if parts[1].startswith("127.") else [parts[1]]
    return found


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _in_ns(ns: str, *args: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, *args], check=True, capture_output=True)


@contextmanager
def test_swarm(root: Path, gpusim_dir: Path) -> Iterator[TestSwarm]:
    """The two-node swarm, torn down (swarm left, daemons stopped, namespaces and links
    removed) however the block ends."""
    tag = uuid.uuid4().hex[:6]
    block = free_block()
    prefix = ".".join(str(block.network_address).split(".")[:2])
    link = f"{prefix}.250"
    bridge = f"hbsw{tag}"
    sim = gpusim.install(gpusim_dir, SWARM_GPUS)
    with ExitStack() as stack:
        _ip("link", "add", bridge, "type", "bridge")
        stack.callback(subprocess.run, ["ip", "link", "delete", bridge], check=False)
        _ip("addr", "add", f"{link}.254/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        # bridged frames pass this machine's FORWARD chain (br_netfilter, which hubops'
        # isolation needs), whose policy the first engine sets to DROP: let the nodes talk
        rule = ["-i", bridge, "-o", bridge, "-j", "ACCEPT"]
        chain = "DOCKER-USER" if has_chain("DOCKER-USER") else "FORWARD"
        subprocess.run(["iptables", "-I", chain, *rule], check=True)
        stack.callback(subprocess.run, ["iptables", "-D", chain, *rule], check=False)
        nodes = []
        for n, role in enumerate(("manager", "worker"), start=1):
            ns = f"hbsw{tag}{role[0]}"
            _ip("netns", "add", ns)
            stack.callback(subprocess.run, ["ip", "netns", "delete", ns], check=False)
            outer, inner = f"hbsw{tag}{role[0]}0", f"hbsw{tag}{role[0]}1"
            _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            stack.callback(subprocess.run, ["ip", "link", "delete", outer], check=False)
            _ip("link", "set", outer, "master", bridge, "up")
            _ip("link", "set", inner, "netns", ns)
            _in_ns(ns, "ip", "addr", "add", f"{link}.{n}/24", "dev", inner)
            _in_ns(ns, "ip", "link", "set", inner, "up")
            _in_ns(ns, "ip", "link", "set", "lo", "up")
            _in_ns(ns, "ip", "route", "add", "default", "via", f"{link}.254")
            # No registry is reachable here: a node still tries to pull a task's image by tag
            # before it falls back to its own copy, and the lookup of the registry would time
            # out (20 s per task). Refuse the way to the name servers at once instead.
            for server in _nameservers():
                _in_ns(ns, "ip", "route", "add", "prohibit", f"{server}/32")
            node_root = root / role
            node_root.mkdir(parents=True)
            config: dict[str, object] = {}
            if role == "worker":
                config = {
                    "node-generic-resources": [f"{GPU_KIND}={g.uuid}" for g in SWARM_GPUS],
                    "runtimes": {"nvidia": {"path": str(sim / "nvidia-container-runtime")}},
                    "default-runtime": "nvidia",
                }
            pool = f"{prefix}.{n * 16}.0/20"  # each node's local networks (docker_gwbridge)
            node = stack.enter_context(
                _dockerd(ns, node_root, f"{role[0]}{tag}", config, pool, sim)
            )
            nodes.append(Node(role, f"{link}.{n}", node, node_root))
        manager, worker = nodes
        m = docker.DockerClient(base_url=manager.docker_host, timeout=120)
        stack.callback(m.close)
        m.swarm.init(
            advertise_addr=manager.address,
            listen_addr=f"{manager.address}:2377",
            default_addr_pool=[f"{prefix}.128.0/18"],
            subnet_size=24,
        )
        token = m.swarm.attrs["JoinTokens"]["Worker"]
        w = docker.DockerClient(base_url=worker.docker_host, timeout=120)
        stack.callback(w.close)
        w.swarm.join(
            remote_addrs=[f"{manager.address}:2377"],
            join_token=token,
            advertise_addr=worker.address,
            listen_addr=f"{worker.address}:2377",
        )
        wait_for(
            lambda: len([n for n in m.nodes.list() if n.attrs["Status"]["State"] == "ready"]) == 2,
            60,
            "both swarm nodes ready",
        )
        yield TestSwarm(manager, worker, f"{link}.254", tuple(g.uuid for g in SWARM_GPUS))
        for client in (w, m):
            try:
                for service in client.services.list():
                    service.remove()
            except docker.errors.APIError:
                pass
        for client in (w, m):
            with suppress(docker.errors.APIError):
                client.swarm.leave(force=True)


@contextmanager
def _dockerd(
    ns: str, root: Path, tag: str, config: dict[str, object], pool: str, sim: Path
) -> Iterator[str]:
    run = Path(f"/run/hubops-s{tag}")
    run.mkdir(parents=True)
    sock = run / "docker.sock"
    (root / "daemon.json").write_text(json.dumps(config))
    log = (root / "dockerd.log").open("a")
    # nsenter --net only (not `ip netns exec`, which remounts /sys and hides the cgroups
    # from dockerd); the mount namespace stays this machine's, so host paths are shared.
    proc = subprocess.Popen(
        [
            "nsenter",
            f"--net=/run/netns/{ns}",
            "dockerd",
            f"--config-file={root / 'daemon.json'}",
            f"--data-root={root / 'docker'}",
            f"--exec-root={run / 'exec'}",
            f"--pidfile={run / 'dockerd.pid'}",
            f"--host=unix://{sock}",
            f"--default-address-pool=base={pool},size=24",
        ],
        stdout=log,
        stderr=log,
        env={**os.environ, "PATH": f"{sim}:{os.environ['PATH']}"},
        start_new_session=True,
    )
    docker_host = f"unix://{sock}"
    try:
        wait_for(
            lambda: docker.DockerClient(base_url=docker_host).ping(),
            60,
            f"the swarm test dockerd (log: {root / 'dockerd.log'})",
        )
        yield docker_host
    finally:
        try:
            client = docker.DockerClient(base_url=docker_host)
            for container in client.containers.list(all=True):
                container.remove(force=True)
            client.close()
        except docker.errors.DockerException:
            pass
        stop_process(proc)
        log.close()
        subprocess.run(["umount", "-l", str(root / "docker")], capture_output=True)
        shutil.rmtree(root / "docker", ignore_errors=True)
        shutil.rmtree(run, ignore_errors=True)


def render_plan(env: environments.LoadedEnvironment) -> Plan:
    return render(REPO_ROOT, env, images.revisions(REPO_ROOT)).plan


@dataclass
class SwarmDeployment:
    checkout: Checkout
    name: str
    root: Path
    swarm: TestSwarm
    port: int
    secrets: dict[str, SecretStr]

    @property
    def url(self) -> str:
        return f"http://{self.swarm.manager.address}:{self.port}"

    @property
    def env(self) -> environments.LoadedEnvironment:
        return environments.load(self.checkout.root, self.name)

    def set(self, key: str, value: object) -> None:
        self.checkout.set_setting(self.name, key, value)

    def deploy(self, docker_host: str | None = None) -> DeployResult:
        env = self.env
        out = render(self.checkout.root, env, images.revisions(REPO_ROOT))
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("DOCKER_HOST", docker_host or self.swarm.manager.docker_host)
            return deploy(
                LocalHost(),
                out.plan,
                env.settings,
                (out.directory / "jupyterhub_config.py").read_text(),
                self.secrets,
                image_fetcher(env, self.secrets, False),
                health_timeout=120,
            )

    def tear_down(self) -> None:
        client = self.swarm.client()
        try:
            label = f"org.hubops.environment={self.name}"
            for service in client.services.list(filters={"label": label}):
                service.remove()
            for container in client.containers.list(all=True, filters={"label": label}):
                container.remove(force=True)
            for network in client.networks.list(names=[f"hubops-{self.name}"]):
                if network.name == f"hubops-{self.name}":
                    network.remove()
        finally:
            client.close()
        shutil.rmtree(self.root, ignore_errors=True)


def swarm_env(
    checkout: Checkout,
    root: Path,
    s: TestSwarm,
    extra: str = "",
    cluster: str = "swarm",
    port: int | None = None,
) -> SwarmDeployment:
    name = f"s{uuid.uuid4().hex[:6]}"
    port = port or free_port()
    checkout.write_env(
        name,
        "extends: local.yaml\n"
        f"cluster: {cluster}\n"
        f"public_url: http://{s.manager.address}:{port}\n"
        f"hub:\n  bind_address: 0.0.0.0\n  port: {port}\n"
        f"paths:\n  config_dir: {root}/etc\n  data_dir: {root}/srv\n"
        f"  user_data_dir: {root}/users\n"
        f"  docker_socket: {s.manager.docker_host.removeprefix('unix://')}\n"
        "network:\n  isolation: false\n"
        "culling:\n  enabled: false\n" + extra,
    )
    return SwarmDeployment(
        checkout,
        name,
        root,
        s,
        port,
        {"oauth_client_secret": SecretStr(CLIENT_SECRET)},
    )


def login(d: SwarmDeployment, name: str) -> HubClient:
    """``name`` logged in through the test provider (alice, bob or carol)."""
    client = HubClient(d.url)
    user = {"alice": "alice-pass", "bob": "bob-pass", "carol": "carol-pass"}[name]
    page = client.oauth_login(name, user)
    assert page.status_code == 200, f"{name} could not log in: {page.status_code} {page.url}"
    return client


def carol_with_a_file(d: SwarmDeployment, path: str, content: str) -> HubClient:
    """carol logged in, her server up, her JupyterLab answering, and ``path`` written there."""
    carol = login(d, "carol")
    wait_for(lambda: carol.server_ready("carol"), 120, "carol's server")
    wait_for(lambda: carol.lab_status("carol") == 200, 60, "carol's JupyterLab")
    put = carol.contents(
        "carol", "PUT", path, json={"type": "file", "format": "text", "content": content}
    )
    assert put.status_code in (200, 201), put.text
    return carol
