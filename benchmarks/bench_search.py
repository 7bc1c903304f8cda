"""P6 / P7 / retrieval / embedding memory: what making a dataset searchable costs and finds.

- **P6 embedding pipeline**: documents through ``T.chunk -> T.embed(local) -> LanceSink``, against
  the same embedder called directly in a batched loop on the same chunk texts (read back from the
  dataset afterwards). Two corpora: the bundled demo vault's size and a synthetic corpus of about
  ``--chunks`` chunks. Rounds are interleaved (cfstream, loop, cfstream, loop, ...) and the ratio
  (loop seconds / cfstream seconds) is taken round by round; the median is reported.
- **P7 incremental**: a ``files`` source over a synthetic Markdown folder is imported with chunking
  and embedding, then 1% of the files are edited and it is synced again (three times, a different
  1% each time). Reported: the share of all chunks sent to the embedder by a re-sync (its calls are
  counted by a wrapper around the embedder) and the re-sync's time over the full import's.
- **Retrieval quality**: the bundled vault and docs are imported with chunking and embedding, then
  the labelled queries of ``benchmarks/retrieval_queries.json`` are run in ``fts``, ``vector`` and
  ``hybrid`` mode: recall@5 and MRR (a hit counts when its document is one of the expected ones).
- **Memory with embedding on**: peak RSS (the child's ``VmHWM``) of an import of N generated
  documents through chunk and embed, N small and 10x that, each in a fresh process.

    python -m benchmarks.bench_search [--quick] [--only P6,P7,RETRIEVAL,MEM] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
QUERIES = Path(__file__).resolve().parent / "retrieval_queries.json"
DEMO_VAULT = ROOT / "cfstream" / "demo_data" / "vault"

#: targets of issue 17
TARGET_P6_RATIO = 0.85
TARGET_P7_EMBEDDED = 0.015
TARGET_P7_TIME = 0.05
TARGET_MEM_GROWTH = 1.2

MAX_TOKENS = 256
OVERLAP = 32
BATCH = 256

_WORDS = [
    "river",
    "stone",
    "bread",
    "flour",
    "yeast",
    "garden",
    "tomato",
    "compost",
    "ferment",
    "salt",
    "acid",
    "heat",
    "oven",
    "crumb",
    "crust",
    "starter",
    "hydration",
    "knead",
    "proof",
    "shape",
    "bake",
    "cool",
    "slice",
    "jar",
    "brine",
    "cabbage",
    "pepper",
    "garlic",
    "onion",
    "basil",
    "thyme",
    "season",
    "harvest",
    "soil",
    "water",
    "light",
    "shade",
    "seed",
    "sprout",
    "leaf",
    "root",
    "branch",
    "bloom",
    "fruit",
    "lance",
    "arrow",
    "stream",
    "batch",
    "cursor",
    "commit",
    "merge",
    "index",
    "vector",
    "query",
    "search",
    "chunk",
    "embed",
    "token",
]


def _paragraph(rng: random.Random, words: int) -> str:
    sentences = []
    left = words
    while left > 0:
        n = min(left, rng.randint(8, 18))
        s = " ".join(rng.choices(_WORDS, k=n))
        sentences.append(s[0].upper() + s[1:] + ".")
        left -= n
    return " ".join(sentences)


def markdown_doc(i: int, rng: random.Random, sections: int = 4) -> str:
    """A Markdown document with ``sections`` headed sections of ~200 words each."""
    parts = [f"# Note {i}\n"]
    for s in range(sections):
        parts.append(f"## Part {s}\n\n{_paragraph(rng, 110)}\n\n{_paragraph(rng, 90)}\n")
    return "\n".join(parts)


class CountingEmbedder:
    """Wraps an embedder and counts the texts sent to it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.texts = 0
        self.calls = 0

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.texts += len(texts)
        self.calls += 1
        out: np.ndarray = await self.inner.embed(texts)
        return out


def local_embedder() -> Any:
    from cfstream.embed import LocalEmbedder

    return LocalEmbedder()


def _pipeline(src: Any, uri: Path, embedder: Any, *, index: bool = True) -> Any:
    """``src | chunk | embed | LanceSink``; ``index=False``: the sink keeps no search index
    (P6 measures the stream; the index build at the end of a sync is timed on its own)."""
    from cfstream import transforms as T
    from cfstream.sinks import LanceSink

    return (
        src
        | T.chunk(max_tokens=MAX_TOKENS, overlap=OVERLAP)
        | T.embed(embedder, batch_size=BATCH)
        | LanceSink(str(uri), index=None if index else False)
    )


def _index_seconds(uri: Path) -> float:
    """Seconds to build the search indexes a sync would build for ``uri`` (FTS and vectors)."""
    import lance

    from cfstream.sinks.indexes import IndexSettings, refresh_indexes

    t0 = time.perf_counter()
    refresh_indexes(lance.dataset(str(uri)), IndexSettings(fts=True), search_wanted=True)
    return time.perf_counter() - t0


def _memory_source(docs: Sequence[tuple[str, str]]) -> Any:
    import cfstream as cf

    @cf.source(source_type="bench")
    async def corpus() -> AsyncIterator[cf.Document]:
        for sid, text in docs:
            yield cf.Document(source_id=sid, title=sid, text_content=text)

    return corpus(name="bench")


def _chunk_texts(uri: Path) -> list[str]:
    """The texts of every row with a vector (the chunks the pipeline embedded; rows without one,
    the chunked documents, hold zeros)."""
    import lance

    tbl = lance.dataset(str(uri)).to_table(columns=["text_content", "vector"])
    vec = tbl.column("vector").combine_chunks()
    dim = vec.type.list_size
    flat = vec.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
    embedded = np.flatnonzero(np.any(flat != 0, axis=1))
    texts = tbl.column("text_content").to_pylist()
    return [texts[i] for i in embedded if texts[i]]


def _loop(embedder: Any, texts: Sequence[str], batch: int = BATCH) -> float:
    """Seconds to embed ``texts`` with ``embedder`` directly, ``batch`` at a time."""

    async def go() -> None:
        for i in range(0, len(texts), batch):
            await embedder.embed(texts[i : i + batch])

    t0 = time.perf_counter()
    anyio.run(go)
    return time.perf_counter() - t0


def _run(pipeline: Any) -> tuple[float, Any]:
    import cfstream as cf

    t0 = time.perf_counter()
    report = cf.run(pipeline)
    wall = time.perf_counter() - t0
    if report.error:
        raise RuntimeError(f"the benchmark's run failed: {report.error}")
    return wall, report


def p6_corpus(
    label: str,
    docs: Sequence[tuple[str, str]],
    work: Path,
    rounds: int,
    embedder: Any,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Interleaved rounds of the pipeline and the direct loop over one corpus."""
    cf_s: list[float] = []
    loop_s: list[float] = []
    chunks = 0
    index_s = 0.0
    for r in range(rounds):
        uri = work / f"p6-{label}-{r}.lance"
        wall, _ = _run(_pipeline(_memory_source(docs), uri, embedder, index=False))
        texts = _chunk_texts(uri)
        chunks = len(texts)
        if r == 0:
            index_s = _index_seconds(uri)
        shutil.rmtree(uri, ignore_errors=True)
        cf_s.append(wall)
        loop_s.append(_loop(embedder, texts))
        log(
            f"  P6 {label} round {r}: cfstream {wall:.2f}s, loop {loop_s[-1]:.2f}s ({chunks:,} chunks)"
        )
    ratios = [b / a for a, b in zip(cf_s, loop_s, strict=True)]
    return {
        "docs": len(docs),
        "chunks": chunks,
        "cfstream_s": cf_s,
        "loop_s": loop_s,
        "ratios": ratios,
        "ratio_median": statistics.median(ratios),
        "index_build_s": index_s,
        "chunks_per_s_median": chunks / statistics.median(cf_s),
    }


def p6(chunks: int, rounds: int, work: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """P6 over the bundled vault's size and a synthetic corpus of about ``chunks`` chunks."""
    embedder = local_embedder()
    _loop(embedder, ["warm the model up"])
    vault = [
        (str(p.relative_to(DEMO_VAULT)), p.read_text(encoding="utf-8"))
        for p in sorted(DEMO_VAULT.rglob("*.md"))
        if not any(part.startswith(".") for part in p.relative_to(DEMO_VAULT).parts)
    ]
    rng = random.Random(6)
    # one ~4-section document gives about 4 chunks of MAX_TOKENS
    synthetic = [(f"doc-{i}", markdown_doc(i, rng)) for i in range(max(1, chunks // 4))]
    return {
        "vault": p6_corpus("vault", vault, work, rounds, embedder, log),
        "synthetic": p6_corpus("synthetic", synthetic, work, rounds, embedder, log),
    }


def make_folder(root: Path, n: int, seed: int = 7) -> list[Path]:
    """``n`` Markdown files (folders of 100) of about 4 chunks each."""
    rng = random.Random(seed)
    paths = []
    for i in range(n):
        d = root / f"f{i // 100:04d}"
        if i % 100 == 0:
            d.mkdir(parents=True, exist_ok=True)
        p = d / f"n{i}.md"
        p.write_text(markdown_doc(i, rng))
        paths.append(p)
    return paths


def p7(docs: int, rounds: int, work: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """P7: full import of a folder with chunk + embed, then re-syncs after 1% of files changed."""
    from cfstream.sources import FilesSource

    root = work / "p7"
    uri = work / "p7.lance"
    paths = make_folder(root, docs)
    counting = CountingEmbedder(local_embedder())
    _loop(counting.inner, ["warm the model up"])
    full_s, _ = _run(_pipeline(FilesSource(path=str(root)), uri, counting))
    total_chunks = counting.texts
    log(f"  P7 full import: {full_s:.2f}s, {total_chunks:,} chunks embedded")
    rng = random.Random(77)
    resyncs = []
    for r in range(rounds):
        changed = rng.sample(paths, max(1, docs // 100))
        for p in changed:
            p.write_text(p.read_text() + f"\n## Edit {r}\n\n{_paragraph(rng, 40)}\n")
        counting.texts = 0
        wall, report = _run(_pipeline(FilesSource(path=str(root)), uri, counting))
        resyncs.append({"changed_docs": len(changed), "wall_s": wall, "embedded": counting.texts})
        log(f"  P7 re-sync {r}: {wall:.2f}s, {counting.texts:,} chunks embedded")
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(uri, ignore_errors=True)
    return {
        "docs": docs,
        "chunks": total_chunks,
        "full_s": full_s,
        "resyncs": resyncs,
        "embedded_fraction_median": statistics.median(
            x["embedded"] / total_chunks for x in resyncs
        ),
        "time_ratio_median": statistics.median(x["wall_s"] / full_s for x in resyncs),
    }


def retrieval(work: Path, log: Callable[[str], None], k: int = 5) -> dict[str, Any]:
    """recall@k and MRR of fts, vector and hybrid search over the labelled corpora (the bundled
    vault, the demo docs and docs/), chunked and embedded with the local embedder.

    A hit matches an expected document when its parent uuid is the document's (the uuid of
    (corpus name, connector type, path)): chunks count for the document they belong to.
    """
    import cfstream as cf
    from cfstream.records import record_uuid
    from cfstream.sources import FilesSource, ObsidianSource

    labelled = json.loads(QUERIES.read_text(encoding="utf-8"))
    corpora, queries = labelled["corpora"], labelled["queries"]
    uri = work / "retrieval.lance"
    embedder = local_embedder()
    for name, corpus in corpora.items():
        folder = str(ROOT / corpus["path"])
        src = (
            ObsidianSource(vault_path=folder, name=name)
            if corpus["type"] == "obsidian"
            else FilesSource(path=folder, name=name)
        )
        _run(_pipeline(src, uri, embedder))
    out: dict[str, Any] = {"queries": len(queries), "k": k, "modes": {}}
    for mode in ("fts", "vector", "hybrid"):
        recalls, rrs = [], []
        for q in queries:
            expected = {
                record_uuid(corpora[e["corpus"]]["type"], e["source_id"], source_name=e["corpus"])
                for e in q["expected"]
            }
            hits = cf.search(str(uri), q["query"], k=k, mode=mode, embedder=embedder)
            found = [h.parent_uuid for h in hits]
            recalls.append(len(expected & set(found)) / len(expected))
            rrs.append(next((1 / (i + 1) for i, f in enumerate(found) if f in expected), 0.0))
        out["modes"][mode] = {
            f"recall@{k}": statistics.fmean(recalls),
            "mrr": statistics.fmean(rrs),
        }
        log(f"  retrieval {mode}: recall@{k} {out['modes'][mode][f'recall@{k}']:.2f}, "
            f"MRR {out['modes'][mode]['mrr']:.2f}")  # fmt: skip
    shutil.rmtree(uri, ignore_errors=True)
    return out


_MEM_CHILD = r"""
import json, random, sys, time
import cfstream as cf
from cfstream import transforms as T
from cfstream.embed import LocalEmbedder
from cfstream.sinks import LanceSink
from benchmarks.bench_search import _paragraph

n, uri = int(sys.argv[1]), sys.argv[2]
index = None if sys.argv[3] == "index" else False

@cf.source(source_type="bench")
async def corpus():
    rng = random.Random(3)
    for i in range(n):
        yield cf.Document(source_id=f"d{i}", title=f"Doc {i}", text_content=_paragraph(rng, 120))

t0 = time.perf_counter()
report = cf.run(corpus(name="bench") | T.chunk(max_tokens=256, overlap=32)
                | T.embed(LocalEmbedder(), batch_size=256) | LanceSink(uri, index=index))
print(json.dumps({
    "wall_s": time.perf_counter() - t0,
    "error": report.error,
    "vm_hwm_kb": next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")),
}))
"""


def memory(sizes: Sequence[int], work: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """Peak RSS of an import with chunk + embed at each size, each in a fresh process. The sink
    keeps no search index here: the stream is measured (a first sync's index build at its end
    needs memory in proportion to the rows it indexes; see docs/search.md)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    out: dict[str, Any] = {"sizes": []}
    for n in sizes:
        uri = work / f"mem-{n}.lance"
        proc = subprocess.run(
            [sys.executable, "-c", _MEM_CHILD, str(n), str(uri), "stream"],
            capture_output=True,
            text=True,
            env=env,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"memory run failed: {proc.stderr[-2000:]}")
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        if res.get("error"):
            raise RuntimeError(f"memory run reported an error: {res['error']}")
        res["peak_rss_mb"] = res.pop("vm_hwm_kb") / 1024
        res["docs"] = n
        out["sizes"].append(res)
        log(f"  memory {n:,} docs: {res['peak_rss_mb']:.0f} MB peak, {res['wall_s']:.1f}s")
        shutil.rmtree(uri, ignore_errors=True)
    first, last = out["sizes"][0], out["sizes"][-1]
    out["growth"] = last["peak_rss_mb"] / first["peak_rss_mb"]
    return out


def targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of issue 17 present in ``res``: id, name, value, op, limit."""
    out = []
    if "P6" in res:
        for corpus in ("vault", "synthetic"):
            out.append({
                "id": f"P6.{corpus}",
                "name": f"P6 {corpus}: loop time / pipeline time",
                "value": res["P6"][corpus]["ratio_median"],
                "op": ">=",
                "limit": TARGET_P6_RATIO,
            })  # fmt: skip
    if "P7" in res:
        out.append({"id": "P7.embedded", "name": "P7 re-sync after 1% changed: share of chunks embedded",
                    "value": res["P7"]["embedded_fraction_median"], "op": "<=", "limit": TARGET_P7_EMBEDDED})  # fmt: skip
        out.append({"id": "P7.time", "name": "P7 re-sync time / full import time",
                    "value": res["P7"]["time_ratio_median"], "op": "<=", "limit": TARGET_P7_TIME})  # fmt: skip
    if "MEM" in res:
        out.append({"id": "MEM.growth", "name": "peak RSS with embedding: 10x documents / 1x",
                    "value": res["MEM"]["growth"], "op": "<=", "limit": TARGET_MEM_GROWTH})  # fmt: skip
    for t in out:
        t["met"] = t["value"] >= t["limit"] if t["op"] == ">=" else t["value"] <= t["limit"]
    return out


def markdown(res: dict[str, Any]) -> str:
    """The figures as Markdown tables (for benchmarks/README.md and closing notes)."""
    lines = []
    if "P6" in res:
        lines += ["| P6 corpus | docs | chunks | cfstream s (median) | loop s (median) | loop/cfstream | index build s |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for corpus in ("vault", "synthetic"):
            c = res["P6"][corpus]
            lines.append(
                f"| {corpus} | {c['docs']:,} | {c['chunks']:,} | {statistics.median(c['cfstream_s']):.2f} "
                f"| {statistics.median(c['loop_s']):.2f} | {c['ratio_median']:.2f} | {c['index_build_s']:.1f} |"
            )
        lines.append("")
    if "P7" in res:
        p = res["P7"]
        lines += [f"P7: {p['docs']:,} files, {p['chunks']:,} chunks, full import {p['full_s']:.2f} s; "
                  f"re-syncs after 1% changed embed {p['embedded_fraction_median']:.2%} of the chunks "
                  f"in {p['time_ratio_median']:.1%} of the full import's time (median of "
                  f"{len(p['resyncs'])}).", ""]  # fmt: skip
    if "RETRIEVAL" in res:
        r = res["RETRIEVAL"]
        k = r["k"]
        lines += [f"| mode ({r['queries']} queries) | recall@{k} | MRR |", "|---|---|---|"]
        for mode, m in r["modes"].items():
            lines.append(f"| {mode} | {m[f'recall@{k}']:.2f} | {m['mrr']:.2f} |")
        lines.append("")
    if "MEM" in res:
        m = res["MEM"]
        sizes = ", ".join(f"{s['docs']:,} docs {s['peak_rss_mb']:.0f} MB" for s in m["sizes"])
        lines += [f"Memory with chunk + embed: {sizes} (growth {m['growth']:.2f}).", ""]
    for t in res.get("targets", []):
        lines.append(f"- {t['name']}: {t['value']:.3f} (target {t['op']} {t['limit']}) "
                     f"{'met' if t['met'] else 'MISSED'}")  # fmt: skip
    return "\n".join(lines)


def plot(res: dict[str, Any], png: Path) -> None:
    """Bar charts: P6 ratios, P7 shares, retrieval scores."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    if "P6" in res:
        names = ["vault", "synthetic"]
        axes[0].bar(names, [res["P6"][n]["ratio_median"] for n in names])
        axes[0].axhline(TARGET_P6_RATIO, color="red", linestyle="--")
        axes[0].set_title("P6 loop time / pipeline time")
    if "P7" in res:
        p = res["P7"]
        axes[1].bar(
            ["chunks embedded", "time"], [p["embedded_fraction_median"], p["time_ratio_median"]]
        )
        axes[1].set_title("P7 re-sync after 1% changed (share of full)")
    if "RETRIEVAL" in res:
        modes = list(res["RETRIEVAL"]["modes"])
        k = res["RETRIEVAL"]["k"]
        xs = np.arange(len(modes))
        axes[2].bar(
            xs - 0.2,
            [res["RETRIEVAL"]["modes"][m][f"recall@{k}"] for m in modes],
            0.4,
            label=f"recall@{k}",
        )
        axes[2].bar(
            xs + 0.2, [res["RETRIEVAL"]["modes"][m]["mrr"] for m in modes], 0.4, label="MRR"
        )
        axes[2].set_xticks(xs, modes)
        axes[2].legend()
        axes[2].set_title("retrieval")
    fig.tight_layout()
    fig.savefig(png)


def run(
    *,
    quick: bool = False,
    only: Sequence[str] = ("P6", "P7", "RETRIEVAL", "MEM"),
    rounds: int = 3,
    log: Callable[[str], None] = print,
    work: Path | None = None,
    mem_sizes: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Run the scenarios in ``only``; return their figures and targets."""
    own = work is None
    work = Path(tempfile.mkdtemp(prefix="cfstream-search-")) if work is None else work
    res: dict[str, Any] = {"quick": quick}
    try:
        if "P6" in only:
            res["P6"] = p6(4_000 if quick else 100_000, rounds, work, log)
        if "P7" in only:
            res["P7"] = p7(500 if quick else 10_000, rounds, work, log)
        if "RETRIEVAL" in only:
            res["RETRIEVAL"] = retrieval(work, log)
        if "MEM" in only:
            res["MEM"] = memory(
                mem_sizes or ((5_000, 50_000) if quick else (100_000, 1_000_000)), work, log
            )
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)
    res["targets"] = targets(res)
    return res


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10x smaller")
    ap.add_argument("--only", default="P6,P7,RETRIEVAL,MEM")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mem-sizes", help="documents of the two memory runs, e.g. 100000,1000000")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--plot", type=Path)
    args = ap.parse_args(argv)
    mem = tuple(int(x) for x in args.mem_sizes.split(",")) if args.mem_sizes else None
    res = run(quick=args.quick, only=args.only.split(","), rounds=args.rounds, mem_sizes=mem)
    print(markdown(res))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    if args.plot:
        plot(res, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
