"""The test tree never shadows a package cfstream imports.

pytest puts ``tests/`` on ``sys.path`` (rootdir conftest, no ``__init__.py``), so a test folder named
like an optional dependency becomes a namespace package whenever that dependency is not
installed: ``import contextframe`` then finds the test folder and fails obscurely.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent


def _third_party_imports() -> set[str]:
    """Top-level packages imported (or ``pytest.importorskip``-ed) by the project's code."""
    names: set[str] = set()
    for folder in ("cfstream", "tests", "examples", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names.update(a.name.split(".")[0] for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names.add(node.module.split(".")[0])
                elif (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "importorskip"
                    and node.args
                    and isinstance(node.args[0], ast.Constant)
                ):
                    names.add(str(node.args[0].value).split(".")[0])
    return names - set(sys.stdlib_module_names) - {"cfstream"}


def test_no_test_folder_is_named_like_an_imported_package() -> None:
    imported = _third_party_imports()
    assert {"contextframe", "lance", "pyarrow"} <= imported  # the scan sees the optional ones
    shadowing = sorted(p.name for p in TESTS.iterdir() if p.is_dir() and p.name in imported)
    assert not shadowing, (
        f"tests/{shadowing[0]} has the name of a package cfstream imports: `import "
        f"{shadowing[0]}` finds the test folder when the package is not installed; rename it"
    )
