"""Bounded YAML loading, shared by the config loaders and the Obsidian frontmatter parser.

``yaml.safe_load`` refuses tags that build Python objects, but not documents that are small on
disk and huge in memory: a few hundred bytes of nested anchors and aliases ("billion laughs")
stand for billions of values, and every walk over the loaded data (``${VAR}`` expansion, line
numbers, pydantic) pays for each of them. :func:`compose` parses the document once (with libyaml
when it is installed), counts the values it stands for with every alias expanded,
and refuses it, before anything walks it, when that count, its nesting depth or a recursive alias
goes beyond limits no real config or note frontmatter comes near.
"""

from __future__ import annotations

from typing import Any

import yaml

from cfstream.errors import CfStreamError

__all__ = ("MAX_DEPTH", "MAX_NODES", "YAMLLimitError", "check_node", "compose", "construct", "load")

#: values (scalars, lists, mappings) a document may stand for once its aliases are expanded
MAX_NODES = 100_000
#: lists and mappings nested inside each other
MAX_DEPTH = 100

#: libyaml's parser when installed: fast, and it stops at 1000 nesting levels at once where the
#: pure-Python one takes seconds (its scanner is quadratic in the nesting depth)
_FAST: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YAMLLimitError(CfStreamError, yaml.YAMLError):
    """A YAML document refused for its expanded size, its depth or a recursive alias.

    It is a :class:`yaml.YAMLError` too, so code that handles broken YAML handles it.
    """


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def check_node(node: yaml.Node, *, max_nodes: int = MAX_NODES, max_depth: int = MAX_DEPTH) -> None:
    """Raise :class:`YAMLLimitError` when ``node`` is too big expanded, too deep, or recursive.

    Each distinct node is visited once (aliases share nodes), without recursion, so the check
    costs as much as composing the document did.
    """
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded values, depth)
    open_: set[int] = set()  # nodes whose children are being counted: met again = recursion
    stack: list[tuple[yaml.Node, bool]] = [(node, False)]
    while stack:
        n, children_done = stack.pop()
        key = id(n)
        if children_done:
            open_.discard(key)
            total, depth = 1, 0
            for child in _children(n):
                c_total, c_depth = sizes[id(child)]
                total += c_total
                depth = max(depth, c_depth + 1)
            if total > max_nodes:
                raise YAMLLimitError(
                    f"the YAML stands for more than {max_nodes:,} values once its aliases "
                    "(*name) are expanded; refused as an alias bomb: write the values out, or "
                    "use fewer nested aliases"
                )
            if depth > max_depth:
                raise YAMLLimitError(
                    f"the YAML nests lists and mappings more than {max_depth} levels deep; "
                    "flatten it"
                )
            sizes[key] = (total, depth)
        elif key not in sizes:
            if key in open_:
                raise YAMLLimitError(
                    "the YAML has a recursive alias (a *name inside the value its &name "
                    "anchors); write the value out"
                )
            open_.add(key)
            stack.append((n, True))
            stack.extend((child, False) for child in _children(n))


def compose(
    text: str, *, max_nodes: int = MAX_NODES, max_depth: int = MAX_DEPTH
) -> yaml.Node | None:
    """Parse one YAML document into its node graph (None when empty), checked by :func:`check_node`.

    Raises :class:`yaml.YAMLError` (:class:`YAMLLimitError` for the limits). A syntax error is
    reported as PyYAML's own parser words it (it names the alias or character and the right line).
    """
    try:
        node = _parse(text, _FAST)
    except yaml.MarkedYAMLError as exc:
        if _FAST is not yaml.SafeLoader and "nesting depth" not in str(exc.problem):
            _parse(text, yaml.SafeLoader)  # raises its clearer error; if it does not, raise ours
        raise
    if node is not None:
        check_node(node, max_nodes=max_nodes, max_depth=max_depth)
    return node


def _parse(text: str, loader_class: type[Any]) -> yaml.Node | None:
    loader = loader_class(text)
    try:
        node: yaml.Node | None = loader.get_single_node()
    except RecursionError:  # the pure-Python parser recurses once per nesting level
        raise YAMLLimitError(
            "the YAML nests lists and mappings too deeply to parse; flatten it"
        ) from None
    finally:
        loader.dispose()
    return node


def construct(node: yaml.Node | None) -> Any:
    """The plain Python values (as ``yaml.safe_load`` builds them) of a composed document."""
    if node is None:
        return None
    return yaml.constructor.SafeConstructor().construct_document(node)


def load(text: str, *, max_nodes: int = MAX_NODES, max_depth: int = MAX_DEPTH) -> Any:
    """``yaml.safe_load`` with :func:`check_node`'s limits checked before the data is built."""
    return construct(compose(text, max_nodes=max_nodes, max_depth=max_depth))
