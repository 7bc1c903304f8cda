"""The ``cfstream`` command: ``sync``, ``status``, ``watch``, ``search``, ``validate``, ``sources``
and ``demo``.

This is the only module that prints for people or reads the process environment. Exit codes:

====  =========================================================================================
0     success
1     failure (every source failed, the dataset could not be written, another process is busy)
2     bad config or usage
3     partial success: some records were dead-lettered, some items failed for a transient reason
      (fetched again by the next run), or some sources or partitions failed while others worked
130   stopped by Ctrl-C before the end (what was committed is kept, cursors are saved)
====  =========================================================================================
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import errno
import importlib
import inspect
import json
import logging
import os
import sys
import time
import traceback
import typing
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import anyio

from cfstream import __version__
from cfstream.config import (
    Config,
    SinkSettings,
    SourceSpec,
    build_pipeline,
    build_sink,
    build_source,
    build_stages,
    is_secret_annotation,
    load_config,
    parse_duration,
    select_sources,
)
from cfstream.contract.deadletter import read_dead_letters
from cfstream.contract.report import RunReport, SourceStats
from cfstream.contract.state import StateStore
from cfstream.contract.uris import dataset_exists, local_path, state_dir_for
from cfstream.engine.pipeline import Pipeline
from cfstream.engine.runner import RunControl, http_client_for, run_pipeline
from cfstream.engine.schedule import Scheduled, Scheduler, WatchOptions
from cfstream.engine.signals import graceful_stopper, route_signals
from cfstream.errors import CfStreamError, ConfigError
from cfstream.logs import get_logger
from cfstream.secrets import SecretRedactingFilter, redact
from cfstream.sources.registry import available_sources, load_source_class
from cfstream.starter import PLACEHOLDER, read_dotenv, starter_files

__all__ = (
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_STOPPED",
    "EXIT_USAGE",
    "exit_code",
    "main",
)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3
EXIT_STOPPED = 130

log = get_logger("cfstream.cli")


# ------------------------------------------------------------------------------------------------
# output helpers
# ------------------------------------------------------------------------------------------------
def _out(text: str = "", *, file: TextIO | None = None) -> None:
    stream = file or sys.stdout
    stream.write(redact(text) + "\n")
    stream.flush()


def _err(text: str) -> None:
    _out(text, file=sys.stderr)


def _json(data: Any) -> str:
    return redact(json.dumps(data, default=str, sort_keys=False))


def _ts(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return dt.datetime.fromtimestamp(epoch, tz=dt.UTC).isoformat(timespec="seconds")


def exit_code(report: RunReport) -> int:
    """The exit code a run report deserves (see the module docstring)."""
    if report.error:
        return EXIT_FAILURE
    failed = report.failed_sources
    whole = [n for n in failed if n not in report.partly_failed_sources]
    if whole and len(whole) == len(report.sources):
        return EXIT_FAILURE
    if failed or report.dead_lettered or report.retry_next_run:
        return EXIT_PARTIAL
    if report.stopped_early:
        return EXIT_STOPPED
    return EXIT_OK


# ------------------------------------------------------------------------------------------------
# logging
# ------------------------------------------------------------------------------------------------
class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, tz=dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        if record.exc_info:
            data["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(data)


def _setup_logging(level: str, fmt: str, quiet: bool, console: Any = None) -> None:
    root = logging.getLogger("cfstream")
    for h in list(root.handlers):
        if getattr(h, "_cfstream_cli", False):
            root.removeHandler(h)
            h.close()
    handler: logging.Handler
    if console is not None and fmt == "text":
        from rich.logging import RichHandler

        handler = RichHandler(console=console, show_path=False, markup=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
        if fmt == "json":
            handler.setFormatter(_JsonFormatter())
        else:
            handler.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
            )
    handler.addFilter(SecretRedactingFilter())
    setattr(handler, "_cfstream_cli", True)  # noqa: B010 - marks our handler for removal
    root.addHandler(handler)
    root.setLevel(logging.CRITICAL + 1 if quiet else getattr(logging, level.upper()))


# ------------------------------------------------------------------------------------------------
# live progress
# ------------------------------------------------------------------------------------------------
class _Progress:
    """Progress of a run: a rich live table on a TTY, periodic log lines otherwise, or nothing."""

    def __init__(self, mode: str, interval: float = 10.0) -> None:
        self.mode = mode
        self.interval = interval
        self.metrics: Any = None
        self.started = time.monotonic()
        self._last_log = self.started
        self._live: Any = None
        self.console: Any = None
        if mode == "rich":
            from rich.console import Console

            self.console = Console(stderr=True)

    def __enter__(self) -> _Progress:
        if self.mode == "rich":
            from rich.live import Live

            self._live = Live(console=self.console, refresh_per_second=4, transient=True)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def _waits(self) -> dict[str, float]:
        m = self.metrics
        if m is None:
            return {}
        waiting = getattr(m, "waiting_until", None) or {}
        now = time.time()
        return {svc: until for svc, until in waiting.items() if until > now}

    def __call__(self, report: RunReport) -> None:
        if self.mode == "rich" and self._live is not None:
            self._live.update(self._table(report))
        elif self.mode == "log":
            now = time.monotonic()
            if now - self._last_log >= self.interval:
                self._last_log = now
                for line in self._lines(report):
                    log.info("%s", line)

    def _lines(self, report: RunReport) -> list[str]:
        elapsed = max(1e-9, time.monotonic() - self.started)
        out = []
        for name, s in report.sources.items():
            out.append(
                f"progress {name}: fetched {s.fetched} ({s.fetched / elapsed:,.0f}/s), "
                f"unchanged {s.skipped_unchanged}, deleted {s.tombstones}, failed {s.failed}, "
                f"partitions {s.partitions_done}/{s.partitions}"
                + (f", FAILED: {s.error}" if s.error else "")
            )
        k = report.sink
        out.append(
            f"progress sink: written {k.upserted}, unchanged {k.unchanged}, deleted {k.deleted}, "
            f"commits {k.commits}, dead letters {report.dead_lettered}"
        )
        for svc, until in self._waits().items():
            out.append(f"progress {svc}: waiting on a rate limit until {_ts(until)}")
        return out

    def _table(self, report: RunReport) -> Any:
        from rich.table import Table
        from rich.text import Text

        elapsed = max(1e-9, time.monotonic() - self.started)
        table = Table(title=f"cfstream sync  {elapsed:,.0f}s", expand=False)
        for col in (
            "source",
            "fetched",
            "unchanged",
            "deleted",
            "failed",
            "docs/s",
            "parts",
            "status",
        ):
            table.add_column(col, justify="left" if col in ("source", "status") else "right")
        waits = self._waits()
        for name, s in report.sources.items():
            status = (
                "FAILED"
                if s.error
                else ("done" if s.partitions and s.partitions_done == s.partitions else "running")
            )
            wait = waits.get(s.source_type)
            if wait is not None:
                status = (
                    f"rate limited until {dt.datetime.fromtimestamp(wait).strftime('%H:%M:%S')}"
                )
            table.add_row(
                *map(
                    Text,  # plain text: rich would read "[...]" in a name or an error as markup
                    (
                        name,
                        *_count_cells(s),
                        f"{s.fetched / elapsed:,.0f}",
                        f"{s.partitions_done}/{s.partitions}",
                        status,
                    ),
                )
            )
        k = report.sink
        table.add_row(
            Text("[sink]"),
            f"{k.rows_in:,}",
            f"{k.unchanged:,}",
            f"{k.deleted:,}",
            f"{report.dead_lettered:,}",
            "",
            f"{k.commits} commits",
            f"written {k.upserted:,}",
        )
        for svc, until in waits.items():
            if svc not in {s.source_type for s in report.sources.values()}:
                table.add_row(Text(svc), "", "", "", "", "", "", f"rate limited until {_ts(until)}")
        return table


def _progress_mode(args: argparse.Namespace) -> str:
    if args.quiet or getattr(args, "json", False) and not sys.stderr.isatty():
        return "off" if args.quiet else "log"
    return "rich" if sys.stderr.isatty() and args.log_format == "text" else "log"


# ------------------------------------------------------------------------------------------------
# running
# ------------------------------------------------------------------------------------------------
async def _run_one(
    pipeline: Pipeline,
    control: RunControl,
    progress: _Progress | None,
    *,
    full_refresh: bool,
    dry_run: bool,
    grace_period: float = 30.0,
) -> RunReport:
    """Run ``pipeline``; hand it our own HTTP client so the progress display sees its metrics."""
    async with contextlib.AsyncExitStack() as stack:
        http = None
        if any(getattr(s, "uses_http", False) for s in pipeline.leaf_sources):
            http = await stack.enter_async_context(http_client_for(pipeline))
            if progress is not None:
                progress.metrics = http.metrics
        return await run_pipeline(
            pipeline,
            control=control,
            full_refresh=full_refresh,
            dry_run=dry_run,
            grace_period=grace_period,
            http=http,
            progress=progress,
            progress_interval=0.25 if progress is not None and progress.mode == "rich" else 1.0,
            tune_interpreter=True,  # the command owns its process
        )


def _print_report(report: RunReport, args: argparse.Namespace) -> None:
    if args.json:
        _out(_json({**report.to_dict(), "exit_code": exit_code(report)}))
        return
    if sys.stdout.isatty():
        _rich_report(report)
    else:
        _out(str(report))


def _rich_report(report: RunReport) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    title = (
        f"cfstream run: {report.fetched:,} documents in {report.wall_seconds:.2f}s "
        f"({report.docs_per_second:,.0f} docs/s)"
        + (" [dry run]" if report.dry_run else "")
        + (" [stopped early]" if report.stopped_early else "")
    )
    table = Table(title=Text(title))  # plain text: "[dry run]" is not a markup tag
    for col in ("source", "fetched", "unchanged", "deleted", "failed", "status"):
        table.add_column(col, justify="left" if col in ("source", "status") else "right")
    for name, s in report.sources.items():
        table.add_row(*map(Text, (name, *_count_cells(s), redact(s.status))))
    console.print(table)
    k = report.sink
    lines = [
        f"sink: inserted {k.inserted:,}, updated {k.updated:,}, unchanged {k.unchanged:,}, "
        f"appended {k.appended:,}, deleted {k.deleted:,}, commits {k.commits}"
    ]
    if report.dataset:
        lines.append(
            f"dataset {report.dataset}"
            + (f" version {k.dataset_version}" if k.dataset_version is not None else "")
            + (f", {k.dataset_rows:,} rows" if k.dataset_rows is not None else "")
        )
    if report.http.get("requests"):
        lines.append(
            f"http: {report.http['requests']} requests, {report.http.get('total_retries', 0)} retries, "
            f"{report.http.get('rate_limited', 0)} rate limited"
        )
    if report.dead_lettered:
        lines.append(f"dead letters: {report.dead_lettered} -> {report.dead_letter_path}")
    lines.extend(f"warning: {name}: {w}" for name, s in report.sources.items() for w in s.warnings)
    if report.error:
        lines.append(f"error: {report.error}")
    for line in lines:
        console.print(redact(line), markup=False, highlight=False)


def _env() -> dict[str, str]:
    return dict(os.environ)


def _load(args: argparse.Namespace) -> Config:
    # ${VAR}: the environment, then a .env file beside the config (the environment wins)
    env = {**read_dotenv(Path(args.config).parent / ".env"), **_env()}
    return load_config(args.config, env=env)


# ------------------------------------------------------------------------------------------------
# commands
# ------------------------------------------------------------------------------------------------
def cmd_sync(args: argparse.Namespace) -> int:
    """``cfstream sync CONFIG``: run the enabled (or named) sources once."""
    config = _load(args)
    if args.engine == "ray":
        return _sync_ray(config, args)
    pipeline = build_pipeline(config, only=args.source)
    progress = _Progress(_progress_mode(args))
    _setup_logging(args.log_level, args.log_format, args.quiet, progress.console)
    control = RunControl()

    async def go() -> RunReport:
        with route_signals(graceful_stopper(lambda: [control])):
            return await _run_one(
                pipeline,
                control,
                progress,
                full_refresh=args.full,
                dry_run=args.dry_run,
                grace_period=args.grace_period,
            )

    try:
        with progress:
            report = anyio.run(go, backend="asyncio")
    except CfStreamError as exc:
        return _run_failed(exc, args)
    _print_report(report, args)
    return exit_code(report)


def _run_failed(exc: BaseException, args: argparse.Namespace) -> int:
    message = redact(str(exc))
    if getattr(args, "json", False):
        _out(_json({"ok": False, "error": message, "exit_code": EXIT_FAILURE}))
    _err(f"cfstream: sync failed: {message}")
    return EXIT_FAILURE


def _sync_ray(config: Config, args: argparse.Namespace) -> int:
    try:
        module = importlib.import_module("cfstream.distributed.ray")
    except ImportError as exc:
        _err(
            f"cfstream: the ray engine is not available ({exc}); install it with "
            "`pip install 'cfstream[ray]'`"
        )
        return EXIT_USAGE
    run_config = getattr(module, "run_config", None)
    if run_config is None:
        _err("cfstream: this cfstream.distributed.ray has no run_config(); install cfstream[ray]")
        return EXIT_USAGE
    _setup_logging(args.log_level, args.log_format, args.quiet)
    try:
        result = run_config(
            config,
            only=args.source,
            full_refresh=args.full,
            dry_run=args.dry_run,
            address=args.address,
        )
        if inspect.isawaitable(result):

            async def wait() -> Any:
                return await result

            result = anyio.run(wait, backend="asyncio")
    except CfStreamError as exc:
        return _run_failed(exc, args)
    if not isinstance(result, RunReport):
        _err(f"cfstream: the ray engine returned {type(result).__name__}, not a RunReport")
        return EXIT_FAILURE
    _print_report(result, args)
    return exit_code(result)


def _dir_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.path.getsize(os.path.join(root, f))
    return total


def _human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{size:,.1f} TB"  # pragma: no cover


def _describe_value(key: str, value: Any) -> str | None:
    """One cursor value as a person reads it, or None when it says nothing useful."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float) and 1e9 < value < 4e9 and "version" not in key:
        return f"{key} {_ts(float(value))}"  # an epoch timestamp
    if isinstance(value, int | float):
        return f"{key} {value:,}"
    if isinstance(value, str):
        return f"{key} {value if len(value) <= 32 else value[:29] + '...'}"
    if isinstance(value, Mapping | list | tuple):
        return f"{len(value):,} {key}"
    return None


def _cursor_summary(partitions: Mapping[str, Any], items: int = 0) -> str:
    """A source's saved cursors, for people: partitions, tracked items, and what the most recent
    cursor says (its values, not its JSON)."""
    if not partitions and not items:
        return "no cursor (next sync is a full sync)"
    n = len(partitions)
    out = f"{n} partition{'s' if n != 1 else ''}"
    if items:
        out += f", {items:,} item{'s' if items != 1 else ''} tracked"
    if partitions:
        key = sorted(partitions)[-1]
        cursor = partitions[key] if isinstance(partitions[key], Mapping) else {}
        if len(cursor) > 6 or any("/" in k or "." in k for k in cursor):  # a map of items
            # (file path -> fingerprint), not named values
            said = [f"{len(cursor):,} entries"]
        else:
            said = [
                d
                for k, v in cursor.items()
                if not k.startswith("_") and k != "v" and (d := _describe_value(k, v)) is not None
            ][:3]
        if said:
            out += f"; {'partition ' + key + ': ' if key and n > 1 else ''}{', '.join(said)}"
    return out


def collect_status(config: Config) -> dict[str, Any]:
    """What ``cfstream status`` shows, as a JSON-ready dict (reads the dataset, never writes)."""
    import lance
    import pyarrow.compute as pc

    uri = config.dataset
    out: dict[str, Any] = {"dataset": uri, "exists": False, "version": None, "rows": None}
    counts: dict[str, int] = {}
    local = local_path(uri)
    try:
        ds = lance.dataset(uri, storage_options=config.sink.storage_options)
    except (OSError, ValueError) as exc:
        ds = None
        if local is None or (local / "_versions").exists():
            out["error"] = redact(str(exc))
    if ds is not None:
        out["exists"] = True
        out["version"] = ds.version
        out["rows"] = ds.count_rows()
        if out["rows"]:
            col = ds.to_table(columns=["source_type"]).column("source_type")
            for entry in pc.value_counts(col).to_pylist():
                counts[str(entry["values"])] = int(entry["counts"])
    out["size_bytes"] = _dir_size(local) if local is not None and local.exists() else None
    out["records_by_source_type"] = counts
    dead: dict[str, int] = {}
    dead_path = None
    state: StateStore | None = None
    if local is not None:
        sdir = state_dir_for(uri)
        dead_path = sdir / "dead-letters.jsonl"
        letters = read_dead_letters(dead_path)
        for letter, resolved in zip(letters, resolved_letters(config, letters), strict=True):
            if not resolved:  # stored since: not outstanding
                key = str(letter.get("source") or "?")
                dead[key] = dead.get(key, 0) + 1
        state = StateStore.for_dataset(uri)
    out["dead_letter_path"] = str(dead_path) if dead else None
    type_users: dict[str, list[str]] = {}
    for spec in config.sources.values():
        type_users.setdefault(_source_type_of(spec), []).append(spec.name)
    sources: dict[str, Any] = {}
    attributed: dict[str, int] = {}
    for name, spec in config.sources.items():
        st = _source_type_of(spec)
        info = state.source_info(name) if state is not None else {}
        parts = info.get("partitions") or {}
        records = counts.get(st, 0)
        if ds is not None and records:  # this source's rows, told apart by their uuids
            records = _rows_of(ds, spec, st)
        attributed[st] = attributed.get(st, 0) + records
        tracked = state.tracked_items(name) if state is not None else 0
        sources[name] = {
            "type": spec.type,
            "source_type": st,
            "enabled": spec.enabled,
            "schedule": spec.schedule_text,
            "records": records,
            "records_shared_with": [n for n in type_users[st] if n != name],
            "last_success": _ts(info.get("last_success")),
            "last_summary": info.get("last_summary"),
            "cursor": _cursor_summary(parts, tracked),
            "partitions": len(parts),
            "tracked_items": tracked,
            "dead_letters": dead.get(name, 0),
        }
    out["sources"] = sources
    out["dead_letters"] = sum(dead.values())
    # rows no configured source wrote (a source removed from the config, another config's)
    out["other_rows"] = {
        st: n - attributed.get(st, 0) for st, n in counts.items() if n > attributed.get(st, 0)
    }
    others: dict[str, Any] = {}
    if state is not None:
        for name in sorted(state.load()["sources"]):
            if name not in config.sources:
                info = state.source_info(name)
                others[name] = {
                    "last_success": _ts(info.get("last_success")),
                    "cursor": _cursor_summary(info.get("partitions") or {}),
                    "dead_letters": dead.get(name, 0),
                }
    out["sources_not_in_config"] = others
    return out


def _rows_of(ds: Any, spec: SourceSpec, source_type: str) -> int:
    from cfstream.sinks.identity import source_rows

    try:
        src = build_source(spec)
    except CfStreamError:
        return 0
    return len(source_rows(ds, source_type, src.record_name))


def _source_type_of(spec: SourceSpec) -> str:
    try:
        return build_source(spec).source_type
    except CfStreamError:
        return spec.source_type


def _count_cells(s: SourceStats) -> tuple[str, str, str, str]:
    """A source's fetched / unchanged / deleted / failed counts, as the tables show them."""
    return f"{s.fetched:,}", f"{s.skipped_unchanged:,}", f"{s.tombstones:,}", f"{s.failed:,}"


def _config_or_dataset(args: argparse.Namespace) -> Config:
    """The config ``args.config`` names, or, given a dataset folder instead, a config of that
    dataset alone (no sources, no stages)."""
    target = Path(args.config)
    if target.is_dir():
        sink = SinkSettings.model_validate({})
        return Config(dataset=str(target.resolve()), sink=sink, stages=(), sources={})
    return _load(args)


def cmd_status(args: argparse.Namespace) -> int:
    """``cfstream status CONFIG|DATASET``: what each source has in the dataset and when it last
    synced (given a dataset folder instead of a config: what its sync state knows)."""
    config = _config_or_dataset(args)
    _setup_logging(args.log_level, args.log_format, args.quiet)
    info = collect_status(config)
    if args.json:
        _out(_json(info))
        return EXIT_OK
    if info["exists"]:
        size = info["size_bytes"]
        _out(
            f"dataset {info['dataset']}: version {info['version']}, {info['rows']:,} rows"
            + (f", {_human_size(size)} on disk" if size is not None else "")
        )
    else:
        _out(f"dataset {info['dataset']}: not created yet (run `cfstream sync`)")
    if info.get("error"):
        _out(f"  error: {info['error']}")
    rows = [("source", "type", "records", "dead", "last success", "cursor")]
    for name, s in info["sources"].items():
        rows.append(
            (
                name + ("" if s["enabled"] else " [disabled]"),
                s["type"],
                str(s["records"]),
                str(s["dead_letters"]),
                s["last_success"] or "never",
                s["cursor"],
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows if len(rows) > 1 else []:
        cells = [r[i].rjust(widths[i]) if i in (2, 3) else r[i].ljust(widths[i]) for i in range(5)]
        _out("  " + "  ".join(cells) + "  " + r[5])
    for name, s in info["sources_not_in_config"].items():
        _out(
            f"  {name}: in the sync state, not in {'this config' if config.sources else 'a config'}"
            f"; last success {s['last_success'] or 'never'}; {s['cursor']}"
            + (f"; {s['dead_letters']} dead letters" if s["dead_letters"] else "")
        )
    if info["other_rows"]:
        listed = ", ".join(f"{n:,} {st}" for st, n in sorted(info["other_rows"].items()))
        _out(
            f"  rows no source of this config wrote: {listed} (`cfstream reset --rows` removes "
            "a source's rows)"
            if config.sources
            else f"  rows by type: {listed}"
        )
    if info["dead_letter_path"]:
        _out(
            f"  dead letters: {info['dead_letters']} outstanding -> {info['dead_letter_path']} "
            "(`cfstream dead-letters`)"
        )
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    """``cfstream validate CONFIG``: check the config, its variables and types; no network."""
    config = _load(args)
    _setup_logging(args.log_level, args.log_format, args.quiet)
    build_pipeline(config, only=config.enabled_sources or list(config.sources))
    if args.json:
        _out(
            _json(
                {
                    "ok": True,
                    "dataset": config.dataset,
                    "stages": [s.kind for s in config.stages],
                    "sources": {
                        n: {
                            "type": s.type,
                            "enabled": s.enabled,
                            "schedule": s.schedule_text,
                            "options": s.describe_options(),
                        }
                        for n, s in config.sources.items()
                    },
                }
            )
        )
        return EXIT_OK
    _out(f"{args.config}: OK")
    _out(f"  dataset {config.dataset}")
    if config.stages:
        _out(f"  pipeline: {' | '.join(s.kind for s in config.stages)}")
    for name, s in config.sources.items():
        extra = [] if s.enabled else ["disabled"]
        if s.schedule_text:
            extra.append(f"every {s.schedule_text}")
        _out(f"  source {name}: {s.type}" + (f" ({', '.join(extra)})" if extra else ""))
    return EXIT_OK


_SIMPLE_TYPES: dict[Any, str] = {  # in order: the first base class that matches names the type
    bool: "true/false",  # before int: bool is a subclass of int
    str: "text",
    int: "integer",
    float: "number",
    dt.datetime: "date-time (ISO 8601)",
    dt.date: "date (YYYY-MM-DD)",
    Path: "path",
    dict: "mapping",
}


def _type_name(annotation: Any) -> str:
    """An option's type as a user writes it in YAML (``list of text``, ``secret``, ...)."""
    import types as _types

    from pydantic import BaseModel, SecretStr

    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, _types.UnionType):
        parts = list(dict.fromkeys(_type_name(a) for a in args if a is not type(None)))
        tagged = "mapping with type: "
        if len(parts) > 1 and all(x.startswith(tagged) for x in parts):
            return tagged + " | ".join(x[len(tagged) :] for x in parts)
        return " or ".join(parts)
    if origin is typing.Literal:
        return "one of " + " | ".join(str(a) for a in args)
    if origin in (list, tuple, set, frozenset) or (
        origin is not None and getattr(origin, "__name__", "") in ("Sequence", "Iterable")
    ):
        inner = [a for a in args if a is not Ellipsis]
        return "list of " + (_type_name(inner[0]) if inner else "values")
    if origin in (dict, typing.Mapping) or annotation is dict:
        return "mapping"
    if isinstance(annotation, type):
        if issubclass(annotation, SecretStr):
            return "secret (e.g. ${VAR})"
        if issubclass(annotation, BaseModel):
            kind = annotation.model_fields.get("type")
            lit = typing.get_args(kind.annotation) if kind is not None else ()
            return f"mapping with type: {lit[0]}" if lit else "mapping"
        for base, name in _SIMPLE_TYPES.items():
            if issubclass(annotation, base):
                return name
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def describe_sources() -> dict[str, Any]:
    """Every installed connector with its options and required scopes (for ``cfstream sources``)."""
    out: dict[str, Any] = {}
    for type_name, target in sorted(available_sources().items()):
        entry: dict[str, Any] = {"target": target}
        try:
            cls = load_source_class(type_name)
        except ConfigError as exc:
            entry["installed"] = False
            entry["error"] = str(exc)
            out[type_name] = entry
            continue
        entry["installed"] = True
        entry["source_type"] = getattr(cls, "source_type", type_name)
        entry["uses_http"] = bool(getattr(cls, "uses_http", False))
        entry["required_scopes"] = list(getattr(cls, "required_scopes", ()))
        doc = (inspect.getdoc(cls) or "").strip().splitlines()
        entry["summary"] = doc[0] if doc else ""
        options: dict[str, Any] = {}
        model = getattr(cls, "config_model", None)
        if model is not None:
            for name, f in model.model_fields.items():
                options[name] = {
                    "type": _type_name(f.annotation),
                    "required": f.is_required(),
                    "default": None
                    if f.is_required()
                    else _jsonable(f.get_default(call_default_factory=True)),
                    "secret": is_secret_annotation(f.annotation),
                    "description": f.description or "",
                }
        entry["options"] = options
        out[type_name] = entry
    return out


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return str(value)
    return value


def resolved_letters(config: Config, letters: Sequence[Mapping[str, Any]]) -> list[bool]:
    """For each dead letter: has its record been stored since (a later sync or a retry fixed
    it)? Looked up by the record's uuid and ``ingested_at``; a letter without an id, or of a
    source no longer in the config, is outstanding."""
    import lance

    out = [False] * len(letters)
    if not letters or not dataset_exists(config.dataset):
        return out
    ds = lance.dataset(config.dataset, storage_options=config.sink.storage_options)
    wanted: dict[str, list[int]] = {}
    built: dict[str, Any] = {}
    for i, letter in enumerate(letters):
        name, sid = letter.get("source"), letter.get("source_id")
        spec = config.sources.get(str(name))
        if spec is None or not isinstance(sid, str) or not sid:
            continue
        if name not in built:
            try:
                built[str(name)] = build_source(spec)
            except CfStreamError:
                built[str(name)] = None
        src = built[str(name)]
        if src is not None:
            wanted.setdefault(src.record_uuid(sid), []).append(i)
    uuids = list(wanted)
    for start in range(0, len(uuids), 5_000):
        part = ",".join(f"'{u}'" for u in uuids[start : start + 5_000])
        rows = ds.to_table(columns=["uuid", "ingested_at"], filter=f"uuid IN ({part})")
        for row in rows.to_pylist():
            at = row["ingested_at"]
            when = at.timestamp() if isinstance(at, dt.datetime) else 0.0
            for i in wanted.get(row["uuid"], []):
                out[i] = when >= float(letters[i].get("time") or 0)
    return out


def cmd_dead_letters(args: argparse.Namespace) -> int:
    """``cfstream dead-letters CONFIG [--retry | --clear]``: list, retry or clear dead letters."""
    from cfstream.contract.deadletter import document_from_letter, remove_dead_letters

    config = _load(args)
    _setup_logging(args.log_level, args.log_format, args.quiet)
    if local_path(config.dataset) is None:
        raise ConfigError(f"dataset {config.dataset}: dead letters are kept for local datasets")
    path = state_dir_for(config.dataset) / "dead-letters.jsonl"
    chosen = {s.name for s in select_sources(config, args.source)} if args.source else None

    def mine(letter: Mapping[str, Any]) -> bool:
        return chosen is None or letter.get("source") in chosen

    letters = [x for x in read_dead_letters(path) if mine(x)]
    if args.clear:
        removed = remove_dead_letters(path, mine)
        _out(
            _json({"ok": True, "cleared": removed})
            if args.json
            else f"cleared {removed} dead letters"
        )
        return EXIT_OK
    if args.retry:
        return _retry_dead_letters(config, args, path, letters, mine, document_from_letter)
    done = resolved_letters(config, letters)
    outstanding = [x for x, ok in zip(letters, done, strict=True) if not ok]
    if args.json:
        _out(_json({"path": str(path), "outstanding": outstanding, "resolved": sum(done)}))
        return EXIT_OK
    if not letters:
        _out(f"no dead letters ({path})")
        return EXIT_OK
    for x in outstanding:
        error = str(x.get("error") or "").splitlines()[0][:120]
        _out(
            f"{_ts(x.get('time'))}  {x.get('source')}  {x.get('source_id')}  [{x.get('stage')}] {error}"
        )
    _out(
        f"{len(outstanding)} outstanding, {sum(done)} resolved (stored since) in {path}; "
        "`--retry` tries them again, `--clear` forgets them"
    )
    return EXIT_OK


def _retry_dead_letters(
    config: Config,
    args: argparse.Namespace,
    path: Path,
    letters: list[dict[str, Any]],
    mine: Callable[[Mapping[str, Any]], bool],
    to_document: Callable[[dict[str, Any]], Any],
) -> int:
    """Replay what can be replayed; have the next sync fetch the rest again."""
    import tempfile

    from cfstream.contract.deadletter import remove_dead_letters
    from cfstream.sources.base import source as make_source

    replay: dict[str, list[Any]] = {}
    refetch: set[str] = set()
    for letter in letters:
        name = str(letter.get("source"))
        if name not in config.sources:
            continue
        doc = to_document(letter)
        if doc is None:
            refetch.add(name)
        else:
            replay.setdefault(name, []).append(doc)
    state = StateStore.for_dataset(config.dataset)
    report: RunReport | None = None
    try:
        for name in sorted(set(replay) | refetch):
            state.acquire_source(name)  # never while a sync of it runs
        remove_dead_letters(path, lambda x: mine(x) and str(x.get("source")) in config.sources)
        for name in refetch:
            state.reset(name)  # its next sync reads everything again (unchanged rows are skipped)
        if replay:
            sources = []
            for name, docs in replay.items():
                spec = config.sources[name]

                async def again(docs: list[Any] = docs) -> Any:
                    yield docs

                src = make_source(again, source_type=build_source(spec).source_type)(name=name)
                sources.append(src)
            pipeline = Pipeline(sources, build_stages(config), build_sink(config))
            with tempfile.TemporaryDirectory() as scratch:  # replays save no cursor
                scratch_state = StateStore(Path(scratch) / "state.json")
                report = anyio.run(
                    lambda: run_pipeline(
                        pipeline,
                        state=scratch_state,
                        dead_letter_path=path,
                        tune_interpreter=True,  # the command owns its process
                    ),
                    backend="asyncio",
                )
    finally:
        state.release_all()
    replayed = sum(len(d) for d in replay.values())
    failed = report.dead_lettered if report is not None else 0
    if args.json:
        _out(
            _json(
                {
                    "ok": failed == 0,
                    "replayed": replayed,
                    "failed_again": failed,
                    "refetch_next_sync": sorted(refetch),
                }
            )
        )
    else:
        _out(f"replayed {replayed} dead letters: {replayed - failed} stored, {failed} failed again")
        if refetch:
            _out(f"the next sync of {', '.join(sorted(refetch))} reads it afresh to fetch the rest")
    return EXIT_OK if failed == 0 else EXIT_PARTIAL


def cmd_reset(args: argparse.Namespace) -> int:
    """``cfstream reset CONFIG --source NAME [--rows]``: forget a source's cursors (and rows)."""
    import lance

    from cfstream.sinks.identity import delete_source_rows

    config = _load(args)
    _setup_logging(args.log_level, args.log_format, args.quiet)
    specs = select_sources(config, args.source)
    if local_path(config.dataset) is None:
        raise ConfigError(f"dataset {config.dataset}: reset needs a local dataset (its sync state)")
    state = StateStore.for_dataset(config.dataset)
    out: dict[str, Any] = {}
    try:
        for spec in specs:
            state.acquire_source(spec.name)  # never while a sync of it runs
            src = build_source(spec)
            state.reset(spec.name)
            entry: dict[str, Any] = {"cursors": "forgotten"}
            if args.rows and dataset_exists(config.dataset):
                ds = lance.dataset(config.dataset, storage_options=config.sink.storage_options)
                entry["rows_deleted"] = delete_source_rows(ds, src.source_type, src.record_name)
            out[spec.name] = entry
    finally:
        state.release_all()
    if args.json:
        _out(_json({"ok": True, "sources": out}))
        return EXIT_OK
    for name, entry in out.items():
        rows = f", {entry['rows_deleted']:,} rows deleted" if "rows_deleted" in entry else ""
        _out(f"{name}: cursors forgotten{rows}; the next sync reads it afresh")
    return EXIT_OK


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, not {text!r}")
    return value


def _snippet(text: str | None, width: int = 160) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1].rstrip() + "…"


def cmd_search(args: argparse.Namespace) -> int:
    """``cfstream search CONFIG|DATASET QUERY``: the best documents of the dataset for QUERY.

    Vector search embeds the query with the config's ``embed`` stage when it has one (its key
    comes from the config), else with the embedder recorded with the dataset."""
    from dataclasses import asdict

    from cfstream.search import run_search
    from cfstream.transforms import Embed

    if args.source and Path(args.config).is_dir():
        _err("cfstream: --source needs a config (it names one of the config's sources)")
        return EXIT_USAGE
    config = _config_or_dataset(args)
    _setup_logging(args.log_level, args.log_format, args.quiet)
    source: tuple[str, str | None] | None = None
    if args.source:
        src = build_source(select_sources(config, [args.source])[0])
        source = (src.source_type, src.record_name)
    embedder = None
    if args.mode != "fts":
        stages = [spec.build() for spec in config.stages if spec.kind == "embed"]
        embedder = next((st.embedder for st in stages if isinstance(st, Embed)), None)
    results = run_search(
        config.dataset,
        args.query,
        k=args.k,
        mode=args.mode,
        source=source,
        embedder=embedder,
        storage_options=config.sink.storage_options,
    )
    if not args.quiet:
        for note in results.notes:
            _err(f"note: {note}")
    if args.json:
        _out(_json([asdict(hit) for hit in results.hits]))
        return EXIT_OK
    if not results.hits:
        _out(f"no results for {args.query!r}" + (f" in source {args.source}" if source else ""))
        return EXIT_OK
    width = len(str(len(results.hits)))
    for i, hit in enumerate(results.hits, 1):
        where = hit.source_url or f"{hit.source_type}:{hit.source_id}"
        _out(f"{str(i).rjust(width)}. {hit.title}  [{hit.source_type}]  score {hit.score:.4g}")
        _out(f"{' ' * width}  {where}")
        snippet = _snippet(hit.text)
        if snippet:
            _out(f"{' ' * width}  {snippet}")
    return EXIT_OK


def cmd_init(args: argparse.Namespace) -> int:
    """``cfstream init [CONNECTOR ...]``: write a commented starter config and a .env template."""
    folder = Path(args.dir)
    starter = starter_files(args.connectors)
    config_path, env_path = folder / "cfstream.yaml", folder / ".env"
    existing = [p for p in (config_path, env_path) if p.exists()]
    if existing and not args.force:
        raise ConfigError(
            f"{', '.join(map(str, existing))} already exist{'s' if len(existing) == 1 else ''}: "
            "pass --force to overwrite, or --dir to write elsewhere"
        )
    folder.mkdir(parents=True, exist_ok=True)
    config_path.write_text(starter.config, encoding="utf-8")
    wrote = [str(config_path)]
    if starter.env.count("=") > 0:
        env_path.write_text(starter.env, encoding="utf-8")
        wrote.append(f"{env_path} (replace each {PLACEHOLDER})")
    made = []
    for name in starter.folders:
        if not (folder / name).exists():
            (folder / name).mkdir(parents=True)
            made.append(f"{folder / name}/")
    _out("wrote " + ", ".join(wrote) + (f"; created {', '.join(made)}" if made else ""))
    _out(
        f"next: edit them, then `cfstream validate {config_path}` and `cfstream sync {config_path}`"
    )
    return EXIT_OK


def cmd_sources(args: argparse.Namespace) -> int:
    """``cfstream sources``: the installed connectors, their options and required scopes."""
    _setup_logging(args.log_level, args.log_format, args.quiet)
    info = describe_sources()
    if args.json:
        _out(_json(info))
        return EXIT_OK
    for type_name, e in info.items():
        if not e["installed"]:
            _out(f"{type_name}: not installed ({e['target']})")
            continue
        _out(f"{type_name}: {e['summary']}".rstrip(": "))
        if e["required_scopes"]:
            _out(f"  required scopes: {', '.join(e['required_scopes'])}")
        if not e["options"]:
            _out("  options: (no config model; see the connector's documentation)")
        for name, o in e["options"].items():
            bits = [o["type"]]
            bits.append("required" if o["required"] else f"default {json.dumps(o['default'])}")
            if o["secret"]:
                bits.append("secret")
            desc = f"  {o['description']}" if o["description"] else ""
            _out(f"  {name}: {', '.join(bits)}{desc}")
        _out("")
    return EXIT_OK


# ------------------------------------------------------------------------------------------------
# watch
# ------------------------------------------------------------------------------------------------
def cmd_watch(args: argparse.Namespace) -> int:
    """``cfstream watch CONFIG``: run each source on its own schedule until Ctrl-C."""
    config = _load(args)
    specs = select_sources(config, args.source)
    default_every = parse_duration(args.every) if args.every else None
    intervals: dict[str, float] = {}
    for spec in specs:
        every = spec.schedule or default_every
        if every is None:
            raise ConfigError(
                f"{args.config}: sources.{spec.name}: no `schedule:` for `cfstream watch`; add e.g. "
                "`schedule: 15m`, or pass --every 15m"
            )
        intervals[spec.name] = every
    for spec in specs:  # build once up front: a bad option is a config error, not a failing run
        build_source(spec)
    _setup_logging(args.log_level, args.log_format, args.quiet)
    if not args.quiet:
        for spec in specs:
            log.info("watching %s every %.0fs", spec.name, intervals[spec.name])

    def on_report(name: str, run: int, report: RunReport) -> None:
        if args.json:
            _out(_json({"source": name, "run": run, **report.to_dict()}))

    def on_error(name: str, run: int, exc: CfStreamError) -> None:
        if args.json:
            _out(_json({"source": name, "run": run, "ok": False, "error": redact(str(exc))}))

    scheduler = Scheduler(
        [
            Scheduled(spec.name, intervals[spec.name], partial(build_pipeline, config, [spec.name]))
            for spec in specs
        ],
        WatchOptions(
            dataset=config.dataset,
            succeeded=lambda report: exit_code(report) in (EXIT_OK, EXIT_STOPPED),
            max_runs=args.max_runs,
            tune_interpreter=True,  # the command owns its process
            on_report=on_report,
            on_error=on_error,
        ),
    )

    async def go() -> None:
        with route_signals(graceful_stopper(scheduler.controls, scheduler.stop)):
            await scheduler.run()

    anyio.run(go, backend="asyncio")
    if not args.quiet:
        log.info("watch stopped")
    return EXIT_STOPPED if scheduler.stopped else EXIT_OK  # Ctrl-C: 130, as documented


# ------------------------------------------------------------------------------------------------
# demo
# ------------------------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    """``cfstream demo``: an offline end-to-end sync of bundled sample data."""
    from cfstream import demo

    _setup_logging(args.log_level, args.log_format, args.quiet)
    dataset = Path(args.dataset)
    control = RunControl()

    async def go() -> demo.DemoResult:
        # Ctrl-C / SIGTERM as in `sync`: the first stops gracefully, a second at once
        with route_signals(graceful_stopper(lambda: [control])):
            return await demo.run_demo_async(dataset, change=args.change, control=control)

    try:
        result = anyio.run(go, backend="asyncio")
    except CfStreamError as exc:
        return _run_failed(exc, args)
    if args.json:
        _out(_json({**result.to_dict(), "exit_code": exit_code(result.report)}))
        return exit_code(result.report)
    for note in result.notes:
        _out(f"# {note}")
    _out(
        f"# sources: {', '.join(result.sources)}"
        + (f" (not available yet: {', '.join(result.skipped)})" if result.skipped else "")
    )
    if result.changed:
        _out(f"# --change edited: {', '.join(result.changed)}")
    if sys.stdout.isatty():
        _rich_report(result.report)
    else:
        _out(str(result.report))
    k = result.report.sink
    split = f"{result.documents_written} records, {result.chunks_written} chunks with vectors"
    if result.first_run:
        _out(f"\nfirst sync: {k.inserted + k.appended} new rows ({split})")
        if result.fetched_twice:
            # the report counts documents fetched; the sink keeps one row per record
            twice = ", ".join(f"{name} {n}" for name, n in result.fetched_twice.items())
            _out(
                f"  ({result.report.fetched} documents fetched; records fetched twice ({twice}) "
                "are stored once: the dataset keeps one row per record)"
            )
    else:
        _out(f"\nincremental sync: {k.inserted} new, {k.updated} updated rows ({split})")
    if result.updated_records:
        _out("records written by this run:")
        for rec in result.updated_records:
            _out(f"  - [{rec['source_type']}] {rec['title']}")
    _out("\nthree records from the dataset:")
    for rec in result.samples:
        _out(f"  - [{rec['source_type']}] {rec['title']}  ({rec['collection'] or '-'})")
        if rec.get("relationships"):
            _out(f"      relationships: {rec['relationships']}")
        if rec.get("text"):
            _out(f"      {rec['text']}")
    _out(f'\nsearch: "{result.search_query}" (full text and vectors, fused)')
    for i, hit in enumerate(result.search_hits, 1):
        _out(f"  {i}. [{hit['source_type']}] {hit['title']}  (score {hit['score']})")
        if hit.get("text"):
            _out(f"      {hit['text']}")
    _out(
        f"\ndataset: {result.dataset}\nnext: `cfstream demo` again (nothing new), "
        "`cfstream demo --change` (only edited records update), "
        f'`cfstream search {result.dataset} "your question"`'
    )
    return exit_code(result.report)


# ------------------------------------------------------------------------------------------------
# argument parsing
# ------------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", "-q", action="store_true", help="print nothing but the report")
    common.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log level (default: info)",
    )
    common.add_argument(
        "--log-format", default="text", choices=["text", "json"], help="log lines as text or JSON"
    )
    common.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    common.add_argument(
        "--traceback",
        action="store_true",
        help="show the full traceback of a failure (where a source's own code raised)",
    )

    parser = argparse.ArgumentParser(
        prog="cfstream",
        description="Stream documents from anywhere into a ContextFrame (Lance) dataset.",
        epilog="exit codes: 0 ok, 1 failure, 2 bad config or usage, 3 partial success, "
        "130 stopped by Ctrl-C",
    )
    parser.add_argument(
        "--version", action="version", version=f"cfstream {__version__}", help="print the version"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("sync", parents=[common], help="run the sources once")
    p.add_argument("config", metavar="CONFIG", help="the YAML config file")
    p.add_argument(
        "--source", action="append", metavar="NAME", help="only this source (repeatable)"
    )
    p.add_argument("--full", action="store_true", help="ignore saved cursors: a full re-sync")
    p.add_argument("--dry-run", action="store_true", help="fetch and transform; write nothing")
    p.add_argument(
        "--grace-period",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="after Ctrl-C, how long in-flight work may take before the run is cancelled (30)",
    )
    p.add_argument("--engine", choices=["local", "ray"], default="local", help="where to run")
    p.add_argument("--address", help="the Ray cluster address (with --engine ray)")
    p.set_defaults(func=cmd_sync)

    p = sub.add_parser("status", parents=[common], help="what each source has in the dataset")
    p.add_argument("config", metavar="CONFIG|DATASET", help="a config file, or a dataset folder")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("watch", parents=[common], help="run each source on its schedule")
    p.add_argument("config", metavar="CONFIG")
    p.add_argument(
        "--source", action="append", metavar="NAME", help="only this source (repeatable)"
    )
    p.add_argument("--every", metavar="DURATION", help="schedule for sources without `schedule:`")
    p.add_argument(
        "--max-runs", type=int, default=0, metavar="N", help="stop each source after N runs"
    )
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("search", parents=[common], help="search the dataset: full text and vectors")
    p.add_argument("config", metavar="CONFIG")
    p.add_argument("query", metavar="QUERY", help="what to look for, in words")
    p.add_argument("--k", type=_positive_int, default=10, metavar="N", help="hits to show (10)")
    p.add_argument(
        "--mode",
        choices=["hybrid", "fts", "vector"],
        default="hybrid",
        help="full text, vectors, or both fused (default: hybrid)",
    )
    p.add_argument("--source", metavar="NAME", help="only the documents of this source")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("validate", parents=[common], help="check a config without any network call")
    p.add_argument("config", metavar="CONFIG")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("dead-letters", parents=[common], help="list, retry or clear dead letters")
    p.add_argument("config", metavar="CONFIG")
    p.add_argument(
        "--source", action="append", metavar="NAME", help="only this source's (repeatable)"
    )
    action = p.add_mutually_exclusive_group()
    action.add_argument(
        "--retry",
        action="store_true",
        help="replay the failed documents through the pipeline; the next sync fetches the "
        "items their source could not map",
    )
    action.add_argument("--clear", action="store_true", help="forget them")
    p.set_defaults(func=cmd_dead_letters)

    p = sub.add_parser(
        "reset", parents=[common], help="forget a source's cursors (and, with --rows, its rows)"
    )
    p.add_argument("config", metavar="CONFIG")
    p.add_argument(
        "--source", action="append", metavar="NAME", required=True, help="the source (repeatable)"
    )
    p.add_argument("--rows", action="store_true", help="also delete the source's rows")
    p.set_defaults(func=cmd_reset)

    p = sub.add_parser(
        "init", parents=[common], help="write a commented starter config and a .env template"
    )
    p.add_argument(
        "connectors", nargs="*", metavar="CONNECTOR", help="connectors to include (default: files)"
    )
    p.add_argument("--dir", default=".", help="where to write cfstream.yaml and .env (default .)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("sources", parents=[common], help="list installed connectors and options")
    p.set_defaults(func=cmd_sources)

    p = sub.add_parser("demo", parents=[common], help="offline demo on bundled sample data")
    p.add_argument("--change", action="store_true", help="edit some sample data first")
    p.add_argument("--dataset", default="demo.lance", help="where to write (default ./demo.lance)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``cfstream`` command with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    logger = logging.getLogger("cfstream")
    saved_level = logger.level
    tb_logger = logging.getLogger("cfstream.traceback")
    saved_tb_level = tb_logger.level
    show_tb = bool(getattr(args, "traceback", False))
    if show_tb:
        tb_logger.setLevel(logging.DEBUG)
    try:
        code: int = args.func(args)
        return code
    except ConfigError as exc:
        _traceback(exc, show_tb)
        _err(f"cfstream: config error: {redact(str(exc))}")
        return EXIT_USAGE
    except CfStreamError as exc:
        _traceback(exc, show_tb)
        _err(f"cfstream: {redact(str(exc))}")
        return EXIT_FAILURE
    except OSError as exc:  # a path the user gave cannot be used (a file, no permission, ...)
        _traceback(exc, show_tb)
        _err(f"cfstream: {_os_error_message(exc)}")
        return EXIT_FAILURE
    except KeyboardInterrupt:
        _err("cfstream: interrupted")
        return EXIT_STOPPED
    finally:  # leave logging as we found it (main() may run inside another program or a test)
        for h in list(logger.handlers):
            if getattr(h, "_cfstream_cli", False):
                logger.removeHandler(h)
                h.close()
        logger.setLevel(saved_level)
        tb_logger.setLevel(saved_tb_level)


def _traceback(exc: BaseException, show: bool) -> None:
    if show:
        _err(redact("".join(traceback.format_exception(exc))).rstrip())


def _os_error_message(exc: OSError) -> str:
    """One line for an OSError about a path: what failed and what to do."""
    where = f" {exc.filename}" if exc.filename else ""
    what = exc.strerror or str(exc)
    hint = {
        errno.EACCES: "check that this user may read and write it, or point `dataset:` elsewhere",
        errno.EPERM: "check that this user may read and write it, or point `dataset:` elsewhere",
        errno.EROFS: "the file system is read-only: point `dataset:` at a writable folder",
        errno.ENOTDIR: "a file stands where a folder is needed: point `dataset:` at a folder",
        errno.EEXIST: "a file stands where a folder is needed: point `dataset:` at a folder",
        errno.ENOSPC: "the disk is full: free some space and run again",
    }.get(exc.errno or 0, "check the path and its permissions (--traceback shows where)")
    return redact(f"cannot use{where}: {what}; {hint}")


if __name__ == "__main__":
    raise SystemExit(main())
