"""``cfstream demo``: first sync, an incremental sync with nothing new, and ``--change``."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cli_env, json_out, run_cli

import cfstream.demo as demo
from cfstream.cli import main
from cfstream.sources.registry import load_source_class

REPO = Path(__file__).resolve().parents[2]
DEMO_DATA = REPO / "cfstream" / "demo_data"


def _have(type_name: str) -> bool:
    try:
        load_source_class(type_name)
    except Exception:
        return False
    return True


def _sample_data(root: Path) -> Path:
    vault = root / "vault"
    (vault / ".obsidian").mkdir(parents=True)
    (vault / "Projects").mkdir()
    (vault / "Index.md").write_text(
        "---\ntags: [home]\n---\n# Index\nSee [[Alpha]] and [[Beta]].\n"
    )
    (vault / "Projects" / "Alpha.md").write_text("# Alpha\nLinks back to [[Index]]. #project\n")
    (vault / "Projects" / "Beta.md").write_text("# Beta\nNothing here yet.\n")
    docs = root / "docs"
    (docs / "guide").mkdir(parents=True)
    (docs / "README.md").write_text("# Docs\nStart with the guide.\n")
    (docs / "guide" / "install.md").write_text("# Install\nRun make demo.\n")
    (docs / "guide" / "usage.txt").write_text("Usage: cfstream sync CONFIG\n")
    return root


@pytest.mark.skipif(
    not (_have("obsidian") and _have("files")), reason="needs the obsidian and files connectors"
)
def test_demo_first_run_then_nothing_new_then_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _sample_data(tmp_path / "examples")
    monkeypatch.setattr(demo, "demo_data_dir", lambda: data)
    # only the file sources: the HTTP fakes' own changes would change the counts below
    monkeypatch.setattr(demo, "discover_fakes", lambda services=(): ([], list(demo.HTTP_SERVICES)))
    dataset = tmp_path / "demo.lance"

    assert main(["demo", "--dataset", str(dataset), "--json", "--quiet"]) == 0
    first = json_out(capsys.readouterr().out)
    assert first["first_run"] is True
    assert {"vault", "docs"} <= set(first["sources"])
    assert first["report"]["sink"]["inserted"] >= 6  # 6 files, plus folder headers
    assert len(first["samples"]) == 3
    assert {s["source_type"] for s in first["samples"]} >= {"obsidian", "files"}
    # the repository's sample data was copied, never used in place
    copy = dataset / "_cfstream" / "demo"
    assert (copy / "vault" / "Index.md").exists() and (copy / "docs" / "README.md").exists()

    assert main(["demo", "--dataset", str(dataset), "--json", "--quiet"]) == 0
    second = json_out(capsys.readouterr().out)
    assert second["first_run"] is False
    assert second["report"]["sink"]["inserted"] == 0
    assert second["report"]["sink"]["updated"] == 0
    assert second["updated_records"] == []

    assert main(["demo", "--dataset", str(dataset), "--change"]) == 0
    out = capsys.readouterr().out
    # the sink's counts cover documents and their chunks; the demo says how many of each
    assert re.search(r"incremental sync: 0 new, \d+ updated rows \(4 records, \d+ chunks", out), out
    edited = [
        "vault/Index.md",
        "vault/Projects/Alpha.md",
        "docs/README.md",
        "docs/guide/install.md",
    ]
    assert f"# --change edited: {', '.join(edited)}" in out
    assert "three records from the dataset:" in out
    # the originals are untouched; the copies carry the edit
    assert "Edited by" not in (data / "vault" / "Index.md").read_text()
    assert "change #1" in (copy / "vault" / "Index.md").read_text()

    assert main(["demo", "--dataset", str(dataset), "--json", "--quiet", "--change"]) == 0
    again = json_out(capsys.readouterr().out)
    assert again["documents_written"] == 4
    assert again["report"]["sink"]["updated"] == 4 + again["chunks_written"]
    assert sorted(r["title"] for r in again["updated_records"]) == [
        "Alpha",
        "Docs",
        "Index",
        "Install",
    ]


def test_demo_without_sample_data_fails_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(demo, "demo_data_dir", lambda: None)
    monkeypatch.setattr(demo, "discover_fakes", lambda services=(): ([], list(demo.HTTP_SERVICES)))
    assert main(["demo", "--dataset", str(tmp_path / "d.lance")]) == 1
    assert "the demo found no sample data" in capsys.readouterr().err


def test_the_real_demo_twice_in_a_subprocess(tmp_path: Path) -> None:
    first = run_cli(
        "demo", "--dataset", str(tmp_path / "demo.lance"), "--json", "--quiet", cwd=tmp_path
    )
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    assert result["report"]["sink"]["inserted"] > 0
    # the report's "documents fetched" and the rows written differ only by records fetched twice
    # (stored once), which the demo names per source
    twice = sum(result["fetched_twice"].values())
    assert result["report"]["fetched"] == result["documents_written"] + twice
    assert result["report"]["sink"]["inserted"] == (
        result["documents_written"] + result["chunks_written"]
    )
    # the demo ends with a search that finds the vault's note on the question asked
    assert result["search"]["hits"][0]["title"] == "Sourdough starter", result["search"]
    second = run_cli(
        "demo", "--dataset", str(tmp_path / "demo.lance"), "--json", "--quiet", cwd=tmp_path
    )
    assert second.returncode == 0, second.stderr
    sink = json.loads(second.stdout)["report"]["sink"]
    assert sink["inserted"] == 0 and sink["updated"] == 0
    changed = run_cli(
        "demo",
        "--dataset",
        str(tmp_path / "demo.lance"),
        "--change",
        "--json",
        "--quiet",
        cwd=tmp_path,
    )
    assert changed.returncode == 0, changed.stderr
    result = json.loads(changed.stdout)
    written = result["documents_written"]
    assert result["changed"] and 0 < written <= len(result["changed"])
    assert len(result["updated_records"]) == written
    assert not list(DEMO_DATA.rglob("*.md.orig"))
    assert "Edited by" not in "".join(p.read_text() for p in DEMO_DATA.rglob("*.md"))


# the demo with the connectors' real request pacing (no demo rates): the sync lasts ~20 s, long
# enough to be interrupted after its first commit
_SLOW_DEMO = """
import sys
import cfstream.demo as demo
getattr(demo, "DEMO_RATE_OPTIONS", {}).clear()
from cfstream.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_the_demo_as_it_stops_sync(tmp_path: Path, sig: signal.Signals) -> None:
    dataset = tmp_path / "demo.lance"
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_DEMO, "demo", "--dataset", str(dataset), "--json"],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (dataset / "_versions").exists() and proc.poll() is None:
            assert time.monotonic() < deadline, "no first commit within 60 s"
            time.sleep(0.05)
        assert proc.poll() is None, "the demo ended before it could be interrupted"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err[-3000:]
    assert "stopping: finishing in-flight work" in err
    assert "Traceback" not in err, err[-3000:]
    result = json.loads(out)
    assert result["report"]["stopped_early"] is True
    assert result["exit_code"] == 130
    # what was committed is kept: the dataset opens with the rows the report says were written
    import lance

    rows = lance.dataset(str(dataset)).count_rows()
    assert 0 < rows == result["report"]["sink"]["inserted"]
