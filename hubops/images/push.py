"""``invoke push``: push every tag of the environment's images, verified by digest.

Credentials come from ``registry.username`` and the ``registry_password`` secret. After each
push, the registry is asked (through the engine, which does the registry's auth) for the
manifest digest of the tag, which must be the digest the push reported: what the registry
serves is exactly what was built. The digests are recorded in build/<env>/pushed.json, and the
deploy pulls exactly those (``name@sha256:...``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import requests
from docker.errors import APIError, ImageNotFound
from pydantic import SecretStr

from hubops.config.environments import LoadedEnvironment
from hubops.config.secrets import REGISTRY_PASSWORD
from hubops.errors import PushError
from hubops.images import table as images
from hubops.images.build import wanted
from hubops.plan.render import BUILD_DIR

PUSHED_FILE = "pushed.json"


@dataclass(frozen=True)
class Pushed:
    ref: str
    digest: str


def refs_to_push(client: docker.DockerClient, env: LoadedEnvironment, repo_root: Path) -> list[str]:
    """Every tag of every image the environment uses, as built for this checkout."""
    registry = _registry(env)
    revs = images.revisions(repo_root)
    out: list[str] = []
    for image, variant in wanted(env.settings):
        pinned = images.pinned_ref(
            registry,
            image.name,
            revs[image.name],
            variant.name if len(image.variants) > 1 else None,
        )
        try:
            built = client.images.get(pinned)
        except ImageNotFound:
            raise PushError(
                f"{pinned} is not on this machine's engine; build it first: "
                f"invoke build --env {env.name}"
            ) from None
        out.append(pinned)
        prefix = f"{images.repository(registry, image.name)}:"
        out += sorted(t for t in built.tags if t.startswith(prefix) and t != pinned)
    return out


def push(
    client: docker.DockerClient,
    env: LoadedEnvironment,
    repo_root: Path,
    secrets: dict[str, SecretStr],
) -> list[Pushed]:
    registry = _registry(env)
    s = env.settings.registry
    auth: dict[str, str] | None = None
    if s.username:
        password = secrets[REGISTRY_PASSWORD.name].get_secret_value()
        auth = {"username": s.username, "password": password}
        try:
            client.login(username=s.username, password=password, registry=registry, reauth=True)
        except APIError as exc:
            realm = _token_realm(registry, s.insecure)
            token = (
                f"; it uses token auth ({realm}): either that token service refused the "
                "credentials, or the registry rejected the token it issued (then the registry "
                "does not trust the token service's signing certificate)"
                if realm
                else ""
            )
            raise PushError(
                f"registry {registry} refused the login of {s.username!r} ({_why(exc)}){token}; "
                f"check registry.username in {env.file} and the registry_password secret "
                f"({REGISTRY_PASSWORD.env_var} or config/secrets/{env.name}.yaml)"
            ) from None
    pushed: list[Pushed] = []
    for ref in refs_to_push(client, env, repo_root):
        digest = _push_one(client, ref, auth)
        served = manifest_digest(client, ref, auth)
        if served != digest:
            raise PushError(
                f"{ref}: the registry serves {served}, but the push reported {digest}; "
                "push again, and check that nothing else writes this tag"
            )
        pushed.append(Pushed(ref=ref, digest=digest))
    return pushed


def _push_one(client: docker.DockerClient, ref: str, auth: dict[str, str] | None) -> str:
    repository, _, tag = ref.rpartition(":")
    digest = ""
    try:
        for chunk in client.api.push(
            repository, tag=tag, auth_config=auth, stream=True, decode=True
        ):
            if "error" in chunk:
                detail = (chunk.get("errorDetail") or {}).get("message") or chunk["error"]
                raise PushError(f"pushing {ref} failed: {detail}{_auth_hint(str(detail))}")
            aux = chunk.get("aux")
            if isinstance(aux, dict) and aux.get("Digest"):
                digest = str(aux["Digest"])
    except APIError as exc:
        raise PushError(f"pushing {ref} failed: {_why(exc)}{_auth_hint(_why(exc))}") from None
    if not digest:
        raise PushError(f"pushing {ref}: the engine reported no digest")
    return digest


def manifest_digest(client: docker.DockerClient, ref: str, auth: dict[str, str] | None) -> str:
    """The digest the registry serves for ``ref``, asked through the engine.

    The engine speaks whatever auth the registry wants (htpasswd's Basic, or the token flow of
    GitLab's registry, Harbor and GHCR: a 401 with a Bearer challenge, then a token from the
    realm), so hubops implements none of it.
    """
    try:
        found = client.images.get_registry_data(ref, auth_config=auth)
    except APIError as exc:
        raise PushError(
            f"cannot ask the registry for {ref}'s manifest: {_why(exc)}{_auth_hint(_why(exc))}"
        ) from None
    return str(found.id)


def record_pushed(repo_root: Path, env_name: str, pushed: list[Pushed]) -> Path:
    """Remember what the registry verified, for the deploy: build/<env>/pushed.json."""
    path = repo_root / BUILD_DIR / env_name / PUSHED_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    known = pushed_digests(repo_root, env_name)
    known.update({p.ref: p.digest for p in pushed})
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(sorted(known.items())), indent=2) + "\n")
    tmp.replace(path)
    return path


def pushed_digests(repo_root: Path, env_name: str) -> dict[str, str]:
    """Tag reference -> digest, of what `invoke push` verified from this checkout."""
    path = repo_root / BUILD_DIR / env_name / PUSHED_FILE
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return {str(k): str(v) for k, v in data.items()}


def _token_realm(registry: str, insecure: bool) -> str | None:
    """The token service a registry names in its 401 challenge (None: no token auth)."""
    scheme = "http" if insecure else "https"
    try:
        answer = requests.get(f"{scheme}://{registry.split('/')[0]}/v2/", timeout=10)
    except requests.RequestException:
        return None
    challenge = answer.headers.get("WWW-Authenticate", "")
    if not challenge.lower().startswith("bearer"):
        return None
    for part in challenge[6:].split(","):
        key, _, value = part.strip().partition("=")
        if key == "realm":
            return value.strip('"')
    return "a Bearer challenge"


def _registry(env: LoadedEnvironment) -> str:
    url = env.settings.registry.url
    if not url:
        raise PushError(
            f"{env.file}: registry.url is not set, so there is nowhere to push; set "
            "registry.url (e.g. registry.lab.example.org:5000)"
        )
    return url


def _why(exc: APIError) -> str:
    explanation: Any = exc.explanation
    return str(explanation or exc)


def _auth_hint(text: str) -> str:
    lowered = text.lower()
    if "unauthorized" in lowered or "authentication required" in lowered or "denied" in lowered:
        return "; check registry.username and the registry_password secret"
    return ""


def digests_for_deploy(
    repo_root: Path, env: LoadedEnvironment, tag_refs: list[str]
) -> dict[str, str]:
    """The pushed digest of every hubops image among ``tag_refs`` (what the deploy pulls).

    An image of this checkout that was not pushed (or was rebuilt since) has no digest: that
    is an error that says to push, never a silent pull of whatever the tag points to now.
    """
    registry = _registry(env)
    known = pushed_digests(repo_root, env.name)
    ours = [
        ref for ref in tag_refs if ref.startswith(f"{registry.rstrip('/')}/{images.NAMESPACE}/")
    ]
    missing = [ref for ref in ours if ref not in known]
    if missing:
        raise PushError(
            f"{missing[0]} was not pushed from this checkout (build/{env.name}/{PUSHED_FILE} has "
            f"no digest for it); run invoke build push --env {env.name} first: the deploy pulls "
            "exactly the digests that push verified"
        )
    return {ref: known[ref] for ref in ours}
