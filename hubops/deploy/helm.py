"""cluster kubernetes: build/<env>/values.yaml -> the zero-to-jupyterhub release, with helm.

Order of a deploy: validate the environment and render its values (hubops.plan.render), make sure
helm is on PATH and kubernetes.context is a context of kubectl's config, then one
``helm upgrade --install --atomic --wait``; helm itself rolls a failed upgrade back. A dry run
changes nothing: it prints the helm command and a unified diff between the values the release
runs with now (``helm get values``; none when helm, the cluster or the release is absent) and
the new ones.

What a deploy must run is computed by pure functions (:func:`helm_command`,
:func:`kube_contexts`, :func:`values_diff`); only :func:`deploy` and :func:`deployed_values`
run programs.
"""

from __future__ import annotations

import difflib
import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from hubops.config.environments import LoadedEnvironment
from hubops.config.settings import KubernetesSettings
from hubops.config.z2jh import Z2JH_CHART_NAME, Z2JH_CHART_REPO, Z2JH_CHART_VERSION
from hubops.errors import DeployError
from hubops.plan.render import render_values
from hubops.plan.z2jh import PlainDumper

HELM_INSTALL_HINT = "install Helm 3 (https://helm.sh/docs/intro/install/)"
# The chart's pre-upgrade hook pulls the users' images on every node first (prePuller.hook),
# and CUDA images are several GB: helm's default of 5 minutes would roll a first deploy back.
HELM_TIMEOUT = "20m0s"


def helm_command(k: KubernetesSettings, values_file: Path) -> list[str]:
    """The one command that installs or upgrades the release."""
    assert k.context is not None, "required by the settings with cluster kubernetes"
    return [
        *("helm", "upgrade", "--install", k.release, Z2JH_CHART_NAME),
        *("--repo", Z2JH_CHART_REPO, "--version", Z2JH_CHART_VERSION),
        *("--namespace", k.namespace, "--create-namespace", "--kube-context", k.context),
        *("--values", str(values_file), "--atomic", "--wait", "--timeout", HELM_TIMEOUT),
    ]


def get_values_command(k: KubernetesSettings) -> list[str]:
    assert k.context is not None
    return [
        *("helm", "get", "values", k.release, "--namespace", k.namespace),
        *("--kube-context", k.context, "--output", "yaml"),
    ]


def kubeconfig_files(environ: Mapping[str, str]) -> list[Path]:
    """Where kubectl and helm read contexts from: $KUBECONFIG (a path list) or ~/.kube/config."""
    listed = environ.get("KUBECONFIG", "")
    if listed:
        return [Path(p).expanduser() for p in listed.split(os.pathsep) if p]
    return [Path(environ.get("HOME", str(Path.home()))) / ".kube" / "config"]


def kube_contexts(files: list[Path]) -> list[str]:
    """The names of the contexts in kubectl's config files (missing files count as empty)."""
    names: list[str] = []
    for path in files:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            continue
        contexts = data.get("contexts") if isinstance(data, dict) else None
        for ctx in contexts if isinstance(contexts, list) else []:
            if isinstance(ctx, dict) and isinstance(ctx.get("name"), str):
                names.append(ctx["name"])
    return list(dict.fromkeys(names))


def _normalized(data: Any) -> str:
    """Values as YAML with sorted keys, so that order never shows as a change."""
    if not data:
        return ""
    return yaml.dump(data, Dumper=PlainDumper, sort_keys=True, allow_unicode=True)


def values_diff(current: Any, new: Any, release: str) -> str:
    """A unified diff from the release's values to the new ones ("" when they are equal)."""
    lines = difflib.unified_diff(
        _normalized(current).splitlines(keepends=True),
        _normalized(new).splitlines(keepends=True),
        fromfile=f"{release} (deployed)",
        tofile=f"{release} (new)",
    )
    return "".join(lines)


def deployed_values(k: KubernetesSettings, helm: str | None) -> tuple[Any, str]:
    """The values the release runs with now, and where they came from (none: why)."""
    if helm is None:
        return None, "helm is not on PATH, so the deployed values are unknown"
    command = get_values_command(k)
    result = subprocess.run(
        [helm, *command[1:]], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        why = (result.stderr or result.stdout).strip().splitlines()
        return None, f"none deployed ({why[-1] if why else f'exit code {result.returncode}'})"
    try:
        return yaml.safe_load(result.stdout), "the values the release runs with now"
    except yaml.YAMLError as exc:
        raise DeployError(
            f"`{shlex.join(command)}` printed values that are not YAML: {exc}"
        ) from None


def _preflight(env: LoadedEnvironment, environ: Mapping[str, str]) -> str:
    """helm's path; or a DeployError that says what is missing and how to get it."""
    k = env.settings.kubernetes
    helm = shutil.which("helm", path=environ.get("PATH"))
    if helm is None:
        raise DeployError(
            f"{env.name}: helm is not on PATH; {HELM_INSTALL_HINT} on this machine, then run "
            f"invoke deploy --env {env.name} again (--dry-run works without it)"
        )
    files = kubeconfig_files(environ)
    contexts = kube_contexts(files)
    if k.context not in contexts:
        where = os.pathsep.join(str(f) for f in files)
        raise DeployError(
            f"{env.name}: kubernetes.context {k.context!r} is not a context of kubectl's config "
            f"({where}: {', '.join(contexts) or 'no contexts'}); add the cluster's credentials "
            "(e.g. with your provider's CLI) or set kubernetes.context to one of those"
        )
    return helm


def deploy(
    repo_root: Path,
    env: LoadedEnvironment,
    revs: Mapping[str, str],
    dry_run: bool = False,
    environ: Mapping[str, str] | None = None,
) -> list[str]:
    """Render the values and install or upgrade the release (dry run: show what would run and
    what would change). Returns the lines to print."""
    environ = os.environ if environ is None else environ
    k = env.settings.kubernetes
    helm = None if dry_run else _preflight(env, environ)  # before anything is written
    values_file = render_values(repo_root, env, revs)
    command = helm_command(k, values_file.relative_to(repo_root))
    if dry_run:
        current, source = deployed_values(k, shutil.which("helm", path=environ.get("PATH")))
        new = yaml.safe_load(values_file.read_text(encoding="utf-8"))
        diff = values_diff(current, new, k.release)
        return [
            f"dry run, {env.name}: nothing was changed",
            f"  would run: {shlex.join(command)}",
            f"  compared with: {source}",
            *(diff.rstrip("\n").splitlines() if diff else ["  values: no change"]),
        ]
    assert helm is not None
    result = subprocess.run([helm, *command[1:]], cwd=repo_root, check=False)
    if result.returncode != 0:
        raise DeployError(
            f"{env.name}: `{shlex.join(command)}` failed with exit code {result.returncode}; "
            "helm was asked (--atomic) to roll the release back to its previous revision; "
            "its output above says why it failed"
        )
    return [f"{env.name}: release {k.release} in namespace {k.namespace} ({k.context}) is up"]
