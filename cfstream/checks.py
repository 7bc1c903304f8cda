"""The FrameRecord rules a document must meet to be stored: :func:`check_document`.

Plain Python type checks (about 1 µs a document: the schema is simple and fixed), shared by the
``validate`` stage (which dead-letters what fails) and the sinks (which dead-letter what they
cannot convert). Imports only ``records`` and ``errors``.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from cfstream.errors import RecordError
from cfstream.records import (
    RECORD_FIELDS,
    RECORD_TYPES,
    RELATIONSHIP_TYPES,
    Document,
    Relationship,
    field_reader,
)

__all__ = ("check_document",)

#: the optional text fields a document may leave None (:data:`~cfstream.records.RECORD_FIELDS`)
_OPTIONAL_STR = tuple(
    f.name
    for f in RECORD_FIELDS
    if f.kind == "text" and not f.required and not f.derived and f.choices is None
)
_OPTIONAL_STR_VALUES = field_reader(_OPTIONAL_STR)
_INT32 = 2**31


def _check_text(field: str, value: str) -> None:
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise RecordError(
                f"not valid UTF-8 text ({exc.reason} at {exc.start})", field=field
            ) from None


def _check_time(field: str, value: Any) -> None:
    if value is None or isinstance(value, datetime | date):
        return
    if isinstance(value, str):
        try:
            datetime.fromisoformat(value)
        except ValueError:
            raise RecordError(
                f"{value[:40]!r} is not an ISO 8601 date or time", field=field
            ) from None
        return
    raise RecordError(
        f"expected a datetime or ISO 8601 string, got {type(value).__name__}", field=field
    )


def _check_str_list(field: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, list) or not all(type(v) is str for v in value):
        raise RecordError("expected a list of strings", field=field)


_TIME_TYPES = (datetime, date)


def _valid_utf8(value: str) -> bool:
    """False when ``value`` holds lone surrogates (it cannot be stored as UTF-8)."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _fast_ok(d: Document) -> bool:
    """True when ``d`` is certainly valid (the common case); False means "check in detail"."""
    sid = d.source_id
    title = d.title
    if type(sid) is not str or not sid or type(title) is not str or not title or title.isspace():
        return False
    if not title.isascii() and not _valid_utf8(title):
        return False
    for v in _OPTIONAL_STR_VALUES(d):
        if v is not None and (type(v) is not str or not (v.isascii() or _valid_utf8(v))):
            return False
    if d.record_type != "document" and d.record_type != "collection_header":
        return False
    for lst in (d.tags, d.contributors):
        if lst is not None:
            if type(lst) is not list:
                return False
            for t in lst:
                if type(t) is not str:
                    return False
    for ts in (d.created_at, d.updated_at, d.source_updated_at):
        if ts is not None and not isinstance(ts, _TIME_TYPES):
            if type(ts) is not str:
                return False
            try:
                datetime.fromisoformat(ts)
            except ValueError:
                return False
    pos = d.position
    if pos is not None and (type(pos) is not int or not -_INT32 <= pos < _INT32):
        return False
    rels = d.relationships
    if rels:
        if type(rels) is not list:
            return False
        for r in rels:
            if (
                type(r) is not Relationship
                or r.type not in RELATIONSHIP_TYPES
                or not (r.id or r.uri or r.path or r.cid)
            ):
                return False
    meta = d.custom_metadata
    if meta is not None and (type(meta) is not dict or not all(type(k) is str for k in meta)):
        return False
    return d.raw_data is None or isinstance(d.raw_data, bytes)


def check_document(doc: Document, *, max_text_bytes: int | None = None) -> None:
    """Raise :class:`~cfstream.errors.RecordError` naming the first invalid field of ``doc``."""
    if max_text_bytes is None and _fast_ok(doc):
        return
    sid = doc.source_id
    if type(sid) is not str or not sid:
        raise RecordError("required, a non-empty string", field="source_id")
    title = doc.title
    if type(title) is not str or not title.strip():
        raise RecordError("required, a non-empty string", field="title")
    _check_text("title", title)
    for name in _OPTIONAL_STR:
        v = getattr(doc, name)
        if v is not None:
            if type(v) is not str:
                raise RecordError(f"expected a string, got {type(v).__name__}", field=name)
            _check_text(name, v)
    text = doc.text_content
    if max_text_bytes is not None and text is not None and len(text) * 4 > max_text_bytes:
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > max_text_bytes:
            raise RecordError(
                f"{size} bytes, over the limit of {max_text_bytes}", field="text_content"
            )
    if doc.record_type not in RECORD_TYPES:
        raise RecordError(
            f"{doc.record_type!r} is not one of {sorted(RECORD_TYPES)}", field="record_type"
        )
    _check_str_list("tags", doc.tags)
    _check_str_list("contributors", doc.contributors)
    _check_time("created_at", doc.created_at)
    _check_time("updated_at", doc.updated_at)
    _check_time("source_updated_at", doc.source_updated_at)
    pos = doc.position
    if pos is not None and (type(pos) is not int or not -_INT32 <= pos < _INT32):
        raise RecordError("expected a 32-bit integer", field="position")
    meta = doc.custom_metadata
    if meta is not None:
        if not isinstance(meta, dict):
            raise RecordError(
                f"expected a dict, got {type(meta).__name__}", field="custom_metadata"
            )
        for k in meta:
            if type(k) is not str:
                raise RecordError(f"keys must be strings, got {k!r}", field="custom_metadata")
    rels = doc.relationships
    if rels is not None:
        if not isinstance(rels, list):
            raise RecordError("expected a list of Relationship", field="relationships")
        for r in rels:
            if not isinstance(r, Relationship):
                raise RecordError(
                    f"expected Relationship, got {type(r).__name__}", field="relationships"
                )
            if r.type not in RELATIONSHIP_TYPES:
                raise RecordError(
                    f"type {r.type!r} is not one of {sorted(RELATIONSHIP_TYPES)}",
                    field="relationships",
                )
            if not (r.id or r.uri or r.path or r.cid):
                raise RecordError(
                    "a relationship needs one of id, uri, path, cid", field="relationships"
                )
    raw = doc.raw_data
    if raw is not None and not isinstance(raw, bytes | bytearray):
        raise RecordError(f"expected bytes, got {type(raw).__name__}", field="raw_data")
