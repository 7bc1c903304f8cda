"""The sink protocol: the last stage of a pipeline."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

from anyio.abc import ObjectReceiveStream

from cfstream.contract.context import RunContext
from cfstream.records import Item

__all__ = ("Sink",)


class Sink(ABC):
    """Consumes chunks of items and persists them; saves checkpoints after the commits before them."""

    name: str = "sink"
    #: where the run's dead letters and state go by default (None: in memory / nowhere)
    uri: str | None = None

    async def open(self, ctx: RunContext) -> None:  # noqa: B027 - optional hook
        """Check the destination before anything is fetched; raise a clear error if unusable."""

    async def upgrade(  # noqa: B027 - optional hook
        self,
        sources: Mapping[str, str],
        ctx: RunContext,
        *,
        others: Mapping[str, str] | None = None,
    ) -> None:
        """Called once per run, after :meth:`open` and before any source is read: bring what the
        destination holds for ``sources`` (name -> source type) up to this version, e.g. the
        one-time rewrite of record uuids. ``others`` are the other sources known to write into
        it. Default: nothing."""

    async def stored(
        self, uuids: Sequence[str], columns: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        """What the destination already holds for ``uuids``: uuid -> {column: value} for the rows
        that exist (committed before this call), ``columns`` only. Stages use it to skip work for
        content that is already stored (e.g. chunking or embedding an unchanged document).
        Default: nothing is known to be stored (an empty dict)."""
        return {}

    async def embedder(self) -> dict[str, Any] | None:
        """The record of the embedder whose vectors the destination holds
        (:mod:`cfstream.embed.record`), or None when it keeps none. Default: None."""
        return None

    async def use_embedder(
        self, record: dict[str, Any], *, replace: bool = False
    ) -> dict[str, Any]:
        """Called by the embed stage before its first document arrives: vectors of the embedder
        ``record`` describes (its ``name`` and ``dim``) are coming. The sink makes room for them
        (a vector column of that width) and records the embedder, or raises
        :class:`~cfstream.embed.EmbedderChangedError` when it holds another embedder's vectors
        and ``replace`` is false (with ``replace`` it drops them). Returns the record in effect
        (its ``id`` marks the rows embedded under it). Default: ``record`` as given."""
        return record

    def want_search(self) -> None:  # noqa: B027 - optional hook
        """Called by stages that make the data searchable (chunk, embed) before their first
        item: a sink that keeps search indexes keeps them for this dataset. Default: nothing."""

    @abstractmethod
    async def consume(self, receive: ObjectReceiveStream[list[Item]], ctx: RunContext) -> None:
        """Write every chunk of ``receive``; flush and save checkpoints before returning."""
