"""Keeping a dataset healthy from its writer: the uuid index, index optimisation, compaction and
cleanup of old versions (:class:`Maintenance`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import lance

from cfstream.logs import get_logger

__all__ = ("Maintenance", "column_index_names", "compact_small", "optimize_uuid_index")

log = get_logger("cfstream.storage.maintenance")


def column_index_names(ds: lance.LanceDataset, column: str) -> list[str]:
    """The names of ``ds``'s indexes on ``column`` alone."""
    return sorted(
        str(i.name) for i in ds.describe_indices() if list(i.field_names or []) == [column]
    )


def optimize_uuid_index(ds: lance.LanceDataset) -> None:
    """Fold new rows into the ``uuid`` index only: the search indexes are kept off the writer's
    path (by :class:`~cfstream.sinks.indexes.IndexKeeper`); folding them in here would stall it."""
    names = column_index_names(ds, "uuid")
    if names:
        ds.optimize.optimize_indices(index_names=names)


def compact_small(ds: lance.LanceDataset, batch_rows: int) -> None:
    """Merge the small fragments (tiny commits, mostly-deleted rows), leave full ones alone.

    A compaction reads everything it rewrites: compacting a whole bulk import at once cost
    ~500 MB of peak memory per 500k rows here. Fragments that already hold half a batch or
    more are excluded, and one pass rewrites at most four batches' worth of rows, so the
    memory maintenance needs is bounded by the batch size, not by the dataset.
    """
    small_below = max(1, batch_rows // 2)
    fragments = ds.get_fragments()
    big = [f.fragment_id for f in fragments if f.count_rows() >= small_below]
    if len(fragments) - len(big) < 2:
        return
    ds.optimize.compact_files(
        target_rows_per_fragment=batch_rows,
        excluded_fragment_ids=big,
        max_source_rows=4 * batch_rows,
        num_threads=1,
    )


@dataclass(slots=True)
class Maintenance:
    """When a writer indexes, optimises, compacts and cleans up its dataset.

    A BTREE index on ``uuid`` once a merging writer finds the dataset past ``index_threshold``
    rows (appends and a fresh load need none), ``optimize_indices`` every ``optimize_every``
    commits, and every ``maintenance_every`` commits a compaction (:func:`compact_small`, sized by
    ``batch_rows``) and a cleanup of versions older than ``cleanup_older_than``.
    """

    batch_rows: int = 10_000
    index_threshold: int = 100_000
    optimize_every: int = 20
    maintenance_every: int = 100
    cleanup_older_than: timedelta = timedelta(hours=1)
    #: the dataset has its uuid index (set when the writer opens it, and once built)
    indexed: bool = False

    def run(self, ds: lance.LanceDataset, *, commits: int, rows: int, merging: bool) -> int:
        """Do what is due after the writer's ``commits``-th commit; how many steps ran.

        Compaction does not retry: maintenance that loses to a concurrent writer is logged and
        skipped, never fatal.
        """
        ran = 0
        try:
            if not self.indexed:
                # only merges need the index: appends (and a fresh load) leave it to the first
                # merging run past the threshold
                if merging and rows >= self.index_threshold:
                    ds.create_scalar_index("uuid", index_type="BTREE")
                    self.indexed = True
                    ran += 1
            elif self.optimize_every and commits % self.optimize_every == 0:
                optimize_uuid_index(ds)
                ran += 1
            if self.maintenance_every and commits and commits % self.maintenance_every == 0:
                compact_small(ds, self.batch_rows)
                if self.indexed:
                    optimize_uuid_index(ds)
                ds.cleanup_old_versions(older_than=self.cleanup_older_than)
                ran += 1
        except OSError as exc:  # maintenance losing to a concurrent writer is not fatal
            log.warning("dataset maintenance on %s skipped: %s", ds.uri, exc)
        return ran
