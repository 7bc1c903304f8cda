"""Where the time of a cfstream import goes: py-spy samples of every thread, summarized.

``profile_import(url, uri, out_txt)`` runs ``python -m benchmarks.worker import`` under
``py-spy record --threads -f raw`` (collapsed stacks of all threads, on-CPU samples only), drops the
samples taken while Python imports modules, and attributes each remaining sample to the deepest
frame of a known layer (Lance, pyarrow, cfstream's records/sink/transforms/http/runner, the
benchmark source, aiohttp, anyio, asyncio). It writes the summary and the top functions to
``out_txt`` and returns them as a dict. Without py-spy it falls back to pyinstrument (main thread
only).

    python -m benchmarks.profile --docs 100000      # starts its own fake API
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, ApiServer

__all__ = ("CATEGORIES", "profile_import", "summarize_raw")

#: (label, substring of the frame's file path), most specific first; the deepest match wins
CATEGORIES: tuple[tuple[str, str], ...] = (
    ("idle wait (threading, queue)", "/threading.py"),
    ("idle wait (epoll)", "/selectors.py"),
    ("cfstream records -> Arrow (records.py, storage/codec.py)", "/cfstream/records.py"),
    ("cfstream records -> Arrow (records.py, storage/codec.py)", "/cfstream/storage/codec.py"),
    ("cfstream sink (sinks/lance.py, storage/)", "/cfstream/sinks/"),
    ("cfstream sink (sinks/lance.py, storage/)", "/cfstream/storage/"),
    ("cfstream transforms", "/cfstream/transforms/"),
    ("cfstream http (client, paginate)", "/cfstream/http/"),
    ("cfstream engine", "/cfstream/engine/"),
    ("cfstream state", "/cfstream/contract/state.py"),
    ("benchmark source (API item -> Document)", "/benchmarks/source.py"),
    ("lance (Rust: write, merge_insert, index)", "/lance/"),
    ("pyarrow", "/pyarrow/"),
    ("aiohttp", "/aiohttp/"),
    ("yarl / multidict", "/yarl/"),
    ("anyio", "/anyio/"),
    ("asyncio event loop", "/asyncio/"),
)
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _short(path: str) -> str:
    for marker in ("site-packages/", str(ROOT) + "/", "/lib/python3"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def _parse(frame: str) -> tuple[str, str]:
    m = _FRAME.match(frame)
    if not m:
        return frame, ""
    return m.group("func"), m.group("file")


def summarize_raw(raw: str, top: int = 15) -> dict[str, Any]:
    """Summarize py-spy ``--threads -f raw`` output (``frame;frame;... count`` lines)."""
    categories: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    skipped_imports = 0
    for line in raw.splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = stack.split(";")
        thread = ""
        if frames and frames[0].startswith("thread ("):
            thread = frames[0].partition(": ")[2]
            frames = frames[1:]
        if any("_find_and_load" in f for f in frames):
            skipped_imports += count
            continue
        total += count
        parsed = [_parse(f) for f in frames]
        is_main = thread == "MainThread" or (
            not thread and any(f in ("<module>", "_run_module_as_main") for f, _ in parsed[:3])
        )
        threads["main thread (event loop)" if is_main else "worker threads"] += count
        label = "other" if parsed else "no Python frame (native code, start-up, shutdown)"
        for _func, path in reversed(parsed):
            hit = next((lab for lab, key in CATEGORIES if key in "/" + path), None)
            if hit:
                label = hit
                break
        categories[label] += count
        seen: set[str] = set()
        for func, path in parsed:
            name = f"{func} ({_short(path)})"
            if name not in seen:
                seen.add(name)
                inclusive[name] += count
        if parsed:
            func, path = parsed[-1]
            self_time[f"{func} ({_short(path)})"] += count

    def share(c: Counter[str], n: int | None = None) -> list[list[Any]]:
        return [[k, v / total if total else 0.0] for k, v in c.most_common(n)]

    interesting = Counter(
        {
            k: v
            for k, v in inclusive.items()
            if ("cfstream/" in k or "benchmarks/" in k or "lance/" in k or "pyarrow/" in k)
            and "benchmarks/worker.py" not in k
            and not k.startswith(("run (", "main (", "_run (", "run_pipeline (", "_execute ("))
        }
    )
    return {
        "tool": "py-spy",
        "samples": total,
        "import_samples_dropped": skipped_imports,
        "threads": share(threads),
        "categories": share(categories),
        "top_inclusive": share(interesting, top),
        "top_self": share(self_time, top),
    }


def _format(summary: dict[str, Any]) -> str:
    lines = [
        f"tool: {summary['tool']}; samples: {summary['samples']} "
        f"(dropped {summary.get('import_samples_dropped', 0)} taken during imports)",
    ]
    if "seconds" in summary:
        lines.append(f"import wall time under the profiler: {summary['seconds']:.2f} s")
    for title, key in (
        ("by thread", "threads"),
        ("by layer (deepest known frame)", "categories"),
        ("top functions, inclusive (cfstream, lance, pyarrow)", "top_inclusive"),
        ("top functions, self", "top_self"),
    ):
        lines.append("")
        lines.append(title + ":")
        for name, frac in summary.get(key, []):
            lines.append(f"  {frac:6.1%}  {name}")
    return "\n".join(lines) + "\n"


def profile_import(url: str, uri: str, out_txt: Path, rate: int = 200) -> dict[str, Any]:
    """Profile one import into ``uri``; write the summary to ``out_txt`` and return it."""
    worker = [
        sys.executable,
        "-m",
        "benchmarks.worker",
        "import",
        "--url",
        url,
        "--uri",
        uri,
    ]
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    with tempfile.TemporaryDirectory() as tmp:
        raw_path = Path(tmp) / "raw.txt"
        summary: dict[str, Any]
        if Path(py_spy).exists():
            proc = subprocess.run(
                [
                    py_spy,
                    "record",
                    "-r",
                    str(rate),
                    "--threads",
                    "-f",
                    "raw",
                    "-o",
                    str(raw_path),
                    "--",
                    *worker,
                ],  # fmt: skip
                capture_output=True,
                text=True,
                cwd=ROOT,
            )
            if proc.returncode == 0 and raw_path.exists():
                summary = summarize_raw(raw_path.read_text())
                summary["seconds"] = _worker_seconds(proc.stdout)
                out_txt.write_text(_format(summary))
                return summary
            why = proc.stderr.strip()[-300:]
        else:
            why = "py-spy not found"
        html = Path(tmp) / "pyinstrument.txt"
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pyinstrument",
                "-r",
                "text",
                "-o",
                str(html),
                "-m",
                *worker[2:],
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        text = html.read_text() if html.exists() else proc.stderr
        out_txt.write_text(text)
        return {
            "tool": "pyinstrument (main thread only)",
            "fallback_reason": why,
            "seconds": _worker_seconds(proc.stdout),
            "text_head": text.splitlines()[:60],
        }


def _worker_seconds(stdout: str) -> float | None:
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            return float(json.loads(line[len("RESULT ") :])["seconds"])
    return None


def main(argv: list[str] | None = None) -> None:
    """Profile a cfstream import against a fresh fake API; print the summary."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.profile")
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--out", type=Path, default=Path("profile.txt"))
    args = ap.parse_args(argv)
    with ApiServer.start(docs=args.docs) as server, tempfile.TemporaryDirectory() as tmp:
        server.reset()
        profile_import(server.url, str(Path(tmp) / "p.lance"), args.out)
    print(args.out.read_text())


if __name__ == "__main__":
    main()
