"""``invoke build``: build, tag and label the images an environment uses.

What gets built comes from the image table (:mod:`hubops.images.table`) and the environment: the
proxy, the hub, and the singleuser variants its image choices name (with their parents). Each
build context is assembled in memory: the image's directory, the shared build scripts and the
environment's CA bundle; nothing of the environment's hub config goes in, so changing it never
rebuilds an image. Builds use the classic builder on a user-defined network.
"""

from __future__ import annotations

import io
import logging
import re
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, ImageNotFound
from hubops_hub.labels import LABEL_JH, LABEL_ROLE
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from hubops import __version__
from hubops.config.environments import LoadedEnvironment
from hubops.config.settings import Environment, resolve_repo_path
from hubops.errors import BuildError, HubopsError
from hubops.host.engine import BUILD_NETWORK, ensure_network
from hubops.images import base as base_image
from hubops.images import table as images
from hubops.images.table import ImageSpec, Variant

log = logging.getLogger(__name__)
LOG_DIR = Path("build") / "logs"
_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)")
_ARG = re.compile(r"^\s*ARG\s+(.+)$", re.MULTILINE)


@dataclass(frozen=True)
class BaseInfo:
    ref: str
    os_tag: str  # e.g. debian12, ubuntu22.04
    cuda: str  # CUDA version of the base's user-space, or "none"


@dataclass(frozen=True)
class BuiltImage:
    image: str
    variant: str
    image_id: str
    refs: tuple[str, ...]
    size: int
    seconds: float
    cached: bool  # every step came from the build cache
    labels: dict[str, str]

    @property
    def pinned(self) -> str:
        return self.refs[0]


def wanted(settings: Environment) -> list[tuple[ImageSpec, Variant]]:
    """The builds an environment needs, in build order (parents first)."""
    out: list[tuple[ImageSpec, Variant]] = []
    for image in images.IMAGES:
        if image.name == images.SINGLEUSER:
            names = [v for v in settings.singleuser.choices.values() if images.is_variant_name(v)]
            out += [(image, v) for v in image.with_parents(names)]
        else:
            out += [(image, v) for v in image.variants]
    return out


def build(
    client: docker.DockerClient,
    repo_root: Path,
    env: LoadedEnvironment,
    only: list[str] | None = None,
    no_cache: bool = False,
    console: Console | None = None,
    allow_dirty: bool = False,
) -> list[BuiltImage]:
    """Build every image ``env`` uses (or those named in ``only``); returns what was built.

    For an environment with a registry, images whose inputs have uncommitted changes are
    refused unless ``allow_dirty``: their ``-dirty`` tag would name different builds.
    """
    settings = env.settings
    console = console or Console(stderr=True)
    todo = wanted(settings)
    revs = images.revisions(repo_root)
    if settings.registry.url and not allow_dirty:
        dirty = sorted({i.name for i, _ in todo if revs[i.name].endswith("-dirty")})
        if dirty:
            paths = " ".join(p for name in dirty for p in images.inputs(images.spec(name))[:1])
            raise BuildError(
                f"{env.name} pushes to {settings.registry.url}, and the inputs of "
                f"{', '.join(dirty)} have uncommitted changes (git status -- {paths}): a "
                "-dirty tag would name different builds; commit them, or build with "
                "--allow-dirty for a throwaway image"
            )
    if only:
        known = sorted({i.name for i, _ in todo} | {f"{i.name}:{v.name}" for i, v in todo})
        unknown = [o for o in only if o not in known]
        if unknown:
            raise HubopsError(
                f"--image {unknown[0]!r}: not an image of environment {env.name}; "
                f"expected one of: {', '.join(known)}"
            )
        todo = [(i, v) for i, v in todo if i.name in only or f"{i.name}:{v.name}" in only]
    ensure_network(client, BUILD_NETWORK, {LABEL_ROLE: "build"})
    bases = {key: ensure_base(client, settings, key, console) for key in {i.base for i, _ in todo}}
    ca = _ca_bundle(repo_root, env)
    built: list[BuiltImage] = []
    with _progress(console) as progress:
        for image, variant in todo:
            built.append(
                _build_one(
                    client,
                    repo_root,
                    settings,
                    image,
                    variant,
                    bases[image.base],
                    ca,
                    revs[image.name],
                    no_cache,
                    progress,
                )
            )
    check_versions(client, settings, revs)
    return built


def ensure_base(
    client: docker.DockerClient, settings: Environment, key: str, console: Console
) -> BaseInfo:
    """The FROM image named by ``build.<key>``: present, bootstrapped, or pulled."""
    ref: str = getattr(settings.build, key)
    try:
        client.images.get(ref)
    except ImageNotFound:
        if ref == settings.build.bootstrap.image:
            console.print(f"[bold]base[/] {ref} is missing: bootstrapping it (invoke base-image)")
            made = base_image.bootstrap(client, settings.build.bootstrap, settings.mirrors)
            console.print(f"[bold]base[/] {ref} made in {made.seconds:.0f}s")
        else:
            _pull(client, ref, key, settings)
    return describe_base(client, ref)


def _pull(client: docker.DockerClient, ref: str, key: str, settings: Environment) -> None:
    try:
        client.images.pull(ref)
    except APIError as exc:
        raise HubopsError(
            f"build.{key}: cannot pull {ref!r} ({exc.explanation or exc}); if this machine "
            f"cannot pull, set build.{key}: {settings.build.bootstrap.image} (made from "
            "Debian packages by invoke base-image)"
        ) from None


def describe_base(client: docker.DockerClient, ref: str) -> BaseInfo:
    """OS and CUDA version of a base image, read without running it."""
    image = client.images.get(ref)
    env = dict(
        item.split("=", 1)
        for item in (image.attrs.get("Config") or {}).get("Env") or []
        if "=" in item
    )
    cuda = ".".join(env.get("CUDA_VERSION", "").split(".")[:2]) or "none"
    container = client.containers.create(ref, command=["true"])
    text = ""
    try:
        for path in ("/usr/lib/os-release", "/etc/os-release"):  # the latter is often a link
            try:
                bits, _ = container.get_archive(path)
            except APIError:
                continue
            with tarfile.open(fileobj=io.BytesIO(b"".join(bits))) as tar:
                member = tar.extractfile("os-release")
                text = member.read().decode() if member else ""
            if text:
                break
    finally:
        container.remove(force=True)
    fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    os_id = fields.get("ID", "unknown").strip('"')
    os_version = fields.get("VERSION_ID", "").strip('"')
    return BaseInfo(ref=ref, os_tag=f"{os_id}{os_version}", cuda=cuda)


def _ca_bundle(repo_root: Path, env: LoadedEnvironment) -> bytes:
    value = env.settings.mirrors.ca_bundle
    if value is None:
        return b""
    path = resolve_repo_path(repo_root, value)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise HubopsError(
            f"{env.file}: mirrors.ca_bundle: cannot read {value!r} ({exc.strerror}); give a "
            "readable PEM bundle or remove the key"
        ) from None


def context_tar(repo_root: Path, image: ImageSpec, ca: bytes) -> io.BytesIO:
    """The build context: the image's directory, shared build files, the CA bundle.

    Deterministic (sorted, zero mtimes, root-owned) so that an unchanged context is cached.
    """
    buf = io.BytesIO()
    root = repo_root / image.context
    with tarfile.open(fileobj=buf, mode="w") as tar:

        def add(path: Path, name: str) -> None:
            info = tar.gettarinfo(str(path), arcname=name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            with path.open("rb") as f:
                tar.addfile(info, f)

        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root)
            if path.is_dir() or rel.parts[0] in image.excludes or "__pycache__" in rel.parts:
                continue
            add(path, str(rel))
        for path in sorted((repo_root / images.BUILD_FILES).iterdir()):
            add(path, path.name)
        info = tarfile.TarInfo(images.CA_FILE)
        info.size, info.mode = len(ca), 0o644
        tar.addfile(info, io.BytesIO(ca))
    buf.seek(0)
    return buf


def build_args(
    repo_root: Path,
    settings: Environment,
    image: ImageSpec,
    variant: Variant,
    base: BaseInfo,
    rev: str,
) -> dict[str, str]:
    """The build args the image's Dockerfile declares, from the environment and the table."""
    m = settings.mirrors
    values = {
        "BASE_IMAGE": base.ref,
        "APT_MIRROR": m.apt or "",
        "PIP_INDEX_URL": m.pip_index_url or "",
        "NPM_REGISTRY": m.npm_registry or "",
        "NB_UID": str(settings.singleuser.uid),
        "NB_GID": str(settings.singleuser.gid),
        "HUBOPS_VERSION": __version__,
        "HUBOPS_REVISION": rev,
        "HUBOPS_OS": base.os_tag,
        "HUBOPS_CUDA": base.cuda,
        **images.build_args(image, variant),
    }
    dockerfile = (repo_root / image.context / "Dockerfile").read_text()
    declared = {word.split("=", 1)[0] for line in _ARG.findall(dockerfile) for word in line.split()}
    return {k: v for k, v in values.items() if k in declared}


@contextmanager
def _progress(console: Console) -> Iterator[Progress]:
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        yield progress


def _build_one(
    client: docker.DockerClient,
    repo_root: Path,
    settings: Environment,
    image: ImageSpec,
    variant: Variant,
    base: BaseInfo,
    ca: bytes,
    rev: str,
    no_cache: bool,
    progress: Progress,
) -> BuiltImage:
    name = image.name if len(image.variants) == 1 else f"{image.name}:{variant.name}"
    cuda = variant.cuda or base.cuda
    repo = images.repository(settings.registry.url, image.name)
    refs = tuple(f"{repo}:{t}" for t in images.tags(image, variant, rev, base.os_tag, cuda))
    task = progress.add_task(f"[bold]{name}[/] starting", total=None)
    log_path = repo_root / LOG_DIR / f"{image.name}-{variant.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    step, ran_steps = "", 0
    step_lines: list[str] = []
    image_id = ""
    with log_path.open("w", encoding="utf-8") as logf:
        stream = client.api.build(
            fileobj=context_tar(repo_root, image, ca),
            custom_context=True,
            target=variant.target,
            buildargs=build_args(repo_root, settings, image, variant, base, rev),
            tag=refs[0],
            rm=True,
            forcerm=True,
            pull=False,
            nocache=no_cache,
            network_mode=BUILD_NETWORK,
            decode=True,
        )
        for chunk in stream:
            text, error = _chunk_text(chunk)
            if "aux" in chunk and isinstance(chunk["aux"], dict) and "ID" in chunk["aux"]:
                image_id = str(chunk["aux"]["ID"])
            for line in text.splitlines():
                logf.write(line + "\n")
                if _STEP.match(line):
                    step, step_lines = line, []
                    progress.update(task, description=f"[bold]{name}[/] {line[:90]}")
                elif line.startswith(" ---> Running in "):
                    ran_steps += 1  # a step the cache did not have
                else:
                    step_lines.append(line)
            if error:
                logf.write(f"ERROR: {error}\n")
                progress.update(task, description=f"[bold red]{name} failed[/] {step[:80]}")
                progress.stop_task(task)
                output = "\n".join(step_lines[-40:])
                raise BuildError(
                    f"building {name} failed at {step or 'the start'}:\n{output}\n{error}\n"
                    f"(whole log: {log_path.relative_to(repo_root)})"
                )
    if not image_id:
        raise BuildError(f"building {name}: the engine reported no image ID; see {log_path}")
    for ref in refs[1:]:
        repository, _, tag = ref.rpartition(":")
        client.api.tag(image_id, repository, tag)
    seconds = time.monotonic() - start
    built = client.images.get(image_id)
    cached = ran_steps == 0
    progress.update(
        task,
        description=f"[bold green]{name}[/] {refs[0]} "
        f"{_mb(int(built.attrs.get('Size', 0)))} {'(cached)' if cached else ''}",
    )
    progress.stop_task(task)
    return BuiltImage(
        image=image.name,
        variant=variant.name,
        image_id=image_id,
        refs=refs,
        size=int(built.attrs.get("Size", 0)),
        seconds=seconds,
        cached=cached,
        labels=dict((built.attrs.get("Config") or {}).get("Labels") or {}),
    )


def _chunk_text(chunk: dict[str, Any]) -> tuple[str, str]:
    if "error" in chunk:
        detail = chunk.get("errorDetail") or {}
        return "", str(detail.get("message") or chunk["error"]).strip()
    return str(chunk.get("stream", "")), ""


def check_versions(
    client: docker.DockerClient, settings: Environment, revs: dict[str, str]
) -> None:
    """JupyterHub must be the same version in the hub and every singleuser image it spawns."""
    label = LABEL_JH
    found: dict[str, str] = {}
    for image, variant in wanted(settings):
        ref = images.pinned_ref(
            settings.registry.url,
            image.name,
            revs[image.name],
            variant.name if len(image.variants) > 1 else None,
        )
        try:
            labels = client.images.get(ref).labels
        except ImageNotFound:
            continue
        if label in labels:
            found[ref] = labels[label]
    if len(set(found.values())) > 1:
        listing = ", ".join(f"{ref} has {v}" for ref, v in sorted(found.items()))
        raise BuildError(
            f"JupyterHub versions differ between the images ({listing}); the hub and "
            "singleuser images must match: rebuild them together (invoke build without --image)"
        )


def _mb(size: int) -> str:
    return f"{size / 1e6:.0f} MB"
