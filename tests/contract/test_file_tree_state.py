"""Files and Obsidian sources with the item store: incremental cost, migration, scope changes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import lance
import orjson
import pytest
import yaml

from cfstream.contract.report import RunReport
from cfstream.contract.state import ItemStore, StateStore
from cfstream.records import Checkpoint, ItemChanges
from cfstream.sinks import LanceSink
from cfstream.sources import FilesSource, ObsidianSource
from cfstream.sources.obsidian import split_frontmatter


def make_tree(root: Path) -> None:
    for top in ("a", "b", "c"):
        for i in range(5):
            p = root / top / "sub" / f"n{i}.md"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(f"---\ntitle: {top} {i}\n---\n# {top} {i}\n\nsee [[n{(i + 1) % 5}]]\n")
    (root / "top.md").write_text("# top\n")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    make_tree(root)
    return root


async def sync(src: Any, ds: Path, **kw: Any) -> RunReport:
    report: RunReport = await (src | LanceSink(str(ds))).run(**kw)
    return report


def source_ids(ds: Path) -> list[str]:
    return sorted(lance.dataset(str(ds)).to_table(columns=["source_id"])["source_id"].to_pylist())


async def test_changing_the_type_under_one_name_reads_the_source_afresh(
    tree: Path, tmp_path: Path
) -> None:
    ds = tmp_path / "kb.lance"
    first = await sync(FilesSource(tree, name="notes"), ds)
    assert first.sources["notes"].fetched == 16 + 7  # 16 files, 7 folder headers
    # same name, now an Obsidian vault: the saved cursors belong to the files reading
    second = await sync(ObsidianSource(tree, name="notes"), ds)
    stats = second.sources["notes"]
    assert stats.fetched == 16 + 7, "the old cursor was reused: nothing imported"
    assert stats.warnings and "read afresh" in stats.warnings[0]
    assert "    warning: " in str(second)
    rows = lance.dataset(str(ds)).to_table(columns=["source_type"])["source_type"].to_pylist()
    assert rows.count("obsidian") == 23
    # the digest is saved, not the options
    raw = (ds / "_cfstream" / "state.json").read_text()
    assert str(tree) not in raw
    # a third run with the same settings reads nothing and says nothing
    third = await sync(ObsidianSource(tree, name="notes"), ds)
    assert third.sources["notes"].fetched == 0 and not third.sources["notes"].warnings


async def test_changing_what_is_read_reads_afresh_but_tuning_keeps_the_cursor(
    tree: Path, tmp_path: Path
) -> None:
    ds = tmp_path / "kb.lance"
    await sync(FilesSource(tree, name="notes"), ds)
    tuned = await sync(FilesSource(tree, name="notes", checkpoint_every=2, max_concurrency=1), ds)
    assert tuned.sources["notes"].fetched == 0
    assert tuned.sources["notes"].skipped_unchanged == 16
    assert not tuned.sources["notes"].warnings
    narrowed = await sync(FilesSource(tree, name="notes", include=["a/**/*.md"]), ds)
    assert narrowed.sources["notes"].warnings
    assert narrowed.sources["notes"].fetched == 5 + 3  # a's files, "/", "a/", "a/sub/"


async def test_a_no_change_resync_saves_state_once(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = tmp_path / "kb.lance"
    await sync(FilesSource(tree), ds)
    json_writes: list[int] = []
    transactions: list[int] = []
    real_write = StateStore._write
    real_apply = ItemStore.apply

    def write(self: StateStore, data: dict[str, Any]) -> None:
        json_writes.append(len(orjson.dumps(data)))
        real_write(self, data)

    def apply(self: ItemStore, changes: Any) -> int:
        todo = [c for c in changes if c[2]]
        if todo:
            transactions.append(len(todo))
        return real_apply(self, todo)

    monkeypatch.setattr(StateStore, "_write", write)
    monkeypatch.setattr(ItemStore, "apply", apply)
    report = await sync(FilesSource(tree), ds)
    stats = report.sources["files"]
    assert stats.fetched == 0 and stats.skipped_unchanged == 16
    assert stats.partitions == 4 and stats.checkpoints == 4
    # one save (mark_success), not one whole-file rewrite per partition; no item transaction
    assert len(json_writes) == 1
    assert transactions == []
    assert json_writes[0] < 2000  # the cursors are small: per-item entries live elsewhere

    # one change and one deletion: one small transaction holding just those two entries
    (tree / "b" / "sub" / "n1.md").write_text("# changed\n")
    (tree / "c" / "sub" / "n2.md").unlink()
    json_writes.clear()
    report = await sync(FilesSource(tree), ds)
    stats = report.sources["files"]
    assert stats.fetched == 1 and stats.tombstones == 1
    assert sum(transactions) == 2  # partitions b and c, one entry each
    store = StateStore.for_dataset(str(ds))
    assert "c/sub/n2.md" not in set(store.items.keys("files", "c"))
    assert "c/sub/n2.md" not in source_ids(ds)


async def test_a_deleted_top_folder_is_tombstoned_from_the_store(
    tree: Path, tmp_path: Path
) -> None:
    ds = tmp_path / "kb.lance"
    await sync(FilesSource(tree), ds)
    shutil.rmtree(tree / "b")
    report = await sync(FilesSource(tree), ds)
    assert report.sources["files"].tombstones == 5 + 2  # 5 files, "b/", "b/sub/"
    assert not [s for s in source_ids(ds) if s.startswith("b/")]
    assert StateStore.for_dataset(str(ds)).items.count("files", "b") == 0


def _to_old_format(ds: Path, source: str) -> dict[str, Any]:
    """Rewrite the state as cfstream wrote it before the item store: whole maps as cursors."""
    store = StateStore.for_dataset(str(ds))
    data = store.load()
    parts = data["sources"][source]["partitions"]
    for p in list(parts):
        parts[p] = dict(store.items.entries(source, p))
    store.items.close()
    for f in (ds / "_cfstream").glob("state.items.sqlite*"):
        f.unlink()
    data["sources"][source].pop("scope", None)
    (ds / "_cfstream" / "state.json").write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    return data


async def test_an_old_state_json_migrates_on_the_first_run(tree: Path, tmp_path: Path) -> None:
    ds = tmp_path / "kb.lance"
    await sync(ObsidianSource(tree), ds)
    old = _to_old_format(ds, "obsidian")
    assert old["sources"]["obsidian"]["partitions"]["a"]["a/sub/n1.md"][3] == {"n2": "a/sub/n2.md"}
    (tree / "a" / "sub" / "n3.md").unlink()
    report = await sync(ObsidianSource(tree), ds)
    stats = report.sources["obsidian"]
    # nothing re-read but the note whose link target vanished; the deletion is seen
    assert stats.tombstones == 1
    assert stats.fetched == 1  # a/sub/n2.md linked to n3
    assert not stats.warnings
    store = StateStore.for_dataset(str(ds))
    cursors = store.cursors("obsidian")
    assert set(cursors) == {"", "a", "b", "c"}
    # a constant marker plus the digest of the vault listing the links were checked against
    assert {c["v"] for c in cursors.values()} == {2}
    assert len({c["deps"] for c in cursors.values()}) == 1
    entries = dict(store.items.entries("obsidian", "a"))
    assert set(entries) == {"a/", "a/sub/", *(f"a/sub/n{i}.md" for i in (0, 1, 2, 4))}
    assert entries["a/sub/n1.md"][3] == {"n2": "a/sub/n2.md"}
    again = await sync(ObsidianSource(tree), ds)
    assert again.sources["obsidian"].fetched == 0
    assert again.sources["obsidian"].skipped_unchanged == 15


async def test_full_refresh_replaces_the_entries(tree: Path, tmp_path: Path) -> None:
    ds = tmp_path / "kb.lance"
    await sync(FilesSource(tree), ds)
    report = await sync(FilesSource(tree), ds, full_refresh=True)
    assert report.sources["files"].fetched == 23
    store = StateStore.for_dataset(str(ds))
    assert store.items.count("files") == 23
    assert (await sync(FilesSource(tree), ds)).sources["files"].fetched == 0


async def test_entries_follow_the_commit(tree: Path, tmp_path: Path) -> None:
    """Entries reach the store only through checkpoints the sink saves after its commit."""
    ds = tmp_path / "kb.lance"
    await sync(FilesSource(tree), ds, dry_run=True)
    assert not (ds / "_cfstream" / "state.items.sqlite").exists()
    await sync(FilesSource(tree), ds)
    keys = {
        k
        for p in ("", "a", "b", "c")
        for k in StateStore.for_dataset(str(ds)).items.keys("files", p)
    }
    assert keys == set(source_ids(ds))


def test_checkpoints_carry_only_what_changed() -> None:
    cp = Checkpoint({"v": 2}, items=ItemChanges(put={"x": [1, 2, "d", None]}))
    assert cp.items is not None and list(cp.items.put) == ["x"]


@pytest.mark.parametrize(
    "text",
    [
        "---\ntitle: A\ntags: [x, y]\ncreated: 2024-01-02\nn: 3\nf: 1.5\nok: yes\n---\nbody",
        "---\nwhen: 2024-01-02T10:00:00Z\nnested: {a: [1, 2]}\nempty:\n---\n",
        "---\ntitle: 'quoted: colon'\nmulti: |\n  line 1\n  line 2\n---\nb",
        "---\ntags: [a, b\n---\nbody\n",
        "---\n- a\n- b\n---\nbody\n",
        "---\nkey: value\n  bad indent: x\n---\n",
    ],
)
def test_frontmatter_reads_as_the_pure_python_loader_does(text: str) -> None:
    got = split_frontmatter(text)
    yaml_text = text.split("\n---", 1)[0][4:]
    try:
        want: Any = yaml.safe_load(yaml_text)
    except yaml.YAMLError:
        assert isinstance(got, str) and "YAML frontmatter is broken" in got
        return
    if isinstance(want, dict):
        assert not isinstance(got, str)
        assert got[0] == {str(k): v for k, v in want.items()}
    elif want is None:
        assert not isinstance(got, str) and got[0] == {}
    else:
        assert isinstance(got, str)


def test_link_answers_are_remembered_only_when_they_do_not_depend_on_the_note() -> None:
    from cfstream.sources._files import TreeScan
    from cfstream.sources.obsidian import VaultIndex

    scan = TreeScan(
        root="/v", others={"a": ["a/X.md", "a/n.md"], "b": ["b/X.md", "b/n.md"], "c": ["c/Only.md"]}
    )
    idx = VaultIndex.from_scan(scan)
    for _ in range(2):  # the second round answers from what the first remembered
        assert idx.resolve("X", "a/n.md") == "a/X.md"
        assert idx.resolve("X", "b/n.md") == "b/X.md"
        assert idx.resolve("Only", "a/n.md") == "c/Only.md"
        assert idx.resolve("Missing", "a/n.md") is None
        assert idx.resolve("./X", "b/n.md") == "b/X.md"


class CountingObsidian(ObsidianSource):
    """Counts the notes whose links are checked against the listing."""

    checks = 0

    def deps_changed(self, entry: Any, deps: Any, scan: Any) -> bool:
        CountingObsidian.checks += 1
        return super().deps_changed(entry, deps, scan)


async def test_links_are_not_checked_while_the_vault_listing_is_the_same(
    tree: Path, tmp_path: Path
) -> None:
    ds = tmp_path / "kb.lance"
    await sync(ObsidianSource(tree), ds)
    CountingObsidian.checks = 0
    again = await sync(CountingObsidian(tree), ds)
    assert again.sources["obsidian"].fetched == 0
    assert CountingObsidian.checks == 0, "links re-checked although no file came or went"
    (tree / "c" / "extra.md").write_text("# extra\n")  # a new file: links are checked again
    third = await sync(CountingObsidian(tree), ds)
    assert third.sources["obsidian"].fetched == 1
    assert CountingObsidian.checks == 16  # every saved note


class SwapNote(ObsidianSource):
    """Swaps ``a/sub/n2.md`` for a symlink right after the scan (so its read is skipped)."""

    def prepare(self, scan: Any) -> None:
        super().prepare(scan)
        note = self.root / "a" / "sub" / "n2.md"
        note.unlink()
        note.symlink_to(self.root / "a" / "sub" / "n4.md")


async def test_a_partition_not_read_to_the_end_keeps_the_old_listing_digest(
    tree: Path, tmp_path: Path
) -> None:
    ds = tmp_path / "kb.lance"
    await sync(ObsidianSource(tree), ds)
    store = StateStore.for_dataset(str(ds))
    before = store.cursors("obsidian")
    note = tree / "a" / "sub" / "n2.md"
    text, st = note.read_bytes(), note.stat()
    # [[n3]] in a/sub/n2.md now resolves to another folder's n3: n2 must be read again
    (tree / "a" / "sub" / "n3.md").unlink()
    report = await sync(SwapNote(tree), ds)
    assert report.sources["obsidian"].skipped >= 1  # n2 was swapped: not read
    after = store.cursors("obsidian")
    assert after["a"]["deps"] == before["a"]["deps"], "a's links were not all checked"
    assert after["b"]["deps"] != before["b"]["deps"]
    # n2 is back as it was (same bytes, size and mtime): only the link check finds it
    note.unlink()
    note.write_bytes(text)
    os.utime(note, ns=(st.st_atime_ns, st.st_mtime_ns))
    third = await sync(ObsidianSource(tree), ds)
    assert third.sources["obsidian"].fetched == 1
    row = lance.dataset(str(ds)).to_table(
        columns=["source_id", "relationships"], filter="source_id = 'a/sub/n2.md'"
    )
    assert "b/sub/n3.md" in str(row["relationships"].to_pylist())
