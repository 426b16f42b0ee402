"""The hub image: JupyterHub with DockerSpawner, OAuthenticator and the idle culler."""

from __future__ import annotations

import pytest

from hubops.images.build import BuiltImage
from hubops.images.table import VERSIONS
from tests.support.containers import Runner


@pytest.fixture
def hub(built: dict[str, BuiltImage]) -> BuiltImage:
    return built["hub:default"]


@pytest.mark.parametrize(
    "module", ["jupyterhub", "dockerspawner", "oauthenticator", "jupyterhub_idle_culler"]
)
def test_holds_the_hub_packages(hub: BuiltImage, run_container: Runner, module: str) -> None:
    host = run_container(hub.pinned)
    result = host.run(f"python3 -c 'import {module}'")
    assert result.rc == 0, f"{module} does not import in {hub.pinned}: {result.stderr}"


def test_jupyterhub_version_matches_singleuser(
    hub: BuiltImage, built: dict[str, BuiltImage], run_container: Runner
) -> None:
    host = run_container(hub.pinned)
    version = host.check_output("jupyterhub --version")
    assert version == VERSIONS["JUPYTERHUB_VERSION"], f"hub has JupyterHub {version}"
    singleuser = [b for b in built.values() if b.image == "singleuser"]
    for image in singleuser:
        label = image.labels["org.hubops.jupyterhub.version"]
        assert label == version, f"{image.pinned} has JupyterHub {label}, the hub {version}"


def test_entry_points_resolve_the_configured_classes(
    hub: BuiltImage, run_container: Runner
) -> None:
    """The names the rendered config uses (docker, gitlab, github, generic-oauth,
    shared-password) resolve inside the hub image."""
    host = run_container(hub.pinned)
    script = (
        "from jupyterhub.app import JupyterHub; "
        "[print(JupyterHub(authenticator_class=a).authenticator_class.__name__) "
        "for a in ('gitlab', 'github', 'generic-oauth', 'shared-password')]; "
        "print(JupyterHub(spawner_class='docker').spawner_class.__name__)"
    )
    names = host.check_output(f'python3 -c "{script}"').split()
    assert names == [
        "GitLabOAuthenticator",
        "GitHubOAuthenticator",
        "GenericOAuthenticator",
        "SharedPasswordAuthenticator",
        "DockerSpawner",
    ]


def test_no_node_in_the_hub_image(hub: BuiltImage, run_container: Runner) -> None:
    """The proxy has its own image, so the hub carries no Node.js."""
    host = run_container(hub.pinned)
    assert not host.exists("node"), "node is in the hub image"


def test_rfc3987_syntax_is_gone_without_breaking_a_requirement(
    hub: BuiltImage, run_container: Runner
) -> None:
    """It builds ~35 Lark parsers whenever jupyter_events is imported (the hub starts 2 s
    slower); jsonschema skips the iri formats without it, and no Jupyter schema uses them."""
    host = run_container(hub.pinned)
    assert host.run("python3 -c 'import rfc3987_syntax'").rc != 0, "rfc3987_syntax is back"
    check = host.run("pip check")
    assert check.rc == 0, f"pip check in {hub.pinned}: {check.stdout}{check.stderr}"
