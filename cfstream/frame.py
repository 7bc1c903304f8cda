"""ContextFrame's ``FrameRecord`` and ``FrameDataset``, as a small face over cfstream's core.

::

    from cfstream.frame import FrameDataset, FrameRecord

    dataset = FrameDataset.create("kb.lance")
    record = FrameRecord.create(title="Hello", content="...", source_type="notes", source_id="n1")
    await dataset.add_many([record])                 # streamed through the LanceSink, in batches
    record.metadata["tags"] = ["greeting"]
    await dataset.update_record(record)              # one atomic merge: the old row survives a failure
    dataset.get_by_uuid(record.uuid).metadata["tags"]   # ['greeting']

What differs from ContextFrame (``contextframe 0.1.1``):

- A record's ``uuid`` is derived from ``(source_type, source_id)`` (:func:`~cfstream.records.record_uuid`),
  so importing the same document twice updates one row instead of adding a second. A record read
  from a row (or made from a Document) of a named cfstream source keeps that row's uuid, which
  also holds the source's name, while its ``source_type`` and ``source_id`` stay unchanged. A record made
  without ``source_id`` gets its ``source_url`` as source id, or a random one (like ContextFrame's
  random uuid); one made without ``source_type`` gets ``"manual"``.
- Writes are coroutines (``await dataset.add_many(...)``): they run through cfstream's runner and
  :class:`~cfstream.sinks.LanceSink`, which upserts on ``uuid``. Reads (``get_by_uuid``,
  ``scanner``, ``to_batches``) are synchronous, like Lance's own.
- ``update_record`` is one ``merge_insert`` (ContextFrame deletes, then adds: a failed add loses the
  row). The record is validated first; an invalid one raises and leaves the row as it was.
- The dataset is written in ContextFrame compatibility mode (a zero ``vector`` of 1536 floats per
  row), so ``contextframe.FrameDataset.open(path)`` reads it; cfstream's own columns
  (``source_id``, ``content_hash``, ``source_updated_at``, ``ingested_at``) come on top.
- ``metadata`` keys that are not FrameRecord columns (``sync_timestamp``, say) are stored in
  ``custom_metadata``. ``custom_metadata`` values are stored as strings.
"""

from __future__ import annotations

import re
import uuid as _uuid
from collections.abc import AsyncIterable, Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime
from typing import Any

import anyio
import lance
import pyarrow as pa

from cfstream.checks import check_document
from cfstream.contract.uris import local_path
from cfstream.engine.pipeline import Pipeline
from cfstream.engine.runner import run_pipeline
from cfstream.errors import DatasetError, RecordError
from cfstream.records import (
    RELATIONSHIP_TYPES,
    Document,
    Relationship,
    record_fields,
    record_uuid,
)
from cfstream.sinks.lance import LanceSink
from cfstream.sources.base import FunctionSource, SourceOutput
from cfstream.storage import Batch, DatasetWriter

__all__ = (
    "FrameDataset",
    "FrameRecord",
    "MANUAL_SOURCE_TYPE",
    "translate_filter",
)

#: the ``source_type`` of records created without one
MANUAL_SOURCE_TYPE = "manual"

#: metadata keys stored in a FrameRecord column of the same name
_COLUMN_KEYS = record_fields(metadata=True)
#: metadata keys that are not plain columns (handled on their own)
_SPECIAL_KEYS = frozenset({"uuid", "custom_metadata", "relationships"})
#: columns that are read back but never part of ``metadata``
_INTERNAL_COLUMNS = frozenset(
    {"text_content", "vector", "raw_data", "raw_data_type", "content_hash", "ingested_at"}
)
_UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
_CM_FILTER = re.compile(r"custom_metadata\.([A-Za-z_][A-Za-z0-9_]*)\s*=\s*('(?:[^']|'')*')")


def _iso(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class FrameRecord:
    """One document: ``text_content``, a ContextFrame-style ``metadata`` dict, and raw data.

    ``metadata`` holds FrameRecord's fields by their column names (``title``, ``source_type``,
    ``source_url``, ``author``, ``tags``, ``created_at``, ``custom_metadata`` (a dict),
    ``relationships`` (a list of dicts), ``record_type``, ...) plus ``source_id`` and ``uuid``.
    Build one with :meth:`create` or :meth:`from_document`.

    Raises:
        ValueError: ``metadata`` has a ``uuid`` that is not the one derived from
            ``(source_type, source_id)``, or ``raw_data`` comes without ``raw_data_type``.
    """

    def __init__(
        self,
        text_content: str | None,
        metadata: Mapping[str, Any],
        *,
        vector: Sequence[float] | None = None,
        raw_data: bytes | None = None,
        raw_data_type: str | None = None,
    ) -> None:
        if (raw_data is None) != (raw_data_type is None):
            raise ValueError("give raw_data and raw_data_type together (or neither)")
        self.text_content: str | None = text_content
        self.metadata: dict[str, Any] = dict(metadata)
        self.vector: Sequence[float] | None = vector
        self.raw_data = raw_data
        self.raw_data_type = raw_data_type
        md = self.metadata
        if not md.get("source_type"):
            md["source_type"] = MANUAL_SOURCE_TYPE
        if not md.get("source_id"):
            md["source_id"] = md.get("source_url") or _uuid.uuid4().hex
        derived = record_uuid(str(md["source_type"]), str(md["source_id"]))
        given = md.get("uuid")
        if given is not None and str(given).lower() != derived:
            raise ValueError(
                f"uuid {given!r} is not the uuid of ({md['source_type']!r}, {md['source_id']!r}): "
                "cfstream derives a record's uuid from source_type and source_id, so pass "
                "source_id= (and source_type=) instead of uuid="
            )
        md["uuid"] = derived
        self._uuid = derived
        self._kept: tuple[str, str] | None = None

    def _keep_uuid(self, uuid: str) -> None:
        """Use ``uuid`` (a named source's row) while source_type and source_id stay as they are."""
        md = self.metadata
        if uuid and uuid != self._uuid:
            md["uuid"] = self._uuid = uuid
            self._kept = (str(md.get("source_type") or ""), str(md.get("source_id") or ""))

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        title: str,
        *,
        content: str = "",
        source_url: str | None = None,
        source_type: str | None = None,
        source_id: str | None = None,
        author: str | None = None,
        custom_metadata: Mapping[str, Any] | None = None,
        record_type: str = "document",
        tags: Sequence[str] | None = None,
        vector: Sequence[float] | None = None,
        raw_data: bytes | None = None,
        raw_data_type: str | None = None,
        **metadata: Any,
    ) -> FrameRecord:
        """Create a record, as ContextFrame's ``FrameRecord.create`` does.

        ``source_id`` defaults to ``source_url`` (so re-creating the record for the same URL hits
        the same row) or, without either, a random id. Any other FrameRecord field
        (``collection``, ``status``, ``created_at``, ``relationships``, ...) is a keyword argument.
        """
        md: dict[str, Any] = dict(metadata)
        md["title"] = title
        md["record_type"] = record_type
        for key, value in (
            ("source_url", source_url),
            ("source_type", source_type),
            ("source_id", source_id),
            ("author", author),
        ):
            if value is not None:
                md[key] = value
        if custom_metadata is not None:
            md["custom_metadata"] = dict(custom_metadata)
        if tags is not None:
            md["tags"] = list(tags)
        return cls(content, md, vector=vector, raw_data=raw_data, raw_data_type=raw_data_type)

    @classmethod
    def from_document(cls, doc: Document) -> FrameRecord:
        """The record of a cfstream :class:`~cfstream.records.Document` (a Source's output)."""
        md: dict[str, Any] = {}
        for key in _COLUMN_KEYS:
            value = getattr(doc, key)
            if value is not None:
                md[key] = list(value) if isinstance(value, list) else _iso(value)
        md["custom_metadata"] = dict(doc.custom_metadata or {})
        md["relationships"] = [_rel_to_dict(r) for r in doc.relationships or ()]
        record = cls(
            doc.text_content,
            md,
            vector=doc.vector,
            raw_data=doc.raw_data,
            raw_data_type=doc.raw_data_type,
        )
        if doc.source_name is not None and doc.source_type:
            record._keep_uuid(doc.uuid)
        return record

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> FrameRecord:
        """The record of a dataset row (a dict from ``to_pylist()`` of the stored columns)."""
        md: dict[str, Any] = {}
        for key in _COLUMN_KEYS:
            value = row.get(key)
            if value is not None and value != []:
                md[key] = _iso(value)
        cm = row.get("custom_metadata")
        if isinstance(cm, list):
            md["custom_metadata"] = {kv["key"]: kv["value"] for kv in cm if kv}
        elif isinstance(cm, Mapping):
            md["custom_metadata"] = {k: v for k, v in cm.items() if v is not None}
        else:
            md["custom_metadata"] = {}
        md["custom_metadata"].pop("source_id", None)
        md["relationships"] = [
            {k: v for k, v in r.items() if v is not None} for r in row.get("relationships") or []
        ]
        stored = row.get("uuid")
        raw = row.get("raw_data")
        raw_type = row.get("raw_data_type")
        record = cls(
            row.get("text_content"),
            md,
            vector=None,
            raw_data=raw if raw is not None and raw_type is not None else None,
            raw_data_type=raw_type if raw is not None and raw_type is not None else None,
        )
        if stored:
            record._keep_uuid(str(stored))  # a named source's row keeps its uuid
        return record

    # -- ContextFrame's accessors -------------------------------------------------------------

    @property
    def uuid(self) -> str:
        """The row's uuid: ``record_uuid(source_type, source_id)``."""
        md = self.metadata
        key = (str(md.get("source_type") or ""), str(md.get("source_id") or ""))
        if self._kept == key and md.get("uuid") == self._uuid:
            return self._uuid  # a named source's row, source_type and source_id unchanged
        derived = record_uuid(*key)
        if md.get("uuid") == self._uuid:  # not edited by hand: follow source_type/source_id
            md["uuid"] = self._uuid = derived
        return derived

    @property
    def title(self) -> str:
        """``metadata['title']``."""
        return str(self.metadata.get("title") or "")

    @title.setter
    def title(self, value: str) -> None:
        self.metadata["title"] = value

    @property
    def content(self) -> str:
        """``text_content`` (``""`` when there is none)."""
        return self.text_content or ""

    @content.setter
    def content(self, value: str) -> None:
        self.text_content = value

    @property
    def author(self) -> str | None:
        """``metadata['author']``."""
        value = self.metadata.get("author")
        return None if value is None else str(value)

    @property
    def tags(self) -> list[str]:
        """``metadata['tags']`` (an empty list when there are none)."""
        return list(self.metadata.get("tags") or [])

    @property
    def custom_metadata(self) -> dict[str, Any]:
        """``metadata['custom_metadata']`` (created empty on first access)."""
        cm = self.metadata.get("custom_metadata")
        if not isinstance(cm, dict):
            cm = self.metadata["custom_metadata"] = {}
        return cm

    def add_relationship(
        self,
        reference: str | FrameRecord,
        type: str = "related",
        *,
        title: str | None = None,
        description: str | None = None,
        relationship_type: str | None = None,
    ) -> None:
        """Link this record to another: ``record.add_relationship(parent.uuid, "child", title=...)``.

        ``reference`` is another record, a uuid, a URI (``scheme://...``) or a path. ``type`` is one
        of ``parent``, ``child``, ``related``, ``reference``, ``contains``, ``member_of``
        (ContextFrame's keyword ``relationship_type=`` works too).

        Raises:
            ValueError: an unknown relationship type (the message lists the known ones).
        """
        rel_type = relationship_type or type
        if rel_type not in RELATIONSHIP_TYPES:
            raise ValueError(
                f"relationship type {rel_type!r} is not one of {sorted(RELATIONSHIP_TYPES)}"
            )
        entry: dict[str, Any] = {"type": rel_type}
        if isinstance(reference, FrameRecord):
            entry["id"] = reference.uuid
            title = title or reference.title
        elif _UUID_RE.match(reference):
            entry["id"] = reference.lower()
        elif "://" in reference:
            entry["uri"] = reference
        else:
            entry["path"] = reference
        if title is not None:
            entry["title"] = title
        if description is not None:
            entry["description"] = description
        rels = self.metadata.get("relationships")
        if not isinstance(rels, list):
            rels = self.metadata["relationships"] = []
        rels.append(entry)

    # -- conversion ---------------------------------------------------------------------------

    def to_document(self) -> Document:
        """The cfstream :class:`~cfstream.records.Document` that stores this record.

        Raises:
            ValueError: ``metadata['uuid']`` was set by hand to another uuid, or ``relationships``
                is not a list of dicts.
        """
        md = self.metadata
        if md.get("uuid") not in (None, self._uuid, self.uuid):
            raise ValueError(
                f"metadata['uuid'] was changed to {md['uuid']!r}: cfstream derives the uuid from "
                "source_type and source_id; change metadata['source_id'] instead"
            )
        fields: dict[str, Any] = {k: md[k] for k in _COLUMN_KEYS if md.get(k) is not None}
        custom = dict(md.get("custom_metadata") or {})
        extra = {
            k: v
            for k, v in md.items()
            if k not in _COLUMN_KEYS and k not in _SPECIAL_KEYS and v is not None
        }
        custom.update(extra)
        rels_raw = md.get("relationships") or []
        if not isinstance(rels_raw, list):
            raise ValueError("metadata['relationships'] must be a list of dicts")
        rels = []
        for r in rels_raw:
            if isinstance(r, Relationship):
                rels.append(r)
            elif isinstance(r, Mapping):
                rels.append(
                    Relationship(
                        type=str(r.get("type") or ""),
                        id=r.get("id"),
                        uri=r.get("uri"),
                        path=r.get("path"),
                        cid=r.get("cid"),
                        title=r.get("title"),
                        description=r.get("description"),
                    )
                )
            else:
                raise ValueError(
                    f"metadata['relationships'] holds {r!r}; expected dicts with 'type' and 'id'"
                )
        if isinstance(fields.get("tags"), tuple):
            fields["tags"] = list(fields["tags"])
        vector = self.vector
        return Document(
            text_content=self.text_content,
            custom_metadata=custom or None,
            relationships=rels or None,
            raw_data=self.raw_data,
            raw_data_type=self.raw_data_type,
            vector=None if vector is None else [float(v) for v in vector],
            **fields,
        )

    def __repr__(self) -> str:
        return (
            f"FrameRecord(uuid={self.uuid!r}, title={self.title!r}, "
            f"source_type={self.metadata.get('source_type')!r})"
        )


def _rel_to_dict(r: Relationship) -> dict[str, Any]:
    out: dict[str, Any] = {"type": r.type}
    for key in ("id", "uri", "path", "cid", "title", "description"):
        value = getattr(r, key)
        if value is not None:
            out[key] = value
    return out


def translate_filter(expr: str | None) -> str | None:
    """Rewrite ContextFrame-style ``custom_metadata.KEY = 'value'`` terms into Lance SQL.

    ``custom_metadata.source_id`` is the ``source_id`` column; any other key becomes
    ``array_has(custom_metadata, named_struct('key', 'KEY', 'value', 'value'))``. The rest of the
    expression is passed to Lance unchanged.
    """
    if expr is None:
        return None

    def sub(m: re.Match[str]) -> str:
        key, literal = m.group(1), m.group(2)
        if key == "source_id":
            return f"source_id = {literal}"
        return f"array_has(custom_metadata, named_struct('key', {_quote(key)}, 'value', {literal}))"

    return _CM_FILTER.sub(sub, expr)


class FrameDataset:
    """A Lance dataset of FrameRecords, written through :class:`~cfstream.sinks.LanceSink`.

    Open one with :meth:`create` or :meth:`open`. Writes are coroutines; reads are synchronous.
    """

    def __init__(self, uri: str, *, storage_options: dict[str, str] | None = None) -> None:
        self.uri = str(uri)
        self.storage_options = storage_options

    def __repr__(self) -> str:
        return f"FrameDataset({self.uri!r})"

    # -- opening ------------------------------------------------------------------------------

    def _sink(self, batch_rows: int = 1000) -> LanceSink:
        return LanceSink(
            self.uri,
            contextframe_compat=True,
            batch_rows=batch_rows,
            storage_options=self.storage_options,
        )

    def _writer(self) -> DatasetWriter:
        """The Lance layer's writer of this dataset, configured as :meth:`add_many`'s sink."""
        return self._sink().writer

    @classmethod
    def create(
        cls, path: str, *, overwrite: bool = False, storage_options: dict[str, str] | None = None
    ) -> FrameDataset:
        """Create an empty dataset at ``path`` (ContextFrame-compatible schema).

        Raises:
            DatasetError: ``path`` already exists (pass ``overwrite=True``, or use :meth:`open`).
        """
        ds = cls(path, storage_options=storage_options)
        schema = ds._writer().schema
        local = local_path(ds.uri)
        if not overwrite and local is not None and local.exists():
            raise DatasetError(
                f"{ds.uri} already exists: open it with FrameDataset.open({ds.uri!r}) or pass "
                "overwrite=True to replace it"
            )
        lance.write_dataset(
            schema.empty_table(),
            ds.uri,
            schema=schema,
            mode="overwrite" if overwrite else "create",
            storage_options=storage_options,
        )
        return ds

    @classmethod
    def open(cls, path: str, *, storage_options: dict[str, str] | None = None) -> FrameDataset:
        """Open an existing dataset written by cfstream.

        Raises:
            DatasetError: there is no dataset at ``path``, or it is not one cfstream can write.
        """
        ds = cls(path, storage_options=storage_options)
        version, _ = ds._writer().open()
        if version is None:
            raise DatasetError(
                f"there is no dataset at {ds.uri}: create it with FrameDataset.create({ds.uri!r})"
            )
        return ds

    @property
    def dataset(self) -> lance.LanceDataset:
        """A fresh handle on the Lance dataset (its latest version)."""
        return lance.dataset(self.uri, storage_options=self.storage_options)

    def count_rows(self, filter: str | None = None) -> int:
        """Rows in the dataset (matching ``filter``, see :meth:`scanner`)."""
        return int(self.dataset.count_rows(filter=translate_filter(filter)))

    # -- writing ------------------------------------------------------------------------------

    @staticmethod
    def _document(record: FrameRecord) -> Document:
        try:
            doc = record.to_document()
        except ValueError as exc:
            raise RecordError(f"record {record.uuid}: {exc}") from None
        try:
            check_document(doc)
        except RecordError as exc:
            raise RecordError(
                f"record {record.uuid} ({record.title!r}) is invalid: {exc}"
            ) from None
        vec = doc.vector
        if vec is not None and len(vec) != 1536:
            raise RecordError(
                f"record {record.uuid}: vector has {len(vec)} values, the dataset stores 1536"
            )
        return doc

    async def add(self, record: FrameRecord) -> None:
        """Write one record (an upsert: the same uuid again updates its row)."""
        await self.add_many([record])

    async def add_many(
        self,
        records: Iterable[FrameRecord] | AsyncIterable[FrameRecord],
        *,
        batch_size: int = 1000,
    ) -> int:
        """Write ``records``, streamed through the LanceSink in batches of ``batch_size``.

        Each record is upserted on its uuid (re-adding never duplicates). A list is validated
        whole before anything is written; an iterator is validated a batch at a time, and the
        batches before an invalid record stay written. Returns the number of records written.

        Raises:
            RecordError: a record is invalid (the message names it and the field).
        """
        if isinstance(records, Sequence):
            docs = [self._document(r) for r in records]
            if not docs:
                return 0

            async def pages() -> Any:
                for i in range(0, len(docs), batch_size):
                    yield docs[i : i + batch_size]

        else:

            async def pages() -> Any:
                page: list[Document] = []
                if isinstance(records, AsyncIterable):
                    async for r in records:
                        page.append(self._document(r))
                        if len(page) >= batch_size:
                            yield page
                            page = []
                else:
                    for r in records:
                        page.append(self._document(r))
                        if len(page) >= batch_size:
                            yield page
                            page = []
                if page:
                    yield page

        async def read(cursor: Any = None) -> Any:
            async for page in pages():
                out: list[SourceOutput] = list(page)
                yield out

        source = FunctionSource(read, (), {}, source_type=MANUAL_SOURCE_TYPE, name="frame_dataset")
        source.identity = ""  # records are (source_type, source_id) alone
        report = await run_pipeline(Pipeline([source], [], self._sink(batch_rows=batch_size)))
        if report.dead_lettered:
            raise RecordError(
                f"{report.dead_lettered} record(s) could not be written to {self.uri}; see "
                f"{report.dead_letter_path}"
            )
        return report.sink.rows_in

    def _commit(self, batch: Batch, *, must_exist: str | None = None) -> dict[str, int]:
        writer = self._writer()
        version, _ = writer.open()
        if version is None:
            raise DatasetError(
                f"there is no dataset at {self.uri}: create it with FrameDataset.create()"
            )
        if must_exist is not None and not self._exists(must_exist):
            raise DatasetError(
                f"{self.uri} has no record with uuid {must_exist}: use upsert_record() or add() "
                "to insert it"
            )
        if batch.docs:
            uuids = list(batch.uuids or ())
            try:
                batch.table = writer.builder.build(batch.docs, uuids)
            except (ValueError, TypeError, OverflowError, pa.ArrowException) as exc:
                raise RecordError(f"record {uuids[0]} cannot be stored: {exc}") from exc
        return writer.commit(batch)

    def _exists(self, uuid: str) -> bool:
        return bool(self.dataset.count_rows(filter=f"uuid = {_quote(uuid)}"))

    async def update_record(
        self, record: FrameRecord | str, new_record: FrameRecord | None = None
    ) -> None:
        """Replace the stored row of ``record`` (same uuid) in ONE atomic ``merge_insert``.

        Also callable as ``update_record(uuid, record)`` (the guide's form); the uuid must be the
        record's. The record is validated before anything is written: an invalid record, or a
        failed write, leaves the stored row exactly as it was.

        Raises:
            RecordError: the record is invalid.
            DatasetError: no row has the record's uuid (use :meth:`upsert_record`).
            CommitError: the write failed (the old row is intact).
        """
        if isinstance(record, str):
            if new_record is None:
                raise TypeError("update_record(uuid, record) needs the record")
            if record.lower() != new_record.uuid:
                raise ValueError(
                    f"uuid {record!r} is not the record's uuid {new_record.uuid!r} (derived from "
                    "its source_type and source_id)"
                )
            record = new_record
        doc = self._document(record)
        uid = record.uuid
        batch = Batch(docs=[doc], uuids=[uid])
        await anyio.to_thread.run_sync(lambda: self._commit(batch, must_exist=uid))

    async def upsert_record(self, record: FrameRecord) -> None:
        """Insert ``record`` or replace its row, in one ``merge_insert`` (validated first)."""
        doc = self._document(record)
        batch = Batch(docs=[doc], uuids=[record.uuid])
        await anyio.to_thread.run_sync(lambda: self._commit(batch))

    async def delete_record(self, uuid: str) -> int:
        """Delete the row with ``uuid``; returns how many rows were deleted (0 or 1)."""
        batch = Batch(deletes=[uuid.lower()])
        result = await anyio.to_thread.run_sync(lambda: self._commit(batch))
        return int(result.get("deleted", 0))

    # -- reading ------------------------------------------------------------------------------

    def get_by_uuid(self, uuid: str) -> FrameRecord | None:
        """The record with ``uuid``, or None."""
        table = self.dataset.to_table(filter=f"uuid = {_quote(uuid.lower())}")
        rows = table.to_pylist()
        return FrameRecord.from_row(rows[0]) if rows else None

    def scanner(
        self, filter: str | None = None, columns: list[str] | None = None, **kwargs: Any
    ) -> lance.LanceScanner:
        """A Lance scanner; ``filter`` is Lance SQL plus ``custom_metadata.KEY = 'value'`` terms.

        See :func:`translate_filter`. ``.to_table()`` returns the stored columns
        (``custom_metadata`` as a list of ``{key, value}``).
        """
        return self.dataset.scanner(filter=translate_filter(filter), columns=columns, **kwargs)

    def to_batches(
        self,
        columns: list[str] | None = None,
        *,
        filter: str | None = None,
        batch_size: int = 1024,
        raw: bool = False,
    ) -> Iterator[pa.RecordBatch]:
        """Record batches of the dataset.

        Unless ``raw``, ``custom_metadata`` comes as a struct of its keys (so ``to_pylist()`` gives
        a dict per row, as ContextFrame's metadata does) that includes the row's ``source_id``.
        """
        want = list(columns) if columns is not None else None
        read = want
        add_sid = not raw and (want is None or "custom_metadata" in want)
        if add_sid and want is not None and "source_id" not in want:
            read = [*want, "source_id"]
        scanner = self.dataset.scanner(
            columns=read, filter=translate_filter(filter), batch_size=batch_size
        )
        for batch in scanner.to_batches():
            if not add_sid:
                yield batch
                continue
            yield _present_custom_metadata(batch, want)


def _present_custom_metadata(batch: pa.RecordBatch, want: list[str] | None) -> pa.RecordBatch:
    cm = batch.column("custom_metadata").to_pylist()
    sids = batch.column("source_id").to_pylist()
    dicts = []
    for entries, sid in zip(cm, sids, strict=True):
        d = {e["key"]: e["value"] for e in entries or [] if e}
        d.setdefault("source_id", sid)
        dicts.append(d)
    names = want if want is not None else batch.schema.names
    arrays = []
    for name in names:
        if name == "custom_metadata":
            arrays.append(pa.array(dicts))
        else:
            arrays.append(batch.column(name))
    return pa.RecordBatch.from_arrays(arrays, names=list(names))
