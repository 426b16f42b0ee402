"""The deployment the verify suites check, and the parts they check it with.

Without ``--env``, the suites make their own deployment on the lab host (a second Docker
engine with 4 SIMULATED GPUs, reached over SSH): `local` plus GitLab login through the test
OAuth provider, TLS with a plain-http redirect, every GPU for every user, limits and a
read-only shared data directory. With ``--env NAME`` (e.g. on a GPU runner, or an admin after
a deploy) they check that environment's running deployment and deploy nothing; the tests that
need the test provider's users then skip and say why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
import testinfra

from tests.support.checkout import REPO_ROOT, Checkout
from tests.support.labhost import LabHost
from tests.support.net import drop_firewall_rules, free_port
from tests.support.oauth_provider import Provider, running_provider
from tests.support.tls import write_cert
from tests.support.verify import (
    CLIENT_ID,
    CLIENT_SECRET,
    USER_FS_SIZE,
    USER_QUOTA,
    USERS,
    LoggedIn,
    LoginReport,
    Target,
    existing_target,
    login_and_spawn,
    set_auth,
)

REPORT_KEY = pytest.StashKey[LoginReport]()
# what a user server reaches: path -> (without isolation, with it); printed in the summary
REACH_KEY = pytest.StashKey[dict[str, tuple[str, str]]]()


@pytest.fixture(scope="session")
def reach_table(request: pytest.FixtureRequest) -> dict[str, tuple[str, str]]:
    """Through a fixture: this conftest is imported once by pytest and once by the tests,
    as two modules with a StashKey each."""
    return request.config.stash.setdefault(REACH_KEY, {})


@pytest.fixture(scope="session")
def login_report(request: pytest.FixtureRequest) -> LoginReport:
    return request.config.stash.setdefault(REPORT_KEY, LoginReport())


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    reach = terminalreporter.config.stash.get(REACH_KEY, None)
    if reach:
        terminalreporter.section("what a user server reaches (network.isolation false -> true)")
        for path, (before, after) in reach.items():
            terminalreporter.write_line(f"{path:45} {before:8} -> {after}")
    report = terminalreporter.config.stash.get(REPORT_KEY, None)
    if report is None:
        return
    if report.matrix:
        terminalreporter.section("login matrix (provider dialect x rules x user)")
        users = sorted({u for _, _, u in report.matrix})
        head = f"{'provider':20} {'rules':16} " + " ".join(f"{u:8}" for u in users)
        terminalreporter.write_line(head)
        for dialect, rules in dict.fromkeys((d, r) for d, r, _ in report.matrix):
            row = [report.matrix.get((dialect, rules, u), "-") for u in users]
            terminalreporter.write_line(
                f"{dialect:20} {rules:16} " + " ".join(f"{r:8}" for r in row)
            )
    for what, seconds in report.times.items():
        terminalreporter.write_line(f"login -> JupyterLab ready, {what}: {seconds:.2f} s")


@pytest.fixture(scope="session")
def target(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    lab: LabHost,
    built: dict[str, object],
) -> Iterator[Target]:
    explicit = request.config.getoption("--env")
    if explicit:
        yield existing_target(str(explicit))
        return
    root = tmp_path_factory.mktemp("verify")
    checkout = Checkout(root / "checkout")
    shutil.copytree(
        REPO_ROOT / "config" / "environments", checkout.root / "config" / "environments"
    )
    for name in ("tasks.py", "invoke.yaml"):  # the operator's CLI works in it too
        shutil.copy(REPO_ROOT / name, checkout.root / name)
    os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"  # the provider speaks plain http
    name = f"v{uuid.uuid4().hex[:6]}"
    port, http_port = free_port(), free_port()
    public = f"https://127.0.0.1:{port}"
    cert, key = write_cert(root, datetime.now(timezone.utc) + timedelta(days=30))
    # the users' files on a filesystem of their own, small enough to fill (test_disk.py)
    users = root / "users"
    users.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={USER_FS_SIZE},mode=0755", "tmpfs", str(users)],
        check=True,
    )
    shared = root / "shared"
    shared.mkdir()
    (shared / "README.txt").write_text("lab data, read-only\n")
    try:
        with running_provider(
            lab.gateway_ip, CLIENT_ID, CLIENT_SECRET, [f"{public}/hub/oauth_callback"], USERS
        ) as provider:
            checkout.write_env(
                name,
                "extends: local.yaml\n"
                f"public_url: {public}\n"
                f"hub:\n  bind_address: 127.0.0.1\n  port: {port}\n  http_port: {http_port}\n"
                f"tls:\n  enabled: true\n  cert: {cert}\n  key: {key}\n"
                "auth:\n  type: gitlab\n  client_id: x\n  gitlab_url: http://x\n"
                "  allowed_users: [x]\n"
                "singleuser:\n  image: base\n  mem_limit: 1G\n  cpu_limit: 0.5\n  pids_limit: 256\n"
                f"  disk_quota: {USER_QUOTA}\n  disk_usage_every: 60\n"
                "gpu:\n  policy: all\n"
                "culling:\n  enabled: false\n"
                f"paths:\n  config_dir: {root}/etc\n  data_dir: {root}/srv\n"
                f"  user_data_dir: {root}/users\n  shared_data_dir: {shared}\n"
                f"  docker_socket: {lab.docker_host.removeprefix('unix://')}\n" + lab.env_yaml(),
            )
            set_auth(checkout, name, "gitlab", provider)
            host = testinfra.get_host(
                f"ssh://root@127.0.0.1:{lab.ssh_port}",
                ssh_identity_file=str(lab.key_file),
                ssh_extra_args=f"-o UserKnownHostsFile={lab.known_hosts} "
                "-o StrictHostKeyChecking=yes",
            )
            t = Target(
                checkout.root,
                name,
                plan=None,
                host=host,  # type: ignore[arg-type]
                provider=provider,
                cert=cert,
                simulated=True,
            )
            t.redeploy()
            try:
                yield t
            finally:
                for container in lab.client.containers.list(
                    all=True, filters={"label": f"org.hubops.environment={name}"}
                ):
                    container.remove(force=True)
                for network in lab.client.networks.list(names=[f"hubops-{name}"]):
                    network.remove()
                drop_firewall_rules(name)
                shutil.rmtree(root / "users", ignore_errors=True)

    finally:
        subprocess.run(["umount", "--lazy", str(users)], check=False)


@pytest.fixture
def provider(target: Target) -> Provider:
    if target.provider is None:
        pytest.skip("needs the hubops test OAuth provider's users; run without --env to use it")
    return target.provider


@pytest.fixture(scope="session")
def alice(target: Target, provider_session: Provider) -> LoggedIn:
    """alice (an admin of the ml-lab group), logged in through OAuth, her server running."""
    return login_and_spawn(target, "alice")


@pytest.fixture(scope="session")
def bob(target: Target, provider_session: Provider) -> LoggedIn:
    return login_and_spawn(target, "bob")


@pytest.fixture(scope="session")
def provider_session(target: Target) -> Provider:
    if target.provider is None:
        pytest.skip("needs the hubops test OAuth provider's users; run without --env to use it")
    return target.provider
