"""The source protocol, the ``@source`` decorator and fan-in of several sources.

A source is split into *partitions* (repositories, channels, folders, databases...) that the runner
reads concurrently up to ``max_concurrency``, each from its own saved cursor. ``read`` is an async
generator yielding :class:`~cfstream.records.Document`, :class:`~cfstream.records.Checkpoint` and
:class:`~cfstream.records.Tombstone` items, one at a time or a page (a list) at a time; pages travel
through the pipeline as one chunk, which is much cheaper than one item at a time.
"""

from __future__ import annotations

import functools
import inspect
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from cfstream.context import SourceContext
from cfstream.records import Item

if TYPE_CHECKING:
    from cfstream.pipeline import Pipeline

__all__ = (
    "FunctionSource",
    "MergedSource",
    "Source",
    "SourceConfig",
    "SourceOutput",
    "merge",
    "source",
)

#: what ``Source.read`` may yield: one item or a page of items
SourceOutput = Item | Sequence[Item]


class SourceConfig(BaseModel):
    """Base of every connector's settings model: unknown keys are errors, secrets are ``Secret``."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class Source(ABC):
    """Base class of every connector.

    Subclasses set ``source_type`` (stored in every record and part of its uuid) and implement
    :meth:`read`; partitioned sources also implement :meth:`partitions`. ``name`` identifies the
    source's cursors in the sync state (defaults to ``source_type``).
    """

    source_type: ClassVar[str] = "custom"
    #: how many partitions of this source are read at the same time
    max_concurrency: int = 4
    #: whether the runner must hand this source an HTTP client (``ctx.http``)
    uses_http: ClassVar[bool] = False
    #: the pydantic model of this connector's settings (what a YAML config may set)
    config_model: ClassVar[type[SourceConfig] | None] = None
    #: API scopes/permissions the credential needs (shown by ``cfstream sources``)
    required_scopes: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_config(cls, options: Mapping[str, Any], *, name: str | None = None) -> Source:
        """Build the source from config options (validated by :attr:`config_model`)."""
        return cls(name=name, **dict(options))

    def __init__(self, *, name: str | None = None, max_concurrency: int | None = None) -> None:
        self.name = name or self.source_type
        if max_concurrency is not None:
            self.max_concurrency = max_concurrency

    async def partitions(self, ctx: SourceContext) -> Sequence[str]:
        """The independent parts of this source, each with its own cursor. Default: one, ``""``."""
        return [""]

    @abstractmethod
    def read(
        self, partition: str, cursor: Mapping[str, Any] | None, ctx: SourceContext
    ) -> AsyncIterator[SourceOutput]:
        """Yield the partition's documents, checkpoints and tombstones, resuming from ``cursor``."""

    def cursor_scope(self) -> Mapping[str, Any]:
        """The options that decide what this source reads (a folder, globs, a repository...).

        The saved cursors belong to the source's type and these options: when either changes
        under the same name, the runner warns and reads the source afresh. Leave out tuning
        options (concurrency, rate limits, timeouts) and secrets; only a digest is saved.
        Default: nothing (the type alone).
        """
        return {}

    async def authenticate(self, ctx: SourceContext) -> None:  # noqa: B027 - optional hook
        """Check the credentials with one cheap call; raise AuthError. Default: nothing to check."""

    def sources(self) -> list[Source]:
        """The leaf sources (itself; a merge returns its members)."""
        return [self]

    def __or__(self, stage: Any) -> Pipeline:
        from cfstream.pipeline import Pipeline

        pipeline: Pipeline = Pipeline([self]) | stage
        return pipeline

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class FunctionSource(Source):
    """A source made from an async generator function by :func:`source`."""

    def __init__(
        self,
        fn: Callable[..., AsyncIterator[SourceOutput]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        source_type: str,
        name: str | None = None,
    ) -> None:
        self.source_type = source_type  # type: ignore[misc]
        super().__init__(name=name)
        self._fn = fn
        self._args = args
        self._kwargs = kwargs
        params = inspect.signature(fn).parameters
        self._wants_cursor = "cursor" in params
        self._wants_ctx = "ctx" in params
        # only a function that takes ``ctx`` can call ctx.http: the others need no HTTP client
        self.uses_http = self._wants_ctx  # type: ignore[misc]

    def read(
        self, partition: str, cursor: Mapping[str, Any] | None, ctx: SourceContext
    ) -> AsyncIterator[SourceOutput]:
        """Call the wrapped function with ``cursor=`` (and ``ctx=`` when it takes them)."""
        kwargs = dict(self._kwargs)
        if self._wants_cursor:
            kwargs.setdefault("cursor", None if cursor is None else dict(cursor))
        if self._wants_ctx:
            kwargs["ctx"] = ctx
        return self._fn(*self._args, **kwargs)


def source(
    fn: Callable[..., AsyncIterator[SourceOutput]] | None = None,
    *,
    source_type: str | None = None,
    name: str | None = None,
) -> Any:
    """Turn an async generator function into a source factory.

    ::

        @cf.source(source_type="notes")
        async def notes(folder: str, cursor: dict | None = None):
            yield cf.Document(source_id="n1", title="Hello", text_content="...")
            yield cf.Checkpoint({"page": 1})

        pipeline = notes("./notes") | LanceSink("kb.lance")

    The function receives its saved cursor as ``cursor=`` and the
    :class:`~cfstream.context.SourceContext` as ``ctx=`` when its signature has those parameters.
    """

    def wrap(f: Callable[..., AsyncIterator[SourceOutput]]) -> Callable[..., FunctionSource]:
        if not inspect.isasyncgenfunction(f):
            raise TypeError(f"@source needs an async generator function, got {f!r}")
        st = source_type or f.__name__

        @functools.wraps(f)
        def factory(*args: Any, **kwargs: Any) -> FunctionSource:
            src_name = kwargs.pop("name", None) or name
            return FunctionSource(f, args, kwargs, source_type=st, name=src_name)

        return factory

    if fn is not None:
        return wrap(fn)
    return wrap


class MergedSource(Source):
    """Several sources read concurrently into one stream (see :func:`merge`)."""

    source_type: ClassVar[str] = "merged"

    def __init__(self, members: Sequence[Source], *, concurrency: int | None = None) -> None:
        super().__init__(name="+".join(m.name for m in members))
        self.members = [leaf for m in members for leaf in m.sources()]
        names = [m.name for m in self.members]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(
                f"merged sources need distinct names (their cursors are kept by name): {dupes}; "
                "pass name=... to tell them apart"
            )
        self.concurrency = concurrency

    def sources(self) -> list[Source]:
        """The merged leaf sources."""
        return list(self.members)

    def read(
        self, partition: str, cursor: Mapping[str, Any] | None, ctx: SourceContext
    ) -> AsyncIterator[SourceOutput]:
        """Not called: the runner reads each member's partitions itself."""
        raise NotImplementedError("the runner reads a merge's members directly")


def merge(*sources: Source, concurrency: int | None = None) -> MergedSource:
    """Fan in several sources; ``concurrency`` caps how many partitions are read at once overall."""
    if not sources:
        raise ValueError("merge() needs at least one source")
    return MergedSource(sources, concurrency=concurrency)
