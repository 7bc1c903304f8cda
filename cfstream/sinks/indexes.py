"""The search indexes a :class:`~cfstream.sinks.LanceSink` keeps: full text and vectors.

- **Full text**: a Lance ``INVERTED`` index on ``text_content`` and one on ``title`` (BM25,
  lower-casing, English stemming and stop words: Lance's defaults). Search works without it, but
  Lance's flat scan of an unindexed column matches exact, case-sensitive words only (measured on
  pylance 14); rows written after the index are searched with the index's tokenizer.
- **Vectors**: an ``IVF_HNSW_SQ`` index (or ``IVF_PQ``) on ``vector``, ``sqrt(rows)``
  partitions, once the column holds ``vector_min_rows`` real (not all-zero) vectors
  (``vector: auto``), as soon as it holds enough to train one (``vector: true``: 256), or never
  (``vector: false``). Below the threshold Lance's exact flat search is fast enough and exact.
  Measured on pylance 14, 256-d, 2 busy cores: flat search takes ~10 ms at 5k rows, ~75 ms at
  20k, ~200 ms at 50k; at 20k rows IVF_HNSW_SQ builds in ~7 s and answers in ~4-7 ms with
  recall@10 0.99-1.00, while IVF_PQ took ~24 s with recall@10 0.27 (0.78 re-ranked).

Upkeep never blocks the stream: after a commit the sink calls :meth:`IndexKeeper.after_commit`,
which at most every ``refresh_seconds`` starts one refresh in a background thread (never two at
once) and returns at once. A refresh creates the missing indexes and folds the rows written since
the last one into the existing ones (``optimize_indices``: no retraining) as a new segment, then
merges the newest segments while they are small (``merge_rows``). Rows not yet indexed
are still found: Lance searches the unindexed fragments by a flat scan. At the end of a run
:meth:`IndexKeeper.finish` waits for a running refresh and makes a last one, so a finished sync
leaves its dataset fully indexed. A refresh that loses to a concurrent commit is logged and
retried at the next one.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

import lance

from cfstream.logs import get_logger
from cfstream.records import PLACEHOLDER_VECTOR_DIM
from cfstream.storage.maintenance import column_index_names

__all__ = (
    "FTS_COLUMNS",
    "VECTOR_MIN_TRAIN_ROWS",
    "IndexKeeper",
    "IndexSettings",
    "column_index_names",
    "index_settings",
    "meant_for_search",
    "refresh_indexes",
    "unindexed_fts_columns",
)

log = get_logger("cfstream.sinks.indexes")

#: the columns the full-text index covers (one INVERTED index each)
FTS_COLUMNS: Final = ("text_content", "title")
#: the Lance filter of rows holding a vector that is not all zeros
_NONZERO: Final = "array_max(vector) > 0 OR array_min(vector) < 0"
#: the fewest vectors a vector index is trained on (``vector: true`` waits for them)
VECTOR_MIN_TRAIN_ROWS: Final = 256


@dataclass(frozen=True, slots=True)
class IndexSettings:
    """Which search indexes the sink keeps (``LanceSink(index=...)``; YAML ``sink: index:``).

    Attributes:
        fts: keep INVERTED (BM25) indexes on ``text_content`` and ``title``: ``True``, ``False``,
            or ``"auto"`` (the default): when the dataset is meant for search - a pipeline that
            chunks or embeds writes into it, it holds vectors, or it already has the index. An
            index costs a bulk import about 3x its time and memory that grows with its rows (see
            docs/search.md), so plain syncs do not pay for it unless asked to.
        vector: ``"auto"`` (index once ``vector_min_rows`` vectors are stored), ``True`` (as soon
            as :data:`VECTOR_MIN_TRAIN_ROWS` are), ``False`` (never: exact flat search).
        vector_min_rows: the threshold of ``"auto"``.
        vector_index_type: ``"IVF_HNSW_SQ"`` (better recall, measured) or ``"IVF_PQ"`` (smaller).
        metric: the vector index's distance (``"cosine"``, ``"l2"`` or ``"dot"``).
        refresh_seconds: the shortest time between two refreshes during a run.
        merge_rows: each refresh indexes the new rows as a new segment; the newest segments are
            merged into one while they hold at most this many rows together (bounds a merge's
            memory, keeps few segments for incremental syncs).
    """

    fts: bool | Literal["auto"] = "auto"
    vector: bool | Literal["auto"] = "auto"
    vector_min_rows: int = 20_000
    vector_index_type: Literal["IVF_PQ", "IVF_HNSW_SQ"] = "IVF_HNSW_SQ"
    metric: Literal["cosine", "l2", "dot"] = "cosine"
    refresh_seconds: float = 30.0
    merge_rows: int = 50_000

    def __post_init__(self) -> None:
        if self.fts not in (True, False, "auto"):
            raise ValueError(f"index fts must be true, false or 'auto', not {self.fts!r}")
        if self.vector not in (True, False, "auto"):
            raise ValueError(f"index vector must be true, false or 'auto', not {self.vector!r}")
        if self.vector_min_rows < 1:
            raise ValueError("index vector_min_rows must be at least 1")
        if self.vector_index_type not in ("IVF_PQ", "IVF_HNSW_SQ"):
            raise ValueError(
                f"index vector_index_type must be IVF_PQ or IVF_HNSW_SQ, not {self.vector_index_type!r}"
            )
        if self.metric not in ("cosine", "l2", "dot"):
            raise ValueError(f"index metric must be cosine, l2 or dot, not {self.metric!r}")
        if self.refresh_seconds < 0:
            raise ValueError("index refresh_seconds must be 0 or more")
        if self.merge_rows < 0:
            raise ValueError("index merge_rows must be 0 or more")

    @property
    def enabled(self) -> bool:
        """True when some index is to be kept."""
        return self.fts is not False or self.vector is not False

    def vector_rows_needed(self) -> int | None:
        """The vectors needed before the vector index is built (None: never built)."""
        if self.vector is False:
            return None
        if self.vector is True:
            return VECTOR_MIN_TRAIN_ROWS
        return max(VECTOR_MIN_TRAIN_ROWS, self.vector_min_rows)


def index_settings(value: IndexSettings | Mapping[str, Any] | bool | None) -> IndexSettings:
    """``LanceSink(index=...)`` as settings: None or True (the defaults), False (no index at all),
    a mapping of :class:`IndexSettings` fields, or settings."""
    if value is None or value is True:
        return IndexSettings()
    if value is False:
        return IndexSettings(fts=False, vector=False)
    if isinstance(value, IndexSettings):
        return value
    if isinstance(value, Mapping):
        known = set(IndexSettings.__dataclass_fields__)
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown index option(s) {unknown}; known: {sorted(known)}")
        return replace(IndexSettings(), **dict(value))
    raise TypeError(f"index must be a mapping, a bool or IndexSettings, not {type(value).__name__}")


def _sub_vectors(dim: int) -> int:
    """PQ sub-vectors: 16 dimensions each where the width allows, else 8, 4, 2 or 1."""
    for width in (16, 8, 4, 2):
        if dim % width == 0 and dim // width >= 1:
            return dim // width
    return dim


def _indexed_columns(ds: lance.LanceDataset) -> dict[str, dict[str, str]]:
    """column -> {index name: index type in upper case} of the dataset's single-column indexes
    (a column may have several: a user's BTREE next to the sink's INVERTED)."""
    out: dict[str, dict[str, str]] = {}
    for idx in ds.describe_indices():
        names = list(idx.field_names or [])
        if len(names) == 1:
            kind = str(getattr(idx, "index_type", "") or "").upper()
            out.setdefault(names[0], {})[str(idx.name)] = kind
    return out


def _has(have: dict[str, dict[str, str]], column: str, kind: str) -> bool:
    return any(kind in k for k in have.get(column, {}).values())


def meant_for_search(ds: lance.LanceDataset) -> bool:
    """True when ``ds`` holds real vectors (wider than the placeholder) or search indexes (an
    INVERTED index on a full-text column, or a vector index): its ``"auto"`` indexes are kept."""
    if "vector" in ds.schema.names:
        dim = int(getattr(ds.schema.field("vector").type, "list_size", 0) or 0)
        if dim > PLACEHOLDER_VECTOR_DIM:
            return True
    have = _indexed_columns(ds)
    return any(_has(have, c, "INVERTED") for c in FTS_COLUMNS) or _has(have, "vector", "IVF")


def unindexed_fts_columns(ds: lance.LanceDataset) -> list[str]:
    """The full-text columns (:data:`FTS_COLUMNS`) of ``ds`` that have no INVERTED index.

    Lance still searches them, by a flat scan, but measured on pylance 14 that scan neither
    lower-cases, stems nor drops stop words: only exact, case-sensitive words match.
    """
    have = _indexed_columns(ds)
    return [c for c in FTS_COLUMNS if c in ds.schema.names and not _has(have, c, "INVERTED")]


@dataclass(slots=True)
class RefreshResult:
    """What one refresh did."""

    created: list[str] = field(default_factory=list)
    optimized: bool = False
    #: indexes whose newest (small) segments were merged into one
    merged: list[str] = field(default_factory=list)


def refresh_indexes(
    ds: lance.LanceDataset, settings: IndexSettings, *, search_wanted: bool = False
) -> RefreshResult:
    """Create the missing indexes ``settings`` asks for and fold new rows into the existing ones
    (``search_wanted``: this run chunks or embeds, which turns ``fts="auto"`` on).

    Synchronous; commits to ``ds``'s dataset (one version per index created, one for the
    optimize). Raises what Lance raises (an ``OSError`` on a commit conflict).
    """
    done = RefreshResult()
    have = _indexed_columns(ds)
    names = ds.schema.names
    # the search indexes that already exist: new rows are folded into these (the sink keeps
    # its own uuid index itself)
    ours = [
        name
        for col, found in have.items()
        for name, kind in found.items()
        if (col in FTS_COLUMNS and "INVERTED" in kind) or (col == "vector" and "IVF" in kind)
    ]
    fts = settings.fts
    if fts == "auto":
        fts = (
            search_wanted
            or any(_has(have, c, "INVERTED") for c in FTS_COLUMNS)
            or (
                "vector" in names
                and int(getattr(ds.schema.field("vector").type, "list_size", 0) or 0)
                > PLACEHOLDER_VECTOR_DIM
            )
        )
    if fts:
        for column in FTS_COLUMNS:
            if column in names and not _has(have, column, "INVERTED"):
                ds.create_scalar_index(column, index_type="INVERTED", name=f"{column}_fts")
                done.created.append(f"{column}_fts")
    needed = settings.vector_rows_needed()
    if needed is not None and "vector" in names and not _has(have, "vector", "IVF"):
        field_type = ds.schema.field("vector").type
        dim = int(getattr(field_type, "list_size", 0) or 0)
        # the 1-wide placeholder of a dataset without embeddings holds nothing to index
        if dim > PLACEHOLDER_VECTOR_DIM and ds.count_rows() >= needed:
            # real vectors only: rows without one are stored as zeros, which train nothing
            vectors = ds.count_rows(filter=_NONZERO)
            if vectors >= needed:
                params: dict[str, Any] = {
                    "num_partitions": max(1, min(4096, round(math.sqrt(vectors)))),
                }
                if settings.vector_index_type == "IVF_PQ":
                    params["num_sub_vectors"] = _sub_vectors(dim)
                ds.create_index(
                    "vector",
                    index_type=settings.vector_index_type,
                    name="vector_idx",
                    metric=settings.metric,
                    **params,
                )
                done.created.append("vector_idx")
    if ours:
        # the rows written since the last refresh become a new segment of each index: time and
        # memory in proportion to those rows (Lance's default, merging them into the newest
        # segment, costs in proportion to the whole index after a first load)
        ds.optimize.optimize_indices(index_names=ours, num_indices_to_merge=0)
        done.optimized = True
        for name in ours:
            newest = _small_newest_segments(ds, name, settings.merge_rows)
            if newest >= 2:
                # small segments (incremental syncs) are merged: queries stay fast, and Lance
                # compacts only fragments that one segment covers
                ds.optimize.optimize_indices(index_names=[name], num_indices_to_merge=newest)
                done.merged.append(name)
    return done


def _small_newest_segments(ds: lance.LanceDataset, name: str, limit: int) -> int:
    """How many of index ``name``'s newest segments hold at most ``limit`` rows together."""
    sizes = ds.stats.index_stats(name).get("num_indexed_rows_per_delta") or []
    count = total = 0
    for rows in reversed(sizes):  # Lance lists them oldest first
        total += int(rows)
        if total > limit:
            break
        count += 1
    return count


class IndexKeeper:
    """Keeps one dataset's search indexes up to date in the background; see the module docstring.

    Thread-safe: the sink's writer thread calls :meth:`after_commit`, the end of the run
    :meth:`finish`. At most one refresh runs at a time.
    """

    def __init__(
        self,
        uri: str,
        settings: IndexSettings,
        *,
        storage_options: dict[str, str] | None = None,
    ) -> None:
        self.uri = uri
        self.settings = settings
        self.storage_options = storage_options
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._last_start = -math.inf
        self._dirty = False
        #: refreshes made, indexes created (names), refreshes that failed (for reports and tests)
        self.refreshes = 0
        self.created: list[str] = []
        self.failures = 0
        #: set by :meth:`want_search`: the run makes the dataset searchable (``fts="auto"``)
        self.search_wanted = False

    def want_search(self) -> None:
        """Note that the dataset is meant for search (the run chunks or embeds, or the dataset
        holds vectors or search indexes): ``"auto"`` settings keep its indexes."""
        self.search_wanted = True

    @property
    def active(self) -> bool:
        """True when refreshes are due after commits: an index asked for outright, or ``"auto"``
        settings on a dataset meant for search. A plain sync with the defaults costs nothing."""
        s = self.settings
        return s.fts is True or s.vector is True or (self.search_wanted and s.enabled)

    def after_commit(self) -> None:
        """Note a commit; start a background refresh when one is due and none is running."""
        if not self.active:
            return
        with self._lock:
            self._dirty = True
            running = self._thread is not None and self._thread.is_alive()
            due = time.monotonic() - self._last_start >= self.settings.refresh_seconds
            if running or not due:
                return
            self._start_locked()

    def _start_locked(self) -> None:
        self._dirty = False
        self._last_start = time.monotonic()
        self._thread = threading.Thread(
            target=self._refresh_logged, name="cfstream-index", daemon=True
        )
        self._thread.start()

    def finish(self) -> None:
        """Wait for a running refresh, then make a last one when commits came after it began."""
        if not self.active:
            return
        thread = self._thread
        if thread is not None:
            thread.join()
        with self._lock:
            dirty, self._dirty = self._dirty, False
        if dirty:
            self._refresh_logged()

    def _refresh_logged(self) -> None:
        t0 = time.perf_counter()
        try:
            ds = lance.dataset(self.uri, storage_options=self.storage_options)
            done = refresh_indexes(ds, self.settings, search_wanted=self.search_wanted)
        except (OSError, ValueError, RuntimeError) as exc:
            # a conflict with the writer's next commit, a full disk: the next refresh tries again
            with self._lock:
                self.failures += 1
                self._dirty = True
            log.warning("index upkeep on %s skipped: %s", self.uri, exc)
            return
        with self._lock:
            self.refreshes += 1
            self.created.extend(done.created)
        if done.created:
            log.debug(
                "created index(es) %s on %s in %.1f s",
                ", ".join(done.created),
                self.uri,
                time.perf_counter() - t0,
            )
