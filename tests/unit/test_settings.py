"""The environment schema: shipped environments, extends, and the rules across keys."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from hubops.config import environments
from hubops.config.settings import Environment, GitLabAuth, SharedPasswordAuth
from hubops.errors import ConfigError
from tests.support.checkout import REPO_ROOT, SHIPPED_ENVS, Checkout


def _all_models(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[type[BaseModel]]:
    from hubops.config.reference import _models

    seen.add(model)
    for info in model.model_fields.values():
        for sub in _models(info.annotation):
            if sub not in seen:
                _all_models(sub, seen)
    return seen


def test_every_field_is_described() -> None:
    """Every key of every section has a description (the README reference is built from them)."""
    undocumented = [
        f"{model.__name__}.{name}"
        for model in _all_models(Environment, set())
        for name, info in model.model_fields.items()
        if not (info.description or "").strip()
    ]
    assert undocumented == [], f"fields without a description: {undocumented}"


def test_shipped_environments_are_local_and_lab() -> None:
    assert SHIPPED_ENVS == ["lab", "local"], f"shipped environments: {SHIPPED_ENVS}"
    assert environments.available(REPO_ROOT) == ["lab", "local"]


def test_lab_is_a_gitlab_tls_ssh_deployment_with_two_images() -> None:
    lab = environments.load(REPO_ROOT, "lab").settings
    assert isinstance(lab.auth, GitLabAuth), f"lab logs in with {lab.auth.type}"
    assert lab.auth.scopes is None, "lab lets hubops choose the scopes"
    assert lab.oauth_scopes == ["read_user", "openid"], "groups are used: GitLab's openid"
    assert lab.tls.enabled, "lab must serve TLS"
    assert lab.public_url.startswith("https://"), f"lab public_url: {lab.public_url}"
    assert lab.ssh is not None, "lab must be reached over SSH"
    assert lab.singleuser.images is not None, "lab offers a choice of images"
    assert len(lab.singleuser.images) == 2, f"lab images: {lab.singleuser.images}"
    assert lab.gpu.policy == "exclusive", f"lab GPU policy: {lab.gpu.policy}"
    assert lab.gpu.pool == ["0", "1", "2", "3"], f"lab GPU pool: {lab.gpu.pool}"
    assert [p.max_gpus for p in lab.singleuser.profiles] == [2, 1, 0], "profiles per group"
    assert lab.oauth_callback_url == "https://jupyter.lab.example.org/hub/oauth_callback"


def test_local_uses_this_engine_and_a_shared_password() -> None:
    local = environments.load(REPO_ROOT, "local").settings
    assert local.ssh is None, f"local must not use SSH, got {local.ssh}"
    assert isinstance(local.auth, SharedPasswordAuth), f"local logs in with {local.auth.type}"


def test_extends_merges_mappings_and_replaces_other_values(checkout: Checkout) -> None:
    """A child overrides one nested key; the base's sibling keys stay; lists replace."""
    checkout.write_env(
        "child",
        "extends: lab.yaml\n"
        "paths:\n  user_data_dir: /data/users\n"
        "auth:\n  type: gitlab\n  gitlab_url: https://git.example.org\n  client_id: x\n"
        "  allowed_users: [bob]\n",
    )
    env = environments.load(checkout.root, "child")
    s = env.settings
    assert s.paths.user_data_dir == "/data/users", "child's own value wins"
    assert s.paths.data_dir == "/srv/jupyterhub", "the base's sibling key is kept"
    assert s.tls.enabled, "sections the child does not touch come from lab"
    assert isinstance(s.auth, GitLabAuth)
    assert s.auth.allowed_users == ["bob"], f"lists replace: {s.auth.allowed_users}"
    assert s.auth.allowed_groups == ["ml-lab"], "keys the child omits still come from lab"
    assert [f.name for f in env.files] == ["_common.yaml", "lab.yaml", "child.yaml"]
    assert env.origins[("paths", "user_data_dir")].file.name == "child.yaml"
    assert env.origins[("paths", "data_dir")].file.name == "_common.yaml"


def test_extends_loop_is_an_error(checkout: Checkout) -> None:
    checkout.write_env("a", "extends: b.yaml\n")
    checkout.write_env("b", "extends: a.yaml\n")
    with pytest.raises(ConfigError, match=r"loops back on itself \(.*a.yaml -> .*b.yaml"):
        environments.load(checkout.root, "a")


def test_extends_unknown_file_lists_the_files(checkout: Checkout) -> None:
    checkout.edit_env("lab", "extends: _common.yaml", "extends: _comon.yaml")
    with pytest.raises(ConfigError, match=r"lab.yaml:3: extends: no file '_comon.yaml'.*_common"):
        environments.load(checkout.root, "lab")


def test_bases_are_not_environments(checkout: Checkout) -> None:
    assert "_common" not in environments.available(checkout.root)
    with pytest.raises(ConfigError, match="no environment named '_common'"):
        environments.load(checkout.root, "_common")


@pytest.mark.parametrize(
    ("section", "key"),
    [("hub", "prot"), ("tls", "certificate"), ("singleuser", "imagez"), ("paths", "data")],
)
def test_unknown_keys_are_errors_in_every_section(
    checkout: Checkout, section: str, key: str
) -> None:
    checkout.write_env("x", f"extends: lab.yaml\n{section}:\n  {key}: 1\n")
    with pytest.raises(ConfigError, match=rf"x.yaml:3: {section}\.{key}: unknown key"):
        environments.load(checkout.root, "x")


def _lab(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "public_url": "https://hub.example.org",
        "auth": {
            "type": "gitlab",
            "gitlab_url": "https://git.example.org",
            "client_id": "id",
            "allowed_users": ["a"],
        },
        "singleuser": {"image": "base"},
    }
    data.update(overrides)
    return data


def test_callback_url_follows_a_public_url_with_a_path() -> None:
    env = Environment.model_validate(_lab(public_url="https://example.org/jupyter/"))
    assert env.public_url == "https://example.org/jupyter", "trailing slash is dropped"
    assert env.oauth_callback_url == "https://example.org/jupyter/hub/oauth_callback"


def test_oauth_with_nobody_allowed_is_refused() -> None:
    auth = {"type": "github", "client_id": "id"}
    with pytest.raises(ValueError, match="nobody would be allowed to log in"):
        Environment.model_validate(_lab(auth=auth))


def test_tls_needs_an_https_public_url() -> None:
    tls = {"enabled": True, "cert": "/c.pem", "key": "/k.pem"}
    with pytest.raises(ValueError, match=r"public_url 'http://hub\.example\.org' is http://"):
        Environment.model_validate(_lab(public_url="http://hub.example.org", tls=tls))


def test_image_and_images_are_exclusive() -> None:
    su = {"image": "base", "images": {"A": "base"}}
    with pytest.raises(ValueError, match=r"exactly one of singleuser\.image"):
        Environment.model_validate(_lab(singleuser=su))


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("../etc", "expected an absolute path"),
        ("rel/dir", "expected an absolute path"),
        ("/srv/../etc", "without '..' components"),
        ("/srv/a\0b", "without NUL bytes"),
    ],
)
def test_host_paths_must_be_absolute_and_plain(path: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Environment.model_validate(_lab(paths={"user_data_dir": path}))
