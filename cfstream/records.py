"""What flows through a pipeline and what is stored.

Sources yield three kinds of item:

- :class:`Document`: one record to store (a file, an issue, a message, a page, a note);
- :class:`Checkpoint`: a resume point; its cursor is saved only after every record yielded before it
  has been committed to the dataset;
- :class:`Tombstone`: a document that was deleted at the source; the sink deletes its row.

The stored row is ContextFrame's FrameRecord (``contextframe 0.1.1``) with the same column names and
types, plus cfstream's own columns ``source_id``, ``content_hash``, ``source_updated_at`` and
``ingested_at``. :func:`record_uuid` derives a row's ``uuid`` from its identity, ``(source name,
source_type, source_id)``, so re-imports hit the same row and two sources never share one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import uuid as _uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from operator import attrgetter
from typing import Any, Final, Literal, TypeAlias

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

__all__ = (
    "CFSTREAM_COLUMNS",
    "CFSTREAM_NAMESPACE",
    "DEFAULT_EMBED_DIM",
    "PLACEHOLDER_VECTOR_DIM",
    "RELATIONSHIP_TYPES",
    "Checkpoint",
    "Document",
    "Item",
    "ItemChanges",
    "Relationship",
    "Tombstone",
    "documents_to_table",
    "escape_surrogates",
    "frame_schema",
    "parse_timestamp",
    "record_uuid",
    "uuid_array",
    "uuid_digest",
    "uuid_digests",
    "uuid_keys",
    "uuid_prefix",
    "without_surrogates",
)

#: The fixed namespace of every cfstream uuid (see :func:`record_uuid`).
CFSTREAM_NAMESPACE: Final = _uuid.UUID("6f0c7a52-3b1e-5c1f-9a57-63f5a0c2d1e4")
_NS_BYTES: Final = CFSTREAM_NAMESPACE.bytes

#: ContextFrame's default embedding width.
DEFAULT_EMBED_DIM: Final = 1536

#: The width of the zero ``vector`` a dataset without embeddings stores, so that ContextFrame's
#: readers (which need a vector on every row) can read it (see :mod:`cfstream.sinks.vectors`).
PLACEHOLDER_VECTOR_DIM: Final = 1

#: Relationship types ContextFrame knows.
RELATIONSHIP_TYPES: Final = frozenset(
    {"parent", "child", "related", "reference", "contains", "member_of"}
)

RecordType: TypeAlias = Literal["document", "collection_header", "dataset_header", "frameset"]
RECORD_TYPES: Final = frozenset({"document", "collection_header", "dataset_header", "frameset"})

#: Columns cfstream adds to ContextFrame's FrameRecord schema.
CFSTREAM_COLUMNS: Final = ("source_id", "content_hash", "source_updated_at", "ingested_at")


_VARIANT: Final = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _escape_surrogate(m: re.Match[str]) -> str:
    c = ord(m.group())
    return f"\\x{c - 0xDC00:02x}" if 0xDC80 <= c <= 0xDCFF else f"\\u{c:04x}"


def escape_surrogates(text: str) -> str:
    """``text`` with each lone surrogate (which UTF-8 cannot encode) written as a backslash escape.

    A file name that is not valid UTF-8 reaches Python (``os.fsdecode``) with each undecodable byte
    as a surrogate ``U+DC80``-``U+DCFF``: it becomes ``\\xNN``, the byte itself (``b"a\\xff.md"``
    -> ``"a\\\\xff.md"``); any other lone surrogate becomes ``\\uDNNN``. Valid text is returned
    unchanged. This is how cfstream stores such text, and the text its uuid is derived from.
    """
    return _SURROGATE.sub(_escape_surrogate, text)


def _quote_name(name: str) -> str:
    """``name`` with ``%``, ``/`` and ``:`` percent-encoded (names made of other characters,
    the usual kind, are unchanged): the first ``/`` of a uuid's input then ends the name."""
    if "%" in name or "/" in name or ":" in name:
        return name.replace("%", "%25").replace("/", "%2F").replace(":", "%3A")
    return name


def uuid_prefix(source_type: str, source_name: str | None = None) -> str:
    """The text before ``source_id`` in a record's uuid input (see :func:`record_uuid`)."""
    if source_name is None or source_name == source_type:
        return f"{source_type}:"
    return f"{_quote_name(source_name)}/{source_type}:"


def _id_bytes(prefix: str, source_id: str) -> bytes:
    text = f"{prefix}{source_id}"
    try:
        return text.encode()
    except UnicodeEncodeError:  # lone surrogates: derive it from the stored (escaped) form
        return escape_surrogates(text).encode()


def record_uuid(source_type: str, source_id: str, *, source_name: str | None = None) -> str:
    """Return the deterministic, lowercase uuid of a record: its identity is ``(source_name,
    source_type, source_id)``.

    ``uuid5(CFSTREAM_NAMESPACE, f"{source_type}:{source_id}")`` when ``source_name`` is None or
    equals ``source_type`` (a source left with its default name: the uuids of cfstream before
    source names counted), else ``uuid5(CFSTREAM_NAMESPACE,
    f"{source_name}/{source_type}:{source_id}")``, with ``%``, ``/`` and ``:`` in the name
    percent-encoded. Two sources of one pipeline have different names, so they never share a
    record. Computed without building a UUID object (it runs once per record): the SHA-1 digest
    with the version nibble set to 5 and the variant bits to ``10``. An id holding lone surrogates
    (a file name that is not valid UTF-8) is taken in its stored form, :func:`escape_surrogates`.
    """
    h = hashlib.sha1(
        _NS_BYTES + _id_bytes(uuid_prefix(source_type, source_name), source_id)
    ).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


def uuid_digest(source_type: str, source_id: str, *, source_name: str | None = None) -> bytes:
    """The SHA-1 digest behind :func:`record_uuid` (20 bytes; the uuid is its first 16, with the
    version and variant bits set). Cheaper than the uuid string: batches format them at once with
    :func:`uuid_array`."""
    return hashlib.sha1(
        _NS_BYTES + _id_bytes(uuid_prefix(source_type, source_name), source_id)
    ).digest()


_SOURCE_TYPE = attrgetter("source_type")
_SOURCE_NAME = attrgetter("source_name")
_SOURCE_ID = attrgetter("source_id")


def uuid_digests(docs: Sequence[Document]) -> list[bytes]:
    """:func:`uuid_digest` of every document with its ``source_type`` (missing counts as ``""``)
    and ``source_name``, hashing one shared prefix per (type, name) group: a batch usually holds
    one or a few sources."""
    if not docs:
        return []
    types = list(map(_SOURCE_TYPE, docs))
    names = list(map(_SOURCE_NAME, docs))
    sha1 = hashlib.sha1
    try:
        if types.count(types[0]) == len(types) and names.count(names[0]) == len(names):
            prefix = _NS_BYTES + uuid_prefix(types[0] or "", names[0]).encode()
            return [sha1(prefix + sid.encode()).digest() for sid in map(_SOURCE_ID, docs)]
        prefixes: dict[tuple[str | None, str | None], bytes] = {}
        out: list[bytes] = []
        for st, name, sid in zip(types, names, map(_SOURCE_ID, docs), strict=True):
            head = prefixes.get((st, name))
            if head is None:
                head = prefixes[st, name] = _NS_BYTES + uuid_prefix(st or "", name).encode()
            out.append(sha1(head + sid.encode()).digest())
        return out
    except (AttributeError, UnicodeEncodeError):  # not a str, or lone surrogates: one by one
        pass
    return [
        uuid_digest(st or "", d.source_id, source_name=name)
        for st, name, d in zip(types, names, docs, strict=True)
    ]


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
#: where each of the 32 hex digits goes in the 36-character uuid (dashes at 8, 13, 18, 23)
_HEX_SLOTS = np.array([i + (i >= 8) + (i >= 12) + (i >= 16) + (i >= 20) for i in range(32)])


def _uuid_bytes(digests: Sequence[bytes]) -> np.ndarray[Any, np.dtype[np.uint8]]:
    raw = np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(len(digests), 20)[:, :16].copy()
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x50  # version 5
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    return raw


def uuid_array(digests: Sequence[bytes]) -> pa.StringArray:
    """Format many :func:`uuid_digest` results as one Arrow array of uuid strings (vectorised)."""
    n = len(digests)
    if n == 0:
        return pa.array([], pa.string())
    raw = _uuid_bytes(digests)
    out = np.full((n, 36), ord("-"), dtype=np.uint8)
    nibbles = np.empty((n, 32), dtype=np.uint8)
    nibbles[:, 0::2] = raw >> 4
    nibbles[:, 1::2] = raw & 0x0F
    out[:, _HEX_SLOTS] = _HEX[nibbles]
    offsets = np.arange(0, 36 * (n + 1), 36, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(out.tobytes()))


def uuid_keys(digests: Sequence[bytes]) -> pa.Array:
    """The first 64 bits of each uuid (version bits included) as ``uint64``: a compact set key."""
    if not digests:
        return pa.array([], pa.uint64())
    raw = _uuid_bytes(digests)
    return pa.array(raw[:, :8].copy().view(">u8").reshape(-1).astype(np.uint64))


@dataclass(slots=True)
class Relationship:
    """A link from one record to another, ContextFrame style.

    ``type`` is one of :data:`RELATIONSHIP_TYPES`; ``id`` is the other record's uuid (a source
    uses its own ``Source.record_uuid``), or give ``uri``/``path``/``cid`` when the target is not a
    record.
    """

    type: str
    id: str | None = None
    uri: str | None = None
    path: str | None = None
    cid: str | None = None
    title: str | None = None
    description: str | None = None


@dataclass(slots=True)
class Document:
    """One document a source yields; becomes one FrameRecord row.

    Only ``source_id`` and ``title`` are required. ``source_type`` is filled in from the source when
    left empty. ``updated_at``/``created_at`` take a datetime or an ISO 8601 string; they are stored
    as ``YYYY-MM-DD`` (as ContextFrame stores them) and ``source_updated_at`` keeps the full
    timestamp (defaults to ``updated_at``). ``custom_metadata`` values are stored as strings.
    """

    source_id: str
    title: str
    text_content: str | None = None
    source_type: str | None = None
    source_url: str | None = None
    author: str | None = None
    contributors: list[str] | None = None
    tags: list[str] | None = None
    created_at: datetime | str | None = None
    updated_at: datetime | str | None = None
    source_updated_at: datetime | str | None = None
    collection: str | None = None
    collection_id: str | None = None
    collection_id_type: str | None = None
    position: int | None = None
    custom_metadata: dict[str, Any] | None = None
    relationships: list[Relationship] | None = None
    record_type: str = "document"
    uri: str | None = None
    local_path: str | None = None
    cid: str | None = None
    context: str | None = None
    version: str | None = None
    status: str | None = None
    source_file: str | None = None
    raw_data: bytes | None = None
    raw_data_type: str | None = None
    vector: Sequence[float] | None = None
    content_hash: str | None = field(default=None, compare=False)
    #: the name of the source that yielded it (set by the runner; part of the uuid, not stored)
    source_name: str | None = field(default=None, compare=False, repr=False)

    @property
    def uuid(self) -> str:
        """The row's deterministic uuid (needs ``source_type``; see :func:`record_uuid`)."""
        return record_uuid(self.source_type or "", self.source_id, source_name=self.source_name)

    def compute_hash(self) -> str:
        """Return (and cache) a hash of everything stored except ``ingested_at``."""
        h = self.content_hash
        if h is None:
            h = self.content_hash = _content_hash(self)
        return h

    def relate(self, type: str, target_uuid: str, *, title: str | None = None) -> None:
        """Add a relationship of ``type`` to the record with uuid ``target_uuid``."""
        rel = Relationship(type=type, id=target_uuid, title=title)
        if self.relationships is None:
            self.relationships = [rel]
        else:
            self.relationships.append(rel)
        self.content_hash = None


def _escaped(value: Any) -> Any:
    if type(value) is str:
        return escape_surrogates(value)
    if isinstance(value, list | tuple):
        return [_escaped(v) for v in value]
    if isinstance(value, dict):
        return {_escaped(k): _escaped(v) for k, v in value.items()}
    if isinstance(value, Relationship):
        return dataclasses.replace(
            value, **{f.name: _escaped(getattr(value, f.name)) for f in dataclasses.fields(value)}
        )
    return value


_NOT_TEXT: Final = frozenset({"raw_data", "vector", "position", "content_hash", "source_name"})


def without_surrogates(doc: Document) -> Document | None:
    """A copy of ``doc`` with every lone surrogate in its text escaped (:func:`escape_surrogates`),
    or None when it holds none. Its uuid does not change; its ``content_hash`` is the original's.
    """
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(doc):
        old = getattr(doc, f.name)
        if f.name not in _NOT_TEXT and old is not None:
            new = _escaped(old)
            try:
                changed = bool(new != old)
            except Exception:  # a value whose comparison fails: keep the copy
                changed = True
            if changed:
                changes[f.name] = new
    if not changes:
        return None
    return dataclasses.replace(doc, content_hash=doc.compute_hash(), **changes)


@dataclass(slots=True, frozen=True)
class ItemChanges:
    """Changes to a partition's per-item entries since the previous checkpoint.

    Sources that remember something per item (a file's mtime and digest, a blob's sha, a page's
    edit time) keep it in the state's item store instead of in the cursor, and put only what
    changed into each :class:`Checkpoint`: ``put`` maps item keys to new JSON-serialisable values,
    ``delete`` lists keys to forget, and ``reset`` first forgets every entry of the partition (a
    full re-sync). They are applied, in one transaction, after the commit that holds every record
    yielded before the checkpoint, exactly like the cursor.
    """

    put: Mapping[str, Any] = field(default_factory=dict)
    delete: Sequence[str] = ()
    reset: bool = False

    def __bool__(self) -> bool:
        return bool(self.put or self.delete or self.reset)

    def then(self, later: ItemChanges | None) -> ItemChanges:
        """These changes followed by ``later``, as one set of changes."""
        if later is None:
            return self
        if later.reset:
            return later
        gone = set(later.delete)
        put = {k: v for k, v in self.put.items() if k not in gone}
        put.update(later.put)
        delete = [k for k in self.delete if k not in later.put]
        seen = set(delete)
        delete.extend(k for k in later.delete if k not in seen)
        return ItemChanges(put=put, delete=delete, reset=self.reset)


@dataclass(slots=True, frozen=True)
class Checkpoint:
    """A resume point. ``cursor`` is JSON-serialisable; ``partition`` names the part of the source.

    The runner fills in ``source`` (the source's name) and ``partition`` when the source leaves them
    empty. The cursor is saved only after the commit that holds every record yielded before it;
    ``items`` (:class:`ItemChanges`) are applied to the item store at the same moment.
    """

    cursor: Mapping[str, Any] | None
    partition: str | None = None
    source: str | None = None
    items: ItemChanges | None = None

    def then(self, later: Checkpoint) -> Checkpoint:
        """One checkpoint standing for this one followed by ``later`` (item changes combined)."""
        if self.items is None:
            return later
        return dataclasses.replace(later, items=self.items.then(later.items))


@dataclass(slots=True, frozen=True)
class Tombstone:
    """The document ``source_id`` was deleted at the source: the sink deletes its row."""

    source_id: str
    source_type: str | None = None
    #: the name of the source that yielded it (set by the runner; part of the uuid)
    source_name: str | None = None

    @property
    def uuid(self) -> str:
        """The uuid of the row to delete."""
        return record_uuid(self.source_type or "", self.source_id, source_name=self.source_name)


Item: TypeAlias = Document | Checkpoint | Tombstone


_HASH_OPTIONS: Final = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def _content_hash(d: Document) -> str:
    """XXH3-128 (32 hex digits) of every stored field but ``ingested_at``.

    A change detector, not a security measure: XXH3 hashes a 1 KB document ~10x faster than
    SHA-1, and 128 bits make a missed change (two contents with one hash) practically impossible.

    orjson serialises datetimes, dates, the Relationship dataclasses and metadata values natively;
    anything else falls back to ``str``. ``raw_data`` is hashed as bytes.
    """
    vec = d.vector
    payload = (
        d.source_type,
        d.source_id,
        d.title,
        d.text_content,
        d.source_url,
        d.author,
        d.contributors,
        d.tags,
        d.created_at,
        d.updated_at,
        d.source_updated_at,
        d.collection,
        d.collection_id,
        d.collection_id_type,
        d.position,
        d.custom_metadata or None,
        d.relationships or None,
        d.record_type,
        d.uri,
        d.local_path,
        d.cid,
        d.context,
        d.version,
        d.status,
        d.source_file,
        d.raw_data_type,
        None if vec is None else (vec.tolist() if isinstance(vec, np.ndarray) else list(vec)),
    )
    try:
        encoded = orjson.dumps(payload, option=_HASH_OPTIONS, default=str)
    except TypeError:  # e.g. an integer past 64 bits in custom_metadata: hash its text instead
        encoded = repr(payload).encode("utf-8", "surrogatepass")
    if d.raw_data is None:
        return xxhash.xxh3_128_hexdigest(encoded)
    hasher = xxhash.xxh3_128(encoded)
    hasher.update(d.raw_data)
    return hasher.hexdigest()


# ----------------------------------------------------------------------------------------------
# Arrow schema
# ----------------------------------------------------------------------------------------------

_RELATIONSHIP_STRUCT = pa.struct(
    [
        pa.field("type", pa.string(), nullable=False),
        pa.field("id", pa.string()),
        pa.field("uri", pa.string()),
        pa.field("path", pa.string()),
        pa.field("cid", pa.string()),
        pa.field("title", pa.string()),
        pa.field("description", pa.string()),
    ]
)
_METADATA_STRUCT = pa.struct([pa.field("key", pa.string()), pa.field("value", pa.string())])
_TS = pa.timestamp("us", tz="UTC")
_NO_COMPRESSION = {"lance-encoding:compression": "none"}


def frame_schema(embed_dim: int | None = None, *, compress_text: bool = False) -> pa.Schema:
    """The Arrow schema of a stored record: FrameRecord's columns, then cfstream's own.

    The ``vector`` column (``fixed_size_list<float32>[embed_dim]``) is included only when
    ``embed_dim`` is given: measured on pylance 14, a column of null 1536-wide vectors makes every
    ``merge_insert`` about 5x slower, so datasets without embeddings leave it out (ContextFrame
    compatibility mode always includes it). ``compress_text=False`` (the default) stores
    ``text_content`` without Lance's string compression: about 10x faster writes for about 20%
    more disk. ``uuid``, ``content_hash``, ``source_id`` and ``title`` are never compressed:
    measured on pylance 14, compressing them cost more than half of a write's CPU time (random hex
    barely compresses) and saved about 6% of the disk.
    """
    text_meta = None if compress_text else _NO_COMPRESSION
    vector = [pa.field("vector", pa.list_(pa.float32(), list_size=embed_dim))] if embed_dim else []
    return pa.schema(
        [
            pa.field("uuid", pa.string(), nullable=False, metadata=_NO_COMPRESSION),
            pa.field("text_content", pa.string(), metadata=text_meta),
            *vector,
            pa.field("title", pa.string(), nullable=False, metadata=_NO_COMPRESSION),
            pa.field("version", pa.string()),
            pa.field("context", pa.string()),
            pa.field("uri", pa.string()),
            pa.field("local_path", pa.string()),
            pa.field("cid", pa.string()),
            pa.field("collection", pa.string()),
            pa.field("collection_id", pa.string()),
            pa.field("collection_id_type", pa.string()),
            pa.field("position", pa.int32()),
            pa.field("author", pa.string()),
            pa.field("contributors", pa.list_(pa.string())),
            pa.field("created_at", pa.string()),
            pa.field("updated_at", pa.string()),
            pa.field("tags", pa.list_(pa.string())),
            pa.field("status", pa.string()),
            pa.field("source_file", pa.string()),
            pa.field("source_type", pa.string()),
            pa.field("source_url", pa.string()),
            pa.field("relationships", pa.list_(_RELATIONSHIP_STRUCT)),
            pa.field("custom_metadata", pa.list_(_METADATA_STRUCT)),
            pa.field("record_type", pa.string()),
            pa.field("raw_data_type", pa.string()),
            pa.field(
                "raw_data",
                pa.large_binary(),
                metadata={"lance-encoding:blob": "true"},
            ),
            pa.field("source_id", pa.string(), nullable=False, metadata=_NO_COMPRESSION),
            pa.field("content_hash", pa.string(), metadata=_NO_COMPRESSION),
            pa.field("source_updated_at", _TS),
            pa.field("ingested_at", _TS),
        ]
    )


def parse_timestamp(value: datetime | date | str | None) -> datetime | None:
    """Parse a datetime, date or ISO 8601 string into an aware UTC datetime (naive means UTC).

    Raises ``ValueError`` for a string that is not ISO 8601.
    """
    if value is None:
        return None
    if isinstance(value, str):
        if not value:
            return None
        value = datetime.fromisoformat(value)
    elif not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


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
    if all(type(v) is np.ndarray for v in rows):  # the embed stage's rows: no Python floats
        for d, v in zip(docs, rows, strict=True):
            if v.shape != (dim,):
                raise ValueError(f"vector of {d.source_id!r} has {v.size} values, expected {dim}")
        flat = np.ascontiguousarray(np.stack(rows), dtype=np.float32).reshape(-1)
        return pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), dim)
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


_STRING_COLUMNS = (
    "text_content",
    "title",
    "version",
    "context",
    "uri",
    "local_path",
    "cid",
    "collection",
    "collection_id",
    "collection_id_type",
    "author",
    "status",
    "source_file",
    "source_type",
    "source_url",
    "record_type",
    "raw_data_type",
    "source_id",
)
_GETTERS = {
    name: attrgetter(name)
    for name in (
        *_STRING_COLUMNS,
        "position",
        "raw_data",
        "contributors",
        "tags",
        "created_at",
        "updated_at",
        "source_updated_at",
        "relationships",
        "custom_metadata",
        "content_hash",
    )
}
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
    arrays["contributors"] = _string_lists(list(map(g["contributors"], docs)), "contributors")
    arrays["tags"] = _string_lists(list(map(g["tags"], docs)), "tags")
    arrays["created_at"] = _day_column(list(map(g["created_at"], docs)))
    updated = list(map(g["updated_at"], docs))
    arrays["updated_at"] = _day_column(updated)
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
