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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias

import numpy as np
import orjson
import pyarrow as pa
import xxhash

if TYPE_CHECKING:
    from cfstream.storage.codec import documents_to_table, frame_schema

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
    "RECORD_FIELDS",
    "RecordField",
    "documents_to_table",
    "escape_surrogates",
    "field_reader",
    "frame_schema",
    "record_fields",
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


# ----------------------------------------------------------------------------------------------
# The stored record, declared once
# ----------------------------------------------------------------------------------------------

FieldKind: TypeAlias = Literal[
    "text", "int32", "text_list", "day", "timestamp", "relationships", "metadata", "blob", "vector"
]


@dataclass(frozen=True, slots=True)
class RecordField:
    """One stored column of a record. :data:`RECORD_FIELDS` lists them all, once: the Arrow
    schema (``cfstream.storage.frame_schema``), the validation rules (``cfstream.checks``), the
    FrameRecord mapping (``cfstream.frame``) and the content hash are derived from it."""

    name: str
    #: how the value is stored (and checked): ``text`` a string, ``int32`` an integer,
    #: ``text_list`` a list of strings, ``day`` a date kept as ``YYYY-MM-DD``, ``timestamp`` a
    #: full UTC time, ``relationships``/``metadata`` ContextFrame's structs, ``blob`` bytes,
    #: ``vector`` a fixed-width float32 list
    kind: FieldKind
    #: a record without it cannot be stored
    required: bool = False
    #: computed by cfstream (never taken from a source as it is)
    derived: bool = False
    #: a plain key of ContextFrame's ``FrameRecord.metadata``
    metadata: bool = False
    #: Lance string compression: ``"never"`` (random or short text, measured not worth it),
    #: ``"option"`` (``frame_schema(compress_text=...)``), ``None`` Lance's default
    compression: Literal["never", "option"] | None = None
    #: its place in the content hash's payload (None: not hashed as a field); never renumber:
    #: every stored ``content_hash`` depends on it
    hash_at: int | None = None
    #: the only values allowed (a text field)
    choices: frozenset[str] | None = None


#: Every stored column in the dataset's column order (ContextFrame's FrameRecord, then cfstream's
#: ``source_id``, ``content_hash``, ``source_updated_at`` and ``ingested_at``). ``vector`` is
#: stored only when the dataset has embeddings (``frame_schema(embed_dim)``).
RECORD_FIELDS: Final[tuple[RecordField, ...]] = (
    RecordField("uuid", "text", required=True, derived=True, compression="never"),
    RecordField("text_content", "text", compression="option", hash_at=3),
    RecordField("vector", "vector", hash_at=26),
    RecordField("title", "text", required=True, metadata=True, compression="never", hash_at=2),
    RecordField("version", "text", metadata=True, hash_at=22),
    RecordField("context", "text", metadata=True, hash_at=21),
    RecordField("uri", "text", metadata=True, hash_at=18),
    RecordField("local_path", "text", metadata=True, hash_at=19),
    RecordField("cid", "text", metadata=True, hash_at=20),
    RecordField("collection", "text", metadata=True, hash_at=11),
    RecordField("collection_id", "text", metadata=True, hash_at=12),
    RecordField("collection_id_type", "text", metadata=True, hash_at=13),
    RecordField("position", "int32", metadata=True, hash_at=14),
    RecordField("author", "text", metadata=True, hash_at=5),
    RecordField("contributors", "text_list", metadata=True, hash_at=6),
    RecordField("created_at", "day", metadata=True, hash_at=8),
    RecordField("updated_at", "day", metadata=True, hash_at=9),
    RecordField("tags", "text_list", metadata=True, hash_at=7),
    RecordField("status", "text", metadata=True, hash_at=23),
    RecordField("source_file", "text", metadata=True, hash_at=24),
    RecordField("source_type", "text", metadata=True, hash_at=0),
    RecordField("source_url", "text", metadata=True, hash_at=4),
    RecordField("relationships", "relationships", hash_at=16),
    RecordField("custom_metadata", "metadata", hash_at=15),
    RecordField("record_type", "text", metadata=True, hash_at=17, choices=RECORD_TYPES),
    RecordField("raw_data_type", "text", hash_at=25),
    RecordField("raw_data", "blob"),
    RecordField("source_id", "text", required=True, metadata=True, compression="never", hash_at=1),
    RecordField("content_hash", "text", derived=True, compression="never"),
    RecordField("source_updated_at", "timestamp", metadata=True, hash_at=10),
    RecordField("ingested_at", "timestamp", derived=True),
)


def record_fields(
    *, kind: FieldKind | None = None, metadata: bool | None = None
) -> tuple[str, ...]:
    """The names of the :data:`RECORD_FIELDS` of ``kind`` (any when None) that are (or, with
    ``metadata=False``, are not) FrameRecord metadata keys, in column order."""
    return tuple(
        f.name
        for f in RECORD_FIELDS
        if (kind is None or f.kind == kind) and (metadata is None or f.metadata == metadata)
    )


def field_reader(
    names: Sequence[str], *, wrap: Mapping[str, str] | None = None
) -> Callable[[Any], tuple[Any, ...]]:
    """A function returning ``(obj.<name>, ...)`` for ``names``, compiled once (as dataclasses
    compile their methods): half the cost of ``operator.attrgetter(*names)``, for the per-document
    paths. ``wrap`` maps a name to an expression of ``{}`` (the value), e.g. ``"{} or None"``."""
    for name in names:
        if not name.isidentifier():
            raise ValueError(f"{name!r} is not a field name")
    parts = [(wrap or {}).get(n, "{}").format(f"obj.{n}") for n in names]
    namespace: dict[str, Any] = {}
    exec(f"def read(obj):\n    return ({', '.join(parts)},)\n", namespace)
    reader: Callable[[Any], tuple[Any, ...]] = namespace["read"]
    return reader


_HASH_OPTIONS: Final = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
_HASHED: Final = sorted(
    (f for f in RECORD_FIELDS if f.hash_at is not None), key=lambda f: f.hash_at or 0
)
assert [f.hash_at for f in _HASHED] == list(range(len(_HASHED))), "hash_at must run 0, 1, 2, ..."
#: the content hash's payload: empty relationships and metadata count as None, a vector as
#: whether there is one (its float32 bytes are hashed after the payload: no text formatting)
_HASH_PAYLOAD: Final = field_reader(
    [f.name for f in _HASHED],
    wrap={
        f.name: "{} or None" if f.kind != "vector" else "None if {0} is None else True"
        for f in _HASHED
        if f.kind in ("relationships", "metadata", "vector")
    },
)


def _vector_bytes(vector: Any) -> bytes:
    """What the content hash takes of a vector: its values as stored (float32), or, for values
    that are not numbers (the sink refuses them later), their text."""
    try:
        return np.asarray(vector, dtype=np.float32).tobytes()
    except (TypeError, ValueError):
        return repr(vector).encode("utf-8", "surrogatepass")


def _content_hash(d: Document) -> str:
    """XXH3-128 (32 hex digits) of every stored field but ``ingested_at``.

    A change detector, not a security measure: XXH3 hashes a 1 KB document ~10x faster than
    SHA-1, and 128 bits make a missed change (two contents with one hash) practically impossible.

    The payload is the fields with a ``hash_at`` in :data:`RECORD_FIELDS`, in that order; orjson
    serialises datetimes, dates, the Relationship dataclasses and metadata values natively;
    anything else falls back to ``str``. The vector's float32 bytes and ``raw_data`` follow the
    payload (the vector's byte length after it, so the two never run into each other).
    """
    payload = _HASH_PAYLOAD(d)
    try:
        encoded = orjson.dumps(payload, option=_HASH_OPTIONS, default=str)
    except TypeError:  # e.g. an integer past 64 bits in custom_metadata: hash its text instead
        encoded = repr(payload).encode("utf-8", "surrogatepass")
    vector, raw = d.vector, d.raw_data
    if raw is None and vector is None:
        return xxhash.xxh3_128_hexdigest(encoded)
    hasher = xxhash.xxh3_128(encoded)
    if vector is not None:
        values = _vector_bytes(vector)
        hasher.update(values)
        hasher.update(len(values).to_bytes(8, "little"))  # where the vector ends
    if raw is not None:
        hasher.update(raw)
    return hasher.hexdigest()


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


def __getattr__(name: str) -> Any:
    """``frame_schema`` and ``documents_to_table`` live in :mod:`cfstream.storage.codec` (the
    Lance layer); importing them from here keeps working."""
    if name in ("frame_schema", "documents_to_table"):
        from cfstream.storage import codec

        return getattr(codec, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
