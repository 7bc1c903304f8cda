"""``map``: apply a function to every document, with bounded concurrency."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from cfstream.contract.context import StageContext
from cfstream.records import Document, Item
from cfstream.transforms.base import Chunk, Stage, chunks, count_docs

__all__ = ("Map", "map")

MapResult = Document | Sequence[Document] | None
MapFn = Callable[[Document], MapResult] | Callable[[Document], Awaitable[MapResult]]


class Map(Stage):
    """Apply ``fn`` to every document; see :func:`map`."""

    def __init__(
        self,
        fn: MapFn,
        *,
        concurrency: int = 1,
        ordered: bool = True,
        threads: bool = False,
        name: str | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.fn = fn
        self.concurrency = concurrency
        self.ordered = ordered
        self.threads = threads
        self.is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
        )
        self.name = name or f"map:{getattr(fn, '__name__', type(fn).__name__)}"
        self._limiter = anyio.CapacityLimiter(concurrency) if threads else None

    async def _call(self, doc: Document) -> Any:
        if self.is_async:
            return await self.fn(doc)  # type: ignore[misc]
        if self.threads:
            return await anyio.to_thread.run_sync(self.fn, doc, limiter=self._limiter)
        return self.fn(doc)

    @staticmethod
    def _emit(doc: Document, result: Any, out: list[Item], ctx: StageContext) -> None:
        if result is None:
            ctx.stats.dropped += 1
            return
        if isinstance(result, Document):
            result.content_hash = None
            if result.source_type is None:
                result.source_type = doc.source_type
            if result.source_name is None:
                result.source_name = doc.source_name
            out.append(result)
            return
        if isinstance(result, Sequence) and not isinstance(result, str | bytes):
            for r in result:
                if not isinstance(r, Document):
                    raise TypeError(f"map function returned a {type(r).__name__}, not a Document")
                Map._emit(doc, r, out, ctx)
            return
        raise TypeError(
            f"map function returned a {type(result).__name__}; return a Document, a list of "
            "Documents, or None to drop the document"
        )

    def sync_apply(self) -> Callable[[Chunk, StageContext], Chunk] | None:
        """The whole stage as one synchronous call per chunk, for a plain synchronous ``fn``."""
        if self.is_async or self.threads or type(self).run is not Map.run:
            return None
        return self._apply_sync

    def _apply_sync(self, chunk: Chunk, ctx: StageContext) -> Chunk:
        out: Chunk = []
        fn = self.fn
        for it in chunk:
            if type(it) is not Document:
                out.append(it)  # calls are in order: a checkpoint keeps its place
                continue
            try:
                r = fn(it)
                if r is it:  # changed in place: the common case
                    it.content_hash = None
                    out.append(it)
                else:
                    self._emit(it, r, out, ctx)
            except Exception as exc:
                self._fail(it, exc, ctx)
        return out

    def _fail(self, doc: Document, exc: Exception, ctx: StageContext) -> None:
        ctx.dead_letter(exc, doc, source=doc.source_name, source_id=doc.source_id)

    async def _segment(self, docs: list[Document], out: list[Item], ctx: StageContext) -> None:
        """Map a run of documents (no checkpoint inside) with up to ``concurrency`` calls."""
        if not self.is_async and not self.threads:
            out.extend(self._apply_sync(docs, ctx))  # type: ignore[arg-type]
            return
        results: list[Any] = [None] * len(docs)
        failed: list[bool] = [False] * len(docs)
        done_order: list[int] = []
        next_index = 0

        async def worker() -> None:
            nonlocal next_index
            while next_index < len(docs):
                i = next_index
                next_index += 1
                try:
                    results[i] = await self._call(docs[i])
                except Exception as exc:
                    failed[i] = True
                    results[i] = exc
                done_order.append(i)

        async with anyio.create_task_group() as tg:
            for _ in range(min(self.concurrency, len(docs))):
                tg.start_soon(worker)
        order = range(len(docs)) if self.ordered else done_order
        for i in order:
            if failed[i]:
                self._fail(docs[i], results[i], ctx)
                continue
            try:
                self._emit(docs[i], results[i], out, ctx)
            except Exception as exc:
                self._fail(docs[i], exc, ctx)

    async def run(
        self,
        receive: ObjectReceiveStream[Chunk],
        send: ObjectSendStream[Chunk],
        ctx: StageContext,
    ) -> None:
        """Map every chunk; checkpoints and tombstones are barriers that keep their place."""
        stats = ctx.stats
        async for chunk in chunks(receive):
            out: Chunk = []
            segment: list[Document] = []
            for it in chunk:
                if type(it) is Document:
                    segment.append(it)
                else:
                    if segment:
                        await self._segment(segment, out, ctx)
                        segment = []
                    out.append(it)
            if segment:
                await self._segment(segment, out, ctx)
            stats.docs_in += count_docs(chunk)
            stats.docs_out += count_docs(out)
            if out:
                await send.send(out)


def map(
    fn: MapFn,
    *,
    concurrency: int = 1,
    ordered: bool = True,
    threads: bool = False,
    name: str | None = None,
) -> Map:
    """Apply ``fn`` to every document.

    ``fn`` is a sync or async callable taking a :class:`~cfstream.records.Document` and returning
    a Document (the replacement), a list of Documents (one in, many out, e.g. chunking), or
    ``None`` to drop it. An exception sends the document to the dead-letter file; the run goes on.

    Async callables run up to ``concurrency`` at a time; sync callables run inline on the event
    loop, or in up to ``concurrency`` worker threads with ``threads=True`` (for blocking work).
    ``ordered=True`` keeps the input order; either way checkpoints are barriers: a checkpoint
    leaves the stage only after every document before it.
    """
    return Map(fn, concurrency=concurrency, ordered=ordered, threads=threads, name=name)
