"""The item store (per-item entries in SQLite) and how StateStore saves checkpoints with it."""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from pathlib import Path

import anyio
import orjson
import pytest

import cfstream.contract.state as state_mod
from cfstream.contract.context import RunContext, SourceContext
from cfstream.contract.deadletter import DeadLetterWriter
from cfstream.contract.report import RunReport, SourceStats
from cfstream.contract.state import ItemStore, StateStore, scope_digest
from cfstream.errors import StateError
from cfstream.records import Checkpoint, ItemChanges
from cfstream.sources._items import ItemLedger


def test_put_get_delete_reset(tmp_path: Path) -> None:
    store = ItemStore(tmp_path / "items.sqlite")
    assert store.get("s", "p", ["a"]) == {}
    store.apply([("s", "p", ItemChanges(put={"a": [1, 2, "x", None], "b": [], "c": {"k": 1}}))])
    store.apply([("s", "q", ItemChanges(put={"a": 9}))])
    assert store.get("s", "p", ["a", "b", "zzz"]) == {"a": [1, 2, "x", None], "b": []}
    assert store.get("s", "q", ["a"]) == {"a": 9}
    assert store.get("other", "p", ["a"]) == {}
    store.apply([("s", "p", ItemChanges(delete=["a"], put={"d": 1}))])
    assert sorted(store.keys("s", "p")) == ["b", "c", "d"]
    assert store.count("s") == 4 and store.count("s", "p") == 3
    assert store.partitions("s") == ["p", "q"]
    store.apply([("s", "p", ItemChanges(reset=True, put={"e": 1}))])
    assert dict(store.entries("s", "p")) == {"e": 1}
    assert store.get("s", "q", ["a"]) == {"a": 9}  # other partitions untouched
    store.clear("s", ["q"])
    assert store.partitions("s") == ["p"]
    store.clear("s")
    assert store.count("s") == 0
    store.close()


def test_changes_apply_in_order_in_one_transaction(tmp_path: Path) -> None:
    store = ItemStore(tmp_path / "items.sqlite")
    store.apply(
        [
            ("s", "p", ItemChanges(put={"a": 1, "b": 1})),
            ("s", "p", ItemChanges(delete=["a"])),
            ("s", "p", ItemChanges(put={"a": 2})),
        ]
    )
    assert dict(store.entries("s", "p")) == {"a": 2, "b": 1}

    class Boom(Exception):
        pass

    class BadValue:
        pass

    with pytest.raises(TypeError):  # orjson cannot serialise it: the whole call rolls back
        store.apply(
            [
                ("s", "p", ItemChanges(put={"c": 1})),
                ("s", "new", ItemChanges(put={"x": BadValue()})),
            ]
        )
    assert dict(store.entries("s", "p")) == {"a": 2, "b": 1}
    assert store.partitions("s") == ["p"]
    store.apply([("s", "new", ItemChanges(put={"x": 1}))])  # the rolled-back scope id is gone
    assert store.get("s", "new", ["x"]) == {"x": 1}


def test_keys_stream_in_pages_and_lookups_go_in_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(state_mod, "_PAGE", 7)
    monkeypatch.setattr(state_mod, "_LOOKUP_CHUNK", 5)
    store = ItemStore(tmp_path / "items.sqlite")
    keys = [f"k{i:03d}" for i in range(50)]
    store.apply([("s", "p", ItemChanges(put={k: i for i, k in enumerate(keys)}))])
    assert list(store.keys("s", "p")) == keys
    assert dict(store.entries("s", "p")) == {k: i for i, k in enumerate(keys)}
    assert store.get("s", "p", keys[3:40]) == {k: i for i, k in enumerate(keys) if 3 <= i < 40}


def test_keys_that_utf8_rejects_round_trip(tmp_path: Path) -> None:
    # os.scandir hands undecodable file names over as lone surrogates
    odd = "caf\udce9.md"
    store = ItemStore(tmp_path / "items.sqlite")
    store.apply([("s", "", ItemChanges(put={odd: [1], "é/ü.md": [2]}))])
    assert store.get("s", "", [odd]) == {odd: [1]}
    assert set(store.keys("s", "")) == {odd, "é/ü.md"}


def test_read_only_store_never_creates_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nothing" / "items.sqlite"
    ro = ItemStore(path, read_only=True)
    assert ro.get("s", "p", ["a"]) == {} and list(ro.keys("s", "p")) == []
    assert ro.count("s") == 0 and ro.partitions("s") == []
    assert not path.exists() and not path.parent.exists()
    with pytest.raises(StateError):
        ro.apply([("s", "p", ItemChanges(put={"a": 1}))])
    rw = ItemStore(path)
    rw.apply([("s", "p", ItemChanges(put={"a": 1}))])
    assert ItemStore(path, read_only=True).get("s", "p", ["a"]) == {"a": 1}


def test_a_corrupt_store_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "items.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StateError, match="Delete the file|delete it"):
        ItemStore(path).get("s", "p", ["a"])


def test_item_changes_then() -> None:
    a = ItemChanges(put={"x": 1, "y": 1}, delete=["z"])
    b = ItemChanges(put={"z": 2}, delete=["x"])
    ab = a.then(b)
    assert dict(ab.put) == {"y": 1, "z": 2} and list(ab.delete) == ["x"] and not ab.reset
    assert a.then(None) is a
    r = ItemChanges(reset=True, put={"q": 1})
    assert a.then(r) is r
    assert r.then(b).reset and dict(r.then(b).put) == {"q": 1, "z": 2}
    assert not ItemChanges() and ItemChanges(reset=True)
    c1 = Checkpoint({"v": 1}, items=a)
    c2 = Checkpoint({"v": 2}, items=b)
    both = c1.then(c2)
    assert both.cursor == {"v": 2} and both.items == ab
    assert Checkpoint({"v": 1}).then(c2) is c2


def _writer(path: str, source: str, n: int) -> None:
    store = StateStore(path)
    for i in range(n):
        store.save_checkpoints(
            [Checkpoint({"i": i}, partition="p", source=source, items=ItemChanges(put={str(i): i}))]
        )


def test_two_processes_saving_different_sources_lose_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "state.json")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, s, 40)) for s in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    store = StateStore(path)
    for s in ("a", "b"):
        assert store.cursor(s, "p") == {"i": 39}
        assert store.items.count(s) == 40


def _json_writes(store: StateStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    sizes: list[int] = []
    real = store._write

    def spy(data: dict[str, object]) -> None:
        sizes.append(len(orjson.dumps(data)))
        real(data)

    monkeypatch.setattr(store, "_write", spy)
    return sizes


def test_saving_an_unchanged_cursor_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = StateStore(tmp_path / "state.json")
    writes = _json_writes(store, monkeypatch)
    cp = Checkpoint({"v": 2}, partition="p", source="s", items=ItemChanges(put={"a": 1}))
    assert store.save_checkpoints([cp]) == 1
    assert len(writes) == 1
    raw = (tmp_path / "state.json").read_bytes()
    assert b"\n" not in raw  # compact, not indented
    mtime = os.stat(tmp_path / "state.json").st_mtime_ns
    wal = tmp_path / "state.items.sqlite-wal"
    wal_size = wal.stat().st_size if wal.exists() else 0
    # the same cursor again, no item changes: neither file is written
    assert store.save_checkpoints([Checkpoint({"v": 2}, partition="p", source="s")]) == 1
    assert len(writes) == 1
    assert os.stat(tmp_path / "state.json").st_mtime_ns == mtime
    assert (wal.stat().st_size if wal.exists() else 0) == wal_size
    # item changes alone go to the item store only
    store.save_checkpoints(
        [Checkpoint({"v": 2}, partition="p", source="s", items=ItemChanges(put={"b": 1}))]
    )
    assert store.items.get("s", "p", ["a", "b"]) == {"a": 1, "b": 1}
    assert len(writes) == 1


def test_a_forgotten_partition_or_source_forgets_its_items(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.json")
    store.save_checkpoints(
        [
            Checkpoint({"v": 2}, partition="p", source="s", items=ItemChanges(put={"a": 1})),
            Checkpoint({"v": 2}, partition="q", source="s", items=ItemChanges(put={"b": 1})),
        ]
    )
    store.save_checkpoints([Checkpoint(None, partition="p", source="s")])
    assert store.cursors("s") == {"q": {"v": 2}}
    assert store.items.partitions("s") == ["q"]
    store.reset("s")
    assert store.cursors("s") == {} and store.items.count("s") == 0


def test_check_scope(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.json")
    d1 = scope_digest("files", {"root": "/a", "include": ["**/*.md"]})
    d2 = scope_digest("obsidian", {"root": "/a", "include": ["**/*.md"]})
    assert d1 != d2 and d1 == scope_digest("files", {"include": ["**/*.md"], "root": "/a"})
    assert "/a" not in d1  # a digest, never the values
    assert store.check_scope("s", d1) is None  # first time: recorded
    store.save_checkpoints(
        [Checkpoint({"v": 2}, partition="p", source="s", items=ItemChanges(put={"a": 1}))]
    )
    assert store.check_scope("s", d1) is None
    assert store.cursors("s") == {"p": {"v": 2}}
    assert store.check_scope("s", d2) == d1
    assert store.cursors("s") == {} and store.items.count("s") == 0
    assert store.source_info("s")["scope"] == d2
    raw = (tmp_path / "state.json").read_text()
    assert "/a" not in raw


def test_a_state_saved_before_scopes_is_not_reset(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text(
        '{"version": 1, "sources": {"s": {"partitions": {"p": {"page": 3}}, "last_success": 1}}}'
    )
    store = StateStore(path)
    assert store.check_scope("s", scope_digest("files", {})) is None
    assert store.cursors("s") == {"p": {"page": 3}}


def test_many_stores_opened_at_once_on_a_new_file(tmp_path: Path) -> None:
    """Two sources of one run open their connections together: SQLite may refuse the WAL switch
    and the schema's creation at once instead of waiting ("database is locked")."""
    path = tmp_path / "state.items.sqlite"
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def open_and_write(n: int) -> None:
        store = ItemStore(path)
        try:
            start.wait()
            store.apply([(f"s{n}", "", ItemChanges(put={"k": [n]}))])
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)
        finally:
            store.close()

    for _ in range(5):
        path.unlink(missing_ok=True)
        threads = [threading.Thread(target=open_and_write, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    assert ItemStore(path, read_only=True).count("s3") == 1


def _ledger_ctx(store: ItemStore, *, full_refresh: bool = False) -> SourceContext:
    run = RunContext(
        report=RunReport(),
        dead_letters=DeadLetterWriter(None),
        stop=anyio.Event(),
        items=store,
        full_refresh=full_refresh,
    )
    return SourceContext("src", "t", run, SourceStats("src"), logging.getLogger("t"))


async def test_item_ledger_overlays_the_run_on_the_store(tmp_path: Path) -> None:
    store = ItemStore(tmp_path / "items.sqlite")
    store.apply([("src", "p", ItemChanges(put={"a": [1], "b": [2], "c": [3]}))])
    ledger = ItemLedger(_ledger_ctx(store), "p")
    assert ledger.get("a") == [1] and "z" not in ledger
    ledger.put("a", [10])
    ledger.delete("b")
    ledger.put("d", [4])
    # reads see this run's changes before the store has them; saved() what the run found
    assert ledger.get("a") == [10] and ledger.get("b") is None and ledger.saved("b") == [2]
    assert dict(ledger.items()) == {"a": [10], "c": [3], "d": [4]}
    assert dict(ledger.items(saved=True)) == {"a": [1], "b": [2], "c": [3]}
    changes = ledger.changes()
    assert changes is not None and not changes.reset
    assert dict(changes.put) == {"a": [10], "d": [4]} and list(changes.delete) == ["b"]
    assert ledger.changes() is None  # nothing since
    store.apply([("src", "p", changes)])
    assert dict(store.entries("src", "p")) == {"a": [10], "c": [3], "d": [4]}


async def test_item_ledger_migrates_an_old_map_and_starts_fresh(tmp_path: Path) -> None:
    store = ItemStore(tmp_path / "items.sqlite")
    store.apply([("src", "p", ItemChanges(put={"stale": [0]}))])
    # an old cursor's map: the first checkpoint replaces the partition with it (and the changes)
    ledger = ItemLedger(_ledger_ctx(store), "p", legacy={"a": [1], "b": [2]})
    assert ledger.migrating and ledger.get("stale") is None and ledger.get("a") == [1]
    ledger.delete("b")
    ledger.put("c", [3])
    first = ledger.changes()
    assert first is not None and first.reset and dict(first.put) == {"a": [1], "c": [3]}
    ledger.delete("a")  # after the reset, deletions are recorded again
    second = ledger.changes()
    assert second is not None and list(second.delete) == ["a"] and not ledger.migrating
    store.apply([("src", "p", first), ("src", "p", second)])
    assert dict(store.entries("src", "p")) == {"c": [3]}
    # no cursor (or a full refresh): the saved entries are not read, and are replaced
    for fresh, full in ((True, False), (False, True)):
        ledger = ItemLedger(_ledger_ctx(store, full_refresh=full), "p", fresh=fresh)
        assert ledger.get("c") is None and list(ledger.items()) == []
        ledger.put("x", [9])
        changes = ledger.changes()
        assert changes is not None and changes.reset and dict(changes.put) == {"x": [9]}
