"""The Lance layer: how records become rows of a Lance dataset, for every writer of one.

``LanceSink`` (a pipeline's sink), Ray's ``FragmentSink`` and its driver, and ``FrameDataset``
all write through this package; none of them reaches into another's internals.

- :mod:`~cfstream.storage.codec`: the Arrow schema of a record (:func:`frame_schema`, derived
  from :data:`cfstream.records.RECORD_FIELDS`) and documents -> Arrow (:func:`documents_to_table`,
  :class:`TableBuilder`).
- :mod:`~cfstream.storage.batch`: cutting items into batches (:class:`Batcher`: rows, bytes,
  latency) and resolving a batch (:func:`resolve_batch`: newest ``source_updated_at`` wins,
  tombstones in arrival order; :func:`prepare_batch`: resolve, build, set aside what cannot be
  stored).
- :mod:`~cfstream.storage.writer`: :class:`DatasetWriter`, the create / append / merge commit
  state machine with conflict retries and concurrent-writer detection, and the operations it is
  made of (:func:`upsert_table`, :func:`delete_uuids`, :func:`heal_duplicates`).
- :mod:`~cfstream.storage.maintenance`: index, optimise, compact, clean up (:class:`Maintenance`).

Layering: it imports records, errors, checks, context, report, state and secrets; never sinks,
sources, transforms, the runner or distributed.
"""

from cfstream.storage.batch import (
    Batch,
    Batcher,
    dead_letter_rejected,
    prepare_batch,
    resolve_batch,
)
from cfstream.storage.codec import TableBuilder, documents_to_table, frame_schema
from cfstream.storage.maintenance import (
    Maintenance,
    column_index_names,
    compact_small,
    optimize_uuid_index,
)
from cfstream.storage.writer import (
    UPSERT_CONDITION,
    WRITER_PROPERTY,
    DatasetWriter,
    UuidKeySet,
    adopt_schema,
    delete_uuids,
    heal_duplicates,
    upsert_table,
)

__all__ = (
    "UPSERT_CONDITION",
    "WRITER_PROPERTY",
    "Batch",
    "Batcher",
    "DatasetWriter",
    "Maintenance",
    "TableBuilder",
    "UuidKeySet",
    "adopt_schema",
    "column_index_names",
    "compact_small",
    "dead_letter_rejected",
    "delete_uuids",
    "documents_to_table",
    "frame_schema",
    "heal_duplicates",
    "optimize_uuid_index",
    "prepare_batch",
    "resolve_batch",
    "upsert_table",
)
