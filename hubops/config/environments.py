"""Find, read and validate environment files.

``config/environments/<name>.yaml`` is one deployment. Files whose name starts with ``_`` are
bases that environments ``extends:``; they are not environments themselves. Every error names
the file and line, the key path, the value given, what is expected, and what to do.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from hubops.config.settings import Environment
from hubops.config.z2jh import misfit
from hubops.errors import ConfigError, RuleError

ENV_DIR = Path("config") / "environments"
ENV_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")

KeyPath = tuple[str, ...]


@dataclass(frozen=True)
class Origin:
    """Where a value was written: file and 1-based line."""

    file: Path
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class LoadedEnvironment:
    """A validated environment and where each of its values came from."""

    name: str
    settings: Environment
    files: tuple[Path, ...]
    origins: Mapping[KeyPath, Origin] = field(repr=False)

    @property
    def file(self) -> Path:
        return self.files[-1]


def env_dir(repo_root: Path) -> Path:
    return repo_root / ENV_DIR


def available(repo_root: Path) -> list[str]:
    """Names of the environments in config/environments/ (bases excluded), sorted."""
    return sorted(p.stem for p in env_dir(repo_root).glob("*.yaml") if not p.name.startswith("_"))


def load(repo_root: Path, name: str) -> LoadedEnvironment:
    """Read, merge and validate one environment, or raise one ConfigError that says why."""
    names = available(repo_root)
    path = env_dir(repo_root) / f"{name}.yaml"
    if name.startswith("_") or "/" in name or not path.is_file():
        hint = difflib.get_close_matches(name, names, n=1)
        did_you_mean = f"did you mean {hint[0]!r}? " if hint else ""
        raise ConfigError(
            f"{_rel(repo_root, path)}: no environment named {name!r}; {did_you_mean}"
            f"environments: {', '.join(names) or 'none'} "
            f"(add config/environments/{name}.yaml to create it)"
        )
    if not ENV_NAME.fullmatch(name):
        raise ConfigError(
            f"{ENV_DIR}/{name}.yaml: environment name {name!r}: expected letters, digits, '-' "
            "and '_' (it names containers, networks and files on the host); rename the file"
        )
    data, origins, files = _read_chain(repo_root, path, seen=())
    try:
        settings = Environment.model_validate(data)
    except ValidationError as exc:
        errors = _drop_typo_twins(exc.errors(), data)
        lines = [_format(repo_root, err, data, origins, files[-1]) for err in errors]
        raise ConfigError("\n".join(lines)) from None
    problem = misfit(settings) if settings.cluster == "kubernetes" else None
    if problem is not None:  # what the chart cannot express, once the settings are valid
        key, message = problem
        at = _origin(origins, key) or Origin(_rel(repo_root, files[-1]), 1)
        raise ConfigError(f"{at}: {'.'.join(key)}: {message}")
    rel_files = tuple(_rel(repo_root, f) for f in files)
    return LoadedEnvironment(name=name, settings=settings, files=rel_files, origins=origins)


def _drop_typo_twins(errors: list[ErrorDetails], data: Mapping[str, Any]) -> list[ErrorDetails]:
    """A misspelt key shows up twice: as unknown and as a missing required key. Keep one."""
    unknown: dict[KeyPath, list[str]] = {}
    for err in errors:
        if err["type"] == "extra_forbidden":
            _, yaml_path = _split_loc(err["loc"], data)
            unknown.setdefault(yaml_path[:-1], []).append(yaml_path[-1])
    kept = []
    for err in errors:
        if err["type"] == "missing":
            _, yaml_path = _split_loc(err["loc"], data)
            typos = unknown.get(yaml_path[:-1], [])
            if difflib.get_close_matches(yaml_path[-1], typos, n=1, cutoff=0.6):
                continue
        kept.append(err)
    return kept


# --- YAML with line numbers ------------------------------------------------------------------


def _read_chain(
    repo_root: Path, path: Path, seen: tuple[Path, ...]
) -> tuple[dict[str, Any], dict[KeyPath, Origin], tuple[Path, ...]]:
    rel = _rel(repo_root, path)
    if path in seen:
        chain = " -> ".join(str(_rel(repo_root, p)) for p in (*seen, path))
        raise ConfigError(f"{rel}: extends: loops back on itself ({chain}); remove one extends")
    data, origins = _read_yaml(rel, path)
    parent_name = data.get("extends")
    if parent_name is None:
        return data, origins, (path,)
    if not isinstance(parent_name, str):
        raise ConfigError(
            f"{origins[('extends',)]}: extends: got {parent_name!r}, expected a file name in "
            f"{ENV_DIR}, e.g. _common.yaml"
        )
    parent = (path.parent / parent_name).resolve()
    if not parent.is_file() or parent.parent != path.parent.resolve():
        bases = sorted(p.name for p in path.parent.glob("*.yaml") if p != path)
        raise ConfigError(
            f"{origins[('extends',)]}: extends: no file {parent_name!r} in {ENV_DIR}; "
            f"expected one of: {', '.join(bases) or 'none'}"
        )
    base, base_origins, base_files = _read_chain(repo_root, parent, (*seen, path))
    base.pop("extends", None)
    own = {k: v for k, v in data.items() if k != "extends"}
    merged_origins = {k: v for k, v in base_origins.items() if k != ("extends",)}
    merged = _merge(base, own, (), merged_origins, origins)
    merged_origins[("extends",)] = origins[("extends",)]
    return merged, merged_origins, (*base_files, path)


def _merge(
    base: dict[str, Any],
    own: dict[str, Any],
    prefix: KeyPath,
    origins: dict[KeyPath, Origin],
    own_origins: Mapping[KeyPath, Origin],
) -> dict[str, Any]:
    """Deep-merge ``own`` over ``base``: mappings merge, everything else replaces."""
    out = dict(base)
    for key, value in own.items():
        path = (*prefix, key)
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value, path, origins, own_origins)
        else:
            for stale in [p for p in origins if p[: len(path)] == path]:
                del origins[stale]
            out[key] = value
        origins.update({p: o for p, o in own_origins.items() if p[: len(path)] == path})
    return out


def _read_yaml(rel: Path, path: Path) -> tuple[dict[str, Any], dict[KeyPath, Origin]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{rel}: cannot read: {exc}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{rel}:{mark.line + 1}" if mark is not None else str(rel)
        problem = getattr(exc, "problem", None) or str(exc)
        context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        opened = (
            f" ({context} that starts on line {context_mark.line + 1})"
            if context
            and context_mark is not None
            and mark is not None
            and context_mark.line != mark.line
            else ""
        )
        raise ConfigError(
            f"{where}: invalid YAML: {problem}{opened}; fix the syntax there "
            "(check indentation, colons, brackets and quotes)"
        ) from None
    if data is None:
        data, node = {}, None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{rel}:1: expected a mapping of settings (key: value) at the top, "
            f"got {type(data).__name__}"
        )
    origins: dict[KeyPath, Origin] = {}
    if node is not None:
        _walk(rel, node, (), origins)
    return data, origins


def _walk(rel: Path, node: yaml.Node, prefix: KeyPath, origins: dict[KeyPath, Origin]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = str(key_node.value)
            path = (*prefix, key)
            if path in origins:
                raise ConfigError(
                    f"{rel}:{key_node.start_mark.line + 1}: {'.'.join(path)}: duplicate key "
                    f"(first at line {origins[path].line}); keep one of them"
                )
            origins[path] = Origin(rel, key_node.start_mark.line + 1)
            _walk(rel, value_node, path, origins)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            path = (*prefix, str(index))
            origins[path] = Origin(rel, item.start_mark.line + 1)
            _walk(rel, item, path, origins)


# --- pydantic errors -> one line each ------------------------------------------------------


def _format(
    repo_root: Path,
    err: ErrorDetails,
    data: Mapping[str, Any],
    origins: Mapping[KeyPath, Origin],
    top_file: Path,
) -> str:
    rule = (err.get("ctx") or {}).get("error")
    if isinstance(rule, RuleError):  # a cross-field rule that names the key to change
        at = _origin(origins, rule.path) or Origin(_rel(repo_root, top_file), 1)
        return f"{at}: {'.'.join(rule.path)}: {rule}"
    model_path, yaml_path = _split_loc(err["loc"], data)
    key = ".".join(yaml_path) or "(top level)"
    where = _origin(origins, yaml_path) or Origin(_rel(repo_root, top_file), 1)
    kind = err["type"]
    if kind == "extra_forbidden":
        known = _known_keys(model_path[:-1], data)
        hint = difflib.get_close_matches(yaml_path[-1], known, n=1, cutoff=0.6)
        fix = f"did you mean {hint[0]!r}?" if hint else f"known keys here: {', '.join(known)}"
        return f"{where}: {key}: unknown key; {fix}"
    if kind == "missing":
        desc = _description(model_path, data)
        about = f" ({desc})" if desc else ""
        return f"{where}: {key}: missing{about}; add it to {where.file}"
    if kind == "union_tag_invalid":
        ctx = err.get("ctx", {})
        tags = [t.strip(" '") for t in str(ctx.get("expected_tags", "")).split(",")]
        given = str(ctx.get("tag"))
        hint = difflib.get_close_matches(given, tags, n=1)
        fix = f"did you mean {hint[0]!r}? " if hint else ""
        return (
            f"{_origin(origins, (*yaml_path, 'type')) or where}: {key}.type: got {given!r}; "
            f"{fix}expected one of: {', '.join(tags)}"
        )
    if kind == "union_tag_not_found":
        return (
            f"{where}: {key}.type: missing; expected one of: gitlab, github, oidc, shared-password"
        )
    given = err.get("input")
    expected = _expected(err)
    if isinstance(given, Mapping):  # a rule across several keys: the message names them
        return f"{where}: {key}: {expected}"
    desc = _description(model_path, data)
    about = f" ({key}: {desc})" if desc else ""
    return f"{where}: {key}: got {given!r}; {expected}{about}"


def _expected(err: ErrorDetails) -> str:
    kind, msg = err["type"], err["msg"]
    simple = {
        "int_parsing": "expected an integer",
        "int_type": "expected an integer",
        "float_parsing": "expected a number",
        "float_type": "expected a number",
        "bool_parsing": "expected true or false",
        "bool_type": "expected true or false",
        "string_type": "expected a string (quote it)",
        "list_type": "expected a list (- item per line, or [a, b])",
        "dict_type": "expected a mapping (key: value)",
        "model_type": "expected a mapping (key: value)",
        "model_attributes_type": "expected a mapping (key: value)",
    }
    if kind in simple:
        return simple[kind]
    if kind == "literal_error":
        return f"expected {err.get('ctx', {}).get('expected', msg)}"
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    return msg[0].lower() + msg[1:]


def _split_loc(loc: tuple[int | str, ...], data: Mapping[str, Any]) -> tuple[KeyPath, KeyPath]:
    """Split pydantic's loc into (path through models, path as written in YAML).

    Discriminated unions put the tag value into ``loc``; the YAML path has no such step.
    """
    model_path: list[str] = []
    yaml_path: list[str] = []
    node: Any = data
    for part in loc:
        text = str(part)
        if isinstance(node, Mapping) and text not in node and node.get("type") == text:
            model_path.append(text)
            continue
        model_path.append(text)
        yaml_path.append(text)
        if isinstance(node, Mapping):
            node = node.get(text)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
    return tuple(model_path), tuple(yaml_path)


def _origin(origins: Mapping[KeyPath, Origin], path: KeyPath) -> Origin | None:
    for end in range(len(path), 0, -1):
        if path[:end] in origins:
            return origins[path[:end]]
    return None


def _model_at(model_path: KeyPath) -> type[BaseModel] | None:
    """The model that holds the keys at ``model_path`` (None where it is not a model)."""
    model: type[BaseModel] | None = Environment
    union: dict[str, type[BaseModel]] | None = None
    for part in model_path:
        if union is not None:
            model, union = union.get(part), None
            continue
        info = model.model_fields.get(part) if model is not None else None
        if info is None or get_origin(info.annotation) in (dict, list):
            return None
        members = list(_models_in(info.annotation))
        if len(members) > 1:
            union = {tag: m for m in members for tag in _tags(m)}
            model = None
        else:
            model = members[0] if members else None
    return model if union is None else None


def _tags(model: type[BaseModel]) -> tuple[str, ...]:
    type_field = model.model_fields.get("type")
    return get_args(type_field.annotation) if type_field is not None else ()


def _models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    for arg in get_args(annotation):
        yield from _models_in(arg)


def _known_keys(model_path: KeyPath, data: Mapping[str, Any]) -> list[str]:
    model = _model_at(model_path)
    return sorted(model.model_fields) if model is not None else []


def _description(model_path: KeyPath, data: Mapping[str, Any]) -> str:
    if not model_path:
        return ""
    parent = _model_at(model_path[:-1])
    if parent is None:
        return ""
    info = parent.model_fields.get(model_path[-1])
    text = (info.description or "") if info is not None else ""
    return text.rstrip(".")


def _rel(repo_root: Path, path: Path) -> Path:
    try:
        return path.resolve().relative_to(repo_root.resolve())
    except ValueError:
        return path
