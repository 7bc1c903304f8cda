"""The schema codec: a record's Arrow schema and documents -> Arrow tables.

Both are derived from :data:`cfstream.records.RECORD_FIELDS`. :class:`TableBuilder` is what a
writer uses: the schema it writes (adopted from the dataset by
:func:`cfstream.storage.writer.adopt_schema`) and how vectors are filled.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from operator import attrgetter
from typing import Any, Final

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from cfstream.records import (
    PLACEHOLDER_VECTOR_DIM,
    RECORD_FIELDS,
    Document,
    RecordField,
    Relationship,
    parse_timestamp,
    uuid_array,
    uuid_digests,
)

__all__ = ("TableBuilder", "documents_to_table", "frame_schema")

_RELATIONSHIP_STRUCT: Final = pa.struct(
    [
        pa.field(f.name, pa.string(), nullable=f.name != "type")
        for f in dataclasses.fields(Relationship)
    ]
)
_METADATA_STRUCT: Final = pa.struct([pa.field("key", pa.string()), pa.field("value", pa.string())])
_TS: Final = pa.timestamp("us", tz="UTC")
_NO_COMPRESSION: Final = {"lance-encoding:compression": "none"}
_ARROW_TYPES: Final[dict[str, pa.DataType]] = {
    "text": pa.string(),
    "int32": pa.int32(),
    "text_list": pa.list_(pa.string()),
    "day": pa.string(),
    "timestamp": _TS,
    "relationships": pa.list_(_RELATIONSHIP_STRUCT),
    "metadata": pa.list_(_METADATA_STRUCT),
    "blob": pa.large_binary(),
}


def _arrow_field(f: RecordField, embed_dim: int, compress_text: bool) -> pa.Field:
    meta: dict[str, str] | None = None
    if f.compression == "never" or (f.compression == "option" and not compress_text):
        meta = _NO_COMPRESSION
    elif f.kind == "blob":
        meta = {"lance-encoding:blob": "true"}
    kind = (
        pa.list_(pa.float32(), list_size=embed_dim) if f.kind == "vector" else _ARROW_TYPES[f.kind]
    )
    return pa.field(f.name, kind, nullable=not f.required, metadata=meta)


def frame_schema(embed_dim: int | None = None, *, compress_text: bool = False) -> pa.Schema:
    """The Arrow schema of a stored record: FrameRecord's columns, then cfstream's own
    (:data:`~cfstream.records.RECORD_FIELDS`, in order).

    The ``vector`` column (``fixed_size_list<float32>[embed_dim]``) is included only when
    ``embed_dim`` is given: measured on pylance 14, a column of null 1536-wide vectors makes every
    ``merge_insert`` about 5x slower, so datasets without embeddings leave it out (ContextFrame
    compatibility mode always includes it). ``compress_text=False`` (the default) stores
    ``text_content`` without Lance's string compression: about 10x faster writes for about 20%
    more disk. ``uuid``, ``content_hash``, ``source_id`` and ``title`` are never compressed:
    measured on pylance 14, compressing them cost more than half of a write's CPU time (random hex
    barely compresses) and saved about 6% of the disk.
    """
    return pa.schema(
        [
            _arrow_field(f, embed_dim or 0, compress_text)
            for f in RECORD_FIELDS
            if f.kind != "vector" or embed_dim
        ]
    )


def _day(value: datetime | date | str | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value[:10] if len(value) >= 10 else value
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.date().isoformat()
    return value.isoformat()


def _metadata_lists(rows: Iterable[dict[str, Any] | None]) -> pa.Array:
    offsets = [0]
    keys: list[str] = []
    values: list[str | None] = []
    for r in rows:
        if r:
            for k, v in r.items():
                keys.append(k)
                values.append(v if v is None or type(v) is str else _meta_str(v))
        offsets.append(len(keys))
    struct = pa.StructArray.from_arrays(
        [pa.array(keys, pa.string()), pa.array(values, pa.string())], fields=list(_METADATA_STRUCT)
    )
    return pa.ListArray.from_arrays(
        pa.array(offsets, pa.int32()), struct, type=pa.list_(_METADATA_STRUCT)
    )


def _meta_str(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, datetime | date):
        return v.isoformat()
    if isinstance(v, list | dict | tuple):
        return orjson.dumps(v, default=str).decode()
    return str(v)


def _relationship_lists(rows: Iterable[list[Relationship] | None]) -> pa.Array:
    offsets = [0]
    cols: tuple[list[str | None], ...] = ([], [], [], [], [], [], [])
    t, i, u, p, c, ti, de = cols
    for r in rows:
        if r:
            for rel in r:
                t.append(rel.type)
                i.append(rel.id)
                u.append(rel.uri)
                p.append(rel.path)
                c.append(rel.cid)
                ti.append(rel.title)
                de.append(rel.description)
        offsets.append(len(t))
    struct = pa.StructArray.from_arrays(
        [pa.array(col, pa.string()) for col in cols], fields=list(_RELATIONSHIP_STRUCT)
    )
    return pa.ListArray.from_arrays(
        pa.array(offsets, pa.int32()), struct, type=pa.list_(_RELATIONSHIP_STRUCT)
    )


def _vectors(docs: Sequence[Document], dim: int, fill_zeros: bool) -> pa.Array:
    vtype = pa.list_(pa.float32(), list_size=dim)
    n = len(docs)
    if all(d.vector is None for d in docs):
        if not fill_zeros:
            return pa.nulls(n, vtype)
        flat = pa.repeat(pa.scalar(0.0, pa.float32()), n * dim)
        return pa.FixedSizeListArray.from_arrays(flat, dim)
    rows: list[Any] = [d.vector for d in docs]
    if all(v is None or type(v) is np.ndarray for v in rows):
        # the embed stage's rows (and the chunked documents between them, with no vector): one
        # matrix, no Python floats
        matrix = np.zeros((n, dim), dtype=np.float32)
        missing: list[int] = []
        for i, (d, v) in enumerate(zip(docs, rows, strict=True)):
            if v is None:
                missing.append(i)
            elif v.shape != (dim,):
                raise ValueError(f"vector of {d.source_id!r} has {v.size} values, expected {dim}")
            else:
                matrix[i] = v
        flat = pa.array(matrix.reshape(-1), pa.float32())
        if fill_zeros or not missing:
            return pa.FixedSizeListArray.from_arrays(flat, dim)
        nulls = np.zeros(n, dtype=bool)
        nulls[missing] = True
        return pa.FixedSizeListArray.from_arrays(flat, dim, mask=pa.array(nulls))
    values: list[float] = []
    zeros = [0.0] * dim
    mask: list[bool] = []
    for d, v in zip(docs, rows, strict=True):
        if v is None:
            values.extend(zeros)
            mask.append(not fill_zeros)
        else:
            if len(v) != dim:
                raise ValueError(f"vector of {d.source_id!r} has {len(v)} values, expected {dim}")
            values.extend(v.tolist() if type(v) is np.ndarray else v)
            mask.append(False)
    arr = pa.FixedSizeListArray.from_arrays(pa.array(values, pa.float32()), dim)
    if any(mask):
        arr = pa.FixedSizeListArray.from_arrays(
            pa.array(values, pa.float32()), dim, mask=pa.array(mask, pa.bool_())
        )
    return arr


_DAY_ARROW = pa.date32()


_NONE_TYPE = type(None)


def _all_of(values: list[Any], kind: type) -> bool:
    """True when every value is None or exactly of type ``kind`` (one C-level pass)."""
    return set(map(type, values)) <= {kind, _NONE_TYPE}


def _timestamp_column(values: list[Any]) -> pa.Array:
    """Full UTC timestamps; vectorised in Arrow when the values are homogeneous."""
    if _all_of(values, datetime):
        return pa.array(values, _TS)  # naive datetimes are taken as UTC
    if _all_of(values, str):
        try:
            return pa.array([v or None for v in values], pa.string()).cast(_TS)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass  # date-only or naive strings: parse them one by one
    return pa.array([parse_timestamp(v) for v in values], _TS)


def _day_column(values: list[Any]) -> pa.Array:
    """``YYYY-MM-DD`` strings (ContextFrame's date columns)."""
    if _all_of(values, str):
        return pc.utf8_slice_codeunits(pa.array(values, pa.string()), 0, 10)
    if _all_of(values, datetime):
        return pa.array(values, _TS).cast(_DAY_ARROW).cast(pa.string())
    return pa.array([_day(v) for v in values], pa.string())


#: text columns taken from the document as they are (``uuid`` and ``content_hash`` are derived)
_STRING_COLUMNS: Final = tuple(f.name for f in RECORD_FIELDS if f.kind == "text" and not f.derived)
_TEXT_LISTS: Final = tuple(f.name for f in RECORD_FIELDS if f.kind == "text_list")
_DAYS: Final = tuple(f.name for f in RECORD_FIELDS if f.kind == "day")
_GETTERS: Final = {f.name: attrgetter(f.name) for f in RECORD_FIELDS if f.name != "ingested_at"}
_EMPTY: list[str] = []
_STRING_LIST = pa.list_(pa.string())


def _empty_lists(n: int, value_type: pa.DataType) -> pa.Array:
    """``n`` empty lists (not nulls: ContextFrame stores empty lists)."""
    return pa.ListArray.from_arrays(
        pa.array(np.zeros(n + 1, dtype=np.int32)),
        pa.array([], value_type),
        type=pa.list_(value_type),
    )


_LIST_TYPES: Final = frozenset({list, tuple, _NONE_TYPE})


def _string_lists(values: list[list[str] | None], name: str) -> pa.Array:
    """A ``list<string>`` column; ``None`` becomes an empty list.

    Raises ``TypeError`` for a value that is not a list (Arrow would split a string into its
    characters)."""
    nones = values.count(None)
    if nones == len(values):
        return _empty_lists(len(values), pa.string())
    kinds = set(map(type, values))  # one C-level pass
    if not kinds <= _LIST_TYPES:
        bad = sorted(k.__name__ for k in kinds - _LIST_TYPES)
        raise TypeError(f"{name} must be a list of strings, not {', '.join(bad)}")
    if nones:
        values = [v or _EMPTY for v in values]
    return pa.array(values, _STRING_LIST)


def documents_to_table(
    docs: Sequence[Document],
    schema: pa.Schema,
    *,
    ingested_at: datetime | None = None,
    fill_zero_vectors: bool = False,
    uuids: Sequence[str] | pa.Array | None = None,
) -> pa.Table:
    """Build an Arrow table of ``schema`` from ``docs``, column by column.

    Every document must have its ``source_type`` set. ``content_hash`` is computed when missing.
    Raises an exception (``ValueError``, ``TypeError``, ``AttributeError``, ``pa.ArrowException``...)
    when a document holds a value of the wrong type or lacks a required value (``title``,
    ``source_id``); ``LanceSink`` then converts the batch one document at a time and dead-letters
    the ones that fail (``transforms.validate()`` before the sink catches them earlier).
    """
    now = ingested_at or datetime.now(UTC)
    n = len(docs)
    s = pa.string()
    g = _GETTERS
    arrays: dict[str, pa.Array] = {}
    for name in _STRING_COLUMNS:
        values = list(map(g[name], docs))
        arrays[name] = pa.nulls(n, s) if values.count(None) == n else pa.array(values, s)
    if uuids is None:
        arrays["uuid"] = uuid_array(uuid_digests(docs))
    elif isinstance(uuids, pa.Array):
        arrays["uuid"] = uuids
    else:
        arrays["uuid"] = pa.array(uuids, s)
    arrays["position"] = pa.array(list(map(g["position"], docs)), pa.int32())
    for name in _TEXT_LISTS:
        arrays[name] = _string_lists(list(map(g[name], docs)), name)
    days = {name: list(map(g[name], docs)) for name in _DAYS}
    for name, values in days.items():
        arrays[name] = _day_column(values)
    updated = days["updated_at"]  # what source_updated_at defaults to
    rels = list(map(g["relationships"], docs))
    arrays["relationships"] = (
        _relationship_lists(rels) if any(rels) else _empty_lists(n, _RELATIONSHIP_STRUCT)
    )
    metas = list(map(g["custom_metadata"], docs))
    arrays["custom_metadata"] = (
        _metadata_lists(metas) if any(metas) else _empty_lists(n, _METADATA_STRUCT)
    )
    arrays["raw_data"] = pa.array(list(map(g["raw_data"], docs)), pa.large_binary())
    hashes = list(map(g["content_hash"], docs))
    if None in hashes:
        hashes = [d.compute_hash() for d in docs]
    arrays["content_hash"] = pa.array(hashes, s)
    stamps = list(map(g["source_updated_at"], docs))
    if stamps.count(None) == n:
        stamps = updated
    elif not all(stamps):
        stamps = [a or b for a, b in zip(stamps, updated, strict=True)]
    arrays["source_updated_at"] = _timestamp_column(stamps)
    arrays["ingested_at"] = pa.repeat(pa.scalar(now, _TS), n)
    if "vector" in schema.names:
        dim = schema.field("vector").type.list_size
        if dim == PLACEHOLDER_VECTOR_DIM and any(d.vector is not None for d in docs):
            raise ValueError(
                "documents carry vectors but the dataset has no vector column: set embed_dim"
            )
        arrays["vector"] = _vectors(docs, dim, fill_zero_vectors)
    elif any(d.vector is not None for d in docs):
        raise ValueError(
            "documents carry vectors but the dataset has no vector column: set embed_dim"
        )
    for f in schema:
        if not f.nullable and arrays[f.name].null_count:  # O(1): Arrow keeps the count
            raise ValueError(f"{f.name} is missing (None); every record needs one")
    return pa.Table.from_arrays([arrays[f.name] for f in schema], schema=schema)


@dataclass(slots=True)
class TableBuilder:
    """Builds the Arrow tables a writer commits: ``schema`` (the dataset's, once adopted) and
    whether documents without a vector get zeros (ContextFrame compatibility) or nulls."""

    schema: pa.Schema
    fill_zero_vectors: bool = False

    def build(self, docs: Sequence[Document], uuids: Sequence[str] | pa.Array) -> pa.Table:
        """``docs`` (with their ``uuids``) as one table, ingested now (see
        :func:`documents_to_table` for what it raises)."""
        return documents_to_table(
            docs,
            self.schema,
            ingested_at=datetime.now(UTC),
            fill_zero_vectors=self.fill_zero_vectors,
            uuids=uuids,
        )
