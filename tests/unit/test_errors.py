"""One error path: every error class of hubops is in hubops/errors.py, under HubopsError."""

from __future__ import annotations

import ast

from hubops import errors
from tests.support.checkout import REPO_ROOT


def test_every_error_class_is_in_errors_py() -> None:
    elsewhere = []
    for path in sorted((REPO_ROOT / "hubops").rglob("*.py")):
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = [ast.unparse(b) for b in node.bases]
                if any(b.endswith(("Error", "Exception")) for b in bases):
                    elsewhere.append(f"{path.relative_to(REPO_ROOT)}: {node.name}({bases})")
    assert elsewhere == [], "error classes outside hubops/errors.py"


def test_the_tree_hangs_from_hubops_error() -> None:
    classes = [
        c for c in vars(errors).values() if isinstance(c, type) and c.__module__ == errors.__name__
    ]
    for cls in classes:
        if cls is errors.RuleError:
            assert issubclass(cls, ValueError), "pydantic wants ValueErrors from validators"
        else:
            assert issubclass(cls, errors.HubopsError), cls
        assert cls.__name__ in (errors.__doc__ or ""), f"{cls.__name__} is not in the tree"
