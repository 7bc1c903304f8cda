"""R2: ``cfstream sync`` killed with SIGKILL at random moments (mid-commit, right after a commit,
during a state save, at random), then resumed: one row per document, nothing lost, the dataset
valid after every kill, and each resumed run refetching at most one checkpoint interval."""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    FakeServer,
    check_dataset,
    committed_high_water,
    cursors,
    items_config,
    record,
    rows_by_source_id,
    run_sync,
    size,
    start_sync,
)
from fakeapi import Settings, expected_good

KILLS = size(6, 20)
PER = size(3000, 10000)
COLLECTIONS = ("c0", "c1", "c2", "c3")
PAGE = 100
BATCH_ROWS = 400
INTERVAL_PAGES = math.ceil(BATCH_ROWS / PAGE)
STRATEGIES = ("mid_commit", "after_commit", "state_save", "random")

pytestmark = pytest.mark.timeout(600 if KILLS > 10 else 180)


def _count(path: Path) -> int:
    try:
        return len(os.listdir(path))
    except FileNotFoundError:
        return 0


def _state_marks(dataset: Path) -> tuple[int, bool]:
    d = dataset / "_cfstream"
    try:
        mtime = (d / "state.json").stat().st_mtime_ns
    except FileNotFoundError:
        mtime = 0
    try:
        tmp = any(n.startswith(".state.json.") for n in os.listdir(d))
    except FileNotFoundError:
        tmp = False
    return mtime, tmp


def _trigger(strategy: str, dataset: Path, rng: random.Random) -> Callable[[], bool]:
    """A predicate that turns true at the moment to kill."""
    data0 = _count(dataset / "data")
    versions0 = _count(dataset / "_versions")
    mtime0, _ = _state_marks(dataset)
    deadline = time.monotonic() + rng.uniform(1.2, 2.2)
    if strategy == "mid_commit":  # a new data file is being written; its manifest is not there yet
        return lambda: _count(dataset / "data") > data0
    if strategy == "after_commit":  # a new version landed; its checkpoint is being saved
        return lambda: _count(dataset / "_versions") > versions0
    if strategy == "state_save":

        def saving() -> bool:
            mtime, tmp = _state_marks(dataset)
            return tmp or mtime != mtime0

        return saving
    return lambda: time.monotonic() >= deadline


def test_sigkill_and_resume(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("REL_SEED", "20261126")))
    s = Settings(collections=COLLECTIONS, docs_per=PER, stub_every=0, page_delay=0.01)
    server = FakeServer(s.to_env())
    try:
        _run(tmp_path, server, s, rng)
    finally:
        server.close()


def _run(tmp_path: Path, server: FakeServer, s: Settings, rng: random.Random) -> None:
    dataset = tmp_path / "kb.lance"
    config = items_config(
        tmp_path / "cfstream.yaml",
        dataset,
        server.url,
        sink=f"{{batch_rows: {BATCH_ROWS}, max_latency: 1}}",
        source_options=f"page_size: {PAGE}\nrate_per_second: 20\nburst: 4",
    )
    expected = expected_good(s)
    kills: dict[str, int] = {}
    high_water: dict[str, int] = {}
    worst_refetch = 0
    served_from = 0
    finished = False
    attempt = 0
    while not finished:
        attempt += 1
        assert attempt <= KILLS + 10, "the sync never finished"
        want_kill = sum(kills.values()) < KILLS
        strategy = STRATEGIES[attempt % len(STRATEGIES)] if attempt > 1 else "mid_commit"
        proc = start_sync(config, "--quiet")
        killed = False
        if want_kill:
            fire = _trigger(strategy, dataset, rng)
            deadline = time.monotonic() + 60
            while proc.poll() is None and time.monotonic() < deadline:
                if fire():
                    proc.send_signal(signal.SIGKILL)
                    killed = True
                    break
                time.sleep(0.001)
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"cfstream sync hung: {err[-2000:]}")
        if killed:
            assert proc.returncode == -signal.SIGKILL
            kills[strategy] = kills.get(strategy, 0) + 1
        else:
            assert proc.returncode == 0, err[-3000:]
            finished = not want_kill or sum(kills.values()) >= KILLS
            if want_kill:  # it ended before the trigger fired: nothing left to kill
                pytest.fail(f"the sync finished before kill {sum(kills.values()) + 1}: raise PER")

        # after every run: the dataset opens, validates, reads whole; the state parses
        table = check_dataset(dataset)
        counts = rows_by_source_id(table)
        assert all(n == 1 for n in counts.values()), "a document has two rows"
        assert set(counts) <= set(expected)
        hw = committed_high_water(table)
        for c, top in hw.items():  # each collection's rows are a gapless prefix: pages in order
            have = sorted(int(sid.rpartition("-")[2]) for sid in counts if sid.startswith(c + "-"))
            assert have == list(range(1, top + 1)), f"{c}: a page is missing below {top}"
        for c, cur in cursors(dataset).items():  # a cursor never passes what is committed
            assert cur <= hw.get(c, 0), (c, cur, hw)

        # what this run fetched again that an earlier run had already committed
        served = server.admin("served", since=served_from)
        served_from = served["next"]
        refetched = sum(
            1 for p in served["pages"] if p["first"] <= high_water.get(p["collection"], 0)
        )
        assert refetched <= INTERVAL_PAGES + 1 + len(COLLECTIONS), (
            f"run {attempt} refetched {refetched} pages of committed data (one checkpoint "
            f"interval is {INTERVAL_PAGES} pages)"
        )
        worst_refetch = max(worst_refetch, refetched)
        high_water = hw

    final = check_dataset(dataset)
    counts = rows_by_source_id(final)
    assert set(counts) == set(expected), "records lost"
    assert all(n == 1 for n in counts.values()), "duplicates"
    texts = dict(
        zip(
            final.column("source_id").to_pylist(),
            final.column("text_content").to_pylist(),
            strict=True,
        )
    )
    assert all(texts[sid] == item["body"] for sid, item in expected.items())
    assert kills.get("mid_commit") and kills.get("after_commit") and kills.get("state_save")
    # a run with nothing left to do fetches one page per collection
    again = run_sync(config, "--quiet")
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(server.admin("served", since=served_from)["pages"]) == 0

    record("r2_docs", len(expected))
    record("kills_survived", sum(kills.values()))
    record("r2_kills_by_moment", kills)
    record("r2_worst_refetch_pages", worst_refetch)
    record("r2_checkpoint_interval_pages", INTERVAL_PAGES)
    record("records_lost", len(set(expected) - set(counts)))
    record("duplicates", sum(n - 1 for n in counts.values()))


# -- the item store: files source, SIGKILL around the store's own writes ----------------------------

ITEM_KILLS = size(6, 16)
ITEM_FOLDERS = size(4, 10)
ITEM_PER_FOLDER = size(1000, 3000)
ITEM_STRATEGIES = ("item_write", "mid_commit", "item_write", "after_commit", "item_write", "random")


def _wal_mark(dataset: Path) -> tuple[int, int]:
    try:
        st = (dataset / "_cfstream" / "state.items.sqlite-wal").stat()
    except FileNotFoundError:
        return 0, 0
    return st.st_mtime_ns, st.st_size


def _item_trigger(strategy: str, dataset: Path, rng: random.Random) -> Callable[[], bool]:
    if strategy == "item_write":  # a transaction of the item store is being written
        mark0 = _wal_mark(dataset)
        return lambda: _wal_mark(dataset) != mark0
    return _trigger(strategy, dataset, rng)


def _store_entries(dataset: Path) -> dict[str, list[Any]]:
    from cfstream.contract.state import ItemStore

    store = ItemStore(dataset / "_cfstream" / "state.items.sqlite", read_only=True)
    try:
        parts = [""] + [f"p{i}" for i in range(ITEM_FOLDERS)]
        return {k: v for p in parts for k, v in store.entries("notes", p) if not k.endswith("/")}
    finally:
        store.close()


def test_sigkill_around_item_store_writes_and_resume(tmp_path: Path) -> None:
    from cfstream.sources._files import content_hash

    rng = random.Random(int(os.environ.get("REL_SEED", "20261202")))
    tree = tmp_path / "tree"
    for f in range(ITEM_FOLDERS):
        for i in range(ITEM_PER_FOLDER):
            d = tree / f"p{f}" / f"s{i // 100}"
            if i % 100 == 0:
                d.mkdir(parents=True)
            (d / f"n{i}.md").write_text(f"# note {f}/{i}\n\n" + "text " * 100 + "\n")
    dataset = tmp_path / "kb.lance"
    config = tmp_path / "cfstream.yaml"
    config.write_text(
        f"dataset: {dataset}\nsink: {{batch_rows: 300, max_latency: 1}}\nsources:\n"
        f"  notes:\n    type: files\n    path: {tree}\n    checkpoint_every: 100\n"
    )
    kills: dict[str, int] = {}
    deleted: set[str] = set()
    attempt = 0
    while sum(kills.values()) < ITEM_KILLS:
        attempt += 1
        assert attempt <= ITEM_KILLS + 10, "could not kill the sync often enough"
        if attempt == 3:  # change and delete files a finished run imported, then kill again
            finished = run_sync(config, "--quiet")
            assert finished.returncode == 0, finished.stderr[-3000:]
            for i in range(10):
                (tree / "p0" / "s0" / f"n{i}.md").write_text(f"# changed {i}\n")
                (tree / "p1" / "s0" / f"n{i}.md").unlink()
                deleted.add(f"p1/s0/n{i}.md")
        strategy = ITEM_STRATEGIES[attempt % len(ITEM_STRATEGIES)]
        proc = start_sync(config, "--quiet")
        fire = _item_trigger(strategy, dataset, rng)
        killed = False
        deadline = time.monotonic() + 90
        while proc.poll() is None and time.monotonic() < deadline:
            if fire():
                proc.send_signal(signal.SIGKILL)
                killed = True
                break
            time.sleep(0.0005)
        _, err = proc.communicate(timeout=120)
        if killed:
            kills[strategy] = kills.get(strategy, 0) + 1
        else:
            assert proc.returncode == 0, err[-3000:]

        # after every run: one row per document, and every saved entry describes committed data
        table = check_dataset(dataset)
        counts = rows_by_source_id(table)
        assert all(n == 1 for n in counts.values()), "a document has two rows"
        texts = (
            dict(
                zip(
                    table.column("source_id").to_pylist(),
                    table.column("text_content").to_pylist(),
                    strict=True,
                )
            )
            if table is not None
            else {}
        )
        entries = _store_entries(dataset)
        for key, entry in entries.items():
            if key in deleted:  # its deletion may be committed before the entry goes: it lags
                continue
            assert key in texts, f"{key}: an entry was saved before its row was committed"
            if entry[2] != content_hash(texts[key].encode()):
                # an entry may lag behind its row (killed between the commit and the save: the
                # file is read again), never run ahead of it
                assert entry[2] != content_hash((tree / key).read_bytes()), (
                    f"{key}: the entry was saved before the row of that content was committed"
                )
        for key in deleted:
            if key in texts:  # not deleted yet: the store must still know it, or it never will be
                assert key in entries, f"{key}: its entry was dropped before its tombstone"

    done = run_sync(config, "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    table = check_dataset(dataset)
    counts = rows_by_source_id(table)
    files = {str(p.relative_to(tree)): p.read_text() for p in tree.rglob("*.md") if p.is_file()}
    got = {
        sid: text
        for sid, text in zip(
            table.column("source_id").to_pylist(),
            table.column("text_content").to_pylist(),
            strict=True,
        )
        if not sid.endswith("/")
    }
    assert got == files, "records lost, stale or not deleted"
    assert all(n == 1 for n in counts.values()), "duplicates"
    assert set(_store_entries(dataset)) == set(files)
    assert kills.get("item_write", 0) >= 2
    again = run_sync(config, "--quiet", "--json")
    assert again.returncode == 0
    assert '"fetched": 0' in again.stdout
    record("r2_item_store_kills", kills)
    record("r2_item_store_docs", len(files))
