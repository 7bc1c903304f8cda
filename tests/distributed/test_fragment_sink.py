"""Ray's FragmentSink, run in this process (no Ray): it cuts batches on rows, bytes and latency as
LanceSink does, resolves them with the same code, and dead-letters what it cannot store."""

from __future__ import annotations

from pathlib import Path

import anyio
import lance

import cfstream as cf
from cfstream.contract.deadletter import read_dead_letters
from cfstream.distributed.ray import FragmentSink, WritePlan, _run_partition
from cfstream.storage import frame_schema


def _plan(tmp_path: Path, mode: str, **kw: object) -> WritePlan:
    return WritePlan(uri=str(tmp_path / "task.lance"), mode=mode, schema=frame_schema(), **kw)  # type: ignore[arg-type]


async def test_fragment_sink_cuts_a_batch_at_batch_bytes(tmp_path: Path) -> None:
    @cf.source(source_type="big")
    async def pages():
        for p in range(6):  # 6 pages of 10 documents of 100 characters: 1,000 a page
            yield [
                cf.Document(source_id=f"{p}-{i}", title="t", text_content="x" * 100)
                for i in range(10)
            ]

    sink = FragmentSink(_plan(tmp_path, "upsert", batch_rows=10_000, batch_bytes=2_000))
    await (pages() | sink).run(state=None, dead_letter_path=False)
    assert [t.num_rows for t in sink.tables] == [20, 20, 20]


async def test_fragment_sink_cuts_a_batch_after_max_latency(tmp_path: Path) -> None:
    @cf.source(source_type="slow")
    async def slow():
        yield [cf.Document(source_id="a", title="a")]
        await anyio.sleep(0.5)  # a slow API: what waited max_latency goes on meanwhile
        yield [cf.Document(source_id="b", title="b")]

    sink = FragmentSink(_plan(tmp_path, "upsert", batch_rows=10_000, max_latency=0.1))
    await (slow() | sink).run(state=None, dead_letter_path=False)
    assert [t.column("source_id").to_pylist() for t in sink.tables] == [["a"], ["b"]]


@cf.source(source_type="mixed")
async def one_wrong_type():
    yield [
        cf.Document(source_id="good-1", title="fine"),
        cf.Document(source_id="bad", title="tags are text", tags="not-a-list"),  # type: ignore[arg-type]
        cf.Document(source_id="good-2", title="fine"),
    ]


def test_a_task_dead_letters_a_document_it_cannot_convert_and_writes_the_rest(
    tmp_path: Path,
) -> None:
    """No validate stage: the batch fails to build, is converted one document at a time (as in
    LanceSink), the bad document goes to the task's dead-letter file and the others are written."""
    plan = _plan(tmp_path, "create", dead_letter_dir=str(tmp_path / "letters"))
    result = _run_partition(one_wrong_type(), [], "all", None, plan, 1.0)
    assert result.dead_lettered == 1 and result.rows == 2
    assert result.dead_letter_file is not None
    [letter] = read_dead_letters(result.dead_letter_file)
    assert letter["source_id"] == "bad" and letter["stage"] == "fragments"
    assert "tags" in letter["error"]
    ds = lance.LanceDataset.commit(
        plan.uri, lance.LanceOperation.Overwrite(result.new_schema, result.fragments)
    )
    assert sorted(ds.to_table(columns=["source_id"]).column("source_id").to_pylist()) == [
        "good-1",
        "good-2",
    ]
