"""Obsidian vaults: notes, frontmatter, tags, wikilinks and folders.

Every markdown note of the vault becomes a record whose source id is its vault-relative POSIX path
(``Notes/Meeting.md``):

* YAML frontmatter: ``title``, ``tags``/``tag``, ``aliases``/``alias``, ``author``/``authors``,
  ``contributors`` and the dates (``created``/``date``/``created_at``..., ``updated``/``modified``/``updated_at``...) go
  to their columns; every other key goes to ``custom_metadata`` as ``obsidian_<key>`` (values as
  strings: lists and mappings as JSON). Inline ``#tags`` in the body join the frontmatter tags.
* ``[[wikilinks]]``, ``[[note|alias]]``, ``[[note#heading]]``, ``![[embeds]]``, markdown links to
  vault files and ``"[[links]]"`` in frontmatter values become ``reference`` relationships to the
  target note's record, resolved the way Obsidian resolves them: a ``./``/``../`` path relative to
  the note, then an exact vault path, then the files whose name matches and whose path ends with
  the link (same folder first, then the shortest path). A link to an attachment or excluded file
  that exists is a relationship with ``path`` set; a link to nothing is kept in
  ``obsidian_unresolved_links`` (a JSON list), never dropped.
* Folders: the note's folder is its ``collection``; each folder is a ``collection_header`` record
  (source id ``"<folder>/"``, the vault root ``"/"``) and notes are ``member_of`` it.

Links make a note depend on other files: when a note that another note links to is added, deleted
or renamed, the linking note is re-imported so its relationships stay right (the item store records
how each link resolved; the links are checked again only when the vault's file list changed). See :mod:`cfstream.sources._files` for scanning, partitions and incremental
sync, and ``docs/connectors/obsidian.md`` for the user guide.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, ClassVar
from urllib.parse import quote, unquote

import orjson
import yaml
from pydantic import Field

from cfstream import safe_yaml
from cfstream.records import Document, Relationship, parse_timestamp
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

__all__ = ("ObsidianConfig", "ObsidianSource", "VaultIndex", "parse_note_links")

_CREATED_KEYS = ("created", "created_at", "date_created", "creation_date", "date")
_UPDATED_KEYS = ("updated", "updated_at", "modified", "date_modified", "last_modified", "lastmod")

_WIKILINK = re.compile(r"(!?)\[\[([^\[\]\n]+?)\]\]")
_MDLINK = re.compile(r"(!?)\[([^\]\n]*)\]\((<[^>\n]+>|[^)\s]+)(?:\s+\"[^\"\n]*\")?\)")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_TAG = re.compile(r"(?<![^\s])#([^\s!\"#$%&'()*+,.:;<=>?@\[\\\]^`{|}~]+)")
_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[^\n]*\n.*?^[ \t]*\1[`~]*[ \t]*$", re.M | re.S)
_INLINE_CODE = re.compile(r"`[^`\n]+`")
_COMMENT = re.compile(r"%%.*?%%|<!--.*?-->", re.S)
_KEY = re.compile(r"[^0-9A-Za-z]+")


class ObsidianConfig(SourceConfig):
    """Settings of an Obsidian source (the ``obsidian`` type in a YAML config)."""

    vault_path: str = path_option("the vault folder (the one holding .obsidian/)")
    include: list[str] = Field(
        default_factory=lambda: ["**/*.md"],
        min_length=1,
        description="globs over vault-relative paths that notes must match (`**` spans folders)",
    )
    exclude: list[str] = Field(
        default_factory=list, description="globs over vault-relative paths to leave out"
    )
    vault_name: str | None = Field(
        default=None, description="name used in obsidian:// URLs; default: the folder's name"
    )
    folder_headers: bool = Field(
        default=True, description="a `collection_header` record per folder"
    )
    checkpoint_every: int = Field(
        default=1000, ge=1, description="files between two checkpoints inside one folder"
    )
    max_file_bytes: int = Field(
        default=DEFAULT_MAX_FILE_BYTES,
        ge=1,
        description="a bigger file is not read: it becomes a dead letter (default 32 MiB)",
    )
    max_concurrency: int | None = Field(
        default=None, ge=1, description="top-level folders read at once"
    )


@dataclass(slots=True)
class _Link:
    target: str  # the link path as written (no #heading, no |alias)
    subpath: str | None  # "#Heading" or "#^block"
    alias: str | None
    embed: bool
    kind: str  # "link", "embed" or "property"


def _split_link(inner: str, embed: bool, kind: str) -> _Link | None:
    inner = inner.replace("\\|", "|")
    target, _, alias = inner.partition("|")
    path, hash_, sub = target.partition("#")
    path = path.strip()
    if not path:  # [[#heading]]: a link inside the same note
        return None
    return _Link(path, f"#{sub.strip()}" if hash_ else None, alias.strip() or None, embed, kind)


def _strip_code(body: str) -> str:
    body = _FENCE.sub(" ", body)
    body = _COMMENT.sub(" ", body)
    return _INLINE_CODE.sub(" ", body)


def parse_note_links(body: str) -> list[_Link]:
    """The wikilinks, embeds and internal markdown links of a note body, in order (code ignored)."""
    text = _strip_code(body)
    found: list[tuple[int, _Link]] = []
    for m in _WIKILINK.finditer(text):
        embed = bool(m.group(1))
        link = _split_link(m.group(2), embed, "embed" if embed else "link")
        if link is not None:
            found.append((m.start(), link))
    for m in _MDLINK.finditer(text):
        raw = m.group(3)
        if raw.startswith("<"):
            raw = raw[1:-1]
        if raw.startswith("#") or _SCHEME.match(raw):
            continue
        embed = bool(m.group(1))
        link = _split_link(unquote(raw), embed, "embed" if embed else "link")
        if link is not None:
            link.alias = m.group(2).strip() or None
            found.append((m.start(), link))
    found.sort(key=lambda t: t[0])
    return [link for _, link in found]


def _inline_tags(body: str) -> list[str]:
    tags = []
    for m in _TAG.finditer(_strip_code(body)):
        tag = m.group(1).rstrip("/")
        if tag and not tag.replace("/", "").isdigit():
            tags.append(tag)
    return tags


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)


def _as_list(value: Any, *, split: bool) -> list[str]:
    """A frontmatter list-ish value (``[a, b]``, ``"a, b"``, ``"a"``) as a list of strings."""
    if value is None:
        return []
    if isinstance(value, str):
        parts = re.split(r"[,\s]+", value) if split else value.split(",")
        return [p.strip() for p in parts if p.strip()]
    if isinstance(value, list | tuple):
        return [str(v).strip() for v in value if v is not None and str(v).strip()]
    return [str(value)]


def _link_text(value: str) -> str:
    """``"[[Steph Ango|Steph]]"`` -> ``"Steph"``; plain text unchanged."""
    m = _WIKILINK.fullmatch(value.strip())
    if not m:
        return value.strip()
    target, _, alias = m.group(2).partition("|")
    return (alias or target.partition("#")[0]).strip()


def _meta_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, list | tuple | dict):
        return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    return str(value)


def _date(value: Any) -> datetime | None:
    if isinstance(value, datetime | date):
        return parse_timestamp(value)
    if isinstance(value, str):
        try:
            return parse_timestamp(value.strip())
        except ValueError:
            return None
    return None


def split_frontmatter(text: str) -> tuple[dict[str, Any], str] | str:
    """``(frontmatter, body)`` of a note, or the reason its frontmatter is broken."""
    if not text.startswith("---"):
        return {}, text
    first, nl, rest = text.partition("\n")
    if first.rstrip() != "---":
        return {}, text
    lines = rest.split("\n")
    for i, line in enumerate(lines):
        if line.rstrip() in ("---", "..."):
            yaml_text = "\n".join(lines[:i])
            body = "\n".join(lines[i + 1 :])
            break
    else:
        return "the frontmatter opened with '---' on line 1 is never closed by a '---' line"
    try:
        data = safe_yaml.load(yaml_text)
    except yaml.YAMLError as exc:  # with safe_yaml.YAMLLimitError: an alias bomb, too deep
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 2}, column {mark.column + 1} of the note"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        return f"the YAML frontmatter is broken{where}: {problem}"
    if data is None:
        return {}, body
    if not isinstance(data, dict):
        return f"the frontmatter must be a mapping of keys to values, not a {type(data).__name__}"
    return {str(k): v for k, v in data.items()}, body


@dataclass(slots=True)
class VaultIndex:
    """Every file of a vault, indexed for link resolution the way Obsidian resolves links."""

    notes: set[str] = field(default_factory=set)
    paths: dict[str, str] = field(default_factory=dict)  # lower-cased path -> path
    names: dict[str, list[str]] = field(default_factory=dict)  # lower-cased file name -> paths
    #: links (not relative) whose answer is the same from every note: their answer, this scan
    _unique: dict[str, str | None] = field(default_factory=dict, repr=False)

    @classmethod
    def from_scan(cls, scan: TreeScan) -> VaultIndex:
        """Index the files a scan found; ``notes`` are the ones imported as records."""
        idx = cls(notes={e.rel for files in scan.documents.values() for e in files})
        for rel in scan.all_files():
            idx.paths.setdefault(rel.lower(), rel)
            idx.names.setdefault(posixpath.basename(rel).lower(), []).append(rel)
        return idx

    def resolve(self, link: str, source: str) -> str | None:
        """The vault path ``link`` (written in the note ``source``) points at, or None."""
        if link in self._unique:
            return self._unique[link]
        return self._resolve(link, source)

    def _resolve(self, link: str, source: str) -> str | None:
        lp = link.strip().replace("\\", "/")
        relative = lp.startswith(("./", "../"))
        lp = lp.lstrip("/")
        if not lp:
            return None
        cands = [lp] if lp.lower().endswith(".md") else [lp, f"{lp}.md"]
        if relative:
            base = posixpath.normpath(posixpath.join(folder_of(source), lp))
            for c in (base, f"{base}.md"):
                hit = self.paths.get(c.lower())
                if hit is not None:
                    return hit
            return None
        for c in cands:
            hit = self.paths.get(c.lower())
            if hit is not None:
                return hit
        lowered = [c.lower() for c in cands]
        matches: list[str] = []
        for c in lowered:
            for rel in self.names.get(posixpath.basename(c), ()):
                rl = rel.lower()
                if any(rl == x or rl.endswith("/" + x) for x in lowered):
                    matches.append(rel)
        if len(matches) <= 1:
            # no candidate or one: the answer does not depend on the linking note, so it is
            # remembered for this scan (links are checked per note on every sync)
            found = matches[0] if matches else None
            self._unique[link] = found
            return found
        here = folder_of(source)
        return min(matches, key=lambda r: (folder_of(r) != here, r.count("/"), len(r), r))


def _listing_digest(scan: TreeScan) -> str:
    """A digest of every file path a scan found (how links resolve depends on nothing else)."""
    h = hashlib.blake2b(digest_size=16)
    for rel in sorted(scan.all_files()):
        h.update(rel.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()


class ObsidianSource(FileTreeSource):
    """Import an Obsidian vault: notes, their frontmatter, tags and links.

    Args:
        vault_path: the vault folder.
        include / exclude: globs over vault-relative paths (``**`` spans folders); default
            ``["**/*.md"]`` and none. Hidden folders (``.obsidian``, ``.trash``) are never read.
        vault_name: the vault's name in ``obsidian://`` URLs (default: the folder's name).
        folder_headers: emit a ``collection_header`` record per folder (default True).
        checkpoint_every: files between two checkpoints inside one folder.
        max_file_bytes: the largest file read (default 32 MiB); a bigger one is not read but
            dead-lettered with its size, and read once it fits (it shrinks or this is raised).
        name: the source's name in the sync state (default ``"obsidian"``).
        max_concurrency: top-level folders read at once.

    Example::

        cf.run(ObsidianSource(vault_path="~/Notes") | LanceSink("kb.lance"))
    """

    source_type: ClassVar[str] = "obsidian"
    config_model: ClassVar[type[SourceConfig] | None] = ObsidianConfig
    positional_option: ClassVar[str | None] = "vault_path"

    def __init__(
        self,
        vault_path: str | os.PathLike[str] | None = None,
        /,
        *,
        name: str | None = None,
        **options: Any,
    ) -> None:
        if vault_path is not None:
            options["vault_path"] = vault_path
        cfg = validate_options(ObsidianConfig, self.source_type, options)
        self.config: ObsidianConfig = cfg
        super().__init__(
            cfg.vault_path,
            include=cfg.include,
            exclude=cfg.exclude,
            folder_headers=cfg.folder_headers,
            checkpoint_every=cfg.checkpoint_every,
            max_file_bytes=cfg.max_file_bytes,
            name=name,
            max_concurrency=cfg.max_concurrency,
        )
        self.vault_name = cfg.vault_name or self.root.resolve().name
        self._indexed: TreeScan | None = None
        self._built: VaultIndex | None = None
        self._digest: str | None = None
        self._index_lock = threading.Lock()

    # -- FileTreeSource hooks ----------------------------------------------------------------

    def prepare(self, scan: TreeScan) -> None:
        """Take the digest of the vault's file list; its index is built when a link is resolved
        (a sync in which no file came or went resolves none)."""
        digest = _listing_digest(scan)
        with self._index_lock:
            self._indexed, self._built, self._digest = scan, None, digest

    @property
    def _index(self) -> VaultIndex:
        """The index of the last scan's files, built on first use."""
        with self._index_lock:
            if self._built is None:
                self._built = (
                    VaultIndex.from_scan(self._indexed)
                    if self._indexed is not None
                    else VaultIndex()
                )
            return self._built

    def deps_digest(self, scan: TreeScan) -> str | None:
        """The digest of the vault's file list: links resolve the same while it does not move."""
        with self._index_lock:
            if scan is self._indexed and self._digest is not None:
                return self._digest
        return _listing_digest(scan)

    def deps_changed(self, entry: FileEntry, deps: Any, scan: TreeScan) -> bool:
        """True when one of the note's links now resolves differently (a target came or went)."""
        if not isinstance(deps, dict):
            return False
        resolve = self._index.resolve
        return any(resolve(link, entry.rel) != target for link, target in deps.items())

    def collection_name(self, folder: str) -> str:
        """A folder's vault-relative path; the vault's name for the root."""
        return folder or self.vault_name

    def folder_header(self, folder: str) -> Document:
        """The ``collection_header`` record of a vault folder."""
        doc = Document(
            source_id=header_id(folder),
            title=posixpath.basename(folder) or self.vault_name,
            record_type="collection_header",
            collection=self.collection_name(folder),
            custom_metadata={"obsidian_path": folder or "/", "obsidian_vault": self.vault_name},
        )
        if folder:
            parent = folder_of(folder)
            doc.relate(
                "parent",
                self.record_uuid(header_id(parent)),
                title=self.collection_name(parent),
            )
        return doc

    def url_for(self, rel: str) -> str:
        """The ``obsidian://open`` URL of a note."""
        return f"obsidian://open?vault={quote(self.vault_name, safe='')}&file={quote(rel, safe='')}"

    def parse(self, entry: FileEntry, data: bytes, scan: TreeScan) -> Parsed | ParseFailure:
        """Turn a note's bytes into a document (runs in a worker thread)."""
        text = decode_utf8(entry, data)
        if isinstance(text, ParseFailure):
            return text
        split = split_frontmatter(text)
        if isinstance(split, str):
            return ParseFailure(
                f"{entry.rel}: {split}; fix the YAML between the '---' lines",
                {"path": entry.rel, "head": text[:500]},
            )
        fm, body = split
        lower = {k.lower(): k for k in fm}
        used: set[str] = set()

        def take(*keys: str) -> Any:
            for key in keys:
                if key in lower:
                    used.add(lower[key])
                    return fm[lower[key]]
            return None

        rel = entry.rel
        folder = folder_of(rel)
        title_value = take("title")
        title = (
            str(title_value).strip()
            if title_value not in (None, "")
            else (posixpath.splitext(posixpath.basename(rel))[0])
        )
        tags: list[str] = []
        for tag in [
            *_as_list(take("tags", "tag"), split=True),
            *_inline_tags(body),
        ]:
            tag = tag.lstrip("#")
            if tag and tag not in tags:
                tags.append(tag)
        aliases = [_link_text(a) for a in _as_list(take("aliases", "alias"), split=False)]
        authors = [_link_text(a) for a in _as_list(take("author", "authors"), split=False)]
        contributors = authors[1:] + [
            _link_text(c) for c in _as_list(take("contributors"), split=False)
        ]
        created_fs, modified_fs = file_times(entry)
        created = updated = None
        for key in _CREATED_KEYS:
            if key in lower and (created := _date(fm[lower[key]])) is not None:
                used.add(lower[key])
                break
        for key in _UPDATED_KEYS:
            if key in lower and (updated := _date(fm[lower[key]])) is not None:
                used.add(lower[key])
                break

        meta: dict[str, Any] = {}
        for key, value in fm.items():
            if key in used or value is None or value in ("", [], {}):
                continue
            meta_key = "obsidian_" + (_KEY.sub("_", key).strip("_").lower() or "key")
            meta[meta_key] = _meta_value(value)

        links = [
            link
            for value in fm.values()
            for s in _strings(value)
            for m in _WIKILINK.finditer(s)
            if (link := _split_link(m.group(2), False, "property")) is not None
        ]
        links.extend(parse_note_links(body))
        doc = Document(
            source_id=rel,
            title=title,
            text_content=body,
            source_url=self.url_for(rel),
            author=authors[0] if authors else None,
            contributors=contributors or None,
            tags=tags or None,
            created_at=created or created_fs,
            updated_at=updated or modified_fs,
            source_updated_at=modified_fs,
            collection=self.collection_name(folder),
            local_path=entry.path,
        )
        deps: dict[str, str | None] = {}
        unresolved: list[str] = []
        seen: set[tuple[str, str]] = set()
        rels: list[Relationship] = []
        resolve = self._index.resolve
        for link in links:
            if link.target not in deps:
                deps[link.target] = resolve(link.target, rel)
            target = deps[link.target]
            if target is None:
                if link.target not in unresolved:
                    unresolved.append(link.target)
                continue
            if (target, link.kind) in seen:
                continue
            seen.add((target, link.kind))
            description = link.kind + (f" to {link.subpath}" if link.subpath else "")
            label = link.alias or link.target + (link.subpath or "")
            if target in self._index.notes:
                rels.append(
                    Relationship(
                        "reference",
                        id=self.record_uuid(target),
                        path=target,
                        title=label,
                        description=description,
                    )
                )
            else:  # an attachment or an excluded file: not a record, point at its path
                rels.append(
                    Relationship("reference", path=target, title=label, description=description)
                )
        doc.relationships = rels or None
        self.member_of(doc, folder)
        meta.update(
            obsidian_path=rel,
            obsidian_folder=folder,
            obsidian_vault=self.vault_name,
        )
        if aliases:
            meta["obsidian_aliases"] = _meta_value(aliases)
        if unresolved:
            meta["obsidian_unresolved_links"] = _meta_value(unresolved)
        doc.custom_metadata = meta
        return Parsed(doc, deps or None)
