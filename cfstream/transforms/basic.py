"""``filter`` and ``tag``."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from cfstream.contract.context import StageContext
from cfstream.records import Document
from cfstream.transforms.base import Chunk, ChunkStage

__all__ = ("Filter", "Tag", "filter", "tag")


class Filter(ChunkStage):
    """Keep the documents for which ``predicate`` is true; see :func:`filter`."""

    def __init__(self, predicate: Callable[[Document], bool], *, name: str | None = None) -> None:
        self.predicate = predicate
        self.name = name or f"filter:{getattr(predicate, '__name__', 'predicate')}"

    def apply(self, chunk: Chunk, ctx: StageContext) -> Chunk:
        """Drop documents failing the predicate; a predicate that raises dead-letters the doc."""
        out: Chunk = []
        pred = self.predicate
        for it in chunk:
            if type(it) is not Document:
                out.append(it)
                continue
            try:
                keep = pred(it)
            except Exception as exc:
                ctx.dead_letter(exc, it, source=it.source_name, source_id=it.source_id)
                continue
            if keep:
                out.append(it)
            else:
                ctx.stats.dropped += 1
        return out


def filter(predicate: Callable[[Document], bool], *, name: str | None = None) -> Filter:
    """Keep only the documents for which ``predicate(doc)`` is true (others are dropped, counted)."""
    return Filter(predicate, name=name)


class Tag(ChunkStage):
    """Add tags to every document; see :func:`tag`."""

    def __init__(
        self,
        tags: tuple[str, ...],
        fn: Callable[[Document], Iterable[str]] | None = None,
        *,
        name: str = "tag",
    ) -> None:
        for t in tags:
            if not isinstance(t, str) or not t:
                raise ValueError(f"tags must be non-empty strings, got {t!r}")
        self.tags = list(dict.fromkeys(tags))
        self.fn = fn
        self.name = name

    def apply(self, chunk: Chunk, ctx: StageContext) -> Chunk:
        """Append the tags each document does not have yet."""
        static = self.tags
        fn = self.fn
        out: Chunk = []
        for it in chunk:
            if type(it) is Document:
                if fn is not None:
                    try:
                        add = [t for t in fn(it) if t]
                    except Exception as exc:
                        ctx.dead_letter(exc, it, source=it.source_name, source_id=it.source_id)
                        continue
                else:
                    add = static
                current = it.tags
                if not current:
                    it.tags = list(add)
                elif len(add) == 1:
                    if add[0] not in current:
                        it.tags = current + add
                else:
                    missing = [t for t in add if t not in current]
                    if missing:
                        it.tags = [*current, *missing]
                it.content_hash = None
            out.append(it)
        return out


def tag(*tags: str | Callable[[Document], Iterable[str]], name: str = "tag") -> Tag:
    """Add tags: ``tag("team:docs", "kb")`` adds fixed tags, ``tag(fn)`` adds ``fn(doc)``'s tags."""
    if len(tags) == 1 and callable(tags[0]):
        return Tag((), tags[0], name=name)
    if not all(isinstance(t, str) for t in tags):
        raise TypeError("tag() takes strings, or a single callable")
    return Tag(tuple(t for t in tags if isinstance(t, str)), name=name)
