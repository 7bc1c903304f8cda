"""A record's identity is (source name, source type, source id): two sources of one type never share
a row, and datasets written before names counted are rewritten once.

Real folders and vaults, real Lance datasets, the CLI in a subprocess.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import lance
import pytest

import cfstream as cf
from cfstream import transforms as T
from cfstream.contract.state import StateStore
from cfstream.records import record_uuid
from cfstream.sinks import LanceSink
from cfstream.sinks import identity as identity_mod
from cfstream.sources.files import FilesSource
from cfstream.sources.obsidian import ObsidianSource


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "cfstream.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def _rows(ds_path: Path, *columns: str) -> list[dict[str, Any]]:
    cols = list(columns) or ["uuid", "source_type", "source_id", "text_content", "relationships"]
    return lance.dataset(str(ds_path)).to_table(columns=cols).to_pylist()


def _write(folder: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    return folder


def test_two_files_sources_with_one_readme_each_keep_two_rows(tmp_path: Path) -> None:
    """The issue's case: 4 documents -> 4 rows; deleting A's README leaves B's in place."""
    _write(tmp_path / "A", {"README.md": "# Alpha\nalpha text\n"})
    _write(tmp_path / "B", {"README.md": "# Beta\nbeta text\n"})
    cfg = tmp_path / "cfstream.yaml"
    cfg.write_text(
        textwrap.dedent(
            """
            dataset: ./kb.lance
            pipeline:
              - dedupe: {}
            sources:
              alpha: {type: files, path: ./A}
              beta: {type: files, path: ./B}
            """
        ),
        encoding="utf-8",
    )
    report = json.loads(_cli(tmp_path, "sync", str(cfg), "--json", "--quiet").stdout)
    assert report["fetched"] == 4
    ds = tmp_path / "kb.lance"
    rows = _rows(ds)
    assert len(rows) == 4
    readmes = {r["uuid"]: r["text_content"] for r in rows if r["source_id"] == "README.md"}
    assert readmes == {
        record_uuid("files", "README.md", source_name="alpha"): "# Alpha\nalpha text\n",
        record_uuid("files", "README.md", source_name="beta"): "# Beta\nbeta text\n",
    }

    (tmp_path / "A" / "README.md").unlink()
    for _ in range(2):
        _cli(tmp_path, "sync", str(cfg), "--json", "--quiet")
    readmes = {r["uuid"]: r["text_content"] for r in _rows(ds) if r["source_id"] == "README.md"}
    assert readmes == {record_uuid("files", "README.md", source_name="beta"): "# Beta\nbeta text\n"}
    assert len(_rows(ds)) == 3  # two folder headers and B's README


def _vault(folder: Path, who: str) -> Path:
    return _write(
        folder,
        {
            "README.md": f"# {who}\nSee [[Other]] and [[Sub/Deep]].\n",
            "Other.md": f"# Other of {who}\n",
            "Sub/Deep.md": f"# Deep of {who}\nBack to [[README]].\n",
        },
    )


async def test_two_vaults_link_to_their_own_notes_and_rerun_changes_nothing(
    tmp_path: Path,
) -> None:
    work = _vault(tmp_path / "work", "work")
    home = _vault(tmp_path / "home", "home")
    ds = tmp_path / "kb.lance"

    def pipeline() -> Any:
        return cf.merge(
            ObsidianSource(work, name="work"), ObsidianSource(home, name="home")
        ) | LanceSink(str(ds))

    report = await pipeline().run()
    assert report.sink.dataset_rows == report.fetched == 2 * 5  # 3 notes + 2 folder headers each
    rows = _rows(ds)
    by_uuid = {r["uuid"]: r for r in rows}
    assert len(by_uuid) == 10
    for who in ("work", "home"):
        readme = by_uuid[record_uuid("obsidian", "README.md", source_name=who)]
        assert readme["text_content"].startswith(f"# {who}\n")
        targets = {
            r["id"] for r in readme["relationships"] if r["type"] in ("reference", "related")
        }
        linked = [by_uuid[t]["text_content"] for t in targets if t in by_uuid]
        assert sorted(linked) == sorted(
            [f"# Other of {who}\n", f"# Deep of {who}\nBack to [[README]].\n"]
        )
        # every relationship of the vault's rows points at a row of the same vault (or outside)
        for r in rows:
            if r["text_content"] and who in r["text_content"]:
                for rel in r["relationships"]:
                    if rel["id"] in by_uuid and by_uuid[rel["id"]]["text_content"]:
                        assert who in by_uuid[rel["id"]]["text_content"]

    again = await pipeline().run()
    assert again.sink.inserted == 0 and again.sink.updated == 0
    assert {r["uuid"] for r in _rows(ds)} == set(by_uuid)


# -- the one-time rewrite of datasets written before names counted -----------------------------


async def _legacy_dataset(ds: Path, folders: dict[str, Path]) -> None:
    """A dataset as the version before source names counted wrote it: every source of type
    ``files`` under ``record_uuid("files", id)``, and state entries under the sources' names.

    A source whose name is its type writes exactly those uuids (today as before): each folder is
    synced by a default-named source, and its state entry is then renamed."""
    state = StateStore.for_dataset(str(ds))
    for name, folder in folders.items():
        await (FilesSource(folder) | LanceSink(str(ds))).run()
        # that version kept each file's entry in the partition's cursor (state.json), where
        # today's item store migrates it from on the first run
        old_cursors = {
            part: dict(state.items.entries("files", part))
            for part in state.items.partitions("files")
        }
        state.items.clear("files")

        def rename(
            data: dict[str, Any], name: str = name, old_cursors: dict[str, Any] = old_cursors
        ) -> None:
            entry = data["sources"][name] = data["sources"].pop("files")
            entry.pop("identity", None)  # the old version knew no such mark
            entry.pop("scope", None)
            entry["partitions"] = old_cursors

        state.update(rename)


async def test_a_legacy_dataset_is_rewritten_once_and_keeps_its_rows(tmp_path: Path) -> None:
    folder = _write(
        tmp_path / "docs",
        {"README.md": "# Read me\n", "guide/intro.md": "# Intro\n", "guide/setup.md": "# Setup\n"},
    )
    ds = tmp_path / "kb.lance"
    await _legacy_dataset(ds, {"docs": folder})
    before = _rows(ds)
    assert {r["uuid"] for r in before} == {record_uuid("files", r["source_id"]) for r in before}

    report = await (FilesSource(folder, name="docs") | LanceSink(str(ds))).run()
    assert report.sink.inserted == 0 and report.fetched == 0  # the cursor still holds
    after = _rows(ds)
    assert len(after) == len(before) == 5
    new = {
        record_uuid("files", r["source_id"]): record_uuid(
            "files", r["source_id"], source_name="docs"
        )
        for r in before
    }
    assert {r["uuid"] for r in after} == set(new.values())
    old_by_sid = {r["source_id"]: r for r in before}
    for r in after:
        old = old_by_sid[r["source_id"]]
        assert r["text_content"] == old["text_content"]
        assert [x["id"] for x in r["relationships"]] == [new[x["id"]] for x in old["relationships"]]
    assert StateStore.for_dataset(str(ds)).source_info("docs")["identity"] == 2

    # a second run changes nothing; an edit lands on the rewritten row
    version = lance.dataset(str(ds)).version
    again = await (FilesSource(folder, name="docs") | LanceSink(str(ds))).run()
    assert again.sink.inserted == again.sink.updated == again.sink.deleted == 0
    assert lance.dataset(str(ds)).version == version
    (folder / "guide" / "setup.md").write_text("# Setup v2\n", encoding="utf-8")
    await (FilesSource(folder, name="docs") | LanceSink(str(ds))).run()
    rows = {r["uuid"]: r["text_content"] for r in _rows(ds)}
    assert len(rows) == 5
    assert rows[record_uuid("files", "guide/setup.md", source_name="docs")] == "# Setup v2\n"


async def test_the_rewrite_survives_a_crash_between_upsert_and_delete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _write(tmp_path / "docs", {"a.md": "# A\n", "b.md": "# B\n"})
    ds = tmp_path / "kb.lance"
    await _legacy_dataset(ds, {"docs": folder})
    real_delete = identity_mod._delete

    def crash(*args: Any) -> int:
        raise OSError("killed between the upsert and the delete")

    monkeypatch.setattr(identity_mod, "_delete", crash)
    with pytest.raises(OSError, match="killed"):
        await (FilesSource(folder, name="docs") | LanceSink(str(ds))).run()
    assert len(_rows(ds)) == 6  # both generations of the 3 rows
    monkeypatch.setattr(identity_mod, "_delete", real_delete)

    await (FilesSource(folder, name="docs") | LanceSink(str(ds))).run()
    rows = _rows(ds)
    assert len(rows) == 3  # a.md, b.md and the folder's header, once each
    assert {r["uuid"] for r in rows} == {
        record_uuid("files", r["source_id"], source_name="docs") for r in rows
    }


async def test_collided_legacy_rows_are_dropped_and_both_sources_read_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a = _write(tmp_path / "A", {"README.md": "# Alpha\n", "only-a.md": "# only A\n"})
    b = _write(tmp_path / "B", {"README.md": "# Beta\n"})
    ds = tmp_path / "kb.lance"
    await _legacy_dataset(ds, {"alpha": a, "beta": b})
    assert len(_rows(ds)) == 3  # the collision: B's README and header overwrote A's

    caplog.set_level(logging.WARNING, logger="cfstream")
    pipeline = cf.merge(FilesSource(a, name="alpha"), FilesSource(b, name="beta")) | LanceSink(
        str(ds)
    )
    report = await pipeline.run()
    assert report.fetched == 5  # both re-read everything
    assert "cannot be told apart" in caplog.text
    rows = {r["uuid"]: r["text_content"] for r in _rows(ds)}
    assert len(rows) == 5
    assert rows[record_uuid("files", "README.md", source_name="alpha")] == "# Alpha\n"
    assert rows[record_uuid("files", "README.md", source_name="beta")] == "# Beta\n"
    assert rows[record_uuid("files", "only-a.md", source_name="alpha")] == "# only A\n"
    state = StateStore.for_dataset(str(ds))
    assert state.source_info("alpha")["identity"] == state.source_info("beta")["identity"] == 2

    again = await pipeline.run()
    assert again.fetched == 0 and again.sink.deleted == 0
    assert len(_rows(ds)) == 5


async def test_a_source_run_alone_does_not_take_its_siblings_old_rows(tmp_path: Path) -> None:
    """``cfstream sync --source alpha`` (or ``watch``, one pipeline per source): the config's
    other source of the type may own old rows too, so they are not given to alpha."""
    a = _write(tmp_path / "A", {"a.md": "# A\n"})
    b = _write(tmp_path / "B", {"b.md": "# B\n"})
    ds = tmp_path / "kb.lance"
    await _legacy_dataset(ds, {"alpha": a, "beta": b})
    pipeline = FilesSource(a, name="alpha") | LanceSink(str(ds))
    pipeline.dataset_sources = {"alpha": "files", "beta": "files"}
    await pipeline.run()
    rows = {r["uuid"]: r["text_content"] for r in _rows(ds) if r["text_content"]}
    assert rows == {record_uuid("files", "a.md", source_name="alpha"): "# A\n"}
    beta = FilesSource(b, name="beta") | LanceSink(str(ds))
    await beta.run()  # its cursor was reset: it reads b.md again
    rows = {r["uuid"]: r["text_content"] for r in _rows(ds) if r["text_content"]}
    assert rows == {
        record_uuid("files", "a.md", source_name="alpha"): "# A\n",
        record_uuid("files", "b.md", source_name="beta"): "# B\n",
    }


@cf.source(source_type="notes")
async def _notes(count: int = 3) -> AsyncIterator[list[cf.Document]]:
    docs = [
        cf.Document(
            source_id=f"n{i}",
            title=f"note {i}",
            text_content=f"text {i}",
            raw_data=b"\x00bytes %d" % i,
            raw_data_type="application/octet-stream",
        )
        for i in range(count)
    ]
    if docs:
        docs[0].relate("reference", record_uuid("notes", "n1"))
    yield docs


async def test_the_rewrite_keeps_raw_data_and_remaps_relationships(tmp_path: Path) -> None:
    ds = tmp_path / "kb.lance"
    await (_notes() | LanceSink(str(ds))).run()  # default-named: the old uuids

    def rename(data: dict[str, Any]) -> None:
        entry = data["sources"]["mine"] = data["sources"].pop("notes")
        entry.pop("identity", None)  # the old version knew no such mark

    StateStore.for_dataset(str(ds)).update(rename)
    sink = LanceSink(str(ds))
    await (_notes(0, name="mine") | sink).run()  # the rewrite, then nothing to write
    t = lance.dataset(str(ds))
    rows = t.to_table(columns=["uuid", "source_id", "relationships"], with_row_id=True).to_pylist()
    assert {r["uuid"] for r in rows} == {
        record_uuid("notes", f"n{i}", source_name="mine") for i in range(3)
    }
    n0 = next(r for r in rows if r["source_id"] == "n0")
    assert [x["id"] for x in n0["relationships"]] == [
        record_uuid("notes", "n1", source_name="mine")
    ]
    blobs = t.take_blobs("raw_data", ids=[r["_rowid"] for r in rows])
    assert sorted(b.read() for b in blobs) == [b"\x00bytes %d" % i for i in range(3)]


async def test_a_new_dataset_marks_its_sources_and_default_names_keep_old_uuids(
    tmp_path: Path,
) -> None:
    ds = tmp_path / "kb.lance"
    await (cf.merge(_notes(), _notes(name="other")) | T.dedupe() | LanceSink(str(ds))).run()
    uuids = {r["uuid"] for r in _rows(ds, "uuid")}
    assert uuids == {record_uuid("notes", f"n{i}") for i in range(3)} | {
        record_uuid("notes", f"n{i}", source_name="other") for i in range(3)
    }
    state = StateStore.for_dataset(str(ds))
    assert state.source_info("notes")["identity"] == state.source_info("other")["identity"] == 2


async def test_a_default_named_source_next_to_a_named_one_reads_again_once(
    tmp_path: Path,
) -> None:
    """``files`` (named after its type: old uuids, still right) and ``beta`` wrote old rows into
    one dataset: which old row is whose cannot be told, so both read everything again."""
    a = _write(tmp_path / "A", {"README.md": "# A\n"})
    b = _write(tmp_path / "B", {"README.md": "# B\n", "b.md": "# only B\n"})
    ds = tmp_path / "kb.lance"
    await _legacy_dataset(ds, {"beta": b})
    await (FilesSource(a) | LanceSink(str(ds))).run()  # "files": writes over B's README
    StateStore.for_dataset(str(ds)).update(lambda data: data["sources"]["files"].pop("identity"))

    def pipeline() -> Any:
        return cf.merge(FilesSource(a), FilesSource(b, name="beta")) | LanceSink(str(ds))

    report = await pipeline().run()
    assert report.fetched == 5
    rows = {r["uuid"]: r["text_content"] for r in _rows(ds) if r["text_content"]}
    assert rows == {
        record_uuid("files", "README.md"): "# A\n",
        record_uuid("files", "README.md", source_name="beta"): "# B\n",
        record_uuid("files", "b.md", source_name="beta"): "# only B\n",
    }
    assert len(_rows(ds)) == 5
    again = await pipeline().run()
    assert again.fetched == 0 and len(_rows(ds)) == 5
