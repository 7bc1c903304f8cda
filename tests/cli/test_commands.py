"""The cfstream command, driven by ``main(argv)`` and in a subprocess, on real Lance datasets."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lance
import pytest
from conftest import MEMOS, NOTES, cli_env, json_out, run_cli

from cfstream.cli import main
from cfstream.contract.report import RunReport

SECRET = "tok-ab12cd34ef56-secret"


def _config(write_config: Callable[..., Path], sources: str, pipeline: str = "") -> Path:
    return write_config(f"dataset: ./kb.lance\n{pipeline}sources:\n{sources}")


def _two_sources(
    write_config: Callable[..., Path], *, memo_opts: str = "", notes_opts: str = ""
) -> Path:
    return _config(
        write_config,
        f"  notes: {{type: {NOTES}, count: 4, token: '{SECRET}', schedule: 1s{notes_opts}}}\n"
        f"  memos: {{type: {MEMOS}, count: 2{memo_opts}}}\n",
        pipeline="pipeline:\n  - tag: [kb]\n  - validate: {}\n",
    )


def test_sync_then_incremental_then_status(
    write_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _two_sources(write_config)
    assert main(["sync", str(cfg), "--json", "--quiet"]) == 0
    report = json_out(capsys.readouterr().out)
    assert report["ok"] is True and report["exit_code"] == 0
    assert report["sink"]["inserted"] == 6
    ds = lance.dataset(str(tmp_path / "kb.lance"))
    assert ds.count_rows() == 6
    assert all("kb" in t for t in ds.to_table(columns=["tags"]).column("tags").to_pylist())

    assert main(["sync", str(cfg), "--json", "--quiet"]) == 0
    again = json_out(capsys.readouterr().out)
    assert again["fetched"] == 0 and again["sink"]["inserted"] == 0

    assert main(["status", str(cfg), "--json"]) == 0
    status = json_out(capsys.readouterr().out)
    assert status["rows"] == 6 and status["exists"] is True
    assert status["version"] == ds.version
    assert status["size_bytes"] > 0
    assert status["sources"]["notes"]["records"] == 4
    assert status["sources"]["memos"]["records"] == 2
    assert status["sources"]["notes"]["last_success"] is not None
    assert status["sources"]["notes"]["cursor"] == "1 partition; version 1"
    assert status["dead_letters"] == 0

    assert main(["status", str(cfg)]) == 0
    text = capsys.readouterr().out
    assert "6 rows" in text and "notes" in text and "never" not in text
    assert SECRET not in text


def test_sync_text_report_and_full_refresh(
    write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _two_sources(write_config)
    assert main(["sync", str(cfg), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "cfstream run: 6 documents" in out and "inserted 6" in out
    assert main(["sync", str(cfg), "--quiet", "--full", "--source", "memos"]) == 0
    out = capsys.readouterr().out
    assert "cfstream run: 2 documents" in out and "notes" not in out
    assert "unchanged 2" in out


def test_dead_letters_give_exit_3_and_the_file_path(
    write_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _two_sources(write_config, memo_opts=", bad: 2")
    assert main(["sync", str(cfg), "--quiet"]) == 3
    out = capsys.readouterr().out
    dead = tmp_path / "kb.lance" / "_cfstream" / "dead-letters.jsonl"
    assert f"dead letters: 2 -> {dead}" in out
    assert main(["status", str(cfg), "--json"]) == 0
    status = json_out(capsys.readouterr().out)
    assert status["sources"]["memos"]["dead_letters"] == 2
    assert status["sources"]["notes"]["dead_letters"] == 0
    assert status["dead_letter_path"] == str(dead)


def test_one_source_failing_is_partial_and_secret_is_redacted(
    write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _two_sources(write_config, notes_opts=", fail: true")
    assert main(["sync", str(cfg), "--json"]) == 3
    captured = capsys.readouterr()
    report = json_out(captured.out)
    assert report["sources"]["notes"]["error"].startswith("the notes service refused the token")
    assert report["sink"]["inserted"] == 2
    assert SECRET not in captured.out + captured.err


def test_every_source_failing_is_exit_1(
    write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(write_config, f"  notes: {{type: {NOTES}, fail: true, token: '{SECRET}'}}\n")
    assert main(["sync", str(cfg), "--json"]) == 1
    captured = capsys.readouterr()
    assert json_out(captured.out) == {
        "ok": False,
        "error": "the notes service refused the token ***",
        "exit_code": 1,
    }
    assert "sync failed" in captured.err and SECRET not in captured.err


def test_dry_run_writes_nothing(
    write_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _two_sources(write_config)
    assert main(["sync", str(cfg), "--dry-run", "--json", "--quiet"]) == 0
    report = json_out(capsys.readouterr().out)
    assert report["dry_run"] is True and report["fetched"] == 6
    assert not (tmp_path / "kb.lance").exists()


def test_config_errors_and_usage_errors_exit_2(
    write_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _config(write_config, f"  notes: {{type: {NOTES}, colour: red}}\n")
    for command in ("sync", "validate", "status", "watch"):
        assert main([command, str(bad)]) == 2
        err = capsys.readouterr().err
        assert f"config error: {bad}:3: sources.notes.colour: unknown key 'colour'" in err
    assert main(["sync", str(tmp_path / "missing.yaml")]) == 2
    assert "no such config file" in capsys.readouterr().err
    assert main(["sync"]) == 2  # argparse: CONFIG is required
    assert main(["frobnicate"]) == 2
    good = _two_sources(write_config)
    assert main(["sync", str(good), "--source", "nope"]) == 2
    assert "unknown source 'nope'" in capsys.readouterr().err


def test_missing_variable_in_a_subprocess(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    cfg = _config(
        write_config, f"  notes:\n    type: {NOTES}\n    token: ${{CFSTREAM_TEST_TOKEN}}\n"
    )
    proc = run_cli("sync", str(cfg), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert (
        f"{cfg}:5: sources.notes.token: environment variable CFSTREAM_TEST_TOKEN is not set"
        in proc.stderr
    )
    proc = run_cli(
        "sync",
        str(cfg),
        "--json",
        "--quiet",
        cwd=tmp_path,
        env=cli_env(CFSTREAM_TEST_TOKEN=SECRET),
    )
    assert proc.returncode == 0, proc.stderr
    assert json_out(proc)["sink"]["inserted"] == 3
    assert SECRET not in proc.stdout + proc.stderr


def test_validate_and_sources(
    write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _two_sources(write_config)
    assert main(["validate", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert f"{cfg}: OK" in out and "source notes" in out and "every 1s" in out
    assert main(["validate", str(cfg), "--json"]) == 0
    data = json_out(capsys.readouterr().out)
    assert data["sources"]["notes"]["options"]["token"] == "**********"
    assert data["stages"] == ["tag", "validate"]
    assert main(["sources", "--json"]) == 0
    sources = json_out(capsys.readouterr().out)
    assert set(sources) >= {"github", "slack", "obsidian", "files"}
    obsidian = sources["obsidian"]
    if obsidian["installed"]:
        assert obsidian["options"]["vault_path"]["required"] is True
    else:
        assert "cfstream.sources.obsidian" in obsidian["target"]
    assert main(["sources"]) == 0
    assert "github" in capsys.readouterr().out


def test_sources_lists_a_plugins_options_and_scopes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import cfstream.cli as cli

    monkeypatch.setattr(cli, "available_sources", lambda: {"notes": NOTES})
    monkeypatch.setattr(
        cli, "load_source_class", lambda name: __import__("cli_sources").NotesSource
    )
    assert main(["sources"]) == 0
    out = capsys.readouterr().out
    assert "required scopes: notes:read" in out
    assert "token: secret (e.g. ${VAR}), default null, secret" in out
    assert "count: integer, default 3" in out


def test_sources_shows_option_types_as_users_write_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["sources"]) == 0
    out = capsys.readouterr().out
    assert "cfstream." not in out and "docstring" not in out and "typing" not in out
    assert "credentials: mapping with type: oauth | service_account | access_token | file" in out
    assert "include: list of text" in out and "since: date-time (ISO 8601)" in out
    assert "state: one of open | closed | all" in out


def test_ray_engine_without_ray_is_a_usage_error(
    write_config: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import cfstream.cli as cli

    real_import = cli.importlib.import_module

    def no_ray(name: str, package: str | None = None) -> Any:
        if name == "cfstream.distributed.ray":
            raise ModuleNotFoundError("No module named 'ray'", name="ray")
        return real_import(name, package)

    monkeypatch.setattr(cli.importlib, "import_module", no_ray)
    cfg = _two_sources(write_config)
    assert main(["sync", str(cfg), "--engine", "ray"]) == 2
    assert "pip install 'cfstream[ray]'" in capsys.readouterr().err


def test_ray_engine_calls_run_config(
    write_config: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    calls: list[dict[str, Any]] = []

    def run_config(config: Any, **kwargs: Any) -> RunReport:
        calls.append({"sources": list(config.sources), **kwargs})
        report = RunReport(dataset=config.dataset)
        report.sink.inserted = 7
        return report

    fake = types.ModuleType("cfstream.distributed.ray")
    fake.run_config = run_config  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cfstream.distributed.ray", fake)
    cfg = _two_sources(write_config)
    code = main(["sync", str(cfg), "--engine", "ray", "--address", "ray://head:10001", "--json"])
    assert code == 0
    assert calls == [
        {
            "sources": ["notes", "memos"],
            "only": None,
            "full_refresh": False,
            "dry_run": False,
            "address": "ray://head:10001",
        }
    ]
    assert json_out(capsys.readouterr().out)["sink"]["inserted"] == 7


def test_sync_in_a_subprocess_with_json_logs(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    cfg = _two_sources(write_config, notes_opts=", fail: true")
    proc = run_cli("sync", str(cfg), "--log-format", "json", cwd=tmp_path)
    assert proc.returncode == 3
    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.strip()]
    assert lines and all({"time", "level", "logger", "message"} <= set(d) for d in lines)
    assert any("source notes failed" in d["message"] for d in lines)
    assert SECRET not in proc.stdout + proc.stderr
    assert "cfstream run: 2 documents" in proc.stdout


def _reader(stream: subprocess.Popen[str]) -> queue.Queue[str]:
    q: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert stream.stderr is not None
        for line in stream.stderr:
            q.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return q


def test_watch_runs_a_1s_schedule_twice_and_stops_on_sigint(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    cfg = _config(write_config, f"  notes: {{type: {NOTES}, count: 3, schedule: 1s}}\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cfstream.cli", "watch", str(cfg), "--log-format", "json"],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = _reader(proc)
    runs: list[float] = []
    seen: list[str] = []
    deadline = time.monotonic() + 30
    try:
        while len(runs) < 2 and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            seen.append(line)
            if '"message": "run notes #' in line:
                # when the run started: now, less its duration ("... in 0.12s"); the first run
                # also builds the search indexes, so the ends are not a schedule apart
                took = float(json.loads(line)["message"].rsplit(" in ", 1)[1].split("s")[0])
                runs.append(time.monotonic() - took)
        assert len(runs) == 2, "".join(seen)
        assert runs[1] - runs[0] >= 0.9  # the second run waited for its schedule
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    rest = []
    while not lines.empty():
        rest.append(lines.get())
    assert code == 130, "".join(seen + rest)  # stopped by Ctrl-C, as the README documents
    assert any("watch stopped" in line for line in rest), "".join(rest)
    messages = [json.loads(line)["message"] for line in seen if line.startswith("{")]
    assert "run notes #1: fetched 3, written 3" in messages[1]
    assert "run notes #2: fetched 0, written 0" in next(m for m in messages if "#2" in m)
    state = json.loads((tmp_path / "kb.lance" / "_cfstream" / "state.json").read_text())
    assert state["sources"]["notes"]["partitions"][""] == {"version": 1}


def test_watch_backs_off_a_failing_source_and_runs_the_others(
    write_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(
        write_config,
        f"  good: {{type: {NOTES}, count: 2, schedule: 1s}}\n"
        f"  bad: {{type: {MEMOS}, fail: true, schedule: 1s}}\n",
    )
    t0 = time.monotonic()
    assert main(["watch", str(cfg), "--max-runs", "2", "--json", "--quiet"]) == 0
    took = time.monotonic() - t0
    runs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    good = [r for r in runs if r["source"] == "good"]
    bad = [r for r in runs if r["source"] == "bad"]
    assert [r["ok"] for r in good] == [True, True]
    assert [r["ok"] for r in bad] == [False, False]
    assert bad[0]["error"] == "the notes service refused the token -"
    assert took >= 2.0  # the failing source waited 2 x its interval before retrying
    assert lance.dataset(str(tmp_path / "kb.lance")).count_rows() == 2


def test_watch_needs_a_schedule(
    write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(write_config, f"  notes: {{type: {NOTES}}}\n")
    assert main(["watch", str(cfg)]) == 2
    assert "no `schedule:`" in capsys.readouterr().err


def test_sync_grace_period_bounds_a_stuck_stop(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    cfg = write_config(
        f"""
        dataset: ./kb.lance
        pipeline:
          - map: cli_sources:hang
        sources:
          notes: {{type: {NOTES}, count: 5}}
        """
    )
    hanging = tmp_path / "hanging"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cfstream.cli", "sync", str(cfg), "--grace-period", "1", "--quiet"],
        cwd=tmp_path,
        env=cli_env() | {"CFSTREAM_TEST_HANGING": str(hanging)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not hanging.exists() and time.monotonic() < deadline:  # the map stage is stuck
            time.sleep(0.05)
        assert hanging.exists() and proc.poll() is None
        proc.send_signal(signal.SIGINT)
        started = time.monotonic()
        code = proc.wait(timeout=20)
        waited = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 130
    assert waited < 10, waited  # cancelled after the 1 s grace period, not the default 30 s


def test_version_flag_and_python_dash_m(capsys: pytest.CaptureFixture[str]) -> None:
    import cfstream

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"cfstream {cfstream.__version__}"
    done = subprocess.run(
        [sys.executable, "-m", "cfstream", "--version"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"cfstream {cfstream.__version__}"
