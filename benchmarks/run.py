"""Run every benchmark scenario; write the results JSON, the plot and the README table.

    python -m benchmarks.run            # make bench: full sizes, 3 rounds (several minutes)
    python -m benchmarks.run --quick    # make bench-quick: 10x smaller, under a minute, no Ray
    python -m benchmarks.run --only P1,P4 --rounds 5

Scenarios (see ``benchmarks/README.md``): P1 end-to-end throughput against a hand-written loop and
dlt; P2 peak memory at 100k vs 1M documents; P3 latency hiding; P4 incremental re-sync; P5 the
engine benchmark (:mod:`benchmarks.bench_engine`); P8 state that scales
(:mod:`benchmarks.bench_state`); SEARCH, P6 / P7 / retrieval quality / memory with chunking and
embedding (:mod:`benchmarks.bench_search`); and the Ray engine against the local one.

Contenders of a scenario run interleaved (A B C, A B C, ...); each scenario reports, per contender,
the median and min-max over rounds, and ratios computed round by round (round i of A over round i
of B), reported as the median of those ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import anyio
import lance

from benchmarks import report as report_mod
from benchmarks.common import ROOT, ApiServer, machine_facts, ratio_stats, spread
from benchmarks.reference import reference_import
from benchmarks.source import build_pipeline

__all__ = ("Config", "main", "run_benchmarks")

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
DLT_VERSION = "1.31.0"
DLT_ENV = BENCH_DIR / ".venv-dlt"
ALL_SCENARIOS = ("P1", "P2", "P3", "P4", "P5", "P8", "SEARCH", "RAY")
SCHEMA_VERSION = 1


@dataclass
class Config:
    """Sizes and switches of one benchmark run."""

    quick: bool = False
    rounds: int = 3
    p1_docs: int = 100_000
    p1_partitions: int = 8
    p2_small: int = 100_000
    p2_large: int = 1_000_000
    p3_partitions: int = 16
    p3_docs_per_partition: int = 2_000
    p3_latency_ms: float = 50.0
    p4_docs: int = 100_000
    p4_fraction: float = 0.01
    p5_docs: int = 200_000
    p8_sizes: tuple[int, ...] = (10_000, 50_000, 200_000)
    p8_obsidian: int = 50_000
    ray_cpus: int = 2
    scenarios: tuple[str, ...] = ALL_SCENARIOS
    dlt: bool = True
    profile: bool = True
    notes: list[str] = field(default_factory=list)

    @classmethod
    def quick_mode(cls) -> Config:
        """Ten times smaller, no Ray (its start-up alone takes ~10 s), no profile."""
        return cls(
            quick=True,
            p1_docs=10_000,
            p2_small=10_000,
            p2_large=100_000,
            p3_docs_per_partition=200,
            p4_docs=10_000,
            p5_docs=20_000,
            p8_sizes=(2_000, 10_000),
            p8_obsidian=10_000,
            scenarios=tuple(s for s in ALL_SCENARIOS if s != "RAY"),
            profile=False,
        )


# -- helpers -----------------------------------------------------------------------------------


def _load() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def _contender(seconds: list[float], docs: int, **extra: Any) -> dict[str, Any]:
    return {
        "seconds": seconds,
        "seconds_stats": spread(seconds),
        "docs_per_s": spread([docs / s for s in seconds]),
        **extra,
    }


def _target(
    tid: str, description: str, value: float | None, op: str, threshold: float
) -> dict[str, Any]:
    """A target: met or not, and by how much it is missed (as a fraction of the threshold)."""
    if value is None:
        return {"id": tid, "description": description, "value": None, "op": op,
                "threshold": threshold, "met": None, "miss_by": None}  # fmt: skip
    met = value >= threshold if op == ">=" else value <= threshold
    if met:
        miss_by = 0.0
    elif op == ">=":
        miss_by = (threshold - value) / threshold
    else:
        miss_by = (value - threshold) / threshold
    return {
        "id": tid,
        "description": description,
        "value": value,
        "op": op,
        "threshold": threshold,
        "met": met,
        "miss_by": miss_by,
    }


def _rm(path: str | Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _run_cfstream(url: str, uri: str, *, concurrency: int = 8) -> tuple[float, Any]:
    import cfstream as cf

    gc.collect()
    pipeline = build_pipeline(url, uri, concurrency=concurrency)
    t0 = time.perf_counter()
    rep = cf.run(pipeline)
    return time.perf_counter() - t0, rep


def _run_cfstream_client(
    url: str, uri: str, *, concurrency: int, limit_per_host: int
) -> tuple[float, Any]:
    """The pipeline with an HttpClient opened by the caller (to raise its connection limit)."""
    from cfstream.http import HttpClient

    async def go() -> Any:
        async with HttpClient(limit_per_host=limit_per_host) as http:
            return await build_pipeline(url, uri, concurrency=concurrency).run(http=http)

    gc.collect()
    t0 = time.perf_counter()
    rep = anyio.run(go, backend="asyncio")
    return time.perf_counter() - t0, rep


def _run_reference(url: str, uri: str, *, concurrency: int = 8) -> float:
    gc.collect()
    t0 = time.perf_counter()
    reference_import(url, uri, concurrency=concurrency)
    return time.perf_counter() - t0


def _rows(uri: str) -> int:
    return int(lance.dataset(uri).count_rows())


# -- dlt's own environment ---------------------------------------------------------------------


def ensure_dlt_env(log: Callable[[str], None]) -> tuple[Path | None, str | None]:
    """``benchmarks/.venv-dlt`` with dlt pinned; returns (python, None) or (None, why not)."""
    python = DLT_ENV / "bin" / "python"
    probe = [str(python), "-c", "import dlt, pyarrow; print(dlt.__version__)"]
    if python.exists():
        out = subprocess.run(probe, capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip() == DLT_VERSION:
            return python, None
    log(f"creating {DLT_ENV} with dlt=={DLT_VERSION} (once)")
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(DLT_ENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", f"dlt[parquet]=={DLT_VERSION}"],
            check=True,
            capture_output=True,
            text=True,
        )
        out = subprocess.run(probe, capture_output=True, text=True, check=True)
        if out.stdout.strip() != DLT_VERSION:
            return None, f"dlt {out.stdout.strip()} installed, expected {DLT_VERSION}"
    except subprocess.CalledProcessError as exc:
        tail = (exc.stderr or exc.stdout or "").strip().splitlines()[-3:]
        return None, f"installing dlt=={DLT_VERSION} failed: {' | '.join(tail) or exc}"
    return python, None


def _run_dlt(python: Path, url: str, out: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [str(python), str(BENCH_DIR / "dlt_pipeline.py"), "--url", url, "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=str(out.parent),
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"dlt failed: {proc.stderr.strip()[-800:]}")
    data: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    data["process_seconds"] = wall
    return data


# -- scenarios ---------------------------------------------------------------------------------


class Runner:
    """Runs the scenarios of one :class:`Config` against one fake API process."""

    def __init__(self, cfg: Config, server: ApiServer, work: Path, log: Callable[[str], None]):
        self.cfg = cfg
        self.server = server
        self.work = work
        self.log = log
        self.results: dict[str, Any] = {}

    def p1(self) -> dict[str, Any]:
        """End-to-end: cfstream vs the reference loop vs dlt."""
        cfg, n = self.cfg, self.cfg.p1_docs
        self.server.reset(docs=n, partitions=cfg.p1_partitions, latency_ms=0)
        dlt_python: Path | None = None
        dlt_skip: str | None = "disabled (--no-dlt)"
        if cfg.dlt:
            dlt_python, dlt_skip = ensure_dlt_env(self.log)
        times: dict[str, list[float]] = {"cfstream": [], "reference": [], "dlt": []}
        dlt_extra: list[dict[str, Any]] = []
        for r in range(cfg.rounds):
            for name in ("cfstream", "reference", "dlt"):
                uri = str(self.work / f"p1-{name}-{r}.lance")
                if name == "cfstream":
                    seconds, rep = _run_cfstream(self.server.url, uri)
                    assert _rows(uri) == n, f"cfstream wrote {_rows(uri)} rows, expected {n}"
                elif name == "reference":
                    seconds = _run_reference(self.server.url, uri)
                    assert _rows(uri) == n, f"reference wrote {_rows(uri)} rows, expected {n}"
                else:
                    if dlt_python is None:
                        continue
                    try:
                        info = _run_dlt(dlt_python, self.server.url, self.work / f"p1-dlt-{r}")
                    except RuntimeError as exc:
                        dlt_python, dlt_skip = None, str(exc)
                        continue
                    loaded = int(info["rows"].get("docs", 0))
                    assert loaded == n, f"dlt loaded {loaded} docs, expected {n}"
                    seconds = float(info["seconds"])
                    dlt_extra.append(info)
                    _rm(self.work / f"p1-dlt-{r}")
                times[name].append(seconds)
                _rm(uri)
                self.log(f"  P1 round {r + 1} {name}: {seconds:.2f} s ({n / seconds:,.0f} docs/s)")
        contenders: dict[str, Any] = {
            "cfstream": _contender(
                times["cfstream"],
                n,
                what="BenchDocsSource | map | validate | tag | dedupe | "
                "LanceSink(upsert, 10k rows)",  # fmt: skip
            ),
            "reference": _contender(
                times["reference"],
                n,
                what="aiohttp x8 -> orjson -> from_pylist -> "
                "write_dataset per 10k rows",  # fmt: skip
            ),
        }
        if times["dlt"] and len(times["dlt"]) == cfg.rounds:
            contenders["dlt"] = _contender(
                times["dlt"],
                n,
                what=f"dlt {DLT_VERSION} rest_api -> parquet (filesystem), own venv",
                runs=dlt_extra,
            )
        else:
            contenders["dlt"] = {"skipped": dlt_skip or "incomplete rounds"}
        ratios = {
            "cfstream/reference": ratio_stats(times["reference"], times["cfstream"]),
        }
        if "seconds" in contenders["dlt"]:
            ratios["cfstream/dlt"] = ratio_stats(times["dlt"], times["cfstream"])
        targets = [
            _target(
                "P1.reference",
                "cfstream >= 0.6x the reference loop (docs/s, median of pair ratios)",
                ratios["cfstream/reference"]["median"],
                ">=",
                0.6,
            ),
            _target(
                "P1.dlt",
                "cfstream >= 15x dlt (docs/s, median of pair ratios)",
                ratios.get("cfstream/dlt", {}).get("median"),
                ">=",
                15.0,
            ),
        ]
        return {
            "title": "P1 end-to-end throughput",
            "params": {"docs": n, "partitions": cfg.p1_partitions, "page": 100},
            "unit": "docs/s",
            "contenders": contenders,
            "ratios": ratios,
            "targets": targets,
        }

    def _worker_import(self, uri: str, concurrency: int = 8) -> dict[str, Any]:
        """One import in a child process; the child's own peak RSS (VmHWM, see worker.py)."""
        with tempfile.TemporaryFile(mode="w+") as err:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.worker",
                    "import",
                    "--url",
                    self.server.url,
                    "--uri",
                    uri,
                    "--concurrency",
                    str(concurrency),
                ],  # fmt: skip
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                cwd=ROOT,
            )
            assert proc.stdout is not None
            out = proc.stdout.read()
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            if proc.returncode != 0:
                err.seek(0)
                raise RuntimeError(f"worker failed: {err.read()[-1500:]}")
        line = next(x for x in out.splitlines() if x.startswith("RESULT "))
        data: dict[str, Any] = json.loads(line[len("RESULT ") :])
        if not data.get("peak_rss_mb"):  # no /proc: the kernel's figure (counts the parent too)
            data["peak_rss_mb"] = usage.ru_maxrss / 1024.0  # kilobytes on Linux
        return data

    def p2(self) -> dict[str, Any]:
        """Peak RSS of a whole import process at two sizes."""
        cfg = self.cfg
        sizes = {"small": cfg.p2_small, "large": cfg.p2_large}
        rss: dict[str, list[float]] = {"small": [], "large": []}
        secs: dict[str, list[float]] = {"small": [], "large": []}
        for r in range(cfg.rounds):
            for name, n in sizes.items():
                # pages are rendered on demand (no warm-up): this scenario measures memory
                self.server.admin("reset", docs=n, partitions=8, latency_ms=0)
                uri = str(self.work / f"p2-{name}-{r}.lance")
                data = self._worker_import(uri)
                assert data["rows"] == n, f"P2 import wrote {data['rows']} rows, expected {n}"
                rss[name].append(data["peak_rss_mb"])
                secs[name].append(data["seconds"])
                _rm(uri)
                self.log(
                    f"  P2 round {r + 1} {n:,} docs: peak RSS {data['peak_rss_mb']:.0f} MB, "
                    f"{data['seconds']:.1f} s"
                )
        contenders = {
            f"cfstream {sizes[k]:,}": {
                "docs": sizes[k],
                "peak_rss_mb": rss[k],
                "peak_rss_mb_stats": spread(rss[k]),
                **_contender(secs[k], sizes[k]),
            }
            for k in sizes
        }
        growth = ratio_stats(rss["large"], rss["small"])
        targets = [
            _target(
                "P2.growth",
                f"peak RSS at {sizes['large']:,} <= 1.2x the figure at {sizes['small']:,}",
                growth["median"],
                "<=",
                1.2,
            ),
            _target(
                "P2.absolute",
                f"peak RSS at {sizes['large']:,} <= 400 MB",
                spread(rss["large"])["median"],
                "<=",
                400.0,
            ),
        ]
        return {
            "title": "P2 peak memory (whole process, from the kernel)",
            "params": {"sizes": sizes, "partitions": 8, "measure": "VmHWM of the child"},
            "unit": "MB",
            "contenders": contenders,
            "ratios": {"rss large/small": growth},
            "targets": targets,
        }

    def p3(self, p1_rate: float | None) -> dict[str, Any]:
        """Latency hiding: 50 ms a request, 16 partitions."""
        cfg = self.cfg
        parts, per = cfg.p3_partitions, cfg.p3_docs_per_partition
        n = parts * per
        self.server.reset(docs=n, partitions=parts, latency_ms=cfg.p3_latency_ms)
        names = ("cfstream", "cfstream default client", "reference")
        times: dict[str, list[float]] = {k: [] for k in names}
        for r in range(cfg.rounds):
            for name in names:
                uri = str(self.work / f"p3-{r}-{name.replace(' ', '-')}.lance")
                if name == "cfstream":
                    seconds, _ = _run_cfstream_client(
                        self.server.url, uri, concurrency=parts, limit_per_host=parts
                    )
                elif name == "cfstream default client":
                    seconds, _ = _run_cfstream(self.server.url, uri, concurrency=parts)
                else:
                    seconds = _run_reference(self.server.url, uri, concurrency=parts)
                assert _rows(uri) == n, f"P3 {name} wrote {_rows(uri)} rows, expected {n}"
                times[name].append(seconds)
                _rm(uri)
                self.log(f"  P3 round {r + 1} {name}: {seconds:.2f} s ({n / seconds:,.0f} docs/s)")
        ideal = parts * 100 / (cfg.p3_latency_ms / 1000.0)
        bound = min(p1_rate, ideal) if p1_rate else ideal
        contenders = {
            "cfstream": _contender(
                times["cfstream"],
                n,
                what=f"source concurrency {parts}, "
                f"HttpClient(limit_per_host={parts}) passed to run()",  # fmt: skip
            ),
            "cfstream default client": _contender(
                times["cfstream default client"],
                n,
                what=f"source concurrency {parts}, the "
                "runner's own HttpClient (limit_per_host=10)",  # fmt: skip
            ),
            "reference": _contender(times["reference"], n, what=f"{parts} concurrent requests"),
        }
        med = contenders["cfstream"]["docs_per_s"]["median"]
        med_default = contenders["cfstream default client"]["docs_per_s"]["median"]
        return {
            "title": "P3 latency hiding",
            "params": {
                "partitions": parts,
                "docs_per_partition": per,
                "latency_ms": cfg.p3_latency_ms,
                "ideal_docs_per_s": ideal,
                "p1_cfstream_docs_per_s": p1_rate,
                "bound_docs_per_s": bound,
            },
            "unit": "docs/s",
            "contenders": contenders,
            "ratios": {
                "cfstream/reference": ratio_stats(times["reference"], times["cfstream"]),
                "cfstream default client/cfstream": ratio_stats(
                    times["cfstream"], times["cfstream default client"]
                ),
            },
            "targets": [
                _target(
                    "P3.cfstream",
                    f"cfstream >= 0.8 x min(P1 rate, {ideal:,.0f}) = {0.8 * bound:,.0f} docs/s",
                    med / bound,
                    ">=",
                    0.8,
                ),
                _target(
                    "P3.default_client",
                    "same, with the runner's default HttpClient",
                    med_default / bound,
                    ">=",
                    0.8,
                ),
            ],
        }

    def p4(self) -> dict[str, Any]:
        """Incremental re-sync of 1% changed documents vs the full import."""
        cfg = self.cfg
        n = cfg.p4_docs
        full: list[float] = []
        incr: list[float] = []
        fresh: list[float] = []
        equal: list[bool] = []
        fetched: list[int] = []
        written: list[int] = []
        changed: list[int] = []
        for r in range(cfg.rounds):
            self.server.reset(docs=n, partitions=8, latency_ms=0)
            a = str(self.work / f"p4-{r}-synced.lance")
            b = str(self.work / f"p4-{r}-fresh.lance")
            t_full, _ = _run_cfstream(self.server.url, a)
            changed.append(int(self.server.admin("change", fraction=cfg.p4_fraction)["changed"]))
            self.server.admin("warm")
            t_incr, rep = _run_cfstream(self.server.url, a)
            t_fresh, _ = _run_cfstream(self.server.url, b)
            full.append(t_full)
            incr.append(t_incr)
            fresh.append(t_fresh)
            fetched.append(rep.fetched)
            written.append(rep.sink.inserted + rep.sink.updated)
            equal.append(_same_dataset(a, b))
            _rm(a)
            _rm(b)
            self.log(
                f"  P4 round {r + 1}: full {t_full:.2f} s, incremental {t_incr:.3f} s "
                f"({rep.fetched} fetched), fresh {t_fresh:.2f} s, equal={equal[-1]}"
            )
        ratio = ratio_stats(incr, full)
        return {
            "title": "P4 incremental re-sync",
            "params": {"docs": n, "changed_fraction": cfg.p4_fraction, "partitions": 8},
            "unit": "s",
            "contenders": {
                "full import": _contender(full, n),
                "incremental re-sync": {
                    **_contender(incr, n),
                    "changed": changed,
                    "fetched": fetched,
                    "rows_written": written,
                },
                "fresh full import (after change)": _contender(fresh, n),
            },
            "ratios": {"incremental/full": ratio},
            "equal_to_fresh_import": equal,
            "targets": [
                _target(
                    "P4.time",
                    f"re-sync of {cfg.p4_fraction:.0%} changed <= 5% of the full import's time",
                    ratio["median"],
                    "<=",
                    0.05,
                ),
                _target(
                    "P4.equal",
                    "re-synced dataset equals a fresh full import (uuid, content_hash), all rounds",
                    1.0 if all(equal) else 0.0,
                    ">=",
                    1.0,
                ),
            ],
        }

    def search(self) -> dict[str, Any]:
        """P6, P7, retrieval quality and memory with chunk + embed (:mod:`benchmarks.bench_search`)."""
        from benchmarks import bench_search

        cfg = self.cfg
        res = bench_search.run(quick=cfg.quick, rounds=min(cfg.rounds, 2), log=self.log)
        contenders: dict[str, Any] = {}
        for corpus in ("vault", "synthetic"):
            c = res["P6"][corpus]
            contenders[f"P6 chunk+embed+Lance ({corpus}, {c['chunks']:,} chunks)"] = _contender(
                c["cfstream_s"], c["chunks"]
            )
            contenders[f"P6 embedder loop ({corpus})"] = _contender(c["loop_s"], c["chunks"])
        targets = [
            _target(t["id"], t["name"], t["value"], t["op"], t["limit"]) for t in res["targets"]
        ]
        return {
            "title": "SEARCH: P6 embedding pipeline, P7 incremental, retrieval, memory",
            "params": {"quick": cfg.quick, "rounds": min(cfg.rounds, 2)},
            "unit": "chunks/s",
            "contenders": contenders,
            "detail": res,
            "targets": targets,
        }

    def p8(self) -> dict[str, Any]:
        """State that scales: a files sync's cost against the folder's size (one round)."""
        from benchmarks import bench_state

        cfg = self.cfg
        res = bench_state.run(cfg.p8_sizes, cfg.p8_obsidian or None, log=self.log, work=self.work)
        big = res["sizes"][-1]
        n = big["n"]
        contenders: dict[str, Any] = {
            f"files {label} ({n:,} files)": {
                **_contender([big[key]["wall_s"]], n),
                "peak_rss_mb_stats": spread([big[key]["peak_rss_mb"]]),
                "state_bytes": big[key]["state_bytes"],
            }
            for key, label in (
                ("full", "full import"),
                ("nochange", "no-change re-sync"),
                ("one_change", "1 changed + 1 deleted"),
            )
        }
        contenders[f"os.walk + os.stat ({n:,} files)"] = _contender([big["walk_s"]], n)
        obs = res.get("obsidian")
        if obs is not None:
            contenders[f"obsidian no-change re-sync ({obs['n']:,} notes)"] = {
                **_contender([obs["nochange"]["wall_s"]], obs["n"]),
                "peak_rss_mb_stats": spread([obs["nochange"]["peak_rss_mb"]]),
                "state_bytes": obs["nochange"]["state_bytes"],
            }
        targets = []
        for t in res["targets"]:
            targets.append(_target(t["id"], t["name"], t["value"], "<=", t["limit"]))
        return {
            "title": "P8 state that scales (files source)",
            "params": {
                "sizes": ",".join(str(x) for x in cfg.p8_sizes),
                "obsidian": cfg.p8_obsidian,
                "rounds": 1,
            },  # fmt: skip
            "unit": "s",
            "contenders": contenders,
            "detail": res,
            "targets": targets,
        }

    def p5(self) -> dict[str, Any]:
        """The engine benchmark (in-memory documents, no HTTP)."""
        from benchmarks import bench_engine

        cfg = self.cfg
        res = bench_engine.main(["--docs", str(cfg.p5_docs), "--rounds", str(cfg.rounds)])
        contenders = {}
        for name, c in res["contenders"].items():
            contenders[name] = _contender(c["seconds"], res["docs"])
        ratios = {f"{name}/reference": dict(rr) for name, rr in res["ratio_vs_reference"].items()}
        return {
            "title": "P5 engine (in-memory documents -> Lance)",
            "params": {"docs": res["docs"]},
            "unit": "docs/s",
            "contenders": contenders,
            "ratios": ratios,
            "targets": [
                _target(
                    f"P5.{name}",
                    f"cfstream {name} >= 0.7x the from_pylist + write_dataset loop",
                    ratios[f"{name}/reference"]["median"],
                    ">=",
                    0.7,
                )
                for name in ("append", "upsert")
            ],
        }

    def ray(self) -> dict[str, Any]:
        """The P1 import on the Ray engine vs the local runner, Ray's start-up apart."""
        cfg = self.cfg
        try:
            import ray  # noqa: F401

            from cfstream.distributed import ray as cf_ray
        except ImportError as exc:
            return {"title": "Ray engine", "skipped": f"not importable: {exc}"}
        if not hasattr(cf_ray, "run_ray"):
            return {"title": "Ray engine", "skipped": "cfstream.distributed.ray has no run_ray"}
        n = cfg.p1_docs
        self.server.reset(docs=n, partitions=cfg.p1_partitions, latency_ms=0)
        work = self.work / "ray"
        work.mkdir(exist_ok=True)
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.worker",
                "ray",
                "--url",
                self.server.url,
                "--work",
                str(work),
                "--rounds",
                str(cfg.rounds),
                "--num-cpus",
                str(cfg.ray_cpus),
            ],  # fmt: skip
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        if proc.returncode != 0:
            return {"title": "Ray engine", "skipped": f"failed: {proc.stderr.strip()[-1500:]}"}
        line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
        data = json.loads(line[len("RESULT ") :])
        for engine in ("local", "ray"):
            bad = [x for x in data["rows"][engine] if x != n]
            if bad:
                return {"title": "Ray engine", "skipped": f"{engine} wrote {bad[0]} rows, not {n}"}
        self.log(
            f"  Ray: init {data['init_seconds']:.1f} s, runs {data['ray']}, local {data['local']}"
        )
        return {
            "title": "Ray engine vs local (P1 import)",
            "params": {"docs": n, "num_cpus": cfg.ray_cpus, "partitions": cfg.p1_partitions},
            "unit": "docs/s",
            "startup": {
                "import_seconds": data["import_seconds"],
                "init_seconds": data["init_seconds"],
            },
            "contenders": {
                "local (Ray running)": _contender(data["local"], n),
                f"run_ray num_cpus={cfg.ray_cpus}": _contender(data["ray"], n),
            },
            "ratios": {"ray/local": ratio_stats(data["local"], data["ray"])},
            "targets": [],
        }


def _same_dataset(a: str, b: str) -> bool:
    """True when both datasets hold the same (uuid, content_hash) pairs, each uuid once."""
    ta = lance.dataset(a).to_table(columns=["uuid", "content_hash"]).sort_by("uuid")
    tb = lance.dataset(b).to_table(columns=["uuid", "content_hash"]).sort_by("uuid")
    if ta.num_rows != tb.num_rows:
        return False
    if len(set(ta.column("uuid").to_pylist())) != ta.num_rows:
        return False
    return bool(ta.equals(tb))


# -- the profile -------------------------------------------------------------------------------


def run_profile(server: ApiServer, work: Path, docs: int, out_txt: Path) -> dict[str, Any]:
    """Sample a cfstream P1 import with py-spy (all threads); summarize where the time goes."""
    from benchmarks import profile as prof

    server.reset(docs=docs, partitions=8, latency_ms=0)
    uri = str(work / "profile.lance")
    try:
        summary = prof.profile_import(server.url, uri, out_txt)
    finally:
        _rm(uri)
    return summary


# -- driver ------------------------------------------------------------------------------------


def run_benchmarks(
    cfg: Config, *, log: Callable[[str], None] = print, results_dir: Path = RESULTS_DIR
) -> tuple[dict[str, Any], Path]:
    """Run the scenarios of ``cfg``; write the JSON; return the results and the JSON path."""
    facts = machine_facts({"dlt (benchmark venv)": None})
    stem = f"{date.today().isoformat()}-{facts['host']}" + ("-quick" if cfg.quick else "")
    results_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "name": stem,
        "quick": cfg.quick,
        "rounds": cfg.rounds,
        "machine": facts,
        "notes": [
            "The machine is shared with other engineers' test runs: see loadavg per scenario.",
            *cfg.notes,
        ],
        "scenarios": {},
    }
    work = Path(tempfile.mkdtemp(prefix="cfstream-bench-"))
    t_all = time.perf_counter()
    try:
        with ApiServer.start(docs=cfg.p1_docs, partitions=cfg.p1_partitions) as server:
            runner = Runner(cfg, server, work, log)
            p1_rate: float | None = None
            for sid in cfg.scenarios:
                log(f"== {sid}")
                before = _load()
                t0 = time.perf_counter()
                if sid == "P1":
                    res = runner.p1()
                    p1_rate = res["contenders"]["cfstream"]["docs_per_s"]["median"]
                elif sid == "P2":
                    res = runner.p2()
                elif sid == "P3":
                    res = runner.p3(p1_rate)
                elif sid == "P4":
                    res = runner.p4()
                elif sid == "P5":
                    res = runner.p5()
                elif sid == "P8":
                    res = runner.p8()
                elif sid == "SEARCH":
                    res = runner.search()
                elif sid == "RAY":
                    res = runner.ray()
                else:
                    raise ValueError(f"unknown scenario {sid}")
                res["wall_seconds"] = time.perf_counter() - t0
                res["loadavg_before"] = before
                res["loadavg_after"] = _load()
                results["scenarios"][sid] = res
            if cfg.profile:
                log("== profile (py-spy, cfstream P1 import)")
                txt = results_dir / f"{stem}-profile.txt"
                results["profile"] = run_profile(server, work, cfg.p1_docs, txt)
                results["profile"]["file"] = txt.name
    finally:
        _rm(work)
    dlt_python = DLT_ENV / "bin" / "python"
    if dlt_python.exists():
        with contextlib.suppress(Exception):
            out = subprocess.run(
                [
                    str(dlt_python),
                    "-c",
                    "import dlt, pyarrow; print(dlt.__version__, pyarrow.__version__)",
                ],  # fmt: skip
                capture_output=True,
                text=True,
            ).stdout.split()
            facts["versions"]["dlt (benchmark venv)"] = out[0]
            facts["versions"]["pyarrow (dlt venv)"] = out[1]
    results["wall_seconds"] = time.perf_counter() - t_all
    path = results_dir / f"{stem}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    return results, path


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="10x smaller, no Ray, no profile")
    ap.add_argument("--only", help="comma-separated scenarios: " + ",".join(ALL_SCENARIOS))
    ap.add_argument("--rounds", type=int, help="rounds per scenario (default 3)")
    ap.add_argument("--docs", type=int, help="documents for P1, P4 and the Ray row")
    ap.add_argument("--no-dlt", action="store_true", help="skip the dlt contender")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--profile", action="store_true", help="profile even in --quick mode")
    ap.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    ap.add_argument(
        "--readme",
        choices=("auto", "yes", "no"),
        default="auto",
        help="regenerate the README table (auto: only for full runs into benchmarks/results)",
    )
    ap.add_argument("--no-plot", action="store_true")
    args = ap.parse_args(argv)
    cfg = Config.quick_mode() if args.quick else Config()
    if args.only:
        wanted = tuple(s.strip().upper() for s in args.only.split(",") if s.strip())
        unknown = [s for s in wanted if s not in ALL_SCENARIOS]
        if unknown:
            ap.error(f"unknown scenarios {unknown}; choose from {ALL_SCENARIOS}")
        cfg.scenarios = wanted
    if args.rounds:
        cfg.rounds = args.rounds
        if args.rounds < 3:
            cfg.notes.append(f"rounds={args.rounds}: fewer than the 3 the issue asks for")
    if args.docs:
        cfg.p1_docs = cfg.p4_docs = args.docs
    if args.no_dlt:
        cfg.dlt = False
    if args.no_profile:
        cfg.profile = False
    if args.profile:
        cfg.profile = True

    def log(msg: str) -> None:
        print(msg, flush=True)

    results, path = run_benchmarks(cfg, log=log, results_dir=args.results_dir)
    log(f"wrote {path}")
    if not args.no_plot:
        png = path.with_suffix(".png")
        report_mod.plot(results, png)
        log(f"wrote {png}")
    update = args.readme == "yes" or (
        args.readme == "auto" and not cfg.quick and args.results_dir.resolve() == RESULTS_DIR
    )
    if update:
        report_mod.update_readme(results, BENCH_DIR / "README.md", json_name=path.name)
        log("updated benchmarks/README.md")
    log(report_mod.summary_text(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
