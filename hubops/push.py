"""``invoke push``: push every tag of the environment's images, verified by digest.

Credentials come from ``registry.username`` and the ``registry_password`` secret. After each
push, the registry is asked for the manifest digest of the tag, which must be the digest the
push reported: what the registry serves is exactly what was built.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import requests
from docker.errors import APIError, ImageNotFound
from pydantic import SecretStr

from hubops import images
from hubops.build import wanted
from hubops.environments import LoadedEnvironment
from hubops.errors import HubopsError
from hubops.secrets import REGISTRY_PASSWORD

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
    ]
)


class PushError(HubopsError):
    """A push failed or its result could not be verified."""


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
            raise PushError(
                f"registry {registry} refused the login of {s.username!r} ({_why(exc)}); check "
                f"registry.username in {env.file} and the registry_password secret "
                f"({REGISTRY_PASSWORD.env_var} or config/secrets/{env.name}.yaml)"
            ) from None
    pushed: list[Pushed] = []
    for ref in refs_to_push(client, env, repo_root):
        digest = _push_one(client, ref, auth)
        served = manifest_digest(ref, s.insecure, auth)
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


def manifest_digest(ref: str, insecure: bool, auth: dict[str, str] | None) -> str:
    """The digest the registry serves for ``ref`` (HEAD of its manifest)."""
    registry, _, rest = ref.partition("/")
    repository, _, tag = rest.rpartition(":")
    scheme = "http" if insecure else "https"
    url = f"{scheme}://{registry}/v2/{repository}/manifests/{tag}"
    basic = (auth["username"], auth["password"]) if auth else None
    try:
        response = requests.head(url, headers={"Accept": MANIFEST_TYPES}, auth=basic, timeout=30)
    except requests.RequestException as exc:
        raise PushError(f"cannot ask {url} for the pushed manifest: {exc}") from None
    if response.status_code != 200:
        raise PushError(f"{url} answered {response.status_code} for the pushed tag")
    return str(response.headers.get("Docker-Content-Digest", ""))


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
