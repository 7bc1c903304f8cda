"""Search a synced dataset: full text (BM25), vectors, or both fused (hybrid).

::

    import cfstream as cf

    for hit in cf.search("kb.lance", "how do I rotate the API key", k=5):
        print(f"{hit.score:.3f}  {hit.title}  {hit.source_url}")

- ``mode="fts"``: Lance's BM25 full-text search over ``text_content`` and ``title``, and rows
  written after the last index refresh too. Without the sink's INVERTED indexes it still runs (a
  flat scan) but only exact, case-sensitive words match: the results then carry a note.
- ``mode="vector"``: the query is embedded with the dataset's embedder (or ``embedder=``) and the
  nearest ``vector`` rows are returned (exact flat search below the sink's index threshold, the
  vector index above it). A dataset without a ``vector`` column is an error that says what to do.
- ``mode="hybrid"`` (the default): reciprocal rank fusion of both lists (``1 / (60 + rank)``
  summed per document). A dataset that cannot do vector search (no ``vector`` column, no
  embedder) falls back to full text, with a note (:attr:`SearchResults.notes`, also logged).

Hits are one per document: a chunk row (``custom_metadata["cfstream.chunk_of"]``) stands for
its parent, and a document's best-ranked row is kept; the hit then shows the matching chunk's
text. ``where`` is a Lance SQL filter applied before ranking (``"source_type = 'github'"``).
"""

from __future__ import annotations

import asyncio
import inspect
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol, runtime_checkable

import lance
import numpy as np

from cfstream.contract.uris import local_path
from cfstream.errors import SearchError
from cfstream.logs import get_logger
from cfstream.records import PLACEHOLDER_VECTOR_DIM, record_uuid
from cfstream.sinks.indexes import FTS_COLUMNS, unindexed_fts_columns
from cfstream.sinks.vectors import vector_dim
from cfstream.transforms.chunking import CHUNK_OF

__all__ = (
    "CHUNK_OF_KEY",
    "RRF_K",
    "QueryEmbedder",
    "SearchHit",
    "SearchMode",
    "SearchResults",
    "dataset_query_embedder",
    "run_search",
    "search",
)

log = get_logger("cfstream.search")

SearchMode = Literal["hybrid", "fts", "vector"]
#: the custom_metadata key naming a chunk row's parent document (its uuid)
CHUNK_OF_KEY: Final = CHUNK_OF  # the chunk stage marks its rows with it
#: the constant of reciprocal rank fusion: a document's hybrid score is the sum of 1/(RRF_K + rank)
RRF_K: Final = 60
_MODES: Final = ("hybrid", "fts", "vector")
_COLUMNS: Final = (
    "uuid",
    "title",
    "source_type",
    "source_id",
    "source_url",
    "text_content",
    "custom_metadata",
)
#: an approximate (indexed) vector search re-ranks this many times ``k`` rows by exact distance
_REFINE: Final = 5
#: the most candidate rows one ranked list fetches while looking for ``k`` documents
_MAX_CANDIDATES: Final = 100_000


@runtime_checkable
class QueryEmbedder(Protocol):
    """What search needs of an embedder (``cfstream.embed``'s ``Embedder`` protocol)."""

    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> Any:
        """Return (or, async, resolve to) a float array of shape ``(len(texts), dim)``."""


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One document found by :func:`search`.

    ``uuid``, ``title``, ``source_type``, ``source_id``, ``source_url`` and ``text`` are those of
    the matching row (a chunk, or the document itself); ``parent_uuid`` is the document's uuid
    (the row's own when it is not a chunk). ``score``: higher is better (BM25 for ``fts``, cosine
    similarity or negated distance for ``vector``, the fused reciprocal-rank score for
    ``hybrid``).
    """

    uuid: str
    title: str
    source_type: str | None
    source_id: str
    source_url: str | None
    score: float
    text: str | None
    parent_uuid: str


@dataclass(slots=True)
class SearchResults:
    """What :func:`run_search` found: the hits, the mode actually used and notes for people."""

    hits: list[SearchHit]
    mode: SearchMode
    notes: list[str] = field(default_factory=list)


def search(
    dataset_uri: str,
    query: str,
    k: int = 10,
    mode: SearchMode = "hybrid",
    where: str | None = None,
    embedder: QueryEmbedder | None = None,
) -> list[SearchHit]:
    """Return the ``k`` best documents of the dataset at ``dataset_uri`` for ``query``.

    See the module docstring for the modes. ``embedder`` embeds the query (default: the
    embedder the dataset records). Raises :class:`~cfstream.errors.SearchError` for a missing
    dataset, an invalid ``where``, or a vector search the dataset cannot do.
    """
    return run_search(dataset_uri, query, k=k, mode=mode, where=where, embedder=embedder).hits


def run_search(
    dataset_uri: str,
    query: str,
    *,
    k: int = 10,
    mode: SearchMode = "hybrid",
    where: str | None = None,
    embedder: QueryEmbedder | None = None,
    source: tuple[str, str | None] | None = None,
    storage_options: dict[str, str] | None = None,
) -> SearchResults:
    """:func:`search`, with the notes (a fallback to full text) and two more options.

    ``source=(source_type, source_name)`` keeps only the rows that source wrote (told apart by
    their uuids, see :func:`~cfstream.records.record_uuid`); ``storage_options`` go to Lance.
    """
    if mode not in _MODES:
        raise SearchError(f"mode must be one of {', '.join(_MODES)}, not {mode!r}")
    if not isinstance(k, int) or k < 1:
        raise SearchError(f"k must be a positive number of hits, not {k!r}")
    if not query or not query.strip():
        raise SearchError("the query is empty: give some words to search for")
    ds = _open(dataset_uri, storage_options)
    filters = [f"({where})"] if where else []
    accept: Callable[[Mapping[str, Any]], bool] | None = None
    if source is not None:
        source_type, source_name = source
        filters.append(f"source_type = {_sql_text(source_type)}")

        def accept(row: Mapping[str, Any]) -> bool:
            sid = row.get("source_id")
            return isinstance(sid, str) and row.get("uuid") == record_uuid(
                source_type, sid, source_name=source_name
            )

    search_filter = " AND ".join(filters) or None
    notes: list[str] = []
    qvec: np.ndarray[Any, np.dtype[np.float32]] | None = None
    used: SearchMode = mode
    if mode in ("vector", "hybrid"):
        try:
            qvec = _query_vector(ds, dataset_uri, query, embedder)
        except SearchError as exc:
            if mode == "vector":
                raise
            used = "fts"
            notes.append(f"full-text search only: {exc}")
            log.info("search on %s: full-text search only: %s", dataset_uri, exc)
        if qvec is not None and not qvec.any():
            # no word the embedder knows: the query has no direction, nothing is near it
            qvec = None
            notes.append("the embedder found nothing to embed in the query: no vector hits")
            if mode == "vector":
                return SearchResults(hits=[], mode="vector", notes=notes)
            used = "fts"
    if used in ("fts", "hybrid"):
        bare = unindexed_fts_columns(ds)
        if bare:
            notes.append(
                f"no full-text index on {', '.join(bare)} yet: words there match exactly "
                "(case-sensitive, no stemming) until a sync with `index: {fts: true}` builds it"
            )
    try:
        if used == "fts":
            hits = _ranked_fts(ds, query, k, search_filter, accept)
        elif used == "vector":
            assert qvec is not None
            hits = _ranked_vector(ds, qvec, k, search_filter, accept)
        else:
            assert qvec is not None
            hits = _hybrid(ds, query, qvec, k, search_filter, accept)
    except (OSError, ValueError, RuntimeError) as exc:
        raise _lance_error(exc, dataset_uri, where) from exc
    return SearchResults(hits=hits[:k], mode=used, notes=notes)


# ------------------------------------------------------------------------------------------------
# the dataset and the query vector
# ------------------------------------------------------------------------------------------------
def _open(uri: str, storage_options: dict[str, str] | None) -> lance.LanceDataset:
    path = local_path(uri)
    if path is not None and not (path / "_versions").exists():
        raise SearchError(
            f"{uri} is not a dataset yet: run `cfstream sync` first (or check the path)"
        )
    try:
        return lance.dataset(uri, storage_options=storage_options)
    except (OSError, ValueError) as exc:
        raise SearchError(f"cannot open {uri} as a Lance dataset: {exc}") from exc


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _lance_error(exc: BaseException, uri: str, where: str | None) -> SearchError:
    text = str(exc).split(", /home/")[0]  # Lance appends the Rust source path
    if where:
        return SearchError(
            f"searching {uri} failed: {text}. Check the filter {where!r}: it must be a Lance SQL "
            "expression over the dataset's columns"
        )
    return SearchError(f"searching {uri} failed: {text}")


def dataset_query_embedder(uri: str) -> QueryEmbedder:
    """The embedder recorded with the dataset at ``uri`` (``cfstream.embed.dataset_embedder``),
    rebuilt to embed queries. Raises :class:`~cfstream.errors.SearchError` saying to pass
    ``embedder=`` when there is none (or the ``cfstream.embed`` package is missing)."""
    from cfstream.embed import dataset_embedder, embedder_from_record

    try:
        info = dataset_embedder(uri)
    except Exception as exc:  # a broken record of the embedder: say so, do not crash
        raise SearchError(f"cannot read the embedder recorded with {uri}: {exc}") from exc
    if not info:
        raise SearchError(
            f"{uri} records no embedder (sync it with an embed stage, or pass embedder=)"
        )
    try:
        return embedder_from_record(info)
    except Exception as exc:  # e.g. a provider that needs an API key: the caller must pass one
        raise SearchError(
            f"cannot rebuild the embedder recorded with {uri} ({info.get('name')}): {exc}; "
            "pass embedder= (or search through a config whose embed stage has the key)"
        ) from exc


def _run_coroutine(awaitable: Any) -> Any:
    async def wait() -> Any:
        return await awaitable

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(wait())
    # called from inside an event loop: run the embedder on a loop of its own in a thread
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(wait())
        except BaseException as exc:  # handed back to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="cfstream-query-embed")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _query_vector(
    ds: lance.LanceDataset, uri: str, query: str, embedder: QueryEmbedder | None
) -> np.ndarray[Any, np.dtype[np.float32]]:
    dim = vector_dim(ds.schema)
    if dim is None or dim == PLACEHOLDER_VECTOR_DIM:
        raise SearchError(
            f"{uri} has no vectors (it was synced without embeddings): add an embed stage to the "
            "pipeline and sync again, or search with mode 'fts'"
        )
    if embedder is None:
        embedder = dataset_query_embedder(uri)
    try:
        out = embedder.embed([query])
        if inspect.isawaitable(out):
            out = _run_coroutine(out)
        vec = np.asarray(out, dtype=np.float32).reshape(-1)
    except SearchError:
        raise
    except Exception as exc:  # the embedder's own failure (HTTP, model): one clear line
        raise SearchError(f"embedding the query with {embedder.name} failed: {exc}") from exc
    if vec.shape[0] != dim:
        raise SearchError(
            f"the embedder {embedder.name} makes {vec.shape[0]}-wide vectors but {uri} stores "
            f"{dim}-wide ones: search with the embedder the dataset was synced with"
        )
    if not np.isfinite(vec).all():
        raise SearchError(f"the embedder {embedder.name} gave a vector with NaN or infinity")
    return vec


# ------------------------------------------------------------------------------------------------
# ranked lists, one row per document
# ------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Doc:
    parent: str
    rank: int
    score: float
    row: dict[str, Any]
    is_chunk: bool


def _chunk_of(row: Mapping[str, Any]) -> str | None:
    for entry in row.get("custom_metadata") or ():
        if entry and entry.get("key") == CHUNK_OF_KEY and entry.get("value"):
            return str(entry["value"])
    return None


def _documents(
    rows: list[dict[str, Any]],
    scores: Sequence[float],
    accept: Callable[[Mapping[str, Any]], bool] | None,
) -> list[_Doc]:
    """Rows (best first) grouped by document, in the order of each document's best row; a
    document whose best row is itself but which has a chunk further down shows that chunk."""
    docs: dict[str, _Doc] = {}
    for rank, (row, score) in enumerate(zip(rows, scores, strict=True)):
        if accept is not None and not accept(row):
            continue
        parent = _chunk_of(row)
        is_chunk = parent is not None
        key = parent or str(row["uuid"])
        doc = docs.get(key)
        if doc is None:
            docs[key] = _Doc(key, rank, score, row, is_chunk)
        elif is_chunk and not doc.is_chunk:
            doc.row, doc.is_chunk = row, True  # the matching chunk's text, not the whole document
    return list(docs.values())


def _collect(
    fetch: Callable[[int], tuple[list[dict[str, Any]], list[float]]],
    k: int,
    accept: Callable[[Mapping[str, Any]], bool] | None,
) -> list[_Doc]:
    """Fetch more candidate rows until they hold ``k`` documents or there are no more."""
    limit = max(4 * k, 20)
    while True:
        rows, scores = fetch(limit)
        docs = _documents(rows, scores, accept)
        if len(docs) >= k or len(rows) < limit or limit >= _MAX_CANDIDATES:
            return docs
        limit = min(_MAX_CANDIDATES, limit * 4)


def _fts_fetch(
    ds: lance.LanceDataset, query: str, where: str | None
) -> Callable[[int], tuple[list[dict[str, Any]], list[float]]]:
    columns = [c for c in FTS_COLUMNS if c in ds.schema.names]

    def fetch(limit: int) -> tuple[list[dict[str, Any]], list[float]]:
        table = ds.to_table(
            columns=[*(c for c in _COLUMNS if c in ds.schema.names), "_score"],
            full_text_query={"query": query, "columns": columns},
            filter=where,
            prefilter=True if where else None,
            limit=limit,
        )
        return table.to_pylist(), [float(s) for s in table.column("_score").to_pylist()]

    return fetch


def _vector_metric(ds: lance.LanceDataset) -> str:
    """The metric of the vector index (searching with another one would skip it), else cosine."""
    for idx in ds.describe_indices():
        if list(idx.field_names or []) == ["vector"]:
            try:
                stats = ds.stats.index_stats(idx.name)
                metric = str(stats["indices"][0]["metric_type"]).lower()
            except (KeyError, IndexError, OSError, ValueError):
                break
            return "dot" if metric in ("dot", "inner_product") else metric
    return "cosine"


def _vector_fetch(
    ds: lance.LanceDataset, qvec: np.ndarray[Any, np.dtype[np.float32]], where: str | None
) -> Callable[[int], tuple[list[dict[str, Any]], list[float]]]:
    metric = _vector_metric(ds)

    def fetch(limit: int) -> tuple[list[dict[str, Any]], list[float]]:
        table = ds.to_table(
            columns=[*(c for c in _COLUMNS if c in ds.schema.names), "_distance"],
            nearest={
                "column": "vector",
                "q": qvec,
                "k": limit,
                "metric": metric,
                "refine_factor": _REFINE,
            },
            filter=where,
            prefilter=True if where else None,
        )
        rows = table.to_pylist()
        scores: list[float] = []
        kept: list[dict[str, Any]] = []
        for row, dist in zip(rows, table.column("_distance").to_pylist(), strict=True):
            if dist is None or math.isnan(dist):  # a zero vector: no direction, no match
                continue
            kept.append(row)
            scores.append(1.0 - float(dist) if metric == "cosine" else -float(dist))
        return kept, scores

    return fetch


def _hit(doc: _Doc, score: float) -> SearchHit:
    row = doc.row
    return SearchHit(
        uuid=str(row["uuid"]),
        title=str(row.get("title") or ""),
        source_type=row.get("source_type"),
        source_id=str(row.get("source_id") or ""),
        source_url=row.get("source_url"),
        score=score,
        text=row.get("text_content"),
        parent_uuid=doc.parent,
    )


def _ranked_fts(
    ds: lance.LanceDataset,
    query: str,
    k: int,
    where: str | None,
    accept: Callable[[Mapping[str, Any]], bool] | None,
) -> list[SearchHit]:
    return [_hit(d, d.score) for d in _collect(_fts_fetch(ds, query, where), k, accept)]


def _ranked_vector(
    ds: lance.LanceDataset,
    qvec: np.ndarray[Any, np.dtype[np.float32]],
    k: int,
    where: str | None,
    accept: Callable[[Mapping[str, Any]], bool] | None,
) -> list[SearchHit]:
    return [_hit(d, d.score) for d in _collect(_vector_fetch(ds, qvec, where), k, accept)]


def _hybrid(
    ds: lance.LanceDataset,
    query: str,
    qvec: np.ndarray[Any, np.dtype[np.float32]],
    k: int,
    where: str | None,
    accept: Callable[[Mapping[str, Any]], bool] | None,
) -> list[SearchHit]:
    """Reciprocal rank fusion of the full-text and the vector lists (one entry per document)."""
    lists = [
        _collect(_fts_fetch(ds, query, where), k, accept),
        _collect(_vector_fetch(ds, qvec, where), k, accept),
    ]
    fused: dict[str, float] = {}
    best: dict[str, tuple[int, _Doc]] = {}
    for docs in lists:
        for position, doc in enumerate(docs):
            fused[doc.parent] = fused.get(doc.parent, 0.0) + 1.0 / (RRF_K + position + 1)
            seen = best.get(doc.parent)
            if seen is None or position < seen[0] or (doc.is_chunk and not seen[1].is_chunk):
                best[doc.parent] = (position, doc)
    order = sorted(fused, key=lambda p: (-fused[p], best[p][0]))
    return [_hit(best[p][1], fused[p]) for p in order[:k]]
