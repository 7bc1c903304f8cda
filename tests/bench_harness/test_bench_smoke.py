"""Smoke test of the benchmark harness: a tiny P1 (no dlt), the JSON it writes, the report.

No timing assertions: this checks that ``make bench`` can run and what its results look like.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from benchmarks import report
from benchmarks.fake_api import DocStore, _decode_cursor
from benchmarks.profile import summarize_raw
from benchmarks.run import Config, run_benchmarks


def test_quick_p1_writes_results_json(tmp_path: Path) -> None:
    cfg = Config(quick=True, rounds=1, p1_docs=2_000, scenarios=("P1",), dlt=False, profile=False)
    results, path = run_benchmarks(cfg, log=lambda _msg: None, results_dir=tmp_path)
    assert path.exists() and path.suffix == ".json"
    data = json.loads(path.read_text())
    assert data == json.loads(json.dumps(results))
    machine = data["machine"]
    for key in ("cpu_count", "cpu_model", "python", "versions"):
        assert machine[key]
    for lib in ("pylance", "pyarrow", "aiohttp", "cfstream"):
        assert machine["versions"][lib]
    p1 = data["scenarios"]["P1"]
    assert p1["params"]["docs"] == 2_000
    for name in ("cfstream", "reference"):
        c = p1["contenders"][name]
        assert len(c["seconds"]) == 1
        assert set(c["docs_per_s"]) == {"median", "min", "max"}
    assert "skipped" in p1["contenders"]["dlt"]
    ratio = p1["ratios"]["cfstream/reference"]
    assert len(ratio["pairs"]) == 1 and ratio["median"] > 0
    assert {t["id"] for t in p1["targets"]} == {"P1.reference", "P1.dlt"}
    assert p1["loadavg_before"] is not None

    md = report.markdown(data, path.name)
    assert "P1 end-to-end throughput" in md and "| cfstream |" in md
    readme = tmp_path / "README.md"
    readme.write_text(f"# B\n\nprose\n\n{report.BEGIN}\nSTALE-TABLE\n{report.END}\n\nafter\n")
    report.update_readme(data, readme, json_name=path.name)
    text = readme.read_text()
    assert (
        "STALE-TABLE" not in text and "prose" in text and "after" in text and "| cfstream |" in text
    )
    png = tmp_path / "plot.png"
    report.plot(data, png)
    assert png.stat().st_size > 1000


def test_doc_store_pages_changes_and_incremental_filter() -> None:
    store = DocStore(250, 2, seed=3, cache_mb=0)
    first = json.loads(store.page(0, -1, 100))
    assert len(first["items"]) == 100 and first["next_cursor"]
    assert all(d["channel"] == "0" for d in first["items"])
    assert 900 < len(json.dumps(first["items"][0])) < 1300  # about 1 KB a document
    assert store.page(0, -1, 100) == DocStore(250, 2, seed=3, cache_mb=0).page(0, -1, 100)
    assert store.change(0.04) == 10
    newest = max(d["updated_at"] for d in first["items"])
    changed = [
        d for k in range(2) for d in json.loads(store.page(k, 249, 100))["items"]
    ]  # updated after every initial document
    assert len(changed) == 10 and all(d["body"].startswith("[edit 1]") for d in changed)
    assert all(d["updated_at"] > newest for d in changed)
    ids: list[str] = []
    for k in range(2):  # a full listing after the change: every document once
        after = -1
        while True:
            page = json.loads(store.page(k, after, 100))
            ids += [d["id"] for d in page["items"]]
            if not page["next_cursor"]:
                break
            after = _decode_cursor(page["next_cursor"])
    assert len(ids) == 250 == len(set(ids))


def test_profile_summary_attributes_samples_to_layers() -> None:
    raw = "\n".join(
        [
            "thread (1): MainThread;run (asyncio/runners.py:1);documents_to_table (cfstream/storage/codec.py:9) 2",
            "thread (1): MainThread;run (asyncio/runners.py:1);uuid_digests (cfstream/records.py:9) 1",
            "thread (2): Thread-1;_bootstrap (threading.py:1);write_dataset (lance/dataset.py:5) 1",
            "thread (1): MainThread;_find_and_load (<frozen importlib._bootstrap>:1) 7",
        ]
    )
    s = summarize_raw(raw)
    assert s["samples"] == 4 and s["import_samples_dropped"] == 7
    cats = dict(s["categories"])
    assert cats["cfstream records -> Arrow (records.py, storage/codec.py)"] == pytest.approx(0.75)
    assert cats["lance (Rust: write, merge_insert, index)"] == pytest.approx(0.25)
