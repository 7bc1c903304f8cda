"""FrameRecord and FrameDataset: the ContextFrame API over the LanceSink."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lance
import pytest

from cfstream.errors import CommitError, DatasetError, RecordError
from cfstream.frame import FrameDataset, FrameRecord, translate_filter
from cfstream.records import Document, record_uuid


def _record(n: int, **extra: Any) -> FrameRecord:
    return FrameRecord.create(
        title=f"Page {n}",
        content=f"Body {n}",
        source_type="wiki",
        source_id=f"p{n}",
        source_url=f"https://wiki.example/p{n}",
        author="ada",
        custom_metadata={"wiki_space": "eng", "wiki_size": n},
        **extra,
    )


def test_record_uuid_is_derived_and_metadata_is_contextframe_shaped() -> None:
    r = _record(1, tags=["a"])
    assert r.uuid == record_uuid("wiki", "p1") == r.metadata["uuid"]
    assert r.metadata["title"] == r.title == "Page 1"
    assert r.text_content == r.content == "Body 1"
    assert r.metadata["custom_metadata"] == {"wiki_space": "eng", "wiki_size": 1}
    by_url = FrameRecord.create(title="X", source_url="https://x.example/a")
    assert by_url.metadata["source_id"] == "https://x.example/a"
    assert by_url.metadata["source_type"] == "manual"
    with pytest.raises(ValueError, match="source_id"):
        FrameRecord.create(title="X", uuid="00000000-0000-0000-0000-000000000000")


def test_add_relationship_accepts_the_guides_positional_form() -> None:
    parent = FrameRecord.create(title="Parent", record_type="collection_header")
    child = _record(2)
    child.add_relationship(parent.uuid, "child", title=f"Child of {parent.title}")
    child.add_relationship(parent, relationship_type="member_of")
    child.add_relationship("https://example.com/spec", "reference")
    assert child.metadata["relationships"] == [
        {"type": "child", "id": parent.uuid, "title": "Child of Parent"},
        {"type": "member_of", "id": parent.uuid, "title": "Parent"},
        {"type": "reference", "uri": "https://example.com/spec"},
    ]
    with pytest.raises(ValueError, match="not one of"):
        child.add_relationship(parent.uuid, "sibling")
    doc = child.to_document()
    assert [r.type for r in doc.relationships or []] == ["child", "member_of", "reference"]


def test_document_round_trip() -> None:
    doc = Document(
        source_id="x1",
        source_type="notes",
        title="T",
        text_content="c",
        tags=["t"],
        updated_at="2024-02-03T04:05:06Z",
        custom_metadata={"notes_folder": "inbox"},
    )
    rec = FrameRecord.from_document(doc)
    assert rec.uuid == doc.uuid
    assert rec.metadata["updated_at"] == "2024-02-03T04:05:06Z"
    back = rec.to_document()
    assert (back.source_id, back.title, back.tags, back.custom_metadata) == (
        "x1",
        "T",
        ["t"],
        {"notes_folder": "inbox"},
    )


async def test_dataset_add_many_upserts_and_contextframe_reads_it(tmp_path: Path) -> None:
    path = str(tmp_path / "kb.lance")
    ds = FrameDataset.create(path)
    with pytest.raises(DatasetError, match="already exists"):
        FrameDataset.create(path)
    assert await ds.add_many([_record(i) for i in range(5)], batch_size=2) == 5
    assert await ds.add_many(iter([_record(i) for i in range(3, 7)]), batch_size=3) == 4
    assert ds.count_rows() == 7
    assert len(set(lance.dataset(path).to_table().column("uuid").to_pylist())) == 7

    got = FrameDataset.open(path).get_by_uuid(_record(3).uuid)
    assert got is not None and got.metadata["custom_metadata"]["wiki_size"] == "3"

    contextframe = pytest.importorskip("contextframe")
    frame = contextframe.FrameDataset.open(path).get_by_uuid(_record(3).uuid)
    assert frame.text_content == "Body 3"
    assert frame.metadata["title"] == "Page 3"
    assert frame.metadata["custom_metadata"]["wiki_space"] == "eng"


async def test_add_many_validates_a_list_before_writing(tmp_path: Path) -> None:
    ds = FrameDataset.create(str(tmp_path / "kb.lance"))
    bad = _record(9)
    bad.metadata["title"] = ""
    with pytest.raises(RecordError, match="title"):
        await ds.add_many([_record(1), bad])
    assert ds.count_rows() == 0


async def test_update_record_is_atomic_and_leaves_the_row_on_invalid_input(
    tmp_path: Path,
) -> None:
    ds = FrameDataset.create(str(tmp_path / "kb.lance"))
    await ds.add(_record(1))
    before = lance.dataset(ds.uri).to_table().to_pylist()

    invalid = _record(1)
    invalid.metadata["record_type"] = "not-a-type"
    with pytest.raises(RecordError, match="record_type"):
        await ds.update_record(invalid)
    wrong_vector = _record(1, vector=[0.5, 0.5])
    with pytest.raises(RecordError, match="vector"):
        await ds.update_record(wrong_vector)
    assert lance.dataset(ds.uri).to_table().to_pylist() == before

    fixed = _record(1)
    fixed.content = "Body 1, edited"
    await ds.update_record(fixed.uuid, fixed)  # the guide's (uuid, record) form
    got = ds.get_by_uuid(fixed.uuid)
    assert got is not None and got.text_content == "Body 1, edited"
    assert ds.count_rows() == 1

    with pytest.raises(DatasetError, match="upsert_record"):
        await ds.update_record(_record(2))
    await ds.upsert_record(_record(2))
    assert ds.count_rows() == 2


async def test_update_record_keeps_the_row_when_the_write_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = FrameDataset.create(str(tmp_path / "kb.lance"))
    await ds.add(_record(1))
    before = lance.dataset(ds.uri).to_table().to_pylist()

    def broken_merge(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(lance.LanceDataset, "merge_insert", broken_merge)
    edited = _record(1)
    edited.content = "never written"
    with pytest.raises(CommitError, match="full"):
        await ds.update_record(edited)
    monkeypatch.undo()
    assert lance.dataset(ds.uri).to_table().to_pylist() == before

    # ContextFrame's own update_record (delete, then add) loses the row in the same situation
    contextframe = pytest.importorskip("contextframe")
    frame = contextframe.FrameDataset.open(ds.uri)
    monkeypatch.setattr(contextframe.FrameDataset, "add", lambda self, record: broken_merge(self))
    theirs = contextframe.FrameRecord.create(
        title="Page 1", content="never written", uuid=edited.uuid
    )
    with pytest.raises(OSError):
        frame.update_record(theirs)
    assert lance.dataset(ds.uri).count_rows() == 0


async def test_delete_scanner_and_to_batches(tmp_path: Path) -> None:
    ds = FrameDataset.create(str(tmp_path / "kb.lance"))
    await ds.add_many([_record(i) for i in range(3)])
    rows = ds.scanner(filter="custom_metadata.source_id = 'p1'").to_table().to_pylist()
    assert [r["uuid"] for r in rows] == [_record(1).uuid]
    assert ds.scanner(filter="custom_metadata.wiki_size = '2'").to_table().num_rows == 1
    assert translate_filter("custom_metadata.k = 'it''s'") == (
        "array_has(custom_metadata, named_struct('key', 'k', 'value', 'it''s'))"
    )
    metas = [
        row["custom_metadata"]
        for b in ds.to_batches(columns=["custom_metadata"])
        for row in b.to_pylist()
    ]
    assert sorted(m["source_id"] for m in metas) == ["p0", "p1", "p2"]
    assert all(m["wiki_space"] == "eng" for m in metas)
    assert await ds.delete_record(_record(1).uuid) == 1
    assert await ds.delete_record(_record(1).uuid) == 0
    assert ds.get_by_uuid(_record(1).uuid) is None
    assert ds.count_rows() == 2


def test_open_missing_dataset_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="FrameDataset.create"):
        FrameDataset.open(str(tmp_path / "nothing.lance"))
