"""``Sink.stored``: what a destination already holds, for stages that skip unchanged work."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import lance
import pytest

from cfstream import Document, LanceSink, MemorySink, source
from cfstream.records import PLACEHOLDER_VECTOR_DIM, Tombstone
from cfstream.storage import Batch, DatasetWriter, frame_schema, prepare_batch


def _docs(n: int, text: str = "t") -> list[Document]:
    return [Document(source_id=f"d{i}", title=f"T{i}", text_content=f"{text}{i}") for i in range(n)]


def test_lance_sink_reports_committed_rows(tmp_path: Path) -> None:
    uri = str(tmp_path / "kb.lance")

    @source(source_type="s")
    async def gen() -> AsyncIterator[Document]:
        for d in _docs(3):
            yield d

    async def main() -> None:
        sink = LanceSink(uri)
        assert await sink.stored(["x"], ["content_hash"]) == {}  # no dataset yet
        await (gen(name="s") | sink).run()
        probe = LanceSink(uri)
        uids = [
            Document(source_id=f"d{i}", title="", source_type="s", source_name="s").uuid
            for i in range(4)
        ]
        got = await probe.stored(uids, ["content_hash", "text_content", "no_such_column"])
        assert set(got) == set(uids[:3])
        assert got[uids[1]]["text_content"] == "t1"
        assert len(got[uids[1]]["content_hash"]) > 0
        assert "no_such_column" not in got[uids[1]]

    anyio.run(main)


def test_memory_sink_reports_latest_and_forgets_deleted() -> None:
    async def main() -> None:
        sink = MemorySink()
        a, b = _docs(2)
        for d in (a, b):
            d.source_type = "s"
        sink.items.extend([a, b, Tombstone(source_id="d1", source_type="s")])
        got = await sink.stored([a.uuid, b.uuid], ["text_content"])
        assert got == {a.uuid: {"text_content": "t0"}}

    anyio.run(main)


def _writer_batch(writer: DatasetWriter, ids: range) -> Batch:
    docs = [
        Document(source_id=f"d{i}", title=f"T{i}", text_content=f"t{i}", source_type="s")
        for i in ids
    ]
    batch = Batch(docs=docs)
    prepare_batch(batch, writer.builder)
    return batch


def _uuid(i: int) -> str:
    return Document(source_id=f"d{i}", title="", source_type="s").uuid


def test_a_first_load_answers_lookups_of_rows_it_never_wrote_without_a_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 17: without a uuid index each lookup scanned every row stored so far (the chunk
    stage asks once per chunk of documents): time and memory grew with the import."""
    writer = DatasetWriter(str(tmp_path / "kb.lance"), frame_schema(PLACEHOLDER_VECTOR_DIM))
    writer.open()
    for ids in (range(50), range(50, 100)):  # created, then appended (a fresh load)
        writer.commit(_writer_batch(writer, ids))
    scans: list[object] = []
    real = lance.LanceDataset.to_table

    def counting(self: lance.LanceDataset, *args: object, **kwargs: object) -> object:
        scans.append(kwargs.get("filter"))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(lance.LanceDataset, "to_table", counting)
    assert writer.stored([_uuid(i) for i in range(100, 300)], ["title"]) == {}
    assert scans == []
    got = writer.stored([_uuid(7), _uuid(70), _uuid(700)], ["title"])
    assert {u: r["title"] for u, r in got.items()} == {_uuid(7): "T7", _uuid(70): "T70"}

    # another writer's rows: the lookup reads the dataset again
    other = DatasetWriter(str(tmp_path / "kb.lance"), frame_schema(PLACEHOLDER_VECTOR_DIM))
    other.open()
    other.commit(_writer_batch(other, range(200, 210)))
    got = writer.stored([_uuid(i) for i in range(195, 205)], ["title"])
    assert sorted(r["title"] for r in got.values()) == [f"T{i}" for i in range(200, 205)]
