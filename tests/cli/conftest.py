"""Helpers for the CLI tests: config files, the CLI in a subprocess, and its output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a CLI subprocess: ``cli_sources`` importable, no colours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CFSTREAM_TEST_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    env["NO_COLOR"] = "1"
    env.update(extra)
    return env


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m cfstream.cli ARGS`` and return the finished process."""
    return subprocess.run(
        [sys.executable, "-m", "cfstream.cli", *args],
        cwd=cwd,
        env=env or cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def json_out(proc: subprocess.CompletedProcess[str] | str) -> Any:
    """The JSON document a ``--json`` command printed on stdout."""
    text = proc if isinstance(proc, str) else proc.stdout
    return json.loads(text)


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Write a YAML config (dedented) into tmp_path and return its path."""

    def write(text: str, name: str = "cfstream.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return write


NOTES = "cli_sources:NotesSource"
MEMOS = "cli_sources:MemosSource"
