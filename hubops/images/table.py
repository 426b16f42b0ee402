"""The images hubops builds, as data.

Build order, tags, labels and test selection come from :data:`IMAGES`; no code branches on an
image's name. A singleuser *variant* is one tag family of the ``singleuser`` image, built from
its own Dockerfile target. The versions pinned here are the only place they are pinned.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hubops import __version__

NAMESPACE = "hubops"

# Pinned once, passed to every Dockerfile that needs them as build args.
VERSIONS: Mapping[str, str] = {
    "JUPYTERHUB_VERSION": "5.5.4",  # hub and singleuser alike: a mismatch fails the build
    "CHP_VERSION": "4.6.3",  # configurable-http-proxy 4.x runs on Debian 12's Node 18
    # PyPI's Linux wheel of torch 2.15.0 brings CUDA 13.2 (cuda-toolkit 13.2.2, cuDNN 9.26):
    # the driver must support CUDA 13 (580 or newer); doctor compares it with this label
    "TORCH_VERSION": "2.15.0",
    "TORCH_CUDA": "13.2",
    # the torchvision release built against TORCH_VERSION (its wheel requires torch==2.15.0;
    # a mismatch fails the build: torchvision's operators do not load)
    "TORCHVISION_VERSION": "0.29.2",
}

# Files every build context gets besides its own directory (shared build scripts).
BUILD_FILES = Path("hubops") / "buildfiles"
CA_FILE = "hubops-ca.crt"


@dataclass(frozen=True)
class Variant:
    """One build of an image: a Dockerfile target, and the variant it builds on."""

    name: str
    target: str
    parent: str | None = None
    cuda: str | None = None  # CUDA version the variant's own user-space needs (label)
    args: tuple[str, ...] = ()  # keys of VERSIONS this target needs besides the image's
    description: str = ""


@dataclass(frozen=True)
class ImageSpec:
    """An image: its build context, which base it starts from, and its variants."""

    name: str
    context: str
    base: str  # the key of the environment's `build` section that names its FROM image
    variants: tuple[Variant, ...]
    args: tuple[str, ...] = ()  # keys of VERSIONS every variant needs
    excludes: tuple[str, ...] = field(default=())  # sub-directories that are other contexts

    @property
    def default(self) -> Variant:
        return self.variants[0]

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)

    def with_parents(self, names: Iterable[str]) -> list[Variant]:
        """The named variants and the variants they build on, parents first."""
        wanted: set[str] = set()
        for name in names:
            v: Variant | None = self.variant(name)
            while v is not None:
                wanted.add(v.name)
                v = self.variant(v.parent) if v.parent else None
        return [v for v in self.variants if v.name in wanted]

    def children(self, name: str) -> list[Variant]:
        """The variant itself and every variant built on it (a parent's tests run on these)."""
        out = [self.variant(name)]
        for v in self.variants:
            if v.parent and v.parent in {o.name for o in out} and v not in out:
                out.append(v)
        return out


IMAGES: tuple[ImageSpec, ...] = (
    ImageSpec(
        name="proxy",
        context="hub/proxy",
        base="base_image",
        args=("CHP_VERSION",),
        variants=(Variant("default", target="proxy", description="configurable-http-proxy"),),
    ),
    ImageSpec(
        name="hub",
        context="hub",
        base="base_image",
        args=("JUPYTERHUB_VERSION",),
        excludes=("proxy",),
        variants=(Variant("default", target="hub", description="JupyterHub + DockerSpawner"),),
    ),
    ImageSpec(
        name="singleuser",
        context="singleuser",
        base="singleuser_base_image",
        args=("JUPYTERHUB_VERSION",),
        variants=(
            Variant("base", target="base", description="JupyterLab, GPU-ready"),
            Variant(
                "pytorch",
                target="pytorch",
                parent="base",
                cuda=VERSIONS["TORCH_CUDA"],
                args=("TORCH_VERSION", "TORCHVISION_VERSION", "TORCH_CUDA"),
                description="base + PyTorch and torchvision with their wheels' CUDA user-space",
            ),
        ),
    ),
)

SINGLEUSER = "singleuser"


def spec(name: str) -> ImageSpec:
    for image in IMAGES:
        if image.name == name:
            return image
    raise KeyError(name)


def build_args(image: ImageSpec, variant: Variant) -> dict[str, str]:
    return {key: VERSIONS[key] for key in (*image.args, *variant.args)}


# --- revisions and tags ---------------------------------------------------------------------


def inputs(image: ImageSpec) -> list[str]:
    """Repo paths whose content makes the image: a change anywhere else rebuilds nothing."""
    excluded = [f":(exclude){image.context}/{sub}" for sub in image.excludes]
    return [image.context, *excluded, "hubops/images/table.py", str(BUILD_FILES)]


def revision(repo_root: Path, image: ImageSpec) -> str:
    """Short SHA of the last commit that changed the image's inputs, ``-dirty`` if they changed
    since; the hubops version outside a git checkout.

    Changing an environment file never changes this, so it never rebuilds or re-tags an image.
    """
    paths = inputs(image)
    try:
        sha = _git(repo_root, "log", "-1", "--format=%h", "--abbrev=12", "--", *paths)
        dirty = _git(repo_root, "status", "--porcelain", "--untracked-files=all", "--", *paths)
    except (OSError, subprocess.CalledProcessError):
        return __version__
    if not sha:
        return f"{__version__}-dirty"
    return f"{sha}-dirty" if dirty else sha


def revisions(repo_root: Path) -> dict[str, str]:
    return {image.name: revision(repo_root, image) for image in IMAGES}


def _git(repo_root: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=repo_root, check=True, capture_output=True, text=True)
    return out.stdout.strip()


def repository(registry: str | None, image: str) -> str:
    """``[registry/]hubops/<image>``."""
    base = f"{NAMESPACE}/{image}"
    return f"{registry.rstrip('/')}/{base}" if registry else base


def _prefix(image: ImageSpec, variant: Variant) -> str:
    return "" if len(image.variants) == 1 else f"{variant.name}-"


def pinned_tag(image: ImageSpec, variant: Variant, rev: str) -> str:
    """The immutable tag a deployment uses: ``<revision>`` or ``<variant>-<revision>``."""
    return f"{_prefix(image, variant)}{rev}"


def tags(image: ImageSpec, variant: Variant, rev: str, os_tag: str, cuda: str) -> list[str]:
    """Every tag of one build: revision, hubops version, variant with CUDA/OS, moving tags."""
    p = _prefix(image, variant)
    platform = f"cuda{cuda}-{os_tag}" if cuda != "none" else os_tag
    out = [pinned_tag(image, variant, rev), f"{p}{__version__}", f"{p}{platform}"]
    if p:
        out.append(variant.name)
    if variant == image.default:
        out.append("latest")
    return out


def pinned_ref(registry: str | None, image_name: str, rev: str, variant: str | None = None) -> str:
    image = spec(image_name)
    v = image.variant(variant) if variant else image.default
    return f"{repository(registry, image.name)}:{pinned_tag(image, v, rev)}"


def by_digest(ref: str, digests: Mapping[str, str] | None) -> str:
    """``repository@sha256:...`` for a tag whose pushed digest is known, else the tag."""
    digest = (digests or {}).get(ref)
    if not digest:
        return ref
    repository_part, _, _ = ref.rpartition(":")
    return f"{repository_part}@{digest}"


def is_variant_name(value: str) -> bool:
    """True for a bare name (a hubops variant); False for an image reference."""
    return not any(ch in value for ch in "/:@")


def resolve_singleuser(value: str, registry: str | None, revs: Mapping[str, str]) -> str:
    """A singleuser image choice: a hubops variant name, or a full image reference as is."""
    if is_variant_name(value):
        return pinned_ref(registry, SINGLEUSER, revs[SINGLEUSER], value)
    return value


def image_name_and_tag(ref: str) -> tuple[str, str]:
    """``registry/repo:tag`` -> (``registry/repo``, ``tag``); a digest stays with the tag
    (``repo:tag@sha256:...``), which the chart joins back the same way."""
    rest, at, digest = ref.partition("@")
    head, colon, tag = rest.rpartition(":")
    if not colon or "/" in tag:
        raise ValueError(f"image reference {ref!r} has no tag")
    return head, tag + (at + digest if at else "")


def has_tag(ref: str) -> bool:
    try:
        image_name_and_tag(ref)
    except ValueError:
        return False
    return True
