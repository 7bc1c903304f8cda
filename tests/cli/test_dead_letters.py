"""``cfstream dead-letters``: list what is outstanding, retry it, clear it; status agrees."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lance
from conftest import NOTES, cli_env, json_out, run_cli


def _config(write_config: Callable[..., Path]) -> Path:
    return write_config(f"""
        dataset: ./kb.lance
        pipeline:
          - map: cli_sources:flaky
        sources:
          notes: {{type: {NOTES}, count: 5}}
          memos: {{type: {NOTES}, count: 2, prefix: memo}}
    """)


def test_list_retry_and_status(write_config: Callable[..., Path], tmp_path: Path) -> None:
    cfg = _config(write_config)
    broken = cli_env(CFSTREAM_TEST_BREAK="note-1,note-3")
    first = run_cli("sync", str(cfg), "--json", "-q", cwd=tmp_path, env=broken)
    assert first.returncode == 3  # partial: two records dead-lettered
    notes = json_out(first)["sources"]["notes"]
    assert notes["failed"] == 2 and notes["status"].startswith("partial: 2 dead-lettered")
    assert json_out(first)["sources"]["memos"]["status"] == "ok"

    listed = json_out(run_cli("dead-letters", str(cfg), "--json", cwd=tmp_path))
    assert sorted(x["source_id"] for x in listed["outstanding"]) == ["note-1", "note-3"]
    text = run_cli("dead-letters", str(cfg), cwd=tmp_path).stdout
    assert "cannot map note-1" in text and "2 outstanding, 0 resolved" in text
    status = json_out(run_cli("status", str(cfg), "--json", cwd=tmp_path))
    assert status["sources"]["notes"]["dead_letters"] == 2
    assert status["sources"]["memos"]["dead_letters"] == 0

    # still broken: the retry fails them again (exit 3) and they stay outstanding, once each
    again = run_cli("dead-letters", str(cfg), "--retry", "--json", cwd=tmp_path, env=broken)
    assert again.returncode == 3 and json_out(again)["failed_again"] == 2
    listed = json_out(run_cli("dead-letters", str(cfg), "--json", cwd=tmp_path))
    assert sorted(x["source_id"] for x in listed["outstanding"]) == ["note-1", "note-3"]

    # the bug is fixed: the retry replays both through the pipeline into the dataset
    fixed = run_cli("dead-letters", str(cfg), "--retry", "--json", cwd=tmp_path)
    assert fixed.returncode == 0, fixed.stderr
    assert json_out(fixed) == {
        "ok": True,
        "replayed": 2,
        "failed_again": 0,
        "refetch_next_sync": [],
    }
    ids = set(lance.dataset(str(tmp_path / "kb.lance")).to_table()["source_id"].to_pylist())
    assert {"note-1", "note-3"} <= ids and len(ids) == 7
    assert json_out(run_cli("dead-letters", str(cfg), "--json", cwd=tmp_path))["outstanding"] == []
    status = json_out(run_cli("status", str(cfg), "--json", cwd=tmp_path))
    assert status["sources"]["notes"]["dead_letters"] == 0


def test_letters_fixed_by_a_later_sync_are_resolved_and_clear_forgets(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    cfg = _config(write_config)
    run_cli("sync", str(cfg), "-q", cwd=tmp_path, env=cli_env(CFSTREAM_TEST_BREAK="memo-0"))
    # a later full sync stores memo-0: its letter is resolved, not outstanding
    assert run_cli("sync", str(cfg), "--full", "-q", cwd=tmp_path).returncode == 0
    listed = json_out(run_cli("dead-letters", str(cfg), "--json", cwd=tmp_path))
    assert listed["outstanding"] == [] and listed["resolved"] == 1
    status = json_out(run_cli("status", str(cfg), "--json", cwd=tmp_path))
    assert status["sources"]["memos"]["dead_letters"] == 0
    cleared = run_cli("dead-letters", str(cfg), "--clear", "--source", "memos", cwd=tmp_path)
    assert cleared.returncode == 0 and "cleared 1 dead letters" in cleared.stdout
    assert not (tmp_path / "kb.lance" / "_cfstream" / "dead-letters.jsonl").read_text().strip()


def test_an_item_its_source_could_not_map_is_fetched_again_by_the_next_sync(
    tmp_path: Path,
) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "good.md").write_text("# good\n")
    (tmp_path / "docs" / "latin1.md").write_bytes(b"caf\xe9\n")  # not UTF-8: the source refuses it
    cfg = tmp_path / "cfstream.yaml"
    cfg.write_text("dataset: ./kb.lance\nsources:\n  docs: {type: files, path: ./docs}\n")
    assert run_cli("sync", str(cfg), "-q", cwd=tmp_path).returncode == 3
    retry = json_out(run_cli("dead-letters", str(cfg), "--retry", "--json", cwd=tmp_path))
    assert retry["replayed"] == 0 and retry["refetch_next_sync"] == ["docs"]
    (tmp_path / "docs" / "latin1.md").write_text("café\n")  # the user fixed the file
    report = json_out(run_cli("sync", str(cfg), "--json", "-q", cwd=tmp_path))
    assert report["sources"]["docs"]["fetched"] >= 2 and report["dead_lettered"] == 0
    assert json_out(run_cli("dead-letters", str(cfg), "--json", cwd=tmp_path))["outstanding"] == []
