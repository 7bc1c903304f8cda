from __future__ import annotations

import uuid
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest

import cfstream as cf
from cfstream.records import (
    CFSTREAM_NAMESPACE,
    Document,
    Relationship,
    Tombstone,
    documents_to_table,
    frame_schema,
    parse_timestamp,
    record_uuid,
    uuid_array,
    uuid_digest,
    uuid_digests,
)


def test_record_uuid_is_uuid5_of_type_and_id() -> None:
    expected = str(uuid.uuid5(CFSTREAM_NAMESPACE, "github:o/r:README.md"))
    assert record_uuid("github", "o/r:README.md") == expected
    assert expected == expected.lower()
    assert record_uuid("github", "A") != record_uuid("github", "a")
    assert Document(source_id="x", title="t", source_type="s").uuid == record_uuid("s", "x")


def test_the_source_name_is_part_of_the_uuid_unless_it_is_the_type() -> None:
    def u5(text: str) -> str:
        return str(uuid.uuid5(CFSTREAM_NAMESPACE, text))

    assert record_uuid("files", "README.md", source_name="files") == u5("files:README.md")
    assert record_uuid("files", "README.md", source_name=None) == u5("files:README.md")
    assert record_uuid("files", "README.md", source_name="alpha") == u5("alpha/files:README.md")
    assert record_uuid("files", "README.md", source_name="beta") != record_uuid(
        "files", "README.md", source_name="alpha"
    )
    # a name holding "/" or ":" is percent-encoded: no (name, type, id) can spell another's input
    assert record_uuid("b:c", "x", source_name="a/b") == u5("a%2Fb/b:c:x")
    assert record_uuid("t", "c/d:e", source_name="a") != record_uuid("d", "e", source_name="a/t:c")
    assert record_uuid("t", "x/t:y", source_name=None) != record_uuid("t", "y", source_name="t:x")
    doc = Document(source_id="x", title="t", source_type="s", source_name="n")
    assert doc.uuid == record_uuid("s", "x", source_name="n")
    assert Tombstone("x", "s", "n").uuid == doc.uuid


def test_uuid_digests_match_record_uuid_for_mixed_batches() -> None:
    docs = [
        Document(source_id=sid, title="t", source_type=st, source_name=name)
        for sid in ("a", "b")
        for st, name in (("files", None), ("files", "files"), ("files", "A"), ("notes", "A"))
    ]
    expected = [
        record_uuid(d.source_type or "", d.source_id, source_name=d.source_name) for d in docs
    ]
    assert uuid_array(uuid_digests(docs)).to_pylist() == expected
    one = [d for d in docs if d.source_name == "A" and d.source_type == "files"]
    assert uuid_array(uuid_digests(one)).to_pylist() == [d.uuid for d in one]
    odd = Document(source_id=7, title="t", source_type="files", source_name="A")  # type: ignore[arg-type]
    assert uuid_digests([odd]) == [uuid_digest("files", "7", source_name="A")]


def test_content_hash_changes_with_content_only() -> None:
    a = Document(source_id="1", title="t", text_content="hello", source_type="s")
    b = Document(source_id="1", title="t", text_content="hello", source_type="s")
    assert a.compute_hash() == b.compute_hash()
    c = Document(source_id="1", title="t", text_content="hello!", source_type="s")
    assert c.compute_hash() != a.compute_hash()
    a.relate("parent", record_uuid("s", "0"))
    assert a.compute_hash() != b.compute_hash()


def test_content_hash_takes_vectors_as_stored_values() -> None:
    def d(vector: object = None, raw: bytes | None = None) -> Document:
        return Document(source_id="1", title="t", source_type="s", vector=vector, raw_data=raw)  # type: ignore[arg-type]

    as_list, as_f8 = d([0.5, 1.0]), d(np.array([0.5, 1.0]))
    assert (
        as_list.compute_hash()
        == as_f8.compute_hash()
        == d(np.array([0.5, 1.0], "f4")).compute_hash()
    )
    assert as_list.compute_hash() != d([0.5, 1.5]).compute_hash() != d().compute_hash()
    assert d([]).compute_hash() != d().compute_hash()
    # the vector's end is part of the hash: bytes cannot move between the vector and raw_data
    one = np.array([1.0], "f4").tobytes()
    assert d([1.0, 1.0], b"x").compute_hash() != d([1.0], one + b"x").compute_hash()
    assert d(["not", "numbers"]).compute_hash() != d(["other"]).compute_hash()


def test_schema_has_frame_record_columns_and_cfstream_columns() -> None:
    schema = frame_schema()
    for name in ("uuid", "text_content", "title", "relationships", "custom_metadata", "raw_data"):
        assert name in schema.names
    assert schema.field("uuid").nullable is False
    assert schema.field("created_at").type == pa.string()
    assert schema.field("source_updated_at").type == pa.timestamp("us", tz="UTC")
    assert "vector" not in schema.names
    with_vec = frame_schema(8)
    assert with_vec.field("vector").type == pa.list_(pa.float32(), 8)


def test_documents_to_table_builds_every_column() -> None:
    docs = [
        Document(
            source_id="a",
            title="A",
            text_content="body",
            source_type="s",
            tags=["x", "y"],
            custom_metadata={"s_num": 3, "s_flag": True, "s_list": [1, 2]},
            relationships=[Relationship("parent", id=record_uuid("s", "b"), title="B")],
            created_at=datetime(2024, 5, 6, 7, 8, tzinfo=UTC),
            updated_at="2024-05-07T10:00:00Z",
        ),
        Document(source_id="b", title="B", source_type="s"),
    ]
    table = documents_to_table(docs, frame_schema())
    rows = table.to_pylist()
    assert rows[0]["uuid"] == record_uuid("s", "a")
    assert rows[0]["created_at"] == "2024-05-06"
    assert rows[0]["updated_at"] == "2024-05-07"
    assert rows[0]["source_updated_at"] == datetime(2024, 5, 7, 10, tzinfo=UTC)
    assert rows[0]["custom_metadata"] == [
        {"key": "s_num", "value": "3"},
        {"key": "s_flag", "value": "true"},
        {"key": "s_list", "value": "[1,2]"},
    ]
    assert rows[0]["relationships"][0]["type"] == "parent"
    assert rows[1]["tags"] == [] and rows[1]["relationships"] == []
    assert rows[0]["content_hash"] == docs[0].compute_hash()


def test_vectors_need_a_vector_column() -> None:
    doc = Document(source_id="a", title="A", source_type="s", vector=[0.5, 1.0])
    with pytest.raises(ValueError, match="embed_dim"):
        documents_to_table([doc], frame_schema())
    table = documents_to_table(
        [doc, Document(source_id="b", title="B", source_type="s")], frame_schema(2)
    )
    assert table.column("vector").to_pylist() == [[0.5, 1.0], None]


def test_numpy_vectors_with_missing_ones_keep_each_row_in_place() -> None:
    """The embed stage's batches: numpy vectors between documents with none (chunked parents)."""
    docs = [
        Document(source_id="a", title="A", source_type="s", vector=np.array([0.5, 1.0])),
        Document(source_id="b", title="B", source_type="s"),
        Document(source_id="c", title="C", source_type="s", vector=np.array([2.0, 3.0], "f4")),
    ]
    table = documents_to_table(docs, frame_schema(2))
    assert table.column("vector").to_pylist() == [[0.5, 1.0], None, [2.0, 3.0]]
    zeros = documents_to_table(docs, frame_schema(2), fill_zero_vectors=True)
    assert zeros.column("vector").to_pylist() == [[0.5, 1.0], [0.0, 0.0], [2.0, 3.0]]
    assert zeros.column("vector").null_count == 0
    docs[2].vector = np.array([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="has 3 values, expected 2"):
        documents_to_table(docs, frame_schema(2))


def test_parse_timestamp() -> None:
    assert parse_timestamp("2024-01-02T03:04:05Z") == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parse_timestamp(datetime(2024, 1, 2)) == datetime(2024, 1, 2, tzinfo=UTC)
    assert parse_timestamp(None) is None
    with pytest.raises(ValueError):
        parse_timestamp("yesterday")


def test_public_api_all_is_sorted_and_complete() -> None:
    assert list(cf.__all__) == sorted(cf.__all__)
    for name in cf.__all__:
        obj = getattr(cf, name)
        assert obj.__doc__, f"{name} has no docstring"
