"""``LanceSink``: batching, upserting, checkpoint-committing writer of a ContextFrame dataset.

How it works:

1. The sink task buffers items in arrival order and cuts a batch when it holds ``batch_rows``
   documents, ``batch_bytes`` of text, or has waited ``max_latency`` seconds.
2. Each batch is deduplicated by uuid (the newest ``source_updated_at`` wins, ties go to the last
   arrival: Lance rejects or duplicates repeated keys inside one ``merge_insert``), turned into an
   Arrow table column by column (on the event loop: it holds the GIL throughout), and handed to
   the writer through a channel of ``max_inflight - 1`` slots: that bound is the backpressure on
   the whole pipeline.
3. The writer commits batches one at a time, off the event loop: ``merge_insert`` on ``uuid``
   (``mode="upsert"``; a matched row is rewritten only when its ``content_hash`` changed or its
   ``source_updated_at`` is newer) or an append (``mode="append"``), then deletes tombstoned uuids.
   Commit conflicts with another writer are retried with a fresh dataset handle.
   A first load into a dataset this sink created appends instead of merging while no uuid
   repeats within the run (it keeps 8 bytes per written uuid to know) and no other writer
   commits: nothing can match, and an append costs a fraction of a merge in time and, unlike a
   merge against a growing index, in memory. The first repeat switches the run to merging.
   Lance does not check an append against other commits, so before each append and after it
   the sink compares the dataset's latest version with the last one it checked (one look per
   commit) and reads the transactions of any version it did not make itself: once another
   writer has added rows, the load merges from then on, and when rows may already be stored
   twice it deletes the extra ones (:func:`heal_duplicates`). A merge that another writer's
   append overtook is checked the same way.
4. Only after a batch's commit are the checkpoints that arrived before it saved to the sync state.
   A merge that reports more rows written than it was given has met a uuid stored twice, and a
   ``--full`` run checks the whole dataset once at its end: both heal the duplicates.
5. A document the batch cannot convert (a wrong-typed field and no ``validate`` stage) is found
   by converting the batch one document at a time, only then: it is dead-lettered with the field
   at fault and the rest of the batch is stored. Text holding lone surrogates (a file name that is
   not valid UTF-8) is stored with them escaped (``records.escape_surrogates``).
6. The writer keeps the dataset healthy itself: a BTREE index on ``uuid`` once a merging run
   finds it past ``index_threshold`` rows (appends and a fresh load need none),
   ``optimize_indices`` every ``optimize_every`` commits, and every ``maintenance_every`` commits
   a compaction and a cleanup of versions older than ``cleanup_older_than``. It keeps its dataset
   handle from one commit to the next (each commit moves it on) instead of reopening the dataset.
7. The search indexes (full text on ``text_content`` and ``title``, vectors once there are enough)
   are kept by an :class:`~cfstream.sinks.indexes.IndexKeeper` in a background thread: each commit
   only tells it; the end of the run waits for it (``index=``).
"""

from __future__ import annotations

import contextlib
import errno
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Literal

import anyio
import lance
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from anyio.abc import ObjectReceiveStream

from cfstream.checks import check_document
from cfstream.context import RunContext
from cfstream.errors import CommitError, DatasetError, RecordError
from cfstream.records import (
    DEFAULT_EMBED_DIM,
    PLACEHOLDER_VECTOR_DIM,
    Checkpoint,
    Document,
    Item,
    Tombstone,
    documents_to_table,
    frame_schema,
    parse_timestamp,
    record_uuid,
    uuid_array,
    uuid_digest,
    uuid_digests,
    uuid_keys,
    without_surrogates,
)
from cfstream.secrets import get_logger
from cfstream.sinks.base import Sink
from cfstream.sinks.indexes import IndexKeeper, IndexSettings, column_index_names, index_settings
from cfstream.sinks.vectors import ensure_vector_column, is_placeholder, replace_vector_column
from cfstream.state import StateStore, file_lock, local_path

if TYPE_CHECKING:
    from cfstream.sinks.identity import IdentityMigration

__all__ = ("LanceSink", "UuidKeySet", "heal_duplicates")

log = get_logger("cfstream.sinks.lance")

UPSERT_CONDITION = (
    "target.content_hash IS NULL OR source.content_hash != target.content_hash "
    "OR source.source_updated_at > target.source_updated_at"
)
_REQUIRED = ("uuid", "title", "source_id", "content_hash")
#: what a dataset folder may hold before its first commit lands (ours and Lance's own folders)
_UNCOMMITTED_OK = frozenset({"_cfstream", "data", "_transactions", "_deletions", "_indices"})


def upsert_table(ds: lance.LanceDataset, table: pa.Table) -> tuple[int, int]:
    """Merge ``table`` into ``ds`` on ``uuid`` (:data:`UPSERT_CONDITION`); (inserted, updated)."""
    stats = (
        ds.merge_insert("uuid")
        .when_matched_update_all(condition=UPSERT_CONDITION)
        .when_not_matched_insert_all()
        .execute(table)
    )
    return int(stats.get("num_inserted_rows", 0)), int(stats.get("num_updated_rows", 0))


#: the transaction property that marks a commit as this sink's own (one id per LanceSink)
WRITER_PROPERTY = "cfstream.writer"
#: Lance operations that may add rows (a transaction that cannot be read counts too)
_ADDS_ROWS = frozenset({"Append", "Update", "Overwrite", "Merge", "Restore", "DataReplacement"})
_APPENDS = frozenset({"Append", "Overwrite", "Restore"})
_KEEP_ORDER = [
    ("uuid", "ascending"),
    ("source_updated_at", "descending"),
    ("ingested_at", "descending"),
    ("_rowid", "descending"),
]


def heal_duplicates(ds: lance.LanceDataset) -> int:
    """Keep one row per uuid: delete the others; rows deleted (``ds`` moves to the new version).

    The row kept is the one with the newest ``source_updated_at``, then the newest
    ``ingested_at``, then the last written. Reads the ``uuid`` column once; costs a commit only
    when something is deleted. The delete is made against the version read, so a concurrent
    rewrite of those rows conflicts (and the caller retries) instead of deleting the wrong ones.
    """
    counts = pc.value_counts(ds.to_table(columns=["uuid"]).column("uuid"))
    many = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
    if not len(many):
        return 0
    quoted = ",".join(f"'{u}'" for u in many.to_pylist())
    rows = ds.to_table(
        columns=["uuid", "source_updated_at", "ingested_at"],
        filter=f"uuid IN ({quoted})",
        with_row_id=True,
    ).sort_by(_KEEP_ORDER)
    drop: list[int] = []
    last = None
    for uid, rowid in zip(
        rows.column("uuid").to_pylist(), rows.column("_rowid").to_pylist(), strict=True
    ):
        if uid == last:
            drop.append(rowid)
        last = uid
    if drop:
        ds.delete(f"_rowid IN ({','.join(map(str, drop))})")
        log.warning("removed %d duplicated rows from %s", len(drop), ds.uri)
    return len(drop)


def delete_uuids(ds: lance.LanceDataset, uuids: Sequence[str]) -> int:
    """Delete the rows with these uuids (hex and dashes only, so quoting is safe); rows deleted."""
    quoted = ",".join(f"'{u}'" for u in uuids)
    res = ds.delete(f"uuid IN ({quoted})")
    return int(res.get("num_deleted_rows", 0)) if isinstance(res, dict) else 0


@dataclass(slots=True)
class _Batch:
    docs: list[Document] = field(default_factory=list)
    #: the documents' uuids, in order (set by ``LanceSink._resolve`` unless given)
    uuids: Sequence[str] | pa.Array | None = None
    deletes: list[str] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    #: (documents buffered before it, uuid digest) of each tombstone, in arrival order
    tombstones: list[tuple[int, bytes]] = field(default_factory=list)
    #: first 64 bits of each uuid (``uuid_keys``), for the fresh-load check
    keys: pa.Array | None = None
    table: pa.Table | None = None
    #: documents without a usable uuid (to dead-letter)
    rejected: list[tuple[Document, Exception]] = field(default_factory=list)

    def add_tombstone(self, ts: Tombstone) -> None:
        """Record a deletion, in arrival order (after the documents buffered so far)."""
        st, name = ts.source_type or "", ts.source_name
        self.tombstones.append((len(self.docs), uuid_digest(st, ts.source_id, source_name=name)))
        self.deletes.append(record_uuid(st, ts.source_id, source_name=name))

    def key_array(self) -> pa.Array:
        """The batch's uuid keys (computed from ``uuids`` when not set)."""
        if self.keys is None:
            uuids = self.uuids.to_pylist() if isinstance(self.uuids, pa.Array) else self.uuids
            self.keys = pa.array(
                [int(u[:8] + u[9:13] + u[14:18], 16) for u in uuids or ()], pa.uint64()
            )
        return self.keys


def dead_letter_rejected(batch: _Batch, ctx: RunContext, stage: str) -> None:
    """Dead-letter the documents a batch could not store (``batch.rejected``) and forget them."""
    for doc, exc in batch.rejected:
        sid = doc.source_id
        ctx.dead_letter(
            source=doc.source_name,
            source_id=sid if type(sid) is str and sid.isprintable() else repr(sid),
            stage=stage,
            error=exc,
            payload=doc,
        )
    batch.rejected = []


_ONLY_DOCUMENTS = {Document}
_SOURCE_NAME = attrgetter("source_name")
_TEXT = attrgetter("text_content")
_RAW = attrgetter("raw_data")


def _dedupe_batch(
    docs: list[Document], digests: list[bytes], tombstones: list[tuple[int, bytes]]
) -> tuple[list[Document], list[bytes]]:
    """One document per uuid digest (see ``LanceSink._resolve``), in first-arrival order."""
    index: dict[bytes, int] = {}
    out: list[Document | None] = []
    out_digests: list[bytes] = []
    ti = 0

    def apply_tombstones(upto: int) -> None:
        nonlocal ti
        while ti < len(tombstones) and tombstones[ti][0] <= upto:
            pos = index.pop(tombstones[ti][1], None)
            if pos is not None:
                out[pos] = None
            ti += 1

    for i, (doc, dg) in enumerate(zip(docs, digests, strict=True)):
        apply_tombstones(i)
        pos = index.get(dg)
        if pos is None:
            index[dg] = len(out)
            out.append(doc)
            out_digests.append(dg)
        else:
            old = out[pos]
            if old is None or _newer_or_equal(doc, old):
                out[pos] = doc
    apply_tombstones(len(docs))
    kept = [(d, g) for d, g in zip(out, out_digests, strict=True) if d is not None]
    return [d for d, _ in kept], [g for _, g in kept]


def _builds(sink: LanceSink, doc: Document, uid: str) -> bool:
    try:
        sink._build_table([doc], [uid])
    except Exception:  # still not storable: dead-lettered with its first error
        return False
    return True


def _clear_error(doc: Document, exc: Exception) -> Exception:
    """The reason ``doc`` cannot be stored: the field ``check_document`` names, else ``exc``."""
    try:
        check_document(doc)
    except RecordError as named:
        return named
    except Exception:  # the checker tripping over the value: keep the original
        return exc
    return exc


def _is_conflict(exc: BaseException) -> bool:
    text = str(exc)
    return (
        type(exc).__name__ == "CommitConflictError"
        or "oo many concurrent writers" in text
        or "commit conflict" in text.lower()
        or "preempted by concurrent transaction" in text
    )


def _os_error_message(exc: OSError, uri: str) -> str:
    text = str(exc)
    if exc.errno == errno.ENOSPC or "No space left" in text:
        return f"the disk holding {uri} is full ({text}); free space and run again"
    if exc.errno in (errno.EACCES, errno.EPERM) or "ermission denied" in text:
        return f"permission denied writing {uri} ({text}); check the folder's permissions"
    return f"writing {uri} failed: {text}"


class LanceSink(Sink):
    """Write documents to a Lance dataset of FrameRecords; see the module docstring.

    Args:
        uri: the dataset (a local path or any Lance URI).
        mode: ``"upsert"`` (merge on uuid, the default) or ``"append"``.
        batch_rows / batch_bytes / max_latency: when to cut a batch.
        max_inflight: batches built or being written at once (backpressure bound).
        embed_dim: the width of the ``vector`` column (zeros where a document carries no vector).
            Without it the dataset gets a 1-wide zero placeholder (:mod:`cfstream.sinks.vectors`),
            which ContextFrame's ``FrameDataset`` needs to read any row.
        contextframe_compat: make the ``vector`` column ContextFrame's default width (1536) when
            ``embed_dim`` is not given (zeros where documents carry no vector).
        compress_text: use Lance's string compression for ``text_content`` (slower writes, ~20%
            less disk).
        index: the search indexes to keep (:class:`~cfstream.sinks.indexes.IndexSettings`, or a
            mapping of its fields; ``False``: none). Default: full text, and vectors once
            ``vector_min_rows`` are stored.
        storage_options: passed to Lance for object stores.
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
        self.embed_dim = embed_dim
        self.compress_text = compress_text
        self.index_threshold = index_threshold
        self.optimize_every = optimize_every
        self.maintenance_every = maintenance_every
        self.cleanup_older_than = cleanup_older_than
        self.conflict_retries = conflict_retries
        self.storage_options = storage_options
        self.cache_bytes = cache_bytes
        self.indexes = IndexKeeper(self.uri, index_settings(index), storage_options=storage_options)
        self.schema: pa.Schema = frame_schema(
            embed_dim or PLACEHOLDER_VECTOR_DIM, compress_text=compress_text
        )
        self._exists = False
        # a first load into a dataset this sink created appends instead of merging (see
        # _commit_once); it remembers 8 bytes per written uuid to stay exactly-once
        self._fresh = False
        self._written = UuidKeySet()
        self._version: int | None = None
        # the newest version checked for other writers' rows (see _others_added_rows)
        self._checked = 0
        self._heal = False
        self._tx = {WRITER_PROPERTY: uuid.uuid4().hex}
        self._rows = 0
        self._indexed = False
        self._commits = 0
        self._failed = False

    # ------------------------------------------------------------------------------------------
    # opening and checking the dataset
    # ------------------------------------------------------------------------------------------
    def _open_dataset(self) -> lance.LanceDataset | None:
        path = local_path(self.uri)
        if path is not None:
            if path.exists() and not path.is_dir():
                raise DatasetError(
                    f"{self.uri} is a file, not a Lance dataset; choose another path"
                )
            if path.is_dir() and not (path / "_versions").exists():
                # Lance's own folders without a manifest: a first commit that never finished
                # (the process was killed); nothing was committed, so create the dataset anew
                others = [p.name for p in path.iterdir() if p.name not in _UNCOMMITTED_OK]
                if others:
                    raise DatasetError(
                        f"{self.uri} exists but is not a Lance dataset (it holds {sorted(others)[:5]}); "
                        "point `dataset` at a new path or an existing cfstream dataset"
                    )
                return None
            if not path.exists():
                return None
        try:
            return self._dataset()
        except (OSError, ValueError) as exc:
            if path is None and "not found" in str(exc).lower():
                return None
            raise DatasetError(f"cannot open {self.uri} as a Lance dataset: {exc}") from exc

    def _session(self) -> lance.Session:
        """One Lance session per sink, with bounded caches: memory stays flat however many
        commits and fragments a long import makes (the default caches grow with the dataset)."""
        session = getattr(self, "_lance_session", None)
        if session is None:
            session = self._lance_session = lance.Session(
                index_cache_size_bytes=self.cache_bytes,
                metadata_cache_size_bytes=self.cache_bytes,
            )
        return session

    def _dataset(self) -> lance.LanceDataset:
        return lance.dataset(
            self.uri, storage_options=self.storage_options, session=self._session()
        )

    def _check_schema(self, ds: lance.LanceDataset) -> None:
        have = ds.schema
        problems: list[str] = []
        for name in _REQUIRED:
            if name not in have.names:
                problems.append(f"missing column {name!r}")
        for f in self.schema:
            if f.name in have.names:
                theirs = have.field(f.name).type
                if f.name == "vector" and pa.types.is_fixed_size_list(theirs):
                    continue
                if f.name == "raw_data" and "blob" in str(theirs):
                    continue  # Lance stores blob columns as its own extension type
                if not theirs.equals(f.type, check_metadata=False) and str(theirs) != str(f.type):
                    problems.append(f"column {f.name!r} is {theirs}, expected {f.type}")
        if problems:
            raise DatasetError(
                f"{self.uri} is a Lance dataset but not one cfstream can write: "
                + "; ".join(problems)
                + ". Use a new dataset path."
            )
        # write exactly the dataset's columns (types as stored, e.g. its vector width)
        fields = []
        for f in self.schema:
            if f.name in have.names:
                fields.append(f if f.name == "raw_data" else have.field(f.name))
        if "vector" in have.names and "vector" not in self.schema.names:
            fields.insert(2, have.field("vector"))
        self.schema = pa.schema(fields)
        if "vector" in self.schema.names and not is_placeholder(self.schema):
            self.embed_dim = self.schema.field("vector").type.list_size

    def _open_sync(self) -> tuple[int | None, int]:
        self._ds = None
        self._fresh = self.mode == "upsert"
        self._written = UuidKeySet()
        self._version = None
        self._checked = 0
        self._heal = False
        ds = self._open_dataset()
        if ds is None:
            self._exists = False
            return None, 0
        self._check_schema(ds)
        self._exists = True
        self._fresh = False
        self._rows = ds.count_rows()
        self._indexed = any("uuid" in (i.field_names or []) for i in ds.describe_indices())
        return ds.version, self._rows

    async def open(self, ctx: RunContext) -> None:
        """Check that the dataset is usable (or absent) before any source is read."""
        version, rows = await anyio.to_thread.run_sync(self._open_sync)
        if (
            version is not None
            and not ctx.dry_run
            and await anyio.to_thread.run_sync(self._upgrade_vector_column)
        ):
            version, rows = await anyio.to_thread.run_sync(self._open_sync)
        ctx.report.dataset = self.uri
        ctx.report.sink.dataset_version = version
        ctx.report.sink.dataset_rows = rows

    def _upgrade_vector_column(self) -> bool:
        """Give an existing dataset the vector column this sink writes (a placeholder for
        ContextFrame's readers, or ``embed_dim`` wide); True when it changed the dataset."""
        try:
            return ensure_vector_column(self._dataset(), self.embed_dim)
        except OSError as exc:  # another writer got there first: write the columns it has
            log.warning("could not add the vector column to %s: %s", self.uri, exc)
            return False

    async def stored(
        self, uuids: Sequence[str], columns: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        """The committed rows of ``uuids`` (latest version): uuid -> {column: value}."""
        path = local_path(self.uri)
        if not uuids or (path is not None and not (path / "_versions").exists()):
            return {}
        return await anyio.to_thread.run_sync(self._stored_sync, list(uuids), list(columns))

    def _stored_sync(self, uuids: list[str], columns: list[str]) -> dict[str, dict[str, Any]]:
        try:
            ds = self._dataset()
        except (OSError, ValueError):
            return {}
        wanted = [c for c in columns if c in ds.schema.names and c != "uuid"]
        out: dict[str, dict[str, Any]] = {}
        for i in range(0, len(uuids), 1000):
            keys = ", ".join(f"'{u}'" for u in uuids[i : i + 1000] if "'" not in u)
            if not keys:
                continue
            tbl = ds.to_table(columns=["uuid", *wanted], filter=f"uuid IN ({keys})")
            for row in tbl.to_pylist():
                out[row.pop("uuid")] = row
        return out

    async def embedder(self) -> dict[str, Any] | None:
        """The record of the embedder of the dataset's vectors (the ``vector`` field's metadata,
        :mod:`cfstream.embed.record`), or None: no dataset, no vector column or no record."""
        return await anyio.to_thread.run_sync(self._embedder_sync)

    def _embedder_sync(self) -> dict[str, Any] | None:
        from cfstream.embed.record import record_of_schema

        ds = self._open_dataset()
        return record_of_schema(ds.schema if ds is not None else self.schema)

    def want_search(self) -> None:
        """Keep the full-text index of this dataset (its ``fts="auto"`` setting)."""
        self.indexes.want_search()

    async def use_embedder(
        self, record: dict[str, Any], *, replace: bool = False
    ) -> dict[str, Any]:
        """Make the dataset ready for vectors of ``record``'s embedder (see
        :meth:`Sink.use_embedder`): a new dataset is created with a vector column of its width
        and the record; an existing one without a vector column gets one (all NULL, one commit);
        one holding another embedder's vectors (or vectors of no recorded embedder) raises
        :class:`~cfstream.embed.EmbedderChangedError`, or with ``replace`` has its vector column
        replaced (every stored vector dropped) and the new record written."""
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
        ds = self._open_dataset()
        have = record_of_schema(ds.schema if ds is not None else self.schema)
        if have is not None and same_embedder(have, name, dim):
            if ds is not None:
                self._check_schema(ds)
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
            self.schema = pa.schema(fields)
            self.embed_dim = dim
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
            raise CommitError(_os_error_message(exc, self.uri)) from exc
        self._ds = None
        ds = self._dataset()
        self._check_schema(ds)
        self._version = ds.version
        return record_of_schema(ds.schema) or fresh

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
            ctx.report.sink.dataset_version = self._handle().version
            ctx.report.sink.dataset_rows = self._rows

    def migrate_identity(
        self,
        state: StateStore,
        sources: Mapping[str, str],
        others: Mapping[str, str] | None = None,
    ) -> IdentityMigration:
        """The synchronous body of :meth:`upgrade` (the Ray driver calls it); reopens the
        dataset when it changed it."""
        from cfstream.sinks.identity import migrate_identity

        done = migrate_identity(self._open_dataset, state, sources, others, schema=self.schema)
        if done.changed_dataset:
            self._open_sync()
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
        send_job, receive_job = anyio.create_memory_object_stream[_Batch](
            max(0, self.max_inflight - 1)
        )
        self._lock = anyio.Lock()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._writer, receive_job, ctx)
                async with send_job:
                    await self._buffer_loop(receive, send_job, ctx)
        finally:
            with anyio.CancelScope(shield=True):
                if not self._failed:
                    async with self._lock:
                        leftovers: list[_Batch] = []
                        while True:
                            try:
                                leftovers.append(receive_job.receive_nowait())
                            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                                break
                        pending, self._pending = self._pending, None
                        if pending is not None and (
                            pending.docs or pending.deletes or pending.checkpoints
                        ):
                            await self._prepare(pending, ctx)
                            leftovers.append(pending)
                        for batch in leftovers:
                            await self._process(batch, ctx)
                        if not ctx.dry_run:
                            removed = await anyio.to_thread.run_sync(self._finish, ctx.full_refresh)
                            if removed:
                                ctx.report.sink.duplicates_removed += removed
                                ctx.report.sink.dataset_rows = self._rows
                                ctx.report.sink.dataset_version = self._version
                receive_job.close()

    _pending: _Batch | None = None

    async def _buffer_loop(
        self,
        receive: ObjectReceiveStream[list[Item]],
        send_job: Any,
        ctx: RunContext,
    ) -> None:
        """Collect chunks into batches. Per-document work is kept to C-level passes over each
        chunk; uuids, in-batch duplicates and tombstone ordering are resolved once per batch
        (:meth:`_resolve`)."""
        stats = ctx.report.sink
        by_source = stats.rows_by_source
        batch = self._pending = _Batch()
        nbytes = 0
        started: float | None = None
        nowait: Callable[[], list[Item]] = getattr(receive, "receive_nowait", _would_block)
        while True:
            timeout = (
                None if started is None else max(0.0, started + self.max_latency - time.monotonic())
            )
            chunk: list[Item] | None = None
            try:
                chunk = nowait()  # no trip through the event loop when queued
            except anyio.WouldBlock:
                pass
            except anyio.EndOfStream:
                break
            if chunk is not None:
                pass
            elif timeout is None:
                try:
                    chunk = await receive.receive()
                except anyio.EndOfStream:
                    break
            else:
                with anyio.move_on_after(timeout):
                    try:
                        chunk = await receive.receive()
                    except anyio.EndOfStream:
                        break
            if chunk:
                docs = batch.docs
                first = len(docs)
                if set(map(type, chunk)) == _ONLY_DOCUMENTS:
                    docs.extend(chunk)  # type: ignore[arg-type]
                else:
                    for it in chunk:
                        t = type(it)
                        if t is Document:
                            docs.append(it)  # type: ignore[arg-type]
                        elif t is Checkpoint:
                            batch.checkpoints.append(it)  # type: ignore[arg-type]
                        elif t is Tombstone:
                            batch.add_tombstone(it)  # type: ignore[arg-type]
                if len(docs) > first:
                    new = docs[first:]
                    stats.rows_in += len(new)
                    names = list(map(_SOURCE_NAME, new))
                    if names.count(names[0]) == len(names):
                        key = names[0] or ""
                        by_source[key] = by_source.get(key, 0) + len(names)
                    else:
                        for name in names:
                            by_source[name or ""] = by_source.get(name or "", 0) + 1
                    nbytes += sum(map(len, filter(None, map(_TEXT, new))))
                    nbytes += sum(map(len, filter(None, map(_RAW, new))))
                if started is None and (batch.docs or batch.deletes or batch.checkpoints):
                    started = time.monotonic()
            full = len(batch.docs) >= self.batch_rows or nbytes >= self.batch_bytes
            timed_out = started is not None and time.monotonic() - started >= self.max_latency
            if (
                full
                or timed_out
                or (chunk and not batch.docs and not batch.deletes and batch.checkpoints)
            ):
                await self._submit(batch, send_job, ctx)
                batch = self._pending = _Batch()
                nbytes = 0
                started = None
        if batch.docs or batch.deletes or batch.checkpoints:
            await self._submit(batch, send_job, ctx)
        self._pending = None

    async def _submit(self, batch: _Batch, send_job: Any, ctx: RunContext) -> None:
        await self._prepare(batch, ctx)
        await send_job.send(batch)
        self._pending = None

    @staticmethod
    def _resolve(batch: _Batch) -> None:
        """Give the batch its uuids and keys; keep one document per uuid, drop tombstoned ones.

        Within a batch the newest ``source_updated_at`` wins (ties: the last arrival; Lance
        rejects or duplicates repeated keys inside one ``merge_insert``); a document buffered
        before a tombstone of its uuid is dropped, one after it is kept (and the delete with it).
        """
        docs = batch.docs
        try:
            digests = uuid_digests(docs)
        except Exception:  # an id that cannot be formatted: find those documents
            keep: list[Document] = []
            digests = []
            for d in docs:
                try:
                    digests.append(
                        uuid_digest(d.source_type or "", d.source_id, source_name=d.source_name)
                    )
                except Exception as exc:  # dead-lettered with its error
                    batch.rejected.append((d, exc))
                    continue
                keep.append(d)
            docs = batch.docs = keep
        if batch.tombstones or len(set(digests)) != len(digests):
            docs, digests = _dedupe_batch(docs, digests, batch.tombstones)
            batch.docs = docs
        batch.tombstones = []
        uuids = uuid_array(digests)
        batch.uuids = uuids
        batch.keys = uuid_keys(digests)
        if batch.deletes:
            live = set(uuids.to_pylist()) if len(uuids) else set()
            batch.deletes = sorted(set(batch.deletes) - live)

    def _resolve_and_build(self, batch: _Batch, build: bool) -> None:
        self._resolve(batch)
        if build and batch.docs:
            assert batch.uuids is not None
            batch.table = self._build_table(batch.docs, batch.uuids)

    async def _prepare(self, batch: _Batch, ctx: RunContext) -> None:
        # On the event loop, not in a worker thread: building Arrow arrays from Python objects
        # holds the GIL from start to end, so a thread only added lock hand-offs with the loop
        # (measured: ~8% more engine throughput inline). It takes ~1 µs a document.
        build = bool(batch.docs) and not ctx.dry_run
        try:
            self._resolve_and_build(batch, build)
        except Exception:  # whatever a wrong-typed field raises, find its document
            self._build_one_by_one(batch)
            batch.table = self._build_table(batch.docs, batch.uuids) if batch.docs else None
        finally:
            dead_letter_rejected(batch, ctx, self.name)
        if batch.table is not None:
            # the rows are in Arrow now: a batch waiting for the writer holds no Python documents
            batch.docs = []

    def _build_one_by_one(self, batch: _Batch) -> None:
        """A batch failed to build (no validate stage before the sink): move the documents that
        fail on their own, whatever they raise, to ``batch.rejected`` (dead-lettered by
        :meth:`_prepare`), keep the others."""
        if batch.uuids is None or batch.keys is None:
            self._resolve(batch)  # cannot fail: _resolve rejects what it cannot handle
        assert batch.uuids is not None and batch.keys is not None
        uuids = batch.uuids.to_pylist() if isinstance(batch.uuids, pa.Array) else list(batch.uuids)
        good: list[int] = []
        for i, (doc, uid) in enumerate(zip(batch.docs, uuids, strict=True)):
            try:
                self._build_table([doc], [uid])
            except Exception as exc:  # any failure is this document's own
                escaped = without_surrogates(doc)
                if escaped is not None and _builds(self, escaped, uid):
                    batch.docs[i] = escaped  # stored with its lone surrogates escaped
                else:
                    batch.rejected.append((doc, _clear_error(doc, exc)))
                    continue
            good.append(i)
        batch.docs = [batch.docs[i] for i in good]
        batch.uuids = [uuids[i] for i in good]
        batch.keys = batch.keys.take(pa.array(good, pa.int64()))

    def _build_table(self, docs: Sequence[Document], uuids: Sequence[str] | pa.Array) -> pa.Table:
        return documents_to_table(
            docs,
            self.schema,
            ingested_at=datetime.now(UTC),
            fill_zero_vectors=True,  # ContextFrame's readers fail on a null vector
            uuids=uuids,
        )

    # ------------------------------------------------------------------------------------------
    # the writer task
    # ------------------------------------------------------------------------------------------
    async def _writer(self, receive_job: ObjectReceiveStream[_Batch], ctx: RunContext) -> None:
        async for batch in receive_job:
            async with self._lock:
                await self._process(batch, ctx)

    async def _process(self, batch: _Batch, ctx: RunContext) -> None:
        """Commit one batch, then save the checkpoints that arrived before it (shielded)."""
        stats = ctx.report.sink
        with anyio.CancelScope(shield=True):
            if not ctx.dry_run and (batch.table is not None or batch.deletes):
                t0 = time.perf_counter()
                try:
                    result = await anyio.to_thread.run_sync(self._commit, batch)
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
                stats.dataset_rows = self._rows
            if batch.checkpoints and not ctx.dry_run and ctx.state is not None:
                try:
                    stats.checkpoints_saved += await anyio.to_thread.run_sync(
                        ctx.state.save_checkpoints, batch.checkpoints
                    )
                except BaseException:
                    self._failed = True
                    raise

    def _commit(self, batch: _Batch) -> dict[str, int]:
        attempt = 0
        while True:
            try:
                return self._commit_once(batch)
            except OSError as exc:
                self._ds = None  # reopen: another writer may have moved the dataset on
                if _is_conflict(exc) and attempt < self.conflict_retries:
                    attempt += 1
                    log.info("commit conflict on %s, retrying (%d)", self.uri, attempt)
                    time.sleep(min(2.0, 0.05 * 2**attempt))
                    continue
                raise CommitError(_os_error_message(exc, self.uri)) from exc

    def _commit_once(self, batch: _Batch) -> dict[str, int]:
        out: dict[str, int] = {"commits": 0}
        table = batch.table
        ds: lance.LanceDataset | None = None
        if table is not None and table.num_rows:
            n = table.num_rows
            if not self._exists:
                # Two processes creating one local dataset at once could both "succeed", the
                # second manifest replacing the first (a batch lost): create under a file lock,
                # and write into the dataset when another process created it meanwhile.
                with _create_lock(self.uri):
                    theirs = self._open_dataset() is not None
                    if not theirs:
                        try:
                            ds = lance.write_dataset(
                                table,
                                self.uri,
                                schema=self.schema,
                                mode="create",
                                storage_options=self.storage_options,
                                session=self._session(),
                                transaction_properties=self._tx,
                            )
                        except OSError as exc:
                            if "already exists" not in str(exc):
                                raise
                            theirs = True
                if theirs:
                    self._check_schema(self._dataset())
                    self._exists = True
                    self._fresh = False
                    return self._commit_once(batch)
                self._exists = True
                assert ds is not None
                self._checked = ds.version
                out["inserted" if self.mode == "upsert" else "appended"] = n
                self._rows += n
                self._remember(batch.key_array())
            elif self.mode == "append" or (
                self._fresh and self._alone() and self._is_new(batch.key_array())
            ):
                ds = lance.write_dataset(
                    table,
                    self.uri,
                    mode="append",
                    storage_options=self.storage_options,
                    session=self._session(),
                    transaction_properties=self._tx,
                )
                if self._fresh:
                    # appends rebase on whatever was committed meanwhile: rows another writer
                    # added between the check and this commit may be these rows' twins
                    if ds.version != self._checked + 1 and self._others_added_rows(
                        ds, self._checked + 1, ds.version - 1, _ADDS_ROWS
                    ):
                        self._fresh = False
                        self._heal = True
                    else:
                        self._checked = ds.version
                out["appended" if self.mode == "append" else "inserted"] = n
                self._rows += n
            else:
                ds = self._handle()
                read = ds.version
                ins, upd = upsert_table(ds, table)  # moves ds to the new version
                out["inserted"] = ins
                out["updated"] = upd
                out["unchanged"] = n - ins - upd
                self._rows += ins
                if ins + upd > n:  # a uuid matched two rows: heal it
                    self._heal = True
                elif ds.version != read + 1 and self._others_added_rows(
                    ds, read + 1, ds.version - 1, _APPENDS
                ):
                    self._heal = True  # an append overtook this merge: its rows may be twins
            out["commits"] += 1
        if self._heal and ds is not None:
            removed = heal_duplicates(ds)  # moves ds to the new version when it deletes
            self._heal = False
            out["duplicates_removed"] = removed
            self._rows -= removed
            out["commits"] += removed > 0
        if batch.deletes and self._exists:
            ds = ds or self._handle()
            deleted = delete_uuids(ds, batch.deletes)  # moves ds to the new version
            out["deleted"] = deleted
            self._rows -= deleted
            out["commits"] += 1
        self._commits += out["commits"]
        if ds is None and self._exists:
            ds = self._handle()
        self._ds = ds
        if ds is not None:
            out["maintenance"] = self._maintain(ds)
            if out["maintenance"]:
                ds = self._ds = self._dataset()
            out["version"] = self._version = ds.version
            self.indexes.after_commit()  # returns at once: the upkeep runs in the background
        return out

    _ds: lance.LanceDataset | None = None

    def _handle(self) -> lance.LanceDataset:
        """The dataset as this writer last left it (opened on first use and after a failure).

        Each commit moves the handle to the version it created; a commit against a handle that
        another writer has overtaken conflicts and is retried with a fresh one (``_commit``)."""
        if self._ds is None:
            self._ds = self._dataset()
        return self._ds

    def _finish(self, full_refresh: bool = False) -> int:
        """End of a run: leave fresh-load mode; rows deleted as duplicates.

        A fresh load checks once more that no other writer added rows after its last append,
        and a full re-sync (``--full``) checks the whole dataset for uuids stored twice (by an
        earlier version, or a writer killed between its append and its check): either deletes
        the extra rows (:func:`heal_duplicates`).

        The uuid index is not built here: building it costs a burst of memory proportional to
        the dataset, which would make a bulk import's peak grow with its size. The next run
        builds it at its first commit (see ``_maintain``), when merges start to need it.
        """
        removed = 0
        if self._exists and self.mode == "upsert" and (self._fresh or full_refresh):
            heal = full_refresh or not self._alone()
            for attempt in range(self.conflict_retries + 1) if heal else ():
                try:
                    ds = self._ds = self._dataset()
                    removed = heal_duplicates(ds)
                    self._rows -= removed
                    self._version = ds.version
                    break
                except OSError as exc:
                    if not _is_conflict(exc) or attempt == self.conflict_retries:
                        raise CommitError(_os_error_message(exc, self.uri)) from exc
                    time.sleep(min(2.0, 0.05 * 2 ** (attempt + 1)))
        self._fresh = False
        self._written = UuidKeySet()
        self.indexes.finish()
        return removed

    def _alone(self) -> bool:
        """In a fresh load: False when another writer added rows since the last check.

        Then the load stops appending (it merges from now on) and heals the dataset at its next
        commit: that writer may have stored some of the rows this load appended before.
        """
        ds = self._handle()
        latest = ds.latest_version
        if latest != self._checked and self._others_added_rows(
            ds, self._checked + 1, latest, _ADDS_ROWS
        ):
            self._fresh = False
            self._heal = True
            return False
        self._checked = latest
        return True

    def _others_added_rows(
        self, ds: lance.LanceDataset, first: int, last: int, kinds: frozenset[str]
    ) -> bool:
        """True when a version in ``first..last`` is another writer's operation of ``kinds``
        (or cannot be read). Only runs when the versions moved by more than this sink's commits."""
        for version in range(first, last + 1):
            try:
                tx = ds.read_transaction(version)
            except TypeError as exc:
                # pylance 14.0.2 cannot build the Python form of a compaction that rewrote an
                # index (the FTS index, say): a Rewrite, which never adds rows
                if "RewrittenIndex" in str(exc):
                    continue
                return True
            except (OSError, ValueError):
                return True
            if tx is None:
                return True
            if (tx.transaction_properties or {}).get(WRITER_PROPERTY) == self._tx[WRITER_PROPERTY]:
                continue
            if type(tx.operation).__name__ in kinds:
                return True
        return False

    def _remember(self, keys: pa.Array) -> None:
        if self._fresh:
            self._written.add(keys)

    def _is_new(self, keys: pa.Array) -> bool:
        """In a fresh load: True when no uuid of the batch was written earlier in this run.

        Then the batch can be appended: nothing in the dataset can match it (this sink created
        the dataset and no other writer has committed since). Otherwise it is merged.
        """
        if self._written.contains_any(keys):
            self._fresh = False
            return False
        self._written.add(keys)
        return True

    def _compact_small(self, ds: lance.LanceDataset) -> None:
        """Merge the small fragments (tiny commits, mostly-deleted rows), leave full ones alone.

        A compaction reads everything it rewrites: compacting a whole bulk import at once cost
        ~500 MB of peak memory per 500k rows here. Fragments that already hold half a batch or
        more are excluded, and one pass rewrites at most four batches' worth of rows, so the
        memory maintenance needs is bounded by the batch size, not by the dataset.
        """
        small_below = max(1, self.batch_rows // 2)
        fragments = ds.get_fragments()
        big = [f.fragment_id for f in fragments if f.count_rows() >= small_below]
        if len(fragments) - len(big) < 2:
            return
        ds.optimize.compact_files(
            target_rows_per_fragment=self.batch_rows,
            excluded_fragment_ids=big,
            max_source_rows=4 * self.batch_rows,
            num_threads=1,
        )

    @staticmethod
    def _optimize_uuid_index(ds: lance.LanceDataset) -> None:
        """Fold new rows into the uuid index only: the search indexes are the IndexKeeper's, off
        the writer's path (folding them in here would stall the stream)."""
        names = column_index_names(ds, "uuid")
        if names:
            ds.optimize.optimize_indices(index_names=names)

    def _maintain(self, ds: lance.LanceDataset) -> int:
        """Index, optimize, compact and clean up from the writer itself (compaction does not retry)."""
        ran = 0
        try:
            merging = self.mode == "upsert" and not self._fresh
            if not self._indexed:
                # only merges need the index: appends (and a fresh load) leave it to the first
                # merging run past the threshold
                if merging and self._rows >= self.index_threshold:
                    ds.create_scalar_index("uuid", index_type="BTREE")
                    self._indexed = True
                    ran += 1
            elif self.optimize_every and self._commits % self.optimize_every == 0:
                self._optimize_uuid_index(ds)
                ran += 1
            if (
                self.maintenance_every
                and self._commits
                and self._commits % self.maintenance_every == 0
            ):
                self._compact_small(ds)
                if self._indexed:
                    self._optimize_uuid_index(ds)
                ds.cleanup_old_versions(older_than=self.cleanup_older_than)
                ran += 1
        except OSError as exc:  # maintenance losing to a concurrent writer is not fatal
            log.warning("dataset maintenance on %s skipped: %s", self.uri, exc)
        return ran


@contextlib.contextmanager
def _create_lock(uri: str) -> Iterator[None]:
    """An exclusive lock on creating a local dataset (nothing to lock for object stores)."""
    path = local_path(uri)
    if path is None:
        yield
        return
    with file_lock(path / "_cfstream" / "create.lock"):
        yield


class UuidKeySet:
    """The uuid keys (first 64 bits, :func:`~cfstream.records.uuid_keys`) written so far.

    One sorted ``uint64`` array: 8 bytes a key whatever the run's size, a batch checked with one
    ``searchsorted``, a batch added by a linear merge (a stable sort of two sorted runs). A false
    "seen" (two uuids sharing 64 bits) only sends a batch down the slower, merging path.
    """

    def __init__(self) -> None:
        self._keys: np.ndarray[Any, np.dtype[np.uint64]] = np.empty(0, dtype=np.uint64)

    def __len__(self) -> int:
        return len(self._keys)

    def contains_any(self, keys: pa.Array) -> bool:
        """True when some key of ``keys`` is in the set."""
        seen = self._keys
        if not len(seen) or not len(keys):
            return False
        new = keys.to_numpy(zero_copy_only=False)
        at = np.minimum(np.searchsorted(seen, new), len(seen) - 1)
        return bool((seen[at] == new).any())

    def add(self, keys: pa.Array) -> None:
        """Add ``keys`` to the set."""
        new = np.sort(keys.to_numpy(zero_copy_only=False))
        self._keys = np.sort(np.concatenate([self._keys, new]), kind="stable")


def _would_block() -> list[Item]:
    raise anyio.WouldBlock


def _newer_or_equal(new: Document, old: Document) -> bool:
    """True when ``new`` should replace ``old`` in a batch (newer source_updated_at, or a tie)."""
    a = new.source_updated_at or new.updated_at
    b = old.source_updated_at or old.updated_at
    if a is None or b is None:
        return True
    try:
        ta, tb = parse_timestamp(a), parse_timestamp(b)
        if ta is None or tb is None:
            return True
        return ta >= tb
    except (ValueError, TypeError, AttributeError):  # not a timestamp: the sink dead-letters it
        return True
