"""The ``vector`` column every dataset has, so that ContextFrame's own readers can read it.

ContextFrame 0.1.1's ``FrameDataset`` builds each record it returns with ``tbl["vector"][0]``:
a dataset without a ``vector`` column fails every read with ``KeyError: 'vector'``, and a null
vector fails too (``len()`` of a 0-d array). A column of null 1536-wide vectors made every
``merge_insert`` about 5x slower (see :func:`cfstream.records.frame_schema`), so a dataset synced
without embeddings gets a **placeholder**: a 1-wide ``vector`` of zeros. Measured on pylance 14
(100k rows of 1 KB text, a 10k-row upsert, best of 3): 0.19-0.20 s without a vector column,
0.13-0.40 s with the placeholder (the same, within this machine's noise), 2.4 s with null
1536-wide vectors; +1 MB of disk per 100k rows. When embeddings are turned on later
(``embed_dim``), :func:`ensure_vector_column` replaces the placeholder with a zero column of the
embedder's width, which the embedded rows then overwrite; rows without a vector (a chunked
parent, say) are stored with zeros, which vector search never returns (a zero vector has no
direction: its cosine distance is NaN and Lance leaves it out).
"""

from __future__ import annotations

from typing import Any, Final

import lance
import numpy as np
import pyarrow as pa

from cfstream.logs import get_logger
from cfstream.records import PLACEHOLDER_VECTOR_DIM

__all__ = (
    "PLACEHOLDER_VECTOR_DIM",
    "ensure_vector_column",
    "is_placeholder",
    "replace_vector_column",
    "vector_dim",
)

log = get_logger("cfstream.sinks.vectors")

_VECTOR: Final = "vector"


def vector_dim(schema: pa.Schema) -> int | None:
    """The width of the schema's ``vector`` column (None: there is none)."""
    if _VECTOR not in schema.names:
        return None
    return int(getattr(schema.field(_VECTOR).type, "list_size", 0) or 0) or None


def is_placeholder(schema: pa.Schema) -> bool:
    """True when the ``vector`` column is the 1-wide placeholder of a dataset without embeddings."""
    return vector_dim(schema) == PLACEHOLDER_VECTOR_DIM


def _zeros(dim: int, vfield: pa.Field | None = None) -> Any:
    vfield = vfield or pa.field(_VECTOR, pa.list_(pa.float32(), list_size=dim))
    schema = pa.schema([vfield])

    @lance.batch_udf(output_schema=schema)  # type: ignore[untyped-decorator]
    def zeros(batch: pa.RecordBatch) -> pa.RecordBatch:
        flat = pa.array(np.zeros(batch.num_rows * dim, dtype=np.float32))
        return pa.record_batch([pa.FixedSizeListArray.from_arrays(flat, dim)], schema=schema)

    return zeros


def replace_vector_column(ds: lance.LanceDataset, vfield: pa.Field) -> None:
    """Give ``ds`` the ``vector`` column ``vfield`` (a fixed-size list of float32, with its field
    metadata), every row zeros: the old column, if any, is dropped first (two commits then)."""
    if _VECTOR in ds.schema.names:
        ds.drop_columns([_VECTOR])
    ds.add_columns(_zeros(int(vfield.type.list_size), vfield), read_columns=["uuid"])


def ensure_vector_column(ds: lance.LanceDataset, embed_dim: int | None) -> bool:
    """Give ``ds`` the ``vector`` column a sink of ``embed_dim`` needs; True when it changed.

    - no ``vector`` column: add zeros, ``embed_dim`` wide (the placeholder when None) - a
      dataset written before the placeholder existed;
    - the placeholder and an ``embed_dim``: replace it with zeros ``embed_dim`` wide;
    - otherwise (a real vector column, whatever ``embed_dim`` says) nothing.

    Writes one new column file per fragment (``embed_dim`` x 4 bytes a row) and commits; raises
    what Lance raises (an ``OSError`` on a conflict with another writer).
    """
    have = vector_dim(ds.schema)
    want = embed_dim or PLACEHOLDER_VECTOR_DIM
    if have is not None and (have != PLACEHOLDER_VECTOR_DIM or want == PLACEHOLDER_VECTOR_DIM):
        return False
    if have is not None:
        ds.drop_columns([_VECTOR])
    ds.add_columns(_zeros(want), read_columns=["uuid"])
    log.info("%s: vector column is now %d wide (zeros until rows carry vectors)", ds.uri, want)
    return True
