"""``invoke tls.reload`` and ``invoke db.restore`` (hubops.ops.restore) on a scripted host: the
decisions they take from what the host answers, the one-line errors an operator sees, and
what they leave alone. The swap unit itself is not run here (tests/unit/test_swap.py runs it):
the host answers its start and its status file as a real unit would.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hubops.config.settings import Environment
from hubops.deploy.steps import Step
from hubops.deploy.swap import Swap
from hubops.errors import BackupError, HubopsError, LockError
from hubops.ops.restore import reload_certificate, restore_backup
from hubops.plan.model import Plan
from tests.support.checkout import Checkout
from tests.support.planned import planned
from tests.support.scripted_host import ScriptedHost, container
from tests.support.tls import self_signed

CERT = "/etc/jupyterhub/tls/fullchain.pem"
KEY = "/etc/jupyterhub/tls/privkey.pem"
TLS_ENV = (
    "extends: local.yaml\n"
    "public_url: https://127.0.0.1:8443\n"
    "hub:\n  port: 8443\n"
    f"tls:\n  enabled: true\n  cert: {CERT}\n  key: {KEY}\n"
)

BACKUPS = "20240501T020000.000042Z\n20240502T020000.000118Z\n"
STAMP = "20240501T020000.000042Z"

# commands that would change a hub host in a restore or a reload
CHANGES = (
    r"^install -d ",
    r"\.hubops-tmp",
    r"hubops-swap\.json\.tmp",
    r"setsid ",
    r"^docker (stop|rm|create|restart|rename|start|run|exec hubops-\w+-hub python3 -c "
    r"'import sqlite3)",
    r"^rm -rf /etc/jupyterhub/jupyterhub_config\.py\.previous ",
)


@pytest.fixture
def local(checkout: Checkout) -> tuple[Plan, Environment]:
    return planned(checkout, "local")


@pytest.fixture
def tls_env(checkout: Checkout) -> tuple[Plan, Environment]:
    return planned(checkout, "tlshub", TLS_ENV)


def certificate() -> tuple[str, str, str]:
    """A certificate (PEM), its key (PEM) and its SHA-256 fingerprint as a browser shows it."""
    key = ec.generate_private_key(ec.SECP256R1())
    not_after = datetime.now(timezone.utc) + timedelta(days=60)
    cert = self_signed(key, "jupyter.lab.example.org", not_after, None)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return (
        cert.public_bytes(serialization.Encoding.PEM).decode(),
        key_pem,
        cert.fingerprint(hashes.SHA256()).hex(":"),
    )


def changes(host: ScriptedHost) -> list[str]:
    return [c for c in host.commands if any(re.search(p, c) for p in CHANGES)]


# --- tls.reload ---------------------------------------------------------------------------


def tls_host(cert: str | None, key: str | None) -> ScriptedHost:
    """A root host with ``cert`` and ``key`` on its disk (None: missing)."""
    host = ScriptedHost().on(r"^id -un; id -u$", "root\n0\n")
    host.files = {p: t for p, t in ((CERT, cert), (KEY, key)) if t is not None}
    return host


SERVED = (
    r"(?s)^docker exec hubops-tlshub-hub python3 -c .*get_server_certificate.* "
    r"hubops-tlshub-proxy 8000$"
)


def serves(host: ScriptedHost, *pems: str) -> None:
    """The proxy serves ``pems`` in turn (the last one from then on)."""
    for pem in pems[:-1]:
        host.on(SERVED, pem + "\n", times=1)
    host.on(SERVED, pems[-1] + "\n")


def test_reload_without_tls_is_one_clear_error(local: tuple[Plan, Environment]) -> None:
    """tls.enabled false: nothing to reload, said in one line, and nothing is asked of the
    host."""
    plan, settings = local
    host = ScriptedHost()
    with pytest.raises(HubopsError) as raised:
        reload_certificate(host, plan, settings)
    assert str(raised.value) == "local: tls.enabled is false; there is no certificate"
    assert host.commands == []


def test_reload_without_a_hubops_image_asks_for_a_deploy(tls_env: tuple[Plan, Environment]) -> None:
    """A deploy user that is not root on a host without any hubops image cannot read the
    certificate (root's file): one line says to deploy first, and nothing is restarted."""
    plan, settings = tls_env
    host = ScriptedHost()
    host.on(r"^id -un; id -u$", "hubops\n1001\n")
    host.on(r"^docker version --format ", "1.45\n")
    host.on(r"^docker container inspect hubops-tlshub-hub$", "Error: No such container\n", 1)
    host.on(r"^docker image inspect --format x hubops/(hub|proxy):r1$", "Error: No such image\n", 1)
    with pytest.raises(HubopsError) as raised:
        reload_certificate(host, plan, settings)
    assert str(raised.value) == "scripted: no hubops image on the host; deploy first"
    assert changes(host) == []


def test_reload_with_the_certificate_missing_keeps_the_old_one(
    tls_env: tuple[Plan, Environment],
) -> None:
    """tls.cert is not on the host: the error names the path and the setting, says the old
    certificate is still served, and the proxy is neither asked nor restarted."""
    plan, settings = tls_env
    _cert, key, _ = certificate()
    host = tls_host(None, key)
    with pytest.raises(HubopsError) as raised:
        reload_certificate(host, plan, settings)
    assert str(raised.value) == (
        f"tls.cert: {CERT} is missing or unreadable on scripted; put the certificate chain "
        "there or fix tls.cert; the proxy keeps serving the old certificate"
    )
    assert not host.sent(r"^docker ")


def test_reload_with_a_key_of_another_certificate_keeps_the_old_one(
    tls_env: tuple[Plan, Environment],
) -> None:
    """A renewal that left a new certificate beside the old key (or the other way round): a
    proxy restarted with them could not serve, so it is not restarted."""
    plan, settings = tls_env
    cert, _, _ = certificate()
    _, other_key, _ = certificate()
    host = tls_host(cert, other_key)
    with pytest.raises(HubopsError) as raised:
        reload_certificate(host, plan, settings)
    assert str(raised.value) == (
        f"tls.key: {KEY} is not the key of {CERT}; use the key the certificate was issued "
        "for; the proxy keeps serving the old certificate"
    )
    assert not host.sent(r"^docker ")


def test_reload_when_the_certificate_on_disk_is_served_restarts_nothing(
    tls_env: tuple[Plan, Environment],
) -> None:
    """The proxy already serves the certificate on disk: nothing is restarted, and the answer
    names the file and the start of its fingerprint."""
    plan, settings = tls_env
    cert, key, fingerprint = certificate()
    host = tls_host(cert, key)
    serves(host, cert)
    said = reload_certificate(host, plan, settings)
    assert said == f"the proxy already serves {CERT} ({fingerprint[:23]}...)"
    assert changes(host) == []


def test_reload_of_a_renewed_certificate_restarts_the_proxy_then_the_hub(
    tls_env: tuple[Plan, Environment],
) -> None:
    """certbot renewed the certificate: the proxy is restarted (it copies the certificate when
    it starts), then the hub (it puts the users' routes back); the hub is healthy through the
    proxy over https, and the new certificate is served. User servers are not touched."""
    plan, settings = tls_env
    old, _, _ = certificate()
    new, key, fingerprint = certificate()
    host = tls_host(new, key)
    serves(host, old, new)
    host.on(r"^docker restart --time \d+ hubops-tlshub-(proxy|hub)$", "")
    host.on(
        r"(?s)^docker exec hubops-tlshub-hub python3 -c .* "
        r"https://hubops-tlshub-proxy:8000/hub/health$",
        "",
    )
    said = reload_certificate(host, plan, settings, health_timeout=5)
    assert said == f"the proxy serves {CERT} now ({fingerprint[:23]}...)"
    assert changes(host) == [
        "docker restart --time 10 hubops-tlshub-proxy",
        "docker restart --time 20 hubops-tlshub-hub",
    ]
    health = host.sent(r"/hub/health$")
    assert health, "the hub is asked whether it is healthy"
    assert "http://127.0.0.1:8081/hub/health" in health[0]


def test_reload_says_so_when_the_restarted_proxy_serves_the_old_certificate(
    tls_env: tuple[Plan, Environment],
) -> None:
    """After the restarts the proxy still serves the old certificate: one line says so and
    where to look (the proxy's log)."""
    plan, settings = tls_env
    old, _, _ = certificate()
    new, key, _ = certificate()
    host = tls_host(new, key)
    serves(host, old)
    host.on(r"^docker restart --time \d+ hubops-tlshub-(proxy|hub)$", "")
    host.on(r"(?s)^docker exec hubops-tlshub-hub python3 -c .*/hub/health$", "")
    with pytest.raises(HubopsError) as raised:
        reload_certificate(host, plan, settings, health_timeout=5)
    assert str(raised.value) == (
        f"hubops-tlshub-proxy was restarted but does not serve {CERT}; see docker logs "
        "hubops-tlshub-proxy"
    )


# --- db.restore ---------------------------------------------------------------------------

LOCK = r"if mkdir \$d/hubops-local\.lock 2>/dev/null"
RELEASE = r"then rm -rf \$d/hubops-local\.lock; fi$"
NETWORK = {
    "Name": "hubops-local",
    "Driver": "bridge",
    "IPAM": {
        "Driver": "default",
        "Config": [
            {"Subnet": "172.30.0.0/16", "IPRange": "172.30.128.0/17", "Gateway": "172.30.0.1"}
        ],
    },
    "Labels": {
        "org.hubops.environment": "local",
        "org.hubops.address.proxy": "172.30.0.2",
        "org.hubops.address.hub": "172.30.0.3",
    },
}


def hub_container() -> dict[str, object]:
    """The running hub, made by an earlier deploy from image r0."""
    return container(
        "hubops-local-hub",
        image="hubops/hub:r0",
        labels={
            "org.hubops.environment": "local",
            "org.hubops.role": "hub",
            "org.hubops.spec-hash": "0f3c9a7d12e4b5a6c7d8e9f0",
        },
        Image="sha256:" + "b" * 64,
    )


def restore_host(*, hub: bool = True, lock_answer: str = "TAKEN\n") -> ScriptedHost:
    """A root host with a deployed environment ``local``, nothing cut off, and two backups."""
    host = ScriptedHost()
    host.on(LOCK, lock_answer)
    host.on(RELEASE, "")
    host.on(r"^id -un; id -u$", "root\n0\n")
    # recover(): no swap record, no -previous container: only the (no-op) put-back of files
    host.on(r"^cat /srv/jupyterhub/hubops-swap\.json$", "cat: No such file or directory\n", 1)
    host.on(r"^if \[ -e /etc/jupyterhub/jupyterhub_config\.py\.previous \]; then mv -f ", "")
    host.on(r"^rm -f /srv/jupyterhub/hubops-swap\.json /srv/jupyterhub/hubops-swap\.json\.p", "")
    host.on(r"^ls -1 /srv/jupyterhub/backups 2>/dev/null$", BACKUPS)
    host.on(r"^docker network inspect hubops-local$", json.dumps([NETWORK]))
    if hub:
        host.containers = [hub_container(), container("hubops-local-proxy", image="proxy")]
        host.on(r"^docker container inspect hubops-local-hub$", json.dumps([hub_container()]))
    else:
        host.on(r"^docker container inspect hubops-local-hub$", "Error: No such container\n", 1)
    return host


def unit_ends(host: ScriptedHost, status: str, log: str = "") -> None:
    """Script the backup of the current state, and a swap unit that ends with ``status``."""
    host.on(r"^install -d -m 700 /srv/jupyterhub/backups /srv/jupyterhub/backups/\S+$", "")
    host.on(r"^test -s /srv/jupyterhub/(jupyterhub|hubops-gpu-usage)\.sqlite$", "")
    host.on(r"^docker inspect -f '\{\{\.State\.Running\}\}' hubops-local-hub$", "true\n")
    host.on(r"^docker exec hubops-local-hub python3 -c 'import sqlite3", "")
    host.on(r"^if \[ -e /srv/jupyterhub/jupyterhub_cookie_secret \]; then cp -p ", "")
    host.on(r"^rm -rf /etc/jupyterhub/jupyterhub_config\.py\.previous ", "")
    host.on(r"^umask 077; cat > /srv/jupyterhub/hubops-swap\.json\.tmp && mv -f ", "")
    host.on(r"setsid -f sh \$d/hubops-local\.swap\.sh ", "/run/lock\n")
    host.on(
        r"^cat /run/lock/hubops-local\.swap\.log 2>/dev/null; echo '=== status'; "
        r"cat /run/lock/hubops-local\.swap\.status",
        f"{log}=== status\n{status}\n",
    )
    host.on(r"^docker rm -f hubops-local-hub-failed$", "")


def holder_taken(host: ScriptedHost) -> str:
    [take] = host.sent(LOCK)
    found = re.search(r"printf '%s\\n' '([^']+)' > ", take)
    assert found, take
    return found.group(1)


def test_restore_while_another_deploy_holds_the_lock_changes_nothing(
    local: tuple[Plan, Environment],
) -> None:
    """Another operator's deploy holds the lock: one line says who and since when, and how to
    wait or break it; nothing else is sent to the host."""
    plan, settings = local
    holder = "alice@lab-laptop pid 4242 since 2024-05-02T09:00:00Z"
    host = restore_host(lock_answer=holder + "\n")
    with pytest.raises(LockError) as raised:
        restore_backup(host, plan, settings, STAMP)
    assert str(raised.value) == (
        f"scripted: another deploy of local holds the lock: {holder}; wait for it "
        "(--wait SECONDS), or if it died, break the lock: invoke deploy --env local "
        "--break-lock (on the host: rm -r /run/lock/hubops-local.lock)"
    )
    assert len(host.commands) == 1, host.commands
    assert not host.sent(RELEASE), "a lock that is not ours is not given back"


def test_restore_without_a_hubops_image_asks_for_a_deploy(local: tuple[Plan, Environment]) -> None:
    """A deploy user that is not root, and no hubops image to do root's file work with: one
    line says to deploy first, and the lock is given back."""
    plan, settings = local
    host = ScriptedHost()
    host.on(LOCK, "TAKEN\n")
    host.on(RELEASE, "")
    host.on(r"^id -un; id -u$", "hubops\n1001\n")
    host.on(r"^docker version --format ", "1.45\n")
    host.on(r"^docker container inspect hubops-local-hub$", "Error: No such container\n", 1)
    host.on(r"^docker image inspect --format x hubops/(hub|proxy):r1$", "Error: No such image\n", 1)
    with pytest.raises(HubopsError) as raised:
        restore_backup(host, plan, settings, STAMP)
    assert str(raised.value) == "scripted: no hubops image on the host yet; deploy first"
    assert len(host.sent(RELEASE)) == 1
    assert changes(host) == []


def test_restore_of_an_unknown_backup_lists_the_backups(local: tuple[Plan, Environment]) -> None:
    """A stamp that is not a backup on the host: the error lists the backups there, nothing is
    backed up, stopped or copied, and the lock is given back."""
    plan, settings = local
    host = restore_host()
    with pytest.raises(BackupError) as raised:
        restore_backup(host, plan, settings, "20240503T020000Z")
    assert str(raised.value) == (
        "scripted: no backup '20240503T020000Z' in /srv/jupyterhub/backups; backups: "
        "20240501T020000.000042Z, 20240502T020000.000118Z"
    )
    assert changes(host) == []
    assert len(host.sent(RELEASE)) == 1


def test_restore_without_a_hub_container_asks_for_a_deploy(local: tuple[Plan, Environment]) -> None:
    """The backup exists but the hub container does not: there is nothing to recreate from,
    so one line says to deploy first; nothing is backed up, and the lock is given back."""
    plan, settings = local
    host = restore_host(hub=False)
    with pytest.raises(HubopsError) as raised:
        restore_backup(host, plan, settings, STAMP)
    assert str(raised.value) == "scripted: hubops-local-hub does not exist; deploy first"
    assert changes(host) == []
    assert len(host.sent(RELEASE)) == 1


def test_a_restore_backs_up_first_and_hands_a_swap_to_the_host(
    local: tuple[Plan, Environment],
) -> None:
    """A restore backs up the current state first (its ID is returned: the restore can be
    undone), keeps the config and secrets aside, then hands the unit a swap that copies the
    backup's files in, recreates the hub from the image it runs now at its fixed address, and
    on a rollback puts the state from before back. The unit gives the lock back, not us."""
    plan, settings = local
    host = restore_host()
    unit_ends(
        host,
        "done",
        log=(
            f"{Step.PREPARE.value} restoring backup {STAMP}\n{Step.HEALTHY.value} new hub healthy\n"
        ),
    )
    seen: list[tuple[Step, str]] = []
    safety = restore_backup(
        host, plan, settings, STAMP, progress=lambda step, line: seen.append((step, line))
    )

    [made] = host.sent(r"^install -d -m 700 /srv/jupyterhub/backups ")
    assert made.endswith(f" /srv/jupyterhub/backups/{safety}")
    assert re.fullmatch(r"\d{8}T\d{6}\.\d{6}Z", safety), safety
    order = [
        host.commands.index(host.sent(p)[0])
        for p in (
            r"^install -d ",
            r"^rm -rf /etc/jupyterhub/\S+\.previous ",
            r"hubops-swap\.json\.tmp",
            r"setsid ",
        )
    ]
    assert order == sorted(order), "backup, keep the files aside, write the record, start the unit"

    [record] = [host.stdins[host.commands.index(c)] for c in host.sent(r"hubops-swap\.json\.tmp")]
    assert record is not None
    swap = Swap.from_json(record)
    assert swap.prepare is not None
    assert swap.undo_prepare is not None
    assert swap.prepare[0] == f"restoring backup {STAMP}"
    assert (
        f"cp -p /srv/jupyterhub/backups/{STAMP}/jupyterhub.sqlite "
        "/srv/jupyterhub/jupyterhub.sqlite.hubops-tmp" in swap.prepare[1]
    )
    assert (
        f"cp -p /srv/jupyterhub/backups/{STAMP}/hubops-gpu-usage.sqlite "
        "/srv/jupyterhub/hubops-gpu-usage.sqlite.hubops-tmp" in swap.prepare[1]
    ), "the GPU-hours are restored with the DB"
    online = host.sent(r"^docker exec hubops-local-hub python3 -c 'import sqlite3")
    assert [c.split()[-1].rsplit("/", 1)[-1] for c in online] == [
        "jupyterhub.sqlite",
        "hubops-gpu-usage.sqlite",
    ], "both DBs are copied with SQLite's online backup"
    assert swap.undo_prepare[0] == f"the state before (backup {safety})"
    assert f"/srv/jupyterhub/backups/{safety}/jupyterhub.sqlite " in swap.undo_prepare[1]
    assert swap.create_hub is not None
    assert swap.create_hub.startswith("docker create --name hubops-local-hub ")
    assert " hubops/hub:r0 " in swap.create_hub, "the hub it runs now, not the plan's image"
    assert "--ip 172.30.0.3" in swap.create_hub, "the hub keeps its fixed address"
    assert "--label org.hubops.spec-hash=0f3c9a7d12e4b5a6c7d8e9f0" in swap.create_hub
    assert swap.create_proxy is None, "the proxy keeps running"
    assert swap.lock is not None
    assert swap.lock.holder == holder_taken(host), "the unit holds the lock we took"

    assert not host.sent(RELEASE), "the lock went to the unit, which gives it back"
    assert (Step.PREPARE, f"restoring backup {STAMP}") in seen
    assert seen[-1] == (Step.HEALTHY, "new hub healthy")
    assert any(step is Step.BACKUP for step, _ in seen)


def test_a_restore_the_unit_rolled_back_is_an_error(local: tuple[Plan, Environment]) -> None:
    """The unit rolled the restore back: the error says which backup failed and the unit's
    words, and the failed hub it kept for its log is removed."""
    plan, settings = local
    host = restore_host()
    detail = (
        "the new hub did not become healthy (timed out); put back: hub, the state before, "
        "config and secret files; the previous hub serves again"
    )
    unit_ends(host, f"rolled-back {detail}")
    with pytest.raises(BackupError) as raised:
        restore_backup(host, plan, settings, STAMP)
    assert str(raised.value) == f"restoring backup {STAMP} failed: {detail}"
    assert host.sent(r"^docker rm -f hubops-local-hub-failed$")
    assert not host.sent(RELEASE), "the lock went to the unit, which gives it back"
