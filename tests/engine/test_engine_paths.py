"""The engine's fast paths give the same results as the plain ones.

Stage fusion, chunk coalescing, whole-chunk passes in the source pump, and the per-batch uuid
resolution of the sink are optimisations: these tests pin down that order, checkpoint places,
per-stage statistics, error attribution and uuids are what they were.
"""

from __future__ import annotations

import uuid

import anyio
import lance
import pytest

import cfstream as cf
from cfstream import transforms as T
from cfstream.engine.fusion import fuse_stages
from cfstream.errors import PipelineError
from cfstream.records import (
    CFSTREAM_NAMESPACE,
    Document,
    Tombstone,
    record_uuid,
    uuid_array,
    uuid_digest,
    uuid_digests,
    uuid_keys,
)
from cfstream.sinks import LanceSink, MemorySink
from cfstream.storage import Batch, resolve_batch
from cfstream.transforms.base import chunks


@cf.source(source_type="fp")
async def pages(n: int = 300, page: int = 7):
    batch: list[cf.Document] = []
    for i in range(n):
        batch.append(cf.Document(source_id=f"d{i}", title=f"Doc {i}", text_content=str(i)))
        if len(batch) == page:
            yield batch
            yield cf.Checkpoint({"i": i + 1})
            batch = []
    if batch:
        yield batch


def test_uuid_array_and_keys_match_record_uuid() -> None:
    pairs = [("a", "1"), ("notes", "x/y"), ("bench", "doc-0000001"), ("ü", "ß" * 40), ("", "")]
    digests = [uuid_digest(st, sid) for st, sid in pairs]
    expected = [str(uuid.uuid5(CFSTREAM_NAMESPACE, f"{st}:{sid}")) for st, sid in pairs]
    assert uuid_array(digests).to_pylist() == expected
    assert [record_uuid(st, sid) for st, sid in pairs] == expected
    assert uuid_keys(digests).to_pylist() == [int(u[:8] + u[9:13] + u[14:18], 16) for u in expected]
    assert uuid_array([]).to_pylist() == []
    same = [Document(source_id=f"s{i}", title="t", source_type="one") for i in range(5)]
    mixed = [*same, Document(source_id="x", title="t", source_type="two")]
    for docs in (same, mixed):
        assert uuid_digests(docs) == [uuid_digest(d.source_type or "", d.source_id) for d in docs]


def test_fuse_groups_synchronous_stages_only() -> None:
    async def slow(doc: Document) -> Document:
        return doc

    stages = [T.map(lambda d: d), T.validate(), T.map(slow), T.tag("x"), T.dedupe()]
    from cfstream.contract.context import StageContext

    groups = fuse_stages(stages, [StageContext(name=s.name, run=None, stats=None) for s in stages])  # type: ignore[arg-type]
    assert [(g.stage is None, len(g.fused)) for g in groups] == [(True, 2), (False, 0), (True, 2)]


async def test_fused_stages_keep_order_checkpoints_and_stats() -> None:
    seen: list[object] = []

    async def record(items):
        async for it in items:
            seen.append(it.cursor["i"] if isinstance(it, cf.Checkpoint) else it.source_id)
            yield it

    sink = MemorySink()
    report = await (
        pages()
        | T.map(lambda d: None if d.source_id.endswith("3") else d)
        | T.validate()
        | T.tag("t")
        | T.dedupe()
        | record
        | sink
    ).run(state=None)
    expected: list[object] = []
    for i in range(300):
        if not str(i).endswith("3"):
            expected.append(f"d{i}")
        if (i + 1) % 7 == 0:
            expected.append(i + 1)
    assert seen == expected
    names = [s.name for s in report.stages]
    assert names[:4] == ["map:<lambda>", "validate", "tag", "dedupe"]
    dropped = sum(1 for i in range(300) if str(i).endswith("3"))
    assert report.stages[0].docs_in == 300
    assert report.stages[0].docs_out == 300 - dropped
    assert report.stages[0].dropped == dropped
    for st in report.stages[1:4]:
        assert (st.docs_in, st.docs_out) == (300 - dropped, 300 - dropped)
    assert all(d.tags == ["t"] for d in sink.documents)


async def test_an_error_in_a_fused_stage_names_that_stage() -> None:
    class Boom(T.Validate):
        def apply(self, chunk, ctx):  # type: ignore[no-untyped-def]
            raise RuntimeError("boom")

    with pytest.raises(PipelineError) as info:
        await (pages(20) | T.tag("a") | Boom(name="exploder") | T.dedupe() | MemorySink()).run(
            state=None
        )
    assert info.value.stage == "exploder"
    assert "boom" in str(info.value)


async def test_chunks_joins_what_is_queued_in_order() -> None:
    send, receive = anyio.create_memory_object_stream[list[object]](10)
    for i in range(5):
        send.send_nowait([i * 10 + j for j in range(10)])
    send.close()
    got = [c async for c in chunks(receive, max_items=25)]  # type: ignore[arg-type]
    assert [len(c) for c in got] == [30, 20]
    assert [x for c in got for x in c] == list(range(50))


async def test_dedupe_drops_repeats_and_keeps_changed_content() -> None:
    @cf.source(source_type="dd")
    async def mixed():
        yield [Document(source_id=f"a{i}", title="x") for i in range(50)]  # all new
        yield [Document(source_id=f"a{i}", title="x") for i in range(10)]  # seen, same: dropped
        yield [Document(source_id="b", title="1"), Document(source_id="b", title="1")]
        yield [Document(source_id="a0", title="changed")]  # changed content: kept

    sink = MemorySink()
    dd = T.dedupe(max_keys=1000)
    report = await (mixed() | dd | sink).run(state=None)
    assert [(d.source_id, d.title) for d in sink.documents] == [
        *((f"a{i}", "x") for i in range(50)),
        ("b", "1"),
        ("a0", "changed"),
    ]
    assert report.stages[0].dropped == 11


def test_batch_resolution_keeps_newest_and_honours_tombstone_order() -> None:
    def doc(sid: str, ts: str, title: str) -> Document:
        return Document(source_id=sid, title=title, source_type="r", updated_at=ts)

    batch = Batch(
        docs=[
            doc("a", "2024-01-02", "a-new"),
            doc("b", "2024-01-01", "b-1"),
            doc("a", "2024-01-01", "a-old"),  # older than the buffered one: ignored
            doc("c", "2024-01-01", "c-before-tombstone"),
            doc("c", "2024-01-05", "c-after-tombstone"),
        ]
    )
    # c's tombstone arrived after 4 documents: the c before it is dropped, the one after it kept
    batch.tombstones = [(4, uuid_digest("r", "c")), (5, uuid_digest("r", "b"))]
    batch.deletes = [record_uuid("r", "c"), record_uuid("r", "b")]
    resolve_batch(batch)
    assert [d.title for d in batch.docs] == ["a-new", "c-after-tombstone"]
    assert batch.uuids is not None
    assert list(batch.uuids.to_pylist()) == [record_uuid("r", "a"), record_uuid("r", "c")]  # type: ignore[union-attr]
    assert batch.deletes == [record_uuid("r", "b")]


async def test_sink_stores_an_id_with_lone_surrogates_escaped(tmp_path) -> None:
    @cf.source(source_type="bad")
    async def src():
        yield [Document(source_id="ok", title="fine"), Document(source_id="\ud800", title="x")]
        yield Tombstone(source_id="gone")

    report = await (src() | LanceSink(str(tmp_path / "ds.lance"))).run()
    assert report.sink.inserted == 2
    assert report.dead_lettered == 0
    table = lance.dataset(str(tmp_path / "ds.lance")).to_table(columns=["uuid", "source_id"])
    ids, uuids = table.column("source_id").to_pylist(), table.column("uuid").to_pylist()
    stored = dict(zip(ids, uuids, strict=True))
    assert stored["\\ud800"] == record_uuid("bad", "\ud800") == record_uuid("bad", "\\ud800")


async def test_fragment_sink_batches_like_lance_sink() -> None:
    """Ray workers' sink keeps the newest version of a document and honours tombstone order."""
    from cfstream.distributed.ray import FragmentSink, WritePlan
    from cfstream.records import frame_schema

    @cf.source(source_type="fr")
    async def src():
        yield [
            Document(source_id="a", title="a-new", updated_at="2024-02-01"),
            Document(source_id="a", title="a-old", updated_at="2024-01-01"),
            Document(source_id="b", title="b", updated_at="2024-01-01"),
        ]
        yield Tombstone(source_id="b")
        yield Tombstone(source_id="c")
        yield [Document(source_id="x", title="filler")]  # a batch boundary (batch_rows=4)
        yield [Document(source_id="c", title="c-again")]  # re-created after its tombstone

    sink = FragmentSink(WritePlan(uri="unused", mode="upsert", schema=frame_schema(), batch_rows=4))
    await (src() | sink).run(state=None, dead_letter_path=False)
    rows = [r for t in sink.tables for r in t.select(["source_id", "title"]).to_pylist()]
    assert rows == [
        {"source_id": "a", "title": "a-new"},
        {"source_id": "x", "title": "filler"},
        {"source_id": "c", "title": "c-again"},
    ]
    assert sink.deletes == [record_uuid("fr", "b")]


async def test_a_document_yielded_twice_is_stored_once_by_the_ray_commit(tmp_path) -> None:
    """A task that yields one document in two batches (e.g. an issue updated while paged):
    fragments cannot replace a row, so the later batch is merged by the driver instead."""
    import lance

    from cfstream.contract.report import RunReport
    from cfstream.distributed.ray import FragmentSink, TaskResult, WritePlan, _commit
    from cfstream.records import frame_schema

    @cf.source(source_type="tw")
    async def src():
        yield [Document(source_id=f"d{i}", title=f"v1 {i}") for i in range(4)]
        yield [Document(source_id="d1", title="v2 1"), Document(source_id="e", title="e")]
        yield [Document(source_id="f", title="f")]

    uri = str(tmp_path / "ray.lance")
    plan = WritePlan(uri=uri, mode="create", schema=frame_schema(), batch_rows=4)
    sink = FragmentSink(plan)
    await (src() | sink).run(state=None, dead_letter_path=False)
    assert len(sink.tables) == 1  # the batch repeating d1 waits for the driver
    result = TaskResult(
        source="src",
        partition="all",
        fragments=sink.result_fragments,
        new_schema=sink.new_schema,
        tables=sink.tables,
        rows=sink.rows,
    )
    report = RunReport()
    _commit(LanceSink(uri), plan, None, [result], report)
    rows = lance.dataset(uri).to_table(columns=["source_id", "title"]).to_pylist()
    assert sorted((r["source_id"], r["title"]) for r in rows) == [
        ("d0", "v1 0"),
        ("d1", "v2 1"),
        ("d2", "v1 2"),
        ("d3", "v1 3"),
        ("e", "e"),
        ("f", "f"),
    ]
    assert (report.sink.inserted, report.sink.updated) == (6, 1)  # d1 written, then updated


def test_keep_last_keeps_one_row_per_uuid_in_order() -> None:
    import pyarrow as pa

    from cfstream.distributed.ray import _keep_last

    t = pa.table({"uuid": ["a", "b", "a", "c", "b"], "v": [1, 2, 3, 4, 5]})
    assert _keep_last(t).to_pylist() == [
        {"uuid": "a", "v": 3},
        {"uuid": "c", "v": 4},
        {"uuid": "b", "v": 5},
    ]


async def test_a_chunk_stage_run_by_hand_counts_and_names_its_errors() -> None:
    """``ChunkStage.run`` is the runner's fused path for one stage: same counts, same errors."""
    from cfstream.contract.context import RunContext, StageContext
    from cfstream.contract.deadletter import DeadLetterWriter
    from cfstream.contract.report import RunReport, StageStats

    send, receive = anyio.create_memory_object_stream[list[object]](10)
    out_send, out_receive = anyio.create_memory_object_stream[list[object]](10)
    send.send_nowait([Document(source_id="a", title="A"), Document(source_id="b", title=" ")])
    send.send_nowait([cf.Checkpoint({"i": 1})])
    send.close()
    letters = DeadLetterWriter(None)
    run = RunContext(report=RunReport(), dead_letters=letters, stop=anyio.Event())
    ctx = StageContext(name="validate", run=run, stats=StageStats(name="validate"))
    await T.validate().run(receive, out_send, ctx)  # type: ignore[arg-type]
    got = out_receive.receive_nowait()  # the queued chunks, coalesced
    assert [getattr(it, "source_id", None) for it in got] == ["a", None]
    assert (ctx.stats.docs_in, ctx.stats.docs_out, ctx.stats.failed) == (2, 1, 1)
    assert [letter["source_id"] for letter in letters.letters] == ["b"]

    class Boom(T.Validate):
        def apply(self, chunk, ctx):  # type: ignore[no-untyped-def]
            raise RuntimeError("boom")

    send, receive = anyio.create_memory_object_stream[list[object]](10)
    send.send_nowait([Document(source_id="a", title="A")])
    send.close()
    with pytest.raises(PipelineError, match="boom") as info:
        await Boom(name="exploder").run(receive, out_send, ctx)  # type: ignore[arg-type]
    assert info.value.stage == "validate"  # the stage context's name, as in a fused run
