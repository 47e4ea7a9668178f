"""Who may import whom: every import in the product folders, top-level or inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from genserve.server.paths import PROJECT_ROOT

# Folder -> the genserve packages its code may import. The benchmarks time PyTorch eager beside
# ONNX Runtime, so they may load the export models; only the umbrella command sees every floor.
ALLOWED = {
    "client": {"client"},
    "server": {"client", "server"},
    "model_repository": {"client", "server"},
    "export": {"client", "server", "export"},
    "benchmarks": {"client", "server", "export", "benchmarks"},
    "cli": {"client", "server", "export", "benchmarks", "cli"},
}


def imported_modules(path: Path) -> list[str]:
    """Every module ``path`` imports, plus the string argument of any ``import_module`` call."""
    modules = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            modules.append(node.module or "")
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
            "import_module",
            "__import__",
        ):
            modules += [arg.value for arg in node.args if isinstance(arg, ast.Constant)]
    return modules


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_no_folder_imports_a_floor_above_it(folder):
    paths = sorted((PROJECT_ROOT / folder).rglob("*.py"))
    assert paths
    for path in paths:
        for module in imported_modules(path):
            parts = module.split(".")
            if parts[0] == "genserve" and len(parts) > 1:
                assert parts[1] in ALLOWED[folder], f"{path.relative_to(PROJECT_ROOT)} imports {module}"


def test_no_product_code_loads_modules_by_name_across_folders():
    # A name in a string is an edge the test above would miss if it were computed.
    for folder in ("client", "server", "model_repository", "benchmarks", "cli"):
        for path in (PROJECT_ROOT / folder).rglob("*.py"):
            assert "import_module" not in path.read_text(), f"{path.relative_to(PROJECT_ROOT)} uses importlib"
