"""The live progress display, as a person sees it: ``cfstream sync`` in a real pseudo-terminal."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import NOTES, cli_env

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


def _run_in_pty(args: list[str], cwd: Path, timeout: float = 60) -> tuple[int, str]:
    """Run the CLI with stdout and stderr on a pty; return its exit code and what the terminal got."""
    master, slave = pty.openpty()
    env = cli_env(TERM="xterm-256color", COLUMNS="120", LINES="40")
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cfstream.cli", *args],
        cwd=cwd,
        env=env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        close_fds=True,
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return code, b"".join(chunks).decode("utf-8", "replace")


def test_sync_on_a_terminal_shows_a_live_table_then_the_report(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    cfg = write_config(f"""
        dataset: ./kb.lance
        sources:
          notes: {{type: {NOTES}, count: 12, delay: 0.15}}
          memos: {{type: {NOTES}, count: 2, prefix: memo}}
    """)
    code, screen = _run_in_pty(["sync", str(cfg)], tmp_path)
    assert code == 0, screen
    text = ANSI.sub("", screen)
    assert "\x1b[" in screen  # drawn with terminal control sequences: the live display ran
    # the live table: its title and columns, a row per source and the sink's
    assert "cfstream sync" in text
    for column in ("source", "fetched", "unchanged", "deleted", "failed", "docs/s", "status"):
        assert column in text, column
    assert re.search(r"notes\s.*running", text), text
    assert "[sink]" in text  # literal text, not read as a rich markup tag
    # ...replaced at the end by the report
    assert re.search(r"notes\s*│\s*12\s*│", text) and "memos" in text
    assert "Traceback" not in text
    # a dry run says so in the report's title (it was read as a markup tag and vanished)
    code, screen = _run_in_pty(["sync", str(cfg), "--dry-run", "--full"], tmp_path)
    assert code == 0 and "[dry run]" in ANSI.sub("", screen)


def test_without_a_terminal_progress_is_plain_log_lines(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    cfg = write_config(f"""
        dataset: ./kb.lance
        sources:
          notes: {{type: {NOTES}, count: 3}}
    """)
    done = subprocess.run(
        [sys.executable, "-m", "cfstream.cli", "sync", str(cfg)],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0
    assert "\x1b[" not in done.stdout + done.stderr
    if not sys.platform.startswith("linux"):
        pytest.skip("the pty test above covers Linux terminals")
