"""Builds and pushes against real parts: the engine, and Debian's docker-registry started on
loopback with htpasswd auth and with the Docker token flow. Pushed images are pulled back and
compared by digest; deploys pull exactly the pushed digests.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import requests
from pydantic import SecretStr

from hubops.config import environments
from hubops.errors import PushError
from hubops.images.build import BuiltImage, build
from hubops.images.push import push
from tests.support.checkout import REPO_ROOT, Checkout
from tests.support.labhost import LabHost
from tests.support.registry import Registry, running_registry

REGISTRY_USER = "hubops"
REGISTRY_PASSWORD = "reg-pass-for-tests-9f2c"


@pytest.fixture(scope="module", params=["htpasswd", "token"])
def registry(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Registry]:
    """Debian's docker-registry on 127.0.0.1, with htpasswd or with the Docker token flow
    (as GitLab's registry, Harbor and GHCR), storage in a temp dir."""
    root = tmp_path_factory.mktemp(f"registry-{request.param}")
    with running_registry(root, {REGISTRY_USER: REGISTRY_PASSWORD}, auth=request.param) as r:
        yield r


@pytest.fixture
def registry_env(checkout: Checkout, registry: Registry) -> environments.LoadedEnvironment:
    """`local` with the loopback registry (images are tagged for it)."""
    checkout.write_env(
        "reg",
        "extends: local.yaml\n"
        f"registry:\n  url: '{registry.address}'\n  username: {REGISTRY_USER}\n"
        "  insecure: true\n",
    )
    return environments.load(checkout.root, "reg")


def test_push_round_trip_keeps_the_digest(
    docker_client: docker.DockerClient,
    built: dict[str, BuiltImage],
    registry_env: environments.LoadedEnvironment,
) -> None:
    """Push every tag, delete the local copies, pull them back: the digests match."""
    tagged = build(docker_client, REPO_ROOT, registry_env, allow_dirty=True)  # adds registry tags
    assert all(b.cached for b in tagged), "tagging for a registry must not rebuild anything"
    start = time.monotonic()
    pushed = push(
        docker_client, registry_env, REPO_ROOT, {"registry_password": SecretStr(REGISTRY_PASSWORD)}
    )
    print(f"pushed {len(pushed)} tags in {time.monotonic() - start:.1f}s")
    expected = {ref for b in tagged for ref in b.refs}
    assert {p.ref for p in pushed} == expected, "every tag of every image is pushed"
    auth = {"username": REGISTRY_USER, "password": REGISTRY_PASSWORD}
    for b in tagged:
        pinned = next(p for p in pushed if p.ref == b.pinned)
        for ref in b.refs:
            docker_client.images.remove(ref)
        repository, _, tag = pinned.ref.rpartition(":")
        pulled = docker_client.images.pull(repository, tag=tag, auth_config=auth)
        digests = [d.partition("@")[2] for d in pulled.attrs["RepoDigests"]]
        assert pinned.digest in digests, f"{pinned.ref}: pushed {pinned.digest}, pulled {digests}"
        assert pulled.id == b.image_id, f"{pinned.ref}: pulled image differs from the built one"


def test_bad_registry_password_says_what_to_fix(
    docker_client: docker.DockerClient,
    built: dict[str, BuiltImage],
    registry_env: environments.LoadedEnvironment,
) -> None:
    with pytest.raises(PushError) as info:
        push(docker_client, registry_env, REPO_ROOT, {"registry_password": SecretStr("wrong")})
    message = str(info.value)
    assert "refused the login of 'hubops'" in message, message
    assert "HUBOPS_REGISTRY_PASSWORD" in message
    assert "config/secrets/reg.yaml" in message
    assert "wrong" not in message, "the password must not be shown"


def test_no_registry_says_what_is_missing(
    docker_client: docker.DockerClient, local_env: environments.LoadedEnvironment
) -> None:
    with pytest.raises(PushError, match=r"registry\.url is not set, so there is nowhere to push"):
        push(docker_client, local_env, REPO_ROOT, {})


def test_a_planted_secret_is_in_no_layer_or_history(
    docker_client: docker.DockerClient,
    built: dict[str, BuiltImage],
    checkout: Checkout,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Secrets given by environment variable and secrets file never reach an image."""
    fake = "FAKE-planted-secret-3c9e1d"
    monkeypatch.setenv("HUBOPS_SHARED_PASSWORD", fake)
    (checkout.root / "config/secrets/local.yaml").write_text(f"admin_password: {fake}{fake}\n")
    env = environments.load(checkout.root, "local")
    for b in build(docker_client, REPO_ROOT, env):
        image = docker_client.images.get(b.pinned)
        history = " ".join(str(h.get("CreatedBy", "")) for h in image.history())
        assert fake not in history, f"{b.pinned}: the secret is in docker history"
        tail = b""
        for chunk in image.save(named=False):
            assert fake.encode() not in tail + chunk, f"{b.pinned}: the secret is in a layer"
            tail = chunk[-len(fake) :]


def test_no_op_rebuild_uses_the_cache(
    docker_client: docker.DockerClient,
    built: dict[str, BuiltImage],
    local_env: environments.LoadedEnvironment,
    checkout: Checkout,
) -> None:
    """A second build with nothing changed, and one after a config-only change, rebuild
    nothing and give the same image IDs."""
    start = time.monotonic()
    again = build(docker_client, REPO_ROOT, local_env)
    seconds = time.monotonic() - start
    print(f"no-op rebuild: {seconds:.1f}s")
    assert all(b.cached for b in again), [b.pinned for b in again if not b.cached]
    assert {b.image_id for b in again} == {b.image_id for b in built.values()}
    checkout.edit_env("local", "mem_limit: 2G", "mem_limit: 3G")
    changed = build(docker_client, REPO_ROOT, environments.load(checkout.root, "local"))
    assert {b.image_id for b in changed} == {b.image_id for b in built.values()}, (
        "a config-only change must not change any image"
    )


def test_ca_bundle_path_that_does_not_exist_is_one_clear_error(checkout: Checkout) -> None:
    from hubops.config.check import check
    from hubops.errors import ConfigError

    checkout.edit_env(
        "local", "ca_bundle: /etc/ssl/certs/ca-certificates.crt", "ca_bundle: /nonexistent/ca.pem"
    )
    with pytest.raises(ConfigError, match=r"mirrors.ca_bundle: got '/nonexistent/ca.pem'"):
        check(checkout.root, "local")


def test_deploy_pulls_from_the_registry(
    docker_client: docker.DockerClient,
    built: dict[str, BuiltImage],
    registry: Registry,
    lab: LabHost,
    tmp_path: Path,
) -> None:
    """A deploy to the lab host pulls the pushed images (logged in through a throwaway
    DOCKER_CONFIG: the registry password is left nowhere on the host)."""
    from tests.support.deployment import make_deployment, tear_down

    checkout = Checkout(tmp_path / "co")
    shutil.copytree(REPO_ROOT / "config" / "environments", checkout.root / "config/environments")
    d = make_deployment(
        checkout,
        tmp_path / "d",
        lab.client,
        extra=lab.env_yaml()
        + f"registry:\n  url: '{registry.address}'\n  username: {REGISTRY_USER}\n"
        "  insecure: true\n",
    )
    d.set("paths.docker_socket", lab.docker_host.removeprefix("unix://"))
    d.secrets["registry_password"] = SecretStr(REGISTRY_PASSWORD)
    try:
        build(docker_client, REPO_ROOT, d.env, allow_dirty=True)  # cached: tags for the registry
        pushed = push(
            docker_client, d.env, REPO_ROOT, {"registry_password": SecretStr(REGISTRY_PASSWORD)}
        )
        d.digests = {p.ref: p.digest for p in pushed}
        result = d.deploy()
        pulled = [x.removeprefix("fetched ") for x in result.done if x.startswith("fetched ")]
        assert len(pulled) == 3, f"proxy, hub and singleuser pulled: {result.done}"
        assert all(registry.address in x for x in pulled), pulled
        assert all("@sha256:" in ref for ref in pulled), f"pulled by digest: {pulled}"
        assert requests.get(f"{d.url}/hub/health", timeout=5).status_code == 200
        for container in d.containers().values():
            image = container.attrs["Config"]["Image"]
            assert image in {f"{p.ref.rpartition(':')[0]}@{p.digest}" for p in pushed}, image
            assert container.labels["org.hubops.image"] == image, "the label shows the digest"
        leftovers = subprocess.run(
            ["grep", "-rl", REGISTRY_PASSWORD, "/root/.docker", str(d.root)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        assert leftovers == "", f"the registry password was left in {leftovers}"
    finally:
        tear_down(d)


def test_a_registry_that_rejects_the_token_is_one_clear_error(
    docker_client: docker.DockerClient,
    built: dict[str, BuiltImage],
    checkout: Checkout,
    tmp_path: Path,
) -> None:
    """The token service answers, but signs with a key the registry was not given."""
    with running_registry(
        tmp_path / "rogue", {REGISTRY_USER: REGISTRY_PASSWORD}, auth="token", rogue=True
    ) as rogue:
        checkout.write_env(
            "rogue",
            "extends: local.yaml\n"
            f"registry:\n  url: '{rogue.address}'\n  username: {REGISTRY_USER}\n"
            "  insecure: true\n",
        )
        env = environments.load(checkout.root, "rogue")
        with pytest.raises(PushError) as info:
            push(docker_client, env, REPO_ROOT, {"registry_password": SecretStr(REGISTRY_PASSWORD)})
    message = str(info.value)
    assert len(message.splitlines()) == 1, message
    assert rogue.tokens_issued, "the token service was asked and answered"
    assert "rejected the token" in message, message
    assert REGISTRY_PASSWORD not in message
