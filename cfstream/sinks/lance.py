"""``LanceSink``: batching, upserting, checkpoint-committing writer of a ContextFrame dataset.

How it works (the Lance layer, :mod:`cfstream.storage`, does the work; this module runs it):

1. The sink task cuts what it receives into batches (:class:`~cfstream.storage.Batcher`): at
   ``batch_rows`` documents, ``batch_bytes`` of text, or after ``max_latency`` seconds.
2. Each batch is resolved and turned into an Arrow table (:func:`~cfstream.storage.prepare_batch`:
   one document per uuid, the newest ``source_updated_at`` wins; tombstones in arrival order), on
   the event loop: it holds the GIL throughout. A document the batch cannot convert (a
   wrong-typed field and no ``validate`` stage) is dead-lettered with the field at fault and the
   rest of the batch is stored; text holding lone surrogates (a file name that is not valid
   UTF-8) is stored with them escaped (``records.escape_surrogates``).
3. Built batches go to the writer task through a channel of ``max_inflight - 1`` slots: that
   bound is the backpressure on the whole pipeline. The writer commits them one at a time, off
   the event loop (:class:`~cfstream.storage.DatasetWriter`: merge on ``uuid`` or append, then
   deletes; a first load appends while it can; conflicts with other writers are retried and
   rows another writer raced in are healed; maintenance every so many commits).
4. Only after a batch's commit are the checkpoints that arrived before it saved to the sync state.
   A ``--full`` run checks the whole dataset for uuids stored twice at its end.
5. The search indexes (full text on ``text_content`` and ``title``, vectors once there are enough)
   are kept by an :class:`~cfstream.sinks.indexes.IndexKeeper` in a background thread: each commit
   only tells it; the end of the run waits for it (``index=``).
6. Every dataset has a ``vector`` column (ContextFrame's readers need one): a 1-wide zero
   placeholder until an embed stage gives it its embedder's width (:mod:`cfstream.sinks.vectors`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

import anyio
import pyarrow as pa
from anyio.abc import ObjectReceiveStream

from cfstream.contract.context import RunContext
from cfstream.contract.state import StateStore
from cfstream.contract.uris import local_path
from cfstream.errors import DatasetError
from cfstream.logs import get_logger
from cfstream.records import DEFAULT_EMBED_DIM, PLACEHOLDER_VECTOR_DIM, Item
from cfstream.sinks.base import Sink
from cfstream.sinks.indexes import IndexKeeper, IndexSettings, index_settings, meant_for_search
from cfstream.sinks.vectors import ensure_vector_column, is_placeholder, replace_vector_column
from cfstream.storage import (
    Batch,
    Batcher,
    DatasetWriter,
    Maintenance,
    UuidKeySet,
    dead_letter_rejected,
    frame_schema,
    heal_duplicates,
    prepare_batch,
)
from cfstream.storage.writer import commit_error

if TYPE_CHECKING:
    from cfstream.sinks.identity import IdentityMigration

__all__ = ("LanceSink", "UuidKeySet", "heal_duplicates")

log = get_logger("cfstream.sinks.lance")


class LanceSink(Sink):
    """Write documents to a Lance dataset of FrameRecords; see the module docstring.

    Args:
        uri: the dataset (a local path or any Lance URI).
        mode: ``"upsert"`` (merge on uuid, the default) or ``"append"``.
        batch_rows / batch_bytes / max_latency: when to cut a batch.
        max_inflight: batches built or being written at once (backpressure bound).
        embed_dim: the width of the ``vector`` column (zeros where a document carries no vector).
            Without it the dataset gets a 1-wide zero placeholder (:mod:`cfstream.sinks.vectors`),
            which ContextFrame's ``FrameDataset`` needs to read any row; an embed stage sets it.
        contextframe_compat: make the ``vector`` column ContextFrame's default width (1536) when
            ``embed_dim`` is not given (zeros where documents carry no vector).
        compress_text: use Lance's string compression for ``text_content`` (slower writes, ~20%
            less disk).
        index: the search indexes to keep (:class:`~cfstream.sinks.indexes.IndexSettings`, or a
            mapping of its fields; ``False``: none). Default: full text for datasets meant for
            search (``fts="auto"``), and vectors once ``vector_min_rows`` are stored.
        index_threshold / optimize_every / maintenance_every / cleanup_older_than: when the
            writer maintains the dataset (:class:`~cfstream.storage.Maintenance`).
        conflict_retries: how often a commit that lost to another writer is retried.
        storage_options: passed to Lance for object stores.
        cache_bytes: the bound of the Lance session's caches.

    The writing itself is :attr:`writer` (a :class:`~cfstream.storage.DatasetWriter`).
    """

    name = "lance"
    uri: str

    def __init__(
        self,
        uri: str,
        *,
        mode: Literal["upsert", "append"] = "upsert",
        batch_rows: int = 10_000,
        batch_bytes: int = 64 * 1024 * 1024,
        max_latency: float = 10.0,
        max_inflight: int = 2,
        embed_dim: int | None = None,
        contextframe_compat: bool = False,
        compress_text: bool = False,
        index_threshold: int = 100_000,
        optimize_every: int = 20,
        maintenance_every: int = 100,
        cleanup_older_than: timedelta = timedelta(hours=1),
        conflict_retries: int = 8,
        storage_options: dict[str, str] | None = None,
        cache_bytes: int = 64 * 1024 * 1024,
        index: IndexSettings | Mapping[str, Any] | bool | None = None,
    ) -> None:
        if mode not in ("upsert", "append"):
            raise ValueError(f"mode must be 'upsert' or 'append', not {mode!r}")
        if batch_rows < 1 or max_inflight < 1:
            raise ValueError("batch_rows and max_inflight must be at least 1")
        self.uri: str = str(uri)
        self.mode = mode
        self.batch_rows = batch_rows
        self.batch_bytes = batch_bytes
        self.max_latency = max_latency
        self.max_inflight = max_inflight
        self.contextframe_compat = contextframe_compat
        #: the width the user asked for (None: the embed stage's, or none)
        self._embed_dim_arg = embed_dim
        if contextframe_compat and embed_dim is None:
            embed_dim = DEFAULT_EMBED_DIM
        self.compress_text = compress_text
        self.storage_options = storage_options
        #: commits the batches (and owns the schema, once adopted from the dataset)
        self.writer = DatasetWriter(
            self.uri,
            frame_schema(embed_dim or PLACEHOLDER_VECTOR_DIM, compress_text=compress_text),
            mode=mode,
            fill_zero_vectors=True,  # ContextFrame's readers fail on a null vector
            maintenance=Maintenance(
                batch_rows=batch_rows,
                index_threshold=index_threshold,
                optimize_every=optimize_every,
                maintenance_every=maintenance_every,
                cleanup_older_than=cleanup_older_than,
            ),
            conflict_retries=conflict_retries,
            storage_options=storage_options,
            cache_bytes=cache_bytes,
        )
        #: keeps the search indexes, in the background
        self.indexes = IndexKeeper(self.uri, index_settings(index), storage_options=storage_options)
        if embed_dim:  # a sink writing vectors (or ContextFrame's) fills a dataset for search
            self.indexes.want_search()
        self._failed = False

    @property
    def schema(self) -> pa.Schema:
        """The schema written (the dataset's own once it has been opened)."""
        return self.writer.schema

    @property
    def embed_dim(self) -> int | None:
        """The width of the ``vector`` column (None: the dataset stores no vectors, only the
        placeholder)."""
        schema = self.writer.schema
        if "vector" not in schema.names or is_placeholder(schema):
            return None
        return int(schema.field("vector").type.list_size)

    # ------------------------------------------------------------------------------------------
    # opening and checking the dataset
    # ------------------------------------------------------------------------------------------
    async def open(self, ctx: RunContext) -> None:
        """Check that the dataset is usable (or absent) before any source is read."""
        version, rows = await anyio.to_thread.run_sync(self.writer.open)
        if (
            version is not None
            and not ctx.dry_run
            and await anyio.to_thread.run_sync(self._upgrade_vector_column)
        ):
            version, rows = await anyio.to_thread.run_sync(self.writer.open)
        if version is not None and await anyio.to_thread.run_sync(self._meant_for_search):
            self.indexes.want_search()
        ctx.report.dataset = self.uri
        ctx.report.sink.dataset_version = version
        ctx.report.sink.dataset_rows = rows

    async def stored(
        self, uuids: Sequence[str], columns: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        """The committed rows of ``uuids`` (latest version): uuid -> {column: value}."""
        path = local_path(self.uri)
        if not uuids or (path is not None and not (path / "_versions").exists()):
            return {}
        return await anyio.to_thread.run_sync(self._stored_sync, list(uuids), list(columns))

    def _stored_sync(self, uuids: list[str], columns: list[str]) -> dict[str, dict[str, Any]]:
        return self.writer.stored(uuids, columns)

    def _meant_for_search(self) -> bool:
        try:
            return meant_for_search(self.writer.dataset())
        except (OSError, ValueError):
            return False

    def _upgrade_vector_column(self) -> bool:
        """Give an existing dataset the vector column this sink writes (a placeholder for
        ContextFrame's readers, or ``embed_dim`` wide); True when it changed the dataset."""
        try:
            return ensure_vector_column(self.writer.dataset(), self._embed_dim_arg)
        except OSError as exc:  # another writer got there first: write the columns it has
            log.warning("could not add the vector column to %s: %s", self.uri, exc)
            return False

    async def embedder(self) -> dict[str, Any] | None:
        """The record of the embedder of the dataset's vectors (the ``vector`` field's metadata,
        :mod:`cfstream.embed.record`), or None: no dataset, no vector column or no record."""
        return await anyio.to_thread.run_sync(self._embedder_sync)

    def _embedder_sync(self) -> dict[str, Any] | None:
        from cfstream.embed.record import record_of_schema

        ds = self.writer.open_dataset()
        return record_of_schema(ds.schema if ds is not None else self.schema)

    def want_search(self) -> None:
        """Keep the full-text index of this dataset (its ``fts="auto"`` setting)."""
        self.indexes.want_search()

    async def use_embedder(
        self, record: dict[str, Any], *, replace: bool = False
    ) -> dict[str, Any]:
        """Make the dataset ready for vectors of ``record``'s embedder (see
        :meth:`Sink.use_embedder`): a new dataset is created with a vector column of its width
        and the record; an existing one without one (or with the placeholder) gets it (zeros,
        one commit); one holding another embedder's vectors (or vectors of no recorded embedder)
        raises :class:`~cfstream.embed.EmbedderChangedError`, or with ``replace`` has its vector
        column replaced (every stored vector dropped) and the new record written."""
        return await anyio.to_thread.run_sync(self._use_embedder_sync, dict(record), replace)

    def _use_embedder_sync(self, want: dict[str, Any], replace: bool) -> dict[str, Any]:
        from cfstream.embed.base import EmbedderChangedError
        from cfstream.embed.record import (
            RECORD_KEY,
            changed_embedder_message,
            record_of_schema,
            same_embedder,
            vector_field,
        )

        name, dim = str(want["name"]), int(want["dim"])
        ds = self.writer.open_dataset()
        have = record_of_schema(ds.schema if ds is not None else self.schema)
        if have is not None and same_embedder(have, name, dim):
            if ds is not None:
                self.writer.open()
            return have
        where = f"dataset {self.uri}"
        if have is not None and not replace:
            raise EmbedderChangedError(changed_embedder_message(where, have, name, dim))
        fresh = {**want, "id": uuid.uuid4().hex[:12]}
        vfield = vector_field(fresh)
        if ds is None:
            if self._embed_dim_arg is not None and self._embed_dim_arg != dim:
                raise DatasetError(
                    f"embed_dim is {self._embed_dim_arg} but embedder {name!r} makes "
                    f"{dim}-wide vectors: leave embed_dim out (the embed stage sets it)"
                )
            fields = [f for f in self.schema if f.name != "vector"]
            fields.insert(2, vfield)  # where frame_schema puts it (after text_content)
            self.writer.builder.schema = pa.schema(fields)
            return fresh
        try:
            if is_placeholder(ds.schema) and have is None:
                # a dataset synced without embeddings: its 1-wide zeros hold no vector
                replace_vector_column(ds, vfield)
            elif "vector" in ds.schema.names:
                old = ds.schema.field("vector").type
                same_width = pa.types.is_fixed_size_list(old) and old.list_size == dim
                if have is None and not replace:
                    stored = ds.count_rows(filter="vector IS NOT NULL")
                    if stored:
                        raise EmbedderChangedError(
                            changed_embedder_message(
                                where,
                                {
                                    "name": "unrecorded (not cfstream's embed stage)",
                                    "dim": old.list_size,
                                },
                                name,
                                dim,
                            )
                        )
                if have is None and same_width and not replace:
                    ds.update_field_metadata(
                        {"vector": {RECORD_KEY: vfield.metadata[RECORD_KEY.encode()].decode()}}
                    )
                else:
                    log.warning(
                        "%s: dropping every stored vector (%s) to store %s's",
                        self.uri,
                        (have or {}).get("name", "unrecorded"),
                        name,
                    )
                    replace_vector_column(ds, vfield)
            else:
                replace_vector_column(ds, vfield)
        except OSError as exc:
            raise commit_error(exc, self.uri) from exc
        self.writer.open()
        return record_of_schema(self.schema) or fresh

    async def upgrade(
        self,
        sources: Mapping[str, str],
        ctx: RunContext,
        *,
        others: Mapping[str, str] | None = None,
    ) -> None:
        """Rewrite, once, the rows ``sources`` stored before source names were part of record
        uuids (:func:`~cfstream.sinks.identity.migrate_identity`); needs the sync state."""
        state = ctx.state
        if ctx.dry_run or state is None:
            return
        done = await anyio.to_thread.run_sync(lambda: self.migrate_identity(state, sources, others))
        if done.changed_dataset:
            ctx.report.sink.dataset_version = self.writer.handle().version
            ctx.report.sink.dataset_rows = self.writer.rows

    def migrate_identity(
        self,
        state: StateStore,
        sources: Mapping[str, str],
        others: Mapping[str, str] | None = None,
    ) -> IdentityMigration:
        """The synchronous body of :meth:`upgrade` (the Ray driver calls it); reopens the
        dataset when it changed it."""
        from cfstream.sinks.identity import migrate_identity

        done = migrate_identity(
            self.writer.open_dataset, state, sources, others, schema=self.schema
        )
        if done.changed_dataset:
            self.writer.open()
        return done

    # ------------------------------------------------------------------------------------------
    # the sink task
    # ------------------------------------------------------------------------------------------
    async def consume(self, receive: ObjectReceiveStream[list[Item]], ctx: RunContext) -> None:
        """Buffer, batch and hand batches to the writer; flush everything at the end.

        On cancellation (Ctrl-C, a failure elsewhere in the run) what is buffered is complete:
        it is committed, shielded, after the batch being written, so that the checkpoints before
        it can be saved. Nothing is committed after the sink's own write failed.
        """
        send_job, receive_job = anyio.create_memory_object_stream[Batch](
            max(0, self.max_inflight - 1)
        )
        self._lock = anyio.Lock()
        batcher = Batcher(
            rows=self.batch_rows,
            nbytes=self.batch_bytes,
            max_latency=self.max_latency,
            stats=ctx.report.sink,
        )

        async def submit(batch: Batch) -> None:
            self._prepare(batch, ctx)
            await send_job.send(batch)

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._writer, receive_job, ctx)
                async with send_job:
                    await batcher.run(receive, submit)
        finally:
            with anyio.CancelScope(shield=True):
                if not self._failed:
                    async with self._lock:
                        leftovers: list[Batch] = []
                        while True:
                            try:
                                leftovers.append(receive_job.receive_nowait())
                            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                                break
                        pending, batcher.pending = batcher.pending, None
                        if pending is not None and not pending.empty:
                            self._prepare(pending, ctx)
                            leftovers.append(pending)
                        for batch in leftovers:
                            await self._process(batch, ctx)
                        if not ctx.dry_run:
                            removed = await anyio.to_thread.run_sync(
                                self.writer.finish, ctx.full_refresh
                            )
                            # the end of a sync leaves its dataset indexed
                            await anyio.to_thread.run_sync(self.indexes.finish)
                            if removed:
                                ctx.report.sink.duplicates_removed += removed
                                ctx.report.sink.dataset_rows = self.writer.rows
                                ctx.report.sink.dataset_version = self.writer.version
                receive_job.close()

    def _prepare(self, batch: Batch, ctx: RunContext) -> None:
        # On the event loop, not in a worker thread: building Arrow arrays from Python objects
        # holds the GIL from start to end, so a thread only added lock hand-offs with the loop
        # (measured: ~8% more engine throughput inline). It takes ~1 µs a document.
        try:
            prepare_batch(batch, self.writer.builder, build=bool(batch.docs) and not ctx.dry_run)
        finally:
            dead_letter_rejected(batch, ctx, self.name)
        if batch.table is not None:
            # the rows are in Arrow now: a batch waiting for the writer holds no Python documents
            batch.docs = []

    # ------------------------------------------------------------------------------------------
    # the writer task
    # ------------------------------------------------------------------------------------------
    async def _writer(self, receive_job: ObjectReceiveStream[Batch], ctx: RunContext) -> None:
        async for batch in receive_job:
            async with self._lock:
                await self._process(batch, ctx)

    async def _process(self, batch: Batch, ctx: RunContext) -> None:
        """Commit one batch, then save the checkpoints that arrived before it (shielded)."""
        stats = ctx.report.sink
        with anyio.CancelScope(shield=True):
            if not ctx.dry_run and (batch.table is not None or batch.deletes):
                t0 = time.perf_counter()
                try:
                    result = await anyio.to_thread.run_sync(self.writer.commit, batch)
                except BaseException:
                    self._failed = True
                    raise
                stats.commit_seconds += time.perf_counter() - t0
                stats.commits += result.get("commits", 0)
                stats.inserted += result.get("inserted", 0)
                stats.updated += result.get("updated", 0)
                stats.unchanged += result.get("unchanged", 0)
                stats.appended += result.get("appended", 0)
                stats.deleted += result.get("deleted", 0)
                stats.duplicates_removed += result.get("duplicates_removed", 0)
                stats.maintenance_runs += result.get("maintenance", 0)
                stats.dataset_version = result.get("version", stats.dataset_version)
                stats.dataset_rows = self.writer.rows
                self.indexes.after_commit()  # returns at once: the upkeep runs in the background
            if batch.checkpoints and not ctx.dry_run and ctx.state is not None:
                try:
                    stats.checkpoints_saved += await anyio.to_thread.run_sync(
                        ctx.state.save_checkpoints, batch.checkpoints
                    )
                except BaseException:
                    self._failed = True
                    raise
