"""DESIGN.md's layers: sources, transforms and sinks never import each other; http knows no source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "cfstream"
FORBIDDEN = {
    "sources": ("cfstream.sinks", "cfstream.transforms"),
    "transforms": ("cfstream.sinks", "cfstream.sources"),
    "sinks": ("cfstream.sources", "cfstream.transforms"),
    "http": ("cfstream.sources", "cfstream.sinks", "cfstream.transforms"),
    # the Lance layer serves LanceSink, Ray's fragment sink and FrameDataset: it knows none of them
    "storage": (
        "cfstream.sinks",
        "cfstream.sources",
        "cfstream.transforms",
        "cfstream.distributed",
        "cfstream.frame",
        "cfstream.pipeline",
        "cfstream.runner",
    ),
}


#: the services of the built-in connectors: the HTTP floor names none of them
SERVICES = ("github", "discord", "linear", "slack", "notion", "google", "gdrive", "drive")


def _module_of(path: Path) -> list[str]:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports (relative imports resolved, lazy ones included), and every
    ``cfstream.*`` dotted name in a string (``importlib.import_module("cfstream.sources...")``)."""
    names: set[str] = set()
    package = _module_of(path)[: -1 if path.name != "__init__.py" else None]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names.add(module)
            names.update(f"{module}.{a.name}" for a in node.names)
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value.startswith("cfstream.")
        ):
            names.add(node.value.split(":")[0])
    return names


@pytest.mark.parametrize("floor", sorted(FORBIDDEN))
def test_a_floor_does_not_import_its_siblings(floor: str) -> None:
    bad = [
        f"{path.relative_to(PACKAGE.parent)} imports {name}"
        for path in sorted((PACKAGE / floor).rglob("*.py"))
        for name in sorted(_imports(path))
        if name.startswith(FORBIDDEN[floor])
    ]
    assert not bad, "\n".join(bad)


def test_the_http_floor_names_no_service() -> None:
    """Service policies live next to their connectors: no class, function or module-level name in
    cfstream/http is a service's."""
    bad = []
    for path in sorted((PACKAGE / "http").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                names = [node.name]
            elif isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names = [node.target.id]
            else:
                continue
            bad += [
                f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {name}"
                for name in names
                if any(service in name.lower() for service in SERVICES)
            ]
    assert not bad, "\n".join(bad)


def test_a_relative_import_counts_as_an_import() -> None:
    """The layer check sees relative and lazy imports and module names in strings."""
    path = PACKAGE / "http" / "client.py"
    assert "cfstream.http.policies" in _imports(path)
    probe = PACKAGE / "http" / "__init__.py"
    assert "cfstream.http.auth" in _imports(probe)
