"""Counters of a run and the :class:`RunReport` that sums them up.

Every stage, source and the sink own a small stats object; the runner assembles them into a
``RunReport`` that prints as a table (``str(report)``) and serialises to JSON (``report.to_dict()``).
Two records of the same kind add up (``mine.add(theirs)``: the Ray driver sums its tasks' stats
this way), driven by the dataclass fields, so a new counter is summed without being named.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = ("RunReport", "SinkStats", "SourceStats", "StageStats")

#: field types :func:`_add_into` leaves as the receiver has them: names, an error, timestamps,
#: the dataset's version and row count (what describes one record, not a count of work)
_KEPT = frozenset({"str", "str | None", "int | None", "float | None"})


def _add_into(into: Any, other: Any) -> None:
    """Add ``other``'s counts into ``into`` (two stats records of one kind), field by field.

    ``int`` and ``float`` fields are summed; ``dict[str, int]`` fields summed key by key; list
    fields get the other's entries they lack (in order); ``dict[str, str]`` fields the keys they
    lack. Fields of a :data:`_KEPT` type stay as they are. A field of any other type raises
    TypeError: a new kind of field needs a rule here, it is never skipped in silence.
    """
    if type(other) is not type(into):
        raise TypeError(f"cannot add a {type(other).__name__} to a {type(into).__name__}")
    for f in fields(into):
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", repr(f.type))
        mine, theirs = getattr(into, f.name), getattr(other, f.name)
        if kind in ("int", "float"):
            setattr(into, f.name, mine + theirs)
        elif kind == "dict[str, int]":
            for key, n in list(theirs.items()):
                mine[key] = mine.get(key, 0) + n
        elif kind == "dict[str, str]":
            for key, text in list(theirs.items()):
                mine.setdefault(key, text)
        elif kind.startswith("list["):
            for entry in list(theirs):
                if entry not in mine:
                    mine.append(entry)
        elif kind not in _KEPT:
            raise TypeError(f"{type(into).__name__}.{f.name} ({kind}): no rule to add it")


@dataclass(slots=True)
class StageStats:
    """Documents into and out of one stage, and how many failed (dead-lettered) there."""

    name: str
    docs_in: int = 0
    docs_out: int = 0
    failed: int = 0
    dropped: int = 0

    def add(self, other: StageStats) -> None:
        """Add ``other``'s counts (the same stage, another part of the run) into these."""
        _add_into(self, other)


@dataclass(slots=True)
class SourceStats:
    """What one source produced."""

    name: str
    source_type: str = ""
    fetched: int = 0
    tombstones: int = 0
    checkpoints: int = 0
    skipped_unchanged: int = 0
    skipped: int = 0
    failed: int = 0
    partitions: int = 0
    partitions_done: int = 0
    error: str | None = None
    last_fetch: float | None = None
    #: items that failed for a transient reason (after the HTTP retries): not dead-lettered, left
    #: pending in the cursor, fetched again by the next run
    retry_next_run: int = 0
    #: partitions that failed on their own while the others finished: ``{partition: error}``
    failed_partitions: dict[str, str] = field(default_factory=dict)
    #: what the source left out on purpose and the user should know (an unreadable channel, ...)
    warnings: list[str] = field(default_factory=list)

    def add(self, other: SourceStats) -> None:
        """Add ``other`` (the same source, other partitions) into these: every counter summed,
        the other's failed partitions and warnings kept (a warning once); the name, type, error
        and last fetch time stay these."""
        _add_into(self, other)

    @property
    def status(self) -> str:
        """``ok``; ``FAILED: <error>``; ``incomplete: ...`` when items wait for the next run;
        ``partial: ...`` when some of its records were dead-lettered."""
        if self.error:
            return f"FAILED: {self.error}"
        if self.retry_next_run:
            return (
                f"incomplete: {self.retry_next_run} item(s) failed for a transient reason and "
                "are fetched again by the next run"
            )
        if self.failed:
            return f"partial: {self.failed} dead-lettered (`cfstream dead-letters`)"
        return "ok"


@dataclass(slots=True)
class SinkStats:
    """What the sink wrote."""

    rows_in: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    appended: int = 0
    deleted: int = 0
    #: extra rows of a uuid stored more than once (another writer raced a first load) deleted
    duplicates_removed: int = 0
    commits: int = 0
    checkpoints_saved: int = 0
    maintenance_runs: int = 0
    commit_seconds: float = 0.0
    dataset_version: int | None = None
    dataset_rows: int | None = None
    #: documents that reached the sink, per source name
    rows_by_source: dict[str, int] = field(default_factory=dict)

    def add(self, other: SinkStats) -> None:
        """Add ``other``'s counts into these (``rows_by_source`` key by key); the dataset's
        version and row count stay these."""
        _add_into(self, other)

    @property
    def upserted(self) -> int:
        """Rows inserted or updated (or appended)."""
        return self.inserted + self.updated + self.appended


@dataclass(slots=True)
class RunReport:
    """Everything a run did: per-source, per-stage and sink counters, HTTP metrics, timings."""

    sources: dict[str, SourceStats] = field(default_factory=dict)
    stages: list[StageStats] = field(default_factory=list)
    sink: SinkStats = field(default_factory=SinkStats)
    http: dict[str, Any] = field(default_factory=dict)
    dead_lettered: int = 0
    dead_letter_path: str | None = None
    dataset: str | None = None
    dry_run: bool = False
    stopped_early: bool = False
    error: str | None = None
    started_at: float = field(default_factory=time.time)
    wall_seconds: float = 0.0

    @property
    def fetched(self) -> int:
        """Documents the sources yielded."""
        return sum(s.fetched for s in self.sources.values())

    @property
    def docs_per_second(self) -> float:
        """Documents fetched per second of wall time."""
        return self.fetched / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def failed_sources(self) -> list[str]:
        """Names of sources that failed as a whole."""
        return [n for n, s in self.sources.items() if s.error]

    @property
    def partly_failed_sources(self) -> list[str]:
        """Failed sources some of whose partitions finished (the others raised PartitionError)."""
        return [
            n
            for n, s in self.sources.items()
            if s.error and s.failed_partitions and s.partitions_done
        ]

    @property
    def retry_next_run(self) -> int:
        """Items that failed for a transient reason and are fetched again by the next run."""
        return sum(s.retry_next_run for s in self.sources.values())

    @property
    def ok(self) -> bool:
        """True when nothing failed: no dead letters, no failed source, no item left to retry."""
        return (
            not self.dead_lettered
            and not self.failed_sources
            and not self.retry_next_run
            and self.error is None
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the report."""
        return {
            "ok": self.ok,
            "dataset": self.dataset,
            "dry_run": self.dry_run,
            "stopped_early": self.stopped_early,
            "error": self.error,
            "wall_seconds": round(self.wall_seconds, 4),
            "fetched": self.fetched,
            "docs_per_second": round(self.docs_per_second, 1),
            "dead_lettered": self.dead_lettered,
            "retry_next_run": self.retry_next_run,
            "dead_letter_path": self.dead_letter_path,
            "sources": {n: {**asdict(s), "status": s.status} for n, s in self.sources.items()},
            "stages": [asdict(s) for s in self.stages],
            "sink": {**asdict(self.sink), "upserted": self.sink.upserted},
            "http": self.http,
        }

    def __str__(self) -> str:
        lines = [
            f"cfstream run: {self.fetched} documents in {self.wall_seconds:.2f}s "
            f"({self.docs_per_second:,.0f} docs/s){' [dry run]' if self.dry_run else ''}"
            f"{' [stopped early]' if self.stopped_early else ''}",
        ]
        if self.dataset:
            v = self.sink.dataset_version
            rows = self.sink.dataset_rows
            lines.append(
                f"  dataset {self.dataset}"
                + (f" version {v}" if v is not None else "")
                + (f", {rows} rows" if rows is not None else "")
            )
        lines.append(
            f"  {'source':<20} {'fetched':>9} {'unchanged':>9} {'deleted':>8} {'failed':>7}  status"
        )
        for name, s in self.sources.items():
            lines.append(
                f"  {name:<20} {s.fetched:>9} {s.skipped_unchanged:>9} {s.tombstones:>8} "
                f"{s.failed:>7}  {s.status}"
            )
            lines.extend(f"    warning: {w}" for w in s.warnings)
        for st in self.stages:
            lines.append(
                f"  stage {st.name:<14} in {st.docs_in:>9} out {st.docs_out:>9} "
                f"failed {st.failed:>6} dropped {st.dropped:>6}"
            )
        k = self.sink
        lines.append(
            f"  sink: inserted {k.inserted}, updated {k.updated}, unchanged {k.unchanged}, "
            f"appended {k.appended}, deleted {k.deleted}, commits {k.commits}"
        )
        http = ", ".join(
            f"{key} {val}" for key, val in self.http.items() if val not in ({}, 0, 0.0, None, [])
        )
        if http:
            lines.append(f"  http: {http}")
        if self.dead_lettered:
            lines.append(f"  dead letters: {self.dead_lettered} -> {self.dead_letter_path}")
        if self.error:
            lines.append(f"  error: {self.error}")
        return "\n".join(lines)
