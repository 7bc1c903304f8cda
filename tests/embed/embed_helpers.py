"""Test doubles for the embedding tests: a deterministic hashing bag-of-words embedder, and a
source over a list of documents that yields all of them on every run (no incremental state)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import numpy as np
import xxhash

import cfstream as cf
from cfstream.records import Checkpoint, Document


class HashEmbedder:
    """Bag of words hashed into ``dim`` buckets, L2-normalised. Records every call."""

    def __init__(self, dim: int = 32, name: str = "test:hash-bow", *, delay: float = 0.0) -> None:
        self.name = name
        self.dim = dim
        self.provider = "custom"
        self.model = "hash-bow"
        self.calls: list[list[str]] = []
        self.delay = delay
        self.in_flight = 0
        self.max_in_flight = 0
        self.closed = 0

    @property
    def texts(self) -> list[str]:
        """Every text embedded, in call order."""
        return [t for call in self.calls for t in call]

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await anyio.sleep(self.delay)
            out = np.zeros((len(texts), self.dim), np.float32)
            for i, t in enumerate(texts):
                for w in t.lower().split():
                    out[i, xxhash.xxh32_intdigest(w.encode()) % self.dim] += 1.0
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            return out / np.where(norms == 0, 1, norms)
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        self.closed += 1


def list_source(docs: list[Document], *, checkpoint_every: int = 0) -> Any:
    """A source named ``notes`` yielding copies of ``docs`` (the list may change between runs)."""

    @cf.source(source_type="notes")
    async def notes(cursor: Any = None) -> AsyncIterator[Any]:
        for i, d in enumerate(docs):
            yield Document(
                source_id=d.source_id,
                title=d.title,
                text_content=d.text_content,
                custom_metadata=dict(d.custom_metadata) if d.custom_metadata else None,
                updated_at=d.updated_at,
                vector=d.vector,
            )
            if checkpoint_every and (i + 1) % checkpoint_every == 0:
                yield Checkpoint({"at": i + 1})

    return notes(name="notes")


def notes(n: int, *, prefix: str = "note") -> list[Document]:
    """``n`` small distinct documents."""
    return [
        Document(
            source_id=f"{prefix}-{i}",
            title=f"Note {i}",
            text_content=f"{prefix} number {i} about topic{i % 7} and word{i}",
            updated_at="2026-01-01T00:00:00+00:00",
        )
        for i in range(n)
    ]
