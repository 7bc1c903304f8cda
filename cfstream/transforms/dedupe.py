"""``dedupe``: drop repeats of a document within a bounded window of recent keys."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from operator import attrgetter

from cfstream.contract.context import StageContext
from cfstream.records import Document
from cfstream.transforms.base import Chunk, ChunkStage

__all__ = ("Dedupe", "dedupe")


def _default_key(doc: Document) -> Hashable:
    return (doc.source_type, doc.source_id, doc.source_name)


_DEFAULT_KEY = attrgetter("source_type", "source_id", "source_name")  # the same key, from C
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
        # two generations of key hash -> content hash: lookups check both, new keys go to
        # _recent, and when _recent holds half of max_keys it becomes _older (the old _older is
        # forgotten). Every operation is a plain dict call; at most max_keys keys are kept.
        self._half = max(1, max_keys // 2)
        self._recent: dict[int, str] = {}
        self._older: dict[int, str] = {}

    def apply(self, chunk: Chunk, ctx: StageContext) -> Chunk:
        """Drop documents whose key was seen recently with the same content."""
        key = _DEFAULT_KEY if self.key is _default_key else self.key  # the same key, from C
        recent, older, half = self._recent, self._older, self._half
        get = recent.get
        repeats: list[int] = []  # positions of the documents dropped (usually none)
        for i, it in enumerate(chunk):
            if type(it) is Document:
                k = hash(key(it))
                h = it.content_hash or _COMPUTE_HASH(it)
                prev = get(k)
                if prev is None and older:
                    prev = older.pop(k, None)  # seen a while ago: it becomes recent again
                recent[k] = h
                if len(recent) >= half:  # a new generation: the oldest keys are forgotten
                    self._older, self._recent = older, recent = recent, {}
                    get = recent.get
                if prev == h:
                    repeats.append(i)
        if not repeats:
            return chunk
        ctx.stats.dropped += len(repeats)
        drop = set(repeats)
        return [it for i, it in enumerate(chunk) if i not in drop]


def dedupe(key: Callable[[Document], Hashable] | None = None, *, max_keys: int = 100_000) -> Dedupe:
    """Drop a document when the same key was seen recently with the same content.

    The key defaults to the record's identity, ``(source_type, source_id, source_name)``: two
    sources' documents with one id are not repeats of each other. A repeat whose content changed is kept, so
    the newest version wins in the sink (which also dedupes each batch it writes). Memory is
    bounded: the stage remembers between ``max_keys / 2`` and ``max_keys`` of the most recent keys
    (two generations of 64-bit key hashes and 32-character content hashes, about 150 bytes a key:
    ~15 MB at most for the default 100,000; a repeat refreshes its key); repeats further apart
    than that are left to the sink's upsert, which never duplicates a row.
    """
    return Dedupe(key, max_keys=max_keys)
