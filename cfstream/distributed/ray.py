"""Bulk imports past one machine: the same sources and transforms, run on Ray.

How a run works (``run_ray(pipeline)`` or ``cfstream sync CONFIG --engine ray``):

1. The driver takes the run locks and checks the sources' scopes, opens the dataset (same checks
   as :class:`~cfstream.sinks.LanceSink`, then the one-time identity migration), lists every
   source's partitions and loads their saved cursors: the local runner's
   :class:`~cfstream.engine.lifecycle.RunLifecycle`, in the same order.
2. Each partition becomes a Ray task. The task runs the very same source and stages through the
   local runner, into a :class:`FragmentSink` that never commits:

   - into a **new** dataset, or in ``append`` mode, it writes Lance fragments in parallel
     (``lance.fragment.write_fragments(..., return_transaction=True)``) and returns their metadata;
   - into an **existing** dataset in ``upsert`` mode, it returns its deduplicated Arrow batches
     (through Ray's object store); the driver merges them on ``uuid`` with the same condition as
     the local sink. Partitions own disjoint sets of source ids, but their merges rewrite shared
     fragments, so uncommitted ``merge_insert`` transactions from several workers conflict and
     have to be redone anyway (measured on pylance 14); a single merging writer keeps exactly one
     row per document without that retry dance, while fetching, transforming and Arrow encoding
     stay parallel.

3. The driver commits every fragment in **one** transaction (``LanceOperation.Overwrite`` for a
   new dataset, ``Append`` otherwise), applies tombstones, and only then saves the partitions'
   cursors: the same "state only after commit" rule as the local runner. When every task
   succeeded, it records each source's success as the local runner does (with ``engine: ray``).

A task that fails and is retried by Ray leaves only uncommitted fragment files behind; they are
never part of a commit, so no row is duplicated (``cleanup_old_versions`` removes the files).

Dead letters: each task attempt writes its own to a file of its own (next to the run's dead-letter
file, so it is where the fragments are) and returns its name; the driver appends the files of the
finished tasks to the run's dead-letter file (``<dataset>/_cfstream/dead-letters.jsonl`` by
default, the local runner's format) and deletes the rest. Every dead letter is written once (a
failed attempt's file is dropped; its retry writes them again) and no task keeps them in memory.

Secrets: the sources' :class:`~cfstream.secrets.Secret` values register themselves for redaction
again when a worker unpickles them, and each task also receives every value registered in the
driver (:class:`~cfstream.secrets.Redactions`), so a worker's logs, errors, report and dead letters
are redacted as the driver's are. An error leaves a task with its message redacted and without its
chain (Ray formats the traceback in the worker).

Rate limits across the cluster: each task's HTTP client gets ``1/k`` of every service's budget,
where ``k`` is the number of partitions of that source running at once (``max_concurrency``,
capped by the partition count). A limiter actor would be exact but adds a round trip to every
request; dividing the budget needs no coordination and never exceeds the configured rate.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio
import lance
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from anyio.abc import ObjectReceiveStream

from cfstream.contract.context import RunContext, SourceContext
from cfstream.contract.deadletter import DeadLetterWriter
from cfstream.contract.report import RunReport, SinkStats, SourceStats, StageStats
from cfstream.contract.state import ItemStore, StateStore
from cfstream.contract.uris import local_path, state_dir_for
from cfstream.engine.lifecycle import RunLifecycle
from cfstream.engine.pipeline import Pipeline
from cfstream.engine.runner import http_client_for, run_pipeline
from cfstream.errors import CfStreamError, PipelineError, SinkError
from cfstream.logs import get_logger
from cfstream.records import Checkpoint, Item
from cfstream.secrets import Redactions, redact
from cfstream.sinks.base import Sink
from cfstream.sinks.lance import LanceSink
from cfstream.sources.base import Source, SourceOutput
from cfstream.storage import (
    Batch,
    Batcher,
    TableBuilder,
    UuidKeySet,
    dead_letter_rejected,
    delete_uuids,
    prepare_batch,
    upsert_table,
)

__all__ = ("FragmentSink", "TaskResult", "WritePlan", "run_config", "run_ray")

log = get_logger("cfstream.distributed.ray")


@dataclass(frozen=True)
class WritePlan:
    """What a task needs to know to write (without committing)."""

    uri: str
    mode: str  # "create", "append" or "upsert"
    schema: pa.Schema
    #: when a task cuts a batch (as ``LanceSink`` does: rows, bytes of text, seconds waited)
    batch_rows: int = 10_000
    batch_bytes: int = 64 * 1024 * 1024
    max_latency: float = 10.0
    fill_zero_vectors: bool = False
    storage_options: dict[str, str] | None = None
    #: where each task attempt writes its dead letters (one file each); None: nowhere
    dead_letter_dir: str | None = None


@dataclass
class TaskResult:
    """What one partition task returns to the driver."""

    source: str
    partition: str
    fragments: list[Any] = field(default_factory=list)
    new_schema: Any = None
    tables: list[pa.Table] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    checkpoint: Checkpoint | None = None
    stats: SourceStats | None = None
    stages: list[StageStats] = field(default_factory=list)
    #: the file holding this task's dead letters (None when it has none or the run keeps none)
    dead_letter_file: str | None = None
    dead_lettered: int = 0
    rows: int = 0
    attempt_marker: str = ""


class FragmentSink(Sink):
    """A sink that writes Lance fragments (or keeps Arrow batches) and never commits.

    It batches and resolves exactly as :class:`~cfstream.sinks.LanceSink` does (the Lance
    layer's :class:`~cfstream.storage.Batcher` and :func:`~cfstream.storage.prepare_batch`: rows,
    bytes and latency; one document per uuid, the newest wins; tombstones in arrival order) and
    dead-letters what it cannot store into the task's dead-letter file.
    """

    name = "fragments"

    def __init__(self, plan: WritePlan) -> None:
        self.plan = plan
        self.uri = None
        self.builder = TableBuilder(plan.schema, plan.fill_zero_vectors)
        self.result_fragments: list[Any] = []
        self.new_schema: Any = None
        self.tables: list[pa.Table] = []
        self.deletes: list[str] = []
        self.checkpoint: Checkpoint | None = None
        self.rows = 0  # rows written as fragments
        # uuid keys this task wrote into a new dataset (see _write)
        self._written = UuidKeySet()

    def _write(self, table: pa.Table, keys: pa.Array | None) -> None:
        if self.plan.mode == "upsert":
            self.tables.append(table)
            return
        if self.plan.mode == "create" and keys is not None:
            # a document this task already wrote (a source may yield one twice in a run, e.g. an
            # issue updated while it was being paged): fragments cannot replace a row, so this
            # batch goes to the driver, which merges it after committing the fragments
            if self._written.contains_any(keys):
                self.tables.append(table)
                return
            self._written.add(keys)
        self.rows += table.num_rows
        from lance.fragment import write_fragments

        txn = write_fragments(
            table,
            self.plan.uri,
            schema=self.plan.schema,
            mode="overwrite" if self.plan.mode == "create" else "append",
            return_transaction=True,
            storage_options=self.plan.storage_options,
        )
        op = txn.operation
        self.result_fragments.extend(op.fragments)
        if getattr(op, "new_schema", None) is not None:
            self.new_schema = op.new_schema

    async def consume(self, receive: ObjectReceiveStream[list[Item]], ctx: RunContext) -> None:
        """Batch documents as ``LanceSink`` does and write each batch as fragments (or keep it
        for the driver's merge); deletes and the partition's checkpoint go to the driver."""
        plan = self.plan
        batcher = Batcher(
            rows=plan.batch_rows,
            nbytes=plan.batch_bytes,
            max_latency=plan.max_latency,
            stats=ctx.report.sink,
        )
        await batcher.run(receive, lambda batch: self._flush(batch, ctx))

    async def _flush(self, batch: Batch, ctx: RunContext) -> None:
        for cp in batch.checkpoints:
            # the driver saves one checkpoint per partition: it carries every item change
            self.checkpoint = cp if self.checkpoint is None else self.checkpoint.then(cp)
        try:
            await anyio.to_thread.run_sync(prepare_batch, batch, self.builder)
        finally:
            dead_letter_rejected(batch, ctx, self.name)
        if self.deletes and batch.uuids is not None and len(batch.uuids):
            # the driver deletes after every write: a document created again after an earlier
            # batch's tombstone must not be deleted
            uuids = batch.uuids
            live = set(uuids.to_pylist() if isinstance(uuids, pa.Array) else uuids)
            self.deletes = [u for u in self.deletes if u not in live]
        self.deletes.extend(batch.deletes)
        if batch.table is not None and batch.table.num_rows:
            await anyio.to_thread.run_sync(self._write, batch.table, batch.keys)


class _OnePartition(Source):
    """One partition of a source, read from a given cursor (what a Ray task runs)."""

    def __init__(self, inner: Source, partition: str, cursor: Mapping[str, Any] | None) -> None:
        self.source_type = inner.source_type  # type: ignore[misc]
        super().__init__(name=inner.name)
        self.identity = inner.identity
        self.inner = inner
        self.partition = partition
        self.cursor = cursor
        self.uses_http = getattr(inner, "uses_http", False)  # type: ignore[misc]

    async def partitions(self, ctx: SourceContext) -> Sequence[str]:
        return [self.partition]

    def read(
        self, partition: str, cursor: Mapping[str, Any] | None, ctx: SourceContext
    ) -> AsyncIterator[SourceOutput]:
        return self.inner.read(partition, self.cursor, ctx)


def _run_partition(
    source: Source,
    stages: list[Any],
    partition: str,
    cursor: Mapping[str, Any] | None,
    plan: WritePlan,
    rate_share: float,
    items_path: str | None = None,
    redactions: Redactions | None = None,
) -> TaskResult:
    """Body of a Ray task: run one partition through the stages into a FragmentSink.

    ``items_path`` is the driver's item store, read here read-only (a worker that cannot see it
    reads the partition as on a first sync); the driver saves the item changes after its commit.
    ``redactions`` registered the driver's secrets in this process when Ray unpickled it. An
    error leaves with its message redacted and its chain dropped: Ray formats the traceback here,
    logs it and sends it to the driver.
    """
    try:
        return _run_one(source, stages, partition, cursor, plan, rate_share, items_path)
    except CfStreamError as exc:
        exc.message = redact(exc.message)
        exc.args = (exc.message,)
        raise exc from None
    except Exception as exc:
        raise PipelineError(
            redact(
                f"partition {partition!r} of {source.name!r} failed: {type(exc).__name__}: {exc}"
            )
        ) from None


def _run_one(
    source: Source,
    stages: list[Any],
    partition: str,
    cursor: Mapping[str, Any] | None,
    plan: WritePlan,
    rate_share: float,
    items_path: str | None,
) -> TaskResult:
    sink = FragmentSink(plan)
    pipeline = Pipeline([_OnePartition(source, partition, cursor)], stages, sink)
    items = ItemStore(items_path, read_only=True) if items_path else None
    # this attempt's own dead-letter file (a retry gets another one); without a dead-letter
    # directory the letters are counted and dropped, never kept in memory
    letters = None
    if plan.dead_letter_dir is not None:
        letters = Path(plan.dead_letter_dir) / f"{uuid.uuid4().hex}.jsonl"
    letters_path: str | Path = letters if letters is not None else os.devnull

    async def main() -> RunReport:
        http = None
        if getattr(source, "uses_http", False):
            http = http_client_for(pipeline, rate_share=rate_share)
            async with http:
                return await run_pipeline(
                    pipeline, http=http, state=None, dead_letter_path=letters_path, items=items
                )
        return await run_pipeline(pipeline, state=None, dead_letter_path=letters_path, items=items)

    try:
        report = anyio.run(main, backend="asyncio")
    finally:
        if items is not None:
            items.close()
    stats = report.sources.get(source.name)
    if stats is not None and stats.error:
        raise PipelineError(f"partition {partition!r} of {source.name!r} failed: {stats.error}")
    return TaskResult(
        source=source.name,
        partition=partition,
        fragments=sink.result_fragments,
        new_schema=sink.new_schema,
        tables=sink.tables,
        deletes=sink.deletes,
        checkpoint=sink.checkpoint,
        stats=stats,
        stages=report.stages,
        dead_letter_file=str(letters) if letters is not None and letters.exists() else None,
        dead_lettered=report.dead_lettered,
        rows=sink.rows,
    )


def _list_partitions(pipeline: Pipeline, report: RunReport) -> dict[str, list[str]]:
    async def main() -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        ctx = RunContext(report=report, dead_letters=DeadLetterWriter(None), stop=anyio.Event())
        http_needed = any(getattr(s, "uses_http", False) for s in pipeline.leaf_sources)
        if http_needed:
            from cfstream.http import HttpClient

            async with HttpClient() as http:
                ctx.http = http
                for s in pipeline.leaf_sources:
                    out[s.name] = list(await s.partitions(_sctx(s, ctx, report)))
        else:
            for s in pipeline.leaf_sources:
                out[s.name] = list(await s.partitions(_sctx(s, ctx, report)))
        return out

    return anyio.run(main, backend="asyncio")


def _sctx(s: Source, ctx: RunContext, report: RunReport) -> SourceContext:
    stats = report.sources.setdefault(s.name, SourceStats(name=s.name, source_type=s.source_type))
    return SourceContext(
        name=s.name,
        source_type=s.source_type,
        run=ctx,
        stats=stats,
        logger=get_logger(f"cfstream.sources.{s.source_type}"),
    )


def run_ray(
    pipeline: Pipeline,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    full_refresh: bool = False,
    max_retries: int = 2,
    state: StateStore | None = None,
    ray_init: Mapping[str, Any] | None = None,
    dead_letter_path: str | Path | Literal[False] | None = None,
) -> RunReport:
    """Run ``pipeline`` (ending in a :class:`~cfstream.sinks.LanceSink`) with one Ray task per partition.

    Args:
        address: the Ray cluster (``"auto"`` for an existing one); None starts a local Ray.
        num_cpus: CPUs of a local Ray.
        full_refresh: ignore saved cursors.
        max_retries: how often Ray retries a failed partition task.
        state: the cursor store (default: the dataset's own).
        ray_init: extra ``ray.init`` keyword arguments.
        dead_letter_path: the dead-letter JSONL (as for the local runner); default
            ``<dataset>/_cfstream/dead-letters.jsonl`` for a local dataset; ``False`` writes none
            (``report.dead_lettered`` still counts). The workers write theirs next to it first,
            so on a cluster it must be on storage every node shares, as a local dataset must.
    """
    from cfstream.transforms import ChunkText, Embed

    for stage, why in (
        (Embed, "its workers can neither record the dataset's embedder nor skip unchanged vectors"),
        (ChunkText, "its workers cannot see the stored chunks, to skip unchanged documents and "
         "delete the chunks an edit or a deletion leaves behind"),
    ):  # fmt: skip
        if any(isinstance(st, stage) for st in pipeline.stages):
            kind = "embed" if stage is Embed else "chunk"
            raise PipelineError(
                f"the Ray engine does not run the {kind} stage ({why}): run this pipeline with "
                "the local engine (without --engine ray)"
            )
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise PipelineError(
            "the Ray engine needs the ray extra: pip install 'cfstream[ray]'"
        ) from exc
    sink = pipeline.sink
    if not isinstance(sink, LanceSink):
        raise PipelineError("the Ray engine writes Lance datasets: end the pipeline with LanceSink")
    t0 = time.perf_counter()
    report = RunReport(dataset=sink.uri)
    for st in pipeline.stages:
        report.stages.append(StageStats(name=st.name))
    if state is None and local_path(sink.uri) is not None:
        state = StateStore.for_dataset(sink.uri)
    leaves = pipeline.leaf_sources
    lifecycle = RunLifecycle(state, leaves, report, full_refresh=full_refresh)
    redactions = Redactions()
    letters_dir = None
    try:
        lifecycle.acquire()  # the run locks, then the scope checks
        writer = sink.writer
        version, rows = writer.open()
        exists = writer.exists
        if state is not None:  # the one-time rewrite of old record uuids, before cursors are read
            named = {s.name: s.source_type for s in leaves if s.identity is None}
            if sink.migrate_identity(state, named, pipeline.dataset_sources).changed_dataset:
                version, rows = writer.open()
                exists = writer.exists
        mode = "create" if not exists else ("append" if sink.mode == "append" else "upsert")
        if dead_letter_path is None and local_path(sink.uri) is not None:
            dead_letter_path = state_dir_for(sink.uri) / "dead-letters.jsonl"
        if dead_letter_path:
            dead_letter_path = Path(dead_letter_path)
            report.dead_letter_path = str(dead_letter_path)
            letters_dir = dead_letter_path.with_name(
                f"{dead_letter_path.name}.ray-{uuid.uuid4().hex}"
            )
        plan = WritePlan(
            uri=sink.uri,
            mode=mode,
            schema=writer.schema,
            batch_rows=sink.batch_rows,
            batch_bytes=sink.batch_bytes,
            max_latency=sink.max_latency,
            fill_zero_vectors=writer.builder.fill_zero_vectors,
            storage_options=sink.storage_options,
            dead_letter_dir=str(letters_dir) if letters_dir is not None else None,
        )
        partitions = _list_partitions(pipeline, report)
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {
                "ignore_reinit_error": True,
                "include_dashboard": False,
                "log_to_driver": False,
            }
            if address:
                kwargs["address"] = address
            elif num_cpus:
                kwargs["num_cpus"] = num_cpus
            kwargs.update(ray_init or {})
            ray.init(**kwargs)
        task = ray.remote(_run_partition).options(max_retries=max_retries, retry_exceptions=True)
        futures = []
        items_path = (
            str(state.items.path) if state is not None and lifecycle.reads_saved_state else None
        )
        for s in leaves:
            cursors = lifecycle.cursors(s.name)
            parts = partitions[s.name]
            running = max(1, min(len(parts), s.max_concurrency))
            for p in parts:
                futures.append(
                    task.remote(
                        s,
                        pipeline.stages,
                        p,
                        cursors.get(p),
                        plan,
                        1.0 / running,
                        items_path,
                        redactions=redactions,
                    )
                )
        results: list[TaskResult] = []
        errors: list[BaseException] = []
        for f in futures:
            try:
                results.append(ray.get(f))
            except Exception as exc:  # a partition failed after Ray's retries
                cause = getattr(exc, "cause", None) or exc
                errors.append(cause)
        if dead_letter_path:
            _merge_dead_letters(results, dead_letter_path)
        if errors and not results:
            err = errors[0]
            raise (
                err if isinstance(err, CfStreamError) else PipelineError(redact(str(err)))
            ) from err
        _commit(sink, plan, version, results, report)
        for r in results:
            if r.stats is not None:  # one partition, read to its end (partitions_done 1)
                report.sources[r.source].add(r.stats)
            report.dead_lettered += r.dead_lettered
            for mine, theirs in zip(report.stages, r.stages, strict=False):
                mine.add(theirs)
        for name, parts in partitions.items():
            # what the driver listed (each task's stats count the one partition it read)
            report.sources[name].partitions = len(parts)
        for e in errors:
            log.error("a partition failed after retries: %s", e)
        if errors:
            report.error = redact(f"{len(errors)} partition task(s) failed: {errors[0]}")
        if state is not None:
            cps = [
                Checkpoint(
                    r.checkpoint.cursor,
                    partition=r.partition,
                    source=r.source,
                    items=r.checkpoint.items,
                )
                for r in results
                if r.checkpoint is not None
            ]
            report.sink.checkpoints_saved += state.save_checkpoints(cps)
        if not errors:
            for leaf in leaves:
                lifecycle.record_success(report.sources[leaf.name], engine="ray")
    finally:
        if letters_dir is not None:
            # the merged files, and those of failed attempts (their retries wrote them again)
            shutil.rmtree(letters_dir, ignore_errors=True)
        lifecycle.release()
        report.wall_seconds = time.perf_counter() - t0
    return report


def _merge_dead_letters(results: list[TaskResult], path: Path) -> None:
    """Append the dead letters of every finished task to the run's dead-letter file, in order.

    A task's file the driver cannot read is logged (with how many letters it held) and skipped.
    """
    done = [r for r in results if r.dead_letter_file]
    if not done:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as out:
        for r in done:
            try:
                with open(str(r.dead_letter_file), "rb") as letters:
                    shutil.copyfileobj(letters, out)
            except OSError as exc:
                log.error(
                    "the %d dead letter(s) of partition %r of %r are lost: %s (on a cluster, "
                    "the dead-letter file must be on storage every node shares)",
                    r.dead_lettered,
                    r.partition,
                    r.source,
                    exc,
                )


def _keep_last(table: pa.Table) -> pa.Table:
    """One row per uuid, the last one (a later batch of a task holds the newer version)."""
    if table.num_rows < 2:
        return table
    if pc.count_distinct(table["uuid"]).as_py() == table.num_rows:
        return table
    pos = pa.array(np.arange(table.num_rows, dtype=np.int64))
    last = (
        pa.table({"uuid": table["uuid"], "pos": pos})
        .group_by("uuid", use_threads=False)
        .aggregate([("pos", "max")])
    )
    keep = np.sort(last["pos_max"].to_numpy())  # the last positions, in arrival order
    return table.take(pa.array(keep))


def _merge_tables(plan: WritePlan, results: list[TaskResult], stats: SinkStats) -> None:
    """Merge the tasks' Arrow batches into the dataset, in large batches (few commits)."""
    tables = [t for r in results for t in r.tables if t.num_rows]
    batch: list[pa.Table] = []
    size = 0
    for t in [*tables, None]:
        if t is not None:
            batch.append(t)
            size += t.num_rows
        if batch and (t is None or size >= 50_000):
            # partitions own disjoint ids, but one task may have yielded a document twice:
            # Lance rejects or duplicates a key repeated inside one merge
            merged = _keep_last(pa.concat_tables(batch))
            ds = lance.dataset(plan.uri, storage_options=plan.storage_options)
            ins, upd = upsert_table(ds, merged)
            stats.inserted += ins
            stats.updated += upd
            stats.unchanged += merged.num_rows - ins - upd
            stats.commits += 1
            batch, size = [], 0


def _commit(
    sink: LanceSink,
    plan: WritePlan,
    read_version: int | None,
    results: list[TaskResult],
    report: RunReport,
) -> None:
    """Commit every task's output: one transaction for fragments, merges for upserts."""
    stats = report.sink
    fragments = [f for r in results for f in r.fragments]
    try:
        if plan.mode == "create" and fragments:
            schema = next((r.new_schema for r in results if r.new_schema is not None), plan.schema)
            lance.LanceDataset.commit(
                plan.uri,
                lance.LanceOperation.Overwrite(schema, fragments),
                storage_options=plan.storage_options,
            )
            stats.inserted += sum(r.rows for r in results)
            stats.commits += 1
            _merge_tables(plan, results, stats)  # batches that repeated a document
        elif plan.mode == "append" and fragments:
            lance.LanceDataset.commit(
                plan.uri,
                lance.LanceOperation.Append(fragments),
                read_version=read_version,
                storage_options=plan.storage_options,
            )
            stats.appended += sum(r.rows for r in results)
            stats.commits += 1
        elif plan.mode == "upsert":
            _merge_tables(plan, results, stats)
        deletes = sorted({u for r in results for u in r.deletes})
        if deletes and (plan.mode != "create" or fragments):
            ds = lance.dataset(plan.uri, storage_options=plan.storage_options)
            stats.deleted += delete_uuids(ds, deletes)
            stats.commits += 1
    except OSError as exc:
        raise SinkError(f"committing the Ray import into {plan.uri} failed: {exc}") from exc
    if local_path(plan.uri) is None or (local_path(plan.uri) / "_versions").exists():  # type: ignore[operator]
        ds = lance.dataset(plan.uri, storage_options=plan.storage_options)
        stats.dataset_version = ds.version
        stats.dataset_rows = ds.count_rows()


def run_config(
    config: Any,
    *,
    only: Sequence[str] | None = None,
    full_refresh: bool = False,
    dry_run: bool = False,
    address: str | None = None,
) -> RunReport:
    """Run a loaded ``cfstream.config.Config`` on Ray (what ``cfstream sync --engine ray`` calls)."""
    if dry_run:
        raise PipelineError("--dry-run is not supported with --engine ray; run it locally")
    from cfstream.config import build_pipeline

    return run_ray(build_pipeline(config, only), address=address, full_refresh=full_refresh)
