"""RunLifecycle: the run locks, scope checks, cursors and success records both engines share."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

import cfstream as cf
from cfstream.contract.context import SourceContext
from cfstream.contract.report import RunReport, SourceStats
from cfstream.contract.state import StateStore
from cfstream.engine.lifecycle import SCOPE_CHANGED, RunLifecycle, success_summary
from cfstream.errors import DatasetBusyError
from cfstream.sinks import LanceSink
from cfstream.sources.base import Source, SourceOutput


class Scoped(Source):
    """Two partitions of three documents; ``folder`` is the option its cursors belong to."""

    source_type = "scoped"

    def __init__(self, folder: str = "a", **kw: Any) -> None:
        super().__init__(**kw)
        self.folder = folder

    def cursor_scope(self) -> Mapping[str, Any]:
        return {"folder": self.folder}

    async def partitions(self, ctx: SourceContext) -> Sequence[str]:
        return ["p0", "p1"]

    async def read(
        self, partition: str, cursor: Mapping[str, Any] | None, ctx: SourceContext
    ) -> AsyncIterator[SourceOutput]:
        for i in range(3):
            yield cf.Document(source_id=f"{partition}-{i}", title="t", text_content="x")
        yield cf.Checkpoint({"done": 3})


def _state(tmp_path: Path) -> StateStore:
    return StateStore(tmp_path / "_cfstream" / "state.json")


def test_a_busy_source_is_refused_and_the_locks_taken_before_are_released(
    tmp_path: Path,
) -> None:
    other = _state(tmp_path)
    other.acquire_source("b")  # another process syncs "b"
    state = _state(tmp_path)
    run = RunLifecycle(state, [Scoped(name="a"), Scoped(name="b")], RunReport())
    with pytest.raises(DatasetBusyError, match="'b'"):
        run.acquire()
    run.release()
    third = _state(tmp_path)
    third.acquire_source("a")  # "a" was released with the failed run
    third.release_all()
    other.release_all()


def test_scopes_are_checked_after_the_locks_but_not_on_a_dry_run(tmp_path: Path) -> None:
    state = _state(tmp_path)
    state.check_scope("a", "an old digest")
    state.save_checkpoints([cf.Checkpoint({"page": 2}, partition="p0", source="a")])
    dry = RunLifecycle(state, [Scoped(name="a")], RunReport(), dry_run=True)
    dry.acquire()
    dry.release()
    assert state.cursors("a") == {"p0": {"page": 2}}, "a dry run keeps the cursors"

    report = RunReport()
    run = RunLifecycle(state, [Scoped(name="a")], report)
    run.acquire()
    try:
        assert run.cursors("a") == {}
        assert report.sources["a"].warnings == [SCOPE_CHANGED]
    finally:
        run.release()


def test_cursors_and_success_records(tmp_path: Path) -> None:
    state = _state(tmp_path)
    state.save_checkpoints([cf.Checkpoint({"page": 2}, partition="p0", source="a")])
    stats = SourceStats(name="a", fetched=7, tombstones=2, failed=1)
    assert success_summary(stats) == {"fetched": 7, "tombstones": 2, "failed": 1}

    run = RunLifecycle(state, [Scoped(name="a")], RunReport())
    assert run.reads_saved_state
    assert run.cursors("a") == {"p0": {"page": 2}}
    run.record_success(stats, engine="test")
    assert state.source_info("a")["last_summary"] == {**success_summary(stats), "engine": "test"}

    refresh = RunLifecycle(state, [Scoped(name="a")], RunReport(), full_refresh=True)
    assert not refresh.reads_saved_state and refresh.cursors("a") == {}

    fresh = _state(tmp_path / "other")
    RunLifecycle(fresh, [Scoped(name="a")], RunReport(), dry_run=True).record_success(stats)
    assert "last_success" not in fresh.source_info("a")

    nothing = RunLifecycle(None, [Scoped(name="a")], RunReport())
    nothing.acquire()
    assert not nothing.reads_saved_state and nothing.cursors("a") == {}
    nothing.record_success(stats)
    nothing.release()


async def test_the_local_runner_records_success_through_the_lifecycle(tmp_path: Path) -> None:
    ds = tmp_path / "kb.lance"
    report = await (Scoped(name="a") | LanceSink(str(ds))).run()
    info = StateStore.for_dataset(str(ds)).source_info("a")
    assert info["last_summary"] == success_summary(report.sources["a"])
    assert info["last_summary"]["fetched"] == 6
    dry = tmp_path / "dry.lance"
    await (Scoped(name="a") | LanceSink(str(dry))).run(dry_run=True)
    assert "last_success" not in StateStore.for_dataset(str(dry)).source_info("a")
