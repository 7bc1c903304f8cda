"""``chunk``: split documents into retrieval-sized chunk records along their Markdown structure.

Each document with text becomes its chunks followed by the document itself::

    chunk 0, chunk 1, ..., [tombstones of stale chunks], parent

A chunk is a :class:`~cfstream.records.Document` of its own: ``source_id`` is
``f"{parent.source_id}#chunk-{i}"`` (so its uuid is deterministic and an edited document overwrites
its chunks in place), ``position`` is ``i``, its first relationship is ``parent`` -> the parent's
uuid (ContextFrame's convention), and its ``custom_metadata`` holds ``cfstream.chunk_of`` (the
parent's uuid), ``cfstream.chunk_index`` and ``cfstream.chunk_count``. The parent keeps its full
text and gains ``cfstream.chunks`` (how many chunks it has), ``cfstream.chunk_hash`` (the content
hash of the document as it reached the stage) and ``cfstream.chunker`` (the splitter's settings).

Chunks come before their parent in the stream and the sink commits in stream order, so a stored
parent means its chunks are stored too. That is what lets the stage skip a parent stored with the
same ``chunk_hash`` and ``chunker``: it is dropped with no chunk work at all. A parent whose chunks
were committed but not itself (a crash in between) is simply chunked again. Chunks an edit made
stale, and the chunks of a deleted document, are removed by tombstones the stage emits before the
parent (or the parent's own tombstone): their number is read from the stored parent.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import anyio

from cfstream.contract.context import StageContext
from cfstream.records import Document, Relationship, Tombstone
from cfstream.transforms.base import AsyncChunkStage, Chunk

__all__ = (
    "CHUNKER_VERSION",
    "ChunkText",
    "MarkdownSplitter",
    "TextChunk",
    "chunk",
    "count_tokens",
)

#: Bumped whenever the splitter's output for the same text and settings changes: stored parents
#: chunked by an older version are then chunked again.
CHUNKER_VERSION: Final = "md1"

#: metadata keys (custom_metadata values are strings)
CHUNK_OF: Final = "cfstream.chunk_of"
CHUNK_INDEX: Final = "cfstream.chunk_index"
CHUNK_COUNT: Final = "cfstream.chunk_count"
CHUNKS: Final = "cfstream.chunks"
CHUNK_HASH: Final = "cfstream.chunk_hash"
CHUNKER: Final = "cfstream.chunker"

# A token is a run of up to 12 word characters or one punctuation character.
_TOKEN: Final = re.compile(r"\w{1,12}|[^\w\s]")
# count_tokens' tables for ASCII text: the pattern's \w and \s among the 128 ASCII characters
_ASCII_WORD: Final = bytes(c for c in range(128) if re.fullmatch(r"\w", chr(c)))
_WORD_OR_SPACE: Final = _ASCII_WORD + bytes(c for c in range(128) if chr(c).isspace())
_WORD_MARKS: Final = bytes(97 if c in _ASCII_WORD else 32 for c in range(256))
_LONG_WORD: Final = b"a" * 13


def count_tokens(text: str) -> int:
    """The approximate token count the splitter budgets with.

    A token is a run of word characters (at most 12: a longer word counts once per 12 characters)
    or a single punctuation character, i.e. the matches of ``\\w{1,12}|[^\\w\\s]``; whitespace is
    free. For English prose this lands within about 25% of BPE tokenizers' counts (they split
    rare words into pieces, this splits off every punctuation mark), needs no tokenizer model or
    download, and is additive: two texts joined by whitespace count as the sum of their counts,
    which the splitter relies on. The cap on word length keeps a long unbroken string (a URL, a
    base64 blob) from passing for one token.
    """
    if not text.isascii():
        n = 0
        for word in text.split():  # str.split's whitespace is the pattern's \s (str.isspace)
            if word.isalnum():  # every character is \w (str.isalnum): ceil(len / 12) tokens
                n += 1 if len(word) <= 12 else (len(word) + 11) // 12
            else:  # punctuation or an underscore in it: the pattern decides
                n += len(_TOKEN.findall(word))
        return n
    # ASCII text, with no Python work per word: punctuation marks are what remains once word
    # characters and spaces are deleted; with every word character an "a" and anything else a
    # space, words are the " a" (or a leading "a"); a word past 12 characters counts once per
    # 12 (rare: looked for only when there is one)
    raw = text.encode("ascii")
    n = len(raw.translate(None, _WORD_OR_SPACE))
    marks = raw.translate(_WORD_MARKS)
    n += marks.count(b" a") + marks.startswith(b"a")
    if _LONG_WORD in marks:
        for run in marks.split():
            n += (len(run) - 1) // 12
    return n


def _tail(text: str, k: int) -> str:
    """The end of ``text`` holding at most ``k`` tokens, starting at a word when one of those
    tokens starts a word (else at the k-th last token)."""
    if k <= 0:
        return ""
    starts = [m.start() for m in _TOKEN.finditer(text)]
    if len(starts) <= k:
        return text
    last = starts[-k:]
    for s in last:
        if text[s - 1].isspace():
            return text[s:]
    return text[last[0] :]


@dataclass(frozen=True, slots=True)
class TextChunk:
    """One chunk of a text: its ``text``, its ``tokens`` (:func:`count_tokens`) and the Markdown
    headings it sits under (``path``, outermost first; empty for text before any heading or a
    chunk spanning several sections)."""

    text: str
    tokens: int
    path: tuple[str, ...] = ()


# ------------------------------------------------------------------------------------------------
# Markdown blocks
# ------------------------------------------------------------------------------------------------

_HEADING = re.compile(r" {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*\r?")
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_TABLE_SEPARATOR = re.compile(r" {0,3}\|?[ \t]*:?-+:?[ \t]*(\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*\r?")
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])[\"')\]]*\s+|\n")
_WORD = re.compile(r"\S+")

_HEADING_KIND, _CODE, _TABLE, _TEXT = "heading", "code", "table", "text"


@dataclass(slots=True)
class _Block:
    kind: str
    start: int
    end: int
    tokens: int
    level: int = 0
    title: str = ""


@dataclass(slots=True)
class _Unit:
    """A piece of text the packer never cuts: ``text`` (maybe with a repeated code fence or table
    header) standing for ``doc[start:end]``."""

    text: str
    start: int
    end: int
    tokens: int
    #: a piece of a code block or table written between a repeated fence or header
    wrapped: bool = False


@dataclass(slots=True)
class _Section:
    heading: _Block | None
    level: int
    body: list[_Block] = field(default_factory=list)
    children: list[_Section] = field(default_factory=list)

    def blocks(self) -> list[_Block]:
        out = [self.heading] if self.heading is not None else []
        out.extend(self.body)
        for c in self.children:
            out.extend(c.blocks())
        return out


def _lines(text: str) -> list[tuple[int, int]]:
    """(start, end) of every line of ``text``, the newline left out."""
    out = []
    pos = 0
    for line in text.split("\n"):
        out.append((pos, pos + len(line)))
        pos += len(line) + 1
    return out


def _blocks(text: str) -> list[_Block]:
    """Headings, fenced code blocks, tables and paragraphs of ``text`` (blank lines dropped)."""
    lines = _lines(text)
    blocks: list[_Block] = []
    para_start = -1
    para_end = -1

    def close_paragraph() -> None:
        nonlocal para_start
        if para_start >= 0:
            blocks.append(
                _Block(_TEXT, para_start, para_end, count_tokens(text[para_start:para_end]))
            )
            para_start = -1

    i = 0
    n = len(lines)
    while i < n:
        s, e = lines[i]
        line = text[s:e]
        if not line.strip():
            close_paragraph()
            i += 1
            continue
        fence = _FENCE.match(line)
        if fence is not None:
            close_paragraph()
            mark = fence.group(1)
            j = i + 1
            while j < n:
                inner = text[lines[j][0] : lines[j][1]].strip()
                if inner.startswith(mark[0] * len(mark)) and not inner.strip(mark[0]):
                    break
                j += 1
            last = min(j, n - 1)
            end = lines[last][1]
            blocks.append(_Block(_CODE, s, end, count_tokens(text[s:end])))
            i = last + 1
            continue
        heading = _HEADING.fullmatch(line)
        if heading is not None:
            close_paragraph()
            blocks.append(
                _Block(
                    _HEADING_KIND,
                    s,
                    e,
                    count_tokens(line),
                    level=len(heading.group(1)),
                    title=(heading.group(2) or "").strip(),
                )
            )
            i += 1
            continue
        if "|" in line and i + 1 < n:
            sep = text[lines[i + 1][0] : lines[i + 1][1]]
            if "|" in sep and "-" in sep and _TABLE_SEPARATOR.fullmatch(sep):
                close_paragraph()
                j = i + 2
                while j < n:
                    row = text[lines[j][0] : lines[j][1]]
                    if not row.strip() or "|" not in row:
                        break
                    j += 1
                end = lines[j - 1][1]
                blocks.append(_Block(_TABLE, s, end, count_tokens(text[s:end])))
                i = j
                continue
        if para_start < 0:
            para_start = s
        para_end = e
        i += 1
    close_paragraph()
    return blocks


def _sections(blocks: list[_Block]) -> _Section:
    """The heading tree: each heading owns what follows it up to the next heading of its level
    or above."""
    root = _Section(None, 0)
    stack = [root]
    for b in blocks:
        if b.kind != _HEADING_KIND:
            stack[-1].body.append(b)
            continue
        while stack[-1].level >= b.level:
            stack.pop()
        sec = _Section(b, b.level)
        stack[-1].children.append(sec)
        stack.append(sec)
    return root


# ------------------------------------------------------------------------------------------------
# the splitter
# ------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Piece:
    text: str
    tokens: int
    path: tuple[str, ...]
    #: a whole section (or several): may be merged with a whole neighbour
    whole: bool


class MarkdownSplitter:
    """Split text into chunks of at most ``max_tokens`` tokens (:func:`count_tokens`).

    Structure first: a text that fits is one chunk. Otherwise it is cut at its Markdown headings
    (ATX ``#`` headings; the largest sections first), and neighbouring sections that fit together
    are joined again. A section that does not fit is packed from its blocks: fenced code blocks
    and tables are kept whole when they fit in ``max_tokens`` (else cut between lines, the fence
    or the table header repeated in each piece), paragraphs are kept whole when they fit (else cut
    between sentences, then between words, then, for a single giant word, between tokens); the
    paragraph after a heading is cut between sentences when the two do not fit together, so the
    heading shares its chunk with the first sentences rather than standing alone. Each chunk after the first of a section starts with
    the last ``overlap`` tokens of the one before (from the first of them that starts a word; fewer
    when the block that starts it would not fit otherwise). Chunks are slices of the original text,
    whitespace included, apart from the repeated fences and table headers (and sections joined
    again are separated by one blank line). Lines are ``\n``-separated (``\r\n`` works too).
    """

    def __init__(self, max_tokens: int = 512, overlap: int = 64) -> None:
        if max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        if overlap < 0 or overlap >= max_tokens:
            raise ValueError(f"overlap must be at least 0 and less than max_tokens ({max_tokens})")
        self.max_tokens = max_tokens
        self.overlap = overlap

    @property
    def settings(self) -> str:
        """A stable description of what decides the output (version and settings)."""
        return f"{CHUNKER_VERSION}:max_tokens={self.max_tokens}:overlap={self.overlap}"

    def split(self, text: str) -> list[TextChunk]:
        """The chunks of ``text``, in order (none for empty or blank text)."""
        blocks = _blocks(text)
        if not blocks:
            return []
        pieces = self._section(text, _sections(blocks), (), [])
        return [TextChunk(p.text, p.tokens, p.path) for p in pieces if p.text]

    # -- sections ----------------------------------------------------------------------------------
    def _section(
        self, doc: str, sec: _Section, path: tuple[str, ...], lead: list[_Block]
    ) -> list[_Piece]:
        if sec.heading is not None:
            path = (*path, sec.heading.title) if sec.heading.title else path
        own = [*lead, *([sec.heading] if sec.heading is not None else [])]
        blocks = [*lead, *sec.blocks()]
        total = sum(b.tokens for b in blocks)
        if total <= self.max_tokens:
            return [_Piece(_join(doc, blocks), total, path, True)]
        pieces: list[_Piece] = []
        children = sec.children
        if sec.body or not children:
            pieces.extend(self._pack(doc, [*own, *sec.body], path))
            own = []
        for child in children:
            pieces.extend(self._section(doc, child, path, own))
            own = []  # a heading with no text of its own leads into its first subsection
        return _merge_whole(pieces, self.max_tokens)

    # -- packing -----------------------------------------------------------------------------------
    def _pack(self, doc: str, blocks: list[_Block], path: tuple[str, ...]) -> list[_Piece]:
        units: list[_Unit] = []
        headings = 0  # tokens of the headings that open the section
        for b in blocks:
            if b.kind == _HEADING_KIND and headings >= 0:
                headings += b.tokens
            elif headings > 0 and b.kind == _TEXT and headings + b.tokens > self.max_tokens:
                # a paragraph that would leave its heading alone in a chunk: cut it so that its
                # first sentences join the heading
                units.extend(self._sentences(doc, b.start, b.end, self.max_tokens - self.overlap))
                headings = -1
                continue
            else:
                headings = -1
            if b.tokens <= self.max_tokens:
                units.append(_Unit(doc[b.start : b.end], b.start, b.end, b.tokens))
            else:
                units.extend(self._cut(doc, b, self.max_tokens - self.overlap))
        out: list[_Piece] = []
        text = ""
        tokens = 0
        prev: _Unit | None = None
        for u in units:
            if prev is None:
                text, tokens = u.text, u.tokens
            elif tokens + u.tokens <= self.max_tokens:
                text += _gap(doc, prev, u) + u.text
                tokens += u.tokens
            else:
                out.append(_Piece(text, tokens, path, False))
                # no overlap after a fenced piece: the next piece repeats the fence or header
                k = 0 if prev.wrapped else min(self.overlap, self.max_tokens - u.tokens)
                carried = _tail(text, k)
                text = carried + _gap(doc, prev, u) + u.text if carried else u.text
                tokens = count_tokens(carried) + u.tokens
            prev = u
        if prev is not None:
            out.append(_Piece(text, tokens, path, False))
        if len(out) == 1:
            out[0].whole = True
        return out

    def _cut(self, doc: str, block: _Block, budget: int) -> list[_Unit]:
        """Units of at most ``budget`` tokens covering ``block``, which does not fit whole."""
        lines = [
            (s, e)
            for s, e in _lines(doc[block.start : block.end])
            if doc[block.start + s : block.start + e].strip()
        ]
        spans = [(block.start + s, block.start + e) for s, e in lines]
        head = tail = ""
        body: list[tuple[int, int]] = []
        if block.kind == _CODE and len(spans) >= 3:
            opening, closing = spans[0], spans[-1]
            head = doc[opening[0] : opening[1]]
            closed = _FENCE.match(doc[closing[0] : closing[1]]) is not None
            tail = (doc[closing[0] : closing[1]] if closed else head.strip()[:3]).strip()
            body = spans[1:-1] if closed else spans[1:]
        elif block.kind == _TABLE and len(spans) > 2:
            head = doc[spans[0][0] : spans[1][1]]
            body = spans[2:]
        if body and count_tokens(head) + count_tokens(tail) < budget:
            return self._wrapped(doc, body, head, tail, budget)
        # plain text, or a fence or table header too large to repeat
        return self._sentences(doc, block.start, block.end, budget)

    def _wrapped(
        self, doc: str, spans: list[tuple[int, int]], head: str, tail: str, budget: int
    ) -> list[_Unit]:
        """Lines packed into pieces, each written between ``head`` and ``tail`` (a code fence, a
        table's header rows)."""
        extra = count_tokens(head) + count_tokens(tail)
        inner = budget - extra
        lines: list[_Unit] = []
        for s, e in spans:
            t = count_tokens(doc[s:e])
            if t <= inner:
                lines.append(_Unit(doc[s:e], s, e, t))
            else:
                lines.extend(self._words(doc, s, e, inner))
        out: list[_Unit] = []
        for group in _greedy(lines, inner):
            body = group[0].text
            for a, b in zip(group, group[1:], strict=False):
                body += _gap(doc, a, b) + b.text
            text = f"{head}\n{body}" + (f"\n{tail}" if tail else "")
            tokens = extra + sum(u.tokens for u in group)
            out.append(_Unit(text, group[0].start, group[-1].end, tokens, wrapped=True))
        return out

    def _sentences(self, doc: str, start: int, end: int, budget: int) -> list[_Unit]:
        """Sentence (and line) units of ``doc[start:end]``; a sentence over ``budget`` is cut
        between words."""
        out: list[_Unit] = []
        pos = start
        bounds = [m.end() for m in _SENTENCE_END.finditer(doc, start, end)]
        for stop in [*bounds, end]:
            s, e = _trim(doc, pos, stop)
            pos = stop
            if s >= e:
                continue
            t = count_tokens(doc[s:e])
            if t <= budget:
                out.append(_Unit(doc[s:e], s, e, t))
            else:
                out.extend(self._words(doc, s, e, budget))
        return out

    def _words(self, doc: str, start: int, end: int, budget: int) -> list[_Unit]:
        """``doc[start:end]`` cut into pieces of at most ``budget`` tokens, between words where
        one fits (a word of more than ``budget`` tokens is cut between tokens)."""
        toks = [m.span() for m in _TOKEN.finditer(doc, start, end)]
        out: list[_Unit] = []
        i = 0
        n = len(toks)
        while i < n:
            j = min(i + budget, n)
            if j < n:
                k = j
                while k > i and toks[k - 1][1] == toks[k][0]:  # no space between: one word
                    k -= 1
                if k > i:
                    j = k
            s, e = toks[i][0], toks[j - 1][1]
            out.append(_Unit(doc[s:e], s, e, j - i))
            i = j
        return out


def _trim(doc: str, start: int, end: int) -> tuple[int, int]:
    while start < end and doc[start].isspace():
        start += 1
    while end > start and doc[end - 1].isspace():
        end -= 1
    return start, end


def _gap(doc: str, a: _Unit, b: _Unit) -> str:
    """What separates two units in the chunk: the original whitespace between them."""
    between = doc[a.end : b.start]
    return between if not between.strip() else "\n\n"


def _join(doc: str, blocks: list[_Block]) -> str:
    if not blocks:
        return ""
    first, last = blocks[0], blocks[-1]
    if all(a.end <= b.start for a, b in zip(blocks, blocks[1:], strict=False)):
        return doc[first.start : last.end]
    return "\n\n".join(doc[b.start : b.end] for b in blocks)  # pragma: no cover - defensive


def _greedy(units: list[_Unit], budget: int) -> list[list[_Unit]]:
    groups: list[list[_Unit]] = []
    cur: list[_Unit] = []
    tokens = 0
    for u in units:
        if cur and tokens + u.tokens > budget:
            groups.append(cur)
            cur, tokens = [], 0
        cur.append(u)
        tokens += u.tokens
    if cur:
        groups.append(cur)
    return groups


def _merge_whole(pieces: list[_Piece], max_tokens: int) -> list[_Piece]:
    """Join neighbouring whole sections that fit together (their path: the common headings)."""
    out: list[_Piece] = []
    for p in pieces:
        if out and out[-1].whole and p.whole and out[-1].tokens + p.tokens <= max_tokens:
            last = out[-1]
            common: list[str] = []
            for a, b in zip(last.path, p.path, strict=False):
                if a != b:
                    break
                common.append(a)
            out[-1] = _Piece(
                f"{last.text}\n\n{p.text}", last.tokens + p.tokens, tuple(common), True
            )
        else:
            out.append(p)
    return out


# ------------------------------------------------------------------------------------------------
# the stage
# ------------------------------------------------------------------------------------------------


def _metadata(value: Any) -> dict[str, Any]:
    """A stored ``custom_metadata`` as a dict (Lance gives a list of key/value structs)."""
    if isinstance(value, dict):
        return value
    if isinstance(value, list):
        return {
            str(kv["key"]): kv.get("value")
            for kv in value
            if isinstance(kv, dict) and kv.get("key") is not None
        }
    return {}


def _count(meta: dict[str, Any]) -> int:
    try:
        return max(0, int(meta.get(CHUNKS) or 0))
    except (TypeError, ValueError):
        return 0


def _chunk_id(source_id: str, i: int) -> str:
    return f"{source_id}#chunk-{i}"


class ChunkText(AsyncChunkStage):
    """Split documents into chunk records; see :func:`chunk`."""

    def __init__(
        self,
        max_tokens: int = 512,
        overlap: int = 64,
        *,
        splitter: MarkdownSplitter | None = None,
        name: str = "chunk",
        max_remembered: int = 100_000,
    ) -> None:
        self.splitter = splitter or MarkdownSplitter(max_tokens, overlap)
        self.max_tokens = self.splitter.max_tokens
        self.overlap = self.splitter.overlap
        self.name = name
        # chunk counts this stage emitted lately (bounded: two generations): the sink may not
        # have committed them yet, so the stored count alone could miss stale chunks
        self._half = max(1, max_remembered // 2)
        self._recent: dict[str, int] = {}
        self._older: dict[str, int] = {}

    def _remember(self, uuid: str, n: int) -> None:
        self._recent[uuid] = n
        if len(self._recent) >= self._half:
            self._older, self._recent = self._recent, {}

    def _emitted(self, uuid: str) -> int:
        n = self._recent.get(uuid)
        return self._older.get(uuid, 0) if n is None else n

    async def prepare(self, ctx: StageContext) -> None:
        """Tell the sink the dataset is meant for search (it keeps the full-text index)."""
        if ctx.run.sink is not None:
            ctx.run.sink.want_search()

    async def process(self, items: Chunk, ctx: StageContext) -> Chunk:
        """The output for one chunk of items: one stored-rows lookup, then the splitting."""
        parents = [it for it in items if type(it) is Document or type(it) is Tombstone]
        if not parents:
            return items
        uuids = list(dict.fromkeys(p.uuid for p in parents))
        sink = ctx.run.sink
        stored = await sink.stored(uuids, ["custom_metadata"]) if sink is not None else {}
        meta = {u: _metadata(row.get("custom_metadata")) for u, row in stored.items()}
        settings = self.splitter.settings
        todo: list[Document] = []
        hashes: dict[int, str] = {}
        for it in items:
            if type(it) is not Document:
                continue
            h = it.compute_hash()
            hashes[id(it)] = h
            m = meta.get(it.uuid)
            if m and m.get(CHUNK_HASH) == h and m.get(CHUNKER) == settings and CHUNKS in m:
                continue
            todo.append(it)
        results = await anyio.to_thread.run_sync(self._split_all, todo) if todo else {}
        out: Chunk = []
        for it in items:
            if type(it) is Tombstone:
                uid = it.uuid
                old = max(_count(meta.get(uid, {})), self._emitted(uid))
                out.extend(
                    Tombstone(_chunk_id(it.source_id, i), it.source_type, it.source_name)
                    for i in range(old)
                )
                self._remember(uid, 0)
                out.append(it)
                continue
            if type(it) is not Document:
                out.append(it)
                continue
            got = results.get(id(it))
            if got is None:
                self._skipped(it, ctx)
                continue
            if isinstance(got, Exception):
                ctx.dead_letter(got, it, source=it.source_name, source_id=it.source_id)
                continue
            self._emit(it, got, hashes[id(it)], meta, settings, out)
        return out

    def _split_all(self, docs: Sequence[Document]) -> dict[int, list[TextChunk] | Exception]:
        split: Callable[[str], list[TextChunk]] = self.splitter.split
        out: dict[int, list[TextChunk] | Exception] = {}
        for d in docs:
            try:
                text = d.text_content
                out[id(d)] = split(text) if isinstance(text, str) and text.strip() else []
            except Exception as exc:
                out[id(d)] = exc
        return out

    def _skipped(self, doc: Document, ctx: StageContext) -> None:
        ctx.stats.dropped += 1
        stats = ctx.run.report.sources.get(doc.source_name or "")
        if stats is not None:
            stats.skipped_unchanged += 1

    def _emit(
        self,
        parent: Document,
        pieces: list[TextChunk],
        arrived_hash: str,
        meta: dict[str, dict[str, Any]],
        settings: str,
        out: Chunk,
    ) -> None:
        uid = parent.uuid
        n = len(pieces)
        title = parent.title
        for i, piece in enumerate(pieces):
            path = list(piece.path)
            if path and path[0].strip().lower() == (title or "").strip().lower():
                path = path[1:]  # the document's own title as its top heading
            out.append(
                Document(
                    source_id=_chunk_id(parent.source_id, i),
                    title=" › ".join([title, *path]) if path else title,
                    text_content=piece.text,
                    source_type=parent.source_type,
                    source_url=parent.source_url,
                    author=parent.author,
                    tags=list(parent.tags) if parent.tags else None,
                    created_at=parent.created_at,
                    updated_at=parent.updated_at,
                    source_updated_at=parent.source_updated_at,
                    collection=parent.collection,
                    collection_id=parent.collection_id,
                    collection_id_type=parent.collection_id_type,
                    position=i,
                    custom_metadata={
                        CHUNK_OF: uid,
                        CHUNK_INDEX: str(i),
                        CHUNK_COUNT: str(n),
                    },
                    relationships=[Relationship(type="parent", id=uid, title=title)],
                    source_name=parent.source_name,
                )
            )
        old = max(_count(meta.get(uid, {})), self._emitted(uid))
        out.extend(
            Tombstone(_chunk_id(parent.source_id, i), parent.source_type, parent.source_name)
            for i in range(n, old)
        )
        parent.custom_metadata = {
            **(parent.custom_metadata or {}),
            CHUNKS: str(n),
            CHUNK_HASH: arrived_hash,
            CHUNKER: settings,
        }
        parent.content_hash = None
        out.append(parent)
        self._remember(uid, n)


def chunk(max_tokens: int = 512, overlap: int = 64) -> ChunkText:
    """Split every document into chunk records of at most ``max_tokens`` tokens.

    The splitting follows the Markdown structure (headings, then code blocks and tables kept
    whole, then paragraphs, sentences, words; see :class:`MarkdownSplitter`); tokens are
    approximate (:func:`count_tokens`: words and punctuation marks, no tokenizer needed).
    ``overlap`` tokens of a chunk are repeated at the start of the next chunk of the same section.

    Each document is followed by its chunks' rows, written before it: chunk ``i`` has the
    ``source_id`` ``f"{doc.source_id}#chunk-{i}"`` (a deterministic uuid), a ``parent``
    relationship to the document and ``cfstream.chunk_of``/``chunk_index``/``chunk_count`` in its
    ``custom_metadata``; the document itself is kept whole, with ``cfstream.chunks`` (the count).
    A document already stored with the same content and settings is dropped with no work; an
    edited one overwrites its chunks and its stale ones are deleted; a deleted one takes its
    chunks with it. Checkpoints keep their place. The stored state comes from the sink
    (:meth:`~cfstream.sinks.base.Sink.stored`), asked once per chunk of items.
    """
    return ChunkText(max_tokens, overlap)
