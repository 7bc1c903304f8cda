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
from cfstream.records import escape_surrogates, record_uuid
from cfstream.sinks import LanceSink
from cfstream.sinks.memory import MemorySink
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


def dead_letters(dataset: Path) -> list[dict[str, Any]]:
    path = dataset / "_cfstream" / "dead-letters.jsonl"
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


async def test_a_file_over_max_file_bytes_is_a_dead_letter_and_never_read(
    folder: Path, tmp_path: Path
) -> None:
    ds = tmp_path / "kb.lance"
    big = folder / "guide" / "big.txt"
    with big.open("wb") as fh:
        fh.truncate(64 * 1024 * 1024)  # sparse: made at once; 64 MiB of NULs if it were read
    mid = folder / "mid.txt"
    mid.write_text("m" * 2000)

    report = await (FilesSource(folder) | LanceSink(str(ds))).run()
    assert report.sources["files"].failed == 1
    [letter] = dead_letters(ds)
    assert letter["source_id"] == "guide/big.txt"
    assert "is 67,108,864 bytes, over the limit of 33,554,432 bytes" in letter["error"]
    assert "max_file_bytes" in letter["error"]
    got = rows(ds)
    assert "guide/big.txt" not in got
    assert {"README.md", "notes.txt", "mid.txt", "guide/install.md"} <= set(got)

    # unchanged, it is not looked at (nor dead-lettered) again
    report = await (FilesSource(folder) | LanceSink(str(ds))).run()
    assert report.sources["files"].failed == 0 and len(dead_letters(ds)) == 1

    # under a smaller limit an edit that is too big is refused; the imported version stays
    when = 1_900_000_000 * 10**9
    mid.write_text("n" * 1500)
    os.utime(mid, ns=(when, when))
    report = await (FilesSource(folder, max_file_bytes=1000) | LanceSink(str(ds))).run()
    assert report.sources["files"].failed == 1
    letter = dead_letters(ds)[-1]
    assert letter["source_id"] == "mid.txt"
    assert "is 1,500 bytes, over the limit of 1,000 bytes" in letter["error"]
    assert rows(ds)["mid.txt"]["text_content"] == "m" * 2000

    # the limit raised: the untouched file is read now that it fits
    report = await (FilesSource(folder, max_file_bytes=2000) | LanceSink(str(ds))).run()
    assert report.sources["files"].failed == 0
    assert report.sources["files"].fetched == 1
    assert rows(ds)["mid.txt"]["text_content"] == "n" * 1500

    # the big file shrinks: it is read
    big.write_text("small now\n")
    report = await (FilesSource(folder) | LanceSink(str(ds))).run()
    assert report.sources["files"].failed == 0
    assert rows(ds)["guide/big.txt"]["text_content"] == "small now\n"
    with pytest.raises(ConfigError, match="max_file_bytes"):
        FilesSource.from_config({"path": str(folder), "max_file_bytes": 0})


async def test_a_file_growing_while_read_is_read_no_further_than_the_limit(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    grows = folder / "grows.txt"
    grows.write_text("g" * 100)
    target = (grows.stat().st_dev, grows.stat().st_ino)
    real_fstat = os.fstat
    appended: list[int] = []

    def fstat_then_grow(fd: int) -> os.stat_result:
        st = real_fstat(fd)
        if (st.st_dev, st.st_ino) == target and not appended:
            with grows.open("ab") as fh:  # grows past the limit after the size check
                appended.append(fh.write(b"g" * 1_000_000))
        return st

    monkeypatch.setattr(os, "fstat", fstat_then_grow)
    sink = MemorySink()
    report = await (FilesSource(folder, max_file_bytes=1000) | sink).run()
    assert appended
    assert report.sources["files"].failed == 1
    assert "grows.txt" not in {d.source_id for d in sink.documents}
    assert "README.md" in {d.source_id for d in sink.documents}


class SwapAfterScan(FilesSource):
    """Runs ``swaps[partition]`` right after that partition's scan, before its files are read
    (a files source walks each top-level folder when it reads it)."""

    swaps: dict[str, Any] = {}

    def prepare(self, scan: Any) -> None:
        super().prepare(scan)
        swap = self.swaps.pop(scan.partition, None)
        if swap is not None:
            swap()


async def test_a_file_or_folder_swapped_for_a_symlink_after_the_scan_is_not_followed(
    folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    for rel in ("secret.md", "install.md", "deep/faq.md"):
        (outside / rel).write_text("# SECRET outside the folder\n")

    def swap_readme() -> None:
        (folder / "README.md").unlink()
        (folder / "README.md").symlink_to(outside / "secret.md")

    def swap_guide() -> None:
        (folder / "guide").rename(tmp_path / "guide-moved")
        (folder / "guide").symlink_to(outside, target_is_directory=True)

    src = SwapAfterScan(folder)
    src.swaps = {"": swap_readme, "guide": swap_guide}
    sink = MemorySink()
    report = await (src | sink).run()
    texts = [d.text_content or "" for d in sink.documents]
    assert not any("SECRET" in t for t in texts)
    assert {d.source_id for d in sink.documents} >= {"notes.txt", "/"}
    assert not {"README.md", "guide/install.md", "guide/deep/faq.md"} & {
        d.source_id for d in sink.documents
    }
    stats = report.sources["files"]
    assert stats.failed == 0 and report.dead_lettered == 0  # not bad records: they changed
    assert stats.skipped == 1 + 3  # script.py, and the three swapped files
    assert "skipped 'README.md'" in caplog.text and "symlink" in caplog.text

    # the next run sees the symlinks at scan time and leaves them out
    sink = MemorySink()
    await (FilesSource(folder) | sink).run()
    assert not any("SECRET" in (d.text_content or "") for d in sink.documents)


def write_bytes(path: bytes, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)


async def test_names_that_are_not_utf8_are_imported_under_escaped_ids(folder: Path) -> None:
    raw = os.fsencode(folder)
    os.makedirs(raw + b"/guide/bad\xff/sub")
    for name in (b"/guide/bad\xff/sub/note.md", b"/caf\xe9.md"):
        write_bytes(raw + name, b"# a note whose path is not UTF-8\n")
    sink = MemorySink()
    report = await (FilesSource(folder) | sink).run()
    assert report.sources["files"].error is None
    ids = {d.source_id for d in sink.documents}
    assert {"README.md", "guide/install.md"} <= ids
    # the sink stores each undecodable byte as \xNN; the source passes the name through
    stored = {escape_surrogates(i) for i in ids}
    assert {"caf\\xe9.md", "guide/bad\\xff/sub/note.md"} <= stored


class RecordScans(FilesSource):
    """Remembers what each scan held."""

    def __init__(self, *a: Any, **k: Any) -> None:
        super().__init__(*a, **k)
        self.scans: list[tuple[str | None, set[str]]] = []

    def prepare(self, scan: Any) -> None:
        super().prepare(scan)
        self.scans.append((scan.partition, {e.rel for es in scan.documents.values() for e in es}))


async def test_each_partition_walks_only_its_own_folder(folder: Path) -> None:
    """A files source never holds the whole tree's listing: each top-level folder is walked
    when its partition is read (so a sync's memory does not grow with the folder's size)."""
    src = RecordScans(folder)
    sink = MemorySink()
    await (src | sink).run()
    assert sorted((p or "", sorted(f)) for p, f in src.scans) == [
        ("", ["README.md", "notes.txt"]),
        ("guide", ["guide/deep/faq.md", "guide/install.md"]),
    ]


async def test_a_symlinked_folder_inside_the_tree_is_imported_once_under_its_own_path(
    tmp_path: Path,
) -> None:
    root = tmp_path / "tree"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.md").write_text("# x\n")
    (root / ".hidden" / "h").mkdir(parents=True)
    (root / ".hidden" / "h" / "y.md").write_text("# y\n")
    for name in ("0-link", "z-link"):  # before and after "a" in any listing order
        (root / name).symlink_to(root / "a", target_is_directory=True)
    (root / "a" / "up").symlink_to(root, target_is_directory=True)
    (root / "shown").symlink_to(root / ".hidden" / "h", target_is_directory=True)
    sink = MemorySink()
    await (FilesSource(root, folder_headers=False) | sink).run()
    assert sorted(d.source_id for d in sink.documents) == ["a/x.md", "shown/y.md"]
