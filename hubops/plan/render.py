"""Plan -> files in build/<env>/: jupyterhub_config.py (Jinja2) and plan.json; with cluster
kubernetes, the chart's values.yaml instead (:func:`render_values`, from hubops.plan.z2jh).

Templates only place values, and every value goes through one of three filters: ``py`` (plain
data as a Python literal), ``ident`` (a dotted Python name) and ``comment`` (one line of text in
a comment). An expression without one of them is an error at render time (Jinja2's
``finalize``), so no value can break the file or inject code, in comments neither.
"""

from __future__ import annotations

import json
import math
import os
import pprint
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from hubops.config.environments import LoadedEnvironment
from hubops.plan.containers import plan
from hubops.plan.hub_config import hub_config
from hubops.plan.model import CONFIG_FILE, HubConfig, Plan
from hubops.plan.z2jh import values_yaml

BUILD_DIR = Path("build")
PLAN_FILE = "plan.json"
VALUES_FILE = "values.yaml"


def _check_plain(value: Any) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise TypeError(f"cannot place a non-finite number into a config file: {value!r}")
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, list):
        for item in value:
            _check_plain(item)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"cannot place a {type(key).__name__} key into a config file")
            _check_plain(item)
        return
    raise TypeError(f"cannot place {type(value).__name__} into a config file: {value!r}")


def py_literal(value: Any) -> str:
    """Plain data (None, bool, int, float, str, list, dict) as a Python literal.

    repr() of these types is a literal that ``ast.literal_eval`` reads back unchanged, whatever
    quotes, backslashes or newlines a string holds. Anything else is a bug in the caller.
    """
    _check_plain(value)
    return pprint.pformat(value, width=96, sort_dicts=False)


class Placed(str):
    """Text a filter has made safe for its place in the file."""


def py_filter(value: Any) -> Placed:
    return Placed(py_literal(value))


def py_args_filter(values: Any) -> Placed:
    """Call arguments: each a Python literal."""
    return Placed(", ".join(py_literal(v) for v in values))


def ident_filter(value: Any) -> Placed:
    """A Python name or dotted module path, as it is."""
    if not isinstance(value, str) or not all(p.isidentifier() for p in value.split(".")):
        raise TypeError(f"cannot place {value!r} as a Python name")
    return Placed(value)


def comment_filter(value: Any) -> Placed:
    """Text for a comment line: printable characters only, so it cannot end the comment."""
    if not isinstance(value, str) or not value.isprintable():
        raise TypeError(f"cannot place {value!r} into a comment: it holds a line break")
    return Placed(value)


def _finalize(value: Any) -> Placed:
    if not isinstance(value, Placed):
        raise TypeError(
            f"template bug: {value!r} reaches the file without a filter that places it "
            "(py, py_args, ident or comment)"
        )
    return value


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        finalize=_finalize,
        loader=jinja2.PackageLoader("hubops.plan", "templates"),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        py=py_filter, py_args=py_args_filter, ident=ident_filter, comment=comment_filter
    )
    return env


def render_config(config: HubConfig) -> str:
    template = _environment().get_template(f"{CONFIG_FILE}.j2")
    return template.render(**config.model_dump())


@dataclass(frozen=True)
class Rendered:
    directory: Path
    files: tuple[Path, ...]
    plan: Plan


def render(
    repo_root: Path,
    env: LoadedEnvironment,
    revs: Mapping[str, str],
    digests: Mapping[str, str] | None = None,
) -> Rendered:
    """Write build/<env>/ for one environment, each file atomically. With ``digests`` (what
    `invoke push` verified) every image is referenced by digest."""
    out = repo_root / BUILD_DIR / env.name
    out.mkdir(parents=True, exist_ok=True)
    config = render_config(hub_config(env.name, env.settings, revs, digests))
    the_plan = plan(env.name, env.settings, revs, digests)
    files = (
        _write(out / CONFIG_FILE, config),
        _write(out / PLAN_FILE, json.dumps(the_plan.model_dump(), indent=2) + "\n"),
    )
    return Rendered(directory=out, files=files, plan=the_plan)


def render_values(repo_root: Path, env: LoadedEnvironment, revs: Mapping[str, str]) -> Path:
    """cluster kubernetes: write build/<env>/values.yaml, the zero-to-jupyterhub chart's values
    (no secret: they name the cluster's Secrets). The hub runs from the chart's image, so
    there is no jupyterhub_config.py and no container plan to write."""
    out = repo_root / BUILD_DIR / env.name
    out.mkdir(parents=True, exist_ok=True)
    return _write(out / VALUES_FILE, values_yaml(env.name, env.settings, revs))


def _write(path: Path, text: str) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path
