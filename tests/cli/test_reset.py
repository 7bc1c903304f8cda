"""``cfstream reset``: forget one source's cursors, and with ``--rows`` delete its rows only."""

from __future__ import annotations

from pathlib import Path

import lance
from conftest import json_out, run_cli


def _two_folders(tmp_path: Path) -> Path:
    for name in ("A", "B"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "README.md").write_text(f"# {name}\n\nabout {name}\n")
        (tmp_path / name / f"{name}-only.md").write_text(f"# only in {name}\n")
    cfg = tmp_path / "cfstream.yaml"
    cfg.write_text(
        "dataset: ./kb.lance\nsources:\n"
        "  alpha: {type: files, path: ./A, folder_headers: false}\n"
        "  beta: {type: files, path: ./B, folder_headers: false}\n"
    )
    return cfg


def _titles(tmp_path: Path) -> list[str]:
    rows = lance.dataset(str(tmp_path / "kb.lance")).to_table(columns=["title"]).to_pylist()
    return sorted(r["title"] for r in rows)


def test_reset_rows_deletes_one_source_of_a_shared_type_and_sync_reads_it_again(
    tmp_path: Path,
) -> None:
    cfg = _two_folders(tmp_path)
    assert run_cli("sync", str(cfg), "-q", cwd=tmp_path).returncode == 0
    assert _titles(tmp_path) == ["A", "B", "only in A", "only in B"]

    # cursors only: no row goes, and the next sync reads alpha again (unchanged rows skipped)
    reset = run_cli("reset", str(cfg), "--source", "alpha", "--json", cwd=tmp_path)
    assert reset.returncode == 0, reset.stderr
    assert json_out(reset)["sources"] == {"alpha": {"cursors": "forgotten"}}
    again = json_out(run_cli("sync", str(cfg), "--json", "-q", cwd=tmp_path))
    assert again["sources"]["alpha"]["fetched"] == 2 and again["sources"]["beta"]["fetched"] == 0

    # --rows: alpha's rows go, beta's (same type, same README.md id) stay
    reset = run_cli("reset", str(cfg), "--source", "alpha", "--rows", cwd=tmp_path)
    assert reset.returncode == 0, reset.stderr
    assert "alpha: cursors forgotten, 2 rows deleted" in reset.stdout
    assert _titles(tmp_path) == ["B", "only in B"]
    assert run_cli("sync", str(cfg), "-q", cwd=tmp_path).returncode == 0
    assert _titles(tmp_path) == ["A", "B", "only in A", "only in B"]


def test_reset_names_an_unknown_source(tmp_path: Path) -> None:
    cfg = _two_folders(tmp_path)
    proc = run_cli("reset", str(cfg), "--source", "gamma", cwd=tmp_path)
    assert proc.returncode == 2 and "unknown source 'gamma'" in proc.stderr
