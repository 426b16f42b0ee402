"""Secrets: which ones an environment needs, where they come from, and that none is shown."""

from __future__ import annotations

import pytest

from hubops.config import environments, secrets
from hubops.errors import SecretError
from tests.support.checkout import REPO_ROOT, Checkout


def test_lab_needs_the_oauth_client_secret_and_the_registry_password() -> None:
    lab = environments.load(REPO_ROOT, "lab").settings
    assert [s.name for s in secrets.needed(lab)] == ["oauth_client_secret", "registry_password"]


def test_local_needs_the_shared_and_admin_passwords() -> None:
    local = environments.load(REPO_ROOT, "local").settings
    assert [s.name for s in secrets.needed(local)] == ["shared_password", "admin_password"]


def test_the_environment_variable_wins_over_the_file(checkout: Checkout) -> None:
    (checkout.root / "config/secrets/lab.yaml").write_text(
        "oauth_client_secret: from-file\nregistry_password: reg-from-file\n"
    )
    lab = environments.load(checkout.root, "lab").settings
    env = {"HUBOPS_OAUTH_CLIENT_SECRET": "from-env"}
    values = secrets.resolve(checkout.root, "lab", lab, environ=env)
    assert values["oauth_client_secret"].get_secret_value() == "from-env"
    assert values["registry_password"].get_secret_value() == "reg-from-file"
    sources = {s.spec.name: s.source for s in secrets.status(checkout.root, "lab", lab, env)}
    assert sources == {
        "oauth_client_secret": "environment variable HUBOPS_OAUTH_CLIENT_SECRET",
        "registry_password": "config/secrets/lab.yaml",
    }


def test_every_missing_secret_is_named_with_where_to_put_it(checkout: Checkout) -> None:
    lab = environments.load(checkout.root, "lab").settings
    with pytest.raises(SecretError) as info:
        secrets.resolve(checkout.root, "lab", lab, environ={})
    lines = str(info.value).splitlines()
    assert lines == [
        "lab: missing secret oauth_client_secret (OAuth client secret of the hub); set "
        "HUBOPS_OAUTH_CLIENT_SECRET or add 'oauth_client_secret: ...' to config/secrets/lab.yaml",
        "lab: missing secret registry_password (password of registry.username); set "
        "HUBOPS_REGISTRY_PASSWORD or add 'registry_password: ...' to config/secrets/lab.yaml",
    ]


def test_a_short_password_is_refused_without_showing_it(checkout: Checkout) -> None:
    local = environments.load(checkout.root, "local").settings
    env = {"HUBOPS_SHARED_PASSWORD": "s3cr", "HUBOPS_ADMIN_PASSWORD": "a" * 32}
    with pytest.raises(SecretError, match="is 4 characters; expected at least 8") as info:
        secrets.resolve(checkout.root, "local", local, environ=env)
    assert "s3cr" not in str(info.value), "the error must not show the secret"


def test_an_unknown_key_in_the_secrets_file_is_an_error(checkout: Checkout) -> None:
    (checkout.root / "config/secrets/lab.yaml").write_text("oauth_clientsecret: hunter22\n")
    lab = environments.load(checkout.root, "lab").settings
    with pytest.raises(SecretError, match="oauth_clientsecret: unknown secret") as info:
        secrets.resolve(checkout.root, "lab", lab, environ={})
    assert "hunter22" not in str(info.value)


def test_invalid_yaml_in_the_secrets_file_does_not_echo_it(checkout: Checkout) -> None:
    (checkout.root / "config/secrets/lab.yaml").write_text("oauth_client_secret: [hunter22\n")
    lab = environments.load(checkout.root, "lab").settings
    with pytest.raises(SecretError, match=r"config/secrets/lab.yaml:2: invalid YAML") as info:
        secrets.resolve(checkout.root, "lab", lab, environ={})
    assert "hunter22" not in str(info.value)


def test_secrets_are_git_ignored() -> None:
    ignore = (REPO_ROOT / ".gitignore").read_text().splitlines()
    assert "/config/secrets/*" in ignore, "config/secrets/ must be ignored by git"
