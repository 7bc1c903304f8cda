"""A folder of text files: each file matching ``include`` becomes one record.

The source id is the file's folder-relative POSIX path; the title is the first markdown ``#``
heading of the file, else its name without extension; the folder is the ``collection`` and each
folder is a ``collection_header`` record. Scanning, partitions (top-level folders), incremental
sync by mtime + size + content hash, tombstones for deleted and renamed files, symlink containment
and batched reads off the event loop are shared with the Obsidian source
(:mod:`cfstream.sources._files`). A file that is not valid UTF-8 goes to the dead-letter file.
See ``docs/connectors/files.md``.
"""

from __future__ import annotations

import os
import posixpath
import re
from typing import Any, ClassVar

from pydantic import Field

from cfstream.records import Document
from cfstream.sources._files import (
    DEFAULT_MAX_FILE_BYTES,
    FileEntry,
    FileTreeSource,
    Parsed,
    ParseFailure,
    TreeScan,
    decode_utf8,
    file_times,
    folder_of,
    header_id,
)
from cfstream.sources.base import SourceConfig, path_option
from cfstream.sources.options import validate_options

__all__ = ("FilesConfig", "FilesSource")

_HEADING = re.compile(r"^#[ \t]+(.+?)[ \t#]*$", re.M)


class FilesConfig(SourceConfig):
    """Settings of a files source (the ``files`` type in a YAML config)."""

    path: str = path_option("the folder to import")
    include: list[str] = Field(
        default_factory=lambda: ["**/*.md", "**/*.txt"],
        min_length=1,
        description="globs over folder-relative paths that files must match (`**` spans folders)",
    )
    exclude: list[str] = Field(
        default_factory=list, description="globs over folder-relative paths to leave out"
    )
    folder_headers: bool = Field(
        default=True, description="a `collection_header` record per folder"
    )
    checkpoint_every: int = Field(
        default=1000, ge=1, description="files between two checkpoints inside one top-level folder"
    )
    max_file_bytes: int = Field(
        default=DEFAULT_MAX_FILE_BYTES,
        ge=1,
        description="a bigger file is not read: it becomes a dead letter (default 32 MiB)",
    )
    max_concurrency: int | None = Field(
        default=None, ge=1, description="top-level folders read at once"
    )


class FilesSource(FileTreeSource):
    """Import the text files of a folder (Markdown, text, ...), one record per file.

    Args:
        path: the folder.
        include / exclude: globs over folder-relative paths (``**`` spans folders); default
            ``["**/*.md", "**/*.txt"]`` and none. Hidden files and folders are never read.
        folder_headers: emit a ``collection_header`` record per folder (default True).
        checkpoint_every: files between two checkpoints inside one top-level folder.
        max_file_bytes: the largest file read (default 32 MiB); a bigger one is not read but
            dead-lettered with its size, and read once it fits (it shrinks or this is raised).
        name: the source's name in the sync state (default ``"files"``).
        max_concurrency: top-level folders read at once.

    Example::

        cf.run(FilesSource(path="docs", include=["**/*.md"]) | LanceSink("kb.lance"))
    """

    source_type: ClassVar[str] = "files"
    config_model: ClassVar[type[SourceConfig] | None] = FilesConfig
    positional_option: ClassVar[str | None] = "path"
    #: a file's record depends on nothing else: each partition walks its own folder when read
    whole_tree: ClassVar[bool] = False

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        /,
        *,
        name: str | None = None,
        **options: Any,
    ) -> None:
        if path is not None:
            options["path"] = path
        cfg = validate_options(FilesConfig, self.source_type, options)
        self.config: FilesConfig = cfg
        super().__init__(
            cfg.path,
            include=cfg.include,
            exclude=cfg.exclude,
            folder_headers=cfg.folder_headers,
            checkpoint_every=cfg.checkpoint_every,
            max_file_bytes=cfg.max_file_bytes,
            name=name,
            max_concurrency=cfg.max_concurrency,
        )

    def folder_header(self, folder: str) -> Document:
        """The ``collection_header`` record of a folder."""
        doc = Document(
            source_id=header_id(folder),
            title=posixpath.basename(folder) or self.root.resolve().name,
            record_type="collection_header",
            collection=self.collection_name(folder),
            custom_metadata={"files_path": folder or "/"},
        )
        if folder:
            parent = folder_of(folder)
            doc.relate(
                "parent",
                self.record_uuid(header_id(parent)),
                title=self.collection_name(parent),
            )
        return doc

    def parse(self, entry: FileEntry, data: bytes, scan: TreeScan) -> Parsed | ParseFailure:
        """Turn one file's bytes into a document (runs in a worker thread)."""
        text = decode_utf8(entry, data)
        if isinstance(text, ParseFailure):
            return text
        rel = entry.rel
        stem, ext = posixpath.splitext(posixpath.basename(rel))
        heading = _HEADING.search(text) if ext.lower() in (".md", ".markdown") else None
        created, modified = file_times(entry)
        folder = folder_of(rel)
        doc = Document(
            source_id=rel,
            title=heading.group(1).strip() if heading else stem,
            text_content=text,
            created_at=created,
            updated_at=modified,
            source_updated_at=modified,
            collection=self.collection_name(folder),
            local_path=entry.path,
            source_url=f"file://{os.path.abspath(entry.path)}",
            custom_metadata={
                "files_path": rel,
                "files_extension": ext.lstrip(".").lower(),
                "files_size": str(entry.size),
            },
        )
        self.member_of(doc, folder)
        return Parsed(doc)
