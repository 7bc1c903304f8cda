"""FilesSource: a plain folder of text files into a real Lance dataset."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lance
import orjson
import pytest

import cfstream as cf
from cfstream.errors import ConfigError
from cfstream.records import record_uuid
from cfstream.sinks import LanceSink
from cfstream.sources import load_source_class
from cfstream.sources.files import FilesSource

REPO = Path(__file__).resolve().parents[2]


def rows(dataset: Path) -> dict[str, dict[str, Any]]:
    return {r["source_id"]: r for r in lance.dataset(str(dataset)).to_table().to_pylist()}


def fingerprint(dataset: Path) -> list[tuple[str, str]]:
    table = lance.dataset(str(dataset)).to_table(columns=["uuid", "content_hash"])
    return sorted(zip(table["uuid"].to_pylist(), table["content_hash"].to_pylist(), strict=True))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    (root / "guide" / "deep").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "README.md").write_text("# Read me first\n\nWhat this folder is.\n")
    (root / "notes.txt").write_text("plain text notes\n")
    (root / "script.py").write_text("print('not included')\n")
    (root / "guide" / "install.md").write_text("Intro line\n\n# Installing\n\nSteps.\n")
    (root / "guide" / "deep" / "faq.md").write_text("no heading here\n")
    (root / ".git" / "HEAD.md").write_text("# hidden\n")
    return root


async def test_full_and_incremental_sync(folder: Path, tmp_path: Path) -> None:
    ds = tmp_path / "kb.lance"
    report = await (FilesSource(folder) | LanceSink(str(ds))).run()
    stats = report.sources["files"]
    assert stats.skipped == 1  # script.py
    got = rows(ds)
    assert set(got) == {
        "README.md",
        "notes.txt",
        "guide/install.md",
        "guide/deep/faq.md",
        "/",
        "guide/",
        "guide/deep/",
    }
    assert got["README.md"]["title"] == "Read me first"
    assert got["guide/install.md"]["title"] == "Installing"
    assert got["guide/deep/faq.md"]["title"] == "faq"
    assert got["notes.txt"]["text_content"] == "plain text notes\n"
    assert got["guide/deep/faq.md"]["collection"] == "guide/deep"
    member = [r["id"] for r in got["guide/deep/faq.md"]["relationships"]]
    assert member == [record_uuid("files", "guide/deep/")]
    assert got["guide/"]["record_type"] == "collection_header"

    when = 1_900_000_000 * 10**9
    (folder / "guide" / "install.md").write_text("# Installing v2\n")
    os.utime(folder / "guide" / "install.md", ns=(when, when))
    (folder / "notes.txt").unlink()
    (folder / "guide" / "deep" / "faq.md").rename(folder / "guide" / "faq.md")
    report = await (FilesSource(folder) | LanceSink(str(ds))).run()
    stats = report.sources["files"]
    assert stats.fetched == 2  # the edit and the rename's new path
    assert stats.tombstones == 3  # notes.txt, the old path and the now empty guide/deep/ header
    assert stats.skipped_unchanged == 1  # README.md
    fresh = tmp_path / "fresh.lance"
    await (FilesSource(folder) | LanceSink(str(fresh))).run()
    assert fingerprint(ds) == fingerprint(fresh)
    assert rows(ds)["guide/install.md"]["title"] == "Installing v2"


async def test_invalid_utf8_is_dead_lettered(folder: Path, tmp_path: Path) -> None:
    (folder / "guide" / "bad.txt").write_bytes(b"\xff\xfe broken")
    ds = tmp_path / "kb.lance"
    report = await (FilesSource(folder, include=["**/*.txt"]) | LanceSink(str(ds))).run()
    assert report.sources["files"].failed == 1
    letters = (ds / "_cfstream" / "dead-letters.jsonl").read_bytes().splitlines()
    letter = orjson.loads(letters[0])
    assert letter["source_id"] == "guide/bad.txt"
    assert "not valid UTF-8" in letter["error"] and "exclude" in letter["error"]
    assert {"notes.txt", "/"} <= set(rows(ds))


def test_cf_run_and_config(folder: Path, tmp_path: Path) -> None:
    assert load_source_class("files") is FilesSource
    src = FilesSource.from_config({"path": str(folder), "include": ["**/*.md"]}, name="docs")
    report = cf.run(src | LanceSink(str(tmp_path / "kb.lance")))
    assert report.sources["docs"].fetched == 3 + 3  # 3 markdown files and 3 folder headers
    with pytest.raises(ConfigError, match="include"):
        FilesSource.from_config({"path": str(folder), "include": []})


async def test_bundled_docs_folder(tmp_path: Path) -> None:
    ds = tmp_path / "kb.lance"
    report = await (
        FilesSource(REPO / "cfstream" / "demo_data" / "docs", folder_headers=False)
        | LanceSink(str(ds))
    ).run()
    assert report.sources["files"].failed == 0
    got = rows(ds)
    assert 8 <= len(got) <= 12
    assert all(r["text_content"] and len(r["text_content"]) > 200 for r in got.values())
