"""The ``cfstream`` command: ``sync``, ``status``, ``watch``, ``validate``, ``sources`` and ``demo``.

This is the only module that prints for people or reads the process environment. Exit codes:

====  =========================================================================================
0     success
1     failure (every source failed, the dataset could not be written, another process is busy)
2     bad config or usage
3     partial success: some records were dead-lettered, or some sources failed while others worked
130   stopped by Ctrl-C before the end (what was committed is kept, cursors are saved)
====  =========================================================================================
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib
import inspect
import json
import logging
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import anyio

from cfstream.config import (
    Config,
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
from cfstream.deadletter import read_dead_letters
from cfstream.errors import CfStreamError, ConfigError
from cfstream.pipeline import Pipeline
from cfstream.report import RunReport, SourceStats
from cfstream.runner import RunControl, http_client_for, run_pipeline
from cfstream.secrets import SecretRedactingFilter, get_logger, redact
from cfstream.sources.registry import available_sources, load_source_class
from cfstream.state import StateStore, local_path, state_dir_for

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
    if failed and len(failed) == len(report.sources):
        return EXIT_FAILURE
    if failed or report.dead_lettered:
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
                name,
                *_count_cells(s),
                f"{s.fetched / elapsed:,.0f}",
                f"{s.partitions_done}/{s.partitions}",
                status,
            )
        k = report.sink
        table.add_row(
            "[sink]",
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
                table.add_row(svc, "", "", "", "", "", "", f"rate limited until {_ts(until)}")
        return table


def _progress_mode(args: argparse.Namespace) -> str:
    if args.quiet or getattr(args, "json", False) and not sys.stderr.isatty():
        return "off" if args.quiet else "log"
    return "rich" if sys.stderr.isatty() and args.log_format == "text" else "log"


# ------------------------------------------------------------------------------------------------
# running
# ------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _signals(on_signal: Callable[[], None]) -> Iterator[None]:
    """Route SIGINT/SIGTERM to ``on_signal`` inside the running event loop."""
    import asyncio

    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, on_signal)
                installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def _stopper(
    controls: Callable[[], Sequence[RunControl]], before: Callable[[], None] | None = None
) -> Callable[[], None]:
    count = 0

    def on_signal() -> None:
        nonlocal count
        count += 1
        if before is not None:
            before()
        if count == 1:
            log.warning(
                "stopping: finishing in-flight work and saving state (Ctrl-C again to stop at once)"
            )
            for c in controls():
                c.request_stop()
        else:
            log.warning("stopping now")
            for c in controls():
                c.hard_stop()

    return on_signal


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

    console = Console()
    title = (
        f"cfstream run: {report.fetched:,} documents in {report.wall_seconds:.2f}s "
        f"({report.docs_per_second:,.0f} docs/s)"
        + (" [dry run]" if report.dry_run else "")
        + (" [stopped early]" if report.stopped_early else "")
    )
    table = Table(title=title)
    for col in ("source", "fetched", "unchanged", "deleted", "failed", "status"):
        table.add_column(col, justify="left" if col in ("source", "status") else "right")
    for name, s in report.sources.items():
        table.add_row(name, *_count_cells(s), redact(f"FAILED: {s.error}") if s.error else "ok")
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
    for name, s in report.sources.items():
        lines.extend(f"warning [{name}]: {w}" for w in s.warnings)
    if report.error:
        lines.append(f"error: {report.error}")
    for line in lines:
        console.print(redact(line), markup=False, highlight=False)


def _env() -> dict[str, str]:
    return dict(os.environ)


def _load(args: argparse.Namespace) -> Config:
    return load_config(args.config, env=_env())


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
        with _signals(_stopper(lambda: [control])):
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


def _cursor_summary(partitions: Mapping[str, Any], items: int = 0) -> str:
    if not partitions and not items:
        return "no cursor (next sync is a full sync)"
    n = len(partitions)
    out = f"{n} partition{'s' if n != 1 else ''}"
    if items:
        out += f", {items:,} item{'s' if items != 1 else ''} tracked"
    if partitions:
        first_key = sorted(partitions)[-1]
        text = json.dumps(partitions[first_key], default=str, sort_keys=True)
        if len(text) > 70:
            text = text[:67] + "..."
        label = f"[{first_key}] " if first_key else ""
        out += f"; {label}{text}"
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
        for letter in read_dead_letters(dead_path):
            key = str(letter.get("source") or "?")
            dead[key] = dead.get(key, 0) + 1
        state = StateStore.for_dataset(uri)
    out["dead_letter_path"] = str(dead_path) if dead else None
    type_users: dict[str, list[str]] = {}
    for spec in config.sources.values():
        type_users.setdefault(_source_type_of(spec), []).append(spec.name)
    sources: dict[str, Any] = {}
    for name, spec in config.sources.items():
        st = _source_type_of(spec)
        info = state.source_info(name) if state is not None else {}
        parts = info.get("partitions") or {}
        tracked = state.tracked_items(name) if state is not None else 0
        sources[name] = {
            "type": spec.type,
            "source_type": st,
            "enabled": spec.enabled,
            "schedule": spec.schedule_text,
            "records": counts.get(st, 0),
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
    return out


def _source_type_of(spec: SourceSpec) -> str:
    try:
        return build_source(spec).source_type
    except CfStreamError:
        return spec.source_type


def _count_cells(s: SourceStats) -> tuple[str, str, str, str]:
    """A source's fetched / unchanged / deleted / failed counts, as the tables show them."""
    return f"{s.fetched:,}", f"{s.skipped_unchanged:,}", f"{s.tombstones:,}", f"{s.failed:,}"


def cmd_status(args: argparse.Namespace) -> int:
    """``cfstream status CONFIG``: what each source has in the dataset and when it last synced."""
    config = _load(args)
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
        shared = (
            f" (type shared with {', '.join(s['records_shared_with'])})"
            if s["records_shared_with"]
            else ""
        )
        rows.append(
            (
                name + ("" if s["enabled"] else " [disabled]"),
                s["type"],
                str(s["records"]),
                str(s["dead_letters"]),
                s["last_success"] or "never",
                s["cursor"] + shared,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        cells = [r[i].rjust(widths[i]) if i in (2, 3) else r[i].ljust(widths[i]) for i in range(5)]
        _out("  " + "  ".join(cells) + "  " + r[5])
    if info["dead_letter_path"]:
        _out(f"  dead letters: {info['dead_letters']} -> {info['dead_letter_path']}")
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


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    text = str(annotation)
    for prefix in ("typing.", "cfstream.secrets.", "pathlib.", "pydantic.types."):
        text = text.replace(prefix, "")
    return text


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
def _backoff(interval: float, failures: int) -> float:
    """Seconds to wait after ``failures`` consecutive failed runs of a source."""
    cap = max(8 * interval, 300.0)
    return float(min(interval * 2**failures, cap))


def _dataset_exists(uri: str) -> bool:
    local = local_path(uri)
    return local is None or (local / "_versions").exists()


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

    async def go() -> None:
        stop = anyio.Event()
        active: set[RunControl] = set()
        create_lock = anyio.Lock()
        on_signal = _stopper(lambda: list(active), stop.set)
        with _signals(on_signal):
            async with anyio.create_task_group() as tg:
                for spec in specs:
                    tg.start_soon(
                        _watch_source,
                        config,
                        spec,
                        intervals[spec.name],
                        args,
                        stop,
                        active,
                        create_lock,
                    )

    anyio.run(go, backend="asyncio")
    if not args.quiet:
        log.info("watch stopped")
    return EXIT_OK


async def _watch_source(
    config: Config,
    spec: SourceSpec,
    interval: float,
    args: argparse.Namespace,
    stop: anyio.Event,
    active: set[RunControl],
    create_lock: anyio.Lock,
) -> None:
    failures = 0
    runs = 0
    next_at = time.monotonic() + random.uniform(0, min(1.0, 0.05 * interval))
    while not stop.is_set():
        delay = next_at - time.monotonic()
        if delay > 0:
            with anyio.move_on_after(delay):
                await stop.wait()
        if stop.is_set():
            break
        started = time.monotonic()
        control = RunControl()
        active.add(control)
        ok = False
        try:
            pipeline = Pipeline([build_source(spec)], build_stages(config), build_sink(config))
            if _dataset_exists(config.dataset):
                report = await _run_one(pipeline, control, None, full_refresh=False, dry_run=False)
            else:
                async with create_lock:
                    report = await _run_one(
                        pipeline, control, None, full_refresh=False, dry_run=False
                    )
            ok = exit_code(report) in (EXIT_OK, EXIT_STOPPED)
            k = report.sink
            log.info(
                "run %s #%d: fetched %d, written %d, unchanged %d, deleted %d, dead letters %d in %.2fs%s",
                spec.name,
                runs + 1,
                report.fetched,
                k.upserted,
                k.unchanged + report.sources[spec.name].skipped_unchanged
                if spec.name in report.sources
                else k.unchanged,
                k.deleted,
                report.dead_lettered,
                report.wall_seconds,
                "" if ok else f" - FAILED: {', '.join(report.failed_sources) or report.error}",
            )
            if args.json:
                _out(_json({"source": spec.name, "run": runs + 1, **report.to_dict()}))
        except CfStreamError as exc:
            log.error("run %s #%d failed: %s", spec.name, runs + 1, exc)
            if args.json:
                _out(
                    _json(
                        {
                            "source": spec.name,
                            "run": runs + 1,
                            "ok": False,
                            "error": redact(str(exc)),
                        }
                    )
                )
        finally:
            active.discard(control)
        runs += 1
        if args.max_runs and runs >= args.max_runs:
            break
        took = time.monotonic() - started
        if ok:
            failures = 0
            wait = interval
            if took > interval:
                log.warning(
                    "%s took %.1fs, longer than its %.0fs schedule: the next run starts now",
                    spec.name,
                    took,
                    interval,
                )
            base = started
        else:
            failures += 1
            wait = _backoff(interval, failures)
            log.warning(
                "%s failed %d time(s) in a row: retrying in %.0fs", spec.name, failures, wait
            )
            base = time.monotonic()
        next_at = max(time.monotonic(), base + wait + random.uniform(0, 0.1 * wait))


# ------------------------------------------------------------------------------------------------
# demo
# ------------------------------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    """``cfstream demo``: an offline end-to-end sync of bundled sample data."""
    from cfstream import demo

    _setup_logging(args.log_level, args.log_format, args.quiet)
    dataset = Path(args.dataset)
    try:
        result = demo.run_demo(dataset, change=args.change)
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
    if result.first_run:
        _out(f"\nfirst sync: {k.inserted + k.appended} new records")
    else:
        _out(f"\nincremental sync: {k.inserted} new, {k.updated} updated records")
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
    _out(
        f"\ndataset: {result.dataset}\nnext: `cfstream demo` again (nothing new), "
        "`cfstream demo --change` (only edited records update)"
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

    parser = argparse.ArgumentParser(
        prog="cfstream",
        description="Stream documents from anywhere into a ContextFrame (Lance) dataset.",
        epilog="exit codes: 0 ok, 1 failure, 2 bad config or usage, 3 partial success, "
        "130 stopped by Ctrl-C",
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
    p.add_argument("config", metavar="CONFIG")
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

    p = sub.add_parser("validate", parents=[common], help="check a config without any network call")
    p.add_argument("config", metavar="CONFIG")
    p.set_defaults(func=cmd_validate)

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
    try:
        code: int = args.func(args)
        return code
    except ConfigError as exc:
        _err(f"cfstream: config error: {redact(str(exc))}")
        return EXIT_USAGE
    except CfStreamError as exc:
        _err(f"cfstream: {redact(str(exc))}")
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


if __name__ == "__main__":
    raise SystemExit(main())
