"""Helpers of the search tests (a module name no other test folder uses)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from typing import Any

import anyio
import numpy as np

from cfstream import Document, LanceSink, Tombstone, source

_WORD = re.compile(r"[a-z0-9]+")


class HashEmbedder:
    """A deterministic bag-of-words embedder (the ``Embedder`` protocol): each word adds one to
    the slot its hash picks; vectors are L2-normalised. Shared words make similar vectors."""

    def __init__(self, dim: int = 64) -> None:
        self.name = f"test:hash-{dim}"
        self.dim = dim
        self.calls = 0

    def vector(self, text: str) -> np.ndarray[Any, np.dtype[np.float32]]:
        out = np.zeros(self.dim, dtype=np.float32)
        for word in _WORD.findall(text.lower()):
            slot = int.from_bytes(hashlib.sha1(word.encode()).digest()[:4], "big") % self.dim
            out[slot] += 1.0
        norm = float(np.linalg.norm(out))
        return out / norm if norm else out

    async def embed(self, texts: Sequence[str]) -> np.ndarray[Any, np.dtype[np.float32]]:
        self.calls += 1
        return np.stack([self.vector(t) for t in texts]) if texts else np.zeros((0, self.dim))


def with_vectors(docs: Iterable[Document], embedder: HashEmbedder) -> list[Document]:
    """The documents with ``vector`` set from their title and text."""
    out = []
    for d in docs:
        d.vector = embedder.vector(f"{d.title} {d.text_content or ''}").tolist()
        out.append(d)
    return out


def chunked(parent: Document, texts: Sequence[str]) -> list[Document]:
    """The contract's chunk rows of ``parent`` (before it), then the parent itself."""
    parent_uuid = parent.uuid
    rows: list[Document] = []
    for i, text in enumerate(texts):
        chunk = Document(
            source_id=f"{parent.source_id}#chunk-{i}",
            title=parent.title,
            text_content=text,
            source_type=parent.source_type,
            source_name=parent.source_name,
            source_url=parent.source_url,
            position=i,
            custom_metadata={
                "cfstream.chunk_of": parent_uuid,
                "cfstream.chunk_index": str(i),
                "cfstream.chunk_count": str(len(texts)),
            },
        )
        chunk.relate("parent", parent_uuid, title=parent.title)
        rows.append(chunk)
    parent.custom_metadata = {**(parent.custom_metadata or {}), "cfstream.chunks": str(len(texts))}
    return [*rows, parent]


def sync(
    uri: str,
    items: Sequence[Document | Tombstone],
    *,
    name: str = "notes",
    source_type: str = "notes",
    **sink_options: Any,
) -> LanceSink:
    """Run one source yielding ``items`` into a LanceSink at ``uri``; returns the sink."""

    @source(source_type=source_type)
    async def gen() -> Any:
        for item in items:
            yield item

    # these tests keep the full-text index whatever the pipeline (its default, "auto", keeps it
    # only for datasets meant for search: tests/search/test_indexes.py checks that)
    index = sink_options.get("index")
    if index is None:
        sink_options["index"] = {"fts": True}
    elif isinstance(index, dict) and "fts" not in index:
        sink_options["index"] = {**index, "fts": True}
    sink = LanceSink(uri, **sink_options)

    async def main() -> None:
        await (gen(name=name) | sink).run()

    anyio.run(main)
    return sink


def doc(source_id: str, title: str, text: str, **extra: Any) -> Document:
    """A document of the test source (``source_type`` "notes", source name "notes")."""
    return Document(
        source_id=source_id,
        title=title,
        text_content=text,
        source_type="notes",
        source_name="notes",
        source_url=f"https://notes.example/{source_id}",
        **extra,
    )
