"""R3: malformed records are dead-lettered with their reason while every good one is imported
(exit code 3); a corrupt state file or a config with wrong types is a clear error that changes
nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lance
import pytest
from conftest import (
    FakeServer,
    check_dataset,
    items_config,
    record,
    rows_by_source_id,
    run_sync,
    size,
    write_config,
)
from fakeapi import BAD_REASONS, Settings, bad_records, expected_good

from cfstream.contract.deadletter import read_dead_letters

GOOD_PER = size(5000, 5000)
BAD_PER = 250  # 1,000 over four collections
BIG_PER = size(5, 25)  # 10 MB bodies per collection


def _letter_id(letter: dict[str, Any]) -> str | None:
    if letter.get("source_id"):
        return str(letter["source_id"])
    payload = letter.get("payload")
    return payload.get("ref") if isinstance(payload, dict) else None


@pytest.mark.timeout(240)
def test_bad_records_are_dead_lettered_and_good_ones_imported(tmp_path: Path) -> None:
    s = Settings(docs_per=GOOD_PER, bad_per=BAD_PER, big_per=BIG_PER, stub_every=10)
    server = FakeServer(s.to_env())
    try:
        dataset = tmp_path / "kb.lance"
        config = items_config(
            tmp_path / "cfstream.yaml",
            dataset,
            server.url,
            sink="{batch_rows: 5000, max_latency: 2}",
            source_options="rate_per_second: 1000\nburst: 50\nmax_tries: 2\nretry_base: 0.01",
        )
        proc = run_sync(config, "--json", timeout=200)
    finally:
        server.close()
    assert proc.returncode == 3, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    bad = bad_records(s)
    good = expected_good(s)
    assert len(bad) == 4 * BAD_PER and len(good) == 4 * GOOD_PER

    counts = rows_by_source_id(check_dataset(dataset))
    assert set(counts) == set(good), "a good record is missing or a bad one was imported"
    assert all(n == 1 for n in counts.values())

    letters = read_dead_letters(dataset / "_cfstream" / "dead-letters.jsonl")
    assert report["dead_lettered"] == len(letters) == len(bad)
    by_id = {_letter_id(letter): letter for letter in letters}
    assert set(by_id) == set(bad)
    for iid, kind in bad.items():
        error = by_id[iid]["error"]
        assert BAD_REASONS[kind] in error, (iid, kind, error)
        assert by_id[iid]["payload"] is not None
    kinds: dict[str, int] = {}
    for kind in bad.values():
        kinds[kind] = kinds.get(kind, 0) + 1
    record("bad_inputs_tried", len(bad))
    record("r3_bad_inputs_by_kind", kinds)
    record("r3_good_imported", len(counts))
    record("records_lost", len(set(good) - set(counts)))


@pytest.fixture(scope="module")
def synced(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A small dataset with a saved state, and the fake it came from (module-scoped)."""
    tmp = tmp_path_factory.mktemp("r3state")
    s = Settings(collections=("c0", "c1"), docs_per=300)
    server = FakeServer(s.to_env())
    dataset = tmp / "kb.lance"
    config = items_config(tmp / "cfstream.yaml", dataset, server.url)
    proc = run_sync(config, "--quiet")
    assert proc.returncode == 0, proc.stderr
    yield tmp, dataset, config, server
    server.close()


def _fingerprint(dataset: Path) -> tuple[int, bytes, list[str]]:
    state = (dataset / "_cfstream" / "state.json").read_bytes()
    files = sorted(str(p.relative_to(dataset)) for p in dataset.rglob("*") if p.is_file())
    return lance.dataset(str(dataset)).version, state, files


STATE_DAMAGE = {
    "truncated": lambda b: b[: len(b) // 2],
    "empty": lambda b: b"",
    "binary": lambda b: b"\x00\xff\xfe garbage \x80",
    "not_an_object": lambda b: b"[1, 2, 3]",
    "source_not_an_object": lambda b: b'{"version": 1, "sources": {"items": "oops"}}',
    "partitions_not_an_object": lambda b: (
        b'{"version": 1, "sources": {"items": {"partitions": "oops"}}}'
    ),
    "cursor_not_an_object": lambda b: (
        b'{"version": 1, "sources": {"items": {"partitions": {"c0": 42}}}}'
    ),
}


@pytest.mark.parametrize("damage", sorted(STATE_DAMAGE))
def test_corrupt_state_is_a_clear_error_that_changes_nothing(synced: Any, damage: str) -> None:
    _tmp, dataset, config, _server = synced
    state = dataset / "_cfstream" / "state.json"
    good = state.read_bytes()
    try:
        state.write_bytes(STATE_DAMAGE[damage](good))
        before = _fingerprint(dataset)
        proc = run_sync(config, "--json")
        assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr
        assert "sync state" in proc.stderr and str(state) in proc.stderr, proc.stderr
        assert "Nothing was changed" in proc.stderr
        assert json.loads(proc.stdout)["ok"] is False
        assert _fingerprint(dataset) == before
    finally:
        state.write_bytes(good)


BAD_CONFIGS = {
    "batch_rows": ("sink: {batch_rows: lots}", "sink.batch_rows"),
    "page_size": ("page_size: big", "sources.items.page_size"),
    "collections": ("collections: 7", "sources.items.collections"),
    "max_concurrency": ("max_concurrency: many", "sources.items.max_concurrency"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_config_with_wrong_types_is_a_clear_error(synced: Any, case: str) -> None:
    tmp, dataset, _config, server = synced
    line, key = BAD_CONFIGS[case]
    if line.startswith("sink:"):
        cfg = items_config(tmp / f"{case}.yaml", dataset, server.url, sink=line.split(": ", 1)[1])
    else:
        cfg = items_config(tmp / f"{case}.yaml", dataset, server.url, source_options=line)
    before = _fingerprint(dataset)
    proc = run_sync(cfg)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "config error" in proc.stderr and key in proc.stderr, proc.stderr
    assert f"{cfg}:" in proc.stderr  # names the file (and line)
    assert _fingerprint(dataset) == before


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "broken.yaml", "dataset: x.lance\nsources: {items: [\n")
    proc = run_sync(cfg)
    assert proc.returncode == 2 and f"{cfg}:" in proc.stderr and "not valid YAML" in proc.stderr
    assert not (tmp_path / "x.lance").exists()
