"""Graceful stop: SIGINT during ``cfstream sync`` commits what is in flight, saves the cursors of
everything committed and exits within the grace period; a second SIGINT stops at once without
corrupting anything. Either way the next run completes the sync exactly once."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

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
    start_sync,
    wait_for,
)
from fakeapi import Settings, expected_good

pytestmark = pytest.mark.timeout(180)

SETTINGS = Settings(collections=("c0", "c1", "c2"), docs_per=2000, stub_every=0)
GRACE = 30.0  # run_pipeline's default grace period, which the CLI uses


@pytest.fixture(scope="module")
def server() -> object:
    srv = FakeServer(SETTINGS.to_env())
    yield srv
    srv.close()


def _start(tmp_path: Path, server: FakeServer) -> tuple[Path, Path, subprocess.Popen[str]]:
    dataset = tmp_path / "kb.lance"
    config = items_config(
        tmp_path / "cfstream.yaml",
        dataset,
        server.url,
        # a batch is cut every 300 rows: a stop always finds pages buffered and not committed
        sink="{batch_rows: 300, max_latency: 30}",
        source_options="page_size: 50\nrate_per_second: 15\nburst: 3",
    )
    proc = start_sync(config, "--json")
    assert wait_for(lambda: (dataset / "_versions").exists(), 60), "no first commit"
    assert proc.poll() is None
    time.sleep(0.3)  # let more pages arrive, so some are in flight
    return dataset, config, proc


def _resume_completes(dataset: Path, config: Path) -> None:
    proc = run_sync(config, "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = rows_by_source_id(check_dataset(dataset))
    assert set(counts) == set(expected_good(SETTINGS))
    assert all(n == 1 for n in counts.values())


def test_sigint_commits_in_flight_work_and_saves_state(tmp_path: Path, server: FakeServer) -> None:
    dataset, config, proc = _start(tmp_path, server)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=GRACE + 30)
    took = time.monotonic() - sent
    assert proc.returncode == 130, err[-3000:]
    assert took < GRACE, f"exit took {took:.1f} s"
    report = json.loads(out)
    assert report["stopped_early"] is True

    table = check_dataset(dataset)
    counts = rows_by_source_id(table)
    assert all(n == 1 for n in counts.values())
    fetched = sum(s["fetched"] for s in report["sources"].values())
    assert fetched == len(counts) > 0, "fetched documents were not committed"
    # every committed page's checkpoint is saved: each cursor is exactly at what is committed
    assert cursors(dataset) == committed_high_water(table)
    assert len(counts) < len(expected_good(SETTINGS)), "the run was not stopped early"
    record("graceful_stop_seconds", round(took, 2))
    _resume_completes(dataset, config)


def test_second_sigint_stops_at_once_without_corruption(tmp_path: Path, server: FakeServer) -> None:
    dataset, config, proc = _start(tmp_path, server)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=GRACE + 30)
    took = time.monotonic() - sent
    assert proc.returncode in (1, 130), err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert took < 10, f"a second Ctrl-C took {took:.1f} s"
    table = check_dataset(dataset)
    counts = rows_by_source_id(table)
    assert all(n == 1 for n in counts.values())
    hw = committed_high_water(table)
    for c, cur in cursors(dataset).items():
        assert cur <= hw.get(c, 0)
    record("hard_stop_seconds", round(took, 2))
    _resume_completes(dataset, config)
