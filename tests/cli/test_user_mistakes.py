"""A user's mistake is one line saying what is wrong and what to do, never a traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import NOTES, cli_env, run_cli


def _one_line_error(proc: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("cfstream:")]
    assert len(lines) == 1, proc.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def _config(folder: Path, dataset: str) -> Path:
    (folder / "notes").mkdir(exist_ok=True)
    (folder / "notes" / "a.md").write_text("# A\n\nhello\n")
    cfg = folder / "cfstream.yaml"
    cfg.write_text(
        textwrap.dedent(f"""
            dataset: {dataset}
            sources:
              notes: {{type: files, path: {folder / "notes"}}}
        """).lstrip()
    )
    return cfg


@pytest.mark.parametrize("dataset", ["./afile", "./afile/kb.lance"])
@pytest.mark.parametrize("command", [["sync"], ["sync", "--dry-run"], ["status"], ["validate"]])
def test_dataset_path_that_is_or_sits_in_a_file(
    tmp_path: Path, dataset: str, command: list[str]
) -> None:
    (tmp_path / "afile").write_text("not a dataset")
    cfg = _config(tmp_path, dataset)
    proc = run_cli(*command, str(cfg), cwd=tmp_path)
    _one_line_error(proc, 2, "dataset", "afile", "folder")


def test_a_source_module_with_a_syntax_error(write_config: Callable[..., Path]) -> None:
    cfg = write_config("""
        dataset: ./kb.lance
        sources:
          mine: {type: "brokenmod:Thing"}
    """)
    (cfg.parent / "brokenmod.py").write_text("def broken(:\n    pass\n")
    env = cli_env(PYTHONPATH=f"{cfg.parent}{os.pathsep}{cli_env()['PYTHONPATH']}")
    for command in (["validate"], ["sync"]):
        proc = run_cli(*command, str(cfg), cwd=cfg.parent, env=env)
        _one_line_error(proc, 2, "sources.mine.type", "brokenmod.py", "line 1", "syntax")


def test_source_names_yaml_reads_as_booleans(write_config: Callable[..., Path]) -> None:
    cfg = write_config(f"""
        dataset: ./kb.lance
        sources:
          no: {{type: "{NOTES}"}}
    """)
    proc = run_cli("validate", str(cfg), cwd=cfg.parent)
    _one_line_error(proc, 2, "boolean", "quote")


def test_a_failing_source_shows_its_traceback_on_request(
    write_config: Callable[..., Path],
) -> None:
    cfg = write_config("""
        dataset: ./kb.lance
        sources:
          mine: {type: "buggy:Buggy"}
    """)
    (cfg.parent / "buggy.py").write_text(
        textwrap.dedent("""
            import cfstream as cf

            class Buggy(cf.Source):
                source_type = "buggy"

                async def read(self, ctx, partition, cursor):
                    helper_that_fails()
                    yield  # pragma: no cover

            def helper_that_fails():
                return {}["missing-key"]
        """)
    )
    env = cli_env(PYTHONPATH=f"{cfg.parent}{os.pathsep}{cli_env()['PYTHONPATH']}")
    plain = run_cli("sync", str(cfg), "-q", cwd=cfg.parent, env=env)
    assert plain.returncode == 1
    assert "Traceback" not in plain.stderr
    for flags in (["--traceback"], ["--log-level", "debug"]):
        shown = run_cli("sync", str(cfg), *flags, cwd=cfg.parent, env=env)
        assert shown.returncode == 1
        assert "Traceback" in shown.stderr, shown.stderr
        assert "helper_that_fails" in shown.stderr and "buggy.py" in shown.stderr


# -- a dataset folder this user cannot read, or only read -----------------------------------------
def _without_root_powers() -> list[str]:
    """A command prefix under which file permissions apply to us (root bypasses them)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: file permissions cannot apply")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search"]


def _run_as_user(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_without_root_powers(), sys.executable, "-m", "cfstream.cli", *args],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def synced(tmp_path: Path) -> Iterator[Path]:
    """A config whose dataset holds one sync; permissions restored afterwards for cleanup."""
    cfg = _config(tmp_path, "./kb.lance")
    assert run_cli("sync", str(cfg), "-q", cwd=tmp_path).returncode == 0
    yield cfg
    for p in [tmp_path / "kb.lance", *(tmp_path / "kb.lance").rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)


@pytest.mark.parametrize("command", [["status"], ["sync"], ["sync", "--dry-run"]])
def test_unreadable_dataset_folder(synced: Path, command: list[str]) -> None:
    (synced.parent / "kb.lance").chmod(0)
    proc = _run_as_user(*command, str(synced), cwd=synced.parent)
    _one_line_error(proc, 1, "kb.lance", "Permission denied", "dataset")


@pytest.mark.parametrize("command", [["status"], ["sync"], ["sync", "--dry-run"]])
def test_read_only_dataset_folder(synced: Path, command: list[str]) -> None:
    dataset = synced.parent / "kb.lance"
    for p in sorted([dataset, *dataset.rglob("*")], reverse=True):
        p.chmod(0o555 if p.is_dir() else 0o444)
    proc = _run_as_user(*command, str(synced), cwd=synced.parent)
    if command == ["sync"]:  # it must write: one line, exit 1
        _one_line_error(proc, 1, "kb.lance", "Permission denied", "dataset")
    else:  # reading is all these need
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr


# -- the config behaves as users expect ----------------------------------------------------------
def test_a_function_source_beside_the_config_with_paths_relative_to_it(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "notes").mkdir(parents=True)
    (project / "notes" / "a.md").write_text("# A\n")
    (project / "mysource.py").write_text(
        textwrap.dedent("""
            import cfstream as cf

            @cf.source(source_type="greetings")
            async def hello(count: int = 2):
                for i in range(count):
                    yield cf.Document(source_id=f"g{i}", title=f"Hello {i}")
        """)
    )
    (project / "cfstream.yaml").write_text(
        textwrap.dedent("""
            dataset: ./kb.lance
            sources:
              greetings: {type: "mysource:hello", count: 3}
              notes: {type: files, path: ./notes}
        """)
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = cli_env()  # no PYTHONPATH entry for the project: its folder is found from the config
    proc = run_cli("sync", str(project / "cfstream.yaml"), "--json", "-q", cwd=elsewhere, env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["sources"]["greetings"]["fetched"] == 3
    assert report["sources"]["notes"]["fetched"] >= 1  # ./notes is the project's, not elsewhere's
    assert (project / "kb.lance").is_dir() and not (elsewhere / "kb.lance").exists()


def test_validate_checks_local_paths(write_config: Callable[..., Path]) -> None:
    cfg = write_config("""
        dataset: ./kb.lance
        sources:
          vault: {type: obsidian, vault_path: /nonexistent/vault}
    """)
    proc = run_cli("validate", str(cfg), cwd=cfg.parent)
    _one_line_error(proc, 2, "sources.vault.vault_path", "does not exist")
    (cfg.parent / "afile").write_text("x")
    cfg.write_text(cfg.read_text().replace("/nonexistent/vault", "./afile"))
    proc = run_cli("validate", str(cfg), cwd=cfg.parent)
    _one_line_error(proc, 2, "sources.vault.vault_path", "not a folder")


def test_option_messages_name_the_yaml_keys(write_config: Callable[..., Path]) -> None:
    cfg = write_config("""
        dataset: ./kb.lance
        sources:
          team-chat: {type: slack, token: "xoxb-0000-secret-value", channels: []}
    """)
    line = _one_line_error(run_cli("validate", str(cfg), cwd=cfg.parent), 2, "sources.team-chat")
    assert "`channels`" in line and "`all_channels: true`" in line
    assert "=" not in line.split("team-chat:", 1)[1]  # no Python keyword-argument spelling
    assert "xoxb-0000-secret-value" not in line

    from cfstream.config import build_source, load_config
    from cfstream.sources import SlackSource

    cfg.write_text(cfg.read_text().replace("channels: []", "channels: [general]"))
    src = build_source(load_config(cfg).sources["team-chat"])
    assert src.option_name("token") == "sources.team-chat.token"
    assert SlackSource(token="t", channels=["c"]).option_name("token") == "SlackSource(token=...)"
