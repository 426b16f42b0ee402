"""A deleted user's directory: archived by the hub (hubops_hub.userdirs), listed and purged by
the operator (hubops.ops.users, `invoke users.purge`), on this machine's real filesystem."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest
from hubops_hub import userdirs
from hubops_hub.userdirs import USER_DIR_PREFIX, archive_user_dir, archives

from hubops.errors import HubopsError
from hubops.host.local import LocalHost
from hubops.ops.users import purge, user_archives
from tests.support.checkout import Checkout
from tests.support.planned import planned

WHEN = 1_764_000_000.0  # 2025-11-24 16:00:00 UTC


def a_user_dir(root: Path, name: str) -> Path:
    d = root / f"{USER_DIR_PREFIX}{userdirs.escape_username(name)}"
    (d / ".ssh").mkdir(parents=True)
    (d / "thesis.ipynb").write_text("{}")
    (d / ".ssh" / "config").write_text("Host cluster\n")
    os.chmod(d / ".ssh", 0o700)
    return d


def test_the_directory_becomes_a_dated_archive_with_everything_in_it(tmp_path: Path) -> None:
    d = a_user_dir(tmp_path, "a.b")
    path = archive_user_dir(str(tmp_path), USER_DIR_PREFIX, "a.b", WHEN)
    assert path == str(tmp_path / ".deleted" / "jupyterhub-user-a-2eb-20251124T160000Z.tar.gz")
    assert not d.exists(), "the directory goes once it is archived"
    assert os.stat(path).st_mode & 0o777 == 0o600
    with tarfile.open(path) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert set(members) >= {
        "jupyterhub-user-a-2eb/thesis.ipynb",
        "jupyterhub-user-a-2eb/.ssh/config",
    }
    assert members["jupyterhub-user-a-2eb/.ssh"].mode & 0o777 == 0o700, "modes are kept"
    assert archives(str(tmp_path), USER_DIR_PREFIX, "a.b") == [path]
    assert archives(str(tmp_path), USER_DIR_PREFIX, "a") == [], "another user's are not his"


def test_a_user_without_a_directory_has_nothing_to_archive(tmp_path: Path) -> None:
    assert archive_user_dir(str(tmp_path), USER_DIR_PREFIX, "nobody", WHEN) is None
    assert not (tmp_path / ".deleted").exists()


def test_a_failed_archive_leaves_the_directory_and_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = a_user_dir(tmp_path, "bob")

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tarfile.TarFile, "add", full_disk)
    with pytest.raises(OSError, match="No space left"):
        archive_user_dir(str(tmp_path), USER_DIR_PREFIX, "bob", WHEN)
    assert (d / "thesis.ipynb").read_text() == "{}"
    assert os.listdir(tmp_path / ".deleted") == []


def test_purge_deletes_that_users_archives_only_after_confirmation(
    tmp_path: Path, checkout: Checkout
) -> None:
    users = tmp_path / "users"
    users.mkdir()
    checkout.set_setting("local", "paths.user_data_dir", str(users))
    _, settings = planned(checkout, "local")
    for when in (WHEN, WHEN + 86400):
        a_user_dir(users, "bob")
        archive_user_dir(str(users), USER_DIR_PREFIX, "bob", when)
    a_user_dir(users, "bobby")
    kept = archive_user_dir(str(users), USER_DIR_PREFIX, "bobby", WHEN)
    host = LocalHost()
    found = user_archives(host, settings, "bob")
    assert [os.path.basename(p) for p in found] == [
        "jupyterhub-user-bob-20251124T160000Z.tar.gz",
        "jupyterhub-user-bob-20251125T160000Z.tar.gz",
    ]
    assert purge(host, settings, "bob", lambda shown: False) == []
    assert user_archives(host, settings, "bob") == found, "not confirmed: nothing goes"
    shown: list[str] = []
    assert purge(host, settings, "bob", lambda s: bool(shown.extend(s) or True)) == found
    assert shown == found
    assert user_archives(host, settings, "bob") == []
    assert kept is not None
    assert os.path.exists(kept), "bobby's archive stays"
    with pytest.raises(HubopsError, match=r"no archive of bob's directory in .*/\.deleted"):
        purge(host, settings, "bob", lambda s: True)
