"""The source protocol, the ``@source`` decorator and fan-in of several sources.

A source is split into *partitions* (repositories, channels, folders, databases...) that the runner
reads concurrently up to ``max_concurrency``, each from its own saved cursor. ``read`` is an async
generator yielding :class:`~cfstream.records.Document`, :class:`~cfstream.records.Checkpoint` and
:class:`~cfstream.records.Tombstone` items, one at a time or a page (a list) at a time; pages travel
through the pipeline as one chunk, which is much cheaper than one item at a time.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cfstream.contract.context import SourceContext
from cfstream.errors import HTTPError, ResponseFormatError
from cfstream.logs import get_logger
from cfstream.records import Item, record_uuid
from cfstream.sources.options import options_signature

if TYPE_CHECKING:
    from cfstream.engine.pipeline import Pipeline
    from cfstream.http import Service

__all__ = (
    "FunctionSource",
    "MergedSource",
    "Source",
    "SourceConfig",
    "SourceOutput",
    "fetch_verified",
    "git_blob_sha",
    "is_transient",
    "merge",
    "path_option",
    "require_list",
    "source",
    "size_and_digest_problem",
)

T = TypeVar("T")
log = get_logger("cfstream.sources")

#: what ``Source.read`` may yield: one item or a page of items
SourceOutput = Item | Sequence[Item]


def path_option(description: str, *, kind: str = "dir", default: Any = ...) -> Any:
    """A settings field naming a local folder (``kind="dir"``) or file (``kind="file"``).

    In a YAML config a relative path is relative to the config file's folder, and ``cfstream
    validate`` checks that it exists.
    """
    return Field(default=default, description=description, json_schema_extra={"local_path": kind})


class SourceConfig(BaseModel):
    """Base of every connector's settings model: unknown keys are errors, secrets are ``Secret``,
    a path object (``pathlib.Path``) is accepted where a string is expected."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    @field_validator("*", mode="before")
    @classmethod
    def _path_as_text(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value


class Source(ABC):
    """Base class of every connector.

    Subclasses set ``source_type`` (stored in every record and part of its uuid) and implement
    :meth:`read`; partitioned sources also implement :meth:`partitions`. ``name`` identifies the
    source's cursors in the sync state and is part of its records' uuids (defaults to
    ``source_type``; see :meth:`record_uuid`).
    """

    #: the name in this source's record identity when it is not :attr:`name` (None: its name;
    #: ``""``: no name, records are ``(source_type, source_id)`` alone). Set it when the name only
    #: keys cursors: the ContextFrame connectors name a source after each selection of options,
    #: yet every selection reads the same records.
    identity: str | None = None

    source_type: ClassVar[str] = "custom"
    #: how many partitions of this source are read at the same time
    max_concurrency: int = 4
    #: whether the runner must hand this source an HTTP client (``ctx.http``)
    uses_http: ClassVar[bool] = False
    #: the pydantic model of this connector's settings: the one declaration of its options. The
    #: constructor takes its fields as keyword arguments (validated with
    #: :func:`cfstream.sources.options.validate_options`), ``from_config`` passes a config's
    #: options to the constructor, and ``cfstream sources`` lists its fields.
    config_model: ClassVar[type[SourceConfig] | None] = None
    #: the one option the constructor also takes by position (``FilesSource("docs")``), if any
    positional_option: ClassVar[str | None] = None
    #: API scopes/permissions the credential needs (shown by ``cfstream sources``)
    required_scopes: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        model = cls.__dict__.get("config_model")
        if model is not None:  # help() and inspect.signature() show the model's options
            cls.__signature__ = options_signature(  # type: ignore[attr-defined]
                model, positional=cls.positional_option
            )

    @classmethod
    def from_config(cls, options: Mapping[str, Any], *, name: str | None = None) -> Source:
        """Build the source from config options: the constructor validates them with
        :attr:`config_model`."""
        return cls(name=name, **dict(options))

    #: where this source's options were written, for messages: ``"sources.<name>"`` when the
    #: source came from a YAML config (set by the config loader), None for a Python-built source
    config_key: str | None = None

    def __init__(self, *, name: str | None = None, max_concurrency: int | None = None) -> None:
        self.name = name or self.source_type
        if max_concurrency is not None:
            self.max_concurrency = max_concurrency

    def option_name(self, key: str) -> str:
        """How a message names one of this source's options: ``sources.NAME.KEY`` for a source
        from a config, ``ClassName(key=...)`` for one built in Python."""
        if self.config_key is not None:
            return f"{self.config_key}.{key}"
        return f"{type(self).__name__}({key}=...)"

    @property
    def record_name(self) -> str | None:
        """The source name in its records' identity (and their ``source_name``):
        :attr:`identity` if set (``""`` gives None), else :attr:`name`."""
        return self.name if self.identity is None else (self.identity or None)

    def record_uuid(self, source_id: str, source_type: str | None = None) -> str:
        """The uuid of this source's record ``source_id`` (of ``source_type``, default the
        source's own): what a relationship to it points at. See :func:`cfstream.records.record_uuid`.
        """
        return record_uuid(source_type or self.source_type, source_id, source_name=self.record_name)

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
        from cfstream.engine.pipeline import Pipeline

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
    :class:`~cfstream.contract.context.SourceContext` as ``ctx=`` when its signature has those parameters.
    """

    def wrap(f: Callable[..., AsyncIterator[SourceOutput]]) -> Callable[..., FunctionSource]:
        if not inspect.isasyncgenfunction(f):
            raise TypeError(f"@source needs an async generator function, got {f!r}")
        st = source_type or f.__name__

        @functools.wraps(f)
        def factory(*args: Any, **kwargs: Any) -> FunctionSource:
            src_name = kwargs.pop("name", None) or name
            return FunctionSource(f, args, kwargs, source_type=st, name=src_name)

        def from_config(options: Mapping[str, Any], *, name: str | None = None) -> FunctionSource:
            """Build the source from a config's options (passed as keyword arguments)."""
            return factory(**dict(options), **({"name": name} if name else {}))

        # what the config loader needs to accept ``type: module:function``
        factory.source_type = st  # type: ignore[attr-defined]
        factory.from_config = from_config  # type: ignore[attr-defined]
        factory.config_model = None  # type: ignore[attr-defined]
        factory.is_source_factory = True  # type: ignore[attr-defined]
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


# -- failed items: transient or bad in itself ------------------------------------------------------


def is_transient(exc: BaseException) -> bool:
    """Whether a failed fetch of one item is worth fetching again next run.

    True for the faults the HTTP client retried and gave up on: 5xx, timeouts, dropped connections,
    rate limits, and empty, truncated, non-JSON or mismatching bodies
    (:class:`~cfstream.errors.TransientError`, :class:`~cfstream.errors.RateLimitError`,
    :class:`~cfstream.errors.ResponseFormatError`). Such an item is never concluded absent and
    never dead-lettered: the source leaves it out of its cursor's "done" bookkeeping and calls
    :meth:`SourceContext.retry_next_run`. False for everything else: a 404/410 for the item or a
    record that cannot be parsed is bad in itself (dead letter or skip); an auth error or a wait
    longer than ``max_wait`` (:class:`~cfstream.errors.RateLimitWaitTooLong`) concerns every
    request and fails the partition.
    """
    return isinstance(exc, HTTPError) and exc.retryable


def require_list(data: Any, what: str, *, service: str) -> list[Any]:
    """``data`` when it is a JSON list (a page of a list endpoint).

    Anything else (an empty body, ``null``, an error object) is no answer, so it cannot tell which
    items exist: it raises :class:`~cfstream.errors.ResponseFormatError` (transient, see
    :func:`is_transient`) instead of reading as "no items", which would end a listing early and
    turn the stored items into tombstones.
    """
    if not isinstance(data, list):
        raise ResponseFormatError(
            f"the {what} answer is {type(data).__name__}, not a JSON list; an absence is only "
            "concluded from a complete answer",
            service=service,
        )
    return data


def git_blob_sha(data: bytes) -> str:
    """The git object id of a blob holding ``data``: ``sha1(b"blob <len>\\0" + data)``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def size_and_digest_problem(
    data: bytes,
    *,
    size: int | None = None,
    md5: str | None = None,
    git_sha: str | None = None,
) -> str | None:
    """Why ``data`` is not the content the API described (its stated size, MD5 or git blob sha);
    None when it matches every value given."""
    if size is not None and len(data) != size:
        return f"got {len(data)} bytes where the API states {size}"
    if md5 is not None and hashlib.md5(data, usedforsecurity=False).hexdigest() != md5.lower():
        return "the MD5 checksum differs from the one the API states"
    if git_sha is not None and git_blob_sha(data) != git_sha.lower():
        return "the git blob sha of the content differs from the one requested"
    return None


async def fetch_verified(
    svc: Service,
    fetch: Callable[[], Awaitable[T]],
    problem: Callable[[T], str | None],
    *,
    what: str,
) -> T:
    """``await fetch()`` until ``problem(result)`` is None, and return that result.

    A download that does not match what the API stated about it (a short body, a wrong checksum) is
    a transient fault: it is fetched again with ``svc``'s retry policy (its ``max_tries`` and
    backoff, counted in the HTTP metrics as ``content_mismatch``), never stored as the content.

    :raises ~cfstream.errors.ResponseFormatError: it still did not match after the last try
        (:func:`is_transient` is true for it).
    """
    policy = svc.retry
    delays = policy.delays()
    tries = 0
    while True:
        result = await fetch()
        tries += 1
        why = problem(result)
        if why is None:
            return result
        if tries >= policy.max_tries:
            raise ResponseFormatError(
                f"{what}: {why} (still after {tries} attempts); it is fetched again by the next "
                "run",
                service=svc.name,
            )
        delay = next(delays)
        svc.client.metrics.count_retry("content_mismatch")
        log.info("%s: %s: %s; retry %d in %.2f s", svc.name, what, why, tries, delay)
        await svc.client.sleep(delay)
