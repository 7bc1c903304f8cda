"""Item 8 of issue 14: a record of the wrong shape reaching the sink without a ``validate`` stage is
dead-lettered (whatever the exception its conversion raises); the rest of its batch is stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lance

import cfstream as cf
from cfstream.contract.deadletter import read_dead_letters
from cfstream.records import Document
from cfstream.sinks import LanceSink

BAD: dict[str, dict[str, Any]] = {
    "updated-number": {"updated_at": 1_700_000_000},
    "created-number": {"created_at": 1_700_000_000.5},
    "source-updated-number": {"source_updated_at": 12},
    "tags-string": {"tags": "not-a-list"},
    "contributors-dict": {"contributors": {"a": 1}},
    "metadata-list": {"custom_metadata": ["k", "v"]},
    "title-none": {"title": None},
    "position-text": {"position": "third"},
    "relationships-strings": {"relationships": ["parent"]},
    "vector-number": {"vector": 3},
    "raw-data-text": {"raw_data": "not bytes"},
}


def _source() -> Any:
    @cf.source(source_type="mixed")
    async def mixed() -> Any:
        batch: list[Document] = []
        for i in range(40):
            batch.append(Document(source_id=f"good-{i}", title=f"Good {i}", text_content="ok"))
            if i < len(BAD):
                sid, fields = sorted(BAD.items())[i]
                doc = Document(source_id=sid, title="bad", text_content="bad")
                for name, value in fields.items():
                    setattr(doc, name, value)
                batch.append(doc)
        # two documents of one uuid, the later with a numeric timestamp: the in-batch dedupe
        # compares them (incomparable: the later one wins) and the winner is dead-lettered
        batch.append(Document(source_id="dup-ts", title="Dup", updated_at="2024-01-01"))
        later = Document(source_id="dup-ts", title="Dup")
        later.source_updated_at = 12  # type: ignore[assignment]
        batch.append(later)
        yield batch

    return mixed()


def test_wrong_typed_records_are_dead_lettered_and_the_rest_stored(tmp_path: Path) -> None:
    ds = tmp_path / "kb.lance"
    report = cf.run(_source() | LanceSink(str(ds)))  # no validate stage
    stored = lance.dataset(str(ds)).to_table(columns=["source_id"]).column("source_id")
    assert sorted(stored.to_pylist()) == sorted(f"good-{i}" for i in range(40))
    letters = read_dead_letters(ds / "_cfstream" / "dead-letters.jsonl")
    assert sorted(str(letter["source_id"]) for letter in letters) == sorted([*BAD, "dup-ts"])
    assert report.dead_lettered == len(BAD) + 1
    for letter in letters:
        assert letter["stage"] == "lance" and letter["source"] == "mixed"
        assert letter["error"] and letter["payload"]["source_id"] == letter["source_id"]
    errors = {letter["source_id"]: letter["error"] for letter in letters}
    for sid, fields in BAD.items():
        if sid != "vector-number":  # the validate checks name the field; vectors they leave alone
            assert f"{next(iter(fields))}:" in errors[sid], (sid, errors[sid])
    assert report.sink.inserted == 40 and not report.ok
