"""check_document: one pass, and the first invalid field named in the error."""

from __future__ import annotations

from typing import Any

import pytest

from cfstream.checks import check_document
from cfstream.errors import RecordError
from cfstream.records import Document, Relationship

BAD: list[tuple[dict[str, Any], str, str]] = [
    ({"source_id": ""}, "source_id", "required"),
    ({"title": "  "}, "title", "required"),
    ({"title": "x\ud800"}, "title", "UTF-8"),
    ({"author": 5}, "author", "expected a string, got int"),
    ({"collection": "ok", "status": "\udc80"}, "status", "UTF-8"),
    ({"source_url": "same", "source_file": b"x"}, "source_file", "got bytes"),
    ({"record_type": "page"}, "record_type", "is not one of"),
    ({"tags": ["a", 1]}, "tags", "list of strings"),
    ({"contributors": "alice"}, "contributors", "list of strings"),
    ({"updated_at": "yesterday"}, "updated_at", "ISO 8601"),
    ({"created_at": 5}, "created_at", "got int"),
    ({"updated_at": "2024-01-01", "source_updated_at": "soon"}, "source_updated_at", "ISO"),
    ({"position": 2**31}, "position", "32-bit"),
    ({"custom_metadata": {1: "x"}}, "custom_metadata", "keys must be strings"),
    ({"custom_metadata": ["x"]}, "custom_metadata", "expected a dict"),
    ({"relationships": [Relationship(type="cousin", id="u")]}, "relationships", "cousin"),
    ({"relationships": [Relationship(type="parent")]}, "relationships", "needs one of"),
    ({"relationships": ["u"]}, "relationships", "expected Relationship"),
    ({"raw_data": "text"}, "raw_data", "expected bytes"),
]


@pytest.mark.parametrize(("fields", "field", "reason"), BAD)
def test_the_first_invalid_field_is_named(fields: dict[str, Any], field: str, reason: str) -> None:
    doc = Document(**{"source_id": "s", "title": "t", **fields})
    with pytest.raises(RecordError, match=reason) as info:
        check_document(doc)
    assert info.value.field == field


def test_valid_documents_pass() -> None:
    check_document(Document(source_id="s", title="Tî", text_content="ü", tags=["a"]))
    check_document(
        Document(
            source_id="s",
            title="t",
            updated_at="2024-01-01T00:00:00+00:00",
            relationships=[Relationship(type="parent", id="u")],
            custom_metadata={"k": 1},
            raw_data=bytearray(b"x"),
        )
    )


def test_text_size_limit() -> None:
    doc = Document(source_id="s", title="t", text_content="é" * 100)
    check_document(doc, max_text_bytes=200)
    with pytest.raises(RecordError, match="200 bytes, over the limit of 199") as info:
        check_document(doc, max_text_bytes=199)
    assert info.value.field == "text_content"
