"""The sink protocol: the last stage of a pipeline."""

from __future__ import annotations

from abc import ABC, abstractmethod

from anyio.abc import ObjectReceiveStream

from cfstream.context import RunContext
from cfstream.records import Item

__all__ = ("Sink",)


class Sink(ABC):
    """Consumes chunks of items and persists them; saves checkpoints after the commits before them."""

    name: str = "sink"
    #: where the run's dead letters and state go by default (None: in memory / nowhere)
    uri: str | None = None

    async def open(self, ctx: RunContext) -> None:  # noqa: B027 - optional hook
        """Check the destination before anything is fetched; raise a clear error if unusable."""

    @abstractmethod
    async def consume(self, receive: ObjectReceiveStream[list[Item]], ctx: RunContext) -> None:
        """Write every chunk of ``receive``; flush and save checkpoints before returning."""
