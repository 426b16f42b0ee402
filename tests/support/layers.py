"""hubops' layers, read from the code's own imports (AST, nothing is imported).

Data flows one way, and so do imports: a module may import its own layer and the layers below
it, never one above. Imports inside functions count (a late import still ties the layers);
imports under ``if TYPE_CHECKING:`` do not (they never run).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# Lowest first. A module belongs to the longest prefix that names it.
LAYERS: tuple[str, ...] = (
    "hubops",  # the package itself (its version) and the one error tree
    "hubops.errors",
    "hubops.images.table",  # the image table, as data: the settings name its variants
    "hubops.config",
    "hubops.plan",
    "hubops.host",
    "hubops.images",
    "hubops.deploy",
    "hubops.ops",
    "hubops.cli",
    "hubops.quickstart",
)


@dataclass(frozen=True)
class Arrow:
    """One import: ``source`` (file:line) in module ``importer`` imports module ``target``."""

    source: str
    importer: str
    target: str

    def __str__(self) -> str:
        return (
            f"{self.source}: {self.importer} ({layer_of(self.importer)}) imports "
            f"{self.target} ({layer_of(self.target)})"
        )


def layer_of(module: str) -> str:
    found = [layer for layer in LAYERS if module == layer or module.startswith(layer + ".")]
    return max(found, key=len) if found else module


def rank(module: str) -> int:
    return LAYERS.index(layer_of(module))


def modules(root: Path, package: str = "hubops") -> dict[str, Path]:
    """Module name -> file, for every module of ``package`` under ``root``."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import that runs, however deep (functions, try blocks), but not TYPE_CHECKING's."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _type_checking(node):
            for other in node.orelse:
                yield from _imports(ast.Module(body=[other], type_ignores=[]))
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        yield from _imports(node)


def arrows(root: Path, package: str = "hubops") -> list[Arrow]:
    """Every import of one module of ``package`` by another."""
    known = modules(root, package)
    out = []
    for name, path in known.items():
        is_package = path.name == "__init__.py"
        for node in _imports(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:  # relative: from its package
                    here = name.split(".") if is_package else name.split(".")[:-1]
                    up = here[: len(here) - node.level + 1]
                    base = ".".join([*up, *([base] if base else [])])
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in known else base)
            where = f"{path.relative_to(root)}:{node.lineno}"
            out += [Arrow(where, name, t) for t in targets if t in known and t != name]
    return out


def back_arrows(root: Path, package: str = "hubops") -> list[Arrow]:
    """The imports that reach up to a higher layer."""
    return [a for a in arrows(root, package) if rank(a.target) > rank(a.importer)]


def cycles(root: Path, package: str = "hubops") -> list[list[str]]:
    """Groups of modules that import each other, directly or around (Tarjan's SCCs > 1)."""
    graph: dict[str, set[str]] = {m: set() for m in modules(root, package)}
    for a in arrows(root, package):
        # a package's __init__ is imported by its submodules' import machinery, not by them
        graph[a.importer].add(a.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1 or v in graph[v]:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found
