"""P8 / state that scales: what a ``files`` sync costs as the folder grows.

For each size N, a tree of N Markdown files of about 1 KB (folders of 100, one top-level folder,
hence one partition, per 1,000 files) is imported into a new dataset, then synced again with
nothing changed, then with one file changed and one deleted. Each sync runs in its own process;
for each the benchmark records the wall time, the peak RSS (the child's ``VmHWM``) and the bytes
written to the sync state (``/proc/self/io`` ``wchar`` counted around every state write in the
child: the sink saves state between its commits, so nothing else writes meanwhile). The baseline is an
``os.walk`` + ``os.stat`` of the same tree in the same run; the growth exponent of each figure is
the slope of a least-squares line through log(N), log(figure). An Obsidian vault of
``--obsidian N`` notes is synced the same way, then its no-change re-sync is alternated three times
with a ``files`` source's over the same folder (a paired ratio).

    python -m benchmarks.bench_state [--sizes 10000,50000,200000] [--obsidian 50000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

#: targets of issue 18
TARGET_WALK_RATIO = 5.0
TARGET_EXPONENT = 1.1
TARGET_RSS_MB = 300.0
TARGET_OBSIDIAN_RATIO = 2.0
TARGET_AT = 200_000

_WORDS = [
    "state",
    "cursor",
    "partition",
    "commit",
    "lance",
    "arrow",
    "stream",
    "batch",
    "source",
    "folder",
    "note",
    "record",
    "digest",
    "index",
    "merge",
    "append",
    "upsert",
    "checkpoint",
    "resume",
    "crash",
    "kill",
    "walk",
    "stat",
    "file",
    "tree",
    "vault",
    "link",
]


def make_tree(root: Path, n: int, *, obsidian: bool = False, seed: int = 18) -> None:
    """``n`` Markdown files of ~1 KB: ``pXXXX/fY/nZ.md`` (100 a folder, 1,000 a top folder)."""
    rng = random.Random(seed)
    for i in range(n):
        d = root / f"p{i // 1000:04d}" / f"f{(i // 100) % 10}"
        if i % 100 == 0:
            d.mkdir(parents=True, exist_ok=True)
        body = " ".join(rng.choices(_WORDS, k=150))[:900]
        if obsidian:
            text = (
                f"---\ntitle: Note {i}\ntags: [bench, g{i % 10}]\ncreated: 2024-01-0{1 + i % 9}\n"
                f"---\n# Note {i}\n\nSee [[n{(i * 7) % n}]] and [[n{(i * 13) % n}|this]]. {body}\n"
            )
        else:
            text = f"# Note {i}\n\n{body}\n"
        (d / f"n{i}.md").write_text(text)


def walk_stat(root: Path) -> float:
    """Seconds for ``os.walk`` + ``os.stat`` of every file under ``root``."""
    t0 = time.perf_counter()
    n = 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            os.stat(os.path.join(dirpath, f))
            n += 1
    return time.perf_counter() - t0


_CHILD = r"""
import json, os, sys, time
import cfstream as cf
from cfstream.sinks import LanceSink
from cfstream.sources import FilesSource, ObsidianSource
from cfstream.contract.state import StateStore

written = [0]
depth = [0]

def wchar():
    with open("/proc/self/io") as fh:
        for line in fh:
            if line.startswith("wchar:"):
                return int(line.split()[1])
    return 0

def counted(fn):
    def wrapper(*a, **k):
        if depth[0]:
            return fn(*a, **k)
        depth[0] += 1
        before = wchar()
        try:
            return fn(*a, **k)
        finally:
            written[0] += wchar() - before
            depth[0] -= 1
    return wrapper

for name in ("save_checkpoints", "mark_success", "check_scope", "update", "reset"):
    setattr(StateStore, name, counted(getattr(StateStore, name)))

kind, root, uri = sys.argv[1:4]
src = (ObsidianSource(vault_path=root) if kind == "obsidian" else FilesSource(path=root))
t0 = time.perf_counter()
report = cf.run(src | LanceSink(uri))
wall = time.perf_counter() - t0
s = report.sources[src.name]
print(json.dumps({
    "wall_s": wall,
    "state_bytes": written[0],
    "fetched": s.fetched,
    "unchanged": s.skipped_unchanged,
    "tombstones": s.tombstones,
    "rows": report.sink.dataset_rows,
    "error": report.error or s.error,
    "vm_hwm_kb": next(
        int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")
    ),
}))
"""


def sync(kind: str, root: Path, uri: Path) -> dict[str, Any]:
    """One sync in a child process: its figures plus its peak RSS in MB."""
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [here, env.get("PYTHONPATH")]))
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, kind, str(root), str(uri)],
            stdout=out,
            stderr=err,
            env=env,
        )
        _, status, _ = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"sync failed ({proc.returncode}): {err.read().decode()[-2000:]}")
        res: dict[str, Any] = json.loads(out.read().decode().strip().splitlines()[-1])
    # the child's own high-water mark: ru_maxrss from wait4 would also count the parent's image,
    # which Linux carries across fork + exec (see P2)
    res["peak_rss_mb"] = res.pop("vm_hwm_kb") / 1024
    if res.get("error"):
        raise RuntimeError(f"sync reported an error: {res['error']}")
    return res


def exponent(ns: Sequence[int], values: Sequence[float], floor: float = 1e-6) -> float | None:
    """Least-squares slope of log(value) over log(n) (values floored at ``floor`` for the log)."""
    if len(ns) < 2:
        return None
    xs = [math.log(n) for n in ns]
    ys = [math.log(max(v, floor)) for v in values]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else None


def run_size(kind: str, n: int, work: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """Build a tree of ``n`` files and measure the three syncs and the walk."""
    root = work / f"{kind}-{n}"
    uri = work / f"{kind}-{n}.lance"
    t0 = time.perf_counter()
    make_tree(root, n, obsidian=kind == "obsidian")
    log(f"  {kind} {n:,}: tree built in {time.perf_counter() - t0:.1f}s")
    walk_stat(root)  # warm the page cache as the syncs see it
    out: dict[str, Any] = {"n": n}
    out["full"] = sync(kind, root, uri)
    log(f"  full import  {out['full']['wall_s']:.2f}s  {out['full']['peak_rss_mb']:.0f} MB")
    out["walk_s"] = min(walk_stat(root) for _ in range(3))
    out["nochange"] = sync(kind, root, uri)
    nc = out["nochange"]
    out["nochange_over_walk"] = nc["wall_s"] / out["walk_s"]
    log(
        f"  no change    {nc['wall_s']:.2f}s  {nc['peak_rss_mb']:.0f} MB  "
        f"{nc['state_bytes']:,} B state  (walk {out['walk_s']:.2f}s, "
        f"x{out['nochange_over_walk']:.1f})"
    )
    changed = root / "p0000" / "f0" / "n1.md"
    changed.write_text(changed.read_text() + "\nchanged\n")
    (root / "p0000" / "f0" / "n2.md").unlink()
    out["one_change"] = sync(kind, root, uri)
    oc = out["one_change"]
    log(
        f"  1 chg + 1 del {oc['wall_s']:.2f}s  {oc['peak_rss_mb']:.0f} MB  "
        f"{oc['state_bytes']:,} B state  (fetched {oc['fetched']}, deleted {oc['tombstones']})"
    )
    if kind == "obsidian":
        # the same vault read as plain files, its no-change re-sync alternated with Obsidian's:
        # a paired ratio (the machine's load moves between scenarios, not within a pair)
        files_uri = work / f"files-of-{kind}-{n}.lance"
        sync("files", root, files_uri)
        pairs = [(sync("obsidian", root, uri)["wall_s"], sync("files", root, files_uri)["wall_s"])
                 for _ in range(3)]  # fmt: skip
        out["paired_nochange"] = {
            "obsidian_s": [a for a, _ in pairs],
            "files_s": [b for _, b in pairs],
            "ratio_median": sorted(a / b for a, b in pairs)[1],
        }
        log(f"  paired no-change Obsidian / files: {out['paired_nochange']['ratio_median']:.2f}")
        shutil.rmtree(files_uri, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(uri, ignore_errors=True)
    return out


FIGURES = ("wall_s", "peak_rss_mb", "state_bytes")
RUNS = ("full", "nochange", "one_change")


def run(
    sizes: Sequence[int],
    obsidian: int | None,
    *,
    log: Callable[[str], None] = print,
    work: Path | None = None,
) -> dict[str, Any]:
    """Measure every size (and the Obsidian vault); the results with exponents and targets."""
    own = work is None
    work = work or Path(tempfile.mkdtemp(prefix="cfstream-p8-"))
    try:
        rows = [run_size("files", n, work, log) for n in sizes]
        obs = run_size("obsidian", obsidian, work, log) if obsidian else None
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)
    ns = [r["n"] for r in rows]
    exps: dict[str, dict[str, float | None]] = {}
    for run_name in RUNS:
        for fig in FIGURES:
            floor = 1.0 if fig == "state_bytes" else 1e-6
            exps.setdefault(run_name, {})[fig] = exponent(
                ns, [r[run_name][fig] for r in rows], floor
            )
    exps["walk"] = {"wall_s": exponent(ns, [r["walk_s"] for r in rows])}
    out: dict[str, Any] = {"sizes": rows, "exponents": exps, "obsidian": obs}
    targets: list[dict[str, Any]] = []
    at = [r for r in rows if r["n"] == TARGET_AT] or rows[-1:]
    if at:
        r = at[0]
        targets.append(
            {
                "id": "P8.walk",
                "name": f"no-change re-sync / walk at {r['n']:,}",
                "value": r["nochange_over_walk"],
                "limit": TARGET_WALK_RATIO,
                "met": r["nochange_over_walk"] <= TARGET_WALK_RATIO,
            }
        )
        rss = r["nochange"]["peak_rss_mb"]
        targets.append(
            {
                "id": "P8.rss",
                "name": f"no-change re-sync peak RSS at {r['n']:,} (MB)",
                "value": rss,
                "limit": TARGET_RSS_MB,
                "met": rss <= TARGET_RSS_MB,
            }
        )
    worst = max((v for fig in exps.values() for v in fig.values() if v is not None), default=None)
    if worst is not None:
        targets.append(
            {
                "id": "P8.exponent",
                "name": "largest growth exponent",
                "value": worst,
                "limit": TARGET_EXPONENT,
                "met": worst <= TARGET_EXPONENT,
            }
        )
    if obs is not None:
        ratio = obs["paired_nochange"]["ratio_median"]
        out["obsidian_over_files_nochange"] = ratio
        targets.append(
            {
                "id": "P8.obsidian",
                "name": f"Obsidian / files no-change re-sync at {obsidian:,} "
                "(same vault, paired, median of 3)",
                "value": ratio,
                "limit": TARGET_OBSIDIAN_RATIO,
                "met": ratio <= TARGET_OBSIDIAN_RATIO,
            }
        )
    out["targets"] = targets
    return out


def markdown(res: dict[str, Any]) -> str:
    """The P8 table for benchmarks/README.md."""
    lines = [
        "| files | run | wall s | peak RSS MB | state bytes written | walk+stat s | run / walk |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in res["sizes"]:
        for name, label in (
            ("full", "full import"),
            ("nochange", "no change"),
            ("one_change", "1 changed, 1 deleted"),
        ):
            f = r[name]
            lines.append(
                f"| {r['n']:,} | {label} | {f['wall_s']:.2f} | {f['peak_rss_mb']:.0f} | "
                f"{f['state_bytes']:,} | {r['walk_s']:.2f} | {f['wall_s'] / r['walk_s']:.1f} |"
            )
    obs = res.get("obsidian")
    if obs is not None:
        for name, label in (
            ("full", "full import"),
            ("nochange", "no change"),
            ("one_change", "1 changed, 1 deleted"),
        ):
            f = obs[name]
            lines.append(
                f"| {obs['n']:,} (Obsidian) | {label} | {f['wall_s']:.2f} | {f['peak_rss_mb']:.0f} | "
                f"{f['state_bytes']:,} | {obs['walk_s']:.2f} | {f['wall_s'] / obs['walk_s']:.1f} |"
            )
    lines.append("")
    lines.append("Growth exponents (slope of log figure over log files):")
    lines.append("")
    lines.append("| run | wall | peak RSS | state bytes |")
    lines.append("|---|---:|---:|---:|")
    for name in RUNS:
        e = res["exponents"][name]
        cells = [f"{e[k]:.2f}" if e.get(k) is not None else "-" for k in FIGURES]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    walk = res["exponents"]["walk"]["wall_s"]
    lines.append(f"| walk + stat | {walk:.2f} | - | - |" if walk is not None else "")
    lines.append("")
    for t in res["targets"]:
        lines.append(
            f"- {t['name']}: {t['value']:.2f} (target <= {t['limit']}) "
            f"{'met' if t['met'] else 'NOT met'}"
        )
    return "\n".join(lines)


def plot(res: dict[str, Any], png: Path) -> None:
    """Wall time of each run and of the walk over N (log-log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = [r["n"] for r in res["sizes"]]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for name in RUNS:
        ax1.plot(ns, [r[name]["wall_s"] for r in res["sizes"]], marker="o", label=name)
        ax2.plot(ns, [r[name]["peak_rss_mb"] for r in res["sizes"]], marker="o", label=name)
    ax1.plot(ns, [r["walk_s"] for r in res["sizes"]], marker="x", ls="--", label="os.walk + stat")
    for ax, title in ((ax1, "wall seconds"), (ax2, "peak RSS, MB")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("files")
        ax.set_title(f"P8 files sync: {title}")
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_state", description=__doc__)
    ap.add_argument("--sizes", default="10000,50000,200000")
    ap.add_argument("--obsidian", type=int, default=50_000, help="0 to skip")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--plot", type=Path)
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    res = run(sizes, args.obsidian or None, log=lambda m: print(m, flush=True))
    print(markdown(res))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    if args.plot:
        plot(res, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
