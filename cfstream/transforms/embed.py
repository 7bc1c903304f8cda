"""``embed``: fill ``Document.vector`` with an embedder, embedding only what changed.

::

    pipeline = source | T.chunk() | T.embed(LocalEmbedder()) | LanceSink("kb.lance")

What is embedded: a document's ``text_content`` (its ``title`` when the text is empty), for every
document except a chunked parent (``custom_metadata["cfstream.chunks"]`` set: its chunks carry the
vectors) and documents with neither text nor title, which pass through without a vector.

Only changed content is embedded. The stage marks each row it embeds with
``custom_metadata["cfstream.embedding"] = "<record id>:<document hash>:<text hash>"`` (the record
is the dataset's embedder record, :mod:`cfstream.embed.record`; the document hash is that of the
document as it arrived, the text hash that of the text embedded). Before embedding a chunk of
documents it asks the sink, in one call, what it holds for their uuids:

- a document whose stored row carries the same record id and document hash is already stored,
  identical, with a vector from this embedder: it is dropped (counted as ``skipped_unchanged`` of
  its source and ``dropped`` of the stage);
- a document that changed but whose text did not (a new title, tags or timestamps; a chunk of an
  edited document) gets its stored vector back (one more lookup, of those rows' vectors) and is
  not sent to the embedder;
- anything else is embedded. Its row, whose content hash changes with the mark and the vector,
  is rewritten by the sink.

The embedder is checked against the dataset before anything is written: a dataset whose vectors
come from another embedder (name or width) stops the run with :class:`EmbedderChangedError`,
unless the stage has ``reembed=True``: then the sink drops the old vectors (the column is
replaced: rows not re-embedded have no vector, never one of another embedder), records the new
embedder, and this run embeds every document it receives. Run it with ``--full`` (a full re-sync)
so that every document comes through once. ``reembed`` may stay on: a run whose embedder is the
recorded one skips unchanged work as usual (but a later change of embedder then replaces the
vectors instead of stopping).

Texts are sent in batches of ``batch_size`` (across documents), up to ``concurrency`` batches at a
time; the order of items is kept, so a checkpoint leaves the stage after every document before it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anyio
import numpy as np
import xxhash
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from cfstream.contract.context import StageContext
from cfstream.embed.base import (
    Embedder,
    EmbedderChangedError,
    as_matrix,
    close_embedder,
)
from cfstream.embed.record import (
    ROW_KEY,
    changed_embedder_message,
    embedder_record,
    same_embedder,
)
from cfstream.errors import ClientError
from cfstream.records import Document, uuid_array, uuid_digests
from cfstream.transforms.base import Chunk, Stage, chunks, count_docs
from cfstream.transforms.chunking import CHUNKS

__all__ = ("CHUNKED_PARENT_KEY", "Embed", "embed")

#: custom_metadata key of a document split into chunks (its chunks are embedded, not it)
CHUNKED_PARENT_KEY = CHUNKS  # the chunk stage marks the documents it split with it


def _text_of(doc: Document) -> str | None:
    meta = doc.custom_metadata
    if meta and CHUNKED_PARENT_KEY in meta:
        return None
    text = doc.text_content
    if type(text) is str and text.strip():
        return text
    title = doc.title
    if type(title) is str and title.strip():
        return title
    return None


def _text_hash(text: str) -> str:
    return xxhash.xxh3_64_hexdigest(text.encode("utf-8", "surrogatepass"))


def _mark_of(stored: Any) -> str | None:
    """The embedding mark of a stored row's custom_metadata (Lance: a list of key/value
    structs; MemorySink: a dict)."""
    if isinstance(stored, dict):
        value = stored.get(ROW_KEY)
        return value if isinstance(value, str) else None
    if isinstance(stored, list):
        for kv in stored:
            if isinstance(kv, dict) and kv.get("key") == ROW_KEY:
                value = kv.get("value")
                return value if isinstance(value, str) else None
    return None


@dataclass(eq=False)
class _Work:
    """One input chunk on its way through the stage."""

    items: Chunk
    #: positions in ``items`` of the documents to embed, their texts and input hashes
    positions: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)
    text_hashes: list[str] = field(default_factory=list)
    #: documents already stored as they are (dropped), and those whose stored vector is reused
    unchanged: set[int] = field(default_factory=set)
    reused: set[int] = field(default_factory=set)
    vectors: list[Any] = field(default_factory=list)
    failed: dict[int, BaseException] = field(default_factory=dict)
    pending: int = 0
    done: anyio.Event = field(default_factory=anyio.Event)

    def finish_one(self) -> None:
        self.pending -= 1
        if self.pending <= 0:
            self.done.set()


@dataclass
class _RunState:
    """What one run of the stage knows about the dataset's embedder."""

    #: the record id whose marks count as "already embedded" (None: skip nothing)
    lookup_id: str | None = None
    #: the id of the dataset's record when it is this embedder's
    have_id: str | None = None
    #: the record in effect once the sink was told (None: not yet)
    record: dict[str, Any] | None = None
    #: the width the dataset expects (0: unknown yet)
    dim: int = 0


class Embed(Stage):
    """Fill ``Document.vector``; see :func:`embed` and the module docstring."""

    def __init__(
        self,
        embedder: Embedder,
        *,
        batch_size: int | None = None,
        concurrency: int | None = None,
        reembed: bool = False,
        name: str | None = None,
    ) -> None:
        for attr in ("name", "dim", "embed"):
            if not hasattr(embedder, attr):
                raise TypeError(
                    f"{embedder!r} is not an embedder: it needs `name`, `dim` and "
                    "`async embed(texts)` (see cfstream.embed.Embedder)"
                )
        self.embedder = embedder
        self.batch_size = int(batch_size or getattr(embedder, "batch_size", None) or 64)
        self.concurrency = int(concurrency or getattr(embedder, "concurrency", None) or 2)
        if self.batch_size < 1 or self.concurrency < 1:
            raise ValueError("batch_size and concurrency must be at least 1")
        self.reembed = reembed
        self.name = name or "embed"

    def __repr__(self) -> str:
        return f"<Embed {self.embedder.name!r} batch_size={self.batch_size}>"

    # ------------------------------------------------------------------------------------------
    # the dataset's embedder
    # ------------------------------------------------------------------------------------------
    async def _start(self, st: _RunState, ctx: StageContext) -> None:
        """Compare the embedder with the dataset's record before anything is embedded."""
        sink = ctx.run.sink
        emb = self.embedder
        have = await sink.embedder() if sink is not None else None
        if have is not None:
            if same_embedder(have, emb.name, emb.dim):
                st.dim = int(have["dim"])
                st.lookup_id = st.have_id = str(have.get("id"))
            elif not self.reembed:
                raise EmbedderChangedError(
                    changed_embedder_message(_where(sink), have, emb.name, emb.dim)
                )
        elif sink is not None:
            # a sink that keeps no record (MemorySink, a user's sink): ids are derived from
            # the embedder itself, so marks of the same embedder count across runs
            st.lookup_id = str(embedder_record(emb, dim=emb.dim or 0, new_id=False)["id"])
        if emb.dim:
            await self._ready(st, ctx)

    async def _ready(self, st: _RunState, ctx: StageContext) -> None:
        """Tell the sink (once) which embedder's vectors are coming: it makes room for them
        and records the embedder, or refuses (another embedder's vectors are stored)."""
        if st.record is not None:
            return
        emb = self.embedder
        dim = emb.dim or st.dim
        if not dim:  # nothing embedded yet and no record to learn from: ask once
            probe = await emb.embed(["cfstream"])
            dim = emb.dim or int(np.asarray(probe).shape[1])
        want = embedder_record(emb, dim=dim, new_id=False)
        sink = ctx.run.sink
        if sink is None:
            rec = want
        elif ctx.run.dry_run:  # check, change nothing
            have = await sink.embedder()
            if have is not None and same_embedder(have, emb.name, dim):
                rec = have
            elif have is not None and not self.reembed:
                raise EmbedderChangedError(
                    changed_embedder_message(_where(sink), have, emb.name, dim)
                )
            else:
                rec = want
        else:
            rec = await sink.use_embedder(want, replace=self.reembed)
        rid = str(rec.get("id"))
        if rid in (want["id"], st.have_id):
            st.lookup_id = rid
        else:
            # a record made now (a new dataset, a new vector column, vectors replaced): no
            # stored row carries its id, so this run asks the sink nothing (a first load pays
            # no lookups)
            st.lookup_id = None
        st.record = rec
        st.dim = int(rec["dim"])

    # ------------------------------------------------------------------------------------------
    # the stream
    # ------------------------------------------------------------------------------------------
    async def _plan(self, chunk: Chunk, st: _RunState, ctx: StageContext) -> _Work:
        """Find the documents of ``chunk`` to embed (one lookup of what is stored)."""
        work = _Work(chunk)
        docs: list[Document] = []
        for i, it in enumerate(chunk):
            if type(it) is not Document:
                continue
            text = _text_of(it)
            if text is None:
                continue
            work.positions.append(i)
            work.texts.append(text)
            docs.append(it)
        if not docs:
            return work
        work.vectors = [None] * len(docs)
        work.text_hashes = [_text_hash(t) for t in work.texts]
        try:
            work.hashes = [d.compute_hash() for d in docs]
        except Exception:  # a value the hash cannot take: one by one, the bad ones fail alone
            work.hashes = []
            for p, d in zip(work.positions, docs, strict=True):
                try:
                    work.hashes.append(d.compute_hash())
                except Exception as exc:
                    work.failed[p] = exc
                    work.hashes.append("")
        sink = ctx.run.sink
        if st.lookup_id is not None and sink is not None:
            try:
                uuids = uuid_array(uuid_digests(docs)).to_pylist()
            except Exception:  # an id that cannot be formatted: the sink dead-letters it
                uuids = []
            stored = await sink.stored(uuids, ["custom_metadata"]) if uuids else {}
            same_text: dict[str, int] = {}
            for k, (u, h) in enumerate(zip(uuids, work.hashes, strict=True)):
                row = stored.get(u)
                mark = _mark_of(row.get("custom_metadata")) if row is not None else None
                if not h or mark is None:
                    continue
                rid, _, rest = mark.partition(":")
                doc_hash, _, text_hash = rest.partition(":")
                if rid != st.lookup_id:
                    continue
                if doc_hash == h:
                    work.unchanged.add(k)
                elif text_hash == work.text_hashes[k]:
                    same_text[u] = k
            if same_text:
                # edited documents whose embedded text did not change (a chunk of an edited
                # document, a new title over the same text): their stored vector is reused
                rows = await sink.stored(list(same_text), ["vector"])
                for u, k in same_text.items():
                    vec = (rows.get(u) or {}).get("vector")
                    if vec is not None and len(vec) == st.dim:
                        work.vectors[k] = np.asarray(vec, dtype=np.float32)
                        work.reused.add(k)
        return work

    async def _embed_batch(self, work: _Work, ks: list[int], limiter: anyio.Semaphore) -> None:
        try:
            async with limiter:
                texts = [work.texts[k] for k in ks]
                try:
                    vecs = await self._call(texts)
                except ClientError:
                    if len(ks) == 1:
                        raise
                    vecs = None
                if vecs is not None:
                    for j, k in enumerate(ks):
                        work.vectors[k] = vecs[j]
                    return
            for k in ks:  # the server refused the batch: find the texts it refuses alone
                async with limiter:
                    try:
                        work.vectors[k] = (await self._call([work.texts[k]]))[0]
                    except ClientError as exc:
                        work.failed[work.positions[k]] = exc
        except ClientError as exc:
            work.failed[work.positions[ks[0]]] = exc
        finally:
            work.finish_one()

    async def _call(self, texts: list[str]) -> np.ndarray:
        emb = self.embedder
        out = await emb.embed(texts)
        return as_matrix(out, len(texts), emb.dim, f"embedder {emb.name!r}")

    def _finish(self, work: _Work, st: _RunState, ctx: StageContext) -> Chunk:
        """The output chunk of ``work``: vectors and marks set, unchanged documents dropped,
        failed ones dead-lettered; items in their input order."""
        rid = st.record["id"] if st.record is not None else None
        out_skip: set[int] = set()
        sources = ctx.run.report.sources
        for k, p in enumerate(work.positions):
            doc: Document = work.items[p]  # type: ignore[assignment]
            if p in work.failed:
                out_skip.add(p)
                exc = work.failed[p]
                ctx.dead_letter(
                    exc if isinstance(exc, Exception) else str(exc),
                    doc,
                    source=doc.source_name,
                    source_id=doc.source_id,
                )
                continue
            if k in work.unchanged:
                out_skip.add(p)
                ctx.stats.dropped += 1
                stats = sources.get(doc.source_name or "")
                if stats is not None:
                    stats.skipped_unchanged += 1
                continue
            vec = work.vectors[k]
            if st.dim and vec.shape[0] != st.dim:
                have = st.record or {"name": self.embedder.name, "dim": st.dim}
                raise EmbedderChangedError(
                    changed_embedder_message(
                        _where(ctx.run.sink), have, self.embedder.name, int(vec.shape[0])
                    )
                )
            meta = dict(doc.custom_metadata or {})
            meta[ROW_KEY] = f"{rid}:{work.hashes[k]}:{work.text_hashes[k]}"
            doc.custom_metadata = meta
            doc.vector = vec
            doc.content_hash = None
        if not out_skip:
            return work.items
        return [it for i, it in enumerate(work.items) if i not in out_skip]

    async def _emit(
        self,
        receive: ObjectReceiveStream[_Work],
        send: ObjectSendStream[Chunk],
        st: _RunState,
        ctx: StageContext,
    ) -> None:
        stats = ctx.stats
        async with receive:
            async for work in receive:
                await work.done.wait()
                kept = count_docs(work.items) - len(work.unchanged) - len(work.failed)
                if kept > 0 and st.record is None:
                    # before the first document reaches the sink: the vector column and the
                    # record (or the refusal), and the record id of the marks
                    await self._ready(st, ctx)
                out = self._finish(work, st, ctx)
                stats.docs_out += count_docs(out)
                if out:
                    await send.send(out)

    async def run(
        self,
        receive: ObjectReceiveStream[Chunk],
        send: ObjectSendStream[Chunk],
        ctx: StageContext,
    ) -> None:
        """Embed every chunk's documents, up to ``concurrency`` batches at once, in order."""
        st = _RunState()
        if ctx.run.sink is not None:
            ctx.run.sink.want_search()
        try:
            await self._start(st, ctx)
            limiter = anyio.Semaphore(self.concurrency)
            q_send, q_recv = anyio.create_memory_object_stream[_Work](self.concurrency)
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._emit, q_recv, send, st, ctx)
                async with q_send:
                    async for chunk in chunks(receive):
                        ctx.stats.docs_in += count_docs(chunk)
                        work = await self._plan(chunk, st, ctx)
                        skip = work.unchanged | work.reused
                        todo = [
                            k
                            for k, p in enumerate(work.positions)
                            if k not in skip and p not in work.failed
                        ]
                        batches = [
                            todo[i : i + self.batch_size]
                            for i in range(0, len(todo), self.batch_size)
                        ]
                        work.pending = len(batches)
                        if not batches:
                            work.done.set()
                        for b in batches:
                            tg.start_soon(self._embed_batch, work, b, limiter)
                        await q_send.send(work)
        finally:
            with anyio.CancelScope(shield=True):
                await close_embedder(self.embedder)


def _where(sink: Any) -> str:
    uri = getattr(sink, "uri", None)
    return f"dataset {uri}" if uri else "the destination"


def embed(
    embedder: Embedder,
    *,
    batch_size: int | None = None,
    concurrency: int | None = None,
    reembed: bool = False,
    name: str | None = None,
) -> Embed:
    """Fill ``Document.vector`` (float32, the embedder's width) with ``embedder``.

    ``batch_size`` texts go to the embedder per call (default: the embedder's ``batch_size``,
    else 64), up to ``concurrency`` calls at a time (default: its ``concurrency``, else 2).
    Unchanged documents already stored with a vector from this embedder are dropped, not
    embedded again. ``reembed=True`` accepts a dataset whose vectors come from another embedder:
    they are dropped and every document this run receives is embedded (use it with a full
    re-sync; with the recorded embedder it changes nothing). A text the server refuses (a 4xx other than auth or rate limits, e.g. too long)
    sends its document to the dead letters; any other failure stops the run. See the module
    docstring of :mod:`cfstream.transforms.embed`.
    """
    return Embed(
        embedder, batch_size=batch_size, concurrency=concurrency, reembed=reembed, name=name
    )
