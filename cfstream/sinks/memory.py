"""``MemorySink``: keeps what reaches it in a list. For tests, previews and small syncs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from anyio.abc import ObjectReceiveStream

from cfstream.contract.context import RunContext
from cfstream.records import Checkpoint, Document, Item, Tombstone
from cfstream.sinks.base import Sink

__all__ = ("MemorySink",)


class MemorySink(Sink):
    """Collects documents, tombstones and checkpoints in memory (in arrival order).

    With ``save_state=True`` checkpoints are saved to the run's state store as they arrive (the
    documents before them are "committed" once they are in the list).
    """

    name = "memory"

    def __init__(self, *, save_state: bool = False) -> None:
        self.items: list[Item] = []
        self.save_state = save_state

    @property
    def documents(self) -> list[Document]:
        """The documents received."""
        return [i for i in self.items if isinstance(i, Document)]

    @property
    def tombstones(self) -> list[Tombstone]:
        """The tombstones received."""
        return [i for i in self.items if isinstance(i, Tombstone)]

    @property
    def checkpoints(self) -> list[Checkpoint]:
        """The checkpoints received."""
        return [i for i in self.items if isinstance(i, Checkpoint)]

    async def stored(
        self, uuids: Sequence[str], columns: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        """The latest document received for each of ``uuids`` (deleted ones left out), as
        {column: attribute} (``text_content``, ``content_hash``, ``vector``, ...)."""
        wanted = set(uuids)
        latest: dict[str, Document | None] = {}
        for it in self.items:
            if type(it) is Document and it.uuid in wanted:
                latest[it.uuid] = it
            elif type(it) is Tombstone and it.uuid in wanted:
                latest[it.uuid] = None
        return {
            u: {
                c: (d.compute_hash() if c == "content_hash" else getattr(d, c, None))
                for c in columns
            }
            for u, d in latest.items()
            if d is not None
        }

    async def consume(self, receive: ObjectReceiveStream[list[Item]], ctx: RunContext) -> None:
        """Append every item to :attr:`items`."""
        stats = ctx.report.sink
        async for chunk in receive:
            self.items.extend(chunk)
            cps = []
            for it in chunk:
                if type(it) is Document:
                    stats.rows_in += 1
                    stats.appended += 1
                elif type(it) is Tombstone:
                    stats.deleted += 1
                elif type(it) is Checkpoint:
                    cps.append(it)
            if cps and self.save_state and ctx.state is not None and not ctx.dry_run:
                stats.checkpoints_saved += ctx.state.save_checkpoints(cps)
