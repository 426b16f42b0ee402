"""The fault suite: a deploy killed at every step boundary, on a config change and on an image
change, and a deploy to a full disk. After each kill:

- the hub answers, at once or after one more deploy (which recovers first);
- the running user server was never restarted;
- the DB has the same users and the same API token works;
- the cookie secret is unchanged, so the user is still logged in;
- the backups are kept.

The deploy runs as its own process (tests/support/deploy_driver.py), killed with SIGKILL when
it announces the step (SIGINT, Ctrl-C, at one of them). The table of what happened is printed
in the test summary ("faults").
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker
import pytest
import requests

from hubops.deploy import backup as backups
from hubops.deploy.steps import Step
from hubops.errors import DeployError
from hubops.host.local import LocalHost
from tests.support.checkout import REPO_ROOT, Checkout
from tests.support.deployment import (
    ADMIN_PASSWORD,
    SHARED_PASSWORD,
    Deployment,
    FaultRow,
    make_deployment,
    tear_down,
)
from tests.support.hub import HubClient

BOUNDARIES = [
    Step.LOCK,
    Step.BACKUP,
    Step.KEEP_FILES,
    Step.HAND_OVER,
    Step.STOP_HUB,
    Step.START_HUB,
    Step.WAIT_HEALTHY,
    Step.HEALTHY,
]
CASES = [(change, k) for change in ("config", "image") for k in range(len(BOUNDARIES))]


@dataclass
class World:
    """The deployment under fault, and what must survive every fault."""

    d: Deployment
    alice: HubClient
    admin: HubClient
    token: str
    server: tuple[str, str]  # alice's container ID and start time
    cookie: str
    users: list[str]
    hub_images: list[str] = field(default_factory=list)
    round: int = 0


def driver(d: Deployment, hub_image: str | None = None) -> list[str]:
    args = [
        sys.executable,
        "-m",
        "tests.support.deploy_driver",
        str(d.checkout.root),
        d.name,
        json.dumps({k: v.get_secret_value() for k, v in d.secrets.items()}),
    ]
    return [*args, *(["--hub-image", hub_image] if hub_image else [])]


def run_until(d: Deployment, step: Step | None, sig: int, hub_image: str | None) -> list[str]:
    """Run a deploy; kill it with ``sig`` when it announces ``step`` (None: let it finish)."""
    proc = subprocess.Popen(
        driver(d, hub_image),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    seen: list[str] = []
    for line in proc.stdout:
        seen.append(line.rstrip("\n"))
        if step is not None and line.startswith(f"STEP {step.value} "):
            proc.send_signal(sig)
            break
    proc.wait(timeout=300)
    if step is None:
        err = proc.stderr.read()[-2000:] if proc.stderr else ""
        assert seen, f"the deploy printed nothing: {err}"
        assert seen[-1] == "DEPLOYED", f"the deploy failed: {err}"
    return seen


def health(d: Deployment) -> int:
    try:
        return requests.get(f"{d.url}/hub/health", timeout=3).status_code
    except requests.RequestException:
        return 0


def state(d: Deployment, container: str) -> tuple[str, str]:
    c = d.client.containers.get(container)
    return c.id, c.attrs["State"]["StartedAt"]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def world(
    module_checkout: Checkout,
    tmp_path_factory: pytest.TempPathFactory,
    docker_client: docker.DockerClient,
    built: dict[str, object],
) -> Iterator[World]:
    d = make_deployment(module_checkout, tmp_path_factory.mktemp("faults"), docker_client)
    d.deploy()
    alice = d.hub()
    assert alice.login("alice", SHARED_PASSWORD, next_url="/hub/home").status_code == 200
    alice.start_server("alice")
    admin = d.hub()
    assert admin.login("admin", ADMIN_PASSWORD).status_code == 200
    token = admin.api("POST", "users/alice/tokens", json={"note": "faults"}).json()["token"]
    plan, _ = d.rendered()
    hub_image = next(c.image for c in plan.containers if c.role == "hub")
    backups.backup(LocalHost(), d.env.settings, hub_image, f"hubops-{d.name}-hub")
    images = []
    for n in range(2):  # two hub images that differ from the deployed one: image changes
        tag = f"hubops/hub:fault-{d.name}-{n}"
        docker_client.images.build(
            fileobj=__import__("io").BytesIO(
                f"FROM {hub_image}\nLABEL org.hubops.test.fault={n}\n".encode()
            ),
            tag=tag,
            rm=True,
        )
        images.append(tag)
    w = World(
        d=d,
        alice=alice,
        admin=admin,
        token=token,
        server=state(d, f"hubops-{d.name}-user-alice"),
        cookie=digest(d.root / "srv" / "jupyterhub_cookie_secret"),
        users=sorted(u["name"] for u in admin.api("GET", "users").json()),
        hub_images=images,
    )
    yield w
    tear_down(d)
    for tag in images:
        docker_client.images.remove(tag, force=True)


@pytest.mark.parametrize(
    ("change", "k"), CASES, ids=[f"{c}-{BOUNDARIES[k].value}" for c, k in CASES]
)
def test_a_deploy_killed_at_a_step_boundary_loses_nothing(
    world: World,
    change: str,
    k: int,
    fault_table: list[FaultRow],
) -> None:
    w, d = world, world.d
    w.round += 1
    newest = max(p.name for p in (d.root / "srv" / "backups").iterdir())
    hub_image = None
    if change == "config":
        d.set("singleuser.start_timeout", 100 + w.round)
    else:
        hub_image = w.hub_images[w.round % 2]
    sig = signal.SIGINT if (change, k) == ("config", 2) else signal.SIGKILL
    seen = run_until(d, BOUNDARIES[k], sig, hub_image)
    assert any(line.startswith(f"STEP {BOUNDARIES[k].value} ") for line in seen), (
        f"the deploy never reached {BOUNDARIES[k]}: {seen}"
    )
    start_down = None
    deadline = time.monotonic() + 45  # the swap unit finishes or rolls back on its own
    while time.monotonic() < deadline:
        if health(d) == 200:
            break
        start_down = start_down or time.monotonic()
        time.sleep(0.2)
    answers_alone = health(d) == 200
    down = (time.monotonic() - start_down) if start_down else 0.0
    acted = "no"
    if not answers_alone:
        run_until(d, None, signal.SIGKILL, hub_image)
        acted = "one more deploy"
    run_until(d, None, signal.SIGKILL, hub_image)  # and the deploy that was cut off, done
    assert health(d) == 200, "the hub answers"
    assert state(d, f"hubops-{d.name}-user-alice") == w.server, "alice's server never restarted"
    assert digest(d.root / "srv" / "jupyterhub_cookie_secret") == w.cookie, "cookie secret kept"
    users = sorted(u["name"] for u in w.admin.api("GET", "users").json())
    lost = len(set(w.users) - set(users))
    assert lost == 0, f"users lost: {set(w.users) - set(users)}"
    me = requests.get(
        f"{d.url}/hub/api/user", headers={"Authorization": f"token {w.token}"}, timeout=10
    )
    assert me.status_code == 200, "alice's API token still works"
    assert w.alice.lab_status("alice") == 200, "alice is still logged in and reaches her server"
    kept = {p.name for p in (d.root / "srv" / "backups").iterdir()}
    assert newest in kept, "the newest backup from before the fault is kept (10 are kept)"
    assert not [c for c in d.containers() if c.endswith(("-previous", "-failed"))]
    fault_table.append(
        (change, BOUNDARIES[k].value, signal.Signals(sig).name, down, 0, lost, acted)
    )


def test_a_full_data_disk_fails_before_anything_changes(
    module_checkout: Checkout,
    tmp_path: Path,
    docker_client: docker.DockerClient,
    built: dict[str, object],
) -> None:
    d = make_deployment(module_checkout, tmp_path / "full", docker_client)
    small = tmp_path / "full" / "srv"
    small.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(small)], check=True)
    try:
        with pytest.raises(DeployError) as info:
            d.deploy()
        message = str(info.value)
        assert f"the disk of {small}" in message, message
        assert "KiB free" in message
        assert "Nothing was changed" in message
        assert d.containers() == {}, "no container was made"
    finally:
        subprocess.run(["umount", str(small)], check=False)
        tear_down(d)
