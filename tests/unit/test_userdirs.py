"""User names -> host directories: safe, stable, collision-free; made with the right owner."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from dockerspawner import DockerSpawner
from hubops_hub.userdirs import escape_username, make_user_dir


@pytest.mark.parametrize(
    ("name", "escaped"),
    [
        ("alice", "alice"),
        ("a.b", "a-2eb"),
        ("a-b", "a-2db"),
        ("Alice", "-41lice"),
        ("../x", "-2e-2e-2fx"),
        ("/etc", "-2fetc"),
        ("jörg", "j-c3-b6rg"),
    ],
)
def test_escape_is_fixed(name: str, escaped: str) -> None:
    """These values are a contract: changing them would rename users' directories."""
    assert escape_username(name) == escaped


def test_escape_matches_dockerspawners_current_default() -> None:
    """Users of a plain DockerSpawner hub keep their directories when moving to hubops."""
    for name in ("alice", "a.b", "a-b", "Bob_1", "x@example.org"):
        assert escape_username(name) == DockerSpawner._escape(name)


def test_no_two_names_share_a_directory() -> None:
    names = ["a.b", "a-b", "a_b", "a b", "a-2eb", "A.B", "ab", "a/b", "a--b"]
    escaped = [escape_username(n) for n in names]
    assert len(set(escaped)) == len(names), dict(zip(names, escaped, strict=True))


@pytest.mark.parametrize("name", ["..", ".", "../../etc", "/", "a/../../b", "~root"])
def test_no_escape_leaves_the_root(tmp_path: Path, name: str) -> None:
    made = make_user_dir(str(tmp_path), "jupyterhub-user-", name, os.getuid(), os.getgid())
    assert Path(made).parent == tmp_path, f"{name!r} made {made}"
    assert Path(made).name.startswith("jupyterhub-user-")


def test_make_user_dir_sets_owner_and_keeps_an_existing_dir(tmp_path: Path) -> None:
    uid, gid = (1000, 100) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    path = Path(make_user_dir(str(tmp_path), "jupyterhub-user-", "a.b", uid, gid))
    assert path.name == "jupyterhub-user-a-2eb"
    st = path.stat()
    assert (st.st_uid, st.st_gid) == (uid, gid), f"owner {st.st_uid}:{st.st_gid}"
    assert oct(st.st_mode & 0o777) == "0o750"
    (path / "work.ipynb").write_text("{}")
    again = make_user_dir(str(tmp_path), "jupyterhub-user-", "a.b", uid, gid)
    assert Path(again) == path
    assert (path / "work.ipynb").read_text() == "{}", "an existing directory keeps its content"


@pytest.mark.parametrize(
    ("name", "problem"), [("", "empty"), ("a\0b", "control"), ("\x01" + "0", "control")]
)
def test_empty_or_control_names_are_refused(tmp_path: Path, name: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        make_user_dir(str(tmp_path), "p-", name, 0, 0)


@pytest.mark.skipif(os.geteuid() != 0, reason="handing directories to other uids needs root")
def test_per_user_uids_are_handed_out_once_and_kept(tmp_path: Path) -> None:
    from hubops_hub.userdirs import per_user_dir

    root, prefix, start = str(tmp_path), "jupyterhub-user-", 300000
    a, uid_a = per_user_dir(root, prefix, "alice", start)
    b, uid_b = per_user_dir(root, prefix, "bob", start)
    assert (uid_a, uid_b) == (start, start + 1)
    for path, uid in ((a, uid_a), (b, uid_b)):
        st = os.stat(path)
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (uid, uid, 0o700)
    assert per_user_dir(root, prefix, "alice", start) == (a, uid_a), "the owner is the record"
    # a directory from the shared uid is taken over, its content included
    shared = Path(make_user_dir(root, prefix, "carol", 1000, 100))
    (shared / "notes.txt").write_text("mine")
    os.chown(shared / "notes.txt", 1000, 100)
    c, uid_c = per_user_dir(root, prefix, "carol", start)
    assert uid_c == start + 2
    assert os.stat(Path(c) / "notes.txt").st_uid == uid_c
    # and back to the shared uid when the environment goes back
    make_user_dir(root, prefix, "carol", 1000, 100)
    st = os.stat(Path(c) / "notes.txt")
    assert (st.st_uid, st.st_gid) == (1000, 100)
    assert os.stat(c).st_mode & 0o777 == 0o750
