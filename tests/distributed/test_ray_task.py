"""A Ray partition task, run in this process (no Ray): its dead letters go to a file of its own,
never into the result the driver receives through Ray's object store."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

import cfstream as cf
from cfstream import transforms as T
from cfstream.contract.deadletter import read_dead_letters
from cfstream.distributed.ray import WritePlan, _merge_dead_letters, _run_partition
from cfstream.records import frame_schema

INVALID = 3_000


@cf.source(source_type="many")
async def many_invalid():
    yield [
        cf.Document(source_id=f"d{i}", title="" if i % 2 else f"doc {i}")
        for i in range(2 * INVALID)
    ]


def _run(tmp_path: Path, letters_dir: Path | None):
    plan = WritePlan(
        uri=str(tmp_path / "task.lance"),
        mode="create",
        schema=frame_schema(),
        dead_letter_dir=str(letters_dir) if letters_dir is not None else None,
    )
    source = many_invalid()
    return _run_partition(source, [T.validate()], "all", None, plan, 1.0)


def test_a_task_spills_its_dead_letters_to_its_own_file(tmp_path: Path) -> None:
    letters_dir = tmp_path / "letters"
    first = _run(tmp_path, letters_dir)
    second = _run(tmp_path, letters_dir)  # a retry of the same partition
    assert first.dead_lettered == second.dead_lettered == INVALID
    assert first.dead_letter_file != second.dead_letter_file
    assert first.dead_letter_file is not None
    letters = read_dead_letters(first.dead_letter_file)
    assert sorted(int(letter["source_id"][1:]) for letter in letters) == list(
        range(1, 2 * INVALID, 2)
    )
    assert {letter["stage"] for letter in letters} == {"validate"}
    # the result holds a file name, not the letters: a few KB however many there are
    assert len(pickle.dumps(first)) < 50_000


def test_a_task_without_a_dead_letter_file_counts_its_letters_and_returns_none(
    tmp_path: Path,
) -> None:
    result = _run(tmp_path, None)
    assert result.dead_lettered == INVALID
    assert result.dead_letter_file is None
    assert len(pickle.dumps(result)) < 50_000
    assert not list(tmp_path.rglob("*.jsonl"))


def test_the_driver_appends_the_tasks_files_and_logs_one_it_cannot_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    letters_dir = tmp_path / "letters"
    first, second = _run(tmp_path, letters_dir), _run(tmp_path, letters_dir)
    assert second.dead_letter_file is not None
    Path(second.dead_letter_file).unlink()  # e.g. written on a node the driver cannot see
    second.partition = "gone"
    path = tmp_path / "run" / "dead-letters.jsonl"
    _merge_dead_letters([first, second], path)
    assert len(read_dead_letters(path)) == INVALID
    assert f"the {INVALID} dead letter(s) of partition 'gone'" in caplog.text
