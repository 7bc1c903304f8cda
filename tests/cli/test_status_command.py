"""``cfstream status``: per-source records (even of one type), sources gone from the config,
cursors for people, and a dataset folder instead of a config."""

from __future__ import annotations

from pathlib import Path

from conftest import json_out, run_cli


def _synced(tmp_path: Path) -> Path:
    for name in ("A", "B"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "README.md").write_text(f"# {name}\n")
    (tmp_path / "B" / "more.md").write_text("# more\n")
    cfg = tmp_path / "cfstream.yaml"
    cfg.write_text(
        "dataset: ./kb.lance\nsources:\n"
        "  alpha: {type: files, path: ./A, folder_headers: false}\n"
        "  beta: {type: files, path: ./B, folder_headers: false}\n"
    )
    assert run_cli("sync", str(cfg), "-q", cwd=tmp_path).returncode == 0
    return cfg


def test_records_are_counted_per_source_and_cursors_read_as_text(tmp_path: Path) -> None:
    cfg = _synced(tmp_path)
    info = json_out(run_cli("status", str(cfg), "--json", cwd=tmp_path))
    assert info["sources"]["alpha"]["records"] == 1 and info["sources"]["beta"]["records"] == 2
    assert info["other_rows"] == {} and info["sources_not_in_config"] == {}
    text = run_cli("status", str(cfg), cwd=tmp_path).stdout
    assert "{" not in text and "[" not in text  # no raw JSON cursor
    assert "1 partition" in text


def test_a_source_removed_from_the_config_still_shows_in_text(tmp_path: Path) -> None:
    cfg = _synced(tmp_path)
    cfg.write_text(
        cfg.read_text().replace("  beta: {type: files, path: ./B, folder_headers: false}\n", "")
    )
    proc = run_cli("status", str(cfg), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "beta: in the sync state, not in this config" in proc.stdout
    assert "rows no source of this config wrote: 2 files" in proc.stdout
    info = json_out(run_cli("status", str(cfg), "--json", cwd=tmp_path))
    assert info["other_rows"] == {"files": 2} and "beta" in info["sources_not_in_config"]


def test_status_of_a_dataset_folder(tmp_path: Path) -> None:
    _synced(tmp_path)
    proc = run_cli("status", "kb.lance", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "3 rows" in proc.stdout and "rows by type: 3 files" in proc.stdout
    assert "alpha: in the sync state" in proc.stdout and "beta: in the sync state" in proc.stdout
