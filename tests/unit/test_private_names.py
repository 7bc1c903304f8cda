"""No cfstream module uses another cfstream module's private (``_x``) names.

A private name is one with a leading underscore that is not a dunder. The check is static (AST),
over every module of ``cfstream/``:

* importing a private name from another module (``from cfstream.sinks.lance import _Batch``);
* importing a private module (``cfstream.sources._files``) from outside its own package folder;
* reading an attribute ``x._name`` (or ``getattr(x, "_name")``) where ``x`` is another module's
  class, module or function (an imported name), an object of one (a parameter or variable
  annotated with, or built by calling, such a class, or returned by a function annotated so), or
  where ``_name`` is not defined in this module at all but is in another cfstream module
  (``self._name`` included: a base class's private member is its module's business).

Using a private name inside the module that defines it is fine, and so are dunders.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "cfstream"

#: Known exceptions, (module file, private name it uses): none. A use added here needs a reason;
#: the public Lance layer (cfstream.storage) removed the last ones.
ALLOWED: frozenset[tuple[str, str]] = frozenset()


def is_private(name: str) -> bool:
    """``_x`` but not ``__x__``."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@dataclass
class Module:
    """One parsed module and what it defines."""

    name: str
    path: Path
    tree: ast.Module
    defines: set[str] = field(default_factory=set)
    #: imported names bound in this module that come from another cfstream module
    foreign: set[str] = field(default_factory=set)
    #: functions of this module whose return annotation names a foreign class
    returns_foreign: set[str] = field(default_factory=set)
    imports: list[ast.Import | ast.ImportFrom] = field(default_factory=list)
    functions: list[ast.FunctionDef | ast.AsyncFunctionDef] = field(default_factory=list)

    @property
    def package(self) -> str:
        return self.name if self.path.name == "__init__.py" else self.name.rpartition(".")[0]

    @property
    def rel(self) -> str:
        return self.path.relative_to(PACKAGE.parent).as_posix()

    def resolve(self, node: ast.ImportFrom) -> str:
        """The absolute module of an ``ImportFrom``."""
        if not node.level:
            return node.module or ""
        parts = self.package.split(".")
        base = parts[: len(parts) - node.level + 1]
        return ".".join([*base, *([node.module] if node.module else [])])


@functools.cache
def _modules() -> dict[str, Module]:
    out: dict[str, Module] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        name = ".".join(parts)
        out[name] = Module(name, path, ast.parse(path.read_text(encoding="utf-8")))
    for mod in out.values():
        _collect(mod)
    return out


def _string_arg(node: ast.Call) -> str | None:
    if (
        isinstance(node.func, ast.Name)
        and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
        and len(node.args) >= 2
        and isinstance(node.args[1], ast.Constant)
        and isinstance(node.args[1].value, str)
    ):
        return node.args[1].value
    return None


def _collect(mod: Module) -> None:
    for node in ast.walk(mod.tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            mod.defines.add(node.name)
            if not isinstance(node, ast.ClassDef):
                mod.functions.append(node)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store | ast.Del):
            mod.defines.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            mod.defines.add(node.id)
        elif isinstance(node, ast.Call) and _string_arg(node) and node.func.id == "setattr":  # type: ignore[attr-defined]
            mod.defines.add(str(_string_arg(node)))
        elif isinstance(node, ast.ImportFrom):
            mod.imports.append(node)
            if mod.resolve(node).startswith("cfstream"):
                mod.foreign.update(a.asname or a.name for a in node.names)
        elif isinstance(node, ast.Import):
            mod.imports.append(node)
            mod.foreign.update(
                (a.asname or a.name).split(".")[0]
                for a in node.names
                if a.name.startswith("cfstream")
            )
    for fn in mod.functions:
        if _is_foreign_type(mod, fn.returns):
            mod.returns_foreign.add(fn.name)


def _is_foreign_type(mod: Module, ann: ast.expr | None) -> bool:
    """True when an annotation names a class imported from another cfstream module."""
    if ann is None:
        return False
    if isinstance(ann, ast.Constant) and isinstance(ann.value, str):
        try:
            ann = ast.parse(ann.value, mode="eval").body
        except SyntaxError:
            return False
    if isinstance(ann, ast.BinOp):  # X | None
        return _is_foreign_type(mod, ann.left) or _is_foreign_type(mod, ann.right)
    root = ann
    while isinstance(root, ast.Attribute):
        root = root.value
    return isinstance(root, ast.Name) and root.id in mod.foreign


def _returns_foreign(mod: Module, call: ast.expr) -> bool:
    """True for a call that builds or returns an object of another module's class."""
    if not isinstance(call, ast.Call):
        return False
    func = call.func
    if isinstance(func, ast.Name):
        return func.id in mod.foreign or func.id in mod.returns_foreign
    if isinstance(func, ast.Attribute):
        return func.attr in mod.returns_foreign or _is_foreign_type(mod, func)
    return False


def _own_nodes(scope: ast.AST) -> list[ast.AST]:
    """The nodes of ``scope``, not descending into nested functions (they are scopes of their own)."""
    out: list[ast.AST] = []
    todo = list(ast.iter_child_nodes(scope))
    while todo:
        node = todo.pop()
        out.append(node)
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            todo.extend(ast.iter_child_nodes(node))
    return out


def _typed_locals(mod: Module, scope: ast.AST) -> set[str]:
    """Names in ``scope`` that hold an object of another cfstream module's class."""
    out: set[str] = set()
    if isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef):
        args = scope.args
        for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
            if _is_foreign_type(mod, arg.annotation):
                out.add(arg.arg)
    for node in _own_nodes(scope):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if _is_foreign_type(mod, node.annotation) or (
                node.value is not None and _returns_foreign(mod, node.value)
            ):
                out.add(node.target.id)
        elif isinstance(node, ast.Assign) and _returns_foreign(mod, node.value):
            out.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif (
            isinstance(node, ast.withitem)
            and isinstance(node.optional_vars, ast.Name)
            and _returns_foreign(mod, node.context_expr)
        ):
            out.add(node.optional_vars.id)
    return out


def _attribute_uses(mod: Module, elsewhere: dict[str, set[str]]) -> list[tuple[str, int, str, str]]:
    """The ``x._name`` and ``getattr(x, "_name")`` uses of another module's private names."""
    found: list[tuple[str, int, str, str]] = []

    def check(node: ast.AST, typed: set[str]) -> None:
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            name, owner = node.attr, node.value
        elif isinstance(node, ast.Call) and is_private(_string_arg(node) or ""):
            name, owner = str(_string_arg(node)), node.args[0]
        else:
            return
        foreign_owner = (
            isinstance(owner, ast.Name) and (owner.id in mod.foreign or owner.id in typed)
        ) or _returns_foreign(mod, owner)
        undefined_here = name not in mod.defines and bool(elsewhere.get(name))
        if foreign_owner or undefined_here:
            found.append((mod.rel, node.lineno, name, f"uses {ast.unparse(node)[:60]}"))

    def visit(node: ast.AST, typed: set[str]) -> None:
        for child in ast.iter_child_nodes(node):
            inner = typed
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                inner = typed | _typed_locals(mod, child)
            check(child, inner)
            visit(child, inner)

    visit(mod.tree, _typed_locals(mod, mod.tree))
    return found


def violations(
    modules: dict[str, Module], only: str | None = None
) -> list[tuple[str, int, str, str]]:
    """``(file, line, private name, what)`` for every use of another module's private name (in
    module ``only``, or in all)."""
    elsewhere: dict[str, set[str]] = {}
    for m in modules.values():
        for name in m.defines:
            elsewhere.setdefault(name, set()).add(m.name)
    found: list[tuple[str, int, str, str]] = []

    def private_module_ok(mod: Module, target: str) -> bool:
        parent, _, last = target.rpartition(".")
        return not any(is_private(p) for p in parent.split(".")) and (
            not is_private(last) or parent == mod.package
        )

    for mod in modules.values():
        if only is not None and mod.name != only:
            continue
        for node in mod.imports:
            if isinstance(node, ast.ImportFrom):
                source = mod.resolve(node)
                if not source.startswith("cfstream"):
                    continue
                if not private_module_ok(mod, source):
                    found.append((mod.rel, node.lineno, source, "imports a private module"))
                for alias in node.names:
                    if not is_private(alias.name):
                        continue
                    target = f"{source}.{alias.name}"
                    if target in modules and private_module_ok(mod, target):
                        continue  # the package's own private module
                    what = "imports a private module" if target in modules else "imports"
                    found.append((mod.rel, node.lineno, alias.name, what))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("cfstream") and not private_module_ok(mod, alias.name):
                        found.append((mod.rel, node.lineno, alias.name, "imports a private module"))
        found += _attribute_uses(mod, elsewhere)
    return sorted(set(found))


@functools.cache
def _found() -> list[tuple[str, int, str, str]]:
    return violations(_modules())


def test_no_module_uses_another_modules_private_names() -> None:
    bad = [v for v in _found() if (v[0], v[2]) not in ALLOWED]
    assert not bad, "\n".join(f"{f}:{line}: {what} ({name})" for f, line, name, what in bad)


def test_the_allowlist_holds_only_what_is_still_used() -> None:
    """An entry no longer used must go (the set is empty: nothing reaches into another module)."""
    used = {(v[0], v[2]) for v in _found()}
    assert used >= ALLOWED, sorted(ALLOWED - used)


def _check(source: str, name: str = "cfstream.probe") -> list[str]:
    modules = dict(_modules())
    path = PACKAGE / (name.removeprefix("cfstream.").replace(".", "/") + ".py")
    probe = Module(name, path, ast.parse(source))
    _collect(probe)
    modules[name] = probe
    return [v[3] for v in violations(modules, only=name)]


def test_the_check_sees_each_kind_of_use() -> None:
    """Each rule fires on a small module (the check itself can fail)."""
    assert _check("from cfstream.sinks.lance import _Batch\n") == ["imports"]
    assert _check("from cfstream.sinks.lance import LanceSink\nLanceSink._resolve\n")
    assert _check(
        "from cfstream.sinks.lance import LanceSink\n"
        "def f(sink: LanceSink) -> None:\n    sink._flush_now()\n"
    )
    assert _check(
        "from cfstream.sinks.lance import LanceSink\n"
        "def f() -> None:\n    s = LanceSink('x')\n    getattr(s, '_flush_now')\n"
    )
    assert _check("def f(x):\n    return x._use_embedder_sync()\n")  # only in sinks/lance.py
    assert _check("from cfstream.sources import _files\n") == ["imports a private module"]
    assert _check("from cfstream.sources._files import FileTreeSource\n")
    assert not _check("from cfstream.sources._files import FileTreeSource\n", "cfstream.sources.x")
    assert not _check("class A:\n    def _p(self):\n        return self._q\n    _q = 1\n")
    assert not _check("def f(x):\n    return x.__dict__, x._asdict()\n")
