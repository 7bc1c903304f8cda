"""Sync state: one cursor per (source name, partition), kept with the dataset, and an item store.

The state of a local dataset ``kb.lance`` lives in ``kb.lance/_cfstream/`` (copying the dataset
copies its state):

* ``state.json`` holds the small things: one cursor per (source, partition), when each source last
  synced, and a digest of what each source reads (its type and the options that decide what is
  read, never their values). Every save is atomic (write a temporary file, fsync, rename) and done
  under an exclusive file lock that re-reads the file first, so two processes syncing different
  sources into one dataset never overwrite each other's cursors; a save that changes nothing
  writes nothing.
* ``state.items.sqlite`` (:class:`ItemStore`, SQLite in WAL mode) holds what sources remember per
  item: a file's mtime, size and digest, a blob's sha, a page's edit time. Sources read it lazily,
  a partition at a time, and put only what changed into their checkpoints
  (:class:`~cfstream.records.ItemChanges`), so saving a checkpoint costs what changed, not what
  exists. Concurrent writers are serialised by SQLite (``busy_timeout``).

A per-source lock file makes a second process syncing the *same* source fail fast with
:class:`~cfstream.errors.DatasetBusyError`.

The sink calls :meth:`StateStore.save_checkpoints` only after the commit that holds every record
yielded before those checkpoints; it applies their item changes (one SQLite transaction) and then
their cursors. Either may be lost to a crash after the commit: the next run then reads those items
again, and upserts keep one row per document.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import orjson

from cfstream.contract.uris import state_dir_for
from cfstream.errors import DatasetBusyError, StateError
from cfstream.records import Checkpoint, ItemChanges

__all__ = (
    "ItemStore",
    "StateStore",
    "file_lock",
    "scope_digest",
)

STATE_VERSION = 1
ITEMS_SCHEMA_VERSION = 1
#: keys per lookup query (SQLite's variable limit is far above; this keeps statements small)
_LOOKUP_CHUNK = 500
#: rows per page when a partition's keys are streamed
_PAGE = 2000


def scope_digest(source_type: str, options: Mapping[str, Any]) -> str:
    """A digest of a source's type and the options that decide what it reads.

    Saved with the source's state in place of the values themselves (which may name private
    paths or repositories): when it changes, the saved cursors belong to another reading and the
    source is read afresh.
    """
    payload = orjson.dumps(
        {"type": source_type, "options": dict(options)},
        option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS,
        default=str,
    )
    return hashlib.sha256(payload).hexdigest()[:32]


def _key(key: str) -> bytes:
    # keys are stored as bytes: file names may hold surrogates that plain UTF-8 rejects
    return key.encode("utf-8", "surrogatepass")


def _unkey(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogatepass")


#: one ItemStore connection set up at a time in this process (see ``_open_for_writing``)
_SETUP_LOCK = threading.Lock()


class ItemStore:
    """Per-item entries of sources, keyed by (source, partition, item key); SQLite in WAL mode.

    Values are small JSON documents (stored as bytes). Reads go a bounded number of keys at a time
    (:meth:`get`, :meth:`keys`), so nothing here holds a whole partition in memory; writes go
    through :meth:`apply`, one transaction per call. Each thread gets its own connection (sources
    read from worker threads while the sink writes from another). ``read_only`` opens nothing
    when the file does not exist (an empty store) and never creates it.
    """

    def __init__(self, path: str | os.PathLike[str], *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._scopes: dict[tuple[str, str], int] = {}

    # -- connections --------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection | None:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        try:
            if self.read_only:
                if not self.path.exists():
                    return None
                conn = self._open_read_only()
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = self._open_for_writing()
        except sqlite3.Error as exc:
            raise StateError(
                f"cannot open the item store {self.path}: {exc}. Delete the file to sync "
                "everything again from scratch (re-imports are upserts, so no record is "
                "duplicated)."
            ) from exc
        self._local.conn = conn
        with self._conns_lock:
            self._conns.append(conn)
        return conn

    def _open_read_only(self) -> sqlite3.Connection:
        """A read-only connection. Reading a WAL database needs its ``-shm`` file writable; in a
        folder this user may only read (``cfstream status`` on a read-only dataset), nobody can
        be writing the store either, so it is then opened as immutable."""
        for query in ("mode=ro", "mode=ro&immutable=1"):
            conn = sqlite3.connect(
                f"file:{self.path}?{query}",
                uri=True,
                timeout=60,
                isolation_level=None,
                check_same_thread=False,
            )
            try:
                conn.execute("SELECT count(*) FROM meta").fetchone()
                return conn
            except sqlite3.OperationalError as exc:
                conn.close()
                if "readonly" not in str(exc) and "unable to open" not in str(exc):
                    raise
        raise sqlite3.OperationalError(f"cannot read {self.path}: its folder is not writable")

    def _open_for_writing(self) -> sqlite3.Connection:
        """A connection with the schema in place. Setting WAL mode and creating the tables take
        locks that SQLite may refuse at once rather than wait for (two sources of one run open
        their connections together): that is done under a process-wide lock, and retried for a
        while against another process doing the same."""
        deadline = time.monotonic() + 60
        while True:
            try:
                with _SETUP_LOCK:
                    return self._setup(
                        sqlite3.connect(
                            self.path, timeout=60, isolation_level=None, check_same_thread=False
                        )
                    )
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @staticmethod
    def _setup(conn: sqlite3.Connection) -> sqlite3.Connection:
        try:
            conn.execute("PRAGMA busy_timeout=60000")
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL: a commit survives the process being killed (the WAL is written before
            # COMMIT returns), only a power cut may lose the last ones. Losing entries is safe:
            # the items are read again and upserted (an entry can lag behind the dataset, never
            # run ahead of it), and it spares an fsync per checkpoint.
            conn.execute("PRAGMA synchronous=NORMAL")
            # copy the WAL into the database every ~1 MB (not SQLite's 4 MB): the bytes a sync
            # writes then grow with its changes from the first checkpoint on, and the WAL stays
            # small
            conn.execute("PRAGMA wal_autocheckpoint=256")
            conn.executescript(
                """
                CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v TEXT NOT NULL);
                CREATE TABLE IF NOT EXISTS scopes(
                    id INTEGER PRIMARY KEY,
                    source TEXT NOT NULL,
                    partition TEXT NOT NULL,
                    UNIQUE(source, partition));
                CREATE TABLE IF NOT EXISTS items(
                    scope INTEGER NOT NULL,
                    key BLOB NOT NULL,
                    value BLOB NOT NULL,
                    PRIMARY KEY(scope, key)) WITHOUT ROWID;
                INSERT OR IGNORE INTO meta(k, v) VALUES ('schema', '1');
                """
            )
        except BaseException:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        """Close every connection this store opened."""
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._local = threading.local()
        self._scopes.clear()

    def _scope(self, conn: sqlite3.Connection, source: str, partition: str) -> int | None:
        key = (source, partition)
        sid = self._scopes.get(key)
        if sid is None:
            row = conn.execute(
                "SELECT id FROM scopes WHERE source = ? AND partition = ?", key
            ).fetchone()
            if row is None:
                return None
            sid = self._scopes[key] = int(row[0])
        return sid

    def _error(self, exc: sqlite3.Error) -> StateError:
        return StateError(
            f"the item store {self.path} failed: {exc}. If it is corrupt, delete it to sync "
            "everything again from scratch (re-imports are upserts, so no record is duplicated)."
        )

    # -- reading ------------------------------------------------------------------------------
    def get(self, source: str, partition: str, keys: Iterable[str]) -> dict[str, Any]:
        """The stored values of ``keys`` (missing keys are left out)."""
        conn = self._connect()
        if conn is None:
            return {}
        out: dict[str, Any] = {}
        wanted = list(keys)
        try:
            sid = self._scope(conn, source, partition)
            if sid is None:
                return {}
            loads = orjson.loads
            for i in range(0, len(wanted), _LOOKUP_CHUNK):
                part = [_key(k) for k in wanted[i : i + _LOOKUP_CHUNK]]
                marks = ",".join("?" * len(part))
                rows = conn.execute(
                    f"SELECT key, value FROM items WHERE scope = ? AND key IN ({marks})",
                    (sid, *part),
                ).fetchall()
                for k, v in rows:
                    out[_unkey(k)] = loads(v)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        return out

    def entries(self, source: str, partition: str) -> Iterator[tuple[str, Any]]:
        """Every (key, value) of a partition, streamed a page at a time in key (byte) order."""
        for key, raw in self._pages(source, partition, values=True):
            yield key, orjson.loads(raw)

    def keys(self, source: str, partition: str) -> Iterator[str]:
        """Every key of a partition, streamed a page at a time in key (byte) order."""
        for key, _ in self._pages(source, partition, values=False):
            yield key

    def _pages(self, source: str, partition: str, *, values: bool) -> Iterator[tuple[str, bytes]]:
        conn = self._connect()
        if conn is None:
            return
        cols = "key, value" if values else "key, NULL"
        last = b""
        while True:
            try:
                sid = self._scope(conn, source, partition)
                if sid is None:
                    return
                rows = conn.execute(
                    f"SELECT {cols} FROM items WHERE scope = ? AND key > ? ORDER BY key LIMIT ?",
                    (sid, last, _PAGE),
                ).fetchall()
            except sqlite3.Error as exc:
                raise self._error(exc) from exc
            for k, v in rows:
                yield _unkey(k), v
            if len(rows) < _PAGE:
                return
            last = rows[-1][0]

    def count(self, source: str, partition: str | None = None) -> int:
        """How many entries ``source`` (or one of its partitions) has."""
        conn = self._connect()
        if conn is None:
            return 0
        try:
            if partition is None:
                row = conn.execute(
                    "SELECT COUNT(*) FROM items JOIN scopes ON items.scope = scopes.id "
                    "WHERE scopes.source = ?",
                    (source,),
                ).fetchone()
            else:
                sid = self._scope(conn, source, partition)
                if sid is None:
                    return 0
                row = conn.execute("SELECT COUNT(*) FROM items WHERE scope = ?", (sid,)).fetchone()
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        return int(row[0])

    def partitions(self, source: str) -> list[str]:
        """The partitions of ``source`` that have entries."""
        conn = self._connect()
        if conn is None:
            return []
        try:
            rows = conn.execute(
                "SELECT partition FROM scopes WHERE source = ? AND EXISTS "
                "(SELECT 1 FROM items WHERE items.scope = scopes.id) ORDER BY partition",
                (source,),
            ).fetchall()
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        return [str(r[0]) for r in rows]

    # -- writing ------------------------------------------------------------------------------
    def apply(self, changes: Iterable[tuple[str, str, ItemChanges]]) -> int:
        """Apply ``(source, partition, changes)`` in order, in one transaction; entries written."""
        todo = [c for c in changes if c[2]]
        if not todo:
            return 0
        if self.read_only:
            raise StateError(f"the item store {self.path} was opened read-only")
        conn = self._connect()
        assert conn is not None
        written = 0
        dumps = orjson.dumps
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for source, partition, ch in todo:
                    sid = self._scope(conn, source, partition)
                    if sid is None:
                        conn.execute(
                            "INSERT INTO scopes(source, partition) VALUES (?, ?)",
                            (source, partition),
                        )
                        sid = self._scope(conn, source, partition)
                        assert sid is not None
                    if ch.reset:
                        conn.execute("DELETE FROM items WHERE scope = ?", (sid,))
                    if ch.delete:
                        conn.executemany(
                            "DELETE FROM items WHERE scope = ? AND key = ?",
                            [(sid, _key(k)) for k in ch.delete],
                        )
                    if ch.put:
                        conn.executemany(
                            "INSERT OR REPLACE INTO items(scope, key, value) VALUES (?, ?, ?)",
                            [
                                (sid, _key(k), dumps(v, option=orjson.OPT_NON_STR_KEYS))
                                for k, v in ch.put.items()
                            ],
                        )
                    written += len(ch.put) + len(ch.delete)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                self._scopes.clear()  # ids inserted by the rolled-back transaction are gone
                raise
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        return written

    def clear(self, source: str, partitions: Sequence[str] | None = None) -> None:
        """Forget every entry of ``source`` (or of some of its partitions)."""
        if self.read_only:
            raise StateError(f"the item store {self.path} was opened read-only")
        if partitions is None and not self.path.exists():
            return
        conn = self._connect()
        assert conn is not None
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if partitions is None:
                    conn.execute(
                        "DELETE FROM items WHERE scope IN (SELECT id FROM scopes WHERE source = ?)",
                        (source,),
                    )
                else:
                    for p in partitions:
                        sid = self._scope(conn, source, p)
                        if sid is not None:
                            conn.execute("DELETE FROM items WHERE scope = ?", (sid,))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise self._error(exc) from exc


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created, with its folder, if missing): one
    process at a time, and the others wait."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "_"


class StateStore:
    """Cursors per (source, partition), stored as JSON next to the dataset, and the sources'
    per-item entries (:attr:`items`, an :class:`ItemStore` beside the JSON file)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._locks: dict[str, IO[bytes]] = {}
        #: per-item entries of the sources (``<stem>.items.sqlite`` next to the JSON file)
        self.items = ItemStore(self.path.with_name(f"{self.path.stem}.items.sqlite"))

    @classmethod
    def for_dataset(cls, dataset_uri: str) -> StateStore:
        """The store of a local dataset (``<dataset>/_cfstream/state.json``)."""
        return cls(state_dir_for(dataset_uri) / "state.json")

    # -- reading ------------------------------------------------------------------------------
    def load(self) -> dict[str, Any]:
        """The whole state document. A missing file is an empty state; a corrupt one an error."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {"version": STATE_VERSION, "sources": {}}
        except OSError as exc:
            raise StateError(f"cannot read the sync state {self.path}: {exc}") from exc
        try:
            data = _loads(raw)
        except ValueError as exc:
            raise StateError(
                f"the sync state {self.path} is corrupt ({exc}). Nothing was changed. Delete the "
                "file to sync everything again from scratch (re-imports are upserts, so no record "
                "is duplicated), or restore it from a backup."
            ) from exc
        if not isinstance(data, dict) or not isinstance(data.get("sources", {}), dict):
            raise StateError(
                f"the sync state {self.path} is not a cfstream state file (expected an object with "
                "'sources'). Nothing was changed. Delete it to sync from scratch."
            )
        data.setdefault("sources", {})
        for name, src in data["sources"].items():
            parts = src.get("partitions", {}) if isinstance(src, dict) else None
            if not isinstance(parts, dict) or not all(
                c is None or isinstance(c, dict) for c in parts.values()
            ):
                raise StateError(
                    f"the sync state {self.path} is corrupt (source {name!r}: expected an object "
                    "of partition cursors). Nothing was changed. Delete the file to sync "
                    "everything again from scratch (re-imports are upserts, so no record is "
                    "duplicated), or restore it from a backup."
                )
        return data

    def cursor(self, source: str, partition: str = "") -> Mapping[str, Any] | None:
        """The saved cursor of one partition, or None."""
        src = self.load()["sources"].get(source) or {}
        cur = (src.get("partitions") or {}).get(partition)
        return cur if isinstance(cur, dict) else None

    def cursors(self, source: str) -> dict[str, Mapping[str, Any]]:
        """Every saved partition cursor of ``source``."""
        src = self.load()["sources"].get(source) or {}
        return dict(src.get("partitions") or {})

    def source_info(self, source: str) -> dict[str, Any]:
        """The saved record of one source (partitions, last_success, ...)."""
        return dict(self.load()["sources"].get(source) or {})

    # -- writing ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with file_lock(self.path.with_suffix(".lock")):
            yield

    def _write(self, data: dict[str, Any]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        payload = _dumps(data)
        try:
            with open(tmp, "wb") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise StateError(f"cannot save the sync state {self.path}: {exc}") from exc

    def update(self, fn: Any) -> None:
        """Apply ``fn(state_dict)`` under the lock, on a fresh read, and save atomically.

        When ``fn`` returns ``False`` (it changed nothing) nothing is written.
        """
        with self._locked():
            data = self.load()
            if fn(data) is False:
                return
            data["version"] = STATE_VERSION
            self._write(data)

    def save_checkpoints(self, checkpoints: Iterable[Checkpoint]) -> int:
        """Persist ``checkpoints`` (later ones win): their item changes first, in one
        transaction, then their cursors. Returns how many were saved.

        The JSON file is written only when a cursor changes (``last_checkpoint`` moves with
        it): a run that changes nothing writes nothing here, and a file-tree source, whose
        cursor is a constant marker, writes the JSON once per partition on its first sync.
        """
        cps = [c for c in checkpoints if c.source is not None]
        if not cps:
            return 0
        changes: list[tuple[str, str, ItemChanges]] = []
        for cp in cps:
            assert cp.source is not None
            if cp.cursor is None:  # the partition is forgotten: so are its entries
                changes.append((cp.source, cp.partition or "", ItemChanges(reset=True)))
            elif cp.items:
                changes.append((cp.source, cp.partition or "", cp.items))
        self.items.apply(changes)
        now = time.time()

        def apply(data: dict[str, Any]) -> bool:
            changed = False
            for cp in cps:
                assert cp.source is not None
                src = data["sources"].setdefault(cp.source, {})
                parts = src.setdefault("partitions", {})
                key = cp.partition or ""
                if cp.cursor is None:
                    if key in parts:
                        parts.pop(key)
                        changed = True
                else:
                    cursor = dict(cp.cursor)
                    if parts.get(key) != cursor:
                        parts[key] = cursor
                        changed = True
            if changed:
                for cp in cps:
                    data["sources"][cp.source]["last_checkpoint"] = now
                return True
            return False

        self.update(apply)
        return len(cps)

    def check_scope(self, source: str, digest: str) -> str | None:
        """Compare ``digest`` (:func:`scope_digest`) with the one saved for ``source``.

        When they differ, every cursor and item entry of ``source`` is forgotten (they belong to
        another reading) and the previous digest is returned; the new digest is saved. Returns
        None when nothing changed, and for a source saved before digests were kept (its digest is
        only recorded).
        """
        info = self.source_info(source)
        old = info.get("scope")
        if old == digest:
            return None
        changed = old is not None and bool(info.get("partitions") or self.items.path.exists())
        if changed:
            # entries first: a crash before the JSON save below finds the old digest again
            self.items.clear(source)

        def apply(data: dict[str, Any]) -> None:
            src = data["sources"].setdefault(source, {})
            if changed:
                src["partitions"] = {}
            src["scope"] = digest

        self.update(apply)
        return str(old) if changed else None

    def tracked_items(self, source: str) -> int:
        """How many per-item entries ``source`` has in the item store (opens it read-only)."""
        store = ItemStore(self.items.path, read_only=True)
        try:
            return store.count(source)
        finally:
            store.close()

    def mark_success(self, source: str, summary: Mapping[str, Any] | None = None) -> None:
        """Record that ``source`` finished a sync (for ``cfstream status``)."""

        def apply(data: dict[str, Any]) -> None:
            src = data["sources"].setdefault(source, {})
            src["last_success"] = time.time()
            if summary is not None:
                src["last_summary"] = dict(summary)

        self.update(apply)

    def reset(self, source: str) -> None:
        """Forget every cursor of ``source`` (a full re-sync)."""

        self.items.clear(source)

        def apply(data: dict[str, Any]) -> None:
            src = data["sources"].get(source)
            if src is not None:
                src["partitions"] = {}

        self.update(apply)

    # -- per-source run locks -----------------------------------------------------------------
    def acquire_source(self, source: str) -> None:
        """Take the per-source run lock, or raise DatasetBusyError if another process holds it."""
        if source in self._locks:
            return
        lock_dir = self.path.parent / "locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        fh = open(lock_dir / f"{_safe_name(source)}.lock", "ab")  # noqa: SIM115 - held for the run
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            fh.close()
            raise DatasetBusyError(
                f"dataset busy: another cfstream process is syncing source {source!r} into this "
                "dataset. Wait for it to finish (or stop it) and run again."
            ) from exc
        self._locks[source] = fh

    def release_all(self) -> None:
        """Release every per-source run lock this store holds."""
        for fh in self._locks.values():
            with contextlib.suppress(OSError):
                fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()
        self._locks.clear()
        self.items.close()


def _dumps(data: dict[str, Any]) -> bytes:
    """The state as JSON. A cursor holding lone surrogates (a file name that is not valid UTF-8,
    as ``os.fsdecode`` gives it) is written with ``\\udcXX`` escapes, which :func:`_loads` reads
    back to the same text: the file's entry still matches on the next run."""
    try:
        return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
    except TypeError as exc:
        if "surrogates" not in str(exc):
            raise
        return json.dumps(data, separators=(",", ":"), sort_keys=True, ensure_ascii=True).encode()


def _loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "surrogate" not in str(exc):
            raise
        return json.loads(raw)  # lone surrogate escapes, written by _dumps
