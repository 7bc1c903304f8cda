"""``dedupe``: drop repeats of a document within a bounded window of recent keys."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from operator import attrgetter

from cfstream.context import StageContext
from cfstream.records import Document
from cfstream.transforms.base import Chunk, ChunkStage, count_docs

__all__ = ("Dedupe", "dedupe")


def _default_key(doc: Document) -> Hashable:
    return (doc.source_type, doc.source_id)


_DEFAULT_KEY = attrgetter("source_type", "source_id")  # the same key, from C
_COMPUTE_HASH = Document.compute_hash


class Dedupe(ChunkStage):
    """See :func:`dedupe`."""

    def __init__(
        self,
        key: Callable[[Document], Hashable] | None = None,
        *,
        max_keys: int = 100_000,
        name: str = "dedupe",
    ) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.key = key or _default_key
        self.max_keys = max_keys
        self.name = name
        self._seen: OrderedDict[int, str] = OrderedDict()

    def apply(self, chunk: Chunk, ctx: StageContext) -> Chunk:
        """Drop documents whose key was seen recently with the same content."""
        if count_docs(chunk) == len(chunk) and self._apply_new(chunk):  # type: ignore[arg-type]
            return chunk
        return self._apply_each(chunk, ctx)

    def _apply_new(self, docs: list[Document]) -> bool:
        """The common case in whole-chunk passes: no key of ``docs`` repeats or was seen.

        Returns False (having changed nothing) when some key repeats; then every document is
        looked at on its own.
        """
        key = _DEFAULT_KEY if self.key is _default_key else self.key
        keys = list(map(hash, map(key, docs)))
        seen = self._seen
        if len(set(keys)) != len(keys) or not seen.keys().isdisjoint(keys):
            return False
        seen.update(zip(keys, map(_COMPUTE_HASH, docs), strict=True))
        for _ in range(len(seen) - self.max_keys):
            seen.popitem(last=False)
        return True

    def _apply_each(self, chunk: Chunk, ctx: StageContext) -> Chunk:
        seen = self._seen
        key = self.key
        out: Chunk = []
        for it in chunk:
            if type(it) is Document:
                k = hash(key(it))
                h = it.compute_hash()
                prev = seen.get(k)
                if prev == h:
                    seen.move_to_end(k)
                    ctx.stats.dropped += 1
                    continue
                seen[k] = h
                if prev is not None:
                    seen.move_to_end(k)
                elif len(seen) > self.max_keys:
                    seen.popitem(last=False)
            out.append(it)
        return out


def dedupe(key: Callable[[Document], Hashable] | None = None, *, max_keys: int = 100_000) -> Dedupe:
    """Drop a document when the same key was seen recently with the same content.

    The key defaults to ``(source_type, source_id)``. A repeat whose content changed is kept, so
    the newest version wins in the sink (which also dedupes each batch it writes). Memory is
    bounded: the stage remembers the ``max_keys`` most recent keys (an LRU of 64-bit key hashes
    and 32-character content hashes, about 150 bytes a key: ~15 MB for the default 100,000);
    repeats further apart than that are left to the sink's upsert, which never duplicates a row.
    """
    return Dedupe(key, max_keys=max_keys)
