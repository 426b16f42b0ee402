"""The images hubops builds, as data.

Build order, tags and test selection come from :data:`IMAGES`; no code branches on an image's
name. A singleuser *variant* is one tag family of the ``singleuser`` image, built from its own
Dockerfile target.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from hubops import __version__

NAMESPACE = "hubops"


@dataclass(frozen=True)
class Variant:
    """One build of an image: a Dockerfile target plus what it needs from the host."""

    name: str
    target: str
    parent: str | None = None  # variant of the same image this one builds on
    cuda: str | None = None  # CUDA version the variant's user-space needs (label)
    description: str = ""


@dataclass(frozen=True)
class ImageSpec:
    """An image: its build context and its variants (the first is the default)."""

    name: str
    context: str
    variants: tuple[Variant, ...]
    depends_on: tuple[str, ...] = ()
    build_args: dict[str, str] = field(default_factory=dict)

    @property
    def default(self) -> Variant:
        return self.variants[0]

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)


IMAGES: tuple[ImageSpec, ...] = (
    ImageSpec(
        name="proxy",
        context="hub/proxy",
        variants=(Variant("default", target="proxy", description="configurable-http-proxy"),),
    ),
    ImageSpec(
        name="hub",
        context="hub",
        variants=(Variant("default", target="hub", description="JupyterHub + DockerSpawner"),),
    ),
    ImageSpec(
        name="singleuser",
        context="singleuser",
        variants=(
            Variant("base", target="base", cuda="12.4", description="JupyterLab, CUDA runtime"),
            Variant(
                "pytorch",
                target="pytorch",
                parent="base",
                cuda="12.4",
                description="base + CUDA-enabled PyTorch",
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


def build_id(repo_root: Path) -> str:
    """The tag that pins a build: git short SHA (+ ``-dirty``), or the version outside git."""
    try:
        sha = _git(repo_root, "rev-parse", "--short=12", "HEAD")
    except (OSError, subprocess.CalledProcessError):
        return __version__
    dirty = _git(repo_root, "status", "--porcelain", "--untracked-files=no")
    return f"{sha}-dirty" if dirty else sha


def _git(repo_root: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=repo_root, check=True, capture_output=True, text=True)
    return out.stdout.strip()


def repository(registry: str | None, image: str) -> str:
    """``[registry/]hubops/<image>``."""
    base = f"{NAMESPACE}/{image}"
    return f"{registry.rstrip('/')}/{base}" if registry else base


def pinned_tag(variant: Variant, image: ImageSpec, build: str) -> str:
    """The immutable tag a deployment uses: ``<build>`` or ``<variant>-<build>``."""
    return build if len(image.variants) == 1 else f"{variant.name}-{build}"


def pinned_ref(
    registry: str | None, image_name: str, build: str, variant: str | None = None
) -> str:
    image = spec(image_name)
    v = image.variant(variant) if variant else image.default
    return f"{repository(registry, image.name)}:{pinned_tag(v, image, build)}"


def is_variant_name(value: str) -> bool:
    """True for a bare name (a hubops variant); False for an image reference."""
    return not any(ch in value for ch in "/:@")


def resolve_singleuser(value: str, registry: str | None, build: str) -> str:
    """A singleuser image choice: a hubops variant name, or a full image reference as is."""
    return pinned_ref(registry, SINGLEUSER, build, value) if is_variant_name(value) else value
