"""P5 / engine benchmark: cfstream's streaming core against a hand-written Arrow + Lance loop.

200k in-memory documents of about 1 KB go through ``map -> validate -> tag -> dedupe -> LanceSink``
(append and upsert into a new dataset), and through a hand-written loop of
``pa.Table.from_pylist`` + ``lance.write_dataset`` in batches of 10k over the same documents.
Contenders run interleaved (reference, append, upsert, reference, ...) for several rounds; the
ratio of each round is computed pair by pair and the median reported.

    python -m benchmarks.bench_engine [--docs 200000] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import lance
import pyarrow as pa

import cfstream as cf
from cfstream import transforms as T
from cfstream.records import Document
from cfstream.sinks import LanceSink

BATCH = 10_000
PAGE = 100


def make_rows(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """``n`` deterministic documents of about 1 KB of word-like text each, as plain dicts."""
    rng = random.Random(seed)
    vocab = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 10)))
        for _ in range(2000)
    ]
    rows = []
    for i in range(n):
        body = " ".join(rng.choices(vocab, k=170))[:1000]
        rows.append(
            {
                "source_id": f"doc-{i:07d}",
                "title": f"Document {i}: {body[:40]}",
                "text_content": body,
                "author": f"author-{i % 97}",
                "updated_at": f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}T10:00:00+00:00",
                "tags": ["bench", f"group-{i % 10}"],
            }
        )
    return rows


def reference(rows: list[dict[str, Any]], uri: str) -> float:
    """The hand-written loop: from_pylist + write_dataset per 10k rows."""
    t0 = time.perf_counter()
    for start in range(0, len(rows), BATCH):
        table = pa.Table.from_pylist(rows[start : start + BATCH])
        lance.write_dataset(table, uri, mode="create" if start == 0 else "append")
    return time.perf_counter() - t0


def cfstream_run(rows: list[dict[str, Any]], uri: str, mode: str) -> float:
    """The same documents through cfstream's core; returns seconds."""

    @cf.source(source_type="bench")
    async def docs():
        for start in range(0, len(rows), PAGE):
            yield [Document(**r) for r in rows[start : start + PAGE]]

    def touch(doc: Document) -> Document:
        doc.title = doc.title.strip()
        return doc

    pipeline = (
        docs()
        | T.map(touch)
        | T.validate()
        | T.tag("team:bench")
        | T.dedupe()
        | LanceSink(uri, mode=mode, batch_rows=BATCH)  # type: ignore[arg-type]
    )
    t0 = time.perf_counter()
    report = cf.run(pipeline)
    elapsed = time.perf_counter() - t0
    assert report.sink.rows_in == len(rows), report
    return elapsed


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; print and return its results."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--docs", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    rows = make_rows(args.docs)
    times: dict[str, list[float]] = {"reference": [], "append": [], "upsert": []}
    ratios: dict[str, list[float]] = {"append": [], "upsert": []}
    work = Path(tempfile.mkdtemp(prefix="cfstream-bench-engine-"))
    try:
        for r in range(args.rounds):
            for name in ("reference", "append", "upsert"):
                uri = str(work / f"{name}-{r}.lance")
                if name == "reference":
                    times[name].append(reference(rows, uri))
                else:
                    times[name].append(cfstream_run(rows, uri, name))
                shutil.rmtree(uri, ignore_errors=True)
            for name in ("append", "upsert"):
                ratios[name].append(times["reference"][-1] / times[name][-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result: dict[str, Any] = {"docs": args.docs, "rounds": args.rounds, "contenders": {}}
    for name, ts in times.items():
        rates = [args.docs / t for t in ts]
        result["contenders"][name] = {
            "seconds": ts,
            "docs_per_s_median": statistics.median(rates),
            "docs_per_s_min": min(rates),
            "docs_per_s_max": max(rates),
        }
    result["ratio_vs_reference"] = {
        name: {"median": statistics.median(v), "min": min(v), "max": max(v), "pairs": v}
        for name, v in ratios.items()
    }
    for name, c in result["contenders"].items():
        print(
            f"{name:10s} {c['docs_per_s_median']:>10,.0f} docs/s "
            f"(min {c['docs_per_s_min']:,.0f}, max {c['docs_per_s_max']:,.0f})"
        )
    for name, rr in result["ratio_vs_reference"].items():
        print(
            f"ratio {name:7s} vs reference: median {rr['median']:.2f} (min {rr['min']:.2f}, max {rr['max']:.2f})"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
