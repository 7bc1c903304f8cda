"""Item 6 of issue 14: a first load's fast append path never duplicates a record another writer
stored meanwhile, and an upsert run heals duplicates it meets.

The overlap is made by two writers of the same uuids: two pipeline runs with different source
names (so their sync states and locks are separate) and one ``source_type``, so the same
``source_id`` gives the same uuid whatever ``record_uuid`` derives it from. Writer A runs in a
child process and waits at a gate file (a deterministic stand-in for a slow API or a SIGSTOP)
after its first half is committed; writer B, another child process, merges part of A's second
half meanwhile.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import lance
import pytest

import cfstream as cf
from cfstream.records import Document
from cfstream.sinks import LanceSink
from cfstream.storage import documents_to_table, frame_schema, heal_duplicates

WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import anyio
    import cfstream as cf
    from cfstream.records import Document
    from cfstream.sinks import LanceSink

    dataset, name, first, last, gate_at, gate = sys.argv[1:]
    first, last, gate_at = int(first), int(last), int(gate_at)

    @cf.source(source_type="notes")
    async def notes():
        for start in range(first, last, 500):
            if start == gate_at:
                while not Path(gate).exists():
                    await anyio.sleep(0.02)
            yield [
                Document(source_id=f"n{i:05d}", title=f"{name} {i}", text_content=f"{name} {i}",
                         updated_at="2024-01-01T00:00:00Z")
                for i in range(start, min(last, start + 500))
            ]

    src = notes(name=name)  # its own name: its own run lock and cursors
    src.identity = "notes"  # ...but the records of both writers share their uuids
    report = cf.run(src | LanceSink(dataset, batch_rows=500, max_latency=0.1))
    sys.exit(0 if report.ok else 5)
    """
)


def _start(tmp_path: Path, dataset: Path, name: str, first: int, last: int, gate_at: int = -1):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    args = [str(dataset), name, str(first), str(last), str(gate_at), str(tmp_path / "gate")]
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


def _finish(proc: subprocess.Popen[str]) -> None:
    try:
        _out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("writer hung")
    assert proc.returncode == 0, err[-3000:]


def _uuids(dataset: Path) -> list[str]:
    return lance.dataset(str(dataset)).to_table(columns=["uuid"]).column("uuid").to_pylist()


@pytest.mark.timeout(120)
def test_fresh_load_overtaken_by_another_writer_stores_each_document_once(tmp_path: Path) -> None:
    dataset = tmp_path / "kb.lance"
    a = _start(tmp_path, dataset, "A", 0, 6000, gate_at=3000)
    try:
        deadline = time.monotonic() + 60
        while True:  # A created the dataset and appended its first half; now it waits
            if (dataset / "_versions").exists() and lance.dataset(
                str(dataset)
            ).count_rows() >= 3000:
                break
            assert a.poll() is None and time.monotonic() < deadline, "writer A did not get going"
            time.sleep(0.05)
        _finish(_start(tmp_path, dataset, "B", 3000, 3500))  # merges 500 of A's second half
    finally:
        (tmp_path / "gate").touch()
    _finish(a)
    uuids = _uuids(dataset)
    assert len(uuids) == len(set(uuids)) == 6000


def _docs(ids: range, text: str) -> list[Document]:
    return [
        Document(
            source_id=f"n{i:05d}",
            title=f"t{i}",
            text_content=text,
            source_type="notes",
            updated_at="2024-01-01T00:00:00Z",
        )
        for i in ids
    ]


def _notes(ids: range, text: str, name: str = "notes", page: int = 1000) -> Any:
    @cf.source(source_type="notes")
    async def notes() -> Any:
        for start in range(ids.start, ids.stop, page):
            yield _docs(range(start, min(ids.stop, start + page)), text)

    src = notes(name=name)
    src.identity = "notes"  # every writer's records share their uuids, whatever its name
    return src


def test_another_writer_between_the_check_and_the_append_is_healed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """B commits in the instant between A's check of the latest version and A's append."""
    dataset = tmp_path / "kb.lance"
    real_write = lance.write_dataset
    appends: list[int] = []

    def write_dataset(data: Any, uri: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("mode") == "append":
            appends.append(1)
            if len(appends) == 1:  # writer B: merges 100 of the uuids A is about to append
                cf.run(_notes(range(1000, 1100), "B", "B") | LanceSink(str(dataset)))
        return real_write(data, uri, *args, **kwargs)

    monkeypatch.setattr(lance, "write_dataset", write_dataset)
    report = cf.run(_notes(range(2000), "A", "A") | LanceSink(str(dataset), batch_rows=1000))
    monkeypatch.undo()
    assert appends, "the fresh load did not append"
    uuids = _uuids(dataset)
    assert len(uuids) == len(set(uuids)) == 2000
    assert report.ok and report.sink.duplicates_removed == 100


def test_full_resync_heals_duplicated_uuids(tmp_path: Path) -> None:
    """A dataset damaged earlier (two rows for one uuid) ends with exactly one row per document."""
    dataset = tmp_path / "kb.lance"
    schema = frame_schema()
    old = documents_to_table(_docs(range(300), "old"), schema)
    lance.write_dataset(old, str(dataset), schema=schema)
    newer = documents_to_table(_docs(range(200, 300), "newer"), schema)
    lance.write_dataset(newer, str(dataset), mode="append")
    lance.write_dataset(newer.slice(0, 10), str(dataset), mode="append")  # three rows for some
    assert len(_uuids(dataset)) == 410

    report = cf.run(_notes(range(300), "newer") | LanceSink(str(dataset)), full_refresh=True)
    table = lance.dataset(str(dataset)).to_table(columns=["uuid", "source_id", "text_content"])
    uuids = table.column("uuid").to_pylist()
    assert len(uuids) == len(set(uuids)) == 300
    assert set(table.column("text_content").to_pylist()) == {"newer"}
    assert report.ok and report.sink.duplicates_removed == 110


def test_heal_duplicates_keeps_the_newest_row(tmp_path: Path) -> None:
    dataset = str(tmp_path / "kb.lance")
    schema = frame_schema()

    def table(text: str, when: str, ids: range = range(5)) -> Any:
        docs = _docs(ids, text)
        for d in docs:
            d.source_updated_at = when
        return documents_to_table(docs, schema)

    lance.write_dataset(table("middle", "2024-02-01T00:00:00Z"), dataset, schema=schema)
    lance.write_dataset(table("newest", "2024-03-01T00:00:00Z"), dataset, mode="append")
    lance.write_dataset(table("oldest", "2024-01-01T00:00:00Z"), dataset, mode="append")
    lance.write_dataset(
        table("single", "2024-01-01T00:00:00Z", range(5, 8)), dataset, mode="append"
    )
    ds = lance.dataset(dataset)
    assert heal_duplicates(ds) == 10
    version = ds.version
    assert heal_duplicates(ds) == 0 and ds.version == version  # no commit needed
    rows = lance.dataset(dataset).to_table(columns=["source_id", "text_content"]).to_pylist()
    assert sorted((r["source_id"], r["text_content"]) for r in rows) == [
        *((f"n{i:05d}", "newest") for i in range(5)),
        *((f"n{i:05d}", "single") for i in range(5, 8)),
    ]


def test_an_incremental_merge_that_meets_a_duplicate_heals_it(tmp_path: Path) -> None:
    """Lance rewrites both rows of a uuid stored twice; the merge reports more rows than it was
    given, and the sink deletes the extra one there and then."""
    dataset = tmp_path / "kb.lance"
    schema = frame_schema()
    lance.write_dataset(documents_to_table(_docs(range(50), "v1"), schema), str(dataset))
    twins = documents_to_table(_docs(range(10), "v1"), schema)
    lance.write_dataset(twins, str(dataset), mode="append")
    report = cf.run(_notes(range(20), "v2") | LanceSink(str(dataset)))  # not --full
    table = lance.dataset(str(dataset)).to_table(columns=["uuid", "text_content"])
    uuids = table.column("uuid").to_pylist()
    assert len(uuids) == len(set(uuids)) == 50
    assert table.column("text_content").to_pylist().count("v2") == 20
    assert report.sink.duplicates_removed == 10
