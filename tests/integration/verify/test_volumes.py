"""Users' files: on the host, owned by the user, kept across server restarts and hub
redeploys, private to each user; the shared data directory is read-only."""

from __future__ import annotations

import pytest

from tests.support.verify import LoggedIn, Target


def user_dir(target: Target, name: str) -> str:
    return f"{target.env.settings.paths.user_data_dir}/jupyterhub-user-{name}"


def put(user: LoggedIn, path: str, text: str) -> None:
    response = user.client.contents(
        user.name, "PUT", path, json={"type": "file", "format": "text", "content": text}
    )
    assert response.status_code in (200, 201), response.text[:300]


def get(user: LoggedIn, path: str) -> str:
    response = user.client.contents(user.name, "GET", path)
    assert response.status_code == 200, f"{path}: {response.status_code}"
    return str(response.json()["content"])


def test_the_users_host_directory_exists_with_the_users_owner(
    target: Target, alice: LoggedIn
) -> None:
    d = target.host.file(user_dir(target, "alice"))
    assert d.is_directory, f"{d.path} is missing"
    assert (d.uid, d.gid) == (1000, 100), f"{d.path} is owned by {d.uid}:{d.gid}"


def test_a_file_written_through_jupyter_is_on_the_host(target: Target, alice: LoggedIn) -> None:
    put(alice, "results.txt", "epoch 1: loss 0.3\n")
    f = target.host.file(f"{user_dir(target, 'alice')}/results.txt")
    assert f.content_string == "epoch 1: loss 0.3\n"
    assert (f.uid, f.gid) == (1000, 100)


def test_the_file_survives_a_server_stop_and_start(target: Target, alice: LoggedIn) -> None:
    put(alice, "keep.txt", "still here")
    alice.client.stop_server("alice")
    alice.client.start_server("alice")
    assert get(alice, "keep.txt") == "still here"


def test_the_file_survives_a_hub_redeploy(target: Target, alice: LoggedIn) -> None:
    put(alice, "redeploy.txt", "before")
    import yaml

    from tests.support.checkout import Checkout

    path = Checkout(target.checkout_root).env_file(target.name)
    data = yaml.safe_load(path.read_text())
    data.setdefault("singleuser", {})["start_timeout"] = 130
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    target.redeploy()
    assert alice.client.lab_status("alice") == 200, "alice keeps her server and session"
    assert get(alice, "redeploy.txt") == "before"


def test_a_user_cannot_see_another_users_files(
    target: Target, alice: LoggedIn, bob: LoggedIn
) -> None:
    put(alice, "private.txt", "alice only")
    listing = target.in_container(bob.container, "ls -A /home/jovyan/work").stdout.split()
    assert "private.txt" not in listing, f"bob sees alice's file: {listing}"
    mounts = target.host.check_output(
        "docker inspect -f '{{range .Mounts}}{{.Source}} {{end}}' %s", bob.container
    ).split()
    assert all("jupyterhub-user-alice" not in m for m in mounts), mounts
    assert bob.client.contents("alice", "GET", "private.txt").status_code in (403, 404, 302), (
        "bob cannot read alice's files through her server"
    )


def test_the_shared_data_directory_is_read_only(target: Target, alice: LoggedIn) -> None:
    s = target.env.settings
    if s.paths.shared_data_dir is None:
        pytest.skip("no paths.shared_data_dir in this environment")
    mount = s.singleuser.shared_data_mount
    listing = target.in_container(alice.container, f"ls {mount}")
    assert listing.rc == 0, listing.stderr
    write = target.in_container(alice.container, f"touch {mount}/new-file")
    assert write.rc != 0, "a user could write to the shared data directory"
    assert "Read-only file system" in write.stderr, write.stderr


def test_per_user_uids_keep_each_users_files_to_themselves(
    target: Target, alice: LoggedIn, bob: LoggedIn
) -> None:
    """singleuser.host_uids: per-user. alice's and bob's existing directories each get a uid
    of their own (0700), their servers run as those uids with HOME in the directory; back to
    shared, the directories are handed back to the shared uid."""
    if not target.simulated:
        pytest.skip("changes the environment's settings: runs on the suites' own deployment")
    start = target.env.settings.singleuser.per_user_uid_start
    for user in (alice, bob):
        user.client.stop_server(user.name)
    target.configure(singleuser__host_uids="per-user")
    try:
        for user in (alice, bob):
            user.client.start_server(user.name)
        owners = {}
        for user in (alice, bob):
            d = target.host.file(user_dir(target, user.name))
            assert d.uid == d.gid, f"{d.path}: {d.uid}:{d.gid}, not a private group"
            assert start <= d.uid < start + 65536, f"{d.path}: uid {d.uid}"
            assert d.mode == 0o700, f"{d.path} has mode {oct(d.mode)}"
            ids = target.in_container(user.container, "id -u; id -g; echo $HOME").stdout.split()
            assert ids == [str(d.uid), str(d.uid), "/home/jovyan/work"], ids
            owners[user.name] = d.uid
        assert owners["alice"] != owners["bob"], owners
        assert get(alice, "results.txt") == "epoch 1: loss 0.3\n", "alice keeps her files"
        f = target.host.file(f"{user_dir(target, 'alice')}/results.txt")
        assert f.uid == owners["alice"], "her files came with her directory"
        put(bob, "thesis.tex", "draft")
        f = target.host.file(f"{user_dir(target, 'bob')}/thesis.tex")
        assert f.uid == owners["bob"]
        home = target.in_container(bob.container, "touch ~/.probe && ls -A ~")
        assert home.rc == 0, f"HOME is writable for bob's uid: {home.stderr}"
    finally:
        for user in (alice, bob):
            user.client.stop_server(user.name)
        target.configure(singleuser__host_uids=None)
        for user in (alice, bob):
            user.client.start_server(user.name)
    for name in ("alice", "bob"):
        d = target.host.file(user_dir(target, name))
        assert (d.uid, d.gid, d.mode) == (1000, 100, 0o750), f"{name}: back to the shared uid"
    assert get(alice, "results.txt") == "epoch 1: loss 0.3\n"
