"""Helpers of the reliability suite: sizes, the fake API in its own process, the CLI, datasets.

CI sizes by default; ``CFSTREAM_SOAK=1`` (``make soak``) switches to the full sizes and writes the
figures every test recorded to ``tests/reliability/soak-report.json`` (and prints them under ``-s``
or in the terminal summary).
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lance
import orjson
import pytest

HERE = Path(__file__).resolve().parent
SOAK = os.environ.get("CFSTREAM_SOAK") == "1"
REPORT_PATH = HERE / "soak-report.json"

#: figures recorded by the tests: name -> value (summed when recorded twice)
FIGURES: dict[str, Any] = {}


def size(ci: int, soak: int) -> int:
    """``soak`` under ``CFSTREAM_SOAK=1``, else ``ci``."""
    return soak if SOAK else ci


def record(name: str, value: Any) -> None:
    """Add a figure to the soak report (numbers add up across tests)."""
    if isinstance(value, int | float) and isinstance(FIGURES.get(name), int | float):
        FIGURES[name] += value
    else:
        FIGURES[name] = value


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    FIGURES["mode"] = "soak" if SOAK else "ci"
    if SOAK:
        REPORT_PATH.write_text(json.dumps(FIGURES, indent=2, sort_keys=True) + "\n")
    terminalreporter.section("reliability figures")
    for key in sorted(FIGURES):
        terminalreporter.write_line(f"{key}: {FIGURES[key]}")
    if SOAK:
        terminalreporter.write_line(f"(written to {REPORT_PATH})")


# -- subprocesses ----------------------------------------------------------------------------------


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of a child process: this folder importable (fakeapi, relsource), no colour."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REL_", "CFSTREAM_TEST_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    env["NO_COLOR"] = "1"
    env.update(extra)
    return env


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            raise TimeoutError(f"no output from {proc.args!r} within {timeout} s")
        return proc.stdout.readline()
    finally:
        sel.close()


class FakeServer:
    """``python -m cfstream.testing.server --setup fakeapi:configure`` in its own process."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cfstream.testing.server", "--setup", "fakeapi:configure"],
            env=subprocess_env(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        line = _readline(self.proc, 30)
        if not line.startswith("FakeAPI listening on "):
            self.close()
            raise RuntimeError(f"the fake API did not start: {line!r}")
        self.url = line.split(" on ", 1)[1].strip()

    def admin(self, what: str, **query: Any) -> Any:
        qs = "&".join(f"{k}={v}" for k, v in query.items())
        with urllib.request.urlopen(f"{self.url}/_admin/{what}?{qs}", timeout=30) as resp:
            return json.loads(resp.read())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def fake_server() -> Iterator[Any]:
    """A factory of fake API processes, all stopped at the end of the test."""
    servers: list[FakeServer] = []

    def start(**env: str) -> FakeServer:
        server = FakeServer(env)
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.close()


def cli_args(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "cfstream.cli", "sync", str(config), *args]


def run_sync(
    config: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``cfstream sync CONFIG ARGS`` in a subprocess, to the end."""
    return subprocess.run(
        cli_args(config, *args),
        env=subprocess_env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_sync(
    config: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """``cfstream sync CONFIG ARGS`` in a subprocess, not waited for."""
    return subprocess.Popen(
        cli_args(config, *args),
        env=subprocess_env(**(env or {})),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def write_config(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def items_config(
    path: Path,
    dataset: Path,
    url: str,
    *,
    sink: str = "{batch_rows: 500, max_latency: 1}",
    pipeline: str = "[{validate: {max_text_bytes: 1000000}}]",
    source_options: str = "",
    sources: dict[str, str] | None = None,
) -> Path:
    """A config syncing the items API at ``url`` into ``dataset``.

    ``sources`` maps extra source names to their option lines (default: one source ``items``).
    """
    specs = sources or {"items": ""}
    blocks = []
    for name, extra in specs.items():
        opts = "\n".join(
            f"    {line.strip()}"
            for line in (source_options + "\n" + extra).splitlines()
            if line.strip()
        )
        blocks.append(f"  {name}:\n    type: relsource:ItemsSource\n    base_url: {url}\n{opts}")
    text = f"dataset: {dataset}\nsink: {sink}\npipeline: {pipeline}\nsources:\n" + "\n".join(blocks)
    path.write_text(text + "\n", encoding="utf-8")
    return path


# -- datasets and state ----------------------------------------------------------------------------


def check_dataset(path: Path) -> Any:
    """Open the dataset, run Lance's own validation and read it whole; None when not created."""
    if not (path / "_versions").exists():
        return None
    ds = lance.dataset(str(path))
    ds.validate()
    return ds.to_table()


def rows_by_source_id(table: Any) -> dict[str, int]:
    """source_id -> number of rows."""
    counts: dict[str, int] = {}
    if table is None:
        return counts
    for sid in table.column("source_id").to_pylist():
        counts[sid] = counts.get(sid, 0) + 1
    return counts


def load_state(dataset: Path) -> dict[str, Any]:
    """The parsed state file of ``dataset`` (an empty state when absent)."""
    p = dataset / "_cfstream" / "state.json"
    if not p.exists():
        return {"sources": {}}
    data: dict[str, Any] = orjson.loads(p.read_bytes())
    return data


def cursors(dataset: Path, source: str = "items") -> dict[str, int]:
    """partition -> saved ``after`` cursor."""
    parts = (load_state(dataset)["sources"].get(source) or {}).get("partitions") or {}
    return {k: int(v["after"]) for k, v in parts.items()}


def committed_high_water(table: Any) -> dict[str, int]:
    """collection -> highest seq committed (source ids are ``<collection>-<seq>``)."""
    seqs: dict[str, list[int]] = {}
    if table is None:
        return {}
    for sid in table.column("source_id").to_pylist():
        c, _, num = sid.rpartition("-")
        seqs.setdefault(c, []).append(int(num))
    return {c: max(v) for c, v in seqs.items()}


def wait_for(predicate: Any, timeout: float, interval: float = 0.01) -> bool:
    """Poll ``predicate`` until true or ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
