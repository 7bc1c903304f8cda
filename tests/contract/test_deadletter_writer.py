"""Item 7 of issue 14: no field of a record, and no error message, can stop the dead-letter writer."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cfstream.contract.deadletter import DeadLetterWriter, read_dead_letters
from cfstream.records import Document, Relationship


class _Odd:
    def __repr__(self) -> str:
        return "<odd \udcff>"


def _hostile_document() -> Document:
    doc = Document(
        source_id="notes/bad\udcff.md",
        title="bad\udcfe title",
        text_content="text \ud800 with a high surrogate",
        tags=["t\udcff", "ok"],
        custom_metadata={
            "k\udcff": "v\udcff",
            7: "an int key",
            ("a", "tuple"): "key",
            "big": 2**80,
            "odd": _Odd(),
            "when": datetime(2024, 1, 2, tzinfo=UTC),
            "nested": {"deep": ["\udcff", {1, 2}]},
        },
        relationships=[Relationship("parent", id="x\udcff")],
        raw_data=b"\xff\xfe raw bytes",
    )
    doc.source_name = "vault\udcff"
    return doc


CASES: dict[str, dict[str, Any]] = {
    "document": {"payload": _hostile_document()},
    "source_id": {"source_id": "bad\udcff.md"},
    "source": {"source": "s\udcff"},
    "stage": {"stage": "st\udcff"},
    "error_text": {"error": "cannot read 'bad\udcff.md'"},
    "error_exception": {"error": OSError(2, "No such file", "bad\udcff.md")},
    "payload_dict": {"payload": {"name\udcff": b"\xff", 1.5: float("nan"), None: 2**70}},
    "payload_str": {"payload": "x\udcff"},
    "payload_object": {"payload": _Odd()},
    "source_id_not_text": {"source_id": 12345},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_writer_survives_hostile_fields(tmp_path: Path, case: str) -> None:
    path = tmp_path / "dl.jsonl"
    writer = DeadLetterWriter(path)
    fields: dict[str, Any] = {"source": "src", "source_id": "id", "stage": "lance", "error": "e"}
    fields.update(CASES[case])
    writer.write(**fields)
    writer.write(source="src", source_id="after", stage="lance", error="next one")
    writer.close()
    letters = read_dead_letters(path)
    assert [letter["source_id"] for letter in letters][1] == "after"
    assert writer.count == 2 and len(letters) == 2
    first = letters[0]
    if case == "source_id":
        assert first["source_id"] == "bad\\xff.md"
    if case == "error_exception":  # OSError's own text shows the name's repr
        assert first["error"].startswith("FileNotFoundError") and "bad\\udcff.md" in first["error"]


def test_a_hostile_document_keeps_its_content(tmp_path: Path) -> None:
    writer = DeadLetterWriter(None)
    writer.write(
        source="vault", source_id="x", stage="lance", error="e", payload=_hostile_document()
    )
    payload = writer.letters[0]["payload"]
    assert payload["source_id"] == "notes/bad\\xff.md"
    assert payload["text_content"] == "text \\ud800 with a high surrogate"
    assert payload["tags"] == ["t\\xff", "ok"]
    meta = payload["custom_metadata"]
    assert meta["k\\xff"] == "v\\xff" and meta["7"] == "an int key"
    assert meta["big"] == str(2**80) and meta["odd"] == "<odd \\xff>"
    assert meta["when"].startswith("2024-01-02") and meta["nested"]["deep"][0] == "\\xff"
    assert payload["relationships"][0]["id"] == "x\\xff"
    assert payload["raw_data"] == {"base64": "//4gcmF3IGJ5dGVz"}
