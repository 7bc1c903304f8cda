"""The embedder record kept with a dataset: which embedder made its vectors.

It lives in the Lance schema, as metadata of the ``vector`` field (key :data:`RECORD_KEY`, a JSON
object). pylance 14 keeps field metadata through appends and merges, versions it with the data
(an old version shows the record of its time), and drops it with the column: a dataset never
holds vectors without the record of their embedder, whatever the storage (local or object
store). The record::

    {"name": "local:wordllama/l2_supercat_256", "dim": 256, "provider": "local",
     "model": "l2_supercat", "base_url": null, "id": "5f0c2a9e71b4", "created_at": "..."}

``id`` is new each time a dataset's vectors are reset for another embedder: the embed stage marks
every row it embeds with it (``custom_metadata["cfstream.embedding"] =
"<id>:<document hash>:<text hash>"``), so a
row embedded under an earlier record is never taken as embedded by the current one. It never holds
a key or any other secret.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Final

import orjson
import pyarrow as pa
import xxhash

from cfstream.secrets import redact_url

__all__ = (
    "RECORD_KEY",
    "ROW_KEY",
    "changed_embedder_message",
    "dataset_embedder",
    "embedder_record",
    "record_of_schema",
    "same_embedder",
    "vector_field",
)

#: the ``vector`` field's metadata key holding the record
RECORD_KEY: Final = "cfstream.embedder"
#: the ``custom_metadata`` key of an embedded row: ``"<record id>:<document hash>:<text hash>"``
ROW_KEY: Final = "cfstream.embedding"


def embedder_record(
    embedder: Any, *, dim: int | None = None, new_id: bool = True
) -> dict[str, Any]:
    """The record of ``embedder`` (its ``name``, ``dim``, and ``provider``/``model``/``base_url``
    when it has them). ``new_id`` gives it a fresh random ``id``; otherwise the id is derived from
    the name and width (for sinks that keep no record)."""
    name = str(embedder.name)
    width = int(dim if dim is not None else embedder.dim)
    rid = (
        uuid.uuid4().hex[:12]
        if new_id
        else xxhash.xxh3_64_hexdigest(f"{name}\0{width}".encode())[:12]
    )
    base_url = getattr(embedder, "base_url", None)
    return {
        "name": name,
        "dim": width,
        "provider": getattr(embedder, "provider", None) or "custom",
        "model": getattr(embedder, "model", None),
        # user info and secret-looking query parameters never reach the dataset
        "base_url": None if base_url is None else redact_url(str(base_url)),
        "id": rid,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def same_embedder(record: dict[str, Any], name: str, dim: int) -> bool:
    """True when ``record`` is that of the embedder ``name`` of width ``dim`` (0: any width)."""
    return record.get("name") == name and (not dim or record.get("dim") == dim)


def record_of_schema(schema: pa.Schema) -> dict[str, Any] | None:
    """The record in ``schema``'s ``vector`` field, or None (no vector column, or no record)."""
    if "vector" not in schema.names:
        return None
    meta = schema.field("vector").metadata or {}
    raw = meta.get(RECORD_KEY.encode())
    if raw is None:
        return None
    try:
        rec = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return rec if isinstance(rec, dict) and "name" in rec and "dim" in rec else None


def changed_embedder_message(where: str, have: dict[str, Any], name: str, dim: int) -> str:
    """Why a run stops when ``where`` holds vectors of ``have`` and the pipeline embeds with
    ``name`` (``dim`` wide), and what to do."""
    theirs = f"{have.get('name')!r} ({have.get('dim')} wide)"
    ours = f"{name!r}" + (f" ({dim} wide)" if dim else "")
    return (
        f"{where} holds vectors made by embedder {theirs}, but this pipeline embeds with {ours}; "
        "vectors of two embedders are never mixed in one column, so nothing was written. "
        "To replace every vector with the new embedder's, run once with `reembed: true` on the "
        "embed stage (T.embed(..., reembed=True)) and a full re-sync (`cfstream sync --full`); "
        "to keep the old vectors, embed with the old embedder again or write to another dataset"
    )


def vector_field(record: dict[str, Any]) -> pa.Field:
    """The ``vector`` field of a dataset holding ``record``'s vectors (float32, its width)."""
    return pa.field(
        "vector",
        pa.list_(pa.float32(), list_size=int(record["dim"])),
        metadata={RECORD_KEY: orjson.dumps(record).decode()},
    )


def dataset_embedder(
    uri: str, *, storage_options: dict[str, str] | None = None
) -> dict[str, Any] | None:
    """The record of the embedder that made the vectors of the dataset at ``uri`` (see the module
    docstring), or None: no dataset there, no vector column, or vectors cfstream did not make.

    Search embeds queries with the same embedder: ``embedder_from_record(dataset_embedder(uri))``.
    """
    import lance

    from cfstream.contract.uris import local_path

    path = local_path(uri)
    if path is not None and not (path / "_versions").exists():
        return None
    try:
        ds = lance.dataset(uri, storage_options=storage_options)
    except (OSError, ValueError):
        return None
    return record_of_schema(ds.schema)
