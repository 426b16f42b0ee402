"""Every bad input an admin is likely to make gives one clear line on stderr and exit code 1.

These run the real CLI (`invoke ...`) in a scratch checkout. Each case states the substrings
the one line must hold: the file (and line), the key path, the value given, what is expected.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from tests.support.checkout import Checkout
from tests.support.cli import run_invoke


@dataclass(frozen=True)
class Case:
    id: str
    old: str | None  # text of lab.yaml to replace (None: the case needs no edit)
    new: str
    args: tuple[str, ...]
    expect: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    line_of: str | None = None  # the message must name bad.yaml's line that holds this text
    opened_at: str | None = None  # ... or say that a construct opened on that line


CASES = [
    Case(
        "GPU idle timeout without culling",
        "gpu:\n",
        "culling:\n  enabled: false\ngpu:\n",
        ("check", "--env", "bad"),
        ("gpu.idle_timeout", "is 1800", "culling.enabled is false", "culling.enabled: true"),
        line_of="idle_timeout: 1800",
    ),
    Case(
        "unknown key",
        "public_url:",
        "publik_url:",
        ("check", "--env", "bad"),
        ("publik_url", "unknown key", "did you mean 'public_url'?"),
        line_of="publik_url:",
    ),
    Case(
        "wrong type",
        "port: 443",
        "port: eighty",
        ("check", "--env", "bad"),
        ("hub.port", "got 'eighty'", "expected an integer"),
        line_of="port: eighty",
    ),
    Case(
        "public URL without a scheme",
        "public_url: https://jupyter.lab.example.org",
        "public_url: jupyter.lab.example.org",
        ("check", "--env", "bad"),
        ("public_url", "got 'jupyter.lab.example.org'", "http:// or https://"),
        line_of="public_url: jupyter",
    ),
    Case(
        "TLS without a key",
        "  key: /etc/jupyterhub/tls/privkey.pem\n",
        "",
        ("check", "--env", "bad"),
        ("tls", "tls.enabled is true but tls.key is not set", "set tls.enabled: false"),
        line_of="tls:",
    ),
    Case(
        "GitLab without a GitLab URL",
        "  gitlab_url: https://gitlab.lab.example.org          # lab-specific\n",
        "",
        ("check", "--env", "bad"),
        ("auth.gitlab_url", "missing", "Base URL of the GitLab instance"),
        line_of="auth:",
    ),
    Case(
        "environment that does not exist",
        None,
        "",
        ("check", "--env", "labb"),
        (
            "config/environments/labb.yaml",
            "no environment named 'labb'",
            "did you mean 'lab'?",
            "environments: lab, local",
        ),
    ),
    Case(
        "invalid YAML",
        "  port: 22",
        "  port: [22",
        ("check", "--env", "bad"),
        ("bad.yaml:", "invalid YAML", "flow sequence that starts on line"),
        opened_at="  port: [22",
    ),
    Case(
        "missing secret",
        None,
        "",
        ("check", "--strict", "--env", "lab"),
        (
            "lab: missing secret oauth_client_secret",
            "HUBOPS_OAUTH_CLIENT_SECRET",
            "config/secrets/lab.yaml",
        ),
        env=(("HUBOPS_REGISTRY_PASSWORD", "registry-pass"),),
    ),
    Case(
        "user-data path that is not absolute",
        "ssh:",
        "paths:\n  user_data_dir: srv/users\nssh:",
        ("check", "--env", "bad"),
        ("paths.user_data_dir", "got 'srv/users'", "absolute path"),
        line_of="user_data_dir: srv/users",
    ),
    Case(
        "auth type typo",
        "type: gitlab",
        "type: gitlba",
        ("check", "--env", "bad"),
        ("auth.type", "got 'gitlba'", "did you mean 'gitlab'?"),
        line_of="type: gitlba",
    ),
    Case(
        "unknown image variant",
        ": pytorch",
        ": pytorh",
        ("check", "--env", "bad"),
        (
            "singleuser.images.PyTorch (CUDA)",
            "got 'pytorh'",
            "hubops singleuser variant (base, pytorch)",
        ),
        line_of="pytorh",
    ),
    Case(
        "GitLab scopes that cannot see the groups",
        "  allowed_groups: [ml-lab]",
        "  scopes: [read_user]\n  allowed_groups: [ml-lab]",
        ("check", "--env", "bad"),
        ("auth.scopes", "got ['read_user']", "openid", "insufficient_scope", "add openid"),
        line_of="scopes: [read_user]",
    ),
    Case(
        "GitLab scopes that cannot read the user",
        "  allowed_groups: [ml-lab]",
        "  scopes: [openid]\n  allowed_groups: [ml-lab]",
        ("check", "--env", "bad"),
        ("auth.scopes", "got ['openid']", "/api/v4/user", "add read_user"),
        line_of="scopes: [openid]",
    ),
    Case(
        "GitHub scopes that cannot see private membership",
        "  type: gitlab\n  gitlab_url: https://gitlab.lab.example.org          # lab-specific\n",
        "  type: github\n  scopes: ['read:user']\n",
        ("check", "--env", "bad"),
        ("auth.scopes", "got ['read:user']", "add read:org"),
        line_of="scopes: ['read:user']",
    ),
    Case(
        "OIDC issuer without https",
        "  type: gitlab\n  gitlab_url: https://gitlab.lab.example.org          # lab-specific\n",
        "  type: oidc\n  issuer: http://idp.lab.example.org/realms/lab\n",
        ("check", "--env", "bad"),
        ("auth.issuer", "got 'http://idp.lab.example.org/realms/lab'", "must use https://"),
        line_of="issuer: http://",
    ),
    Case(
        "OIDC without issuer or endpoints",
        "  type: gitlab\n  gitlab_url: https://gitlab.lab.example.org          # lab-specific\n",
        "  type: oidc\n  token_url: https://idp.lab.example.org/token\n",
        ("check", "--env", "bad"),
        ("auth.issuer is not set", "auth.authorize_url is missing", "discovery"),
        line_of="auth:",
    ),
    Case(
        "render validates first",
        "port: 443",
        "port: 0",
        ("render", "--env", "bad"),
        ("hub.port", "got 0", "greater than or equal to 1"),
        line_of="port: 0",
    ),
    Case(
        "no --env at all",
        None,
        "",
        ("render",),
        ("no environment given; add --env NAME", "lab, local"),
    ),
    Case(
        "two different --env on one line",
        None,
        "",
        ("check", "--env", "lab", "render", "--env", "local"),
        ("conflicting --env values", "lab, local"),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_prints_one_clear_line_and_exits_1(checkout: Checkout, case: Case) -> None:
    if case.old is not None:
        checkout.edit_env("lab", case.old, case.new, as_name="bad")
    before = sorted(p.relative_to(checkout.root) for p in checkout.root.rglob("*"))
    result = run_invoke(checkout, *case.args, env=dict(case.env))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, f"exit code {result.returncode}; stderr: {result.stderr}"
    assert "Traceback" not in result.stderr, f"a traceback, not a message: {result.stderr}"
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {lines}"
    if case.line_of is not None:
        text = checkout.read_env("bad").splitlines()
        line = next(i for i, t in enumerate(text, 1) if case.line_of in t)
        assert f"config/environments/bad.yaml:{line}:" in lines[0], (
            f"the message must point at line {line} ({case.line_of!r}): {lines[0]}"
        )
    if case.opened_at is not None:
        text = checkout.read_env("bad").splitlines()
        line = next(i for i, t in enumerate(text, 1) if case.opened_at in t)
        assert f"starts on line {line})" in lines[0], f"line {line}: {lines[0]}"
    for part in case.expect:
        assert part in lines[0], f"{part!r} is not in the message: {lines[0]}"
    after = sorted(p.relative_to(checkout.root) for p in checkout.root.rglob("*"))
    created = sorted(set(after) - set(before) - {p for p in after if "__pycache__" in str(p)})
    assert created == [], f"a failed command must change nothing, but it made {created}"


class _Discovery(BaseHTTPRequestHandler):
    document: ClassVar[dict[str, object]] = {}

    def do_GET(self) -> None:
        body = json.dumps(self.document).encode()
        status = 200 if self.path == "/realms/lab/.well-known/openid-configuration" else 404
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def discovery_server() -> Iterator[tuple[str, type[_Discovery]]]:
    """An issuer on loopback whose discovery document a test sets."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Discovery)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/realms/lab", _Discovery
    server.shutdown()
    thread.join(timeout=10)


def oidc_env(checkout: Checkout, issuer: str) -> None:
    checkout.edit_env(
        "lab",
        "  type: gitlab\n  gitlab_url: https://gitlab.lab.example.org          # lab-specific\n",
        f"  type: oidc\n  issuer: {issuer}\n",
        as_name="bad",
    )


STRICT_ENV = {"HUBOPS_OAUTH_CLIENT_SECRET": "s", "HUBOPS_REGISTRY_PASSWORD": "r"}


def strict_check_error(checkout: Checkout) -> str:
    """`invoke check --strict --env bad` fails with exactly one line: that line."""
    result = run_invoke(checkout, "check", "--strict", "--env", "bad", env=STRICT_ENV)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_an_issuer_that_does_not_answer_is_one_line(checkout: Checkout) -> None:
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    oidc_env(checkout, f"http://127.0.0.1:{port}/realms/lab")
    line = strict_check_error(checkout)
    assert "auth.issuer" in line, line
    assert "does not answer (connection refused)" in line, line
    assert "bad.yaml:" in line, "names the file and line"


def test_a_discovery_document_without_userinfo_is_one_line(
    checkout: Checkout, discovery_server: tuple[str, type[_Discovery]]
) -> None:
    issuer, handler = discovery_server
    handler.document = {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/auth",
        "token_endpoint": f"{issuer}/token",
    }
    oidc_env(checkout, issuer)
    line = strict_check_error(checkout)
    assert "has no userinfo_endpoint" in line, line
    assert "auth.issuer" in line


def test_a_good_issuer_passes_strict_check_and_shows_the_endpoints(
    checkout: Checkout, discovery_server: tuple[str, type[_Discovery]]
) -> None:
    issuer, handler = discovery_server
    handler.document = {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/auth",
        "token_endpoint": f"{issuer}/token",
        "userinfo_endpoint": f"{issuer}/userinfo",
    }
    oidc_env(checkout, issuer)
    checkout.edit_env("bad", "  key_file: ~/.ssh/id_ed25519\n", "")  # ssh-agent, no key file
    result = run_invoke(checkout, "check", "--strict", "--env", "bad", env=STRICT_ENV)
    assert result.returncode == 0, result.stderr
    assert f"userdata_url {issuer}/userinfo" in result.stdout, result.stdout
    assert "scopes openid profile email groups" in result.stdout, "groups are used in lab"


UNSAFE = [
    (
        "shared password in the open",
        "hub:\n  bind_address: 0.0.0.0\n",
        ("hub.bind_address", "'0.0.0.0'", "shared-password", "no TLS", "gitlab, github or oidc"),
    ),
    ("data dir is the root", "paths:\n  data_dir: /\n", ("paths.data_dir", "got '/'", "root")),
    (
        "user data in the engine's state",
        "paths:\n  user_data_dir: /var/lib/docker/users\n",
        ("paths.user_data_dir", "inside /var/lib/docker", "a directory of its own"),
    ),
    (
        "a system directory as shared data",
        "paths:\n  shared_data_dir: /etc\n",
        ("paths.shared_data_dir", "got '/etc'", "system directory"),
    ),
    (
        "user data inside the hub's state",
        "paths:\n  user_data_dir: /srv/jupyterhub/users\n",
        ("paths.user_data_dir", "'/srv/jupyterhub/users'", "inside paths.data_dir"),
    ),
    (
        "a malformed GPU ID",
        "gpu:\n  policy: exclusive\n  pool: [0, gpu7]\n",
        ("gpu.pool.1", "got 'gpu7'", "GPU index", "MIG-"),
    ),
    (
        "no image at all",
        "singleuser:\n  image: null\n  images: {}\n",
        ("singleuser", "singleuser.images is empty", "at least one image"),
    ),
    (
        "an SSH user that is an option",
        "ssh:\n  host: gpu01.lab.example.org\n  user: -oProxyCommand=touch /tmp/x\n",
        ("ssh.user", "-oProxyCommand", "not starting with '-'"),
    ),
    (
        "an SSH host that is an option",
        "ssh:\n  host: -oProxyCommand=touch /tmp/x\n",
        ("ssh.host", "-oProxyCommand", "not starting with '-'"),
    ),
    (
        "a subnet with host bits",
        "network:\n  subnet: 10.1.2.3/24\n",
        ("network.subnet", "'10.1.2.3/24'", "no host bits"),
    ),
    (
        "a subnet too small",
        "network:\n  subnet: 10.1.2.0/28\n",
        ("network.subnet", "'10.1.2.0/28'", "/8 to /24"),
    ),
    (
        "an egress exception that is no network",
        "network:\n  egress_allow: [pypi-mirror.lab]\n",
        ("network.egress_allow.0", "'pypi-mirror.lab'", "CIDR"),
    ),
    (
        "egress rules without isolation",
        "network:\n  isolation: false\n  egress: none\n",
        ("network.egress", "'none'", "network.isolation: true"),
    ),
    (
        "no PID limit to speak of",
        "singleuser:\n  pids_limit: 10\n",
        ("singleuser.pids_limit", "got 10", "greater than or equal to 64"),
    ),
    (
        "a /dev/shm that is no size",
        "singleuser:\n  shm_size: lots\n",
        ("singleuser.shm_size", "got 'lots'", "expected a size such as 512M"),
    ),
    (
        "a /dev/shm larger than the memory limit",
        "singleuser:\n  shm_size: 4G\n",
        ("singleuser.shm_size", "is 4G", "larger than the memory limit 2G (singleuser.mem_limit)"),
    ),
    (
        "a profile's /dev/shm larger than its memory limit",
        "singleuser:\n  profiles:\n    - mem_limit: 1G\n      shm_size: 2G\n",
        ("singleuser.profiles.0.shm_size", "is 2G", "1G (singleuser.profiles.0.mem_limit)"),
    ),
    (
        "a /dev/shm larger than a profile's memory limit",
        "singleuser:\n  shm_size: 1536M\n  profiles:\n    - mem_limit: 1G\n",
        ("singleuser.shm_size", "is 1536M", "1G (singleuser.profiles.0.mem_limit)"),
    ),
    (
        "a negative queue_timeout",
        "gpu:\n  policy: exclusive\n  pool: ['0']\n  queue_timeout: -5\n",
        ("gpu.queue_timeout", "got -5", "greater than or equal to 0"),
    ),
    (
        "a queue_timeout where every server gets every GPU",
        "gpu:\n  policy: all\n  queue_timeout: 60\n",
        ("gpu.queue_timeout", "is 60, but gpu.policy is all", "nobody waits", "remove it"),
    ),
    (
        "a profile's queue_timeout without GPUs",
        "singleuser:\n  profiles:\n    - queue_timeout: 30\n",
        ("singleuser.profiles.0.queue_timeout", "is 30, but gpu.policy is none", "exclusive"),
    ),
    (
        "a queue_timeout on a swarm",
        "cluster: swarm\nnetwork:\n  isolation: false\ngpu:\n  policy: exclusive\n"
        "  queue_timeout: 60\n",
        ("gpu.queue_timeout", "is 60 with cluster swarm", "keeps no line", "remove it"),
    ),
    (
        "start slots on a swarm",
        "cluster: swarm\nnetwork:\n  isolation: false\nhub:\n  concurrent_starts: 4\n",
        ("hub.concurrent_starts", "is 4 with cluster swarm", "remove it"),
    ),
    (
        "no start slot at all",
        "hub:\n  concurrent_starts: 0\n",
        ("hub.concurrent_starts", "got 0", "greater than or equal to 1"),
    ),
    (
        "a /dev/shm size on a swarm",
        "cluster: swarm\nnetwork:\n  isolation: false\nsingleuser:\n  shm_size: 1G\n",
        ("singleuser.shm_size", "is 1G with cluster swarm", "no shm size", "remove it"),
    ),
]


@pytest.mark.parametrize(("case", "text", "expect"), UNSAFE, ids=[c[0] for c in UNSAFE])
def test_unsafe_settings_are_one_clear_line(
    checkout: Checkout, case: str, text: str, expect: tuple[str, ...]
) -> None:
    checkout.write_env("bad", "extends: local.yaml\n" + text)
    result = run_invoke(checkout, "check", "--env", "bad")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, f"{case}: exit {result.returncode}: {result.stderr}"
    assert len(lines) == 1, f"{case}: expected one line: {lines}"
    assert "config/environments/bad.yaml" in lines[0], lines[0]
    for part in expect:
        assert part in lines[0], f"{part!r} is not in the message: {lines[0]}"


def test_an_environment_name_that_could_break_a_file_is_one_line(checkout: Checkout) -> None:
    (checkout.root / "config" / "environments" / "my lab.yaml").write_text("extends: local.yaml\n")
    result = run_invoke(checkout, "render", "--env", "my lab")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1, lines
    assert "'my lab'" in lines[0], lines[0]
    assert "letters, digits, '-' and '_'" in lines[0], lines[0]
    assert not (checkout.root / "build").exists(), "nothing was rendered"
