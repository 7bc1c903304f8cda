"""The stage protocol: what sits between a source and the sink.

Items travel between stages in *chunks* (lists, usually a page of a source), so the cost of a
channel hop is paid once per chunk, not once per document. A stage reads chunks from its input
stream and sends chunks to its output stream; :class:`ChunkStage` covers the common case of a
function from one chunk to the next. Checkpoints and tombstones pass through every stage in order.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Sequence

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream

from cfstream.contract.context import StageContext
from cfstream.errors import CfStreamError, PipelineError
from cfstream.records import Document, Item

__all__ = (
    "MAX_COALESCED",
    "Chunk",
    "ChunkStage",
    "GeneratorStage",
    "Stage",
    "ChunkFunction",
    "chunks",
    "count_docs",
    "run_chunk_functions",
)

#: a list of items travelling between two stages
Chunk = list[Item]

#: the most items :func:`chunks` joins into one chunk
MAX_COALESCED = 1000
#: a synchronous stage as a function from one chunk to the next (:meth:`Stage.sync_apply`)
ChunkFunction = Callable[[Chunk, StageContext], Chunk]


def count_docs(chunk: Chunk) -> int:
    """How many Documents a chunk holds."""
    return list(map(type, chunk)).count(Document)


async def chunks(
    receive: ObjectReceiveStream[Chunk], max_items: int = MAX_COALESCED
) -> AsyncIterator[Chunk]:
    """The chunks of ``receive``, joining those already waiting in the channel (in order).

    Every ``receive()`` and ``send()`` of a channel yields to the event loop once; when a stage
    falls behind, the chunks queued before it are taken together (up to ``max_items`` items),
    so the hop costs of a busy pipeline shrink with its backlog while an idle one keeps its
    latency. Order, and with it every checkpoint's place, is unchanged.
    """
    nowait: Callable[[], Chunk] | None = getattr(receive, "receive_nowait", None)
    async for chunk in receive:
        while nowait is not None and len(chunk) < max_items:
            try:
                more = nowait()
            except (anyio.WouldBlock, anyio.EndOfStream):
                break
            chunk.extend(more)
        yield chunk


class Stage(ABC):
    """One step of a pipeline. Subclasses implement :meth:`run` or, simpler, :class:`ChunkStage`."""

    name: str = "stage"

    @abstractmethod
    async def run(
        self,
        receive: ObjectReceiveStream[Chunk],
        send: ObjectSendStream[Chunk],
        ctx: StageContext,
    ) -> None:
        """Consume every chunk of ``receive`` and send results to ``send`` until the input ends."""

    def sync_apply(self) -> ChunkFunction | None:
        """A synchronous function from one chunk to the next doing what :meth:`run` does, or None.

        The runner fuses consecutive stages that offer one into a single task (no channel between
        them, as stream engines chain operators); counting documents in and out is left to the
        runner. Stages that await anything return None.
        """
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class ChunkStage(Stage):
    """A stage that maps each chunk to a new chunk with a synchronous function."""

    @abstractmethod
    def apply(self, chunk: Chunk, ctx: StageContext) -> Chunk:
        """Return the output chunk for ``chunk`` (may be the same list, changed in place)."""

    def sync_apply(self) -> ChunkFunction | None:
        """:meth:`apply`, unless a subclass changed :meth:`run`."""
        return self.apply if type(self).run is ChunkStage.run else None

    async def run(
        self,
        receive: ObjectReceiveStream[Chunk],
        send: ObjectSendStream[Chunk],
        ctx: StageContext,
    ) -> None:
        """Apply :meth:`apply` to every chunk (the runner fuses it with its neighbours instead,
        through the same :func:`run_chunk_functions`)."""
        await run_chunk_functions([(self.apply, ctx)], receive, send)


class AsyncChunkStage(Stage):
    """A stage that maps each chunk to a new chunk with a coroutine (e.g. one that asks the sink
    what is stored): :meth:`process` is awaited for one chunk at a time, in order, and documents
    are counted in and out here."""

    async def prepare(self, ctx: StageContext) -> None:
        """Called once before the first chunk (default: nothing)."""

    @abstractmethod
    async def process(self, items: Chunk, ctx: StageContext) -> Chunk:
        """Return the output chunk for ``items`` (checkpoints must keep their place)."""

    async def run(
        self,
        receive: ObjectReceiveStream[Chunk],
        send: ObjectSendStream[Chunk],
        ctx: StageContext,
    ) -> None:
        """Await :meth:`process` for every chunk, counting documents in and out."""
        stats = ctx.stats
        await self.prepare(ctx)
        async for items in chunks(receive):
            stats.docs_in += count_docs(items)
            out = await self.process(items, ctx)
            stats.docs_out += count_docs(out)
            if out:
                await send.send(out)


async def run_chunk_functions(
    functions: Sequence[tuple[ChunkFunction, StageContext]],
    receive: ObjectReceiveStream[Chunk],
    send: ObjectSendStream[Chunk],
) -> None:
    """Pass every chunk of ``receive`` through ``functions`` in turn and send what is left.

    Consecutive synchronous stages run this way as one task, with no channel between them (as
    stream engines chain operators); each stage's documents in and out are counted here, the one
    place for synchronous stages. An exception that is not a
    :class:`~cfstream.errors.CfStreamError` becomes a :class:`~cfstream.errors.PipelineError`
    naming the stage.
    """
    async for chunk in chunks(receive):
        out = chunk
        n = count_docs(out)
        for apply, sctx in functions:
            stats = sctx.stats
            stats.docs_in += n
            try:
                out = apply(out, sctx)
            except CfStreamError:
                raise
            except Exception as exc:
                raise PipelineError(f"{type(exc).__name__}: {exc}", stage=sctx.name) from exc
            if not out:
                break
            n = count_docs(out)
            stats.docs_out += n
        if out:
            await send.send(out)


class GeneratorStage(Stage):
    """Wraps ``async def fn(items: AsyncIterator[Item]) -> AsyncIterator[Item]`` as a stage.

    Convenient for users' own stages; items are handed over one at a time, so it costs more than
    a :class:`ChunkStage`. Outputs are re-chunked (up to ``chunk_size``).
    """

    def __init__(
        self,
        fn: Callable[[AsyncIterator[Item]], AsyncIterator[Item]],
        *,
        name: str | None = None,
        chunk_size: int = 256,
    ) -> None:
        self.fn = fn
        self.name = name or str(getattr(fn, "__name__", "generator"))
        self.chunk_size = chunk_size

    async def run(
        self,
        receive: ObjectReceiveStream[Chunk],
        send: ObjectSendStream[Chunk],
        ctx: StageContext,
    ) -> None:
        """Feed the items of every chunk to the generator and send what it yields in chunks."""
        stats = ctx.stats

        async def items() -> AsyncIterator[Item]:
            async for chunk in receive:
                stats.docs_in += count_docs(chunk)
                for it in chunk:
                    yield it

        out: Chunk = []
        gen = self.fn(items())
        try:
            async for it in gen:
                if type(it) is Document:
                    it.content_hash = None
                    stats.docs_out += 1
                out.append(it)
                if len(out) >= self.chunk_size or type(it) is not Document:
                    await send.send(out)
                    out = []
        finally:
            aclose = getattr(gen, "aclose", None)
            if aclose is not None:
                await aclose()
        if out:
            await send.send(out)
