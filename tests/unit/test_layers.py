"""The layers of hubops/, read from its imports: data flows one way, and so do imports."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.layers import LAYERS, back_arrows, cycles, layer_of, modules

ROOT = Path(__file__).resolve().parents[2]


def test_no_module_imports_a_layer_above_its_own() -> None:
    """config, plan and the image table never import host, deploy or ops; host never imports
    deploy or ops; deploy never imports ops or cli. Imports inside functions count."""
    found = [str(a) for a in back_arrows(ROOT)]
    assert found == [], "imports that reach up a layer:\n" + "\n".join(found)


def test_no_modules_import_each_other() -> None:
    """No import cycle, however long, through late imports too."""
    assert cycles(ROOT) == [], "modules that import each other"


def test_every_module_is_in_a_layer() -> None:
    """A new package must be given its place in the layers before it can be imported."""
    outside = [m for m in modules(ROOT) if layer_of(m) not in LAYERS]
    assert outside == [], f"modules in no layer: {outside}"


def test_hubops_hub_never_imports_hubops() -> None:
    """hubops_hub runs in the hub image, where hubops is not installed: labels.py is the
    contract between them, and it points one way."""
    imports = [
        f"{path}:{line}"
        for path in sorted((ROOT / "hub" / "hubops_hub").rglob("*.py"))
        for line, text in enumerate(path.read_text().splitlines(), 1)
        if text.lstrip().startswith(("from hubops ", "from hubops.", "import hubops"))
    ]
    assert imports == [], f"hubops_hub imports hubops at {imports}"
    assert cycles(ROOT / "hub", "hubops_hub") == [], "hubops_hub's modules import each other"


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_late_import_that_reaches_up_is_found(tmp_path: Path) -> None:
    """A made-up back-arrow: config importing deploy inside a function is caught, with its file
    and line; the same import under TYPE_CHECKING, and the other way round, are not."""
    root = _package(
        tmp_path,
        {
            "hubops/__init__.py": "",
            "hubops/config/__init__.py": "",
            "hubops/config/settings.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n"
                "    from hubops.deploy.run import Changes\n"
                "def late():\n"
                "    from hubops.deploy.run import deploy\n"
                "    return deploy\n"
            ),
            "hubops/deploy/__init__.py": "",
            "hubops/deploy/run.py": "from hubops.config import settings\ndef deploy(): ...\n",
        },
    )
    found = back_arrows(root)
    assert [str(a) for a in found] == [
        "hubops/config/settings.py:5: hubops.config.settings (hubops.config) imports "
        "hubops.deploy.run (hubops.deploy)"
    ]


def test_a_relative_or_module_import_that_reaches_up_is_found(tmp_path: Path) -> None:
    """``from hubops.ops import doctor`` names a module: host importing it reaches up; so does
    a relative import from deploy to ops."""
    root = _package(
        tmp_path,
        {
            "hubops/__init__.py": "",
            "hubops/host/__init__.py": "",
            "hubops/host/files.py": "from hubops.ops import doctor\n",
            "hubops/deploy/__init__.py": "",
            "hubops/deploy/run.py": "from ..ops.doctor import run_checks\n",
            "hubops/ops/__init__.py": "",
            "hubops/ops/doctor.py": "def run_checks(): ...\n",
        },
    )
    assert sorted(a.importer for a in back_arrows(root)) == [
        "hubops.deploy.run",
        "hubops.host.files",
    ]


def test_a_made_up_cycle_is_found(tmp_path: Path) -> None:
    """Two modules of one layer that import each other, one of them late, are a cycle."""
    root = _package(
        tmp_path,
        {
            "hubops/__init__.py": "",
            "hubops/config/__init__.py": "",
            "hubops/config/a.py": "from hubops.config import b\n",
            "hubops/config/b.py": "def f():\n    from hubops.config.a import x\n",
        },
    )
    assert cycles(root) == [["hubops.config.a", "hubops.config.b"]]


# --- the tests' own layout -------------------------------------------------------------------


def _conftests() -> list[Path]:
    return sorted((ROOT / "tests").rglob("conftest.py"))


def _is_fixture(node: ast.FunctionDef) -> bool:
    return any("fixture" in ast.unparse(d) for d in node.decorator_list)


def test_conftests_hold_fixtures_and_hooks_only() -> None:
    """Helpers live in tests/support/, where any test imports them; a conftest holds fixtures,
    pytest's hooks and the stash keys its hooks share."""
    found = []
    for path in _conftests():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef):
                if not (_is_fixture(node) or node.name.startswith("pytest_")):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: def {node.name}")
            elif isinstance(node, ast.ClassDef):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: class {node.name}")
            elif isinstance(node, ast.Assign | ast.AnnAssign) and "StashKey" not in ast.unparse(
                node
            ):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    assert found == [], "helpers in conftests (move them to tests/support/):\n" + "\n".join(found)


def test_no_test_imports_a_conftest_or_another_test_module() -> None:
    found = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                last = node.module.rsplit(".", 1)[-1]
                if last == "conftest" or last.startswith("test_"):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: from {node.module}")
    assert found == [], "\n".join(found)
