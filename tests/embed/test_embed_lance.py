"""``T.embed`` into a real LanceSink: the vector column without ``embed_dim``, only changed content
embedded (counted), the embedder recorded with the dataset, a change of embedder refused before
anything is written, and ``reembed`` replacing every vector."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import lance
import numpy as np
import pyarrow as pa
import pytest
from embed_helpers import HashEmbedder, list_source, notes

from cfstream import transforms as T
from cfstream.embed import EmbedderChangedError, dataset_embedder
from cfstream.errors import DatasetError
from cfstream.records import Document
from cfstream.sinks import LanceSink


def _sync(uri: str, docs: list[Document], emb: Any, **kw: Any) -> Any:
    pipeline = list_source(docs) | T.embed(emb, **kw) | LanceSink(uri)
    return anyio.run(lambda: pipeline.run(dead_letter_path=False))


def _rows(uri: str) -> dict[str, dict[str, Any]]:
    tbl = lance.dataset(uri).to_table(
        columns=["source_id", "vector", "content_hash", "ingested_at"]
    )
    return {r["source_id"]: r for r in tbl.to_pylist()}


def test_vector_column_comes_from_the_stage_and_the_embedder_is_recorded(tmp_path: Path) -> None:
    uri = str(tmp_path / "kb.lance")
    assert dataset_embedder(uri) is None
    _sync(uri, notes(5), HashEmbedder(dim=16))
    ds = lance.dataset(uri)
    assert ds.schema.field("vector").type == pa.list_(pa.float32(), 16)
    rows = _rows(uri)
    assert all(len(r["vector"]) == 16 for r in rows.values())
    rec = dataset_embedder(uri)
    assert rec is not None
    assert (rec["name"], rec["dim"], rec["provider"], rec["model"]) == (
        "test:hash-bow",
        16,
        "custom",
        "hash-bow",
    )
    assert set(rec) >= {"id", "base_url", "created_at"}


def test_only_changed_content_is_embedded_across_syncs(tmp_path: Path) -> None:
    uri = str(tmp_path / "kb.lance")
    docs = notes(40)
    emb = HashEmbedder()
    _sync(uri, docs, emb, batch_size=8)
    assert len(emb.texts) == 40
    first = _rows(uri)

    # (a) nothing changed: the embedder is not called at all, and no row is rewritten
    report = _sync(uri, docs, emb, batch_size=8)
    assert len(emb.texts) == 40
    assert report.sources["notes"].skipped_unchanged == 40
    assert report.sink.rows_in == 0
    assert lance.dataset(uri).count_rows() == 40

    # one document edited, one added: exactly those two are embedded and written
    docs[3].text_content = "an edited note about something else"
    docs.append(Document(source_id="new", title="New", text_content="a brand new note"))
    report = _sync(uri, docs, emb, batch_size=8)
    assert sorted(emb.texts[40:]) == ["a brand new note", "an edited note about something else"]
    rows = _rows(uri)
    assert len(rows) == 41
    assert rows["note-3"]["content_hash"] != first["note-3"]["content_hash"]
    expect = anyio.run(HashEmbedder().embed, ["an edited note about something else"])[0]
    assert np.allclose(rows["note-3"]["vector"], expect)
    assert rows["note-4"]["ingested_at"] == first["note-4"]["ingested_at"]  # untouched

    # a crash-free third run after the edit: nothing again
    _sync(uri, docs, emb, batch_size=8)
    assert len(emb.texts) == 42


def test_an_existing_dataset_without_vectors_gets_the_column(tmp_path: Path) -> None:
    uri = str(tmp_path / "kb.lance")
    docs = notes(4)
    anyio.run(lambda: (list_source(docs) | LanceSink(uri)).run(dead_letter_path=False))
    # a dataset synced without embeddings holds a 1-wide zero placeholder (for ContextFrame)
    assert lance.dataset(uri).schema.field("vector").type == pa.list_(pa.float32(), 1)
    emb = HashEmbedder(dim=8)
    _sync(uri, docs, emb)
    ds = lance.dataset(uri)
    assert ds.schema.field("vector").type == pa.list_(pa.float32(), 8)
    assert ds.count_rows() == 4
    # the rows already stored had no mark: embedded once, and rewritten with their vectors
    assert len(emb.texts) == 4
    assert ds.count_rows(filter="vector IS NULL") == 0
    assert dataset_embedder(uri)["dim"] == 8  # type: ignore[index]


def test_another_embedder_stops_the_run_before_writing(tmp_path: Path) -> None:
    uri = str(tmp_path / "kb.lance")
    docs = notes(3)
    _sync(uri, docs, HashEmbedder(dim=16))
    version = lance.dataset(uri).version
    docs[0].text_content = "edited"
    other = HashEmbedder(dim=16, name="test:other-model")
    with pytest.raises(EmbedderChangedError) as caught:
        _sync(uri, docs, other)
    msg = str(caught.value)
    assert "'test:hash-bow' (16 wide)" in msg and "'test:other-model'" in msg
    assert "reembed: true" in msg and "--full" in msg
    assert other.calls == []  # refused before anything was embedded
    wider = HashEmbedder(dim=24)  # same name, other width: refused as well
    with pytest.raises(EmbedderChangedError, match="24 wide"):
        _sync(uri, docs, wider)
    assert lance.dataset(uri).version == version  # nothing was written
    assert dataset_embedder(uri)["name"] == "test:hash-bow"  # type: ignore[index]


def test_reembed_replaces_every_vector_and_rewrites_the_rows(tmp_path: Path) -> None:
    uri = str(tmp_path / "kb.lance")
    docs = notes(6)
    _sync(uri, docs, HashEmbedder(dim=16))
    before = _rows(uri)
    other = HashEmbedder(dim=24, name="test:other-model")
    _sync(uri, docs[:4], other, reembed=True)  # a partial re-sync: only 4 documents come
    rows = _rows(uri)
    rec = dataset_embedder(uri)
    assert rec is not None and (rec["name"], rec["dim"]) == ("test:other-model", 24)
    for sid in ("note-0", "note-1", "note-2", "note-3"):
        assert len(rows[sid]["vector"]) == 24
        # (b) a row whose vector changed is really rewritten (its content hash changed)
        assert rows[sid]["content_hash"] != before[sid]["content_hash"]
    # rows that did not come through have no vector: never one of the old embedder
    # not re-embedded yet: zeros (no vector, for ContextFrame's readers), never the old model's
    assert not any(rows["note-4"]["vector"]) and not any(rows["note-5"]["vector"])
    # the next run with the new embedder embeds those two only
    _sync(uri, docs, other)
    assert sorted(other.texts[4:]) == sorted(d.text_content for d in docs[4:])  # type: ignore[type-var]
    assert lance.dataset(uri).count_rows(filter="vector IS NULL") == 0


def test_reembed_back_to_an_earlier_embedder_embeds_again(tmp_path: Path) -> None:
    """Marks of rows embedded under an earlier record of the same embedder never count."""
    uri = str(tmp_path / "kb.lance")
    docs = notes(3)
    a, b = HashEmbedder(dim=8), HashEmbedder(dim=8, name="test:b")
    _sync(uri, docs, a)
    _sync(uri, docs[:1], b, reembed=True)  # drops every vector; only note-0 re-embedded
    _sync(uri, docs[:1], a, reembed=True)  # and back
    _sync(uri, docs, a)
    assert lance.dataset(uri).count_rows(filter="vector IS NULL") == 0
    assert len(a.texts) == 3 + 1 + 2


def test_vectors_stored_without_a_record_are_not_silently_adopted(tmp_path: Path) -> None:
    uri = str(tmp_path / "kb.lance")
    docs = notes(2)
    for d in docs:
        d.vector = [0.5] * 8
    anyio.run(lambda: (list_source(docs) | LanceSink(uri, embed_dim=8)).run(dead_letter_path=False))
    with pytest.raises(EmbedderChangedError, match="unrecorded"):
        _sync(uri, notes(2), HashEmbedder(dim=8))
    _sync(uri, notes(2), HashEmbedder(dim=8), reembed=True)
    assert dataset_embedder(uri)["name"] == "test:hash-bow"  # type: ignore[index]


def test_embed_dim_given_and_different_is_a_clear_error(tmp_path: Path) -> None:
    uri = str(tmp_path / "kb.lance")
    pipeline = list_source(notes(2)) | T.embed(HashEmbedder(dim=8)) | LanceSink(uri, embed_dim=12)
    with pytest.raises(
        DatasetError, match="embed_dim is 12 but embedder 'test:hash-bow' makes 8-wide"
    ):
        anyio.run(lambda: pipeline.run(dead_letter_path=False))


def test_a_dry_run_checks_the_embedder_and_changes_nothing(tmp_path: Path) -> None:
    uri = str(tmp_path / "kb.lance")
    docs = notes(3)
    anyio.run(lambda: (list_source(docs) | LanceSink(uri)).run(dead_letter_path=False))
    version = lance.dataset(uri).version
    pipeline = list_source(docs) | T.embed(HashEmbedder(dim=8)) | LanceSink(uri)
    anyio.run(lambda: pipeline.run(dry_run=True))
    ds = lance.dataset(uri)
    assert ds.version == version
    assert ds.schema.field("vector").type == pa.list_(pa.float32(), 1)  # still the placeholder
    _sync(uri, docs, HashEmbedder(dim=8))
    other = list_source(docs) | T.embed(HashEmbedder(dim=8, name="x")) | LanceSink(uri)
    with pytest.raises(EmbedderChangedError):
        anyio.run(lambda: other.run(dry_run=True))


def test_the_ray_engine_refuses_the_embed_stage(tmp_path: Path) -> None:
    from cfstream.distributed.ray import run_ray
    from cfstream.errors import PipelineError

    pipeline = list_source(notes(1)) | T.embed(HashEmbedder()) | LanceSink(str(tmp_path / "kb"))
    with pytest.raises(PipelineError, match="Ray engine does not run the embed stage"):
        run_ray(pipeline)
    # nor the chunk stage: its workers cannot see the stored chunks to delete stale ones
    chunked = list_source(notes(1)) | T.chunk(max_tokens=64, overlap=8) | LanceSink(str(tmp_path))
    with pytest.raises(PipelineError, match="Ray engine does not run the chunk stage"):
        run_ray(chunked)


class CountingSink(LanceSink):
    """A LanceSink counting the stage's lookups of what is stored."""

    lookups: list[int]

    async def stored(self, uuids: Any, columns: Any) -> dict[str, dict[str, Any]]:
        self.lookups = [*getattr(self, "lookups", []), len(uuids)]
        return await super().stored(uuids, columns)


def test_lookups_are_batched_and_a_first_load_makes_none(tmp_path: Path) -> None:
    uri = str(tmp_path / "kb.lance")
    docs = notes(30)

    def sync() -> CountingSink:
        sink = CountingSink(uri)
        pipeline = list_source(docs) | T.embed(HashEmbedder()) | sink
        anyio.run(lambda: pipeline.run(dead_letter_path=False, chunk_size=500))
        return sink

    assert getattr(sync(), "lookups", []) == []  # a new dataset: nothing can be stored yet
    assert sync().lookups == [30]  # one lookup for the chunk, not one per document


def test_a_changed_document_with_the_same_text_reuses_its_vector(tmp_path: Path) -> None:
    """A chunk of an edited document (new timestamps, same text) is rewritten, never re-embedded."""
    uri = str(tmp_path / "kb.lance")
    docs = notes(5)
    emb = HashEmbedder()
    _sync(uri, docs, emb)
    before = _rows(uri)
    docs[1].title = "A new title"
    docs[2].updated_at = "2026-02-02T00:00:00+00:00"
    docs[3].text_content = "new words"
    _sync(uri, docs, emb)
    assert emb.texts[5:] == ["new words"]
    rows = _rows(uri)
    for sid in ("note-1", "note-2"):
        assert rows[sid]["content_hash"] != before[sid]["content_hash"]  # rewritten
        assert rows[sid]["vector"] == before[sid]["vector"]  # with the same vector
    title = lance.dataset(uri).to_table(columns=["title"], filter="source_id = 'note-1'")
    assert title.column("title").to_pylist() == ["A new title"]
    _sync(uri, docs, emb)
    assert len(emb.texts) == 6  # and then nothing at all


def test_reembed_left_on_with_the_recorded_embedder_embeds_nothing_again(tmp_path: Path) -> None:
    uri = str(tmp_path / "kb.lance")
    docs = notes(4)
    emb = HashEmbedder()
    _sync(uri, docs, emb, reembed=True)
    rec = dataset_embedder(uri)
    _sync(uri, docs, emb, reembed=True)
    assert len(emb.texts) == 4
    assert dataset_embedder(uri) == rec  # not replaced
