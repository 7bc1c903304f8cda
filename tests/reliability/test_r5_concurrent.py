"""R5: two ``cfstream sync`` processes on one dataset. Different sources both finish; the same
source either finishes twice or the second refuses with "dataset busy". Never a lost or duplicated
record, never a corrupt state."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from conftest import (
    FakeServer,
    check_dataset,
    cursors,
    items_config,
    record,
    rows_by_source_id,
    start_sync,
    wait_for,
)
from fakeapi import Settings, expected_good

pytestmark = pytest.mark.timeout(180)

SETTINGS = Settings(collections=("a0", "a1", "b0", "b1"), docs_per=1500, stub_every=0)


@pytest.fixture(scope="module")
def server() -> object:
    srv = FakeServer(SETTINGS.to_env())
    yield srv
    srv.close()


def _config(tmp_path: Path, server: FakeServer, dataset: Path, rate: int = 40) -> Path:
    return items_config(
        tmp_path / "cfstream.yaml",
        dataset,
        server.url,
        sink="{batch_rows: 500, max_latency: 1}",
        source_options=f"page_size: 100\nrate_per_second: {rate}\nburst: 4",
        sources={"A": "collections: [a0, a1]", "B": "collections: [b0, b1]"},
    )


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        _out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("cfstream sync hung")
    return proc.returncode, err


def _check_exactly_once(dataset: Path, names: tuple[str, ...]) -> None:
    counts = rows_by_source_id(check_dataset(dataset))
    expected = {sid for sid in expected_good(SETTINGS) if sid[0] in {n.lower() for n in names}}
    assert set(counts) == expected, f"lost: {len(expected - set(counts))}"
    assert all(n == 1 for n in counts.values()), "duplicated records"
    for name in names:  # the state holds each source's cursors, at the end of every collection
        cur = cursors(dataset, name)
        assert cur == {f"{name.lower()}0": SETTINGS.docs_per, f"{name.lower()}1": SETTINGS.docs_per}


def test_different_sources_into_a_new_dataset_both_finish(
    tmp_path: Path, server: FakeServer
) -> None:
    dataset = tmp_path / "kb.lance"
    config = _config(tmp_path, server, dataset)
    procs = [start_sync(config, "--quiet", "--source", name) for name in ("A", "B")]
    results = [_finish(p) for p in procs]
    for code, err in results:
        assert code == 0, err[-3000:]
    _check_exactly_once(dataset, ("A", "B"))
    record("r5_concurrent_runs", 2)


def test_same_source_started_together(tmp_path: Path, server: FakeServer) -> None:
    dataset = tmp_path / "kb.lance"
    config = _config(tmp_path, server, dataset)
    procs = [start_sync(config, "--quiet") for _ in range(2)]
    results = [_finish(p) for p in procs]
    codes = sorted(code for code, _ in results)
    busy = [err for code, err in results if code == 1]
    assert codes in ([0, 0], [0, 1]), results
    for err in busy:
        assert "dataset busy" in err and "Traceback" not in err, err
    _check_exactly_once(dataset, ("A", "B"))
    record("r5_concurrent_runs", 2)


def test_second_run_of_a_busy_source_refuses(tmp_path: Path, server: FakeServer) -> None:
    dataset = tmp_path / "kb.lance"
    # ~6 s per source: the first run must outlast the second process's start-up on a busy machine
    config = _config(tmp_path, server, dataset, rate=5)
    first = start_sync(config, "--quiet")
    assert wait_for(lambda: (dataset / "_versions").exists(), 60), "no commit"
    assert first.poll() is None, "the first run ended too early to overlap"
    started = time.monotonic()
    second = start_sync(config, "--quiet", "--json")
    code, err = _finish(second)
    assert code == 1, err
    assert "dataset busy" in err and "'A'" in err and "Traceback" not in err, err
    assert time.monotonic() - started < 30  # refused at once, not after waiting
    assert first.poll() is None, "the busy check did not overlap the first run"
    code, err = _finish(first)
    assert code == 0, err[-3000:]
    _check_exactly_once(dataset, ("A", "B"))
