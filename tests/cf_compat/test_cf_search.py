"""ContextFrame 0.1.1's own ``FrameDataset`` reads what the LanceSink writes, and searches it."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import lance
import numpy as np
import pyarrow as pa
import pytest

from cfstream import Document, LanceSink, source
from cfstream.records import frame_schema
from cfstream.sinks.indexes import IndexSettings, refresh_indexes

contextframe = pytest.importorskip("contextframe")

DIM = 32
NOTES = {
    "pasta": ("Weeknight pasta", "Boil spaghetti and toss it with garlic and olive oil."),
    "bikes": ("Fixing a flat", "Find the puncture and patch the inner tube."),
    "tax": ("Filing taxes", "Gather receipts and invoices before the deadline."),
}


def _vector(text: str) -> list[float]:
    out = np.zeros(DIM, dtype=np.float32)
    for word in text.lower().split():
        out[int(hashlib.sha1(word.encode()).hexdigest()[:8], 16) % DIM] += 1.0
    return (out / np.linalg.norm(out)).tolist()


def _sync(uri: str, docs: Sequence[Document], **options: Any) -> None:
    @source(source_type="notes")
    async def gen() -> AsyncIterator[Document]:
        for d in docs:
            yield d

    async def main() -> None:
        await (gen(name="notes") | LanceSink(uri, **options)).run()

    anyio.run(main)


def _docs(vectors: bool) -> list[Document]:
    return [
        Document(
            source_id=sid,
            title=title,
            text_content=text,
            vector=_vector(text) if vectors else None,
        )
        for sid, (title, text) in NOTES.items()
    ]


def test_a_default_dataset_is_readable_by_framedataset(tmp_path: Path) -> None:
    uri = str(tmp_path / "kb.lance")
    _sync(uri, _docs(vectors=False))
    frames = contextframe.FrameDataset.open(uri)
    hits = frames.full_text_search("puncture", columns=["text_content"], k=5)
    assert [h.metadata["source_id"] for h in hits] == ["bikes"]  # was KeyError: 'vector'
    assert hits[0].text_content == NOTES["bikes"][1]
    rows = list(frames.stream_by_filter("source_type = 'notes'"))
    assert sorted(r.metadata["title"] for r in rows) == sorted(t for t, _ in NOTES.values())


def test_an_older_default_dataset_gets_the_column_at_its_next_sync(tmp_path: Path) -> None:
    uri = str(tmp_path / "kb.lance")
    old = frame_schema()  # what cfstream wrote before: no vector column at all
    table = pa.Table.from_pylist(
        [{"uuid": "u1", "title": "Old", "source_id": "old", "text_content": "older note"}],
        schema=old,
    )
    lance.write_dataset(table, uri, schema=old)
    _sync(uri, _docs(vectors=False))
    frames = contextframe.FrameDataset.open(uri)
    hits = frames.full_text_search("older", columns=["text_content"], k=5)
    assert [h.metadata["title"] for h in hits] == ["Old"]


def test_with_vectors_knn_and_full_text_search_return_the_right_records(tmp_path: Path) -> None:
    uri = str(tmp_path / "kb.lance")
    parent = Document(
        source_id="guide",
        title="Travel guide",
        text_content="Trains in Japan run on time.",
        custom_metadata={"cfstream.chunks": "1"},
    )  # a chunked parent: stored without a vector
    _sync(uri, [*_docs(vectors=True), parent], embed_dim=DIM)
    frames = contextframe.FrameDataset.open(uri)
    near = frames.knn_search(np.asarray(_vector(NOTES["tax"][1]), dtype=np.float32), k=2)
    assert near[0].metadata["source_id"] == "tax"
    assert len(near[0].vector) == DIM
    hits = frames.full_text_search("trains", columns=["text_content"], k=5)
    assert [h.metadata["source_id"] for h in hits] == ["guide"]  # a null vector failed here
    assert [h.metadata["source_id"] for h in frames.full_text_search("garlic", k=5)] == ["pasta"]


def test_turning_embeddings_on_replaces_the_placeholder(tmp_path: Path) -> None:
    uri = str(tmp_path / "kb.lance")
    _sync(uri, _docs(vectors=False))
    assert lance.dataset(uri).schema.field("vector").type.list_size == 1
    _sync(uri, _docs(vectors=True), embed_dim=DIM)
    ds = lance.dataset(uri)
    assert ds.schema.field("vector").type.list_size == DIM
    refresh_indexes(ds, IndexSettings(vector=False))
    frames = contextframe.FrameDataset.open(uri)
    near = frames.knn_search(np.asarray(_vector(NOTES["pasta"][1]), dtype=np.float32), k=1)
    assert near[0].metadata["source_id"] == "pasta"
