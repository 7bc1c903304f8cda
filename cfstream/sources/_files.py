"""Walking a folder of files and syncing it incrementally; shared by the Obsidian and files sources.

:class:`FileTreeSource` does everything that does not depend on the file format:

* **Scanning.** An ``os.scandir`` walk (in a worker thread) lists every file under the root with
  its size and mtime: one walk of the whole tree per run when the subclass needs it
  (:attr:`FileTreeSource.whole_tree`, Obsidian: links are resolved against the whole vault), else
  one walk of each top-level folder when its partition is read (the files source), so a run holds
  one partition's listing at a time. Hidden entries (``.obsidian/``, ``.trash/``, ``.git/``,
  dotfiles) are skipped; a symlink is followed only when its resolved target is inside the root,
  and a symlinked folder only when the walk does not reach its target anyway (a target under a
  hidden folder): a folder's files are found once, under their own path, and link cycles end.
  ``include``/``exclude`` globs (``**`` spans folders) decide which files become documents. A
  file or folder whose name is not valid UTF-8 is imported: the stored ids hold each undecodable byte as ``\\xNN`` (see :func:`cfstream.records.escape_surrogates`).
* **Partitions.** Each top-level folder is a partition, plus ``""`` for the files at the root. A
  folder that disappeared since the last sync stays a partition for one more run, so its files are
  tombstoned.
* **Incremental sync.** The state's item store (:class:`~cfstream.contract.state.ItemStore`) keeps, per
  partition, each file's root-relative POSIX path with ``[mtime_ns, size, content_hash, deps]``;
  the partition's cursor is a constant marker, and each checkpoint carries only the entries that
  changed (so a sync costs what changed plus a walk, whatever the folder's size). A file whose mtime and size match is not read at all; a
  file that was touched but whose bytes hash the same is skipped too (both are counted with
  ``ctx.skipped_unchanged``). ``deps`` is a subclass's record of what else the document depends
  on (Obsidian: how its links resolved); when :meth:`FileTreeSource.deps_changed` says it changed,
  the file is read again even though its bytes did not change. That is asked only when
  :meth:`FileTreeSource.deps_digest` (Obsidian: a digest of the vault's file list) moved since
  the partition's cursor recorded it, which it does once every entry was checked. Paths in the
  cursor but gone from the folder become :class:`~cfstream.records.Tombstone` s (a rename is a
  delete plus an add).
* **Folders.** With ``folder_headers`` on, every folder holding at least one document (and each of
  its ancestors, up to the root, whose source id is ``"/"``) is a ``collection_header`` record
  with source id ``"<folder>/"``; cursor keys ending in ``/`` track them.
* **Reading.** Files are read and parsed in batches, one worker-thread call per batch (never a
  thread per file); a checkpoint follows every ``checkpoint_every`` files and ends each partition.
  The scan's containment holds at read time too: each folder of the path and the file are opened
  with ``O_NOFOLLOW`` relative to their parent (a path the scan reached through a symlink inside
  the root is resolved and opened the same way from the root), so a file or folder swapped for a
  symlink between the scan and the read is not followed. Such a file is skipped with a warning
  and counted as skipped, not dead-lettered (it is not bad, it changed): its cursor entry is left
  as it was, so the next run sees what it became (a symlink out of the root is then ignored and
  the record, if any, tombstoned).
* **Size limit.** A file bigger than ``max_file_bytes`` (by the scan's size, the open file's size,
  or because it grew while read: at most ``max_file_bytes + 1`` bytes are read) becomes a dead
  letter naming its size, the limit and the option; the cursor keeps :data:`TOO_LARGE` as its
  hash, so it is not looked at again until its size or mtime change or it fits under a raised
  limit.
"""

from __future__ import annotations

import errno
import hashlib
import os
import posixpath
import re
import stat
from abc import abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import anyio.to_thread

from cfstream.contract.context import SourceContext
from cfstream.errors import SourceError
from cfstream.records import Checkpoint, Document, ItemChanges, Tombstone
from cfstream.sources.base import Source, SourceOutput

__all__ = (
    "DEFAULT_MAX_FILE_BYTES",
    "TOO_LARGE",
    "FileEntry",
    "FileTreeSource",
    "Parsed",
    "ParseFailure",
    "TreeScan",
    "compile_glob",
    "content_hash",
    "folder_of",
    "header_id",
    "scan_tree",
)

#: cursor key of the header of the root folder
ROOT_HEADER = "/"
#: a partition's cursor: its entries live in the state's item store
_CURSOR = {"v": 2}


def _legacy_entries(cursor: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The entries of a cursor saved before the item store (the partition's whole
    ``{path: [mtime_ns, size, digest, deps]}`` map), or None."""
    if not cursor or cursor.get("v") == _CURSOR["v"]:
        return None
    return {k: v for k, v in cursor.items() if isinstance(v, list)}


#: default ``max_file_bytes``: the largest file read into a record (bigger ones are dead letters)
DEFAULT_MAX_FILE_BYTES = 32 * 1024 * 1024

#: what the cursor keeps as the hash of a file skipped for its size: it is looked at again only
#: when its size or mtime change, or when it fits under a raised ``max_file_bytes``
TOO_LARGE = "too-large"

_NOFOLLOW: int = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY: int = getattr(os, "O_DIRECTORY", 0)
_CLOEXEC: int = getattr(os, "O_CLOEXEC", 0)
_NONBLOCK: int = getattr(os, "O_NONBLOCK", 0)  # a FIFO swapped in must not block the open
#: open each path component relative to its folder, never following a symlink (POSIX)
_OPENAT = bool(_NOFOLLOW and _DIRECTORY) and os.open in os.supports_dir_fd


@lru_cache(maxsize=256)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """Compile a glob over root-relative POSIX paths into a regex.

    ``*`` and ``?`` stay inside one path segment, ``**`` spans any number of segments (``**/x``
    also matches ``x`` at the root), ``[abc]`` is a character class. Matching is case-sensitive.
    """
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                i += 2
                if i < n and pattern[i] == "/":
                    i += 1
                    out.append("(?:.*/)?")
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


def matches_any(path: str, patterns: Sequence[str]) -> bool:
    """True when ``path`` matches one of the globs (see :func:`compile_glob`)."""
    return any(compile_glob(p).match(path) for p in patterns)


def content_hash(data: bytes) -> str:
    """The hash of a file's bytes kept in the cursor (blake2b, 16 bytes, hex)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def folder_of(rel: str) -> str:
    """The folder of a root-relative path (``""`` for a file at the root)."""
    return posixpath.dirname(rel)


def header_id(folder: str) -> str:
    """The source id of a folder's ``collection_header`` record: ``"<folder>/"``, root ``"/"``."""
    return f"{folder}/" if folder else ROOT_HEADER


@dataclass(slots=True, frozen=True)
class FileEntry:
    """One file found by the scan: its root-relative POSIX path, mtime and size.

    ``linked`` is True when the path goes through a symlink (to a file or folder inside the root).
    ``root`` is the folder the scan walked, as given (one string shared by every entry): the
    absolute path is derived from it rather than stored, so a scan of N files holds N short
    paths, not 2N.
    """

    rel: str
    mtime_ns: int
    size: int
    linked: bool = False
    root: str = ""

    @property
    def path(self) -> str:
        """The file's path: the scanned folder joined with :attr:`rel` (through any symlink)."""
        return os.path.join(self.root, self.rel) if self.root else self.rel

    @property
    def partition(self) -> str:
        """The top-level folder holding the file (``""`` at the root)."""
        head, sep, _ = self.rel.partition("/")
        return head if sep else ""

    @property
    def mtime(self) -> datetime:
        """The modification time as an aware UTC datetime."""
        return datetime.fromtimestamp(self.mtime_ns / 1e9, UTC)


@dataclass(slots=True)
class TreeScan:
    """What one walk of the root found.

    ``documents`` are the files that pass ``include``/``exclude``, grouped by partition; ``others``
    the rest (attachments, excluded files), by partition too (:meth:`all_files` iterates both).
    """

    root: str
    documents: dict[str, list[FileEntry]] = field(default_factory=dict)
    others: dict[str, list[str]] = field(default_factory=dict)
    escaping_symlinks: list[str] = field(default_factory=list)
    #: the one partition walked, or None for the whole tree
    partition: str | None = None

    def all_files(self) -> Iterator[str]:
        """Every file's root-relative path: the documents', then the others'."""
        for files in self.documents.values():
            for e in files:
                yield e.rel
        for rels in self.others.values():
            yield from rels

    @property
    def partitions(self) -> list[str]:
        """The top-level folders seen (with ``""``, always), sorted."""
        return sorted({"", *self.documents, *self.others})


def _walked_directly(target: str, real_root: str) -> bool:
    """True when the folder ``target`` (a resolved path inside ``real_root``) is reached by the
    walk through real folders: no folder on its way from the root is hidden."""
    rel = target[len(real_root) + 1 :]
    return not any(part.startswith(".") for part in rel.split(os.sep) if part)


def scan_tree(
    root: Path, include: Sequence[str], exclude: Sequence[str], partition: str | None = None
) -> TreeScan:
    """Walk ``root`` (blocking: call it in a worker thread); see the module docstring.

    With ``partition``, only that top-level folder is walked (``""``: only the files at the
    root), so a source can hold one partition's listing at a time. A symlinked folder whose
    target the walk reaches anyway (through folders that are not hidden) is not entered: its
    files are found under their own path, in their own partition.
    """
    real_root = os.path.realpath(root)
    scan = TreeScan(root=real_root, partition=partition)
    root_st = os.stat(root)
    given = str(root)  # one string shared by every entry (FileEntry.path is derived from it)
    visited: set[tuple[int, int]] = {(root_st.st_dev, root_st.st_ino)}  # folders entered
    stack: list[tuple[str, str, bool]] = [(str(root), "", False)]  # folder, rel prefix, linked
    while stack:
        directory, prefix, linked = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        top = not prefix
        for entry in entries:
            name = entry.name
            if name.startswith(".") or (top and partition and name != partition):
                continue
            rel = f"{prefix}{name}"
            try:
                is_link = entry.is_symlink()
                if is_link:
                    target = os.path.realpath(entry.path)
                    if target != real_root and not target.startswith(real_root + os.sep):
                        scan.escaping_symlinks.append(rel)
                        continue
                    st = os.stat(entry.path)
                else:
                    st = entry.stat(follow_symlinks=False)
            except OSError:  # a broken link or a file removed during the walk
                continue
            if stat.S_ISDIR(st.st_mode):
                if (top and partition == "") or (is_link and _walked_directly(target, real_root)):
                    continue
                key = (st.st_dev, st.st_ino)
                if key not in visited:  # a folder reached twice through links is walked once
                    visited.add(key)
                    stack.append((entry.path, f"{rel}/", linked or is_link))
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            fe = FileEntry(rel, st.st_mtime_ns, st.st_size, linked or is_link, given)
            if matches_any(rel, include) and not matches_any(rel, exclude):
                scan.documents.setdefault(fe.partition, []).append(fe)
            else:
                scan.others.setdefault(fe.partition, []).append(rel)
    for files in scan.documents.values():
        files.sort(key=lambda f: f.rel)
    return scan


@dataclass(slots=True)
class Parsed:
    """A file turned into a document, plus what it depends on (stored in the cursor)."""

    document: Document
    deps: Any = None


@dataclass(slots=True)
class ParseFailure:
    """A file that could not be turned into a document; it goes to the dead-letter file."""

    reason: str
    payload: Any = None


@dataclass(slots=True)
class _Read:
    entry: FileEntry
    digest: str | None  # None: the file vanished before it was read
    result: Parsed | ParseFailure | None  # None: the bytes did not change
    skipped: str | None = None  # why the file was not read: it changed between scan and read


class _Swapped(Exception):
    """The path no longer leads to the regular file inside the root that the scan found."""


def _open_in_root(real_root: str, entry: FileEntry) -> int:
    """An open read-only descriptor of ``entry``'s file, found without leaving ``real_root``.

    On POSIX each folder of the path is opened relative to its parent with ``O_NOFOLLOW``, and the
    file too, so a file or folder swapped for a symlink after the scan is refused at open time
    (:class:`_Swapped`) instead of followed. A path the scan reached through a symlink inside the
    root is resolved first and opened the same way from the root, so it too ends inside the root.
    """
    rel = entry.rel
    if entry.linked or not _OPENAT:
        real = os.path.realpath(entry.path)
        if not real.startswith(real_root + os.sep):
            raise _Swapped("it now leads outside the folder through a symlink")
        if not _OPENAT:  # no openat(): the realpath check above is the containment
            return os.open(real, os.O_RDONLY | _CLOEXEC | _NONBLOCK)
        rel = os.path.relpath(real, real_root).replace(os.sep, "/")
    *folders, name = rel.split("/")
    dir_fd = os.open(real_root, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
    try:
        for folder in folders:
            parent, dir_fd = dir_fd, -1
            try:
                dir_fd = os.open(
                    folder, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=parent
                )
            finally:
                os.close(parent)
        return os.open(name, os.O_RDONLY | _NOFOLLOW | _CLOEXEC | _NONBLOCK, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):  # a symlink on the way
            raise _Swapped(
                "it or one of its folders was replaced since the scan (by a symlink, which is "
                "not followed)"
            ) from None
        raise
    finally:
        if dir_fd >= 0:
            os.close(dir_fd)


class FileTreeSource(Source):
    """Base of sources that import a folder of files; see the module docstring.

    Subclasses implement :meth:`parse` (runs in a worker thread) and :meth:`folder_header`, and
    may override :meth:`prepare` and :meth:`deps_changed`.
    """

    #: True: one walk of the whole tree per run, before any partition is read (what
    #: :meth:`prepare` indexes, e.g. Obsidian's link targets); False: each partition walks its own
    #: top-level folder when it is read, so a run holds one partition's listing at a time
    whole_tree: ClassVar[bool] = True
    #: files read per worker-thread call (also capped by ``batch_bytes``)
    batch_files: int = 64
    batch_bytes: int = 4 * 1024 * 1024

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        include: Sequence[str],
        exclude: Sequence[str] = (),
        folder_headers: bool = True,
        checkpoint_every: int = 1000,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        name: str | None = None,
        max_concurrency: int | None = None,
    ) -> None:
        super().__init__(name=name, max_concurrency=max_concurrency)
        if checkpoint_every < 1:
            raise ValueError("checkpoint_every must be at least 1")
        if max_file_bytes < 1:
            raise ValueError("max_file_bytes must be at least 1")
        if not include:
            raise ValueError("include needs at least one glob, e.g. ['**/*.md']")
        self.root = Path(root).expanduser()
        self.include = tuple(include)
        self.exclude = tuple(exclude)
        self.folder_headers = folder_headers
        self.checkpoint_every = checkpoint_every
        self.max_file_bytes = max_file_bytes
        self._scan: TreeScan | None = None
        for pattern in (*self.include, *self.exclude):
            compile_glob(pattern)

    # -- hooks -------------------------------------------------------------------------------

    @abstractmethod
    def parse(self, entry: FileEntry, data: bytes, scan: TreeScan) -> Parsed | ParseFailure:
        """Turn one file's bytes into a document (called in a worker thread)."""

    @abstractmethod
    def folder_header(self, folder: str) -> Document:
        """The ``collection_header`` record of ``folder`` (``""`` is the root)."""

    def prepare(self, scan: TreeScan) -> None:
        """Called in the worker thread after each scan (build indexes). Default: nothing."""

    def deps_changed(self, entry: FileEntry, deps: Any, scan: TreeScan) -> bool:
        """True when an unchanged file must be re-read because what it depends on changed."""
        return False

    def deps_digest(self, scan: TreeScan) -> str | None:
        """A digest of everything :meth:`deps_changed` answers from in ``scan`` (Obsidian: the
        vault's file list), or None (default) when there is nothing to check.

        Kept in a partition's cursor once all its entries were checked against that scan: while
        it does not move, no entry of the partition is checked again."""
        return None

    def member_of(self, doc: Document, folder: str) -> None:
        """Put ``doc`` in the collection of ``folder`` and relate it to the folder's header."""
        if self.folder_headers:
            doc.relate(
                "member_of",
                self.record_uuid(header_id(folder)),
                title=folder or self.collection_name(""),
            )

    def collection_name(self, folder: str) -> str:
        """The ``collection`` of the documents in ``folder``: its path, or the root's name."""
        return folder or self.root.name

    # -- Source ------------------------------------------------------------------------------

    def _check_root(self) -> None:
        if not self.root.is_dir():
            raise SourceError(
                f"{str(self.root)!r} is not a folder; check the path (it must exist and be "
                "readable)",
                source=self.name,
            )

    async def scan(
        self, ctx: SourceContext | None = None, *, partition: str | None = None
    ) -> TreeScan:
        """Walk the root now (in a worker thread); the whole tree is remembered for this run.

        With ``partition``, only that top-level folder is walked (see :func:`scan_tree`), and
        the result is only returned. :meth:`prepare` is called on each scan."""
        root = self.root
        self._check_root()

        def work() -> TreeScan:
            scan = scan_tree(root, self.include, self.exclude, partition)
            self.prepare(scan)
            return scan

        scan = await anyio.to_thread.run_sync(work)
        if ctx is not None and scan.escaping_symlinks:
            ctx.logger.info(
                "%s: ignored %d symlink(s) pointing outside the folder: %s",
                self.name,
                len(scan.escaping_symlinks),
                ", ".join(scan.escaping_symlinks[:5]),
            )
        if partition is None:
            self._scan = scan
        return scan

    def cursor_scope(self) -> Mapping[str, Any]:
        """The folder, the globs and whether folder headers are records."""
        return {
            "root": os.path.realpath(self.root),
            "include": list(self.include),
            "exclude": list(self.exclude),
            "folder_headers": self.folder_headers,
        }

    async def partitions(self, ctx: SourceContext) -> Sequence[str]:
        """The top-level folders and ``""`` (root files), plus folders synced before but now gone."""
        if self.whole_tree:
            parts = set((await self.scan(ctx)).partitions)
        else:
            self._check_root()
            parts = await anyio.to_thread.run_sync(self._top_folders)
        state = ctx.run.state
        if state is not None and not ctx.full_refresh:
            parts.update(state.cursors(ctx.name))
            if ctx.run.items is not None:
                parts.update(await anyio.to_thread.run_sync(ctx.run.items.partitions, ctx.name))
        return sorted(parts)

    async def read(
        self, partition: str, cursor: Mapping[str, Any] | None, ctx: SourceContext
    ) -> AsyncIterator[SourceOutput]:
        """Yield the partition's changed documents, tombstones and checkpoints.

        What is known of each file comes from the state's item store (``ctx.item_entries``),
        streamed a page at a time; each checkpoint carries only the entries that
        changed since the previous one (:class:`~cfstream.records.ItemChanges`). A cursor saved
        by an older cfstream (the partition's whole map) is read once and moved into the store.
        """
        if not self.whole_tree:
            scan = await self.scan(ctx, partition=partition)
        else:
            scan = self._scan if self._scan is not None else await self.scan(ctx)
        legacy = _legacy_entries(cursor)
        # deps are checked unless the partition's entries were all checked against this listing
        digest = self.deps_digest(scan)
        saved_deps = (
            cursor.get("deps") if cursor and legacy is None and not ctx.full_refresh else None
        )
        checked = saved_deps if isinstance(saved_deps, str) else None
        check_deps = digest is not None and checked != digest
        entries = scan.documents.get(partition, [])
        skipped = len(scan.others.get(partition, []))  # attachments and excluded files
        if skipped:
            ctx.skipped(skipped)

        def saved() -> Iterable[tuple[str, Any]]:
            return legacy.items() if legacy is not None else ctx.item_entries(partition)

        # 1. plan, off the event loop: deletions, new folder headers, files to read
        plan = await anyio.to_thread.run_sync(
            self._plan, partition, entries, saved, scan, check_deps
        )
        gone, new_headers, to_read, unchanged = plan
        # the first checkpoint replaces the partition's entries on a full refresh, and when the
        # cursor was an old-style map (those entries move into the store)
        reset = legacy is not None or ctx.full_refresh
        puts: dict[str, Any] = {}
        if legacy is not None:
            dropped = set(gone)
            puts = {k: v for k, v in legacy.items() if k not in dropped}
        deletes: list[str] = [] if reset else list(gone)
        for key in new_headers:
            puts[key] = []
        if gone or new_headers:
            headers = [
                self.folder_header("" if key == ROOT_HEADER else key[:-1]) for key in new_headers
            ]
            yield [*(Tombstone(key) for key in gone), *headers]
        if unchanged:
            ctx.skipped_unchanged(unchanged)

        def checkpoint(deps: str | None) -> Checkpoint:
            nonlocal puts, deletes, reset
            changes = ItemChanges(put=puts, delete=deletes, reset=reset)
            puts, deletes, reset = {}, [], False
            cur = dict(_CURSOR) if deps is None else {**_CURSOR, "deps": deps}
            return Checkpoint(cur, items=changes if changes else None)

        # the new digest is saved only with the checkpoint after which every entry was checked
        # against this scan: until then, checkpoints keep the one the entries were checked with
        complete = True

        # 2. files, in batches read off the event loop
        since_checkpoint = 0
        batches = list(self._batches([e for e, _ in to_read]))
        known = {e.rel: prev for e, prev in to_read if prev is not None}
        for n, batch in enumerate(batches, 1):
            if ctx.stopping:
                complete = False
                break
            reads = await anyio.to_thread.run_sync(self._read_batch, batch, known, scan)
            docs: list[Document | Tombstone] = []
            for r in reads:
                rel = r.entry.rel
                prev = known.pop(rel, None)
                if r.skipped is not None:  # changed since the scan: the next run sees the change
                    complete = False
                    ctx.skipped()  # (its saved entry stays as it was: no change recorded)
                    ctx.logger.warning("%s: skipped %r: %s", self.name, rel, r.skipped)
                    continue
                if r.digest is None:  # vanished since the scan: deleted
                    puts.pop(rel, None)
                    if prev is not None:
                        docs.append(Tombstone(rel))
                        if not reset:
                            deletes.append(rel)
                    continue
                if r.result is None:  # touched, same bytes
                    ctx.skipped_unchanged()
                    deps = prev[3] if isinstance(prev, list) and len(prev) > 3 else None
                    puts[rel] = [r.entry.mtime_ns, r.entry.size, r.digest, deps]
                elif isinstance(r.result, ParseFailure):
                    ctx.dead_letter(r.result.reason, r.result.payload, source_id=rel)
                    puts[rel] = [r.entry.mtime_ns, r.entry.size, r.digest, None]
                else:
                    docs.append(r.result.document)
                    puts[rel] = [r.entry.mtime_ns, r.entry.size, r.digest, r.result.deps]
            if docs:
                yield docs
            since_checkpoint += len(batch)
            if since_checkpoint >= self.checkpoint_every and n < len(batches):
                since_checkpoint = 0
                yield checkpoint(checked)
        yield checkpoint(digest if complete else checked)

    # -- internals ---------------------------------------------------------------------------

    def _top_folders(self) -> set[str]:
        """``""`` and the top-level folders a partition walk enters (see :func:`scan_tree`)."""
        real_root = os.path.realpath(self.root)
        parts = {""}
        with os.scandir(self.root) as it:
            for entry in it:
                if entry.name.startswith("."):
                    continue
                try:
                    if entry.is_symlink():
                        target = os.path.realpath(entry.path)
                        inside = target.startswith(real_root + os.sep)
                        if not inside or _walked_directly(target, real_root):
                            continue
                    if entry.is_dir():
                        parts.add(entry.name)
                except OSError:
                    continue
        return parts

    def _plan(
        self,
        partition: str,
        entries: list[FileEntry],
        saved: Callable[[], Iterable[tuple[str, Any]]],
        scan: TreeScan,
        check_deps: bool = True,
    ) -> tuple[list[str], list[str], list[tuple[FileEntry, Any]], int]:
        """(keys gone, folder header keys new, (file, saved entry) to read, files unchanged).

        One pass over the partition's saved entries, streamed from the item store a page at a
        time, against the partition's files from the scan: what it keeps beyond the scan's own
        listing is what changed. :meth:`deps_changed` is asked only with ``check_deps``."""
        present = {e.rel: e for e in entries}
        folders = self._folders(partition, entries)
        gone: list[str] = []
        headers_seen: set[str] = set()
        to_read: list[tuple[FileEntry, Any]] = []
        unchanged = 0
        deps_changed = self.deps_changed if check_deps else None
        max_bytes = self.max_file_bytes
        for key, prev in saved():
            if key.endswith("/"):
                if key in folders:
                    headers_seen.add(key)
                else:
                    gone.append(key)
                continue
            e = present.pop(key, None)
            if e is None:
                gone.append(key)
            elif (
                isinstance(prev, list)
                and len(prev) >= 3
                and prev[0] == e.mtime_ns
                and prev[1] == e.size
                and not (prev[2] == TOO_LARGE and e.size <= max_bytes)  # the limit was raised
                and (
                    deps_changed is None
                    or not deps_changed(e, prev[3] if len(prev) > 3 else None, scan)
                )
            ):
                unchanged += 1
            else:
                to_read.append((e, prev))
        to_read.extend((e, None) for e in present.values())  # files not seen before
        to_read.sort(key=lambda t: t[0].rel)
        gone.sort()
        return gone, sorted(folders - headers_seen), to_read, unchanged

    def _folders(self, partition: str, entries: Iterable[FileEntry]) -> set[str]:
        if not self.folder_headers:
            return set()
        keys: set[str] = {ROOT_HEADER} if partition == "" else set()
        last = None
        for e in entries:
            folder = e.rel.rpartition("/")[0]
            if folder == last:  # entries come sorted: most share the previous one's folder
                continue
            last = folder
            while folder:
                key = header_id(folder)
                if key in keys:
                    break
                keys.add(key)
                folder = folder_of(folder)
        return keys

    def _batches(self, entries: list[FileEntry]) -> Iterable[list[FileEntry]]:
        batch: list[FileEntry] = []
        size = 0
        for e in entries:
            batch.append(e)
            size += e.size
            if len(batch) >= self.batch_files or size >= self.batch_bytes:
                yield batch
                batch, size = [], 0
        if batch:
            yield batch

    def _read_batch(
        self, batch: list[FileEntry], known: Mapping[str, Any], scan: TreeScan
    ) -> list[_Read]:
        out: list[_Read] = []
        for e in batch:
            data = self._read_file(e, scan.root)
            if not isinstance(data, bytes):  # vanished, swapped, too large or unreadable
                out.append(data)
                continue
            digest = content_hash(data)
            prev = known.get(e.rel)
            if (
                isinstance(prev, list)
                and len(prev) >= 3
                and prev[2] == digest
                and not self.deps_changed(e, prev[3] if len(prev) > 3 else None, scan)
            ):
                out.append(_Read(e, digest, None))
                continue
            try:
                result = self.parse(e, data, scan)
            except Exception as exc:  # a parser bug must not end the sync: dead-letter the file
                result = ParseFailure(f"{e.rel}: {type(exc).__name__}: {exc}", {"path": e.rel})
            out.append(_Read(e, digest, result))
        return out

    def _read_file(self, e: FileEntry, real_root: str) -> bytes | _Read:
        """The file's bytes, or the :class:`_Read` saying why there are none.

        A file over ``max_file_bytes`` (by the scan's size, the open file's size, or the bytes
        actually there: it may grow) is never read past the limit.
        """
        limit = self.max_file_bytes
        if e.size > limit:
            return self._too_large(e, e.size)
        try:
            fd = _open_in_root(real_root, e)
        except FileNotFoundError:
            return _Read(e, None, None)
        except _Swapped as exc:
            return _Read(e, None, None, skipped=str(exc))
        except OSError as exc:
            return self._unreadable(e, exc)
        with os.fdopen(fd, "rb") as fh:
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    return _Read(e, None, None, skipped="it is no longer a regular file")
                if st.st_size > limit:
                    return self._too_large(e, st.st_size)
                want = st.st_size + 1  # one more byte tells whether it grew since the fstat
                data = fh.read(want)
                if len(data) == want:  # it grew: read on, but never past limit + 1 bytes
                    data += fh.read(limit + 1 - want)
            except OSError as exc:
                return self._unreadable(e, exc)
        if len(data) > limit:
            return self._too_large(e, None)
        return data

    def _too_large(self, e: FileEntry, size: int | None) -> _Read:
        limit = self.max_file_bytes
        what = (
            f"is {size:,} bytes, over the limit of {limit:,} bytes per file"
            if size is not None
            else f"grew past the limit of {limit:,} bytes per file while being read"
        )
        return _Read(
            e,
            TOO_LARGE,
            ParseFailure(
                f"{e.rel} {what}; raise the source's `max_file_bytes` option to import it, or "
                "add it to `exclude`",
                {"path": e.rel, "size": size, "max_file_bytes": limit},
            ),
        )

    @staticmethod
    def _unreadable(e: FileEntry, exc: OSError) -> _Read:
        return _Read(
            e,
            "",
            ParseFailure(
                f"cannot read {e.rel}: {exc.strerror or exc}; check its permissions",
                {"path": e.rel},
            ),
        )


def decode_utf8(entry: FileEntry, data: bytes) -> str | ParseFailure:
    """Decode ``data`` as UTF-8 (a BOM is dropped), or say where it is not UTF-8."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return ParseFailure(
            f"{entry.rel} is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "re-save it as UTF-8 or add it to `exclude`",
            {"path": entry.rel, "head": data[: min(len(data), 200)].decode("utf-8", "replace")},
        )
    return text[1:] if text.startswith("\ufeff") else text


def file_times(entry: FileEntry) -> tuple[datetime, datetime]:
    """``(created, modified)`` of a file: birth time where the OS keeps one, else the mtime."""
    modified = entry.mtime
    try:
        birth = getattr(os.stat(entry.path), "st_birthtime", None)
    except OSError:
        birth = None
    created = datetime.fromtimestamp(birth, UTC) if birth else modified
    return created, modified
