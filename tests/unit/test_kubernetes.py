"""cluster kubernetes: an environment becomes zero-to-jupyterhub 4.4.0 values, checked offline.

No cluster runs here, so each part is checked against the real thing that would read it:

- the values, merged over the chart's defaults as helm merges them, against the chart's own
  JSON schema (tests/data/z2jh-4.4.0, copied from the 4.4.0 tag);
- ``hub.config`` against the classes the chart's hub image runs (JupyterHub, OAuthenticator
  17.4, KubeSpawner 7): every trait name must exist on its class and every value must pass the
  trait's validation (traitlets itself only warns about unknown names);
- the profile list through KubeSpawner's own form and profile handling;
- the helm command through a fake ``helm`` on PATH that records its arguments.
"""

from __future__ import annotations

import asyncio
import copy
import json
import stat
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import jsonschema
import pytest
import yaml
from jupyterhub.app import JupyterHub
from kubernetes_asyncio.config import kube_config
from kubespawner import KubeSpawner
from pydantic import BaseModel
from traitlets.config import Config, Configurable

from hubops.config import environments
from hubops.config.settings import Environment
from hubops.config.z2jh import TABLE, Z2JH_CHART_VERSION, mapping_markdown, no_equivalent
from hubops.deploy.helm import deploy
from hubops.errors import ConfigError, DeployError
from hubops.images.table import IMAGES
from hubops.plan.z2jh import values
from tests.support.checkout import REPO_ROOT, Checkout
from tests.support.cli import run_invoke

CHART = REPO_ROOT / "tests" / "data" / f"z2jh-{Z2JH_CHART_VERSION}"
REVS = {image.name: "0123abcd4567" for image in IMAGES}
CONTEXT = "lab-cluster"
GIB = 2**30

AUTHS: dict[str, dict[str, Any]] = {
    # lab.yaml's own login: GitLab with an allowed group
    "gitlab": {},
    "gitlab-no-groups": {
        "type": "gitlab",
        "gitlab_url": "https://gitlab.lab.example.org",
        "client_id": "lab-client",
        "allowed_users": ["bob"],
        "admin_users": ["alice"],
    },
    "github": {
        "type": "github",
        "client_id": "Iv1.0123456789abcdef",
        "allowed_groups": ["lab-org", "lab-org:ml-team"],
        "admin_users": ["alice"],
    },
    "oidc": {
        "type": "oidc",
        "client_id": "jupyterhub",
        "issuer": "https://idp.lab.example.org/realms/lab",
        "authorize_url": "https://idp.lab.example.org/realms/lab/auth",
        "token_url": "https://idp.lab.example.org/realms/lab/token",
        "userdata_url": "https://idp.lab.example.org/realms/lab/userinfo",
        "groups_claim": "roles",
        "allowed_groups": ["ml-lab"],
        "admin_users": ["alice"],
    },
}


def kubernetes_lab(auth: str = "gitlab") -> dict[str, Any]:
    """lab.yaml made fit for cluster kubernetes: no host, TLS from a Secret, one profile for
    everybody with MIG slices on labelled, tainted nodes."""
    data = yaml.safe_load((REPO_ROOT / "config" / "environments" / "lab.yaml").read_text())
    for key in ("hub", "tls", "ssh", "groups"):
        data.pop(key)
    if AUTHS[auth]:
        data["auth"] = copy.deepcopy(AUTHS[auth])
    data["cluster"] = "kubernetes"
    data["gpu"] = {"policy": "exclusive"}
    del data["singleuser"]["host_uids"]
    data["singleuser"]["profiles"] = [
        {
            "max_gpus": 2,
            "mem_limit": "32G",
            "cpu_limit": 8,
            "gpu_kind": "mig-1g.10gb",
            "node_labels": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB"},
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ],
        }
    ]
    data["network"]["egress_allow"] = ["10.1.2.3/32"]
    data["kubernetes"] = {
        "context": CONTEXT,
        "tls_secret": "jupyter-lab-tls",
        "storage_capacity": "50Gi",
        "storage_class": "ceph-rbd",
        "image_pull_secret": "lab-registry",
    }
    return data


def write_env(checkout: Checkout, name: str, data: dict[str, Any]) -> None:
    checkout.write_env(name, yaml.safe_dump(data, sort_keys=False))


def load(checkout: Checkout, auth: str = "gitlab") -> environments.LoadedEnvironment:
    write_env(checkout, "k8s", kubernetes_lab(auth))
    return environments.load(checkout.root, "k8s")


def helm_merge(defaults: Any, given: Any) -> Any:
    """What helm validates: the user's values merged over the chart's (maps merge, other values
    replace, null removes a default)."""
    if not (isinstance(defaults, dict) and isinstance(given, dict)):
        return copy.deepcopy(given)
    out = copy.deepcopy(defaults)
    for key, value in given.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = helm_merge(out.get(key), value)
    return out


def chart_defaults() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def schema_errors(given: dict[str, Any]) -> list[str]:
    schema = yaml.safe_load((CHART / "values.schema.yaml").read_text())
    merged = helm_merge(chart_defaults(), given)
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(merged)
    ]


# --- the chart's schema ----------------------------------------------------------------------


@pytest.mark.parametrize("auth", list(AUTHS))
def test_values_pass_the_charts_schema(checkout: Checkout, auth: str) -> None:
    """Every variant's values, merged over the chart's defaults, are valid chart values."""
    env = load(checkout, auth)
    errors = schema_errors(values(env.settings, REVS))
    assert errors == [], f"z2jh {Z2JH_CHART_VERSION} rejects the values: {errors}"


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        (("singleuser", "storage", "type"), "dynamc"),
        (("proxy", "https", "type"), "secrets"),
        (("hub", "config", "loadRoles"), {"admin": {}}),  # a section must be a class name
        (("singleuser", "cpu", "limit"), "2 cores"),
        (("cull", "every"), "5m"),
    ],
)
def test_the_schema_check_fails_for_broken_values(
    checkout: Checkout, path: tuple[str, ...], bad: Any
) -> None:
    """The schema check is not a formality: values the chart would refuse fail it."""
    broken = values(load(checkout).settings, REVS)
    node = broken
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = bad
    errors = schema_errors(broken)
    assert errors, f"{'.'.join(path)}: {bad!r} passed the schema"


def test_the_vendored_chart_is_the_pinned_version() -> None:
    """tests/data holds the schema of the chart version hubops deploys."""
    assert CHART.is_dir(), f"{CHART} is missing: vendor the chart's schema for the new pin"
    assert "4.4.0" in (CHART / "SOURCE.md").read_text(), "SOURCE.md names another version"


# --- hub.config in the chart's classes -------------------------------------------------------


@pytest.fixture
def kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A kubectl config for a cluster that does not exist: KubeSpawner loads one at start
    (no request is made while these tests run)."""
    path = tmp_path / "kubeconfig"
    path.write_text(
        textwrap.dedent(
            f"""\
            apiVersion: v1
            kind: Config
            clusters: [{{name: lab, cluster: {{server: "https://127.0.0.1:9"}}}}]
            users: [{{name: hubops, user: {{token: not-a-token}}}}]
            contexts: [{{name: {CONTEXT}, context: {{cluster: lab, user: hubops}}}}]
            current-context: {CONTEXT}
            """
        )
    )
    # kubernetes_asyncio reads $KUBECONFIG when it is imported, which is before this fixture
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    return path


def section_classes(config: Config) -> dict[str, type[Configurable]]:
    """Section name -> the class of the chart's hub that reads it."""
    app = JupyterHub(config=config)
    candidates = [JupyterHub, app.authenticator_class, KubeSpawner]
    found: dict[str, type[Configurable]] = {}
    for section in config:
        owner = next(
            (cls for cls in candidates if section in (c.__name__ for c in cls.mro())), None
        )
        assert owner is not None, f"hub.config.{section} is no class the chart's hub runs"
        found[section] = owner
    return found


def _instance(cls: type[Configurable], config: Config) -> Configurable:
    if cls is not KubeSpawner:
        return cls(config=config)

    async def spawner() -> KubeSpawner:  # its API client wants a running event loop
        return KubeSpawner(config=config, _mock=True)

    return asyncio.run(spawner())


def trait_problems(config: Config) -> list[str]:
    """Names that are no configurable trait of their section's class, values the trait
    rejects, and values an instance configured with them does not hold."""
    problems: list[str] = []
    classes = section_classes(config)
    for section, cls in classes.items():
        known = cls.class_traits(config=True)
        bare = _instance(cls, Config())
        for name, value in config[section].items():
            if name not in known:
                problems.append(f"{section}.{name}: no such trait on {cls.__name__}")
                continue
            try:
                known[name].validate(bare, copy.deepcopy(value))
            except Exception as exc:
                problems.append(f"{section}.{name}: {value!r} rejected: {exc}")
    if problems:
        return problems
    made = {cls: _instance(cls, config) for cls in set(classes.values())}
    for section, cls in classes.items():
        obj, known = made[cls], cls.class_traits(config=True)
        for name, value in config[section].items():
            valid = known[name].validate(obj, copy.deepcopy(value))
            if getattr(obj, name) != valid:
                held = getattr(obj, name)
                problems.append(f"{section}.{name}: configured {valid!r}, holds {held!r}")
    return problems


def hub_config(env: environments.LoadedEnvironment) -> Config:
    merged = helm_merge(chart_defaults(), values(env.settings, REVS))
    return Config(copy.deepcopy(merged["hub"]["config"]))


@pytest.mark.parametrize("auth", list(AUTHS))
def test_hub_config_is_known_to_the_charts_classes(
    checkout: Checkout, auth: str, kubeconfig: Path
) -> None:
    """Each hub.config section is a class of the chart's hub, each trait one of that class,
    and each value one the trait accepts and the instance takes."""
    problems = trait_problems(hub_config(load(checkout, auth)))
    assert problems == []


@pytest.mark.parametrize(
    ("section", "name", "value", "expected"),
    [
        ("GenericOAuthenticator", "client_idd", "x", "no such trait"),
        ("GenericOAuthenticator", "allow_all", "yes please", "rejected"),
        ("KubeSpawner", "http_timout", 120, "no such trait"),
    ],
)
def test_the_trait_check_fails_for_unknown_names_and_bad_values(
    checkout: Checkout, kubeconfig: Path, section: str, name: str, value: Any, expected: str
) -> None:
    """Traitlets only warns about an unknown name; the check above must fail for it."""
    config = hub_config(load(checkout))
    config[section][name] = value
    problems = trait_problems(config)
    assert any(f"{section}.{name}" in p and expected in p for p in problems), problems


@pytest.mark.parametrize(
    ("auth", "entry_point", "cls", "expected"),
    [
        (
            "gitlab",
            "generic-oauth",
            "GenericOAuthenticator",
            {
                "userdata_url": "https://gitlab.lab.example.org/oauth/userinfo",
                "username_claim": "nickname",
                "auth_state_groups_key": "oauth_user.groups",
                "allowed_groups": {"ml-lab"},
                "manage_groups": True,
                "scope": ["read_user", "openid"],
            },
        ),
        (
            "gitlab-no-groups",
            "gitlab",
            "GitLabOAuthenticator",
            {"gitlab_url": "https://gitlab.lab.example.org", "allowed_users": {"bob"}},
        ),
        (
            "github",
            "github",
            "GitHubOAuthenticator",
            {
                "allowed_organizations": {"lab-org", "lab-org:ml-team"},
                "scope": ["read:user", "read:org"],
            },
        ),
        (
            "oidc",
            "generic-oauth",
            "GenericOAuthenticator",
            {
                "token_url": "https://idp.lab.example.org/realms/lab/token",
                "auth_state_groups_key": "oauth_user.roles",
                "allowed_groups": {"ml-lab"},
            },
        ),
    ],
)
def test_each_login_maps_to_a_stock_authenticator_that_reads_the_secret_from_the_secret(
    checkout: Checkout,
    monkeypatch: pytest.MonkeyPatch,
    auth: str,
    entry_point: str,
    cls: str,
    expected: dict[str, Any],
) -> None:
    """The authenticator has the settings, the admins are in the admin role, and its client
    secret comes from OAUTH_CLIENT_SECRET, which hub.extraEnv takes from the Secret."""
    env = load(checkout, auth)
    v = values(env.settings, REVS)
    hub = v["hub"]
    assert hub["config"]["JupyterHub"]["authenticator_class"] == entry_point
    for var in ("GITLAB_CLIENT_SECRET", "GITHUB_CLIENT_SECRET"):  # would win over ours
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OAUTH_CLIENT_SECRET", "FAKE-from-the-secret")
    config = Config(copy.deepcopy(hub["config"]))
    authenticator = JupyterHub(config=config).authenticator_class(config=config)
    assert type(authenticator).__name__ == cls
    for name, value in expected.items():
        assert getattr(authenticator, name) == value, name
    assert authenticator.client_secret == "FAKE-from-the-secret", "OAUTH_CLIENT_SECRET unread"
    assert hub["extraEnv"]["OAUTH_CLIENT_SECRET"] == {
        "valueFrom": {"secretKeyRef": {"name": "hubops-oauth", "key": "oauth_client_secret"}}
    }
    assert hub["loadRoles"]["admin"]["users"] == ["alice"]


def test_the_profile_list_works_in_kubespawner(checkout: Checkout, kubeconfig: Path) -> None:
    """A user who picks the PyTorch image and 2 MIG slices gets them, on the labelled nodes,
    with the profile's limits: through KubeSpawner's own form handling."""
    v = values(load(checkout).settings, REVS)
    profiles = v["singleuser"]["profileList"]
    assert [p["display_name"] for p in profiles] == ["Python + JupyterLab", "PyTorch (CUDA)"]
    for p in profiles:
        unknown = set(p["kubespawner_override"]) - set(KubeSpawner.class_trait_names(config=True))
        assert not unknown, f"kubespawner_override names no KubeSpawner trait: {unknown}"
        for choice in p["profile_options"]["gpus"]["choices"].values():
            keys = set(choice["kubespawner_override"])
            assert keys <= set(KubeSpawner.class_trait_names(config=True)), keys

    async def spawn_options() -> KubeSpawner:
        spawner = KubeSpawner(
            config=Config({"KubeSpawner": {"profile_list": profiles}}), _mock=True
        )
        spawner.user_options = spawner.options_from_form(
            {"profile": ["pytorch-cuda"], "profile-option-pytorch-cuda--gpus": ["2"]}
        )
        await spawner.load_user_options()
        return spawner

    spawner = asyncio.run(spawn_options())
    assert spawner.image == "registry.lab.example.org:5000/hubops/singleuser:pytorch-0123abcd4567"
    assert spawner.extra_resource_limits == {"nvidia.com/mig-1g.10gb": 2}
    assert spawner.node_selector == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB"}
    assert spawner.mem_limit == 32 * GIB
    assert spawner.cpu_limit == 8


def test_tls_storage_network_and_tolerations(checkout: Checkout) -> None:
    """TLS from the Secret (no key in the values), a volume per user, egress to the internet
    and the allowed private host only, the GPU nodes' taint tolerated."""
    v = values(load(checkout).settings, REVS)
    assert v["proxy"]["https"] == {
        "enabled": True,
        "type": "secret",
        "secret": {"name": "jupyter-lab-tls"},
    }
    su = v["singleuser"]
    assert su["storage"] == {
        "type": "dynamic",
        "capacity": "50Gi",
        "homeMountPath": "/home/jovyan/work",
        "dynamic": {"storageClass": "ceph-rbd"},
        # /dev/shm: half of singleuser.mem_limit (8G) in memory, as z2jh mounts one
        "extraVolumes": [{"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "4G"}}],
        "extraVolumeMounts": [{"name": "shm", "mountPath": "/dev/shm"}],
    }
    # the volume is the user's whole home, and the image's own CMD starts the server
    assert su["extraEnv"]["HOME"] == su["storage"]["homeMountPath"]
    assert su["cmd"] is None
    assert su["extraTolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    policy = su["networkPolicy"]
    assert policy["enabled"] is True
    assert policy["egressAllowRules"]["privateIPs"] is False
    assert policy["egressAllowRules"]["nonPrivateIPs"] is False  # its except-list is shorter
    assert policy["egress"] == [
        {
            "to": [
                {
                    "ipBlock": {
                        "cidr": "0.0.0.0/0",
                        "except": [
                            "10.0.0.0/8",
                            "172.16.0.0/12",
                            "192.168.0.0/16",
                            "100.64.0.0/10",
                            "169.254.0.0/16",
                        ],
                    }
                }
            ]
        },
        {"to": [{"ipBlock": {"cidr": "10.1.2.3/32"}}]},
    ]
    assert v["imagePullSecrets"] == ["lab-registry"]
    assert v["cull"] == {"enabled": True, "timeout": 3600, "every": 300, "maxAge": 0}
    assert v["singleuser"]["memory"] == {"limit": "8G", "guarantee": "1G"}


def small_variant() -> dict[str, Any]:
    """The other branches: one image and no GPU (no profile list), a small memory limit, no
    egress, no culling, shared data from a claim, PostgreSQL, a NodePort Service."""
    data = kubernetes_lab("oidc")
    data["singleuser"] = {"image": "base", "mem_limit": "512M"}
    data["gpu"] = {"policy": "none"}
    data["network"] = {"egress": "none"}
    data["culling"] = {"enabled": False}
    data["kubernetes"].update(
        service_type="NodePort",
        shared_data_claim="lab-datasets",
        db="postgres",
        db_url="postgresql://hub@db.lab.example.org:5432/jupyterhub",
        db_password_secret="hub-db",
    )
    return data


def test_the_other_branches_pass_the_schema_and_the_classes(
    checkout: Checkout, kubeconfig: Path
) -> None:
    write_env(checkout, "small", small_variant())
    env = environments.load(checkout.root, "small")
    v = values(env.settings, REVS)
    assert schema_errors(v) == []
    assert (
        trait_problems(Config(copy.deepcopy(helm_merge(chart_defaults(), v)["hub"]["config"])))
        == []
    )
    su = v["singleuser"]
    assert "profileList" not in su, "nothing to choose: no profile list"
    assert su["image"] == {
        "name": "registry.lab.example.org:5000/hubops/singleuser",
        "tag": "base-0123abcd4567",
    }
    assert su["memory"] == {"limit": "512M", "guarantee": "512M"}, "a request above the limit"
    assert su["networkPolicy"]["egress"] == []
    assert su["storage"]["extraVolumes"] == [
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "256M"}},
        {
            "name": "shared-data",
            "persistentVolumeClaim": {"claimName": "lab-datasets", "readOnly": True},
        },
    ], "/dev/shm: half of the 512M limit; the shared data beside it"
    assert su["storage"]["extraVolumeMounts"] == [
        {"name": "shm", "mountPath": "/dev/shm"},
        {"name": "shared-data", "mountPath": "/home/jovyan/shared", "readOnly": True},
    ]
    assert v["hub"]["db"] == {
        "type": "postgres",
        "url": "postgresql://hub@db.lab.example.org:5432/jupyterhub",
    }
    assert v["hub"]["extraEnv"]["PGPASSWORD"] == {
        "valueFrom": {"secretKeyRef": {"name": "hub-db", "key": "db_password"}}
    }
    assert v["proxy"]["service"] == {"type": "NodePort"}
    assert v["cull"] == {"enabled": False}


# --- render and deploy -----------------------------------------------------------------------


def test_render_writes_values_yaml_without_secrets(checkout: Checkout) -> None:
    """`invoke render` writes build/k8s/values.yaml only; the client secret stays out."""
    write_env(checkout, "k8s", kubernetes_lab())
    (checkout.root / "config" / "secrets" / "k8s.yaml").write_text(
        "oauth_client_secret: FAKE-client-secret-2c41\nregistry_password: FAKE-registry-9d\n"
    )
    result = run_invoke(checkout, "render", "--env", "k8s")
    assert result.returncode == 0, result.stderr
    out = checkout.root / "build" / "k8s"
    assert sorted(p.name for p in out.iterdir()) == ["values.yaml"]
    text = (out / "values.yaml").read_text()
    assert "FAKE-" not in text, "a secret value reached values.yaml"
    assert yaml.safe_load(text)["hub"]["extraEnv"]["OAUTH_CLIENT_SECRET"]["valueFrom"]


class FakeHelm:
    """A `helm` executable that records its arguments and answers `get values` with stored
    values (or "release: not found"). No cluster can run on this machine, so this stands in
    for helm; what it checks is the command hubops runs and what hubops makes of the answer."""

    SCRIPT = """\
import json, pathlib, sys
here = pathlib.Path(sys.argv[0]).resolve().parent.parent
with open(here / "calls.jsonl", "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
if sys.argv[1:3] == ["get", "values"]:
    deployed = here / "deployed.yaml"
    if not deployed.exists():
        sys.exit("Error: release: not found")
    print(deployed.read_text())
sys.exit(int((here / "exit-code").read_text()))
"""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "bin").mkdir(parents=True)
        helm = root / "bin" / "helm"
        helm.write_text(f"#!{sys.executable}\n{self.SCRIPT}")
        helm.chmod(helm.stat().st_mode | stat.S_IEXEC)
        self.kubeconfig = root / "kubeconfig"
        self.kubeconfig.write_text(f"contexts:\n- name: other\n- name: {CONTEXT}\n")

    def environ(self, deployed: dict[str, Any] | None = None, exit_code: int = 0) -> dict[str, str]:
        if deployed is not None:
            (self.root / "deployed.yaml").write_text(yaml.safe_dump(deployed))
        (self.root / "exit-code").write_text(str(exit_code))
        return {
            "PATH": str(self.root / "bin"),
            "KUBECONFIG": str(self.kubeconfig),
            "HOME": str(self.root),
        }

    def calls(self) -> list[list[str]]:
        log = self.root / "calls.jsonl"
        return [json.loads(ln) for ln in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def fake_helm(tmp_path: Path) -> FakeHelm:
    return FakeHelm(tmp_path / "fake-helm")


EXPECTED_HELM = [
    *("upgrade", "--install", "jupyterhub", "jupyterhub"),
    *("--repo", "https://hub.jupyter.org/helm-chart/", "--version", "4.4.0"),
    *("--namespace", "jupyterhub", "--create-namespace", "--kube-context", CONTEXT),
    *("--values", "build/k8s/values.yaml", "--atomic", "--wait", "--timeout", "20m0s"),
]


def test_deploy_without_helm_says_what_is_missing(checkout: Checkout, tmp_path: Path) -> None:
    """No helm on PATH: one error that says to install it, before anything runs."""
    env = load(checkout)
    with pytest.raises(DeployError, match=r"helm is not on PATH; install Helm 3") as err:
        deploy(checkout.root, env, REVS, environ={"PATH": str(tmp_path / "empty")})
    assert "\n" not in str(err.value)


def test_deploy_with_an_unknown_context_names_the_known_ones(
    checkout: Checkout, fake_helm: FakeHelm
) -> None:
    data = kubernetes_lab()
    data["kubernetes"]["context"] = "prod"
    write_env(checkout, "k8s", data)
    env = environments.load(checkout.root, "k8s")
    with pytest.raises(DeployError, match=r"kubernetes.context 'prod' is not a context") as err:
        deploy(checkout.root, env, REVS, environ=fake_helm.environ())
    assert f"other, {CONTEXT}" in str(err.value)
    assert fake_helm.calls() == [], "helm must not run"


def test_deploy_runs_one_helm_upgrade_install(checkout: Checkout, fake_helm: FakeHelm) -> None:
    """The release is installed or upgraded by one helm command, atomically, from the chart
    4.4.0 of the z2jh repository, into the environment's namespace and context."""
    env = load(checkout)
    lines = deploy(checkout.root, env, REVS, environ=fake_helm.environ())
    assert fake_helm.calls() == [EXPECTED_HELM]
    assert "release jupyterhub in namespace jupyterhub" in lines[-1]
    assert (checkout.root / "build" / "k8s" / "values.yaml").is_file()


def test_a_failed_helm_is_one_error(checkout: Checkout, fake_helm: FakeHelm) -> None:
    env = load(checkout)
    with pytest.raises(DeployError, match=r"failed with exit code 1; helm was asked \(--atomic\)"):
        deploy(checkout.root, env, REVS, environ=fake_helm.environ(exit_code=1))


def test_dry_run_shows_the_command_and_the_change_of_values(
    checkout: Checkout, fake_helm: FakeHelm
) -> None:
    """A dry run asks helm for the deployed values only, and prints the command and a unified
    diff from them to the new values."""
    env = load(checkout)
    before = values(env.settings, REVS)
    before["singleuser"]["memory"]["limit"] = "4G"
    lines = deploy(checkout.root, env, REVS, dry_run=True, environ=fake_helm.environ(before))
    text = "\n".join(lines)
    assert fake_helm.calls() == [
        [
            *("get", "values", "jupyterhub", "--namespace", "jupyterhub"),
            *("--kube-context", CONTEXT, "--output", "yaml"),
        ]
    ]
    assert "would run: helm upgrade --install jupyterhub jupyterhub" in text
    assert "--- jupyterhub (deployed)" in text
    assert "-    limit: 4G" in lines, text
    assert "+    limit: 8G" in lines, text
    changed = [ln for ln in lines if ln[:1] in "+-" and ln[:3] not in ("+++", "---")]
    assert len(changed) == 2, f"only the limit changed: {changed}"


def test_dry_run_of_a_first_deploy_shows_every_value_as_new(
    checkout: Checkout, fake_helm: FakeHelm
) -> None:
    env = load(checkout)
    lines = deploy(checkout.root, env, REVS, dry_run=True, environ=fake_helm.environ())
    assert "  compared with: none deployed (Error: release: not found)" in lines
    assert any(ln.strip() == "+      authenticator_class: generic-oauth" for ln in lines), lines


def test_dry_run_works_without_helm(checkout: Checkout, tmp_path: Path) -> None:
    env = load(checkout)
    lines = deploy(checkout.root, env, REVS, dry_run=True, environ={"PATH": str(tmp_path)})
    assert "  compared with: helm is not on PATH, so the deployed values are unknown" in lines


def test_invoke_deploy_dry_run_and_without_helm(
    checkout: Checkout, fake_helm: FakeHelm, tmp_path: Path
) -> None:
    """`invoke deploy` takes the kubernetes path: --dry-run prints the plan; without helm a
    deploy is one line on stderr and exit code 1."""
    write_env(checkout, "k8s", kubernetes_lab())
    result = run_invoke(checkout, "deploy", "--dry-run", "--env", "k8s", env=fake_helm.environ())
    assert result.returncode == 0, result.stderr
    assert "would run: helm upgrade --install jupyterhub jupyterhub" in result.stdout
    empty = tmp_path / "no-helm"
    empty.mkdir()
    result = run_invoke(checkout, "deploy", "--env", "k8s", env={"PATH": str(empty)})
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1
    assert len(lines) == 1, lines
    assert "helm is not on PATH" in lines[0], lines


# --- settings the chart cannot express -------------------------------------------------------


BAD = [
    (
        "gpu.queue_timeout",
        {"gpu": {"policy": "exclusive", "queue_timeout": 300}},
        "queue_timeout: 300",
        ("got 300", "waits Pending", "no place in line", "remove it"),
    ),
    (
        "hub.concurrent_starts",
        {"hub": {"concurrent_starts": 4}},
        "concurrent_starts: 4",
        ("got 4", "kubelets pace them", "remove hub.concurrent_starts"),
    ),
    (
        "gpu.policy",
        {"gpu": {"policy": "shared", "max_per_gpu": 2}},
        "policy: shared",
        ("got 'shared' with cluster kubernetes", "time-slicing", "gpu.policy: exclusive"),
    ),
    (
        "auth.type",
        {"auth": {"type": "shared-password"}},
        "type: shared-password",
        ("got 'shared-password'", "refused on purpose", "gitlab, github or oidc"),
    ),
    (
        "registry.url",
        {"registry": {"url": None}},
        None,
        ("got None with cluster kubernetes", "nodes pull", "invoke build push"),
    ),
    (
        "singleuser.profiles.0.groups",
        {"profiles_groups": ["staff"]},
        "    groups:",  # the profile's, not auth.allowed_groups
        ("got ['staff']", "no z2jh equivalent", "profile_list offers every profile"),
    ),
    (
        "paths.user_data_dir",
        {"paths": {"user_data_dir": "/data/users"}},
        "user_data_dir:",
        ("got '/data/users'", "no z2jh equivalent", "kubernetes.storage_capacity"),
    ),
    (
        "tls.enabled",
        {"tls": {"enabled": True, "cert": "/c.pem", "key": "/k.pem"}},
        "enabled: true",
        ("got True", "kubernetes.tls_secret", "kubectl create secret tls"),
    ),
    (
        "auth.issuer",
        {"oidc_issuer_only": True},
        "issuer:",
        ("no OpenID discovery", "auth.authorize_url", "invoke check"),
    ),
    (
        "singleuser.pids_limit",
        {"singleuser": {"pids_limit": 8192}},
        "pids_limit:",
        ("got 8192", "no z2jh equivalent", "podPidsLimit"),
    ),
    (
        "kubernetes.db_url",
        {"kubernetes": {"db": "postgres", "db_url": "postgresql://hub:s3cret@db/jupyterhub"}},
        "db_url:",
        ("holds a password", "kubernetes.db_password_secret"),
    ),
    (
        "kubernetes.context",
        {"kubernetes": {"context": None}},
        None,
        ("got None", "kubectl config get-contexts"),
    ),
    (
        "kubernetes.db",
        {"kubernetes": {"db": "postgres"}},
        "db: postgres",
        ("postgres but kubernetes.db_url is not set",),
    ),
]


def bad_variant(change: dict[str, Any]) -> dict[str, Any]:
    data = kubernetes_lab()
    for key, value in change.items():
        if key == "profiles_groups":
            data["singleuser"]["profiles"][0]["groups"] = value
        elif key == "oidc_issuer_only":
            data["auth"] = {k: v for k, v in AUTHS["oidc"].items() if not k.endswith("_url")}
        elif key == "auth":
            data["auth"] = value
        elif key == "singleuser":
            data["singleuser"].update(value)
        else:
            data.setdefault(key, {}).update(value)
            data[key] = {k: v for k, v in data[key].items() if v is not None}
    return data


@pytest.mark.parametrize(("key", "change", "line_of", "expect"), BAD, ids=[b[0] for b in BAD])
def test_a_setting_without_equivalent_is_one_line(
    checkout: Checkout,
    key: str,
    change: dict[str, Any],
    line_of: str | None,
    expect: tuple[str, ...],
) -> None:
    """cluster kubernetes with a setting the chart cannot express: one line with the file and
    line, the key, the value, why, and what to do."""
    write_env(checkout, "bad", bad_variant(change))
    with pytest.raises(ConfigError) as err:
        environments.load(checkout.root, "bad")
    message = str(err.value)
    assert "\n" not in message, message
    assert "s3cret" not in message, "an error must not show a password"
    assert f": {key}: " in message, message
    if line_of is not None:
        text = checkout.read_env("bad").splitlines()
        line = next(i for i, t in enumerate(text, 1) if line_of in t)
        assert f"config/environments/bad.yaml:{line}:" in message, message
    for part in expect:
        assert part in message, f"{part!r} is not in: {message}"


def test_the_cli_prints_the_one_line(checkout: Checkout) -> None:
    write_env(
        checkout, "bad", bad_variant({"gpu": {"policy": "pinned", "pinned_users": {"a": [0]}}})
    )
    result = run_invoke(checkout, "check", "--env", "bad")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1
    assert len(lines) == 1, lines
    assert "gpu.policy: got 'pinned' with cluster kubernetes" in lines[0]


def test_the_same_settings_stay_fine_with_cluster_docker(checkout: Checkout) -> None:
    """The refusals are kubernetes' only: lab.yaml (GPU pool, host paths, SSH) loads."""
    assert environments.load(checkout.root, "lab").settings.cluster == "docker"


# --- the mapping table -----------------------------------------------------------------------


def _models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if get_origin(annotation) is dict:
        return []
    if get_origin(annotation) in (list, Union, types.UnionType) or get_args(annotation):
        return [m for a in get_args(annotation) for m in _models(a)]
    return []


def leaf_settings(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every key an environment file can set that holds a value, not a section."""
    keys: set[str] = set()
    for name, info in model.model_fields.items():
        nested = _models(info.annotation)
        key = prefix + name + ("[]" if nested and get_origin(info.annotation) is list else "")
        if not nested:
            keys.add(key)
        for sub in nested:
            keys |= leaf_settings(sub, key + ".")
    return keys


def test_the_table_has_every_setting_and_no_other() -> None:
    """The mapping table cannot go stale: a new setting must say what it is in the chart."""
    leaves = leaf_settings(Environment)
    in_table = [row.setting for row in TABLE]
    assert len(in_table) == len(set(in_table)), "a setting is in the table twice"
    assert sorted(leaves - set(in_table)) == [], "settings missing from hubops.config.z2jh.TABLE"
    assert sorted(set(in_table) - leaves) == [], "rows for settings that do not exist"
    assert "singleuser.profiles[].gpu_kind" in leaves, "the walk reaches into lists"


def test_mapping_markdown_is_one_row_per_setting() -> None:
    text = mapping_markdown()
    rows = [ln for ln in text.splitlines() if ln.startswith("| `")]
    assert len(rows) == len(TABLE)
    for row in rows:  # three cells: escaped pipes inside a cell do not count
        assert row.replace("\\|", "").count("|") == 4, row
    none_rows = [ln for ln in rows if "| no equivalent |" in ln]
    assert len(none_rows) == len(no_equivalent())
    assert "| `gpu.pool` | no equivalent |" in text
    assert "| `hub.concurrent_spawn_limit` | hub.concurrentSpawnLimit |" in text


def test_every_row_without_equivalent_says_why_and_what_to_do() -> None:
    for row in no_equivalent():
        assert row.why, f"{row.setting}: an error that does not say why"
        assert row.fix, f"{row.setting}: an error that does not say what to do"


def test_settings_file_imports_without_a_cycle() -> None:
    """hubops.config.settings loads hubops.plan.z2jh only inside the validator."""
    code = "import hubops.config.settings, sys; assert 'hubops.plan.z2jh' not in sys.modules"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
