"""``cfstream watch``'s scheduler: each source runs on its own interval until stopped.

A source's runs start ``interval`` seconds apart (a run that takes longer is followed at once, with
a warning); after a failed run it waits longer, doubling up to :func:`backoff`'s cap, while the
other sources go on. Start times are jittered a little so sources on one interval do not all
fire together. The first run that creates the dataset is serialised: two sources never race to
create it.

The scheduler only schedules: what a run is (:class:`Scheduled` ``.pipeline`` builds a fresh
pipeline per run), whether it succeeded (:attr:`WatchOptions.succeeded`) and what to tell people
(:attr:`WatchOptions.on_report`, :attr:`WatchOptions.on_error`) come from the caller; signals are
routed by the caller too (``cfstream watch`` routes them to :func:`graceful_stopper` over
:meth:`Scheduler.controls`, calling :meth:`Scheduler.stop` first).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import anyio

from cfstream.contract.report import RunReport
from cfstream.contract.uris import dataset_exists
from cfstream.engine.pipeline import Pipeline
from cfstream.engine.runner import RunControl, run_pipeline
from cfstream.errors import CfStreamError
from cfstream.logs import get_logger

__all__ = ("Scheduled", "Scheduler", "WatchOptions", "backoff")

#: the run lines are ``cfstream watch``'s output: the logger keeps the name it had in cli.py
log = get_logger("cfstream.cli")


def backoff(interval: float, failures: int) -> float:
    """Seconds to wait after ``failures`` consecutive failed runs of a source."""
    cap = max(8 * interval, 300.0)
    return float(min(interval * 2**failures, cap))


@dataclass(frozen=True)
class Scheduled:
    """One source on its schedule."""

    #: the source's name (in log lines and callbacks)
    name: str
    #: seconds from the start of one run to the start of the next
    interval: float
    #: builds the pipeline of one run (called for every run)
    pipeline: Callable[[], Pipeline]


@dataclass(frozen=True)
class WatchOptions:
    """How the scheduler runs what it schedules."""

    #: the dataset every run writes (the run that creates it is serialised)
    dataset: str
    #: whether a run went well; a run that did not backs its source off
    succeeded: Callable[[RunReport], bool]
    #: runs per source before it stops being scheduled; None or 0: until stopped
    max_runs: int | None = None
    #: passed to :func:`~cfstream.engine.runner.run_pipeline` for every run
    tune_interpreter: bool | None = None
    grace_period: float = 30.0
    #: called with (source name, run number from 1, report) after each run that ended
    on_report: Callable[[str, int, RunReport], None] | None = None
    #: called with (source name, run number from 1, error) after each run that raised
    on_error: Callable[[str, int, CfStreamError], None] | None = None


class Scheduler:
    """Runs each :class:`Scheduled` source on its interval until :meth:`stop` (or ``max_runs``)."""

    def __init__(self, scheduled: Sequence[Scheduled], options: WatchOptions) -> None:
        self.scheduled = list(scheduled)
        self.options = options
        #: whether :meth:`stop` was called
        self.stopped = False
        self._stop: anyio.Event | None = None
        self._active: set[RunControl] = set()

    def controls(self) -> list[RunControl]:
        """The controls of the runs going on now."""
        return list(self._active)

    def stop(self) -> None:
        """Schedule no more runs (the runs going on are stopped through :meth:`controls`)."""
        self.stopped = True
        if self._stop is not None:
            self._stop.set()

    async def run(self) -> None:
        """Run every source on its schedule; returns when stopped or every source ran
        ``max_runs`` times."""
        self._stop = anyio.Event()
        if self.stopped:
            self._stop.set()
        create_lock = anyio.Lock()
        async with anyio.create_task_group() as tg:
            for scheduled in self.scheduled:
                tg.start_soon(self._watch, scheduled, self._stop, create_lock)

    async def _run_once(self, scheduled: Scheduled, control: RunControl) -> RunReport:
        return await run_pipeline(
            scheduled.pipeline(),
            control=control,
            grace_period=self.options.grace_period,
            tune_interpreter=self.options.tune_interpreter,
        )

    async def _watch(
        self, scheduled: Scheduled, stop: anyio.Event, create_lock: anyio.Lock
    ) -> None:
        options = self.options
        name, interval = scheduled.name, scheduled.interval
        failures = 0
        runs = 0
        next_at = time.monotonic() + random.uniform(0, min(1.0, 0.05 * interval))
        while not stop.is_set():
            delay = next_at - time.monotonic()
            if delay > 0:
                with anyio.move_on_after(delay):
                    await stop.wait()
            if stop.is_set():
                break
            started = time.monotonic()
            control = RunControl()
            self._active.add(control)
            ok = False
            try:
                if dataset_exists(options.dataset):
                    report = await self._run_once(scheduled, control)
                else:
                    async with create_lock:
                        report = await self._run_once(scheduled, control)
                ok = options.succeeded(report)
                k = report.sink
                log.info(
                    "run %s #%d: fetched %d, written %d, unchanged %d, deleted %d, dead letters %d in %.2fs%s",
                    name,
                    runs + 1,
                    report.fetched,
                    k.upserted,
                    k.unchanged + report.sources[name].skipped_unchanged
                    if name in report.sources
                    else k.unchanged,
                    k.deleted,
                    report.dead_lettered,
                    report.wall_seconds,
                    "" if ok else f" - FAILED: {', '.join(report.failed_sources) or report.error}",
                )
                if options.on_report is not None:
                    options.on_report(name, runs + 1, report)
            except CfStreamError as exc:
                log.error("run %s #%d failed: %s", name, runs + 1, exc)
                if options.on_error is not None:
                    options.on_error(name, runs + 1, exc)
            finally:
                self._active.discard(control)
            runs += 1
            if options.max_runs and runs >= options.max_runs:
                break
            took = time.monotonic() - started
            if ok:
                failures = 0
                wait = interval
                if took > interval:
                    log.warning(
                        "%s took %.1fs, longer than its %.0fs schedule: the next run starts now",
                        name,
                        took,
                        interval,
                    )
                base = started
            else:
                failures += 1
                wait = backoff(interval, failures)
                log.warning(
                    "%s failed %d time(s) in a row: retrying in %.0fs", name, failures, wait
                )
                base = time.monotonic()
            next_at = max(time.monotonic(), base + wait + random.uniform(0, 0.1 * wait))
