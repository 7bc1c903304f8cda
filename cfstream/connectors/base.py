"""``BaseConnector``: ContextFrame's connector API as a thin face over a cfstream Source.

A connector builds the matching :class:`~cfstream.sources.Source` for each
:meth:`~BaseConnector.sync_documents` call and runs it through cfstream's own runner into an
in-process sink that hands the documents over. Incremental cursors, retries, rate limits and
dead letters are therefore the Source's and the runner's: nothing is implemented twice.

::

    connector = GitHubConnector(token=os.environ["GITHUB_TOKEN"], owner="octocat", repo="docs")
    await connector.authenticate()
    async for doc in connector.sync_documents(path="docs", file_pattern="**/*.md"):
        record = connector.map_to_frame_record(doc)
    docs = await connector.sync_documents(modified_only=True)   # a list; only what changed

Cursors are kept per connector and per selection of options (``state_path=`` makes them
persistent; by default they live in a temporary folder for the connector's lifetime) and advance
when a sync was read to its end.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import shutil
import tempfile
import weakref
from collections.abc import Callable, Generator, Mapping
from datetime import date, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

import anyio
import orjson
from anyio.abc import ObjectReceiveStream, ObjectSendStream
from anyio.streams.memory import MemoryObjectReceiveStream

from cfstream.contract.context import RunContext, SourceContext
from cfstream.contract.deadletter import DeadLetterWriter
from cfstream.contract.report import RunReport, SourceStats
from cfstream.contract.state import StateStore
from cfstream.engine.pipeline import Pipeline
from cfstream.engine.runner import RunControl, run_pipeline
from cfstream.errors import ConfigError
from cfstream.frame import FrameRecord
from cfstream.logs import get_logger
from cfstream.records import Checkpoint, Document, Item, Tombstone, parse_timestamp
from cfstream.secrets import Secret
from cfstream.sinks.base import Sink
from cfstream.sources.base import Source
from cfstream.transforms import filter as filter_stage

__all__ = (
    "BaseConnector",
    "DocumentFilter",
    "DocumentStream",
    "ExternalDocument",
    "SourceConnector",
)

log = get_logger("cfstream.connectors")

#: a predicate over the mapped documents (True keeps the document)
DocumentFilter = Callable[[Document], bool]

#: options every connector's ``sync_documents`` accepts
COMMON_OPTIONS = frozenset({"since", "modified_only"})


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


class ExternalDocument(dict[str, Any]):
    """One document as ``sync_documents`` returns it: a JSON-serialisable dict with attributes.

    Keys (and attributes): ``id`` (the source's id of the document), ``title``, ``content``,
    ``source_type``, ``source_url`` and ``metadata`` (``id``, ``source_type``, ``title``, ``url``,
    ``author``, ``created_at``, ``updated_at``, ``record_type``, ``collection`` and the connector's
    prefixed facts such as ``github_path``). :attr:`document` is the cfstream
    :class:`~cfstream.records.Document` the Source produced.
    """

    def __init__(self, document: Document) -> None:
        meta: dict[str, Any] = {
            "id": document.source_id,
            "source_type": document.source_type,
            "title": document.title,
            "url": document.source_url,
            "author": document.author,
            "created_at": _json_value(document.created_at),
            "updated_at": _json_value(document.source_updated_at or document.updated_at),
            "record_type": document.record_type,
            "collection": document.collection,
            "tags": list(document.tags or []),
        }
        for key, value in (document.custom_metadata or {}).items():
            meta.setdefault(key, _json_value(value))
        super().__init__(
            id=document.source_id,
            title=document.title,
            content=document.text_content or "",
            source_type=document.source_type,
            source_url=document.source_url,
            metadata=meta,
        )
        self.document = document

    @property
    def id(self) -> str:
        """The document's id at its source (its cfstream ``source_id``)."""
        return str(self["id"])

    @property
    def title(self) -> str:
        """The document's title."""
        return str(self["title"])

    @property
    def content(self) -> str:
        """The document's text."""
        return str(self["content"])

    @property
    def metadata(self) -> dict[str, Any]:
        """The document's metadata (see the class docstring)."""
        meta: dict[str, Any] = self["metadata"]
        return meta

    @property
    def uuid(self) -> str:
        """The uuid of the record this document becomes."""
        return self.document.uuid

    def __repr__(self) -> str:
        return f"ExternalDocument(id={self.id!r}, title={self.title!r})"


class _HandOffSink(Sink):
    """The in-process sink of a connector run: hands documents to the consumer, keeps the rest."""

    name = "connector"

    def __init__(self, send: ObjectSendStream[list[Document]]) -> None:
        self.send = send
        self.checkpoints: list[Checkpoint] = []
        self.tombstones: list[Tombstone] = []

    async def consume(self, receive: ObjectReceiveStream[list[Item]], ctx: RunContext) -> None:
        """Forward each chunk's documents; collect checkpoints and tombstones."""
        stats = ctx.report.sink
        async for chunk in receive:
            docs: list[Document] = []
            for it in chunk:
                if type(it) is Document:
                    docs.append(it)
                elif type(it) is Checkpoint:
                    self.checkpoints.append(it)
                elif type(it) is Tombstone:
                    self.tombstones.append(it)
            if docs:
                stats.rows_in += len(docs)
                await self.send.send(docs)


class DocumentStream:
    """The result of ``sync_documents``: ``await`` it for a list, or ``async for`` over it.

    Iterating streams the documents while the Source fetches them (a slow consumer slows the
    fetching down; nothing is held whole in memory). The sync starts on the first iteration (or
    on ``await``). When the stream has been read to its end, the Source's cursors are saved, so
    the next ``sync_documents(modified_only=True)`` resumes from them; :attr:`report` is the run
    report and :attr:`deleted` the ids of documents the source reported deleted.

    To stop early, use ``async with connector.sync_documents() as docs:`` or call :meth:`aclose`.
    """

    def __init__(
        self,
        pipeline_factory: Callable[[ObjectSendStream[list[Document]]], tuple[Pipeline, Sink]],
        *,
        state: StateStore,
        full_refresh: bool,
        dead_letter_path: str | Path | None,
        buffer_chunks: int = 1,
    ) -> None:
        self._factory = pipeline_factory
        self._state = state
        self._full_refresh = full_refresh
        self._dead_letter_path = dead_letter_path
        self._buffer_chunks = buffer_chunks
        self._buffer: collections.deque[ExternalDocument] = collections.deque()
        self._receive: MemoryObjectReceiveStream[list[Document]] | None = None
        self._task: asyncio.Task[RunReport] | None = None
        self._sink: _HandOffSink | None = None
        self._control = RunControl()
        self._done = False
        #: the run report (set once the stream was read to its end)
        self.report: RunReport | None = None
        #: ``(source_type, source_id)`` of the documents deleted at the source since the last sync
        self.deleted: list[tuple[str, str]] = []

    # -- awaiting -----------------------------------------------------------------------------

    def __await__(self) -> Generator[Any, None, list[ExternalDocument]]:
        return self._collect().__await__()

    async def _collect(self) -> list[ExternalDocument]:
        return [doc async for doc in self]

    # -- iterating ----------------------------------------------------------------------------

    def __aiter__(self) -> DocumentStream:
        return self

    async def __anext__(self) -> ExternalDocument:
        if self._buffer:
            return self._buffer.popleft()
        if self._done:
            raise StopAsyncIteration
        if self._receive is None:
            self._start()
        assert self._receive is not None
        while True:
            try:
                chunk = await self._receive.receive()
            except anyio.EndOfStream:
                await self._finish()
                raise StopAsyncIteration from None
            if chunk:
                self._buffer.extend(ExternalDocument(d) for d in chunk)
                return self._buffer.popleft()

    def _start(self) -> None:
        send, receive = anyio.create_memory_object_stream[list[Document]](self._buffer_chunks)
        self._receive = receive
        pipeline, sink = self._factory(send)
        assert isinstance(sink, _HandOffSink)
        self._sink = sink
        # The run is a task of its own because the consumer's loop body runs between items: a
        # task group cannot span those yields (trio's rule, STYLE.md habit 6). finish/aclose
        # always await the task, so it never outlives the stream.
        self._task = asyncio.get_running_loop().create_task(self._produce(pipeline, send))

    async def _produce(
        self, pipeline: Pipeline, send: ObjectSendStream[list[Document]]
    ) -> RunReport:
        async with send:
            return await run_pipeline(
                pipeline,
                control=self._control,
                state=self._state,
                full_refresh=self._full_refresh,
                dead_letter_path=self._dead_letter_path,
            )

    async def _finish(self) -> None:
        self._done = True
        assert self._task is not None and self._sink is not None
        if self._receive is not None:
            self._receive.close()
        report = await self._task  # raises the run's error, if any
        self.report = report
        self.deleted = [(t.source_type or "", t.source_id) for t in self._sink.tombstones]
        if self._sink.checkpoints:
            await anyio.to_thread.run_sync(self._state.save_checkpoints, self._sink.checkpoints)

    async def aclose(self) -> None:
        """Stop the sync (if running) and release everything; cursors are not advanced."""
        self._done = True
        self._buffer.clear()
        if self._receive is not None:
            self._receive.close()
        task = self._task
        if task is not None and not task.done():
            self._control.hard_stop()
            task.cancel()
            await asyncio.wait([task])
        if task is not None and task.done() and not task.cancelled():
            task.exception()  # retrieved: an error after an early stop is not reported

    async def __aenter__(self) -> DocumentStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _since_filter(since: datetime) -> DocumentFilter:
    def keep(doc: Document) -> bool:
        value = doc.source_updated_at or doc.updated_at
        if value is None:
            return True  # no timestamp: cannot tell, keep it
        try:
            ts = parse_timestamp(value)
        except ValueError:
            return True
        return ts is None or ts >= since

    return keep


def _all_of(filters: list[DocumentFilter]) -> DocumentFilter:
    def keep(doc: Document) -> bool:
        return all(f(doc) for f in filters)

    return keep


class BaseConnector:
    """Base of every connector (ContextFrame's ``BaseConnector``, async).

    Subclasses of the built-in connectors (or cooperative mixins, as in the guide's
    ``RateLimitedConnector``) override :meth:`sync_documents` or :meth:`map_to_frame_record` and
    call ``super()``.

    Args:
        enabled: kept from a ``connectors:`` config entry (``create_connector`` passes it).
        sync_options: default options of :meth:`sync_documents` (explicit options win).
        state_path: a JSON file for the cursors (default: a temporary one, deleted with the
            connector).
        dead_letter_path: a JSONL file for records the Source could not map (default: in memory).
        **config: the connector's settings (kept in :attr:`config`).
    """

    #: the cfstream ``source_type`` of the documents
    source_type: ClassVar[str] = "custom"

    def __init__(
        self,
        *,
        enabled: bool = True,
        sync_options: Mapping[str, Any] | None = None,
        state_path: str | Path | None = None,
        dead_letter_path: str | Path | None = None,
        **config: Any,
    ) -> None:
        self.config: dict[str, Any] = config
        self.enabled = enabled
        self.sync_options: dict[str, Any] = dict(sync_options or {})
        self.authenticated = False
        self.dead_letter_path = dead_letter_path
        if state_path is None:
            tmp = tempfile.mkdtemp(prefix="cfstream-connector-")
            weakref.finalize(self, shutil.rmtree, tmp, True)
            state_path = Path(tmp) / "state.json"
        self.state = StateStore(state_path)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"

    async def authenticate(self) -> None:
        """Check the credentials against the service; sets :attr:`authenticated`.

        Raises:
            AuthError: the credentials were refused (the message says which one to check).
            NotImplementedError: this class has no Source (subclass a built-in connector).
        """
        raise NotImplementedError(
            f"{type(self).__name__} has no service: subclass one of the built-in connectors "
            "(GitHubConnector, ...) or implement authenticate()"
        )

    def sync_documents(self, **options: Any) -> DocumentStream:
        """Sync documents; ``await`` the result for a list or ``async for`` over it.

        Raises:
            NotImplementedError: this class has no Source (subclass a built-in connector).
        """
        raise NotImplementedError(
            f"{type(self).__name__} has no service: subclass one of the built-in connectors "
            "(GitHubConnector, ...) or implement sync_documents()"
        )

    def sync_incremental(self, since: Any = None, **options: Any) -> DocumentStream:
        """``sync_documents(since=since, modified_only=True, **options)``."""
        return self.sync_documents(since=since, modified_only=True, **options)

    def map_to_frame_record(self, external_doc: ExternalDocument | Document) -> FrameRecord:
        """The :class:`~cfstream.frame.FrameRecord` of a document ``sync_documents`` returned.

        The Source already mapped the service's data onto FrameRecord fields (connector facts in
        ``custom_metadata`` with a prefix, relationships by uuid), so this is a conversion.
        """
        doc = external_doc.document if isinstance(external_doc, ExternalDocument) else external_doc
        if not isinstance(doc, Document):
            raise TypeError(
                f"map_to_frame_record takes a document from sync_documents(), got {external_doc!r}"
            )
        return FrameRecord.from_document(doc)


class SourceConnector(BaseConnector):
    """A connector over one cfstream Source class; the built-in connectors derive from it.

    Subclasses set :attr:`source_class` and :attr:`option_names` and implement
    :meth:`source_options` (the guide's options -> the Source's keyword arguments) and, where the
    Source lacks an option, :meth:`document_filters`.
    """

    #: the cfstream Source this connector drives
    source_class: ClassVar[type[Source]]
    #: the ``sync_documents`` options this connector understands (besides since/modified_only)
    option_names: ClassVar[frozenset[str]] = frozenset()
    #: whether the Source has a native ``since`` option
    native_since: ClassVar[bool] = False

    def __init__(self, **config: Any) -> None:
        base_keys = ("enabled", "sync_options", "state_path", "dead_letter_path")
        base = {k: config.pop(k) for k in base_keys if k in config}
        model = getattr(self.source_class, "config_model", None)
        allowed = set(model.model_fields) if model is not None else set()
        unknown = sorted(set(config) - allowed - set(self.settings()))
        if unknown:
            raise ConfigError(
                f"{type(self).__name__}: unknown setting(s) {', '.join(map(repr, unknown))}; it "
                f"takes {', '.join(sorted(self.settings()))} and the {self.source_type} source's "
                f"options ({', '.join(sorted(allowed))})"
            )
        super().__init__(**base, **config)
        self._check_options(self.sync_options)

    @classmethod
    def settings(cls) -> frozenset[str]:
        """The connector's own constructor settings (besides the Source's options)."""
        return frozenset()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"

    def describe(self) -> str:
        """A short, secret-free description (for logs)."""
        return ""

    def passthrough(self) -> dict[str, Any]:
        """Constructor settings that are the Source's own options, passed on unchanged."""
        model = getattr(self.source_class, "config_model", None)
        fields = set(model.model_fields) if model is not None else set()
        own = self.settings()
        return {k: v for k, v in self.config.items() if k in fields and k not in own}

    def _check_options(self, options: Mapping[str, Any]) -> None:
        unknown = sorted(set(options) - self.option_names - COMMON_OPTIONS)
        if unknown:
            raise ConfigError(
                f"{type(self).__name__}.sync_documents: unknown option(s) "
                f"{', '.join(map(repr, unknown))}; it takes "
                f"{', '.join(sorted(self.option_names | COMMON_OPTIONS))}"
            )

    # -- hooks ------------------------------------------------------------------------------

    def source_options(self, options: Mapping[str, Any], since: datetime | None) -> dict[str, Any]:
        """The Source's keyword arguments for one sync with ``options`` (``since`` if native)."""
        raise NotImplementedError

    def document_filters(self, options: Mapping[str, Any]) -> list[DocumentFilter]:
        """Filters for options the Source has no equivalent of (applied to mapped documents)."""
        return []

    async def check_access(self, source: Source, ctx: SourceContext) -> None:
        """One cheap call proving the credentials work (default: list the Source's partitions)."""
        await source.partitions(ctx)

    # -- building -----------------------------------------------------------------------------

    def build_source(
        self, options: Mapping[str, Any] | None = None, *, since: datetime | None = None
    ) -> Source:
        """The Source for one sync with ``options`` (named after the selection, for its cursors)."""
        opts = {**self.sync_options, **dict(options or {})}
        opts.pop("since", None)
        opts.pop("modified_only", None)
        self._check_options(opts)
        kwargs = {**self.passthrough(), **self.source_options(opts, since)}
        source = self.source_class(name=self.selection_name(opts), **kwargs)
        source.identity = source.source_type  # the name keys cursors: records stay the type's
        return source

    def selection_name(self, options: Mapping[str, Any]) -> str:
        """The Source's name for a selection of options: its cursors are kept under it."""
        payload = orjson.dumps(
            {k: options[k] for k in sorted(options)}, default=str, option=orjson.OPT_SORT_KEYS
        )
        return f"{self.source_type}-{hashlib.sha1(payload).hexdigest()[:10]}"

    def _source_context(self, source: Source, http: Any) -> SourceContext:
        report = RunReport()
        run = RunContext(
            report=report,
            dead_letters=DeadLetterWriter(None),
            stop=anyio.Event(),
            http=http,
        )
        return SourceContext(
            name=source.name,
            source_type=source.source_type,
            run=run,
            stats=SourceStats(name=source.name, source_type=source.source_type),
            logger=get_logger(f"cfstream.sources.{source.source_type}"),
        )

    # -- the API ------------------------------------------------------------------------------

    async def authenticate(self) -> None:
        """Check the credentials with one cheap call; sets :attr:`authenticated`.

        Raises:
            AuthError: the service refused the credentials (the message says what to check).
            ConfigError: the connector's settings are incomplete.
        """
        from cfstream.http import HttpClient

        self.authenticated = False
        source = self.build_source()
        async with HttpClient() as http:
            ctx = self._source_context(source, http)
            await source.authenticate(ctx)
            await self.check_access(source, ctx)
        self.authenticated = True
        log.info("%s: authenticated", type(self).__name__)

    def sync_documents(self, **options: Any) -> DocumentStream:
        """Sync documents from the service (see :class:`DocumentStream`).

        Options: ``modified_only=True`` resumes from this connector's cursors for the same
        selection (only new and changed documents come back); ``since`` (an ISO 8601 string or a
        datetime) keeps documents updated at or after it and bounds a sync that has no cursor to
        resume from; plus the connector's own filters (see its docstring).

        Raises:
            ConfigError: an unknown option or an invalid value (raised here, before any request).
        """
        opts = {**self.sync_options, **options}
        modified_only = bool(opts.pop("modified_only", False))
        since_raw = opts.pop("since", None)
        self._check_options(opts)
        since: datetime | None = None
        if since_raw not in (None, ""):
            try:
                since = parse_timestamp(since_raw)
            except (ValueError, TypeError):
                raise ConfigError(
                    f"since={since_raw!r} is not an ISO 8601 date or time "
                    "(e.g. '2024-01-01T00:00:00Z')"
                ) from None
        name = self.selection_name(opts)
        resuming = modified_only and bool(self.state.cursors(name))
        if resuming:
            since = None  # the cursor is the lower bound (the Source re-reads a safety window)
        source = self.build_source(opts, since=since if self.native_since else None)
        filters = list(self.document_filters(opts))
        if since is not None:
            filters.append(_since_filter(since))
        stages = [filter_stage(_all_of(filters), name="connector-filter")] if filters else []

        def factory(send: ObjectSendStream[list[Document]]) -> tuple[Pipeline, Sink]:
            sink = _HandOffSink(send)
            return Pipeline([source], stages, sink), sink

        return DocumentStream(
            factory,
            state=self.state,
            full_refresh=not modified_only,
            dead_letter_path=self.dead_letter_path,
        )

    def filter_predicate(self, options: Mapping[str, Any]) -> DocumentFilter | None:
        """The combined post-filter of ``options`` (None when every option is the Source's)."""
        opts = dict(options)
        since_raw = opts.pop("since", None)
        opts.pop("modified_only", None)
        filters = list(self.document_filters(opts))
        if since_raw not in (None, "") and not self.native_since:
            since = parse_timestamp(since_raw)
            if since is not None:
                filters.append(_since_filter(since))
        return _all_of(filters) if filters else None


def reveal(value: str | Secret | None) -> Secret | None:
    """``value`` as a :class:`~cfstream.secrets.Secret` (None stays None; '' is None)."""
    if value is None or value == "":
        return None
    if isinstance(value, Secret):
        return value
    return Secret(str(value))
