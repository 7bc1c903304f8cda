"""The test tree's layout: its folders mirror cfstream's packages, its module names are unique,
and it never shadows a package cfstream imports.

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


#: test folders that are about no one package: whole pipelines, the reliability suite, ContextFrame's
#: own API, the docs' examples, the benchmark harness, and the ground floor (``unit``)
CROSS_CUTTING = frozenset(
    {"bench_harness", "cf_compat", "docs", "integration", "reliability", "unit"}
)


def test_test_folders_mirror_the_package() -> None:
    """``tests/<name>/`` tests ``cfstream/<name>/`` (or ``cfstream/<name>.py``), unless it is one
    of the cross-cutting folders: a newcomer finds a package's tests under its name."""
    package = ROOT / "cfstream"
    stray = sorted(
        p.name
        for p in TESTS.iterdir()
        if p.is_dir()
        and not p.name.startswith((".", "__"))
        and p.name not in CROSS_CUTTING
        and not (package / p.name / "__init__.py").exists()
        and not (package / f"{p.name}.py").exists()
    )
    assert not stray, (
        f"tests/{stray[0]} names no package or module of cfstream: move its tests to the folder "
        "of the package they test, or add it to CROSS_CUTTING with a reason"
    )


def test_test_module_names_are_unique() -> None:
    """pytest imports test modules by their basename (no ``__init__.py`` in tests/), so two
    ``test_x.py`` in different folders would collide."""
    seen: dict[str, list[str]] = {}
    for path in TESTS.rglob("*.py"):
        if path.name != "conftest.py":
            seen.setdefault(path.name, []).append(str(path.relative_to(TESTS)))
    twice = {name: paths for name, paths in seen.items() if len(paths) > 1}
    assert not twice, twice
