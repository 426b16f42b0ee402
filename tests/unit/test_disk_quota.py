"""Disk quotas, short of a host: which mode a filesystem can do, the quota commands the hub
sends for hard mode, what host.prepare changes for them, the hub's measurements and what the
operator sees of them. Soft mode runs for real in tests/integration/verify/test_disk.py; hard
mode needs a kernel with project quotas, which these machines do not have."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hubops_hub import diskusage
from hubops_hub.diskusage import (
    Capability,
    capability,
    effective_mode,
    hard_quota_script,
    measure,
    mount_of,
    over_quota_message,
    project_id,
    quota_for,
)

from hubops.config import environments
from hubops.config.settings import Environment
from hubops.errors import ConfigError
from hubops.host.quota import quota_warnings
from hubops.ops.prepare import PrepareReport, _project_quotas, fstab_with_prjquota
from hubops.ops.status import DiskUse, Status, _disk
from tests.support.checkout import Checkout
from tests.support.scripted_host import ScriptedHost

GIB = 2**30


@pytest.mark.parametrize(
    ("fstype", "options", "mode"),
    [
        ("xfs", "rw,relatime,attr2,inode64,logbufs=8,prjquota", "hard"),
        ("xfs", "rw,relatime,pquota", "hard"),
        ("xfs", "rw,relatime,pqnoenforce", "soft"),
        ("xfs", "rw,relatime,attr2,inode64,usrquota", "soft"),
        ("ext4", "rw,relatime,prjquota", "hard"),
        ("ext4", "rw,relatime", "soft"),
        ("tmpfs", "rw,size=65536k", "soft"),
        ("overlay", "rw,lowerdir=/a,upperdir=/b", "soft"),
    ],
)
def test_a_filesystem_can_enforce_quotas_only_with_project_quotas_on(
    fstype: str, options: str, mode: str
) -> None:
    can = capability(fstype, options.split(","))
    assert can.mode == mode
    assert can.fstype == fstype
    if mode == "soft":
        assert "prjquota" in can.reason or "pqnoenforce" in can.reason, "says what would do"


def test_auto_is_hard_only_where_the_filesystem_can() -> None:
    hard, soft = Capability("hard", "xfs", ""), Capability("soft", "ext4", "")
    assert [effective_mode(m, hard) for m in ("auto", "hard", "soft")] == ["hard", "hard", "soft"]
    assert [effective_mode(m, soft) for m in ("auto", "soft")] == ["soft", "soft"]


MOUNTINFO = (
    "22 1 253:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,errors=remount-ro\n"
    "31 22 259:1 / /srv/users rw,relatime shared:2 - xfs /dev/nvme1n1 rw,attr2,prjquota\n"
    "40 22 259:1 /lab /srv/users\\040b rw - xfs /dev/nvme1n1 rw,attr2\n"
)


def test_the_hub_finds_the_mount_that_holds_a_path_and_its_superblock_options() -> None:
    """The longest mount point that holds the path wins; XFS shows prjquota among the
    superblock options (after " - "), which a bind mount into the hub keeps."""
    assert mount_of("/srv/users/jupyterhub-user-alice", MOUNTINFO) == (
        "/srv/users",
        "xfs",
        ["rw", "relatime", "rw", "attr2", "prjquota"],
    )
    assert mount_of("/srv/usersx", MOUNTINFO)[0] == "/"
    assert mount_of("/srv/users b/x", MOUNTINFO)[0] == "/srv/users b"


def test_hard_quota_commands_give_the_directory_a_project_and_a_block_limit() -> None:
    """XFS: xfs_quota's project setup (recursive) and a bhard limit in bytes; ext4: chattr's
    project flag (recursive, inherited by new files) and setquota's limit in 1 KiB blocks.
    Quotes in a path stay inside one shell word."""
    path = "/srv/users/jupyterhub-user-o-27brien"
    assert hard_quota_script("xfs", path, 10001, 20 * GIB) == (
        f"xfs_quota -x -c 'project -s -p '{path}' 10001' '{path}' && "
        f"xfs_quota -x -c 'limit -p bhard={20 * GIB} 10001' '{path}'"
    )
    assert hard_quota_script("ext4", path, 10001, 20 * GIB + 1) == (
        f"chattr -R +P -p 10001 '{path}' && setquota -P 10001 0 {20 * 2**20 + 1} 0 0 '{path}'"
    )
    assert "'\"'\"'" in hard_quota_script("ext4", "/srv/it's", 1, 1024)
    with pytest.raises(ValueError, match="no project quotas on tmpfs"):
        hard_quota_script("tmpfs", path, 1, 1)


def test_each_user_directory_keeps_one_project_id(tmp_path: Path) -> None:
    registry = str(tmp_path / "projects.json")
    a = project_id("jupyterhub-user-alice", registry)
    b = project_id("jupyterhub-user-bob", registry)
    assert (a, b) == (10000, 10001)
    assert project_id("jupyterhub-user-alice", registry) == a, "the same, on every spawn"
    assert json.loads(Path(registry).read_text()) == {
        "jupyterhub-user-alice": 10000,
        "jupyterhub-user-bob": 10001,
    }


def test_a_users_quota_is_their_first_matching_profiles_else_the_default() -> None:
    profiles = [
        {"groups": ["phd"], "disk_quota": 200 * GIB},
        {"groups": ["course"], "disk_quota": None},
        {"groups": [], "disk_quota": 5 * GIB},
    ]
    assert quota_for(["phd", "course"], 50 * GIB, profiles) == 200 * GIB
    assert quota_for(["course"], 50 * GIB, profiles) == 50 * GIB, "no quota of its own"
    assert quota_for([], 50 * GIB, profiles) == 5 * GIB, "the catch-all profile"
    assert quota_for(["x"], None, []) is None


def test_du_measures_blocks_on_disk_not_apparent_sizes(tmp_path: Path) -> None:
    """A 10 MiB sparse file holds no blocks; 1 MiB of data holds 1 MiB. What quotas count."""
    (tmp_path / "sparse").write_bytes(b"")
    os.truncate(tmp_path / "sparse", 10 * 2**20)
    (tmp_path / "data").write_bytes(os.urandom(2**20))
    used = measure(str(tmp_path))
    assert used is not None
    assert 2**20 <= used < 2 * 2**20
    assert measure(str(tmp_path / "missing")) is None


def test_the_over_quota_message_says_how_much_and_what_to_do() -> None:
    text = over_quota_message(12 * GIB, 10 * GIB)
    assert text.startswith("Your files use 12.0 GiB, over your disk quota of 10.0 GiB.")
    assert "delete or move files" in text


def test_a_quota_that_is_not_a_size_is_one_line_naming_file_key_and_value(
    checkout: Checkout,
) -> None:
    checkout.write_env("q", "extends: local.yaml\nsingleuser:\n  disk_quota: 10 gigs\n")
    with pytest.raises(ConfigError) as err:
        environments.load(checkout.root, "q")
    text = str(err.value)
    assert "q.yaml" in text
    assert "singleuser.disk_quota" in text
    assert "10 gigs" in text
    assert "expected a size such as 512M, 8G or 1T" in text
    assert len(text.strip().splitlines()) == 1


def test_disk_quotas_on_a_swarm_are_refused_with_the_reason(checkout: Checkout) -> None:
    checkout.write_env(
        "sq",
        "extends: local.yaml\ncluster: swarm\ngpu:\n  policy: none\nnetwork:\n"
        "  isolation: false\nsingleuser:\n  profiles:\n    - disk_quota: 5G\n",
    )
    with pytest.raises(ConfigError, match=r"singleuser\.profiles\.0\.disk_quota.*cluster swarm"):
        environments.load(checkout.root, "sq")


def test_a_deploy_warns_about_users_above_their_new_quota(checkout: Checkout) -> None:
    """From the hub's last measurement (with each user's groups): alice's group gets 1G and
    she uses 3 GiB; bob is under the default; carol has no quota."""
    checkout.write_env(
        "w",
        "extends: local.yaml\nsingleuser:\n  disk_quota: 10G\n  profiles:\n"
        "    - groups: [course]\n      disk_quota: 1G\n    - groups: [staff]\n"
        "groups:\n  course: [alice]\n  staff: [carol]\n",
    )
    settings = environments.load(checkout.root, "w").settings
    usage = {
        "users": {
            "alice": {"bytes": 3 * GIB, "groups": ["course"]},
            "bob": {"bytes": 2 * GIB, "groups": []},
            "carol": {"bytes": 30 * GIB, "groups": ["staff"]},
        }
    }
    assert quota_warnings(settings, usage) == [
        "alice uses 3.0 GiB, over the new disk quota of 1.0 GiB: they can still start their "
        "server and delete files",
        "carol uses 30.0 GiB, over the new disk quota of 10.0 GiB: they can still start "
        "their server and delete files",
    ]
    assert quota_warnings(settings, None) == []


def test_status_shows_each_users_use_against_their_quota() -> None:
    out = Status("lab", "running", "ok", "5.4.3", 2)
    _disk(
        out,
        {
            "sampled_at": 1700000000,
            "mode": "soft",
            "users": {
                "bob": {"bytes": 100, "quota_bytes": None},
                "alice": {"bytes": 3 * GIB, "quota_bytes": GIB},
            },
        },
    )
    assert out.disk == [DiskUse("alice", 3 * GIB, GIB), DiskUse("bob", 100, None)]
    assert [d.over for d in out.disk] == [True, False]
    assert out.disk_mode == "soft"
    assert out.disk_sampled_at is not None
    assert out.disk_sampled_at.year == 2023


FSTAB = (
    "# /etc/fstab\nUUID=1111 / ext4 errors=remount-ro 0 1\nUUID=2222 /srv/users xfs defaults 0 2\n"
)


def test_fstab_gets_prjquota_on_the_users_filesystem_only() -> None:
    changed = fstab_with_prjquota(FSTAB, "/srv/users")
    assert changed is not None
    assert changed.splitlines()[:2] == FSTAB.splitlines()[:2]
    assert changed.splitlines()[2].split() == [
        "UUID=2222",
        "/srv/users",
        "xfs",
        "prjquota",
        "0",
        "2",
    ]
    assert fstab_with_prjquota(changed, "/srv/users") is None, "once"
    assert fstab_with_prjquota(FSTAB, "/data") is None, "no entry there"


def quota_settings(checkout: Checkout, mode: str = "auto") -> Environment:
    checkout.write_env(
        "pq", f"extends: local.yaml\nsingleuser:\n  disk_quota: 20G\n  disk_quota_mode: {mode}\n"
    )
    return environments.load(checkout.root, "pq").settings


def findmnt(target: str, fstype: str, options: str) -> str:
    found = {"target": target, "source": "/dev/nvme1n1", "fstype": fstype, "options": options}
    return json.dumps({"filesystems": [found]})


def test_prepare_adds_prjquota_to_fstab_for_xfs_and_says_to_remount(checkout: Checkout) -> None:
    """The fstab is backed up, then replaced whole; XFS reads quota options only when it is
    mounted, so the remount is the admin's (it would cut off running servers)."""
    host = ScriptedHost()
    host.on(r"findmnt --json", findmnt("/srv", "xfs", "rw,relatime,attr2,inode64"))
    host.on(r"^command -v xfs_quota$", "/usr/sbin/xfs_quota\n")
    host.on(r"^cat /etc/fstab$", FSTAB.replace("/srv/users", "/srv"))
    host.on(r"^cp -p /etc/fstab /etc/fstab\.hubops-backup$", "")
    host.on(r"^mkdir -p /etc && cat > /etc/fstab\.hubops-tmp && mv -f", "")
    report = PrepareReport("h")
    _project_quotas(host, quota_settings(checkout), report)
    assert report.changed == ["added prjquota to /etc/fstab's entry for /srv"]
    assert "prjquota" in (host.stdins[-1] or "").splitlines()[2]
    assert report.todo == [
        "project quotas on /srv (xfs, /dev/nvme1n1): unmount and mount it again "
        "(umount /srv && mount /srv), or reboot"
    ]


@pytest.mark.parametrize(
    ("target", "fstype", "options", "kept", "todo"),
    [
        ("/srv", "xfs", "rw,prjquota", "project quotas on /srv (xfs, /dev/nvme1n1)", None),
        ("/", "xfs", "rw", None, "rootflags=prjquota"),
        ("/", "ext4", "rw", None, "tune2fs -O project,quota"),
    ],
)
def test_prepare_changes_nothing_where_it_cannot_or_need_not(
    checkout: Checkout, target: str, fstype: str, options: str, kept: str | None, todo: str | None
) -> None:
    host = ScriptedHost()
    host.on(r"findmnt --json", findmnt(target, fstype, options))
    host.on(r"^command -v (xfs_quota|chattr|setquota)$", "/usr/sbin/tool\n")
    report = PrepareReport("h")
    _project_quotas(host, quota_settings(checkout), report)
    assert report.changed == []
    tools = "xfs_quota" if fstype == "xfs" else "chattr, setquota"
    assert report.kept == [f"quota tools installed ({tools})"] + ([kept] if kept else [])
    assert (todo is None) == (report.todo == [])
    if todo:
        assert todo in report.todo[0]
    assert not host.sent(r"apt-get|fstab"), "only reads"


def test_prepare_installs_the_quota_tools_the_hub_runs_on_the_host(checkout: Checkout) -> None:
    """ext4 with prjquota, e2fsprogs there and quota not: quota is installed (the hub runs
    chattr and setquota on the host at each spawn)."""
    host = ScriptedHost()
    host.on(r"findmnt --json", findmnt("/srv", "ext4", "rw,relatime,prjquota"))
    host.on(r"^command -v chattr$", "/usr/bin/chattr\n")
    host.on(r"^command -v setquota$", "", 1)
    host.on(r"apt-get install -y -q --no-install-recommends quota$", "")
    report = PrepareReport("h")
    _project_quotas(host, quota_settings(checkout), report)
    assert report.changed == ["installed quota (the hub sets quotas with them)"]
    assert report.kept == ["project quotas on /srv (ext4, /dev/nvme1n1)"]


def test_prepare_leaves_quotas_alone_in_soft_mode_or_without_a_quota(checkout: Checkout) -> None:
    host = ScriptedHost()
    _project_quotas(host, quota_settings(checkout, "soft"), PrepareReport("h"))
    checkout.write_env("nq", "extends: local.yaml\n")
    _project_quotas(host, environments.load(checkout.root, "nq").settings, PrepareReport("h"))
    assert host.commands == []


def test_the_usage_file_is_replaced_whole(tmp_path: Path) -> None:
    path = str(tmp_path / "usage.json")
    diskusage.write_json(path, {"users": {}})
    diskusage.write_json(path, {"users": {"a": {"bytes": 1}}})
    assert diskusage.read_usage(path) == {"users": {"a": {"bytes": 1}}}
    assert [p.name for p in tmp_path.iterdir()] == ["usage.json"], "no temporary file left"
    assert diskusage.read_usage(str(tmp_path / "none")) is None
