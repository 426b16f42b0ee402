"""Users' data over its life, as an operator meets it: a DB restore to a backup older than a
user's server locks nobody out, and a leftover container with a server's name does not block
that server's spawn. bob is the user who comes and goes here."""

from __future__ import annotations

import re
import uuid

import pytest
from hubops_hub.labels import LABEL_ENV, LABEL_ROLE, LABEL_SERVER, LABEL_USER

from hubops.deploy import backup as backups
from hubops.host.files import file_host
from hubops.host.target import open_host
from hubops.ops.restore import restore_backup
from tests.support.checkout import Checkout
from tests.support.cli import run_invoke
from tests.support.verify import USERS, LoggedIn, Target
from tests.support.wait import wait_for

BOB = next(u for u in USERS if u.username == "bob")


def exists(target: Target, name: str) -> bool:
    return target.host.run(f"docker inspect --format '{{{{.State.Running}}}}' {name}").rc == 0


def leftover(target: Target, name: str, env: str, image: str) -> None:
    """A container that looks like one of ``env``'s user servers, unknown to any hub."""
    labels = {LABEL_ENV: env, LABEL_ROLE: "user", LABEL_USER: "bob", LABEL_SERVER: ""}
    flags = " ".join(f"--label {k}={v}" for k, v in labels.items())
    target.host.check_output(
        f"docker run -d --name {name} {flags} --entrypoint sleep {image} infinity"
    )


def log_in_again(target: Target, bob: LoggedIn) -> None:
    """bob signs in as a browser would (his old hub cookie may name a user the DB lost)."""
    bob.client.session.cookies.clear()
    page = bob.client.oauth_login(BOB.username, BOB.password)
    assert page.status_code == 200, f"bob could not log in: {page.status_code} {page.url}"
    wait_for(lambda: bob.client.server_ready("bob"), 120, "bob's server")
    wait_for(lambda: bob.client.lab_status("bob") == 200, 60, "bob's JupyterLab")


def test_a_db_restore_locks_nobody_out(target: Target, alice: LoggedIn, bob: LoggedIn) -> None:
    """alice is in; `db.backup`; bob logs in and saves a file; `db.restore` to that backup.
    bob's server, unknown to the restored DB, is removed (his file stays), another
    environment's container on the same engine is not, and bob logs in again and works."""
    if not target.simulated:
        pytest.skip("restores the hub's DB: runs on the suites' own deployment")
    image = target.inspect(bob.container)["Config"]["Image"]
    bob.client.stop_server("bob")
    assert alice.client.api("DELETE", "users/bob").status_code == 204, "bob is not in the DB"
    other = f"hubops-other{uuid.uuid4().hex[:6]}-user-bob"
    leftover(target, other, other.removesuffix("-user-bob"), image)
    env = target.env
    hub = next(c for c in target.plan.containers if c.role == "hub")
    try:
        with open_host(target.checkout_root, env) as host:
            files = file_host(host, target.plan)
            stamp = backups.backup(host, env.settings, hub.image, hub.name, files=files)
        log_in_again(target, bob)
        saved = bob.client.contents(
            "bob",
            "PUT",
            "after-backup.txt",
            json={"type": "file", "format": "text", "content": "x"},
        )
        assert saved.status_code in (200, 201), saved.text
        with open_host(target.checkout_root, env) as host:
            restore_backup(host, target.plan, env.settings, stamp, progress=lambda _s, m: print(m))
        wait_for(lambda: not exists(target, bob.container), 90, "the reaper to remove bob's server")
        user_dir = f"{env.settings.paths.user_data_dir}/jupyterhub-user-bob"
        assert target.host.file(f"{user_dir}/after-backup.txt").exists, "bob's file is kept"
        assert exists(target, other), "another environment's container was touched"
        log_in_again(target, bob)
        body = bob.client.contents("bob", "GET", "after-backup.txt").json()
        assert body["content"] == "x", "bob works with his files again"
    finally:
        target.host.run(f"docker rm -f {other}")


def test_a_leftover_with_the_servers_name_does_not_block_its_spawn(
    target: Target, bob: LoggedIn
) -> None:
    """A running container that has the name of bob's server, unknown to the hub: his next
    start removes it and starts (it answered HTTP 500 at every login before)."""
    image = target.inspect(bob.container)["Config"]["Image"]
    bob.client.stop_server("bob")
    leftover(target, bob.container, target.name, image)
    bob.client.start_server("bob")
    wait_for(lambda: bob.client.lab_status("bob") == 200, 60, "bob's JupyterLab")
    command = target.inspect(bob.container)["Config"]["Entrypoint"]
    assert command != ["sleep"], "bob's server is a new container, not the leftover"


def test_a_deleted_user_is_stopped_archived_and_purged_at_the_cli(
    target: Target, alice: LoggedIn, bob: LoggedIn
) -> None:
    """An admin deletes bob while his server runs: the server stops (its GPUs go back), his
    directory becomes a dated archive with his files; `invoke users.purge --user bob --yes`
    deletes it for good; bob can sign up again, with an empty directory."""
    if not target.simulated:
        pytest.skip("deletes a user: runs on the suites' own deployment")
    if not bob.client.server_ready("bob"):
        bob.client.start_server("bob")
    saved = bob.client.contents(
        "bob", "PUT", "keep-me.txt", json={"type": "file", "format": "text", "content": "x"}
    )
    assert saved.status_code in (200, 201), saved.text
    root = target.env.settings.paths.user_data_dir
    assert alice.client.api("DELETE", "users/bob").status_code == 204
    assert not exists(target, bob.container), "bob's server still runs"
    assert not target.host.file(f"{root}/jupyterhub-user-bob").exists, "his directory stays"
    listing = target.host.check_output(f"ls {root}/.deleted")
    archive = max(n for n in listing.split() if n.startswith("jupyterhub-user-bob-"))  # newest
    inside = target.host.check_output(f"tar tzf {root}/.deleted/{archive}")
    assert "jupyterhub-user-bob/keep-me.txt" in inside.split(), inside
    purged = run_invoke(
        Checkout(target.checkout_root),
        "users.purge",
        "--env",
        target.name,
        "--user",
        "bob",
        "--yes",
    )
    assert purged.returncode == 0, purged.stderr
    assert f"deleted {len(re.findall('jupyterhub-user-bob-', listing))} archive(s) of bob" in (
        purged.stdout
    ), purged.stdout
    assert "jupyterhub-user-bob-" not in target.host.check_output(f"ls {root}/.deleted")
    log_in_again(target, bob)
    files = bob.client.contents("bob", "GET", "").json()["content"]
    assert "keep-me.txt" not in {f["name"] for f in files}, "a new user starts empty"
