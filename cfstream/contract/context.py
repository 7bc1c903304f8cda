"""What a run hands to its sources, stages and sink.

A :class:`RunContext` is created once per run by the runner. Sources receive a
:class:`SourceContext` (their name, the run's HTTP client, their stats, a way to dead-letter an
item); stages and the sink read the run context directly.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from cfstream.contract.deadletter import DeadLetterWriter
from cfstream.contract.report import RunReport, SourceStats, StageStats
from cfstream.logs import get_logger
from cfstream.secrets import redact

if TYPE_CHECKING:
    from cfstream.contract.state import ItemStore, StateStore
    from cfstream.http import HttpClient
    from cfstream.sinks.base import Sink

__all__ = ("RunContext", "SourceContext", "StageContext")


@dataclass(slots=True)
class RunContext:
    """Shared by every task of one run."""

    report: RunReport
    dead_letters: DeadLetterWriter
    stop: anyio.Event
    state: StateStore | None = None
    http: HttpClient | None = None
    #: the sources' per-item entries (default: the state's); read-only for sources
    items: ItemStore | None = None
    full_refresh: bool = False
    dry_run: bool = False
    #: the pipeline's sink; stages may ask it what is already stored (:meth:`Sink.stored`)
    sink: Sink | None = None
    logger: logging.Logger = field(default_factory=lambda: get_logger("cfstream.run"))

    def dead_letter(
        self,
        *,
        source: str | None,
        source_id: str | None,
        stage: str,
        error: BaseException | str,
        payload: Any = None,
    ) -> None:
        """Write one dead letter and count it in the report."""
        self.dead_letters.write(
            source=source, source_id=source_id, stage=stage, error=error, payload=payload
        )
        self.report.dead_lettered += 1
        stats = self.report.sources.get(source) if source is not None else None
        if stats is not None and stage != "source":  # SourceContext counted its own already
            stats.failed += 1

    @property
    def stopping(self) -> bool:
        """True once a graceful stop was asked for (Ctrl-C): sources should stop fetching."""
        return self.stop.is_set()


@dataclass(slots=True)
class SourceContext:
    """What one source sees of the run."""

    name: str
    source_type: str
    run: RunContext
    stats: SourceStats
    logger: logging.Logger

    @property
    def http(self) -> HttpClient:
        """The run's HTTP client (one aiohttp session per run). Connectors never open their own."""
        if self.run.http is None:
            from cfstream.errors import PipelineError

            raise PipelineError("this run has no HTTP client; run the source through a pipeline")
        return self.run.http

    @property
    def full_refresh(self) -> bool:
        """True when saved cursors are ignored (``--full``)."""
        return self.run.full_refresh

    @property
    def stopping(self) -> bool:
        """True once a graceful stop was asked for: stop fetching new pages."""
        return self.run.stop.is_set()

    def dead_letter(
        self, error: BaseException | str, payload: Any = None, *, source_id: str | None = None
    ) -> None:
        """Record an item this source could not map; the sync goes on."""
        self.stats.failed += 1
        self.run.dead_letter(
            source=self.name, source_id=source_id, stage="source", error=error, payload=payload
        )

    def retry_next_run(self, error: BaseException | str, *, source_id: str | None = None) -> None:
        """Record an item that failed for a transient reason (after the HTTP client's retries).

        The source must not mark the item done in its cursor, so the next run fetches it again;
        nothing is dead-lettered. The item is counted (the run is not ``ok``) and logged as a
        warning.
        """
        self.stats.retry_next_run += 1
        self.logger.warning(
            "%s: %s failed for a transient reason; it is fetched again by the next run: %s",
            self.name,
            source_id or "an item",
            redact(str(error)),
        )

    def warn(self, message: str) -> None:
        """Log ``message`` as a warning and keep it in the run report (``stats.warnings``)."""
        text = redact(message)
        self.stats.warnings.append(text)
        self.logger.warning("%s: %s", self.name, text)

    def item_values(self, partition: str, keys: Iterable[str]) -> dict[str, Any]:
        """This source's saved per-item entries of ``keys`` in ``partition`` (missing ones left
        out; none at all on a full refresh or without a state).

        Entries are saved from the :class:`~cfstream.records.ItemChanges` of checkpoints, after
        the commit holding the records before them."""
        items = self.run.items
        if items is None or self.run.full_refresh:
            return {}
        return items.get(self.name, partition, keys)

    def item_entries(self, partition: str) -> Iterator[tuple[str, Any]]:
        """Every saved per-item ``(key, value)`` of ``partition``, streamed a page at a time in
        key (UTF-8 byte) order (none on a full refresh or without a state)."""
        items = self.run.items
        if items is None or self.run.full_refresh:
            return iter(())
        return items.entries(self.name, partition)

    def item_keys(self, partition: str) -> Iterator[str]:
        """Every saved per-item key of ``partition``, streamed (none on a full refresh)."""
        items = self.run.items
        if items is None or self.run.full_refresh:
            return iter(())
        return items.keys(self.name, partition)

    def skipped_unchanged(self, n: int = 1) -> None:
        """Count documents skipped because their content did not change."""
        self.stats.skipped_unchanged += n

    def skipped(self, n: int = 1) -> None:
        """Count items skipped on purpose (binary, too large, filtered)."""
        self.stats.skipped += n


@dataclass(slots=True)
class StageContext:
    """What one stage sees of the run."""

    name: str
    run: RunContext
    stats: StageStats

    def dead_letter(
        self,
        error: BaseException | str,
        payload: Any = None,
        *,
        source: str | None = None,
        source_id: str | None = None,
    ) -> None:
        """Record a document this stage could not process; the run goes on."""
        self.stats.failed += 1
        self.run.dead_letter(
            source=source, source_id=source_id, stage=self.name, error=error, payload=payload
        )
