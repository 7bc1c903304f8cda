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


def _text_problem(field: str, value: Any) -> RecordError:
    """Why ``value`` cannot be stored as the optional text ``field``."""
    if type(value) is not str:
        return RecordError(f"expected a string, got {type(value).__name__}", field=field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return RecordError(f"not valid UTF-8 text ({exc.reason} at {exc.start})", field=field)
    return RecordError("not valid UTF-8 text", field=field)  # pragma: no cover - never reached


def _list_problem(doc: Document) -> RecordError:
    field = "tags" if doc.tags is not None and not _str_list(doc.tags) else "contributors"
    return RecordError("expected a list of strings", field=field)


def _str_list(value: Any) -> bool:
    return isinstance(value, list) and all(type(v) is str for v in value)


def _time_problem(doc: Document, value: Any) -> RecordError:
    """Why the time ``value`` (the first bad one of ``doc``'s three) cannot be stored."""
    field = next(
        f
        for f, v in (
            ("created_at", doc.created_at),
            ("updated_at", doc.updated_at),
            ("source_updated_at", doc.source_updated_at),
        )
        if v is value
    )
    if isinstance(value, str):
        return RecordError(f"{value[:40]!r} is not an ISO 8601 date or time", field=field)
    return RecordError(
        f"expected a datetime or ISO 8601 string, got {type(value).__name__}", field=field
    )


def _valid_utf8(value: str) -> bool:
    """False when ``value`` holds lone surrogates (it cannot be stored as UTF-8)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _relationship_problem(r: Any) -> RecordError | None:
    if not isinstance(r, Relationship):
        return RecordError(f"expected Relationship, got {type(r).__name__}", field="relationships")
    if r.type not in RELATIONSHIP_TYPES:
        return RecordError(
            f"type {r.type!r} is not one of {sorted(RELATIONSHIP_TYPES)}", field="relationships"
        )
    if not (r.id or r.uri or r.path or r.cid):
        return RecordError("a relationship needs one of id, uri, path, cid", field="relationships")
    return None


_TIME_TYPES = (datetime, date)


def check_document(doc: Document, *, max_text_bytes: int | None = None) -> None:
    """Raise :class:`~cfstream.errors.RecordError` naming the first invalid field of ``doc``.

    One pass of plain type checks in the order of the fields (about 1 µs for a valid document);
    the message for a failure is only built once one is found.
    """
    sid = doc.source_id
    if type(sid) is not str or not sid:
        raise RecordError("required, a non-empty string", field="source_id")
    title = doc.title
    if type(title) is not str or not title or title.isspace():
        raise RecordError("required, a non-empty string", field="title")
    if not title.isascii() and not _valid_utf8(title):
        raise _text_problem("title", title)
    texts = _OPTIONAL_STR_VALUES(doc)
    for v in texts:
        if v is not None and (type(v) is not str or not (v.isascii() or _valid_utf8(v))):
            field = next(f for f, x in zip(_OPTIONAL_STR, texts, strict=True) if x is v)
            raise _text_problem(field, v)
    if max_text_bytes is not None:
        text = doc.text_content
        if text is not None and len(text) * 4 > max_text_bytes:
            size = len(text.encode("utf-8", "surrogatepass"))
            if size > max_text_bytes:
                raise RecordError(
                    f"{size} bytes, over the limit of {max_text_bytes}", field="text_content"
                )
    if doc.record_type not in RECORD_TYPES:
        raise RecordError(
            f"{doc.record_type!r} is not one of {sorted(RECORD_TYPES)}", field="record_type"
        )
    for lst in (doc.tags, doc.contributors):
        if lst is not None:
            if type(lst) is not list and not isinstance(lst, list):
                raise _list_problem(doc)
            for t in lst:
                if type(t) is not str:
                    raise _list_problem(doc)
    for ts in (doc.created_at, doc.updated_at, doc.source_updated_at):
        if ts is not None and not isinstance(ts, _TIME_TYPES):
            if type(ts) is not str:
                raise _time_problem(doc, ts)
            try:
                datetime.fromisoformat(ts)
            except ValueError:
                raise _time_problem(doc, ts) from None
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
    if rels:
        if not isinstance(rels, list):
            raise RecordError("expected a list of Relationship", field="relationships")
        for r in rels:
            problem = _relationship_problem(r)
            if problem is not None:
                raise problem
    raw = doc.raw_data
    if raw is not None and not isinstance(raw, bytes | bytearray):
        raise RecordError(f"expected bytes, got {type(raw).__name__}", field="raw_data")
