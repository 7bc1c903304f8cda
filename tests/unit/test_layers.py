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


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
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
