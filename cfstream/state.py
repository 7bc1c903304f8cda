"""Sync state: one cursor per (source name, partition), kept with the dataset.

The state of a local dataset ``kb.lance`` lives in ``kb.lance/_cfstream/state.json`` (copying the
dataset copies its state). Every save is atomic (write a temporary file, fsync, rename) and done
under an exclusive file lock that re-reads the file first, so two processes syncing different
sources into one dataset never overwrite each other's cursors. A per-source lock file makes a second
process syncing the *same* source fail fast with :class:`~cfstream.errors.DatasetBusyError`.

The sink calls :meth:`StateStore.save_checkpoints` only after the commit that holds every record
yielded before those checkpoints.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import orjson

from cfstream.errors import DatasetBusyError, StateError
from cfstream.records import Checkpoint

__all__ = ("StateStore", "local_path", "state_dir_for")

STATE_VERSION = 1


def local_path(uri: str) -> Path | None:
    """The local filesystem path of a dataset URI, or None for object stores (s3://, gs://, ...)."""
    if uri.startswith("file://"):
        return Path(uri[len("file://") :])
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", uri):
        return None
    return Path(uri)


def state_dir_for(dataset_uri: str) -> Path:
    """Where cfstream keeps its files for a local dataset: ``<dataset>/_cfstream``."""
    p = local_path(dataset_uri)
    if p is None:
        raise StateError(
            f"dataset {dataset_uri!r} is not on the local filesystem: pass state_path= to keep "
            "the sync state somewhere local"
        )
    return p / "_cfstream"


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "_"


class StateStore:
    """Cursors per (source, partition), stored as JSON next to the dataset."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._locks: dict[str, IO[bytes]] = {}

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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "ab") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

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
        """Apply ``fn(state_dict)`` under the lock, on a fresh read, and save atomically."""
        with self._locked():
            data = self.load()
            fn(data)
            data["version"] = STATE_VERSION
            self._write(data)

    def save_checkpoints(self, checkpoints: Iterable[Checkpoint]) -> int:
        """Persist the cursors of ``checkpoints`` (later ones win). Returns how many were saved."""
        cps = [c for c in checkpoints if c.source is not None]
        if not cps:
            return 0
        now = time.time()

        def apply(data: dict[str, Any]) -> None:
            for cp in cps:
                assert cp.source is not None
                src = data["sources"].setdefault(cp.source, {})
                parts = src.setdefault("partitions", {})
                key = cp.partition or ""
                if cp.cursor is None:
                    parts.pop(key, None)
                else:
                    parts[key] = dict(cp.cursor)
                src["last_checkpoint"] = now

        self.update(apply)
        return len(cps)

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


def _dumps(data: dict[str, Any]) -> bytes:
    """The state as JSON. A cursor holding lone surrogates (a file name that is not valid UTF-8,
    as ``os.fsdecode`` gives it) is written with ``\\udcXX`` escapes, which :func:`_loads` reads
    back to the same text: the file's entry still matches on the next run."""
    try:
        return orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    except TypeError as exc:
        if "surrogates" not in str(exc):
            raise
        return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=True).encode()


def _loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "surrogate" not in str(exc):
            raise
        return json.loads(raw)  # lone surrogate escapes, written by _dumps
