"""Benchmark runs that need a process of their own (memory, Ray, profiling).

``python -m benchmarks.worker import --url URL --uri PATH`` imports every document of the fake API
through the benchmark pipeline and prints one JSON line (``seconds``, ``rows``, ``peak_rss_mb`` of
this process). The peak is the kernel's ``VmHWM`` of this process's own address space, so it
covers the whole process (interpreter, libraries, Lance's threads) and nothing else: the
``ru_maxrss`` that ``getrusage``/``os.wait4`` report also counts the parent's image, which Linux
carries across fork + exec (a child of a 470 MB parent "peaks" at 470 MB whatever it does).

``python -m benchmarks.worker ray --url URL --work DIR --rounds R --num-cpus 2`` times
``ray.init`` once (Ray's start-up), then runs the same import with the local runner and with
``cfstream.distributed.ray.run_ray``, interleaved, ``R`` rounds; prints one JSON line.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import shutil
import time
from pathlib import Path
from typing import Any

__all__ = ("main",)


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _peak_rss_mb() -> float | None:
    """This process's own peak RSS (``VmHWM``, Linux); None where /proc is not available."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        return None
    return None


def _import(url: str, uri: str, concurrency: int) -> dict[str, Any]:
    import lance

    import cfstream as cf
    from benchmarks.source import build_pipeline

    t0 = time.perf_counter()
    report = cf.run(build_pipeline(url, uri, concurrency=concurrency))
    seconds = time.perf_counter() - t0
    rows = lance.dataset(uri).count_rows()
    return {
        "seconds": seconds,
        "rows": rows,
        "rows_in": report.sink.rows_in,
        "commits": report.sink.commits,
        "maxrss_mb": _maxrss_mb(),
        "peak_rss_mb": _peak_rss_mb(),
    }


def _ray(url: str, work: Path, rounds: int, num_cpus: int, concurrency: int) -> dict[str, Any]:
    import lance

    import cfstream as cf
    from benchmarks.source import build_pipeline

    t0 = time.perf_counter()
    import ray

    from cfstream.distributed.ray import run_ray

    import_seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    ray.init(
        num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True
    )
    init_seconds = time.perf_counter() - t1
    out: dict[str, Any] = {
        "import_seconds": import_seconds,
        "init_seconds": init_seconds,
        "local": [],
        "ray": [],
        "rows": {"local": [], "ray": []},
    }
    try:
        for r in range(rounds):
            for engine in ("local", "ray"):
                uri = str(work / f"{engine}-{r}.lance")
                pipeline = build_pipeline(url, uri, concurrency=concurrency)
                gc.collect()
                t = time.perf_counter()
                if engine == "local":
                    cf.run(pipeline)
                else:
                    run_ray(pipeline, num_cpus=num_cpus)
                out[engine].append(time.perf_counter() - t)
                out["rows"][engine].append(lance.dataset(uri).count_rows())
                shutil.rmtree(uri, ignore_errors=True)
    finally:
        ray.shutdown()
    return out


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and print the result as one JSON line."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.worker")
    sub = ap.add_subparsers(dest="cmd", required=True)
    imp = sub.add_parser("import")
    imp.add_argument("--url", required=True)
    imp.add_argument("--uri", required=True)
    imp.add_argument("--concurrency", type=int, default=8)
    ray = sub.add_parser("ray")
    ray.add_argument("--url", required=True)
    ray.add_argument("--work", type=Path, required=True)
    ray.add_argument("--rounds", type=int, default=3)
    ray.add_argument("--num-cpus", type=int, default=2)
    ray.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args(argv)
    if args.cmd == "import":
        result = _import(args.url, args.uri, args.concurrency)
    else:
        result = _ray(args.url, args.work, args.rounds, args.num_cpus, args.concurrency)
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
