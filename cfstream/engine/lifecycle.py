"""What every run does around its work, written once for both engines.

The local runner (:func:`~cfstream.engine.runner.run_pipeline`) and the Ray driver
(:func:`~cfstream.distributed.ray.run_ray`) hold a :class:`RunLifecycle` for the run:

1. :meth:`~RunLifecycle.acquire`: take every source's run lock (``DatasetBusyError`` when another
   process syncs one of them into the dataset), then, except on a dry run, check each source's
   scope (:func:`check_source_scope`: a source whose type or reading options changed loses its
   saved cursors, with a warning in the report);
2. the engine opens its sink and runs the one-time identity migration, which may reset cursors;
3. :meth:`~RunLifecycle.cursors`: each source's saved cursors (none on a full refresh or without
   a sync state), read only now;
4. :meth:`~RunLifecycle.record_success`: for each source that finished (the engine decides: the
   local runner after a complete, unstopped read; Ray when no task failed), the time and a
   summary of its counts for ``cfstream status`` (nothing on a dry run);
5. :meth:`~RunLifecycle.release`: the locks, always: the engines call it in the ``finally`` of
   the run, so locks taken before :meth:`~RunLifecycle.acquire` failed half-way are released too.

Without a sync state (a Ray worker's local run, a dataset that is not on a local disk), there is
no lock, no scope, no cursor and nothing to record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from cfstream.contract.report import RunReport, SourceStats
from cfstream.contract.state import StateStore, scope_digest
from cfstream.logs import get_logger

if TYPE_CHECKING:
    from cfstream.sources.base import Source

__all__ = ("SCOPE_CHANGED", "RunLifecycle", "check_source_scope", "success_summary")

#: the logger keeps the runner's name (log configs filter on it)
log = get_logger("cfstream.runner")

SCOPE_CHANGED = (
    "its type or the options that decide what it reads changed since the last sync: its saved "
    "cursors do not apply, so it is read afresh (records of the old settings stay until deleted)"
)


def check_source_scope(state: StateStore, source: Source, report: RunReport) -> None:
    """Drop ``source``'s saved cursors when its type or reading options changed (and say so)."""
    digest = scope_digest(source.source_type, source.cursor_scope())
    if state.check_scope(source.name, digest) is None:
        return
    log.warning("source %s: %s", source.name, SCOPE_CHANGED)
    stats = report.sources.setdefault(
        source.name, SourceStats(name=source.name, source_type=source.source_type)
    )
    stats.warnings.append(SCOPE_CHANGED)


def success_summary(stats: SourceStats) -> dict[str, Any]:
    """What ``cfstream status`` shows of a source's last successful sync."""
    return {"fetched": stats.fetched, "tombstones": stats.tombstones, "failed": stats.failed}


class RunLifecycle:
    """The run locks, scope checks, cursors and success records of one run (see the module).

    Args:
        state: the sync state; None for a run without one.
        sources: the sources the run reads (their names key locks, cursors and records).
        report: where scope warnings go.
        full_refresh: the run ignores saved cursors.
        dry_run: the run writes nothing: no scope check, no success recorded (the locks are
            still taken, so a dry run does not read a source another process is syncing).
    """

    def __init__(
        self,
        state: StateStore | None,
        sources: Sequence[Source],
        report: RunReport,
        *,
        full_refresh: bool = False,
        dry_run: bool = False,
    ) -> None:
        self.state = state
        self.sources = list(sources)
        self.report = report
        self.full_refresh = full_refresh
        self.dry_run = dry_run

    @property
    def reads_saved_state(self) -> bool:
        """True when the run reads what earlier runs saved (cursors, item entries)."""
        return self.state is not None and not self.full_refresh

    def acquire(self) -> None:
        """Take every source's run lock, then (not on a dry run) check every source's scope.

        Raises ``DatasetBusyError`` when another process holds a lock; the locks taken before
        are held until :meth:`release`.
        """
        if self.state is None:
            return
        for s in self.sources:
            self.state.acquire_source(s.name)
        if not self.dry_run:
            for s in self.sources:
                check_source_scope(self.state, s, self.report)

    def cursors(self, source: str) -> dict[str, Mapping[str, Any]]:
        """``source``'s saved cursors by partition: ``{}`` on a full refresh or without state.

        Read them after the identity migration (it may reset some).
        """
        if self.state is None or self.full_refresh:
            return {}
        return self.state.cursors(source)

    def record_success(self, stats: SourceStats, **extra: Any) -> None:
        """Record that the source of ``stats`` finished a sync, with :func:`success_summary`
        and ``extra`` (Ray adds ``engine="ray"``); nothing on a dry run or without state."""
        if self.dry_run or self.state is None:
            return
        self.state.mark_success(stats.name, {**success_summary(stats), **extra})

    def release(self) -> None:
        """Release every run lock (and close the item store); safe to call more than once."""
        if self.state is not None:
            self.state.release_all()
