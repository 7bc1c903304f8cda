"""cfstream.engine.schedule: each source on its own interval, backoff after a failed run, a stop
that schedules nothing more. ``cfstream watch`` itself is tested in tests/cli/test_commands.py."""

from __future__ import annotations

import time
from pathlib import Path

import anyio

import cfstream as cf
from cfstream.contract.report import RunReport
from cfstream.engine.schedule import Scheduled, Scheduler, WatchOptions, backoff
from cfstream.errors import CfStreamError, SourceError
from cfstream.sinks import MemorySink


@cf.source(source_type="tick")
async def ticks():
    yield cf.Document(source_id="a", title="A")


def _ok(report: RunReport) -> bool:
    return not (report.error or report.failed_sources)


def test_backoff_doubles_up_to_a_cap() -> None:
    assert [backoff(10, n) for n in (1, 2, 3)] == [20, 40, 80]
    assert backoff(10, 30) == 300  # at least 300 s, or 8 intervals
    assert backoff(100, 30) == 800


async def test_each_source_runs_max_runs_times_on_its_interval(tmp_path: Path) -> None:
    runs: list[tuple[str, int, float]] = []

    def on_report(name: str, run: int, report: RunReport) -> None:
        assert report.fetched == 1
        runs.append((name, run, time.monotonic()))

    scheduler = Scheduler(
        [
            Scheduled("fast", 0.2, lambda: ticks() | MemorySink()),
            Scheduled("slow", 0.6, lambda: ticks() | MemorySink()),
        ],
        WatchOptions(
            dataset=str(tmp_path / "kb.lance"), succeeded=_ok, max_runs=2, on_report=on_report
        ),
    )
    with anyio.fail_after(20):
        await scheduler.run()
    assert sorted((n, r) for n, r, _ in runs) == [
        ("fast", 1),
        ("fast", 2),
        ("slow", 1),
        ("slow", 2),
    ]
    at = {(n, r): t for n, r, t in runs}
    assert at["fast", 2] - at["fast", 1] >= 0.15
    assert at["slow", 2] - at["slow", 1] >= 0.5
    assert not scheduler.stopped
    assert scheduler.controls() == []


async def test_a_failing_run_backs_off_and_reports_its_error(tmp_path: Path) -> None:
    errors: list[tuple[str, int, CfStreamError]] = []

    def broken() -> cf.Pipeline:
        raise SourceError("refused", source="bad")

    scheduler = Scheduler(
        [Scheduled("bad", 0.3, broken)],
        WatchOptions(
            dataset=str(tmp_path / "kb.lance"),
            succeeded=_ok,
            max_runs=2,
            on_error=lambda name, run, exc: errors.append((name, run, exc)),
        ),
    )
    started = time.monotonic()
    with anyio.fail_after(20):
        await scheduler.run()
    assert [(n, r) for n, r, _ in errors] == [("bad", 1), ("bad", 2)]
    assert time.monotonic() - started >= 0.6  # waited 2 x its interval after the failure


async def test_stop_schedules_no_more_runs(tmp_path: Path) -> None:
    scheduler: Scheduler

    def on_report(name: str, run: int, report: RunReport) -> None:
        scheduler.stop()

    scheduler = Scheduler(
        [Scheduled("once", 0.1, lambda: ticks() | MemorySink())],
        WatchOptions(dataset=str(tmp_path / "kb.lance"), succeeded=_ok, on_report=on_report),
    )
    with anyio.fail_after(20):
        await scheduler.run()
    assert scheduler.stopped
