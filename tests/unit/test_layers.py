"""docs/architecture.md's floors: a floor imports only the floors below it; sources, transforms and
sinks never import each other; http knows no source; nothing imports in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "cfstream"

#: the floors, bottom up (docs/architecture.md): every module of cfstream is on one of them
FLOORS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "ground",
        (
            "cfstream.records",
            "cfstream.checks",
            "cfstream.errors",
            "cfstream.secrets",
            "cfstream.logs",
            "cfstream.safe_yaml",
        ),
    ),
    ("run contract", ("cfstream.contract",)),
    ("http", ("cfstream.http",)),
    (
        "parts",
        (
            "cfstream.sources",
            "cfstream.transforms",
            "cfstream.embed",
            "cfstream.storage",
            "cfstream.sinks",
        ),
    ),
    ("engine", ("cfstream.engine",)),
    (
        "entry points",
        (
            "cfstream",
            "cfstream.__main__",
            "cfstream.cli",
            "cfstream.config",
            "cfstream.demo",
            "cfstream.starter",
            "cfstream.connectors",
            "cfstream.frame",
            "cfstream.distributed",
            "cfstream.search",
            "cfstream.testing",
        ),
    ),
)

#: imports that reach up a floor, each with its reason (all lazy: made at call time, never at
#: import time)
UPWARDS: dict[tuple[str, str], str] = {
    ("cfstream.sources.base", "cfstream.engine.pipeline"): "`source | stage` starts a Pipeline",
    ("cfstream.records", "cfstream.storage.codec"): "the old import path of frame_schema and "
    "documents_to_table (records.__getattr__)",
}

#: siblings that never import each other (type-only imports included)
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
        "cfstream.engine",
    ),
}


#: the services of the built-in connectors: the HTTP floor names none of them
SERVICES = ("github", "discord", "linear", "slack", "notion", "google", "gdrive", "drive")


def _module_of(path: Path) -> list[str]:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _modules() -> dict[str, Path]:
    return {".".join(_module_of(p)): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports (relative imports resolved, lazy and type-only ones
    included), and every ``cfstream.*`` dotted name in a string
    (``importlib.import_module("cfstream.sources...")``)."""
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


def _targets(path: Path, modules: dict[str, Path], *, top_level: bool = False) -> set[str]:
    """The cfstream modules running ``path`` imports: ``if TYPE_CHECKING:`` blocks left out,
    ``from cfstream.x import Name`` is module ``cfstream.x``, ``from cfstream import x`` is module
    ``cfstream.x``. ``top_level``: also leave out imports inside functions and classes (what
    importing the module imports)."""
    package = _module_of(path)[: -1 if path.name != "__init__.py" else None]
    out: set[str] = set()

    def resolve(name: str) -> None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name:
            out.add(name)

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if top_level and isinstance(
            node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda
        ):
            return
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("cfstream"):
                    resolve(a.name)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            if module.startswith("cfstream"):
                for a in node.names:
                    resolve(f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return out


def _floor_of(module: str) -> int:
    """The index in FLOORS of ``module``'s floor (its longest matching prefix decides)."""
    best, level = "", -1
    for i, (_, prefixes) in enumerate(FLOORS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
                best, level = prefix, i
    return level


def test_every_module_is_on_a_floor() -> None:
    lost = sorted(m for m in _modules() if _floor_of(m) < 0)
    assert not lost, f"modules on no floor of docs/architecture.md (add them to FLOORS): {lost}"


def test_a_floor_imports_only_the_floors_below_it() -> None:
    """Type-only imports (``if TYPE_CHECKING:``) may name a floor above: RunContext's ``sink``
    and ``http`` fields are annotated with the classes of the parts that fill them."""
    modules = _modules()
    bad = []
    for module, path in modules.items():
        level = _floor_of(module)
        for name in sorted(_targets(path, modules)):
            if _floor_of(name) > level and (module, name) not in UPWARDS:
                bad.append(
                    f"{module} ({FLOORS[level][0]}) imports {name} ({FLOORS[_floor_of(name)][0]})"
                )
    assert not bad, "\n".join(bad)


def test_the_exceptions_are_still_needed() -> None:
    modules = _modules()
    for module, name in UPWARDS:
        assert name in _targets(modules[module], modules)


@pytest.mark.parametrize("floor", sorted(FORBIDDEN))
def test_a_floor_does_not_import_its_siblings(floor: str) -> None:
    bad = [
        f"{path.relative_to(PACKAGE.parent)} imports {name}"
        for path in sorted((PACKAGE / floor).rglob("*.py"))
        for name in sorted(_imports(path))
        if name.startswith(FORBIDDEN[floor])
    ]
    assert not bad, "\n".join(bad)


def test_no_module_imports_itself_in_a_circle() -> None:
    """Importing any module never comes back to a module still being imported (a package's own
    ``__init__`` excepted: Python imports it first, before its modules)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        deps = set()
        for name in _targets(path, modules, top_level=True):
            parts = name.split(".")
            deps.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))  # and its packages
        parts = module.split(".")
        graph[module] = deps & modules.keys() - {
            ".".join(parts[:i]) for i in range(1, len(parts) + 1)
        }
    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep) :], dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


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
    modules = _modules()
    runner = PACKAGE / "engine" / "runner.py"
    assert "cfstream.engine.pipeline" in _imports(runner)  # a type-only import
    assert "cfstream.engine.pipeline" not in _targets(runner, modules)
    assert "cfstream.http" in _targets(runner, modules)  # a lazy import
    assert "cfstream.http" not in _targets(runner, modules, top_level=True)
    obsidian = PACKAGE / "sources" / "obsidian.py"  # from cfstream import safe_yaml
    assert "cfstream.safe_yaml" in _targets(obsidian, modules)
    assert "cfstream" not in _targets(obsidian, modules)
