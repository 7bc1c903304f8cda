"""The writer: commits batches to a Lance dataset of records, exactly once per uuid.

:class:`DatasetWriter` commits one :class:`~cfstream.storage.batch.Batch` at a time (off the
event loop; it blocks):

- ``merge_insert`` on ``uuid`` (``mode="upsert"``; a matched row is rewritten only when its
  ``content_hash`` changed or its ``source_updated_at`` is newer: :data:`UPSERT_CONDITION`) or an
  append (``mode="append"``), then deletes the batch's tombstoned uuids. Commit conflicts with
  another writer are retried with a fresh dataset handle.
- A first load into a dataset this writer created appends instead of merging while no uuid
  repeats within the run (it keeps 8 bytes per written uuid to know: :class:`UuidKeySet`) and
  no other writer commits: nothing can match, and an append costs a fraction of a merge in time
  and, unlike a merge against a growing index, in memory. The first repeat switches the run to
  merging. Lance does not check an append against other commits, so the writer compares the
  dataset's latest version with the last one it checked (one look per commit) and reads the
  transactions of any version it did not make itself (each commit carries
  :data:`WRITER_PROPERTY`): once another writer has added rows, the load merges from then on,
  and when rows may already be stored twice it deletes the extra ones (:func:`heal_duplicates`).
  A merge that another writer's append overtook is checked the same way.
- Creating a local dataset happens under a file lock: two processes creating one dataset at
  once could both "succeed", the second manifest replacing the first.
- After each commit it runs :class:`~cfstream.storage.maintenance.Maintenance`, and it keeps its
  dataset handle from one commit to the next (each commit moves it on) instead of reopening.
"""

from __future__ import annotations

import contextlib
import errno
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, Final

import lance
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cfstream.contract.state import file_lock
from cfstream.contract.uris import local_path
from cfstream.errors import CommitError, DatasetError
from cfstream.logs import get_logger
from cfstream.storage.batch import Batch
from cfstream.storage.codec import TableBuilder
from cfstream.storage.maintenance import Maintenance

__all__ = (
    "UPSERT_CONDITION",
    "WRITER_PROPERTY",
    "DatasetWriter",
    "UuidKeySet",
    "adopt_schema",
    "commit_error",
    "create_lock",
    "delete_uuids",
    "heal_duplicates",
    "is_conflict",
    "upsert_table",
)

log = get_logger("cfstream.storage.writer")

UPSERT_CONDITION: Final = (
    "target.content_hash IS NULL OR source.content_hash != target.content_hash "
    "OR source.source_updated_at > target.source_updated_at"
)
#: the transaction property that marks a commit as one writer's own (one id per DatasetWriter)
WRITER_PROPERTY: Final = "cfstream.writer"
_REQUIRED = ("uuid", "title", "source_id", "content_hash")
#: what a dataset folder may hold before its first commit lands (ours and Lance's own folders)
_UNCOMMITTED_OK = frozenset({"_cfstream", "data", "_transactions", "_deletions", "_indices"})
#: Lance operations that may add rows (a transaction that cannot be read counts too)
_ADDS_ROWS = frozenset({"Append", "Update", "Overwrite", "Merge", "Restore", "DataReplacement"})
_APPENDS = frozenset({"Append", "Overwrite", "Restore"})
_KEEP_ORDER = [
    ("uuid", "ascending"),
    ("source_updated_at", "descending"),
    ("ingested_at", "descending"),
    ("_rowid", "descending"),
]


def upsert_table(ds: lance.LanceDataset, table: pa.Table) -> tuple[int, int]:
    """Merge ``table`` into ``ds`` on ``uuid`` (:data:`UPSERT_CONDITION`); (inserted, updated)."""
    stats = (
        ds.merge_insert("uuid")
        .when_matched_update_all(condition=UPSERT_CONDITION)
        .when_not_matched_insert_all()
        .execute(table)
    )
    return int(stats.get("num_inserted_rows", 0)), int(stats.get("num_updated_rows", 0))


def delete_uuids(ds: lance.LanceDataset, uuids: Sequence[str]) -> int:
    """Delete the rows with these uuids (hex and dashes only, so quoting is safe); rows deleted."""
    quoted = ",".join(f"'{u}'" for u in uuids)
    res = ds.delete(f"uuid IN ({quoted})")
    return int(res.get("num_deleted_rows", 0)) if isinstance(res, dict) else 0


def heal_duplicates(ds: lance.LanceDataset) -> int:
    """Keep one row per uuid: delete the others; rows deleted (``ds`` moves to the new version).

    The row kept is the one with the newest ``source_updated_at``, then the newest
    ``ingested_at``, then the last written. Reads the ``uuid`` column once; costs a commit only
    when something is deleted. The delete is made against the version read, so a concurrent
    rewrite of those rows conflicts (and the caller retries) instead of deleting the wrong ones.
    """
    counts = pc.value_counts(ds.to_table(columns=["uuid"]).column("uuid"))
    many = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
    if not len(many):
        return 0
    quoted = ",".join(f"'{u}'" for u in many.to_pylist())
    rows = ds.to_table(
        columns=["uuid", "source_updated_at", "ingested_at"],
        filter=f"uuid IN ({quoted})",
        with_row_id=True,
    ).sort_by(_KEEP_ORDER)
    drop: list[int] = []
    last = None
    for uid, rowid in zip(
        rows.column("uuid").to_pylist(), rows.column("_rowid").to_pylist(), strict=True
    ):
        if uid == last:
            drop.append(rowid)
        last = uid
    if drop:
        ds.delete(f"_rowid IN ({','.join(map(str, drop))})")
        log.warning("removed %d duplicated rows from %s", len(drop), ds.uri)
    return len(drop)


def is_conflict(exc: BaseException) -> bool:
    """True when ``exc`` is Lance losing a commit to a concurrent writer (worth retrying)."""
    text = str(exc)
    return (
        type(exc).__name__ == "CommitConflictError"
        or "oo many concurrent writers" in text
        or "commit conflict" in text.lower()
        or "preempted by concurrent transaction" in text
    )


def commit_error(exc: OSError, uri: str) -> CommitError:
    """The :class:`~cfstream.errors.CommitError` for a failed write to ``uri``, saying what to do
    (a full disk, missing permissions)."""
    text = str(exc)
    if exc.errno == errno.ENOSPC or "No space left" in text:
        msg = f"the disk holding {uri} is full ({text}); free space and run again"
    elif exc.errno in (errno.EACCES, errno.EPERM) or "ermission denied" in text:
        msg = f"permission denied writing {uri} ({text}); check the folder's permissions"
    else:
        msg = f"writing {uri} failed: {text}"
    return CommitError(msg)


@contextlib.contextmanager
def create_lock(uri: str) -> Iterator[None]:
    """An exclusive lock on creating a local dataset (nothing to lock for object stores)."""
    path = local_path(uri)
    if path is None:
        yield
        return
    with file_lock(path / "_cfstream" / "create.lock"):
        yield


def adopt_schema(have: pa.Schema, want: pa.Schema, uri: str) -> pa.Schema:
    """The schema to write into a dataset whose schema is ``have``: exactly its columns, with
    their stored types (its vector width, say), where this version writes ``want``.

    Raises:
        DatasetError: the dataset lacks a required column or stores one with another type.
    """
    problems: list[str] = []
    for name in _REQUIRED:
        if name not in have.names:
            problems.append(f"missing column {name!r}")
    for f in want:
        if f.name in have.names:
            theirs = have.field(f.name).type
            if f.name == "vector" and pa.types.is_fixed_size_list(theirs):
                continue
            if f.name == "raw_data" and "blob" in str(theirs):
                continue  # Lance stores blob columns as its own extension type
            if not theirs.equals(f.type, check_metadata=False) and str(theirs) != str(f.type):
                problems.append(f"column {f.name!r} is {theirs}, expected {f.type}")
    if problems:
        raise DatasetError(
            f"{uri} is a Lance dataset but not one cfstream can write: "
            + "; ".join(problems)
            + ". Use a new dataset path."
        )
    fields = [
        f if f.name == "raw_data" else have.field(f.name) for f in want if f.name in have.names
    ]
    if "vector" in have.names and "vector" not in want.names:
        fields.insert(2, have.field("vector"))
    return pa.schema(fields)


class UuidKeySet:
    """The uuid keys (first 64 bits, :func:`~cfstream.records.uuid_keys`) written so far.

    One sorted ``uint64`` array: 8 bytes a key whatever the run's size, a batch checked with one
    ``searchsorted``, a batch added by a linear merge (a stable sort of two sorted runs). A false
    "seen" (two uuids sharing 64 bits) only sends a batch down the slower, merging path.
    """

    def __init__(self) -> None:
        self._keys: np.ndarray[Any, np.dtype[np.uint64]] = np.empty(0, dtype=np.uint64)

    def __len__(self) -> int:
        return len(self._keys)

    def contains_any(self, keys: pa.Array) -> bool:
        """True when some key of ``keys`` is in the set."""
        seen = self._keys
        if not len(seen) or not len(keys):
            return False
        new = keys.to_numpy(zero_copy_only=False)
        at = np.minimum(np.searchsorted(seen, new), len(seen) - 1)
        return bool((seen[at] == new).any())

    def add(self, keys: pa.Array) -> None:
        """Add ``keys`` to the set."""
        new = np.sort(keys.to_numpy(zero_copy_only=False))
        self._keys = np.sort(np.concatenate([self._keys, new]), kind="stable")

    def maybe_in(self, uuids: Sequence[str]) -> list[str]:
        """The uuids of ``uuids`` (formatted, ``8-4-4-4-12`` hex) whose key is in the set; a
        uuid not in the list was certainly never added (a key is its first 64 bits)."""
        seen = self._keys
        if not len(seen) or not uuids:
            return []
        try:
            new = np.array([int(u[:8] + u[9:13] + u[14:18], 16) for u in uuids], dtype=np.uint64)
        except (TypeError, ValueError):  # not a formatted uuid: it cannot be ruled out
            return list(uuids)
        at = np.minimum(np.searchsorted(seen, new), len(seen) - 1)
        return [u for u, hit in zip(uuids, seen[at] == new, strict=True) if hit]


class DatasetWriter:
    """Commits batches to one Lance dataset of records (see the module docstring). Blocking:
    call it from a worker thread in async code. Not thread-safe: one commit at a time.

    Args:
        uri: the dataset (a local path or any Lance URI).
        schema: the schema to create it with (:func:`~cfstream.storage.codec.frame_schema`);
            :meth:`open` adopts an existing dataset's own.
        mode: ``"upsert"`` (merge on uuid) or ``"append"``.
        fill_zero_vectors: documents without a vector get zeros (ContextFrame compatibility).
        maintenance: what to run after commits (default: :class:`Maintenance` defaults).
        conflict_retries: how often a commit that lost to another writer is retried.
        storage_options: passed to Lance for object stores.
        cache_bytes: the bound of the Lance session's index and metadata caches.
    """

    def __init__(
        self,
        uri: str,
        schema: pa.Schema,
        *,
        mode: str = "upsert",
        fill_zero_vectors: bool = False,
        maintenance: Maintenance | None = None,
        conflict_retries: int = 8,
        storage_options: dict[str, str] | None = None,
        cache_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.uri = str(uri)
        self.mode = mode
        #: builds the tables this writer commits (its schema is the dataset's once opened)
        self.builder = TableBuilder(schema, fill_zero_vectors)
        self.maintenance = maintenance if maintenance is not None else Maintenance()
        self.conflict_retries = conflict_retries
        self.storage_options = storage_options
        self.cache_bytes = cache_bytes
        #: the dataset has a committed version (known after :meth:`open` or the first commit)
        self.exists = False
        #: rows in the dataset as this writer counts them
        self.rows = 0
        #: the version of this writer's last commit
        self.version: int | None = None
        #: commits made by this writer
        self.commits = 0
        # a first load into a dataset this writer created appends instead of merging (see
        # commit_once); it remembers 8 bytes per written uuid to stay exactly-once
        self._fresh = False
        self._written = UuidKeySet()
        # the newest version checked for other writers' rows (see _others_added_rows)
        self._checked = 0
        self._heal = False
        self._tx = {WRITER_PROPERTY: uuid.uuid4().hex}
        self._ds: lance.LanceDataset | None = None
        self._session: lance.Session | None = None

    @property
    def schema(self) -> pa.Schema:
        """The schema this writer writes."""
        return self.builder.schema

    # -- opening ------------------------------------------------------------------------------

    def session(self) -> lance.Session:
        """One Lance session per writer, with bounded caches: memory stays flat however many
        commits and fragments a long import makes (the default caches grow with the dataset)."""
        if self._session is None:
            self._session = lance.Session(
                index_cache_size_bytes=self.cache_bytes,
                metadata_cache_size_bytes=self.cache_bytes,
            )
        return self._session

    def dataset(self) -> lance.LanceDataset:
        """A new handle on the dataset's latest version (raises when there is none)."""
        return lance.dataset(self.uri, storage_options=self.storage_options, session=self.session())

    def open_dataset(self) -> lance.LanceDataset | None:
        """The dataset's latest version, or None when there is none yet.

        Raises:
            DatasetError: the path is a file, or a folder that is not a Lance dataset, or the
                dataset cannot be opened.
        """
        path = local_path(self.uri)
        if path is not None:
            if path.exists() and not path.is_dir():
                raise DatasetError(
                    f"{self.uri} is a file, not a Lance dataset; choose another path"
                )
            if path.is_dir() and not (path / "_versions").exists():
                # Lance's own folders without a manifest: a first commit that never finished
                # (the process was killed); nothing was committed, so create the dataset anew
                others = [p.name for p in path.iterdir() if p.name not in _UNCOMMITTED_OK]
                if others:
                    raise DatasetError(
                        f"{self.uri} exists but is not a Lance dataset (it holds {sorted(others)[:5]}); "
                        "point `dataset` at a new path or an existing cfstream dataset"
                    )
                return None
            if not path.exists():
                return None
        try:
            return self.dataset()
        except (OSError, ValueError) as exc:
            if path is None and "not found" in str(exc).lower():
                return None
            raise DatasetError(f"cannot open {self.uri} as a Lance dataset: {exc}") from exc

    def open(self) -> tuple[int | None, int]:
        """Check the dataset (absent, or one cfstream can write) and start a run on it:
        (version, rows), (None, 0) when there is no dataset yet (it is created by the first
        commit, and a first load then appends while it can)."""
        self._ds = None
        self._fresh = self.mode == "upsert"
        self._written = UuidKeySet()
        self.version = None
        self._checked = 0
        self._heal = False
        ds = self.open_dataset()
        if ds is None:
            self.exists = False
            return None, 0
        self.builder.schema = adopt_schema(ds.schema, self.builder.schema, self.uri)
        self.exists = True
        self._fresh = False
        self.rows = ds.count_rows()
        self.maintenance.indexed = any(
            "uuid" in (i.field_names or []) for i in ds.describe_indices()
        )
        return ds.version, self.rows

    def handle(self) -> lance.LanceDataset:
        """The dataset as this writer last left it (opened on first use and after a failure).

        Each commit moves the handle to the version it created; a commit against a handle that
        another writer has overtaken conflicts and is retried with a fresh one (:meth:`commit`).
        """
        if self._ds is None:
            self._ds = self.dataset()
        return self._ds

    def stored(self, uuids: Sequence[str], columns: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The committed rows of ``uuids`` at the latest version: uuid -> {column: value}
        (``columns`` the dataset has; none when there is no dataset).

        In a first load that no other writer has joined (the latest version is the last one
        this writer checked), only the rows this writer appended can be stored: the uuids whose
        key it never wrote are answered without reading the dataset. A first load builds no
        uuid index, so each lookup would scan every row stored so far: an import asking once
        per chunk of documents (the chunk stage does) would take time in the square of its
        size, and a peak memory that grows with it.
        """
        try:
            ds = self.dataset()
        except (OSError, ValueError):
            return {}
        if self._fresh and ds.version == self._checked:
            uuids = self._written.maybe_in(uuids)
            if not uuids:
                return {}
        wanted = [c for c in columns if c in ds.schema.names and c != "uuid"]
        out: dict[str, dict[str, Any]] = {}
        for i in range(0, len(uuids), 1000):
            keys = ", ".join(f"'{u}'" for u in uuids[i : i + 1000] if "'" not in u)
            if not keys:
                continue
            tbl = ds.to_table(columns=["uuid", *wanted], filter=f"uuid IN ({keys})")
            for row in tbl.to_pylist():
                out[row.pop("uuid")] = row
        return out

    # -- committing ---------------------------------------------------------------------------

    def commit(self, batch: Batch) -> dict[str, int]:
        """Commit ``batch.table`` and ``batch.deletes``, retrying conflicts with other writers;
        what it did: ``commits``, ``inserted``, ``updated``, ``unchanged``, ``appended``,
        ``deleted``, ``duplicates_removed``, ``maintenance``, ``version``.

        Raises:
            CommitError: the write failed (a full disk, no permission, conflicts past
                ``conflict_retries``); nothing of the batch was committed by the failed attempt.
        """
        attempt = 0
        while True:
            try:
                return self.commit_once(batch)
            except OSError as exc:
                self._ds = None  # reopen: another writer may have moved the dataset on
                if is_conflict(exc) and attempt < self.conflict_retries:
                    attempt += 1
                    log.info("commit conflict on %s, retrying (%d)", self.uri, attempt)
                    time.sleep(min(2.0, 0.05 * 2**attempt))
                    continue
                raise commit_error(exc, self.uri) from exc

    def commit_once(self, batch: Batch) -> dict[str, int]:
        """One attempt of :meth:`commit` (raises ``OSError`` on a conflict)."""
        out: dict[str, int] = {"commits": 0}
        table = batch.table
        ds: lance.LanceDataset | None = None
        if table is not None and table.num_rows:
            n = table.num_rows
            if not self.exists:
                # Two processes creating one local dataset at once could both "succeed", the
                # second manifest replacing the first (a batch lost): create under a file lock,
                # and write into the dataset when another process created it meanwhile.
                with create_lock(self.uri):
                    theirs = self.open_dataset() is not None
                    if not theirs:
                        try:
                            ds = lance.write_dataset(
                                table,
                                self.uri,
                                schema=self.schema,
                                mode="create",
                                storage_options=self.storage_options,
                                session=self.session(),
                                transaction_properties=self._tx,
                            )
                        except OSError as exc:
                            if "already exists" not in str(exc):
                                raise
                            theirs = True
                if theirs:
                    self.builder.schema = adopt_schema(
                        self.dataset().schema, self.builder.schema, self.uri
                    )
                    self.exists = True
                    self._fresh = False
                    return self.commit_once(batch)
                self.exists = True
                assert ds is not None
                self._remember(batch.key_array())  # before _checked: see stored()
                self._checked = ds.version
                out["inserted" if self.mode == "upsert" else "appended"] = n
                self.rows += n
            elif self.mode == "append" or (
                self._fresh and self._alone() and self._is_new(batch.key_array())
            ):
                ds = lance.write_dataset(
                    table,
                    self.uri,
                    mode="append",
                    storage_options=self.storage_options,
                    session=self.session(),
                    transaction_properties=self._tx,
                )
                if self._fresh:
                    # appends rebase on whatever was committed meanwhile: rows another writer
                    # added between the check and this commit may be these rows' twins
                    if ds.version != self._checked + 1 and self._others_added_rows(
                        ds, self._checked + 1, ds.version - 1, _ADDS_ROWS
                    ):
                        self._fresh = False
                        self._heal = True
                    else:
                        self._checked = ds.version
                out["appended" if self.mode == "append" else "inserted"] = n
                self.rows += n
            else:
                ds = self.handle()
                read = ds.version
                ins, upd = upsert_table(ds, table)  # moves ds to the new version
                out["inserted"] = ins
                out["updated"] = upd
                out["unchanged"] = n - ins - upd
                self.rows += ins
                if ins + upd > n:  # a uuid matched two rows: heal it
                    self._heal = True
                elif ds.version != read + 1 and self._others_added_rows(
                    ds, read + 1, ds.version - 1, _APPENDS
                ):
                    self._heal = True  # an append overtook this merge: its rows may be twins
            out["commits"] += 1
        if self._heal and ds is not None:
            removed = heal_duplicates(ds)  # moves ds to the new version when it deletes
            self._heal = False
            out["duplicates_removed"] = removed
            self.rows -= removed
            out["commits"] += removed > 0
        if batch.deletes and self.exists:
            ds = ds or self.handle()
            deleted = delete_uuids(ds, batch.deletes)  # moves ds to the new version
            out["deleted"] = deleted
            self.rows -= deleted
            out["commits"] += 1
        self.commits += out["commits"]
        if ds is None and self.exists:
            ds = self.handle()
        self._ds = ds
        if ds is not None:
            out["maintenance"] = self.maintenance.run(
                ds,
                commits=self.commits,
                rows=self.rows,
                merging=self.mode == "upsert" and not self._fresh,
            )
            if out["maintenance"]:
                ds = self._ds = self.dataset()
            out["version"] = self.version = ds.version
        return out

    def finish(self, full_refresh: bool = False) -> int:
        """End of a run: leave fresh-load mode; rows deleted as duplicates.

        A fresh load checks once more that no other writer added rows after its last append,
        and a full re-sync (``--full``) checks the whole dataset for uuids stored twice (by an
        earlier version, or a writer killed between its append and its check): either deletes
        the extra rows (:func:`heal_duplicates`).

        The uuid index is not built here: building it costs a burst of memory proportional to
        the dataset, which would make a bulk import's peak grow with its size. The next run
        builds it at its first commit (see :class:`Maintenance`), when merges start to need it.
        """
        removed = 0
        if self.exists and self.mode == "upsert" and (self._fresh or full_refresh):
            heal = full_refresh or not self._alone()
            for attempt in range(self.conflict_retries + 1) if heal else ():
                try:
                    ds = self._ds = self.dataset()
                    removed = heal_duplicates(ds)
                    self.rows -= removed
                    self.version = ds.version
                    break
                except OSError as exc:
                    if not is_conflict(exc) or attempt == self.conflict_retries:
                        raise commit_error(exc, self.uri) from exc
                    time.sleep(min(2.0, 0.05 * 2 ** (attempt + 1)))
        self._fresh = False
        self._written = UuidKeySet()
        return removed

    def _alone(self) -> bool:
        """In a fresh load: False when another writer added rows since the last check.

        Then the load stops appending (it merges from now on) and heals the dataset at its next
        commit: that writer may have stored some of the rows this load appended before.
        """
        ds = self.handle()
        latest = ds.latest_version
        if latest != self._checked and self._others_added_rows(
            ds, self._checked + 1, latest, _ADDS_ROWS
        ):
            self._fresh = False
            self._heal = True
            return False
        self._checked = latest
        return True

    def _others_added_rows(
        self, ds: lance.LanceDataset, first: int, last: int, kinds: frozenset[str]
    ) -> bool:
        """True when a version in ``first..last`` is another writer's operation of ``kinds``
        (or cannot be read). Only runs when the versions moved by more than this writer's commits."""
        for version in range(first, last + 1):
            try:
                tx = ds.read_transaction(version)
            except TypeError as exc:
                # pylance 14.0.2 cannot build the Python form of a compaction that rewrote an
                # index (the FTS index, say): a Rewrite, which never adds rows
                if "RewrittenIndex" in str(exc):
                    continue
                return True
            except (OSError, ValueError):
                return True
            if tx is None:
                return True
            if (tx.transaction_properties or {}).get(WRITER_PROPERTY) == self._tx[WRITER_PROPERTY]:
                continue
            if type(tx.operation).__name__ in kinds:
                return True
        return False

    def _remember(self, keys: pa.Array) -> None:
        if self._fresh:
            self._written.add(keys)

    def _is_new(self, keys: pa.Array) -> bool:
        """In a fresh load: True when no uuid of the batch was written earlier in this run.

        Then the batch can be appended: nothing in the dataset can match it (this writer created
        the dataset and no other writer has committed since). Otherwise it is merged.
        """
        if self._written.contains_any(keys):
            self._fresh = False
            return False
        self._written.add(keys)
        return True
