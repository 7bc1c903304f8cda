"""Item 7 of issue 14: a vault holding files whose names are not valid UTF-8 syncs end to end.

Such a name reaches Python (``os.fsdecode``) with lone surrogates. The sink stores the record with
its text escaped (``escape_surrogates``: the byte 0xff becomes ``\\xff``) under the uuid of that
stored id, the same on every run; a file it cannot store is dead-lettered without stopping the run.
"""

from __future__ import annotations

import os
from pathlib import Path

import lance
import pytest

import cfstream as cf
from cfstream.contract.deadletter import read_dead_letters
from cfstream.records import escape_surrogates, record_uuid
from cfstream.sinks import LanceSink
from cfstream.sources.files import FilesSource


def _vault(tmp_path: Path) -> Path:
    root = tmp_path / "vault"
    (root / "sub").mkdir(parents=True)
    (root / "ok.md").write_text("# Fine\nbody\n")
    raw = os.fsencode(root)
    try:
        with open(raw + b"/bad\xff name.md", "wb") as fh:
            fh.write(b"# Bad name\ntext\n")
        with open(raw + b"/sub/n\xe9e.md", "wb") as fh:  # latin-1 e-acute: not UTF-8
            fh.write(b"no heading\n")
        with open(raw + b"/sub/both\xfe.md", "wb") as fh:  # bad name and bad content
            fh.write(b"\xff\xfe not utf-8 text")
    except OSError as exc:  # a file system that only takes UTF-8 names
        pytest.skip(f"cannot create a file with a non-UTF-8 name here: {exc}")
    return root


def _rows(ds: Path) -> dict[str, tuple[str, str]]:
    table = lance.dataset(str(ds)).to_table(columns=["uuid", "source_id", "title"])
    ids = table.column("source_id").to_pylist()
    assert len(ids) == len(set(ids)), "duplicated rows"
    return dict(
        zip(
            ids,
            zip(table.column("uuid").to_pylist(), table.column("title").to_pylist(), strict=True),
            strict=True,
        )
    )


def test_a_vault_with_undecodable_file_names_syncs(tmp_path: Path) -> None:
    root = _vault(tmp_path)
    ds = tmp_path / "kb.lance"
    report = cf.run(FilesSource(root) | LanceSink(str(ds)))
    rows = _rows(ds)
    bad_id = escape_surrogates(os.fsdecode(b"bad\xff name.md"))
    assert bad_id == "bad\\xff name.md"
    assert {"ok.md", bad_id, "sub/n\\xe9e.md"} <= set(rows)
    assert rows[bad_id] == (record_uuid("files", os.fsdecode(b"bad\xff name.md")), "Bad name")
    assert rows["sub/n\\xe9e.md"][1] == "n\\xe9e"
    # the file whose content is not UTF-8 is dead-lettered by the source, once, readable
    letters = read_dead_letters(ds / "_cfstream" / "dead-letters.jsonl")
    assert [letter["source_id"] for letter in letters] == ["sub/both\\xfe.md"]
    assert report.dead_lettered == 1 and report.error is None

    # the next run finds nothing new; a rename away from the bad name deletes the old row
    again = cf.run(FilesSource(root) | LanceSink(str(ds)))
    assert again.sink.inserted == again.sink.updated == 0 and again.error is None
    raw = os.fsencode(root)
    os.rename(raw + b"/bad\xff name.md", raw + b"/renamed.md")
    cf.run(FilesSource(root) | LanceSink(str(ds)))
    rows = _rows(ds)
    assert bad_id not in rows and rows["renamed.md"][1] == "Bad name"
