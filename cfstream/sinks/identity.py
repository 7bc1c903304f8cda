"""The one-time rewrite of record uuids written before source names were part of them.

A record's identity is ``(source name, source_type, source_id)`` (see
:func:`cfstream.records.record_uuid`). Before, it was ``(source_type, source_id)``: every source of
one type wrote the same uuids, so two ``files`` sources, each with a ``README.md``, shared one row.
A source whose name equals its type keeps its uuids; the rows of any other source were stored
under the old uuid and are rewritten once, by :func:`migrate_identity`, at the start of the first
run that reads a source of their type:

- when one source (of all those the run knows: the run's own and ``others``, the config's other
  sources) can own the old rows of that type, they are its rows: upserted under the new uuid
  (relationship ids that pointed at a rewritten row follow it), then the old rows are deleted;
- when several can (two sources of the type, or one next to a source named like the type), the
  old rows cannot be told apart (they may already have overwritten each other): they are
  deleted and those sources' cursors reset, so they read everything again.

Only sources with an entry in the sync state can own old rows (a source never synced wrote
none). Each source is then marked with ``"identity": 2`` in its state entry and never looked at
again. The rewrite is idempotent: a crash between the upsert and the delete leaves both rows,
and the next run upserts again (nothing changes) and deletes the old ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import lance
import pyarrow as pa
import pyarrow.compute as pc

from cfstream.contract.state import StateStore, file_lock
from cfstream.logs import get_logger
from cfstream.records import CFSTREAM_NAMESPACE, uuid_array, uuid_prefix
from cfstream.storage import delete_uuids, upsert_table

__all__ = (
    "IDENTITY_VERSION",
    "IdentityMigration",
    "delete_source_rows",
    "migrate_identity",
    "source_rows",
)

log = get_logger("cfstream.sinks.identity")

#: the value of ``"identity"`` in a source's state entry once its rows use named uuids
IDENTITY_VERSION: Final = 2
#: rows rewritten (or deleted) per commit
_BATCH_ROWS: Final = 10_000


@dataclass
class IdentityMigration:
    """What :func:`migrate_identity` did."""

    #: rows moved to their source's named uuid
    rewritten: int = 0
    #: old rows deleted because several sources could own them
    dropped: int = 0
    #: sources whose cursors were reset (they read everything again)
    reset: list[str] = field(default_factory=list)
    #: sources marked as migrated in the sync state
    marked: list[str] = field(default_factory=list)

    @property
    def changed_dataset(self) -> bool:
        """True when the dataset has new versions."""
        return bool(self.rewritten or self.dropped)


def migrate_identity(
    open_dataset: Callable[[], lance.LanceDataset | None],
    state: StateStore,
    sources: Mapping[str, str],
    others: Mapping[str, str] | None = None,
    *,
    schema: pa.Schema | None = None,
) -> IdentityMigration:
    """Rewrite, once, the rows that the sources of a run stored under pre-name uuids.

    Args:
        open_dataset: opens the dataset (None when there is none yet).
        state: the sync state (where ``"identity": 2`` marks a migrated source).
        sources: name -> source type of each source the run reads.
        others: name -> source type of the other sources that write into the dataset (the
            config's sources the run does not read), so old rows are not given to the wrong one.
        schema: the schema to write rewritten rows with (default: the dataset's own).
    """
    out = IdentityMigration()
    info = {n: state.source_info(n) for n in sources}
    if all(i.get("identity") == IDENTITY_VERSION for i in info.values()):
        return out  # the usual case: nothing to do, nothing locked
    known = {**(others or {}), **sources}
    with file_lock(state.path.parent / "identity.lock"):  # one migration at a time
        info = {n: state.source_info(n) for n in known}  # fresh, under the lock
        types = sorted(
            {t for n, t in sources.items() if info[n].get("identity") != IDENTITY_VERSION}
        )
        to_mark: list[str] = []
        ds: lance.LanceDataset | None = None
        opened = False
        for st in types:
            group = sorted(n for n, t in known.items() if t == st)
            to_mark.extend(group)
            # who may own old rows: a source with a state entry that is not migrated yet, and
            # a source named like the type (its uuids never changed, its rows look old)
            owners = [
                n
                for n in group
                if info[n] and (info[n].get("identity") != IDENTITY_VERSION or n == st)
            ]
            if all(n == st for n in owners):
                continue  # no owner whose uuids change
            if not opened:
                ds, opened = open_dataset(), True
            if ds is None:
                continue
            old, sids = _old_rows(ds, st)
            if not len(old):
                continue
            if len(owners) == 1:
                out.rewritten += _rewrite(
                    ds, open_dataset, st, owners[0], old, sids, schema or ds.schema
                )
            else:
                log.warning(
                    "sources %s are all of type %r: the %d rows they stored before source names "
                    "were part of record uuids cannot be told apart (some may have overwritten "
                    "each other), so they are deleted and these sources read everything again",
                    ", ".join(owners),
                    st,
                    len(old),
                )
                for n in owners:  # reset first: a crash before the delete only re-reads
                    state.reset(n)
                    out.reset.append(n)
                out.dropped += _delete(open_dataset, old.to_pylist())
            ds = open_dataset()
        new = [n for n in dict.fromkeys(to_mark) if info[n].get("identity") != IDENTITY_VERSION]
        if new:

            def mark(data: dict[str, Any]) -> None:
                for n in new:
                    data["sources"].setdefault(n, {})["identity"] = IDENTITY_VERSION

            state.update(mark)
            out.marked = new
    if out.changed_dataset:
        log.info(
            "record identity: %d rows moved to their source's uuid, %d old rows deleted",
            out.rewritten,
            out.dropped,
        )
    return out


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _uuids(prefix: str, sids: pa.Array) -> pa.StringArray:
    head = CFSTREAM_NAMESPACE.bytes + prefix.encode()
    sha1 = hashlib.sha1
    return uuid_array([sha1(head + s.encode()).digest() for s in sids.to_pylist()])


def source_rows(ds: lance.LanceDataset, source_type: str, source_name: str | None) -> pa.Array:
    """The uuids of the rows that source ``source_name`` (of ``source_type``) wrote.

    A row is a source's when its uuid is the one that source gives its ``source_id`` (see
    :func:`cfstream.records.record_uuid`): two sources of one type are told apart without any
    column of their own.
    """
    t = ds.to_table(columns=["uuid", "source_id"], filter=f"source_type = {_sql_text(source_type)}")
    if not t.num_rows:
        return pa.array([], pa.string())
    uuids = t["uuid"].combine_chunks()
    mine = _uuids(uuid_prefix(source_type, source_name), t["source_id"].combine_chunks())
    return uuids.filter(pc.equal(uuids, mine))


def delete_source_rows(
    ds: lance.LanceDataset, source_type: str, source_name: str | None, batch: int = 10_000
) -> int:
    """Delete every row source ``source_name`` wrote (see :func:`source_rows`); rows deleted."""
    uuids = source_rows(ds, source_type, source_name).to_pylist()
    return sum(delete_uuids(ds, uuids[i : i + batch]) for i in range(0, len(uuids), batch))


def _old_rows(ds: lance.LanceDataset, source_type: str) -> tuple[pa.Array, pa.Array]:
    """The uuids and source ids of the rows of ``source_type`` stored under the old uuid."""
    t = ds.to_table(columns=["uuid", "source_id"], filter=f"source_type = {_sql_text(source_type)}")
    if not t.num_rows:
        return pa.array([], pa.string()), pa.array([], pa.string())
    uuids = t["uuid"].combine_chunks()
    sids = t["source_id"].combine_chunks()
    legacy = _uuids(uuid_prefix(source_type), sids)
    mask = pc.equal(uuids, legacy)
    return uuids.filter(mask), sids.filter(mask)


def _rewrite(
    ds: lance.LanceDataset,
    open_dataset: Callable[[], lance.LanceDataset | None],
    source_type: str,
    owner: str,
    old: pa.Array,
    sids: pa.Array,
    schema: pa.Schema,
) -> int:
    """Upsert the old rows under ``owner``'s uuids, then delete them; rows rewritten."""
    new = _uuids(uuid_prefix(source_type, owner), sids)
    moved = dict(zip(old.to_pylist(), new.to_pylist(), strict=True))
    blob = (
        "blob" in str(ds.schema.field("raw_data").type) if "raw_data" in ds.schema.names else False
    )
    columns = [f.name for f in schema if f.name in ds.schema.names]
    old_set = pa.array(list(moved), pa.string())
    done = 0
    pending: list[pa.Table] = []
    size = 0
    scanner = ds.to_batches(
        columns=columns,
        filter=f"source_type = {_sql_text(source_type)}",
        with_row_address=blob,
        batch_size=_BATCH_ROWS,
    )
    for rb in scanner:
        t = pa.Table.from_batches([rb])
        t = t.filter(pc.is_in(t["uuid"], value_set=old_set))
        if not t.num_rows:
            continue
        pending.append(_moved_table(ds, t, moved, schema, blob))
        size += t.num_rows
        if size >= _BATCH_ROWS:
            done += _upsert(open_dataset, pending)
            pending, size = [], 0
    if pending:
        done += _upsert(open_dataset, pending)
    _delete(open_dataset, list(moved))
    return done


def _moved_table(
    ds: lance.LanceDataset,
    t: pa.Table,
    moved: Mapping[str, str],
    schema: pa.Schema,
    blob: bool,
) -> pa.Table:
    """``t`` with the new uuids, relationship ids remapped, blobs read back, as ``schema``."""
    arrays: dict[str, pa.Array] = {}
    arrays["uuid"] = pa.array([moved[u] for u in t["uuid"].to_pylist()], pa.string())
    if "relationships" in t.column_names:
        rels = t["relationships"].to_pylist()
        for row in rels:
            for r in row or ():
                target = r.get("id")
                if target in moved:
                    r["id"] = moved[target]
        arrays["relationships"] = pa.array(rels, schema.field("relationships").type)
    if blob:
        files = ds.take_blobs("raw_data", addresses=t["_rowaddr"])
        data: list[bytes | None] = []
        for f in files:
            if f is None:
                data.append(None)
                continue
            with f:
                data.append(bytes(f.read()))
        arrays["raw_data"] = pa.array(data, pa.large_binary())
    cols = []
    for f in schema:
        if f.name in arrays:
            cols.append(arrays[f.name])
        elif f.name in t.column_names:
            cols.append(t[f.name].combine_chunks().cast(f.type))
        else:
            cols.append(pa.nulls(t.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=schema)


def _upsert(open_dataset: Callable[[], lance.LanceDataset | None], tables: list[pa.Table]) -> int:
    ds = open_dataset()
    assert ds is not None
    table = pa.concat_tables(tables)
    upsert_table(ds, table)
    return int(table.num_rows)


def _delete(open_dataset: Callable[[], lance.LanceDataset | None], uuids: list[str]) -> int:
    deleted: int = 0
    for i in range(0, len(uuids), _BATCH_ROWS):
        ds = open_dataset()
        assert ds is not None
        deleted += delete_uuids(ds, uuids[i : i + _BATCH_ROWS])
    return deleted
