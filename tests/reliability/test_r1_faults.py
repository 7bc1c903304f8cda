"""R1: a sync through 500s, dropped connections, 429 bursts, truncated bodies and random latency
stores exactly what a fault-free sync stores, and the client never exceeds its rate limit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lance
import pytest
from conftest import SOAK, record, size
from fakeapi import Settings, configure_with, expected_good
from relsource import ItemsSource

from cfstream import LanceSink, run_pipeline
from cfstream import transforms as T
from cfstream.contract.deadletter import read_dead_letters
from cfstream.testing import FakeAPI

DOCS = size(20_000, 200_000)
RATE, BURST = (300.0, 20) if DOCS <= 20_000 else (600.0, 40)


async def _sync(api: FakeAPI, dataset: Path) -> Any:
    src = ItemsSource(
        name="items",
        base_url=api.url,
        page_size=100,
        rate_per_second=RATE,
        burst=BURST,
        concurrency=8,
        max_tries=8,
        retry_base=0.2,
    )
    sink = LanceSink(str(dataset), batch_rows=10_000, max_latency=5)
    return await run_pipeline(src | T.validate() | sink)


def _fingerprint(dataset: Path) -> dict[str, str]:
    table = lance.dataset(str(dataset)).to_table(columns=["uuid", "content_hash", "source_id"])
    uuids = table.column("uuid").to_pylist()
    assert len(uuids) == len(set(uuids)), "duplicate rows"
    return dict(zip(uuids, table.column("content_hash").to_pylist(), strict=True))


@pytest.mark.timeout(1200 if SOAK else 120)
async def test_faults_do_not_change_the_dataset(tmp_path: Path) -> None:
    per = DOCS // 4
    clean = Settings(docs_per=per, latency=0.005, seed=11)
    async with FakeAPI(seed=11) as api:
        fake = configure_with(api, clean)
        ref_report = await _sync(api, tmp_path / "ref.lance")
        assert not api.faults.injected
        api.clear()
        fake.start_faults()
        report = await _sync(api, tmp_path / "faulty.lance")
        stats = fake.stats()

    assert ref_report.error is None and report.error is None
    assert not report.failed_sources, report.failed_sources
    letters = read_dead_letters(tmp_path / "faulty.lance" / "_cfstream" / "dead-letters.jsonl")
    assert report.dead_lettered == 0, [(d["source_id"], d["error"]) for d in letters][:5]
    expected = expected_good(clean)
    assert len(expected) == DOCS
    ref = _fingerprint(tmp_path / "ref.lance")
    got = _fingerprint(tmp_path / "faulty.lance")
    assert len(ref) == DOCS
    assert got == ref  # same uuids, same content hashes, no duplicates (checked above)

    faults = stats["faults"]
    # the faults really happened, in roughly the configured shares
    assert faults.get("status", 0) > 0.02 * stats["requests"]
    assert faults.get("drop", 0) > 0 and faults.get("truncate", 0) > 0
    assert faults.get("rate_limit", 0) > 0
    # the server saw the client keep to its budget: burst + rate * 1 s, plus one for jitter
    assert stats["max_rate_1s"] <= BURST + RATE + 1, stats
    # every request the server saw went through the client's limiter (no hidden resends)
    assert stats["requests"] == report.http["requests"], (stats["requests"], report.http)
    retries = report.http.get("retries", {})
    assert sum(retries.values()) >= sum(faults.values()) * 0.9, (retries, faults)

    record("r1_docs", DOCS)
    record("r1_requests", stats["requests"])
    record("faults_injected", sum(faults.values()))
    record("r1_faults_by_kind", faults)
    record("r1_max_requests_in_1s", stats["max_rate_1s"])
    record("r1_rate_limit_allowed_in_1s", int(BURST + RATE))
    record("records_lost", len(set(ref) - set(got)))
    record("duplicates", 0)
