"""What ``cfstream demo`` runs: an offline end-to-end sync of bundled sample data.

The demo syncs, into one dataset (``./demo.lance`` by default):

* the Obsidian vault ``cfstream/demo_data/vault/`` (an ``obsidian`` source) and docs folder
  ``cfstream/demo_data/docs/`` (a ``files`` source), shipped in the package so an installed
  cfstream runs the demo from any folder. Both are copied once into ``<dataset>/_cfstream/demo/``
  and read from there, so ``--change`` can edit the copy and the package's data is never modified;
* every HTTP connector that ships a fake service, served by one :class:`~cfstream.testing.FakeAPI`
  on 127.0.0.1. The fakes answer at once, so the demo lifts the connectors' proactive request
  rates for them (:data:`DEMO_RATE_OPTIONS`); a config against a real service keeps the
  connector's own defaults.

A fake service is a module ``cfstream.testing.fakes.<service>`` (``github``, ``linear``, ``notion``,
``slack``, ``discord``, ``google_drive``) with:

* ``mount(api: FakeAPI) -> object``: add the service's routes with deterministic sample data; the
  returned object (often the fake itself) is handed to ``demo_change``;
* ``demo_config(base_url: str) -> dict``: the source's options in a YAML config (``type`` defaults
  to the service name);
* optionally ``demo_change(mounted: object) -> list[str] | None``: edit some of the sample data
  (bump ``updated_at``, change a body) so that the next sync updates just those records.

The demo discovers whichever fakes exist, so it grows as connectors land. Running it again is an
incremental sync that reports zero new or updated records; ``--change`` edits some sample data
first, and only those records are written.
"""

from __future__ import annotations

import contextlib
import importlib
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

from cfstream.config import build_pipeline, parse_config
from cfstream.contract.report import RunReport
from cfstream.contract.uris import state_dir_for
from cfstream.engine.runner import RunControl, run_pipeline
from cfstream.engine.signals import route_signals
from cfstream.errors import CfStreamError, ConfigError
from cfstream.logs import get_logger
from cfstream.sources.registry import load_source_class
from cfstream.transforms.chunking import CHUNK_OF

__all__ = (
    "DEMO_RATE_OPTIONS",
    "HTTP_SERVICES",
    "DemoResult",
    "FakeService",
    "apply_file_changes",
    "demo_data_dir",
    "discover_fakes",
    "prepare_file_sources",
    "run_demo",
    "run_demo_async",
)

log = get_logger("cfstream.demo")

#: services whose fake the demo looks for, as ``cfstream.testing.fakes.<service>``
HTTP_SERVICES = ("github", "linear", "notion", "slack", "discord", "google_drive")

#: (source name, example folder, connector type) of the file-based demo sources
_FILE_SOURCES = (("vault", "vault", "obsidian"), ("docs", "docs", "files"))

_CHANGE_MARK = "Edited by `cfstream demo --change`"

#: the demo splits documents into chunks of about this many tokens and embeds them offline
DEMO_CHUNK_TOKENS = 256
#: what the demo searches for at the end (the vault's sourdough starter note should come first)
DEMO_QUERY = "my sourdough starter has grey liquid on top"


#: Request-rate options the demo sets on a connector talking to its local fake, where the
#: connector has the option and the fake's ``demo_config`` does not set it. The connectors' defaults
#: pace requests for the real services (Notion 3/s, Linear 1.3/s, Slack 20-100/min), which made
#: the offline demo wait ~15 s on an in-process fake that answers at once. The rate limiter still
#: runs; it only gets a budget the fake can take. Configs for real services are not affected.
DEMO_RATE_OPTIONS: dict[str, float] = {
    "requests_per_second": 500.0,
    "rate_per_second": 500.0,
    "burst": 50,
    "history_rate_per_minute": 30_000.0,
    "list_rate_per_minute": 30_000.0,
    "users_rate_per_minute": 30_000.0,
}


@dataclass(slots=True)
class FakeService:
    """A discovered fake: its service name and the module's hooks."""

    service: str
    mount: Callable[[Any], Any]
    demo_config: Callable[[str], dict[str, Any]]
    demo_change: Callable[[Any], Any] | None = None


@dataclass(slots=True)
class DemoResult:
    """What one demo run did, for the CLI to print."""

    report: RunReport
    dataset: str
    first_run: bool
    sources: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    updated_records: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: first run: per source, documents fetched more than once that the sink stored as one row
    #: (rows are keyed by a uuid of source type and id; e.g. Linear lists a project shared by
    #: two teams, and its documents, under each team)
    fetched_twice: dict[str, int] = field(default_factory=dict)
    #: rows written by this run: documents and chunks (the sink's counts cover both)
    documents_written: int = 0
    chunks_written: int = 0
    #: the search the demo ends with: the query and its best hits
    search_query: str = DEMO_QUERY
    search_hits: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the result."""
        return {
            "dataset": self.dataset,
            "first_run": self.first_run,
            "sources": self.sources,
            "skipped": self.skipped,
            "changed": self.changed,
            "samples": self.samples,
            "updated_records": self.updated_records,
            "notes": self.notes,
            "fetched_twice": self.fetched_twice,
            "documents_written": self.documents_written,
            "chunks_written": self.chunks_written,
            "search": {"query": self.search_query, "hits": self.search_hits},
            "report": self.report.to_dict(),
        }


def demo_data_dir() -> Path | None:
    """The package's ``demo_data`` folder holding the sample ``vault/`` and ``docs/`` (None when
    neither is there)."""
    candidate = Path(__file__).resolve().parent / "demo_data"
    if (candidate / "vault").is_dir() or (candidate / "docs").is_dir():
        return candidate
    return None


def discover_fakes(
    services: tuple[str, ...] = HTTP_SERVICES,
) -> tuple[list[FakeService], list[str]]:
    """The fake services that exist (importable, with ``mount`` and ``demo_config``), and the rest."""
    found: list[FakeService] = []
    missing: list[str] = []
    for service in services:
        try:
            module = importlib.import_module(f"cfstream.testing.fakes.{service}")
        except ImportError as exc:
            if exc.name is not None and exc.name.startswith("cfstream.testing.fakes"):
                missing.append(service)
                continue
            raise
        mount = getattr(module, "mount", None)
        demo_config = getattr(module, "demo_config", None)
        if not callable(mount) or not callable(demo_config):
            log.warning(
                "cfstream.testing.fakes.%s has no mount()/demo_config(); left out of the demo",
                service,
            )
            missing.append(service)
            continue
        change = getattr(module, "demo_change", None)
        found.append(FakeService(service, mount, demo_config, change if callable(change) else None))
    return found, missing


def _with_demo_rates(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` plus the :data:`DEMO_RATE_OPTIONS` its connector has and that it leaves unset."""
    model = getattr(load_source_class(str(options["type"])), "config_model", None)
    fields = model.model_fields if model is not None else {}
    extra = {k: v for k, v in DEMO_RATE_OPTIONS.items() if k in fields and k not in options}
    return {**options, **extra}


def _folder_option(type_name: str) -> str | None:
    """The option naming the folder of a file-based connector (``vault_path``, ``path``, ``root``)."""
    try:
        cls = load_source_class(type_name)
    except ConfigError:
        return None
    model = getattr(cls, "config_model", None)
    fields = list(model.model_fields) if model is not None else []
    for name in ("vault_path", "path", "root", "folder", "directory"):
        if name in fields:
            return name
    return None


def prepare_file_sources(dataset: Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Copy the sample folders under ``<dataset>/_cfstream/demo/`` (once) and return their sources.

    Returns the ``sources:`` entries and the names left out (no sample folder or no connector yet).
    """
    data = demo_data_dir()
    demo_dir = state_dir_for(str(dataset)) / "demo"
    sources: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    for name, folder, type_name in _FILE_SOURCES:
        option = _folder_option(type_name)
        src = data / folder if data is not None else None
        if option is None or src is None or not src.is_dir():
            skipped.append(f"{name} ({type_name})")
            continue
        target = demo_dir / folder
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(src, target)
        sources[name] = {"type": type_name, option: str(target)}
    return sources, skipped


def apply_file_changes(dataset: Path, count: int = 2) -> list[str]:
    """Edit ``count`` notes of each sample folder copy, deterministically; return what was edited.

    The first ``count`` markdown files (by sorted path) get a numbered "edited" line, so each
    ``--change`` changes their content again and nothing else.
    """
    demo_dir = state_dir_for(str(dataset)) / "demo"
    counter = demo_dir / "changes"
    n = int(counter.read_text()) + 1 if counter.exists() else 1
    edited: list[str] = []
    for _name, folder, _type in _FILE_SOURCES:
        root = demo_dir / folder
        if not root.is_dir():
            continue
        files = sorted(
            p
            for p in root.rglob("*.md")
            if not any(part.startswith(".") for part in p.relative_to(root).parts)
        )
        for path in files[:count]:
            text = path.read_text(encoding="utf-8")
            keep = text.split(f"\n\n{_CHANGE_MARK}", 1)[0].rstrip("\n")
            path.write_text(f"{keep}\n\n{_CHANGE_MARK} (change #{n}).\n", encoding="utf-8")
            edited.append(f"{folder}/{path.relative_to(root).as_posix()}")
    if edited:
        counter.parent.mkdir(parents=True, exist_ok=True)
        counter.write_text(str(n))
    return edited


def _is_chunk(row: dict[str, Any]) -> bool:
    return any(m.get("key") == CHUNK_OF for m in row.get("custom_metadata") or ())


def _read_records(
    dataset: str, since: datetime | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """Three sample records (one per source type first), the records (not chunks) written since
    ``since`` (every one when None), and the number of chunk rows written since then."""
    import lance

    try:
        ds = lance.dataset(dataset)
    except (OSError, ValueError):
        return [], [], 0
    cols = [
        "title",
        "source_type",
        "collection",
        "text_content",
        "relationships",
        "ingested_at",
        "record_type",
        "custom_metadata",
    ]
    rows = ds.to_table(columns=cols).to_pylist()
    chunks_written = sum(
        1
        for r in rows
        if _is_chunk(r) and (since is None or (r["ingested_at"] and r["ingested_at"] >= since))
    )
    rows = [r for r in rows if not _is_chunk(r)]

    def links(r: dict[str, Any]) -> int:
        return sum(1 for rel in r["relationships"] or [] if rel.get("type") == "reference")

    # the vault note with the most wikilinks first: it shows resolved link relationships
    rows.sort(
        key=lambda r: (
            r["source_type"] != "obsidian",
            -links(r),
            r["source_type"] or "",
            r["record_type"] != "document",
            r["title"] or "",
        )
    )
    samples: list[dict[str, Any]] = []
    seen_types: set[str] = set()
    picked: set[int] = set()
    for prefer_new_type in (True, False):
        for i, r in enumerate(rows):
            if len(samples) == 3:
                break
            if i in picked or (
                prefer_new_type
                and (r["source_type"] in seen_types or r["record_type"] != "document")
            ):
                continue
            picked.add(i)
            seen_types.add(r["source_type"])
            rels = r["relationships"] or []
            text = " ".join((r["text_content"] or "").split())
            samples.append(
                {
                    "title": r["title"],
                    "source_type": r["source_type"],
                    "collection": r["collection"],
                    "relationships": ", ".join(
                        f"{rel.get('type')} -> {rel.get('title') or rel.get('id')}"
                        for rel in rels[:4]
                    ),
                    "text": text[:100] + ("..." if len(text) > 100 else ""),
                }
            )
    updated: list[dict[str, Any]] = []
    for r in rows:
        ts = r["ingested_at"]
        if since is None or (ts is not None and ts >= since):
            updated.append({"title": r["title"], "source_type": r["source_type"]})
    return samples, updated, chunks_written


def _fetched_twice(dataset: str, report: RunReport) -> dict[str, int]:
    """Per source, how many more documents it fetched than the dataset holds rows of its type.

    Meaningful after a complete first run into a new dataset where each source has its own
    ``source_type`` (the demo's case): the difference is records fetched more than once.
    """
    import lance

    try:
        table = lance.dataset(dataset).to_table(columns=["source_type", "custom_metadata"])
    except (OSError, ValueError):
        return {}
    rows: dict[str, int] = {}
    for r in table.to_pylist():
        if not _is_chunk(r):
            rows[r["source_type"]] = rows.get(r["source_type"], 0) + 1
    out: dict[str, int] = {}
    for name, stats in report.sources.items():
        extra = stats.fetched - stats.failed - rows.get(stats.source_type, 0)
        if extra > 0:
            out[name] = extra
    return out


async def _run(dataset: Path, change: bool, control: RunControl) -> DemoResult:
    first_run = not (dataset / "_versions").exists()
    notes: list[str] = []
    file_sources, skipped = prepare_file_sources(dataset)
    changed: list[str] = []
    if change:
        if first_run:
            notes.append(
                "first run: the sample data is imported as it is; --change edits it next time"
            )
        else:
            changed.extend(apply_file_changes(dataset))
    fakes, missing = discover_fakes()
    skipped.extend(missing)
    async with contextlib.AsyncExitStack() as stack:
        sources = dict(file_sources)
        if fakes:
            from cfstream.testing import FakeAPI

            api = await stack.enter_async_context(FakeAPI())
            for fake in fakes:
                options = dict(fake.demo_config(str(api.url)))
                options.setdefault("type", fake.service)
                try:
                    load_source_class(str(options["type"]))
                except ConfigError:  # the fake landed before its connector
                    skipped.append(f"{fake.service} (no connector yet)")
                    continue
                mounted = fake.mount(api)
                sources[fake.service] = _with_demo_rates(options)
                if change and not first_run and fake.demo_change is not None:
                    edits = fake.demo_change(mounted)
                    changed.extend(f"{fake.service}: {e}" for e in (edits or ()))
        if not sources:
            raise CfStreamError(
                "the demo found no sample data: expected cfstream/demo_data/vault or "
                "cfstream/demo_data/docs with the obsidian/files connectors, or fakes under "
                "cfstream.testing.fakes; reinstall cfstream (pip install --force-reinstall)"
            )
        config = parse_config(
            {
                "dataset": str(dataset),
                "sink": {"max_latency": 2.0},
                "pipeline": [
                    {"validate": {}},
                    {"chunk": {"max_tokens": DEMO_CHUNK_TOKENS, "overlap": 32}},
                    {"embed": {"provider": "local"}},
                ],
                "sources": sources,
            },
            filename="<demo>",
        )
        started = datetime.now(UTC)
        t0 = time.perf_counter()
        report = await run_pipeline(build_pipeline(config), control=control)
        log.debug("demo sync took %.2fs", time.perf_counter() - t0)
    samples, updated, chunks_written = _read_records(str(dataset), None if first_run else started)
    hits = _search(str(dataset), notes)
    twice = (
        _fetched_twice(str(dataset), report)
        if first_run and not report.stopped_early and not report.dead_lettered
        else {}
    )
    return DemoResult(
        report=report,
        dataset=str(dataset),
        first_run=first_run,
        sources=sorted(sources),
        skipped=skipped,
        changed=changed,
        samples=samples,
        updated_records=[] if first_run else updated,
        notes=notes,
        fetched_twice=twice,
        documents_written=len(updated),
        chunks_written=chunks_written,
        search_hits=hits,
    )


def _search(dataset: str, notes: list[str]) -> list[dict[str, Any]]:
    """The demo's closing search (:data:`DEMO_QUERY`): its three best hits."""
    from cfstream.search import search

    try:
        hits = search(dataset, DEMO_QUERY, k=3, mode="hybrid")
    except CfStreamError as exc:
        notes.append(f"the closing search failed: {exc}")
        return []
    out = []
    for h in hits:
        text = " ".join((h.text or "").split())
        out.append(
            {
                "title": h.title,
                "source_type": h.source_type,
                "source_id": h.source_id,
                "score": round(h.score, 4),
                "text": text[:100] + ("..." if len(text) > 100 else ""),
            }
        )
    return out


async def run_demo_async(
    dataset: str | Path = "demo.lance", *, change: bool = False, control: RunControl | None = None
) -> DemoResult:
    """Sync the bundled sample data into ``dataset`` (offline) inside a running event loop.

    ``change`` edits some of the data first; ``control`` stops the sync (``request_stop``: what
    is committed stays and its cursors are saved). Installs no signal handler: the caller does
    (``cfstream demo`` routes SIGINT/SIGTERM to ``control`` as ``cfstream sync`` does).
    """
    path = Path(await anyio.Path(dataset).resolve())
    return await _run(path, change, control or RunControl())


def run_demo(dataset: str | Path = "demo.lance", *, change: bool = False) -> DemoResult:
    """Sync the bundled sample data into ``dataset`` (offline); ``change`` edits some of it first.

    Ctrl-C stops the sync gracefully (what is committed stays, cursors are saved).
    """
    path = Path(dataset).resolve()
    control = RunControl()

    async def main() -> DemoResult:
        with route_signals(control.request_stop, (signal.SIGINT,)):
            return await _run(path, change, control)

    return anyio.run(main, backend="asyncio")
