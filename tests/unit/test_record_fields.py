"""The stored record is declared once (``records.RECORD_FIELDS``); the Arrow schema, the checks,
FrameRecord's metadata keys and the content hash follow it."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from cfstream.checks import check_document
from cfstream.errors import RecordError
from cfstream.frame import FrameRecord
from cfstream.records import RECORD_FIELDS, Document, Relationship, record_fields
from cfstream.storage import frame_schema

#: computed by cfstream before the declaration existed: every stored content_hash depends on it.
#: FULL_HASH (a document with a vector) changed once, when vectors began to be hashed as their
#: float32 bytes instead of their floats' text (rows with vectors are rewritten once when sent
#: again); MINIMAL_HASH, a document without one, never did.
FULL_HASH = "1f579918ab37f7615a02d74deb37bf5c"
MINIMAL_HASH = "6ceb8c79414e52afe57464392c9f41d7"


def _full() -> Document:
    return Document(
        source_id="s1",
        title="T",
        text_content="body",
        source_type="notes",
        source_url="https://x/1",
        author="a",
        contributors=["b", "c"],
        tags=["t1"],
        created_at="2024-01-01",
        updated_at=datetime(2024, 2, 3, 4, 5, 6, tzinfo=UTC),
        source_updated_at="2024-02-03T04:05:06+00:00",
        collection="col",
        collection_id="cid",
        collection_id_type="uuid",
        position=3,
        custom_metadata={"k": 1, "z": [1, 2]},
        relationships=[Relationship(type="parent", id="p")],
        record_type="document",
        uri="u",
        local_path="lp",
        cid="ci",
        context="ctx",
        version="v1",
        status="ok",
        source_file="f.md",
        raw_data=b"\x00raw",
        raw_data_type="application/octet-stream",
        vector=[0.5, 1.0],
    )


def test_every_document_field_is_declared_and_every_declared_field_is_a_document_field() -> None:
    declared = {f.name for f in RECORD_FIELDS if f.name not in ("uuid", "ingested_at")}
    document = {f.name for f in dataclasses.fields(Document)} - {"source_name"}
    assert declared == document


def test_the_arrow_schema_is_the_declaration_in_order() -> None:
    assert frame_schema(4).names == [f.name for f in RECORD_FIELDS]
    assert frame_schema().names == [f.name for f in RECORD_FIELDS if f.kind != "vector"]
    required = [f.name for f in RECORD_FIELDS if f.required]
    assert [f.name for f in frame_schema() if not f.nullable] == required


def test_content_hashes_are_unchanged_by_the_declaration() -> None:
    assert _full().compute_hash() == FULL_HASH
    assert Document(source_id="s2", title="T2").compute_hash() == MINIMAL_HASH


@pytest.mark.parametrize(
    "name",
    [f.name for f in RECORD_FIELDS if f.kind == "text" and not f.required and not f.derived],
)
def test_each_declared_text_field_is_checked(name: str) -> None:
    doc = dataclasses.replace(_full(), **{name: 5})
    with pytest.raises(RecordError) as err:
        check_document(doc)
    assert err.value.field == name


def test_frame_record_metadata_carries_every_declared_metadata_field() -> None:
    record = FrameRecord.from_document(_full())
    assert set(record_fields(metadata=True)) <= set(record.metadata)
    back = record.to_document()
    for name in record_fields(metadata=True, kind="text"):
        assert getattr(back, name) == getattr(_full(), name)
