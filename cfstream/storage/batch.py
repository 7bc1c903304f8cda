"""Batches: cutting a stream of items into batches, and resolving a batch before it is written.

- :class:`Batcher` buffers items in arrival order and cuts a :class:`Batch` when it holds
  ``rows`` documents, ``nbytes`` of text, or has waited ``max_latency`` seconds.
- :func:`resolve_batch` keeps one document per uuid (the newest ``source_updated_at`` wins, ties
  go to the last arrival: Lance rejects or duplicates repeated keys inside one ``merge_insert``)
  and applies tombstones in arrival order.
- :func:`prepare_batch` resolves a batch and builds its Arrow table; a document the batch
  cannot convert is found by converting the batch one document at a time, only then, and set
  aside in ``batch.rejected`` (:func:`dead_letter_rejected` dead-letters them).

``LanceSink`` and Ray's ``FragmentSink`` both batch and resolve with these.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter

import anyio
import pyarrow as pa
from anyio.abc import ObjectReceiveStream

from cfstream.checks import check_document
from cfstream.contract.context import RunContext
from cfstream.contract.report import SinkStats
from cfstream.errors import RecordError
from cfstream.records import (
    Checkpoint,
    Document,
    Item,
    Tombstone,
    parse_timestamp,
    record_uuid,
    uuid_array,
    uuid_digest,
    uuid_digests,
    uuid_keys,
    without_surrogates,
)
from cfstream.storage.codec import TableBuilder

__all__ = (
    "Batch",
    "Batcher",
    "dead_letter_rejected",
    "dedupe_documents",
    "newer_or_equal",
    "prepare_batch",
    "resolve_batch",
)


@dataclass(slots=True)
class Batch:
    """Documents, deletions and checkpoints to write together, and what is derived from them."""

    docs: list[Document] = field(default_factory=list)
    #: the documents' uuids, in order (set by :func:`resolve_batch` unless given)
    uuids: Sequence[str] | pa.Array | None = None
    deletes: list[str] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    #: (documents buffered before it, uuid digest) of each tombstone, in arrival order
    tombstones: list[tuple[int, bytes]] = field(default_factory=list)
    #: first 64 bits of each uuid (``uuid_keys``), for the fresh-load check
    keys: pa.Array | None = None
    table: pa.Table | None = None
    #: documents without a usable uuid, or that cannot be converted (to dead-letter)
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

    @property
    def empty(self) -> bool:
        """True when the batch holds nothing to write or save."""
        return not (self.docs or self.deletes or self.checkpoints)


def newer_or_equal(new: Document, old: Document) -> bool:
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


def dedupe_documents(
    docs: list[Document], digests: list[bytes], tombstones: list[tuple[int, bytes]]
) -> tuple[list[Document], list[bytes]]:
    """One document per uuid digest (see :func:`resolve_batch`), in first-arrival order."""
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
            if old is None or newer_or_equal(doc, old):
                out[pos] = doc
    apply_tombstones(len(docs))
    kept = [(d, g) for d, g in zip(out, out_digests, strict=True) if d is not None]
    return [d for d, _ in kept], [g for _, g in kept]


def resolve_batch(batch: Batch) -> None:
    """Give the batch its uuids and keys; keep one document per uuid, drop tombstoned ones.

    Within a batch the newest ``source_updated_at`` wins (ties: the last arrival; Lance rejects
    or duplicates repeated keys inside one ``merge_insert``); a document buffered before a
    tombstone of its uuid is dropped, one after it is kept (and the delete with it). A document
    whose uuid cannot be derived goes to ``batch.rejected``.
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
        docs, digests = dedupe_documents(docs, digests, batch.tombstones)
        batch.docs = docs
    batch.tombstones = []
    uuids = uuid_array(digests)
    batch.uuids = uuids
    batch.keys = uuid_keys(digests)
    if batch.deletes:
        live = set(uuids.to_pylist()) if len(uuids) else set()
        batch.deletes = sorted(set(batch.deletes) - live)


def _builds(builder: TableBuilder, doc: Document, uid: str) -> bool:
    try:
        builder.build([doc], [uid])
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


def _build_one_by_one(batch: Batch, builder: TableBuilder) -> None:
    """Move the documents that fail to build on their own, whatever they raise, to
    ``batch.rejected``; store the ones whose only fault is lone surrogates with them escaped."""
    if batch.uuids is None or batch.keys is None:
        resolve_batch(batch)  # cannot fail: it rejects what it cannot handle
    assert batch.uuids is not None and batch.keys is not None
    uuids = batch.uuids.to_pylist() if isinstance(batch.uuids, pa.Array) else list(batch.uuids)
    good: list[int] = []
    for i, (doc, uid) in enumerate(zip(batch.docs, uuids, strict=True)):
        try:
            builder.build([doc], [uid])
        except Exception as exc:  # any failure is this document's own
            escaped = without_surrogates(doc)
            if escaped is not None and _builds(builder, escaped, uid):
                batch.docs[i] = escaped  # stored with its lone surrogates escaped
            else:
                batch.rejected.append((doc, _clear_error(doc, exc)))
                continue
        good.append(i)
    batch.docs = [batch.docs[i] for i in good]
    batch.uuids = [uuids[i] for i in good]
    batch.keys = batch.keys.take(pa.array(good, pa.int64()))


def prepare_batch(batch: Batch, builder: TableBuilder, *, build: bool = True) -> None:
    """Resolve ``batch`` (:func:`resolve_batch`) and, when ``build``, set ``batch.table``.

    A batch that fails to build (a wrong-typed field and no ``validate`` stage before the sink)
    is converted one document at a time: the documents that fail go to ``batch.rejected`` with
    the field at fault, the rest is built. Dead-letter ``batch.rejected`` afterwards
    (:func:`dead_letter_rejected`), whether this returns or raises.
    """
    try:
        resolve_batch(batch)
        if build and batch.docs:
            assert batch.uuids is not None
            batch.table = builder.build(batch.docs, batch.uuids)
    except Exception:  # whatever a wrong-typed field raises, find its document
        _build_one_by_one(batch, builder)
        batch.table = builder.build(batch.docs, batch.uuids) if batch.docs else None


def dead_letter_rejected(batch: Batch, ctx: RunContext, stage: str) -> None:
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


def _would_block() -> list[Item]:
    raise anyio.WouldBlock


class Batcher:
    """Cuts the items a sink receives into :class:`Batch` es, in arrival order.

    A batch is cut when it holds ``rows`` documents, ``nbytes`` of text and raw data, or has
    waited ``max_latency`` seconds since its first item; a chunk that leaves the batch with
    checkpoints alone cuts it at once (nothing to wait for). Counts ``rows_in`` and
    ``rows_by_source`` in ``stats``. Per-document work is kept to C-level passes over each chunk.
    """

    def __init__(self, *, rows: int, nbytes: int, max_latency: float, stats: SinkStats) -> None:
        self.rows = rows
        self.nbytes = nbytes
        self.max_latency = max_latency
        self.stats = stats
        #: the batch being filled or handed on (None once the stream ended and all was handed on)
        self.pending: Batch | None = None

    async def run(
        self,
        receive: ObjectReceiveStream[list[Item]],
        submit: Callable[[Batch], Awaitable[None]],
    ) -> None:
        """Read ``receive`` to its end and ``await submit(batch)`` for each batch cut, the last
        one included. While ``submit`` runs, :attr:`pending` is the batch it was given."""
        stats = self.stats
        by_source = stats.rows_by_source
        batch = self.pending = Batch()
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
                if started is None and not batch.empty:
                    started = time.monotonic()
            full = len(batch.docs) >= self.rows or nbytes >= self.nbytes
            timed_out = started is not None and time.monotonic() - started >= self.max_latency
            if (
                full
                or timed_out
                or (chunk and not batch.docs and not batch.deletes and batch.checkpoints)
            ):
                await submit(batch)
                batch = self.pending = Batch()
                nbytes = 0
                started = None
        if not batch.empty:
            await submit(batch)
        self.pending = None
