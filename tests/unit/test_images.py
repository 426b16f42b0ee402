"""The image table: what an environment builds, tags, build contexts and revisions."""

from __future__ import annotations

import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from hubops.config import environments
from hubops.images import table as images
from hubops.images.build import BaseInfo, build_args, context_tar, wanted
from hubops.images.table import IMAGES, VERSIONS, spec
from tests.support.checkout import REPO_ROOT, Checkout


def names(env: str) -> list[str]:
    settings = environments.load(REPO_ROOT, env).settings
    return [f"{i.name}:{v.name}" for i, v in wanted(settings)]


def test_lab_builds_both_variants_parents_first() -> None:
    assert names("lab") == ["proxy:default", "hub:default", "singleuser:base", "singleuser:pytorch"]


def test_local_builds_only_what_it_uses() -> None:
    assert names("local") == ["proxy:default", "hub:default", "singleuser:base"]


def test_children_of_base_include_pytorch() -> None:
    assert [v.name for v in spec("singleuser").children("base")] == ["base", "pytorch"]
    assert [v.name for v in spec("singleuser").children("pytorch")] == ["pytorch"]


def test_tags_carry_revision_version_platform_and_moving_tags() -> None:
    su = spec("singleuser")
    base, torch = su.variant("base"), su.variant("pytorch")
    assert images.tags(su, base, "abc123", "ubuntu22.04", "12.4") == [
        "base-abc123",
        "base-0.1.0",
        "base-cuda12.4-ubuntu22.04",
        "base",
        "latest",
    ]
    assert images.tags(su, torch, "abc123", "debian12", "12.4") == [
        "pytorch-abc123",
        "pytorch-0.1.0",
        "pytorch-cuda12.4-debian12",
        "pytorch",
    ]
    hub = spec("hub")
    assert images.tags(hub, hub.default, "abc123-dirty", "debian12", "none") == [
        "abc123-dirty",
        "0.1.0",
        "debian12",
        "latest",
    ]


def test_jupyterhub_is_pinned_once_for_hub_and_singleuser() -> None:
    """The hub and every singleuser image install exactly the version of the table, from the
    build arg, and refuse to build when a requirement moves it; nothing else pins it."""
    assert VERSIONS["JUPYTERHUB_VERSION"].startswith("5."), "hubops pins JupyterHub 5.x"
    for name in ("hub", "singleuser"):
        image = spec(name)
        assert "JUPYTERHUB_VERSION" in image.args, f"{name} does not get the pin"
        context = REPO_ROOT / image.context
        dockerfile = (context / "Dockerfile").read_text()
        assert '"jupyterhub==${JUPYTERHUB_VERSION}"' in dockerfile, f"{name} installs another"
        assert "v == '${JUPYTERHUB_VERSION}'" in dockerfile, f"{name} does not check the result"
        requirements = (context / "requirements.txt").read_text().lower()
        pinned = [line for line in requirements.splitlines() if line.startswith("jupyterhub=")]
        assert pinned == [], f"{name}/requirements.txt pins JupyterHub a second time: {pinned}"


def test_no_version_is_written_in_two_places() -> None:
    """Build arguments' versions live in VERSIONS, Python packages' in the images'
    requirements files: a package is pinned once, and no Dockerfile pins a literal version."""
    from_args = {
        key.removesuffix("_VERSION").lower(): "VERSIONS"
        for key in VERSIONS
        if key.endswith("_VERSION")
    }
    seen: dict[str, str] = dict(from_args)
    for image in IMAGES:
        context = REPO_ROOT / image.context
        dockerfile = (context / "Dockerfile").read_text()
        literal = re.findall(r"[A-Za-z0-9_.-]+==[0-9][^\s\"']*", dockerfile)
        assert literal == [], (
            f"{image.context}/Dockerfile pins {literal}: pin in VERSIONS or requirements"
        )
        for req in sorted(context.glob("requirements*.txt")):
            for line in req.read_text().splitlines():
                name = (
                    re.split(r"[=<>~! \[]", line.strip(), maxsplit=1)[0].lower().replace("_", "-")
                )
                if not name or name.startswith("#") or "==" not in line:
                    continue
                where = f"{image.context}/{req.name}"
                assert name not in seen, f"{name} is pinned in {seen[name]} and in {where}"
                seen[name] = where
    assert {"numpy", "scipy", "pandas", "matplotlib", "scikit-learn", "ipywidgets"} <= set(seen)
    assert {"torch", "torchvision"} <= set(from_args)


def _members(image: str, ca: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=context_tar(REPO_ROOT, spec(image), ca)) as tar:
        return {
            m.name: (tar.extractfile(m).read() if m.isfile() else b"")  # type: ignore[union-attr]
            for m in tar.getmembers()
        }


def test_context_holds_the_image_dir_shared_files_and_ca_only() -> None:
    hub = _members("hub", b"CA PEM")
    assert "Dockerfile" in hub
    assert "install-os-packages.sh" in hub, "shared build files are added"
    assert hub["hubops-ca.crt"] == b"CA PEM"
    assert not any(n.startswith("proxy") for n in hub), "the proxy's context is not the hub's"
    assert not any("jupyterhub_config" in n or n.endswith(".yaml") for n in hub)


def test_context_is_deterministic() -> None:
    first = context_tar(REPO_ROOT, spec("singleuser"), b"").getvalue()
    second = context_tar(REPO_ROOT, spec("singleuser"), b"").getvalue()
    assert first == second, "an unchanged context must be byte-identical (build cache)"


def test_build_args_are_only_those_the_dockerfile_declares() -> None:
    settings = environments.load(REPO_ROOT, "local").settings
    base = BaseInfo(ref="hubops/base:bookworm", os_tag="debian12", cuda="none")
    proxy = spec("proxy")
    args = build_args(REPO_ROOT, settings, proxy, proxy.default, base, "rev1")
    assert args["CHP_VERSION"] == VERSIONS["CHP_VERSION"]
    assert args["BASE_IMAGE"] == "hubops/base:bookworm"
    assert "JUPYTERHUB_VERSION" not in args, "the proxy's Dockerfile does not declare it"
    su = spec("singleuser")
    torch = build_args(REPO_ROOT, settings, su, su.variant("pytorch"), base, "rev1")
    assert torch["TORCH_VERSION"] == VERSIONS["TORCH_VERSION"]
    assert torch["NB_UID"] == "1000"


@pytest.fixture
def git_copy(tmp_path: Path) -> Path:
    """A git repo holding a copy of what the images are made from, plus config."""
    root = tmp_path / "git"
    for part in ("hub", "singleuser", "config", "hubops"):
        shutil.copytree(REPO_ROOT / part, root / part, ignore=shutil.ignore_patterns("__pycache__"))

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)

    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    return root


def test_a_config_change_keeps_every_revision(git_copy: Path) -> None:
    before = images.revisions(git_copy)
    lab = git_copy / "config/environments/lab.yaml"
    lab.write_text(lab.read_text().replace("32G", "64G"))
    assert images.revisions(git_copy) == before, "config is not an input of any image"


def test_an_image_change_marks_only_that_image_dirty(git_copy: Path) -> None:
    before = images.revisions(git_copy)
    (git_copy / "hub/proxy/entrypoint.sh").write_text('#!/bin/sh\nexec "$@"\n')
    after = images.revisions(git_copy)
    assert after["proxy"] == before["proxy"] + "-dirty"
    assert after["hub"] == before["hub"], "hub/proxy/ is not the hub's input"
    assert after["singleuser"] == before["singleuser"]
    assert len(before["hub"]) == 12, f"a 12-character short SHA: {before['hub']}"


def test_every_image_has_a_dockerfile_with_its_targets() -> None:
    for image in IMAGES:
        text = (REPO_ROOT / image.context / "Dockerfile").read_text()
        for v in image.variants:
            assert f" AS {v.target}\n" in text, (
                f"{image.context}/Dockerfile lacks target {v.target}"
            )


def test_a_dirty_build_for_a_registry_is_refused_before_anything_is_built(
    checkout: Checkout, monkeypatch: pytest.MonkeyPatch
) -> None:
    """lab pushes to a registry: a -dirty tag would name different builds there."""
    from hubops.errors import BuildError
    from hubops.images import build as build_module
    from hubops.images.build import build

    revs = {image.name: "0123abcd4567" for image in IMAGES}
    revs["hub"] = "0123abcd4567-dirty"
    monkeypatch.setattr(build_module.images, "revisions", lambda root: revs)
    lab = environments.load(checkout.root, "lab")
    with pytest.raises(BuildError) as info:
        build(None, checkout.root, lab)  # type: ignore[arg-type]  # refused before the engine
    message = str(info.value)
    assert "inputs of hub have uncommitted changes" in message, message
    assert "--allow-dirty" in message
    assert "registry.lab.example.org:5000" in message
