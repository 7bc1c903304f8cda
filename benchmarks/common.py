"""Shared pieces of the benchmarks: the fake API in its own process, statistics, machine facts."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = (
    "ApiServer",
    "machine_facts",
    "ratio_stats",
    "spread",
)

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class ApiServer:
    """The fake API (:mod:`benchmarks.fake_api`) running in a child process on 127.0.0.1."""

    url: str
    process: subprocess.Popen[str]

    @classmethod
    @contextlib.contextmanager
    def start(
        cls,
        *,
        docs: int,
        partitions: int = 8,
        latency_ms: float = 0.0,
        seed: int = 7,
        python: str = sys.executable,
    ) -> Iterator[ApiServer]:
        """Start the server, wait for its ``listening`` line, stop it on exit."""
        env = dict(os.environ)
        env.update(
            BENCH_API_DOCS=str(docs),
            BENCH_API_PARTITIONS=str(partitions),
            BENCH_API_LATENCY_MS=str(latency_ms),
            BENCH_API_SEED=str(seed),
            PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        )
        proc = subprocess.Popen(
            [python, "-m", "cfstream.testing.server", "--setup", "benchmarks.fake_api:setup"],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if "listening on" not in line:
                raise RuntimeError(f"the fake API did not start (said {line!r})")
            server = cls(line.rsplit(" ", 1)[1].strip(), proc)
            yield server
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def admin(self, path: str, **params: Any) -> dict[str, Any]:
        """Call an ``/admin`` route (POST except ``config``) and return its JSON."""
        query = "&".join(f"{k}={v}" for k, v in params.items())
        url = f"{self.url}/admin/{path}" + (f"?{query}" if query else "")
        method = "GET" if path == "config" else "POST"
        req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
        with urllib.request.urlopen(req, timeout=600) as resp:
            result: dict[str, Any] = json.loads(resp.read())
            return result

    def reset(self, **params: Any) -> dict[str, Any]:
        """Back to the initial documents, optionally with a new config; then warm the cache."""
        self.admin("reset", **params)
        return self.admin("warm")


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
    }


def ratio_stats(numerators: Sequence[float], denominators: Sequence[float]) -> dict[str, Any]:
    """Pair-by-pair ratios (round i over round i): their median, min, max and the pairs."""
    pairs = [a / b for a, b in zip(numerators, denominators, strict=True) if b]
    if not pairs:
        return {"median": None, "min": None, "max": None, "pairs": []}
    return {**spread(pairs), "pairs": pairs}


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _mem_total_mb() -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return None


def machine_facts(extra_versions: Mapping[str, str | None] | None = None) -> dict[str, Any]:
    """CPU count and model, memory, load, OS, Python and library versions."""
    versions = {
        name: _version(name)
        for name in (
            "cfstream",
            "pylance",
            "pyarrow",
            "aiohttp",
            "anyio",
            "orjson",
            "pydantic",
            "ray",
            "lance-ray",
            "dlt",
        )
    }
    versions.update(extra_versions or {})
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "host": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_model(),
        "mem_total_mb": _mem_total_mb(),
        "loadavg_at_start": list(load) if load else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "versions": versions,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
