"""The core on real Lance datasets: upserts, resume, checkpoints, tombstones, backpressure."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import lance
import pyarrow as pa
import pytest

import cfstream as cf
from cfstream import transforms as T
from cfstream.contract.deadletter import read_dead_letters
from cfstream.contract.state import StateStore
from cfstream.errors import DatasetError
from cfstream.records import Document, record_uuid
from cfstream.sinks import LanceSink
from cfstream.storage import DatasetWriter


def make_source(
    texts: dict[str, str], *, page: int = 25, produced: list[int] | None = None, delay: float = 0.0
):
    """A paged source over ``texts`` (id -> text) that checkpoints after every page."""

    @cf.source(source_type="notes")
    async def notes(cursor: dict | None = None):
        ids = sorted(texts)
        start = (cursor or {}).get("offset", 0)
        for off in range(start, len(ids), page):
            batch = [
                Document(
                    source_id=i,
                    title=f"Note {i}",
                    text_content=texts[i],
                    updated_at="2024-03-01T12:00:00Z",
                    custom_metadata={"notes_len": len(texts[i])},
                )
                for i in ids[off : off + page]
            ]
            if produced is not None:
                produced[0] += len(batch)
            if delay:
                await anyio.sleep(delay)
            yield batch
            yield cf.Checkpoint({"offset": off + len(batch)})

    return notes()


def corpus(n: int, version: int = 0) -> dict[str, str]:
    return {f"n{i:05d}": f"text of note {i} v{version} " * 20 for i in range(n)}


def rows(path: Path) -> dict[str, tuple[str, str]]:
    table = lance.dataset(str(path)).to_table(columns=["uuid", "source_id", "content_hash"])
    out: dict[str, tuple[str, str]] = {}
    for u, s, h in zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True):
        assert u not in out, f"duplicate row for {s}"
        out[u] = (s, h)
    return out


def test_full_then_upsert_rewrites_only_changed(tmp_path: Path) -> None:
    ds = tmp_path / "kb.lance"
    texts = corpus(300)
    r1 = cf.run(make_source(texts) | T.validate() | T.dedupe() | LanceSink(str(ds), batch_rows=100))
    assert r1.sink.inserted == 300 and r1.ok
    first = rows(ds)
    assert len(first) == 300

    for k in ("n00003", "n00150", "n00299"):
        texts[k] = "changed " + texts[k]
    r2 = cf.run(
        make_source(texts) | T.validate() | LanceSink(str(ds), batch_rows=100), full_refresh=True
    )
    assert r2.sink.updated == 3
    assert r2.sink.inserted == 0
    assert r2.sink.unchanged == 297
    second = rows(ds)
    assert len(second) == 300
    changed = {u for u in first if first[u][1] != second[u][1]}
    assert changed == {record_uuid("notes", k) for k in ("n00003", "n00150", "n00299")}


def test_resume_from_checkpoint_after_cancel_gives_one_row_per_doc(tmp_path: Path) -> None:
    ds = tmp_path / "kb.lance"
    texts = corpus(400)

    async def cancelled_run() -> None:
        with anyio.CancelScope() as scope:
            pages = [0]

            async def cancel_after_12_pages(items):  # a stage that cancels the run mid-way
                async for it in items:
                    if isinstance(it, cf.Checkpoint):
                        pages[0] += 1
                        if pages[0] == 12:
                            scope.cancel()
                    yield it

            pipeline = (
                make_source(texts, page=20)
                | T.validate()
                | cancel_after_12_pages
                | LanceSink(str(ds), batch_rows=60, max_latency=60)
            )
            # small channel buffers: chunks still in flight when the run is cancelled are dropped
            # (and refetched on resume); the sink has seen most checkpoints by page 12
            await pipeline.run(buffer_chunks=1)
        assert scope.cancelled_caught

    anyio.run(cancelled_run)
    store = StateStore.for_dataset(str(ds))
    saved = store.cursor("notes")
    assert saved is not None and 0 < saved["offset"] < 400
    # every row before the saved cursor is committed
    committed = {s for s, _ in rows(ds).values()}
    assert set(sorted(texts)[: saved["offset"]]) <= committed

    produced = [0]
    r2 = cf.run(make_source(texts, page=20, produced=produced) | LanceSink(str(ds)))
    assert produced[0] == 400 - saved["offset"]  # resumed from the cursor, not from scratch
    final = rows(ds)
    assert len(final) == 400
    assert {s for s, _ in final.values()} == set(texts)
    assert r2.ok


class SlowLanceSink(LanceSink):
    """A LanceSink whose commits are slow, recording how far ahead the source gets."""

    def __init__(self, *args: Any, produced: list[int], **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.produced = produced
        self.committed = 0
        self.max_ahead = 0
        self.checkpoint_checks: list[bool] = []

    def _commit(self, batch: Any) -> dict[str, int]:
        time.sleep(0.03)
        out = super()._commit(batch)
        self.committed += batch.table.num_rows if batch.table is not None else 0
        self.max_ahead = max(self.max_ahead, self.produced[0] - self.committed)
        return out


def test_backpressure_bounds_how_far_the_source_runs_ahead(tmp_path: Path) -> None:
    produced = [0]
    sink = SlowLanceSink(
        str(tmp_path / "kb.lance"), produced=produced, batch_rows=50, max_inflight=1
    )
    report = cf.run(
        make_source(corpus(2000), page=10, produced=produced) | T.map(lambda d: d) | sink,
        buffer_chunks=2,
    )
    assert report.sink.inserted == 2000
    # 2 channels x 2 chunks x 10 + a chunk in the stage + one at the source + the sink's batch
    # being filled + the batch waiting to be handed over + the batch being written
    bound = 2 * 2 * 10 + 10 + 10 + 3 * 50
    assert sink.max_ahead <= bound, (sink.max_ahead, bound)


def test_checkpoint_saved_only_after_rows_committed(tmp_path: Path) -> None:
    ds = tmp_path / "kb.lance"
    seen: list[tuple[int, int]] = []

    class Spy(StateStore):
        def save_checkpoints(self, checkpoints):  # type: ignore[no-untyped-def]
            cps = list(checkpoints)
            n = lance.dataset(str(ds)).count_rows() if (ds / "_versions").exists() else 0
            for c in cps:
                seen.append((c.cursor["offset"], n))  # type: ignore[index]
            return super().save_checkpoints(cps)

    store = Spy(tmp_path / "state.json")
    cf.run(
        make_source(corpus(500), page=30) | LanceSink(str(ds), batch_rows=70, max_latency=60),
        state=store,
    )
    assert seen, "no checkpoint was saved"
    for offset, committed_rows in seen:
        assert committed_rows >= offset, (
            f"cursor {offset} saved with only {committed_rows} rows committed"
        )
    assert store.cursor("notes") == {"offset": 500}


def test_tombstones_delete_rows(tmp_path: Path) -> None:
    ds = tmp_path / "kb.lance"
    texts = corpus(50)
    cf.run(make_source(texts) | LanceSink(str(ds)))

    @cf.source(source_type="notes")
    async def deletions():
        yield cf.Tombstone(source_id="n00001")
        yield cf.Tombstone(source_id="n00002")
        yield cf.Tombstone(source_id="does-not-exist")

    report = cf.run(deletions() | LanceSink(str(ds)))
    assert report.sink.deleted == 2
    left = {s for s, _ in rows(ds).values()}
    assert "n00001" not in left and "n00002" not in left and len(left) == 48


def test_bad_records_reach_dead_letter_file(tmp_path: Path) -> None:
    ds = tmp_path / "kb.lance"

    @cf.source(source_type="bad")
    async def bad():
        yield [
            Document(source_id="ok1", title="fine"),
            Document(source_id="", title="no id"),
            Document(source_id="t", title=None),  # type: ignore[arg-type]
            Document(source_id="w", title="wrong", tags="not-a-list"),  # type: ignore[arg-type]
            Document(
                source_id="ok2",
                title="fine too",
                custom_metadata={"secret": cf.Secret("sk-very-secret-1234")},
            ),
        ]

    report = cf.run(bad() | T.validate() | LanceSink(str(ds)))
    assert report.dead_lettered == 3
    assert not report.ok
    letters = read_dead_letters(ds / "_cfstream" / "dead-letters.jsonl")
    assert {entry["stage"] for entry in letters} == {"validate"}
    assert sorted(str(entry["source_id"]) for entry in letters) == ["", "t", "w"]
    assert all(entry["source"] == "bad" and entry["error"] for entry in letters)
    assert {s for s, _ in rows(ds).values()} == {"ok1", "ok2"}
    table = lance.dataset(str(ds)).to_table()
    assert "sk-very-secret-1234" not in str(table.to_pylist())


def test_not_a_lance_dataset_is_refused_before_fetching(tmp_path: Path) -> None:
    target = tmp_path / "kb.lance"
    target.mkdir()
    (target / "notes.txt").write_text("hello")
    fetched = [0]
    with pytest.raises(DatasetError, match="not a Lance dataset"):
        cf.run(make_source(corpus(10), produced=fetched) | LanceSink(str(target)))
    assert fetched[0] == 0
    assert sorted(p.name for p in target.iterdir() if p.name != "_cfstream") == ["notes.txt"]

    other = tmp_path / "other.lance"
    lance.write_dataset(pa.table({"uuid": ["a"], "title": [1]}), str(other))
    with pytest.raises(DatasetError, match="title"):
        cf.run(make_source(corpus(10), produced=fetched) | LanceSink(str(other)))
    assert fetched[0] == 0
    assert lance.dataset(str(other)).count_rows() == 1


def test_append_mode_and_existing_schema_cast(tmp_path: Path) -> None:
    ds = tmp_path / "kb.lance"
    cf.run(make_source(corpus(20)) | LanceSink(str(ds), mode="append"))
    r = cf.run(make_source(corpus(20, 1)) | LanceSink(str(ds), mode="append"), full_refresh=True)
    assert r.sink.appended == 20
    assert lance.dataset(str(ds)).count_rows() == 40


def test_graceful_stop_commits_and_saves_state(tmp_path: Path) -> None:
    ds = tmp_path / "kb.lance"
    control = cf.RunControl()
    produced = [0]

    @cf.source(source_type="notes")
    async def endless(cursor: dict | None = None):
        i = (cursor or {}).get("i", 0)
        while True:
            yield [Document(source_id=f"e{i + k}", title="t") for k in range(10)]
            produced[0] += 10
            i += 10
            yield cf.Checkpoint({"i": i})
            if i == 200:
                control.request_stop()
            await anyio.lowlevel.checkpoint()

    report = cf.run(endless() | LanceSink(str(ds), max_latency=60), control=control)
    assert report.stopped_early
    saved = StateStore.for_dataset(str(ds)).cursor("notes")
    assert saved is not None
    assert lance.dataset(str(ds)).count_rows() >= saved["i"] >= 200


def test_contextframe_reads_compat_dataset(tmp_path: Path) -> None:
    contextframe = pytest.importorskip("contextframe")
    ds = tmp_path / "cf.lance"

    @cf.source(source_type="docs")
    async def docs():
        yield Document(
            source_id="readme",
            title="Read me",
            text_content="ContextFrame can read this.",
            custom_metadata={"docs_path": "README.md"},
            tags=["a"],
        )

    cf.run(docs() | LanceSink(str(ds), contextframe_compat=True))
    frame_ds = contextframe.FrameDataset.open(str(ds))
    record = frame_ds.get_by_uuid(record_uuid("docs", "readme"))
    assert record is not None
    assert (
        record.title == "Read me"
        if hasattr(record, "title")
        else record.metadata["title"] == "Read me"
    )
    assert record.text_content == "ContextFrame can read this."
    assert record.metadata["custom_metadata"]["docs_path"] == "README.md"


def test_disk_full_stops_with_clear_error_and_state_stays_at_last_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from cfstream.errors import CommitError

    ds = tmp_path / "kb.lance"
    real = DatasetWriter.commit_once
    calls = [0]

    def flaky(self: DatasetWriter, batch: Any) -> dict[str, int]:
        calls[0] += 1
        if calls[0] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, batch)

    monkeypatch.setattr(DatasetWriter, "commit_once", flaky)
    with pytest.raises(CommitError, match="disk .* is full"):
        cf.run(
            make_source(corpus(500), page=25) | LanceSink(str(ds), batch_rows=100, max_latency=60)
        )
    saved = StateStore.for_dataset(str(ds)).cursor("notes")
    committed = rows(ds)
    assert saved is not None
    assert len(committed) == 200  # two good commits
    assert saved["offset"] <= 200
    committed_ids = {s for s, _ in committed.values()}
    assert set(sorted(corpus(500))[: saved["offset"]]) <= committed_ids


def test_fresh_load_appends_but_never_duplicates_a_repeated_document(tmp_path: Path) -> None:
    ds = tmp_path / "kb.lance"

    @cf.source(source_type="rep")
    async def repeats():
        for page in range(6):
            batch = [
                Document(source_id=f"p{page}-{i}", title="t", text_content="v1") for i in range(50)
            ]
            if page == 4:  # a document of page 0 again, changed, two batches later
                batch.append(Document(source_id="p0-7", title="t", text_content="v2"))
            yield batch

    report = cf.run(repeats() | LanceSink(str(ds), batch_rows=50, index_threshold=200))
    cf.run(repeats() | LanceSink(str(ds), batch_rows=50, index_threshold=200), full_refresh=True)
    table = lance.dataset(str(ds)).to_table(columns=["source_id", "text_content"])
    ids = table.column("source_id").to_pylist()
    assert len(ids) == len(set(ids)) == 300
    assert dict(zip(ids, table.column("text_content").to_pylist(), strict=True))["p0-7"] == "v2"
    assert report.sink.inserted == 300 and report.sink.updated == 1
    # the repeat ended append mode; merges build the uuid index once past index_threshold
    indices = lance.dataset(str(ds)).describe_indices()
    assert any("uuid" in (i.field_names or []) for i in indices)


def test_maintenance_compacts_small_fragments_only(tmp_path: Path) -> None:
    ds = tmp_path / "kb.lance"

    @cf.source(source_type="s")
    async def pages(version: int):
        for p in range(30):
            yield [
                Document(source_id=f"{p}-{i}", title="t", text_content=f"v{version}")
                for i in range(20)
            ]

    for version in range(3):
        # max_latency=0: every page is its own small commit (30 fragments of 20 rows a run)
        cf.run(
            pages(version)
            | LanceSink(str(ds), batch_rows=100, max_latency=0.0, maintenance_every=5),
            state=None,
        )
        dataset = lance.dataset(str(ds))
        assert dataset.count_rows() == 600
        assert len(dataset.get_fragments()) <= 12, len(dataset.get_fragments())
    texts = set(lance.dataset(str(ds)).to_table(columns=["text_content"]).column(0).to_pylist())
    assert texts == {"v2"}
