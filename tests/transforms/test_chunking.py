"""``T.chunk``: structure-aware splitting, chunk records, and incremental re-chunking."""

from __future__ import annotations

import random
import re
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import lance
import pytest

import cfstream as cf
from cfstream import transforms as T
from cfstream.config import build_pipeline, build_stages, load_config
from cfstream.errors import ConfigError
from cfstream.records import Checkpoint, Document, Tombstone, record_uuid
from cfstream.sinks import LanceSink, MemorySink
from cfstream.transforms import ChunkText, MarkdownSplitter, TextChunk, count_tokens

# ------------------------------------------------------------------------------------------------
# the splitter
# ------------------------------------------------------------------------------------------------


TOKEN = re.compile(r"\w{1,12}|[^\w\s]")  # count_tokens' definition of a token


def _words(n: int, word: str = "word") -> str:
    return " ".join(f"{word}{i}" for i in range(n))


def _sentences(n: int, words: int = 5, tag: str = "s") -> str:
    return " ".join(f"{tag}{i} " + " ".join(["w"] * (words - 2)) + " end." for i in range(n))


def test_count_tokens_counts_words_and_punctuation() -> None:
    assert count_tokens("") == 0
    assert count_tokens("Hello, world!") == 4
    assert count_tokens("a  b\n\nc") == 3  # whitespace is free
    assert count_tokens("x" * 30) == 3  # a long word counts once per 12 characters
    assert count_tokens("foo.bar") == 3
    assert count_tokens("a b") == count_tokens("a") + count_tokens("b")


def test_count_tokens_is_the_patterns_match_count_on_any_text() -> None:
    """The word-by-word count agrees with the pattern on every kind of character: letters of any
    script, digits, underscores, combining marks, punctuation, every Unicode space, long runs."""
    rng = random.Random(17)
    alphabet = [
        *"abcXYZ019_.,;!?-'()", "é", "e\u0301", "ß", "字", "٣", "Ⅻ", "\u00a0", "\u2003",
        "\u3000", "\x1c", "\x1f", "\u2028", "\u0085", " ", "\t", "\n", "🙂", "x" * 13,
    ]  # fmt: skip
    ascii_alphabet = [*map(chr, range(128)), "x" * 13, "y" * 25]  # ASCII text has a fast path
    for chars in (alphabet, ascii_alphabet):
        for _ in range(3000):
            text = "".join(rng.choices(chars, k=rng.randint(0, 40)))
            assert count_tokens(text) == len(TOKEN.findall(text)), repr(text)


def test_short_text_is_one_chunk_and_empty_text_none() -> None:
    s = MarkdownSplitter(100, 10)
    text = "# Title\n\nOne paragraph.\n\n## Sub\n\nAnother one."
    assert s.split(text) == [TextChunk(text, count_tokens(text), ())]
    assert s.split("") == []
    assert s.split("  \n\n \t\n") == []


def test_headings_split_first_and_small_neighbours_join() -> None:
    a = _sentences(6)  # 6 tokens a sentence: 36
    b = _sentences(6, tag="b")
    c = _sentences(1, tag="c")
    text = f"# Guide\n\nIntro.\n\n## Alpha\n\n{a}\n\n## Beta\n\n{b}\n\n### Gamma\n\n{c}\n"
    assert count_tokens(text) == 4 + 39 + 39 + 10
    got = MarkdownSplitter(50, 0).split(text)
    assert [c.text for c in got] == [
        f"# Guide\n\nIntro.\n\n## Alpha\n\n{a}",  # the intro and Alpha fit together
        f"## Beta\n\n{b}\n\n### Gamma\n\n{c}",
    ]
    assert [c.path for c in got] == [("Guide",), ("Guide", "Beta")]
    # smaller: every section on its own, under its heading path
    got = MarkdownSplitter(40, 0).split(text)
    assert [c.path for c in got] == [
        ("Guide",),
        ("Guide", "Alpha"),
        ("Guide", "Beta"),
        ("Guide", "Beta", "Gamma"),
    ]
    assert [c.text.split("\n")[0] for c in got] == ["# Guide", "## Alpha", "## Beta", "### Gamma"]


def test_a_heading_without_text_leads_into_its_first_subsection() -> None:
    a = _sentences(5)
    b = _sentences(5, tag="b")
    got = MarkdownSplitter(45, 0).split(f"# Guide\n\n## Alpha\n\n{a}\n\n## Beta\n\n{b}")
    assert [c.text for c in got] == [f"# Guide\n\n## Alpha\n\n{a}", f"## Beta\n\n{b}"]
    assert [c.path for c in got] == [("Guide", "Alpha"), ("Guide", "Beta")]


def test_a_code_block_and_a_table_are_kept_whole_where_they_fit() -> None:
    code = "```python\n" + "\n".join(f"x{i} = compute({i})" for i in range(6)) + "\n```"
    table = "| name | value |\n|------|-------|\n" + "\n".join(f"| k{i} | v{i} |" for i in range(5))
    before = _sentences(4)
    text = f"{before}\n\n{code}\n\n{_sentences(2, tag='m')}\n\n{table}\n\n{_sentences(3, tag='z')}"
    budget = max(count_tokens(code), count_tokens(table)) + 5
    got = MarkdownSplitter(budget, 0).split(text)
    assert sum(code in c.text for c in got) == 1
    assert sum(table in c.text for c in got) == 1
    for c in got:
        assert c.tokens <= budget
        assert c.text.count("```") in (0, 2)  # no chunk ends inside the fence


def test_a_code_block_too_large_is_cut_between_lines_with_its_fence_repeated() -> None:
    lines = [f"print('line number {i}')" for i in range(40)]
    code = "```python\n" + "\n".join(lines) + "\n```"
    got = MarkdownSplitter(60, 10).split(code)
    assert len(got) > 2
    seen: list[str] = []
    for c in got:
        assert c.tokens <= 60
        assert c.text.startswith("```python\n") and c.text.endswith("\n```")
        seen.extend(c.text.split("\n")[1:-1])
    assert seen == lines  # every line once, in order, no overlap inside a code block


def test_a_table_too_large_repeats_its_header() -> None:
    header = "| name | value |\n|---|---|"
    rows = [f"| key{i} | {i} |" for i in range(60)]
    got = MarkdownSplitter(50, 0).split(header + "\n" + "\n".join(rows))
    assert len(got) > 2
    body: list[str] = []
    for c in got:
        assert c.text.startswith(header + "\n") and c.tokens <= 50
        body.extend(c.text.split("\n")[2:])
    assert body == rows


def test_paragraphs_then_sentences_then_words() -> None:
    paras = [_sentences(3, tag=f"p{i}_") for i in range(8)]  # 15 tokens each
    got = MarkdownSplitter(40, 0).split("\n\n".join(paras))
    for c in got:  # whole paragraphs: two per chunk
        assert c.text.split("\n\n") == [p for p in paras if p in c.text]
    assert [c.text for c in got][0] == "\n\n".join(paras[:2])

    long = _sentences(20)  # one paragraph of 120 tokens: cut after sentences
    got = MarkdownSplitter(26, 0).split(long)
    assert len(got) == 5
    assert all(c.text.endswith("end.") and c.tokens == 24 for c in got)
    assert " ".join(c.text for c in got) == long

    run_on = _words(100)  # no sentence end anywhere: cut between words
    got = MarkdownSplitter(30, 0).split(run_on)
    assert [c.tokens for c in got] == [30, 30, 30, 10]
    assert " ".join(c.text for c in got) == run_on

    blob = "x" * 1200  # one giant word: cut between its tokens
    got = MarkdownSplitter(30, 0).split(blob)
    assert "".join(c.text for c in got) == blob
    assert all(c.tokens <= 30 for c in got)


def test_overlap_carries_the_last_tokens_within_a_section_only() -> None:
    a = _sentences(12, tag="a")
    b = _sentences(12, tag="b")
    text = f"## A\n\n{a}\n\n## B\n\n{b}"
    got = MarkdownSplitter(25, 6).split(text)
    assert [c.path for c in got].count(("A",)) > 2
    for prev, nxt in zip(got, got[1:], strict=False):
        if prev.path == nxt.path:
            assert TOKEN.findall(nxt.text)[:6] == TOKEN.findall(prev.text)[-6:]
        else:
            assert nxt.text.startswith("## B")  # a new section starts afresh
    assert all(c.tokens <= 25 for c in got)
    no_overlap = MarkdownSplitter(25, 0).split(text)
    assert sum(c.tokens for c in no_overlap) == count_tokens(text)


def test_max_tokens_holds_and_no_text_is_lost_on_random_markdown() -> None:
    rng = random.Random(7)
    words = ["alpha", "beta", "x", "--flag", "é", "数据", "a.b", "(42)", "y" * 40]

    def para() -> str:
        return " ".join(rng.choice(words) + rng.choice(["", "", ".", ","]) for _ in range(40))

    def block() -> str:
        r = rng.random()
        if r < 0.15:
            return "#" * rng.randint(1, 4) + " " + para()[:25]
        if r < 0.3:
            return "```\n" + "\n".join(para()[: rng.randint(5, 90)] for _ in range(8)) + "\n```"
        if r < 0.4:
            return "| h | i |\n|---|---|\n" + "\n".join(f"| {para()[:15]} | 1 |" for _ in range(9))
        return para()

    for _ in range(60):
        text = "\n\n".join(block() for _ in range(rng.randint(1, 12)))
        max_tokens = rng.choice([6, 16, 40, 120])
        overlap = rng.choice([0, max_tokens // 4])
        got = MarkdownSplitter(max_tokens, overlap).split(text)
        assert got
        for c in got:
            assert 0 < c.tokens == count_tokens(c.text) <= max_tokens
        # every token of the text appears in the chunks, in order
        remaining = iter(t for c in got for t in TOKEN.findall(c.text))
        assert all(t in remaining for t in TOKEN.findall(text))


def test_hostile_markdown_stays_within_bounds() -> None:
    s = MarkdownSplitter(50, 5)
    unclosed = "intro\n\n```sh\n# not a heading\n" + "\n".join(f"echo {i}" for i in range(60))
    got = s.split(unclosed)
    assert all(c.path == () for c in got)  # the comment inside the fence is no heading
    assert all(c.text.startswith("```sh\n") for c in got[1:])
    crlf = "# Title\r\n\r\nFirst para.\r\n\r\n## Two\r\n\r\nSecond para.\r\n"
    assert [c.path for c in MarkdownSplitter(6, 0).split(crlf)] == [("Title",), ("Title", "Two")]
    many = "\n".join(f"{'#' * (i % 6 + 1)} h{i}\n\ntext {i}" for i in range(3000))
    blob = "A" * 200_000
    for text in (many, blob, "|" * 5000, "`" * 5000, "#" * 5000, ". " * 20_000):
        got = s.split(text)
        assert got and all(0 < c.tokens <= 50 for c in got)
        assert sum(c.tokens for c in MarkdownSplitter(50, 0).split(text)) == count_tokens(text)


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        MarkdownSplitter(0)
    with pytest.raises(ValueError, match="overlap"):
        T.chunk(max_tokens=10, overlap=10)
    with pytest.raises(ValueError, match="overlap"):
        T.chunk(max_tokens=10, overlap=-1)


# ------------------------------------------------------------------------------------------------
# the stage
# ------------------------------------------------------------------------------------------------


class CountingSplitter(MarkdownSplitter):
    """Counts the texts it splits (the stage's chunk work)."""

    def __init__(self, max_tokens: int, overlap: int) -> None:
        super().__init__(max_tokens, overlap)
        self.calls: list[str] = []

    def split(self, text: str) -> list[TextChunk]:
        self.calls.append(text)
        return super().split(text)


@cf.source(source_type="kb")
async def corpus(
    docs: dict[str, str], deleted: Iterable[str] = (), cursor: dict[str, Any] | None = None
) -> AsyncIterator[Any]:
    batch = [
        Document(source_id=sid, title=sid.upper(), text_content=text, tags=["t"])
        for sid, text in docs.items()
    ]
    yield batch
    yield [Tombstone(sid) for sid in deleted]
    yield Checkpoint({"n": len(docs)})


def _rows(uri: str) -> dict[str, dict[str, Any]]:
    rows = lance.dataset(uri).to_table().to_pylist()
    for r in rows:
        r["meta"] = {kv["key"]: kv["value"] for kv in r["custom_metadata"] or []}
    return {r["source_id"]: r for r in rows}


A1 = f"# A\n\n## One\n\n{_sentences(5, tag='one')}\n\n## Two\n\n{_sentences(5, tag='two')}"
A1 += f"\n\n## Three\n\n{_sentences(5, tag='three')}"
A2 = "# A\n\nNow a short note."
B1 = f"{_sentences(5, tag='b')}\n\n{_sentences(5, tag='bb')}"
C1 = "Just one line."


async def test_chunk_records_identities_order_and_metadata() -> None:
    sink = MemorySink()
    await (corpus({"a": A1, "c": C1}, name="src") | T.chunk(max_tokens=40, overlap=5) | sink).run(
        state=None
    )
    items = sink.items
    assert isinstance(items[-1], Checkpoint)
    docs = sink.documents
    ids = [d.source_id for d in docs]
    assert ids == ["a#chunk-0", "a#chunk-1", "a#chunk-2", "a", "c#chunk-0", "c"]  # chunks first
    parent = docs[3]
    assert parent.text_content == A1 and parent.vector is None
    meta = parent.custom_metadata or {}
    assert meta["cfstream.chunks"] == "3"
    assert meta["cfstream.chunker"] == "md1:max_tokens=40:overlap=5"
    puid = record_uuid("kb", "a", source_name="src")
    for i, d in enumerate(docs[:3]):
        assert d.uuid == record_uuid("kb", f"a#chunk-{i}", source_name="src")
        assert (d.source_type, d.source_name, d.position, d.tags) == ("kb", "src", i, ["t"])
        assert d.custom_metadata == {
            "cfstream.chunk_of": puid,
            "cfstream.chunk_index": str(i),
            "cfstream.chunk_count": "3",
        }
        assert d.relationships is not None and d.relationships[0].type == "parent"
        assert (d.relationships[0].id, d.relationships[0].title) == (puid, "A")
        assert d.record_type == "document"
    assert [d.title for d in docs[:3]] == ["A › One", "A › Two", "A › Three"]
    assert docs[4].title == "C" and docs[4].text_content == C1

    again = MemorySink()  # the same input: the same records
    await (corpus({"a": A1, "c": C1}, name="src") | T.chunk(max_tokens=40, overlap=5) | again).run(
        state=None
    )
    assert [(d.uuid, d.compute_hash()) for d in again.documents] == [
        (d.uuid, d.compute_hash()) for d in docs
    ]


@cf.source(source_type="kb")
async def paged(pages: int, cursor: dict[str, Any] | None = None) -> AsyncIterator[Any]:
    for p in range(pages):
        yield [
            Document(source_id=f"p{p}d{i}", title="T", text_content=_sentences(12))
            for i in range(3)
        ]
        yield Checkpoint({"page": p})


async def test_checkpoints_stay_behind_the_documents_before_them() -> None:
    sink = MemorySink()
    await (paged(5) | T.chunk(max_tokens=20, overlap=0) | sink).run(state=None)
    page = -1
    for it in sink.items:
        if isinstance(it, Checkpoint):
            assert it.cursor == {"page": page + 1}
            page += 1
        else:
            assert isinstance(it, Document)
            assert it.source_id.startswith(f"p{page + 1}d")  # nothing overtook a checkpoint
    assert page == 4


async def test_resync_replaces_edited_drops_deleted_and_skips_unchanged(tmp_path: Path) -> None:
    uri = str(tmp_path / "kb.lance")

    async def sync(docs: dict[str, str], deleted: Iterable[str] = ()) -> CountingSplitter:
        splitter = CountingSplitter(40, 5)
        stage = ChunkText(splitter=splitter)
        report = await (corpus(docs, deleted, name="kb") | stage | LanceSink(uri)).run()
        assert report.ok
        return splitter

    first = await sync({"a": A1, "b": B1, "c": C1})
    assert len(first.calls) == 3
    rows = _rows(uri)
    assert sorted(rows) == sorted(
        ["a", "a#chunk-0", "a#chunk-1", "a#chunk-2", "b", "b#chunk-0", "b#chunk-1"]
        + ["c", "c#chunk-0"]
    )
    c_stamp = (rows["c"]["ingested_at"], rows["c#chunk-0"]["ingested_at"])

    second = await sync({"a": A2, "c": C1}, deleted=["b"])
    assert second.calls == [A2]  # only the edited document was split again
    rows = _rows(uri)
    assert sorted(rows) == ["a", "a#chunk-0", "c", "c#chunk-0"]
    assert rows["a#chunk-0"]["text_content"] == A2
    assert rows["a#chunk-0"]["meta"]["cfstream.chunk_count"] == "1"
    assert rows["a"]["meta"]["cfstream.chunks"] == "1"
    assert (rows["c"]["ingested_at"], rows["c#chunk-0"]["ingested_at"]) == c_stamp  # untouched

    third = await sync({"a": A2, "c": C1})
    assert third.calls == []  # nothing changed: no chunk work at all

    # other settings: every document is chunked again
    splitter = CountingSplitter(30, 0)
    await (
        corpus({"a": A2, "c": C1}, name="kb") | ChunkText(splitter=splitter) | LanceSink(uri)
    ).run()
    assert len(splitter.calls) == 2
    assert _rows(uri)["a"]["meta"]["cfstream.chunker"] == "md1:max_tokens=30:overlap=0"


async def test_a_crash_between_chunks_and_parent_rechunks_next_time(tmp_path: Path) -> None:
    """The sink committed a document's new chunks but was killed before the document itself:
    the stored document still has its old content hash, so the re-run chunks it again and
    deletes the chunks the old version had and the new one does not."""
    uri = str(tmp_path / "kb.lance")
    await (corpus({"a": A1}, name="kb") | T.chunk(max_tokens=40, overlap=5) | LanceSink(uri)).run()
    assert _rows(uri)["a"]["meta"]["cfstream.chunks"] == "3"

    edited = f"# A\n\n{_sentences(10, tag='new')}"  # two chunks now

    def only_chunks(doc: Document) -> bool:  # what the killed sink had committed
        return "cfstream.chunk_of" in (doc.custom_metadata or {})

    crashed = T.chunk(max_tokens=40, overlap=5)
    await (
        corpus({"a": edited}, name="kb") | crashed | T.filter(only_chunks) | LanceSink(uri)
    ).run()
    rows = _rows(uri)
    assert rows["a"]["text_content"] == A1  # the parent was never committed
    assert rows["a#chunk-0"]["text_content"].startswith("# A\n\nnew0")
    assert "a#chunk-2" not in rows  # its stale-chunk tombstone went through with the chunks

    splitter = CountingSplitter(40, 5)
    await (corpus({"a": edited}, name="kb") | ChunkText(splitter=splitter) | LanceSink(uri)).run()
    assert splitter.calls == [edited]
    rows = _rows(uri)
    assert sorted(rows) == ["a", "a#chunk-0", "a#chunk-1"]
    assert rows["a"]["text_content"] == edited and rows["a"]["meta"]["cfstream.chunks"] == "2"


async def test_only_chunks_committed_on_first_run_then_rerun_completes(tmp_path: Path) -> None:
    uri = str(tmp_path / "kb.lance")

    def only_chunks(doc: Document) -> bool:
        return "cfstream.chunk_of" in (doc.custom_metadata or {})

    stage = T.chunk(max_tokens=40, overlap=5)
    await (corpus({"a": A1}, name="kb") | stage | T.filter(only_chunks) | LanceSink(uri)).run()
    assert "a" not in _rows(uri)
    splitter = CountingSplitter(40, 5)
    await (corpus({"a": A1}, name="kb") | ChunkText(splitter=splitter) | LanceSink(uri)).run()
    assert len(splitter.calls) == 1
    assert sorted(_rows(uri)) == ["a", "a#chunk-0", "a#chunk-1", "a#chunk-2"]


@cf.source(source_type="kb")
async def twice(cursor: dict[str, Any] | None = None) -> AsyncIterator[Any]:
    yield [Document(source_id="a", title="A", text_content=A1)]
    yield [Document(source_id="a", title="A", text_content=A2)]  # edited before any commit


async def test_an_edit_in_flight_still_deletes_the_chunks_it_outgrew(tmp_path: Path) -> None:
    uri = str(tmp_path / "kb.lance")
    await (twice() | T.chunk(max_tokens=40, overlap=5) | LanceSink(uri)).run()
    rows = _rows(uri)
    assert sorted(rows) == ["a", "a#chunk-0"]
    assert rows["a#chunk-0"]["text_content"] == A2


async def test_a_memory_sink_run_skips_what_it_already_received() -> None:
    stage = ChunkText(splitter=CountingSplitter(40, 0))
    sink = MemorySink()
    await (corpus({"a": A2}, name="s") | stage | sink).run(state=None)
    await (corpus({"a": A2}, name="s") | stage | sink).run(state=None)
    assert isinstance(stage.splitter, CountingSplitter)
    assert len(stage.splitter.calls) == 1  # MemorySink remembers what it received


# ------------------------------------------------------------------------------------------------
# YAML
# ------------------------------------------------------------------------------------------------


def _config(tmp_path: Path, stage: str) -> Path:
    (tmp_path / "notes").mkdir(exist_ok=True)
    path = tmp_path / "cfstream.yaml"
    path.write_text(
        "dataset: ./kb.lance\n"
        "pipeline:\n"
        f"  - {stage}\n"
        "sources:\n"
        "  notes:\n"
        "    type: files\n"
        "    path: ./notes\n"
        "    folder_headers: false\n",
        encoding="utf-8",
    )
    return path


def test_yaml_chunk_stage_builds_and_runs(tmp_path: Path) -> None:
    cfg = load_config(_config(tmp_path, "chunk: {max_tokens: 40, overlap: 5}"))
    (stage,) = build_stages(cfg)
    assert isinstance(stage, ChunkText) and (stage.max_tokens, stage.overlap) == (40, 5)
    (default,) = build_stages(load_config(_config(tmp_path, "chunk: {}")))
    assert isinstance(default, ChunkText) and (default.max_tokens, default.overlap) == (512, 64)

    cfg = load_config(_config(tmp_path, "chunk: {max_tokens: 40, overlap: 5}"))
    notes = tmp_path / "notes"
    (notes / "a.md").write_text(A1, encoding="utf-8")
    (notes / "c.md").write_text(C1, encoding="utf-8")
    report = cf.run(build_pipeline(cfg))
    assert report.ok
    rows = _rows(cfg.dataset)
    assert sorted(r["meta"].get("cfstream.chunks", "-") for r in rows.values()) == [
        "-",
        "-",
        "-",
        "-",
        "1",
        "3",
    ]
    (notes / "a.md").unlink()  # the files source sends a tombstone: the chunks go too
    assert cf.run(build_pipeline(cfg)).ok
    assert sorted(r["meta"].get("cfstream.chunks", "-") for r in _rows(cfg.dataset).values()) == [
        "-",
        "1",
    ]


@pytest.mark.parametrize(
    ("stage", "message"),
    [
        ("chunk: {max_tokens: 40, overlap: 40}", "overlap (40) must be less than max_tokens (40)"),
        ("chunk: {max_tokens: 0}", "pipeline[0].chunk.max_tokens: expected"),
        ("chunk: {overlap: -1}", "pipeline[0].chunk.overlap: expected"),
        ("chunk: {size: 3}", "pipeline[0].chunk.size: unknown key 'size'"),
        ("chunk: 300", "pipeline[0].chunk: expected"),
    ],
)
def test_yaml_chunk_stage_errors(tmp_path: Path, stage: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_config(tmp_path, stage))
    assert message in str(info.value)
    assert ":3:" in str(info.value)  # the line of the stage
