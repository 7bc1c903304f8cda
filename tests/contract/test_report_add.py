"""Stats records add up field by field (the Ray driver sums its tasks' stats this way)."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import pytest

from cfstream.contract.report import SinkStats, SourceStats, StageStats

STATS = (SourceStats, StageStats, SinkStats)


def _numeric(cls: type) -> list[str]:
    return [f.name for f in fields(cls) if f.type in ("int", "float")]


def _filled(cls: type, base: int) -> Any:
    """An instance whose numeric fields hold distinct values (``base`` + the field's index)."""
    record = cls(name="x") if "name" in {f.name for f in fields(cls)} else cls()
    for i, name in enumerate(_numeric(cls)):
        setattr(record, name, base + i)
    return record


@pytest.mark.parametrize("cls", STATS, ids=lambda c: c.__name__)
def test_adding_sums_every_numeric_field(cls: type) -> None:
    """Every int and float field is summed, whichever it is: a counter added to a stats class
    later is summed without being named anywhere."""
    mine, theirs = _filled(cls, 1), _filled(cls, 100)
    mine.add(theirs)
    numeric = _numeric(cls)
    assert numeric, "no numeric field found"
    for i, name in enumerate(numeric):
        assert getattr(mine, name) == (1 + i) + (100 + i), name
    assert all(getattr(theirs, name) == 100 + i for i, name in enumerate(numeric))


def test_the_source_counters_the_ray_driver_summed_by_hand_are_numeric() -> None:
    """The counters run_ray used to add one by one, and those it forgot, are all summed."""
    assert {
        "fetched",
        "tombstones",
        "checkpoints",
        "skipped_unchanged",
        "failed",
        "skipped",
        "retry_next_run",
        "partitions_done",
    } <= set(_numeric(SourceStats))
    assert {"docs_in", "docs_out", "failed", "dropped"} <= set(_numeric(StageStats))


@pytest.mark.parametrize("cls", STATS, ids=lambda c: c.__name__)
def test_every_field_has_a_rule(cls: type) -> None:
    """Adding two default records touches every field: one of a type without a rule raises."""
    _filled(cls, 0).add(_filled(cls, 0))


def test_collections_merge_and_the_description_stays() -> None:
    mine = SourceStats(name="s", source_type="t", error=None, last_fetch=5.0)
    mine.warnings.append("channel a unreadable")
    mine.failed_partitions["p0"] = "boom"
    theirs = SourceStats(name="other", source_type="u", error="bad", last_fetch=9.0)
    theirs.warnings.extend(["channel a unreadable", "channel b unreadable"])
    theirs.failed_partitions.update({"p0": "other boom", "p1": "bang"})
    mine.add(theirs)
    assert mine.warnings == ["channel a unreadable", "channel b unreadable"]
    assert mine.failed_partitions == {"p0": "boom", "p1": "bang"}
    assert (mine.name, mine.source_type, mine.error, mine.last_fetch) == ("s", "t", None, 5.0)

    sink = SinkStats(dataset_version=3, dataset_rows=10, rows_by_source={"a": 1})
    sink.add(SinkStats(dataset_version=4, dataset_rows=20, rows_by_source={"a": 2, "b": 5}))
    assert sink.rows_by_source == {"a": 3, "b": 5}
    assert (sink.dataset_version, sink.dataset_rows) == (3, 10)


def test_adding_a_record_of_another_kind_is_refused() -> None:
    with pytest.raises(TypeError, match="cannot add a StageStats to a SourceStats"):
        SourceStats(name="s").add(StageStats(name="s"))  # type: ignore[arg-type]
