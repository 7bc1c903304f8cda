"""Running a pipeline: one task group, bounded channels, graceful stop, one clear error.

Topology of a run with two stages::

    partition tasks ─┐  (one per source partition, capped)
    partition tasks ─┼─▶ [chan 0] ─▶ stage 1 ─▶ [chan 1] ─▶ stage 2 ─▶ [chan 2] ─▶ sink
    partition tasks ─┘

Every channel holds at most ``buffer_chunks`` chunks, so a slow sink slows every stage and,
finally, the sources: memory depends on buffer sizes and the batch size, never on the source.

Consecutive synchronous stages (chunk stages such as validate, tag, dedupe, filter, and ``map``
with a plain function) are fused into one task with no channel between them
(:mod:`cfstream.engine.fusion`). A stage
that falls behind takes the chunks already queued for it together (up to
:data:`~cfstream.transforms.base.MAX_COALESCED` items), so the per-hop cost shrinks with the
backlog. Stage statistics and errors stay per stage.

A source that fails as a whole (bad credentials, a missing repository) is recorded in the report and
the others go on; a stage or the sink failing cancels the run and surfaces as one exception (a
:class:`~cfstream.errors.CfStreamError`, the stage named), never as a bare ExceptionGroup.

:func:`run` (from synchronous code) routes Ctrl-C to the run through
:mod:`cfstream.engine.signals`; interpreter tuning lives in :mod:`cfstream.engine.tuning`; the
run locks, scope checks, cursors and success records around a run, which the Ray driver shares,
in :mod:`cfstream.engine.lifecycle`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream
from anyio.streams.memory import MemoryObjectSendStream

from cfstream.contract.context import RunContext, SourceContext, StageContext
from cfstream.contract.deadletter import DeadLetterWriter
from cfstream.contract.report import RunReport, SourceStats, StageStats
from cfstream.contract.state import ItemStore, StateStore
from cfstream.contract.uris import local_path, state_dir_for
from cfstream.engine.fusion import fuse_stages
from cfstream.engine.lifecycle import RunLifecycle, check_source_scope
from cfstream.engine.signals import route_signals
from cfstream.engine.tuning import interpreter_tuning
from cfstream.errors import CfStreamError, HTTPError, PartitionError, PipelineError, SourceError
from cfstream.logs import get_logger
from cfstream.records import Checkpoint, Document, Item, Tombstone
from cfstream.secrets import redact
from cfstream.sources.base import is_transient

if TYPE_CHECKING:
    from cfstream.engine.pipeline import Pipeline
    from cfstream.sources.base import Source

__all__ = (
    "RunControl",
    "check_source_scope",
    "http_client_for",
    "run",
    "run_pipeline",
)

#: the logger keeps its name from before the engine package (log configs filter on it)
log = get_logger("cfstream.runner")
#: Tracebacks of failures (a source's own code raising): DEBUG, shown by ``--log-level debug`` or
#: the CLI's ``--traceback``.
tb_log = get_logger("cfstream.traceback")

_ONLY_DOCUMENTS = {Document}


class RunControl:
    """Stops a running pipeline: the first :meth:`request_stop` is graceful, the second is not.

    Graceful: sources stop fetching, in-flight work drains, the sink commits, state is saved.
    Hard: the run is cancelled at once (a commit in progress still finishes; nothing is corrupted).
    """

    def __init__(self) -> None:
        self.stop = anyio.Event()
        self.hard = False
        self._scope: anyio.CancelScope | None = None

    def request_stop(self) -> None:
        """Ask the run to stop; a second call stops it at once."""
        if not self.stop.is_set():
            self.stop.set()
            return
        self.hard_stop()

    def hard_stop(self) -> None:
        """Cancel the run now."""
        self.hard = True
        self.stop.set()
        if self._scope is not None:
            self._scope.cancel()


def _leaf_errors(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        out: list[BaseException] = []
        for e in exc.exceptions:
            out.extend(_leaf_errors(e))
        return out
    return [exc]


def _first_real_error(exc: BaseException) -> BaseException:
    leaves = _leaf_errors(exc)
    cancelled = anyio.get_cancelled_exc_class()
    for e in leaves:
        if isinstance(e, CfStreamError):
            return e
    for e in leaves:
        if not isinstance(e, cancelled):
            return e
    return leaves[0]


async def _run_stage(
    stage_name: str,
    fn: Callable[[], Any],
    receive: ObjectReceiveStream[Any] | None,
    send: ObjectSendStream[Any] | None,
) -> None:
    try:
        async with contextlib.AsyncExitStack() as stack:
            if receive is not None:
                await stack.enter_async_context(receive)
            if send is not None:
                await stack.enter_async_context(send)
            await fn()
    except CfStreamError:
        raise
    except Exception as exc:
        err = _first_real_error(exc)  # a stage's own task group wraps its errors in a group
        if isinstance(err, CfStreamError):
            raise err from None
        if not isinstance(err, Exception):
            raise
        raise PipelineError(f"{type(err).__name__}: {err}", stage=stage_name) from err


class _SourceReader:
    """Reads every partition of one source into the first channel."""

    def __init__(
        self,
        source: Source,
        cursors: Mapping[str, Mapping[str, Any]],
        ctx: RunContext,
        chunk_size: int,
        chunk_latency: float,
    ) -> None:
        self.source = source
        self.cursors = cursors
        self.run = ctx
        self.chunk_size = chunk_size
        self.chunk_latency = chunk_latency
        stats = ctx.report.sources.setdefault(
            source.name, SourceStats(name=source.name, source_type=source.source_type)
        )
        self.sctx = SourceContext(
            name=source.name,
            source_type=source.source_type,
            run=ctx,
            stats=stats,
            logger=get_logger(f"cfstream.sources.{source.source_type}"),
        )
        self.completed = False

    async def read_all(
        self, send: MemoryObjectSendStream[list[Item]], global_limiter: anyio.CapacityLimiter | None
    ) -> None:
        stats = self.sctx.stats
        try:
            async with send:
                partitions = list(await self.source.partitions(self.sctx))
                stats.partitions = len(partitions)
                limiter = anyio.CapacityLimiter(max(1, self.source.max_concurrency))
                async with anyio.create_task_group() as tg:
                    for p in partitions:
                        tg.start_soon(
                            self._read_partition, p, send.clone(), limiter, global_limiter
                        )
            if stats.failed_partitions:
                first, message = next(iter(stats.failed_partitions.items()))
                more = len(stats.failed_partitions) - 1
                if len(stats.failed_partitions) == len(partitions):
                    stats.error = message  # the source failed as a whole
                else:
                    stats.error = f"partition {first!r} failed: {message}" + (
                        f" (and {more} more partition(s); see the log)" if more else ""
                    )
                log.error("source %s failed: %s", self.source.name, stats.error)
                return
            self.completed = not self.run.stop.is_set()
        except Exception as exc:
            err = _first_real_error(exc)
            stats.error = redact(
                str(err) if isinstance(err, CfStreamError) else f"{type(err).__name__}: {err}"
            )
            log.error("source %s failed: %s", self.source.name, stats.error)
            tb_log.debug("where source %s failed:", self.source.name, exc_info=err)
            self.error: BaseException = err

    async def _read_partition(
        self,
        partition: str,
        send: ObjectSendStream[list[Item]],
        limiter: anyio.CapacityLimiter,
        global_limiter: anyio.CapacityLimiter | None,
    ) -> None:
        async with send, limiter:
            if global_limiter is not None:
                await global_limiter.acquire()
            try:
                await self._pump(partition, send)
            except (PartitionError, HTTPError) as exc:
                if not (isinstance(exc, PartitionError) or is_transient(exc)):
                    raise
                # this partition failed on its own (a channel the bot cannot read, a listing
                # that still failed after the retries): the other partitions go on; what it
                # committed before stays, its cursor stays at its last checkpoint (so the next
                # run reads the rest), and the source is reported as failed
                stats = self.sctx.stats
                stats.failed_partitions[partition] = redact(str(exc))
                if not hasattr(self, "error"):
                    self.error = exc
                log.error(
                    "source %s: partition %r failed: %s",
                    self.source.name,
                    partition,
                    stats.failed_partitions[partition],
                )
            finally:
                if global_limiter is not None:
                    global_limiter.release()

    async def _pump(self, partition: str, send: ObjectSendStream[list[Item]]) -> None:
        src = self.source
        name = src.name
        ident = src.record_name  # the name in the records' uuids (usually ``name``)
        st = src.source_type
        stats = self.sctx.stats
        stop = self.run.stop
        cursor = None if self.run.full_refresh else self.cursors.get(partition)
        chunk: list[Item] = []
        chunk_started = 0.0
        gen: AsyncIterator[Any] = src.read(partition, cursor, self.sctx)
        try:
            async for out in gen:
                items = out if isinstance(out, list | tuple) else (out,)
                if items is out and set(map(type, items)) == _ONLY_DOCUMENTS:
                    # a page of documents (the common case): fewer checks per document
                    for it in items:
                        if it.source_type is None:
                            it.source_type = st
                        it.source_name = ident
                    stats.fetched += len(items)
                    if not chunk:
                        chunk_started = time.monotonic()
                    chunk.extend(items)
                    items = ()
                for it in items:
                    t = type(it)
                    if t is Document:
                        if it.source_type is None:
                            it.source_type = st
                        it.source_name = ident
                        stats.fetched += 1
                    elif t is Checkpoint:
                        if it.source is None or it.partition is None:
                            it = dataclasses.replace(
                                it,
                                source=it.source or name,
                                partition=partition if it.partition is None else it.partition,
                            )
                        stats.checkpoints += 1
                    elif t is Tombstone:
                        if it.source_type is None or it.source_name != ident:
                            it = Tombstone(it.source_id, it.source_type or st, ident)
                        stats.tombstones += 1
                    else:
                        raise PipelineError(
                            f"source {name!r} yielded a {type(it).__name__}; sources yield "
                            "Document, Checkpoint, Tombstone or lists of them"
                        )
                    if not chunk:
                        chunk_started = time.monotonic()
                    chunk.append(it)
                if (
                    isinstance(
                        out, list | tuple
                    )  # the source yielded a page: it travels as one chunk
                    or len(chunk) >= self.chunk_size
                    or time.monotonic() - chunk_started >= self.chunk_latency
                ):
                    await send.send(chunk)
                    chunk = []
                if stop.is_set():
                    break
            if chunk:
                await send.send(chunk)
                chunk = []
        finally:
            aclose = getattr(gen, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()
        stats.partitions_done += 1
        stats.last_fetch = time.time()


async def run_pipeline(
    pipeline: Pipeline,
    *,
    control: RunControl | None = None,
    full_refresh: bool = False,
    dry_run: bool = False,
    http: Any = None,
    state: StateStore | None = None,
    items: ItemStore | None = None,
    dead_letter_path: str | Path | Literal[False] | None = None,
    chunk_size: int = 500,
    chunk_latency: float = 0.25,
    buffer_chunks: int = 4,
    max_partitions: int | None = None,
    grace_period: float = 30.0,
    progress: Callable[[RunReport], None] | None = None,
    progress_interval: float = 0.5,
    tune_interpreter: bool | None = None,
) -> RunReport:
    """Run ``pipeline`` to the end.

    Args:
        control: a :class:`RunControl` to stop the run from outside (Ctrl-C does this in
            :func:`run`).
        full_refresh: ignore saved cursors (a full re-sync; upserts keep one row per document).
        dry_run: fetch and transform, write nothing and save no cursor.
        http: an existing ``cfstream.http.HttpClient``; by default one is opened for the run.
        state: where cursors live; default ``<dataset>/_cfstream/state.json`` for a local dataset.
        items: the per-item entries sources read (default: ``state.items``); a Ray worker passes
            a read-only store, its driver saves the changes.
        dead_letter_path: the dead-letter JSONL; default ``<dataset>/_cfstream/dead-letters.jsonl``;
            ``False`` keeps dead letters in memory only (``report.dead_lettered`` still counts).
        chunk_size: items per chunk when a source yields one item at a time.
        buffer_chunks: chunks each channel holds (the backpressure bound).
        max_partitions: cap on partitions read at once across all sources.
        grace_period: after a graceful stop, seconds before the run is cancelled outright.
        progress: called with the live report every ``progress_interval`` seconds.
        tune_interpreter: tune the GC threshold and thread switch interval while the run goes
            (see :func:`~cfstream.engine.tuning.set_interpreter_tuning`); None: the process-wide setting (on by default).
    """
    sink = pipeline.sink
    if sink is None:
        raise PipelineError("the pipeline has no sink: end it with `| LanceSink(path)`")
    control = control or RunControl()
    report = RunReport(dry_run=dry_run)
    t0 = time.perf_counter()
    uri = getattr(sink, "uri", None)
    if state is None and uri and not dry_run and local_path(uri) is not None:
        state = StateStore.for_dataset(uri)
    if dead_letter_path is None and uri and local_path(uri) is not None and not dry_run:
        dead_letter_path = state_dir_for(uri) / "dead-letters.jsonl"
    if dead_letter_path is False:
        dead_letter_path = None
    dead_letters = DeadLetterWriter(dead_letter_path)
    report.dead_letter_path = str(dead_letter_path) if dead_letter_path else None
    ctx = RunContext(
        report=report,
        dead_letters=dead_letters,
        stop=control.stop,
        state=state,
        items=items if items is not None else (state.items if state is not None else None),
        full_refresh=full_refresh,
        dry_run=dry_run,
        sink=sink,
    )
    leaves = pipeline.leaf_sources
    names = [s.name for s in leaves]
    if len(set(names)) != len(names):
        raise PipelineError(f"sources need distinct names (cursors are kept by name): {names}")
    lifecycle = RunLifecycle(state, leaves, report, full_refresh=full_refresh, dry_run=dry_run)
    gc_tuning = contextlib.ExitStack()
    gc_tuning.enter_context(interpreter_tuning(tune_interpreter))
    try:
        lifecycle.acquire()  # the run locks, then the scope checks
        await sink.open(ctx)
        # before any cursor is read: the one-time rewrite of old record uuids may reset some
        await sink.upgrade(
            {s.name: s.source_type for s in leaves if s.identity is None},
            ctx,
            others=pipeline.dataset_sources,
        )
        cursors = {s.name: lifecycle.cursors(s.name) for s in leaves}
        async with contextlib.AsyncExitStack() as stack:
            if http is None and any(getattr(s, "uses_http", False) for s in leaves):
                http = await stack.enter_async_context(http_client_for(pipeline))
            ctx.http = http
            await _execute(
                pipeline,
                ctx,
                control,
                lifecycle,
                cursors,
                chunk_size,
                chunk_latency,
                buffer_chunks,
                max_partitions,
                grace_period,
                progress,
                progress_interval,
            )
    except BaseException as exc:
        report.error = redact(str(_first_real_error(exc)))
        with contextlib.suppress(AttributeError, TypeError):
            exc.report = report  # type: ignore[attr-defined]  # the details survive a failed run
        raise
    finally:
        report.wall_seconds = time.perf_counter() - t0
        if http is not None and getattr(http, "metrics", None) is not None:
            with contextlib.suppress(Exception):
                report.http = http.metrics.to_dict()
        dead_letters.close()
        lifecycle.release()
        gc_tuning.close()
    report.stopped_early = control.stop.is_set()
    return report


def http_client_for(pipeline: Pipeline, *, rate_share: float = 1.0) -> Any:
    """The HTTP client a run of ``pipeline`` opens by default (``cfstream.http.HttpClient``).

    The services' own in-flight caps bound the requests; the per-host connection pool must not be
    tighter, or 16 partitions of one service would queue behind 10 connections. ``rate_share``
    is the fraction of every rate budget this client may use (Ray workers share one credential).
    """
    from cfstream.http import HttpClient

    per_host = max(16, 2 * sum(s.max_concurrency for s in pipeline.leaf_sources))
    return HttpClient(limit=max(100, per_host), limit_per_host=per_host, rate_share=rate_share)


async def _execute(
    pipeline: Pipeline,
    ctx: RunContext,
    control: RunControl,
    lifecycle: RunLifecycle,
    cursors: dict[str, dict[str, Mapping[str, Any]]],
    chunk_size: int,
    chunk_latency: float,
    buffer_chunks: int,
    max_partitions: int | None,
    grace_period: float,
    progress: Callable[[RunReport], None] | None,
    progress_interval: float,
) -> None:
    report = ctx.report
    sink = pipeline.sink
    assert sink is not None
    leaves = pipeline.leaf_sources
    readers = [_SourceReader(s, cursors[s.name], ctx, chunk_size, chunk_latency) for s in leaves]
    cap = max_partitions or pipeline.partition_concurrency
    global_limiter = anyio.CapacityLimiter(cap) if cap else None
    for st in pipeline.stages:
        report.stages.append(StageStats(name=st.name))
    contexts = [
        StageContext(name=st.name, run=ctx, stats=report.stages[i])
        for i, st in enumerate(pipeline.stages)
    ]
    groups = fuse_stages(pipeline.stages, contexts)
    streams = [
        anyio.create_memory_object_stream[list[Item]](buffer_chunks) for _ in range(len(groups) + 1)
    ]

    try:
        async with anyio.create_task_group() as outer:
            with anyio.CancelScope() as scope:
                control._scope = scope
                async with anyio.create_task_group() as tg:
                    send0, _ = streams[0]
                    async with send0:
                        for r in readers:
                            tg.start_soon(r.read_all, send0.clone(), global_limiter)
                    for i, group in enumerate(groups):
                        recv, send = streams[i][1], streams[i + 1][0]
                        tg.start_soon(
                            _run_stage,
                            group.name,
                            lambda group=group, recv=recv, send=send: group.run(recv, send),
                            recv,
                            send,
                        )
                    last_recv = streams[-1][1]
                    tg.start_soon(
                        _run_stage,
                        sink.name,
                        lambda: sink.consume(last_recv, ctx),
                        last_recv,
                        None,
                    )
                    outer.start_soon(_watch_stop, control, grace_period)
                    if progress is not None:
                        outer.start_soon(_progress_loop, progress, ctx, progress_interval)
            outer.cancel_scope.cancel()
    except BaseException as exc:
        err = _first_real_error(exc)
        if err is exc or isinstance(err, anyio.get_cancelled_exc_class()):
            raise
        raise err from None
    if control.hard:
        report.stopped_early = True
    failed = [r for r in readers if not r.completed and hasattr(r, "error")]
    if (
        readers
        and len(failed) == len(readers)
        and not any(r.sctx.stats.failed_partitions and r.sctx.stats.partitions_done for r in failed)
    ):
        first = failed[0]
        if isinstance(first.error, CfStreamError):
            raise first.error
        # a source's own code raised: one line for people (the traceback is logged at DEBUG)
        raise SourceError(
            f"failed: {first.sctx.stats.error} (--traceback shows where)", source=first.source.name
        ) from first.error
    for r in readers:
        if r.completed and not ctx.stop.is_set():
            lifecycle.record_success(r.sctx.stats)


async def _watch_stop(control: RunControl, grace_period: float) -> None:
    await control.stop.wait()
    await anyio.sleep(grace_period)
    log.warning("graceful stop took longer than %.0fs: cancelling the run", grace_period)
    control.hard_stop()


async def _progress_loop(fn: Callable[[RunReport], None], ctx: RunContext, interval: float) -> None:
    while True:
        await anyio.sleep(interval)
        metrics = getattr(ctx.http, "metrics", None)
        if metrics is not None:
            with contextlib.suppress(Exception):
                ctx.report.http = metrics.to_dict()
        fn(ctx.report)


def run(pipeline: Pipeline, **options: Any) -> RunReport:
    """Run ``pipeline`` from synchronous code and return its report.

    Ctrl-C (SIGINT) stops the run gracefully: sources stop, in-flight work drains, the sink
    commits and the state is saved; a second Ctrl-C cancels at once. Options are those of
    :func:`run_pipeline`.
    """
    control: RunControl = options.pop("control", None) or RunControl()

    async def main() -> RunReport:
        with route_signals(control.request_stop, (signal.SIGINT,)):
            return await run_pipeline(pipeline, control=control, **options)

    return anyio.run(main, backend="asyncio")
