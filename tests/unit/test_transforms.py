from __future__ import annotations

import anyio
import pytest

import cfstream as cf
from cfstream import transforms as T
from cfstream.records import Document
from cfstream.sinks import MemorySink


@cf.source(source_type="t")
async def numbers(n: int = 50, page: int = 10, cursor: dict | None = None):
    batch = []
    for i in range(n):
        batch.append(cf.Document(source_id=f"d{i}", title=f"Doc {i}", text_content=str(i)))
        if len(batch) == page:
            yield batch
            yield cf.Checkpoint({"i": i + 1})
            batch = []
    if batch:
        yield batch


async def run(pipeline: cf.Pipeline, **options: object) -> cf.RunReport:
    return await pipeline.run(state=None, **options)


async def test_map_ordered_concurrent_keeps_order() -> None:
    seen_concurrency = 0
    active = 0

    async def slow(doc: Document) -> Document:
        nonlocal active, seen_concurrency
        active += 1
        seen_concurrency = max(seen_concurrency, active)
        # later documents finish first
        await anyio.sleep(0.001 * (50 - int(doc.text_content or 0)) / 10)
        active -= 1
        doc.title = doc.title.upper()
        return doc

    sink = MemorySink()
    await run(numbers(50) | T.map(slow, concurrency=8, ordered=True) | sink)
    assert [d.source_id for d in sink.documents] == [f"d{i}" for i in range(50)]
    assert seen_concurrency == 8
    assert all(d.title.startswith("DOC") for d in sink.documents)


async def test_map_checkpoints_are_barriers_when_unordered() -> None:
    async def jitter(doc: Document) -> Document:
        await anyio.sleep(0.0005 * (int(doc.text_content or 0) % 7))
        return doc

    sink = MemorySink()
    await run(numbers(60) | T.map(jitter, concurrency=8, ordered=False) | sink)
    seen = 0
    for item in sink.items:
        if isinstance(item, cf.Checkpoint):
            assert item.cursor == {"i": seen}
        else:
            seen += 1
    assert seen == 60


async def test_map_errors_dead_letter_and_run_goes_on(tmp_path) -> None:
    def boom(doc: Document) -> Document | None:
        if doc.source_id == "d3":
            raise ValueError("cannot map d3")
        if doc.source_id == "d4":
            return None
        return doc

    sink = MemorySink()
    report = await (numbers(10) | T.map(boom) | sink).run(
        state=None, dead_letter_path=tmp_path / "dl.jsonl"
    )
    assert len(sink.documents) == 8
    assert report.dead_lettered == 1
    assert report.stages[0].failed == 1 and report.stages[0].dropped == 1
    text = (tmp_path / "dl.jsonl").read_text()
    assert "cannot map d3" in text and '"source_id":"d3"' in text and '"stage":"map:boom"' in text


async def test_map_one_to_many() -> None:
    def split(doc: Document) -> list[Document]:
        return [Document(source_id=f"{doc.source_id}#{k}", title=doc.title) for k in range(2)]

    sink = MemorySink()
    await run(numbers(5) | T.map(split) | sink)
    assert [d.source_id for d in sink.documents][:4] == ["d0#0", "d0#1", "d1#0", "d1#1"]
    assert all(d.source_type == "t" for d in sink.documents)


async def test_filter_tag_validate_dedupe(tmp_path) -> None:
    @cf.source(source_type="mixed")
    async def mixed():
        yield Document(source_id="a", title="A", tags=["x"])
        yield Document(source_id="b", title="")  # invalid: empty title
        yield Document(source_id="c", title="C", text_content="bad \udcff surrogate")
        yield Document(source_id="a", title="A", tags=["x"])  # exact repeat
        yield Document(source_id="d", title="D", created_at="not a date")
        yield Document(source_id="e", title="E")
        yield Document(source_id="f", title="F", custom_metadata={"skip": "1"})

    sink = MemorySink()
    report = await (
        mixed()
        | T.filter(lambda d: not (d.custom_metadata or {}).get("skip"))
        | T.validate()
        | T.tag("team:docs", "kb")
        | T.dedupe()
        | sink
    ).run(state=None, dead_letter_path=tmp_path / "dl.jsonl")
    assert [d.source_id for d in sink.documents] == ["a", "e"]
    assert sink.documents[0].tags == ["x", "team:docs", "kb"]
    assert report.dead_lettered == 3
    letters = (tmp_path / "dl.jsonl").read_text().splitlines()
    assert any("title" in line and '"source_id":"b"' in line for line in letters)
    assert any("UTF-8" in line for line in letters)
    assert any("ISO 8601" in line for line in letters)
    dedupe_stats = report.stages[3]
    assert dedupe_stats.dropped == 1


async def test_dedupe_keeps_changed_repeats_and_bounded_memory() -> None:
    @cf.source(source_type="rep")
    async def repeats():
        for i in range(20):
            yield Document(source_id=f"k{i % 5}", title="same")
        yield Document(source_id="k0", title="changed")

    sink = MemorySink()
    dd = T.dedupe(max_keys=3)
    await run(repeats() | dd | sink)
    ids = [(d.source_id, d.title) for d in sink.documents]
    assert ("k0", "changed") in ids
    assert len(dd._recent) + len(dd._older) <= 3


async def test_tag_with_function_and_generator_stage() -> None:
    async def shout(items):
        async for it in items:
            if isinstance(it, Document):
                it.title = it.title + "!"
            yield it

    sink = MemorySink()
    await run(numbers(3) | T.tag(lambda d: [f"n:{d.source_id}"]) | shout | sink)
    assert [d.tags for d in sink.documents] == [["n:d0"], ["n:d1"], ["n:d2"]]
    assert all(d.title.endswith("!") for d in sink.documents)


def test_tag_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        T.tag("")
    with pytest.raises(TypeError):
        numbers() | object()  # type: ignore[operator]
