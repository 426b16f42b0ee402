"""Rendering: every shipped environment renders to a config that JupyterHub loads as meant.

The rendered file is loaded with JupyterHub's own traitlets config loader, and the
authenticator and spawner classes JupyterHub resolves are instantiated from it, so a trait
name that JupyterHub does not know, or a value it would not accept, fails here.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hubops_hub.proxy import HubopsProxy
from hubops_hub.spawner import HubopsSpawner
from jupyterhub.app import JupyterHub
from traitlets.config import Config

from hubops.config import environments
from hubops.config.secrets import resolve
from hubops.config.settings import SharedPasswordAuth
from hubops.images.table import IMAGES
from hubops.plan.render import py_literal, render
from tests.support.checkout import SHIPPED_ENVS, Checkout

BUILD = "0123abcd4567"
REVS = {image.name: BUILD for image in IMAGES}
FAKE_SECRETS = {
    "oauth_client_secret": "FAKE-client-secret-7f3a9c",
    "shared_password": "FAKE-shared-password-51d2",
    "admin_password": "FAKE-admin-password-0123456789abcdef0123456789",
    "proxy_token": "FAKE-proxy-token-88e1",
    "metrics_token": "FAKE-metrics-token-31c7",
    "ops_token": "FAKE-ops-token-64b0",
}


@pytest.fixture
def hub_secrets(
    secrets_dir: Callable[[dict[str, str]], Path], monkeypatch: pytest.MonkeyPatch
) -> Path:
    """The hub's secrets directory, as the deploy leaves it on the hub host."""
    path = secrets_dir(FAKE_SECRETS)
    monkeypatch.setenv("HUBOPS_SECRETS_DIR", str(path))
    return path


GIB = 2**30


def load_hub_config(path: Path) -> Config:
    app = JupyterHub()
    app.load_config_file(str(path))
    return app.config


def rendered(checkout: Checkout, name: str) -> tuple[environments.LoadedEnvironment, Config]:
    env = environments.load(checkout.root, name)
    out = render(checkout.root, env, REVS)
    return env, load_hub_config(out.directory / "jupyterhub_config.py")


def configured_classes(config: Config) -> Iterator[tuple[str, type[Any]]]:
    hub = JupyterHub(config=config)
    yield "JupyterHub", JupyterHub
    yield "ConfigurableHTTPProxy", hub.proxy_class
    for cls in hub.authenticator_class.mro():
        if hasattr(cls, "class_trait_names") and "Authenticator" in cls.__name__:
            yield cls.__name__, cls
    for cls in hub.spawner_class.mro():
        if hasattr(cls, "class_trait_names") and cls.__name__.endswith("Spawner"):
            yield cls.__name__, cls


@pytest.mark.parametrize("name", SHIPPED_ENVS)
def test_every_configured_trait_exists(checkout: Checkout, hub_secrets: Path, name: str) -> None:
    """Each section of the config is a class JupyterHub uses, and each key one of its traits."""
    _, config = rendered(checkout, name)
    classes = dict(configured_classes(config))
    assert set(config) <= set(classes), f"sections without a class: {set(config) - set(classes)}"
    for section, cls in classes.items():
        unknown = set(config.get(section, {})) - set(cls.class_trait_names(config=True))
        assert unknown == set(), f"{section} has no traits named {unknown}"


@pytest.mark.parametrize("name", SHIPPED_ENVS)
def test_key_traits_follow_the_environment(
    checkout: Checkout, hub_secrets: Path, name: str
) -> None:
    env, config = rendered(checkout, name)
    s = env.settings
    hub = JupyterHub(config=config)
    assert config.JupyterHub.db_url == "sqlite:////srv/jupyterhub/jupyterhub.sqlite"
    assert config.JupyterHub.cookie_secret_file == "/srv/jupyterhub/jupyterhub_cookie_secret"
    assert config.JupyterHub.public_url == s.public_url + "/"
    assert config.JupyterHub.cleanup_servers is False, "user servers must survive the hub"
    assert config.ConfigurableHTTPProxy.should_start is False, "the proxy is its own container"
    assert hub.spawner_class is HubopsSpawner, f"spawner: {hub.spawner_class}"
    assert hub.proxy_class is HubopsProxy, "the proxy's traffic is not the users' activity"

    auth = hub.authenticator_class(parent=hub)
    assert sorted(auth.admins) == sorted(s.auth.admin_users)
    assert auth.admin_users == set(), "admins come from the admin role, not admin_users"
    admin_role = next(r for r in config.JupyterHub.load_roles if r["name"] == "admin")
    assert admin_role["users"] == sorted(s.auth.admin_users)
    if isinstance(s.auth, SharedPasswordAuth):
        assert auth.user_password == FAKE_SECRETS["shared_password"], "read from the secret file"
    else:
        assert auth.oauth_callback_url == f"{s.public_url}/hub/oauth_callback"
        assert auth.client_secret == FAKE_SECRETS["oauth_client_secret"]
        assert auth.client_id == s.auth.client_id

    spawner = HubopsSpawner(config=config, user=SimpleNamespace(name="a.b", groups=[]))
    assert spawner.notebook_dir == s.singleuser.notebook_dir
    host_dir = f"{s.paths.user_data_dir}/jupyterhub-user-a-2eb"
    assert spawner.volume_binds == {host_dir: {"bind": s.singleuser.notebook_dir, "mode": "rw"}}
    # the user's directory is their whole home (dotfiles, settings, pip --user), in both
    # host_uids modes
    assert spawner.environment["HOME"] == s.singleuser.notebook_dir
    assert spawner.network_name == f"hubops-{name}"
    assert spawner.policy.name == s.gpu.policy
    assert spawner.policy.pool == tuple(s.gpu.pool), "the pool reaches the spawner as strings"


def test_lab_specifics(checkout: Checkout, hub_secrets: Path) -> None:
    """lab: GitLab at its URL with read_user and openid (its groups are used), groups from
    GitLab plus the static ones, two images pinned to this build."""
    _, config = rendered(checkout, "lab")
    hub = JupyterHub(config=config)
    auth = hub.authenticator_class(parent=hub)
    assert type(auth).__name__ == "HubopsGitLabOAuthenticator"
    assert auth.gitlab_url == "https://gitlab.lab.example.org"
    assert auth.scope == ["read_user", "openid"]
    assert auth.oauth_callback_url == "https://jupyter.lab.example.org/hub/oauth_callback"
    assert auth.manage_groups is True
    assert auth.allowed_groups == {"ml-lab"}
    assert auth.allowed_gitlab_groups == set(), "GitLab's member API needs read_api"
    assert auth.static_groups == {"staff": ["alice"]}
    assert auth.allow_existing_users is False
    assert "load_groups" not in config.JupyterHub, "JupyterHub refuses it with manage_groups"
    spawner = HubopsSpawner(config=config, user=SimpleNamespace(name="alice", groups=[]))
    registry = "registry.lab.example.org:5000/hubops/singleuser"
    assert spawner.allowed_images == {
        "Python + JupyterLab": f"{registry}:base-{BUILD}",
        "PyTorch (CUDA)": f"{registry}:pytorch-{BUILD}",
    }
    assert spawner.image == f"{registry}:base-{BUILD}", "the first choice is the default"


@pytest.mark.parametrize(
    ("name", "groups", "shm"),
    [
        ("local", [], 1 * GIB),  # half of singleuser.mem_limit 2G
        ("lab", ["staff"], 32 * GIB),  # half of the staff profile's 64G
        ("lab", ["ml-lab"], 16 * GIB),  # half of 32G
        ("lab", [], 4 * GIB),  # no limit of its own: half of singleuser.mem_limit 8G
    ],
)
def test_dev_shm_is_half_the_memory_limit_that_applies(
    checkout: Checkout, hub_secrets: Path, name: str, groups: list[str], shm: int
) -> None:
    """PyTorch's DataLoader workers pass batches through /dev/shm: each server gets half of
    the memory limit that applies to it (Docker's 64M is the default otherwise)."""
    _, config = rendered(checkout, name)
    user = SimpleNamespace(name="u", groups=[SimpleNamespace(name=g) for g in groups])
    spawner = HubopsSpawner(config=config, user=user)
    spawner.apply_profile()
    assert spawner.extra_host_config["shm_size"] == shm


def test_plan_holds_the_containers_the_deploy_starts(checkout: Checkout) -> None:
    env = environments.load(checkout.root, "lab")
    out = render(checkout.root, env, REVS)
    plan = json.loads((out.directory / "plan.json").read_text())
    by_role = {c["role"]: c for c in plan["containers"]}
    assert sorted(by_role) == ["hub", "proxy"]
    hub_mounts = {m["target"]: m for m in by_role["hub"]["mounts"]}
    assert "/var/run/docker.sock" in hub_mounts, "the hub holds the Docker socket"
    assert all("docker.sock" not in m["source"] for m in by_role["proxy"]["mounts"])
    proxy_cmd = by_role["proxy"]["command"]
    assert "--ssl-cert=/run/hubops-tls/cert.pem" in proxy_cmd, f"TLS at the proxy: {proxy_cmd}"
    proxy_mounts = {m["target"]: m["source"] for m in by_role["proxy"]["mounts"]}
    assert proxy_mounts["/etc/hubops/tls/key.pem"] == "/etc/jupyterhub/tls/privkey.pem"
    assert "--redirect-port=8080" in proxy_cmd, "lab redirects plain http"
    ports = {(p["host_ip"], p["host_port"]) for p in by_role["proxy"]["ports"]}
    assert ports == {("0.0.0.0", 443), ("0.0.0.0", 80)}, f"published: {ports}"
    assert plan["images"][:2] == [
        f"registry.lab.example.org:5000/hubops/proxy:{BUILD}",
        f"registry.lab.example.org:5000/hubops/hub:{BUILD}",
    ]


NASTY = "it's \"quoted\"\\ and\nnew-line'''\"\"\" + __import__('os').system('false') #"


def test_values_cannot_break_the_file_or_inject_code(
    checkout: Checkout, hub_secrets: Path, tmp_path: Path
) -> None:
    """Quotes, backslashes and newlines in any value reach the config unchanged, as data."""
    marker = tmp_path / "pwned"
    payload = f"{NASTY}\n__import__('pathlib').Path({str(marker)!r}).touch()\n"
    checkout.write_env(
        "nasty",
        "extends: lab.yaml\n"
        f"auth:\n  client_id: {json.dumps(payload)}\n"
        f"  allowed_users: [{json.dumps(NASTY)}]\n"
        f"singleuser:\n  images:\n    {json.dumps(NASTY)}: base\n",
    )
    _, config = rendered(checkout, "nasty")
    assert not marker.exists(), "a value was executed as code"
    assert config.HubopsGitLabOAuthenticator.client_id == payload
    assert config.HubopsGitLabOAuthenticator.allowed_users == [NASTY]
    assert list(config.DockerSpawner.allowed_images)[-1] == NASTY


@pytest.mark.parametrize(
    "value",
    [None, True, 0, -1.5, "", NASTY, ["a", {"b": [1, None]}], {"k'\n": "v\\"}],
)
def test_py_literal_reads_back_unchanged(value: Any) -> None:
    assert ast.literal_eval(py_literal(value)) == value


@pytest.mark.parametrize("value", [object(), {1: "x"}, float("nan"), Path("/x"), {"a"}])
def test_py_literal_refuses_anything_but_plain_data(value: Any) -> None:
    with pytest.raises(TypeError, match="cannot place"):
        py_literal(value)


@pytest.mark.parametrize("name", SHIPPED_ENVS)
def test_a_planted_secret_appears_in_no_rendered_file(
    checkout: Checkout, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Secrets given by environment and by secrets file, resolved as a deploy resolves them,
    never reach build/: the config names each secret the hub needs and reads it from its file
    at start-up."""
    for secret, value in FAKE_SECRETS.items():
        monkeypatch.setenv(f"HUBOPS_{secret.upper()}", value)
    (checkout.root / "config" / "secrets" / f"{name}.yaml").write_text(
        "registry_password: FAKE-registry-pass-4d4d\n"
    )
    env = environments.load(checkout.root, name)
    resolved = resolve(checkout.root, name, env.settings)  # what the deploy holds in memory
    assert resolved, "the deploy resolved the secrets"
    out = render(checkout.root, env, REVS)
    config = (out.directory / "jupyterhub_config.py").read_text()
    for needed in out.plan.hub_secrets:
        assert f"read_secret({needed!r})" in config, f"{needed} is not read from its file"
    for path in out.directory.rglob("*"):
        text = path.read_text()
        for value in [v.get_secret_value() for v in resolved.values()]:
            assert value not in text, f"a secret value leaked into {path}"


def test_render_is_deterministic(checkout: Checkout) -> None:
    env = environments.load(checkout.root, "lab")
    first = {p.name: p.read_bytes() for p in render(checkout.root, env, REVS).files}
    second = {p.name: p.read_bytes() for p in render(checkout.root, env, REVS).files}
    assert first == second, "the same environment and build must render the same bytes"


def test_pushed_images_are_deployed_by_digest(checkout: Checkout, hub_secrets: Path) -> None:
    """With the digests push verified, the host runs exactly those: containers, the pull list
    and the users' image choices all name ``repository@sha256:...``."""
    env = environments.load(checkout.root, "lab")
    tags = render(checkout.root, env, REVS).plan
    digests = {ref: f"sha256:{n:064x}" for n, ref in enumerate(tags.images)}
    out = render(checkout.root, env, REVS, digests)
    by_digest = {f"{ref.rpartition(':')[0]}@{d}" for ref, d in digests.items()}
    assert set(out.plan.images) == by_digest
    for container in out.plan.containers:
        assert container.image in by_digest
        assert container.labels["org.hubops.image"] == container.image
    config = load_hub_config(out.directory / "jupyterhub_config.py")
    assert set(config.DockerSpawner.allowed_images.values()) <= by_digest
    assert config.DockerSpawner.image in by_digest


def test_every_expression_in_a_template_goes_through_a_placing_filter() -> None:
    """A template expression without py, py_args, ident or comment is a render error, so no
    value reaches the file unchecked, comments included."""
    from hubops.plan.render import _environment

    env = _environment()
    with pytest.raises(TypeError, match="without a filter that places it"):
        env.from_string("# {{ name }}\n").render(name="lab")
    assert env.from_string("# {{ name | comment }}\n").render(name="lab") == "# lab\n"


@pytest.mark.parametrize("value", ["lab\nimport os", "lab\rx", "a\x00b", 3])
def test_the_comment_filter_refuses_what_could_end_the_comment(value: Any) -> None:
    from hubops.plan.render import comment_filter

    with pytest.raises(TypeError, match="cannot place"):
        comment_filter(value)


@pytest.mark.parametrize("value", ["os.system('x')", "a b", "c\nd", ""])
def test_the_ident_filter_takes_python_names_only(value: str) -> None:
    from hubops.plan.render import ident_filter

    with pytest.raises(TypeError, match="as a Python name"):
        ident_filter(value)
