"""``cfstream search CONFIG QUERY``: a table for people, ``--json`` for programs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import NOTES, json_out, run_cli

from cfstream.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, main
from cfstream.records import record_uuid

FIELDS = {"uuid", "title", "source_type", "source_id", "source_url", "score", "text", "parent_uuid"}


@pytest.fixture(scope="module")
def synced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two sources of one type with the same ids (told apart by name), synced once (the tests
    only read it)."""
    tmp_path = tmp_path_factory.mktemp("search-cli")
    cfg = tmp_path / "cfstream.yaml"
    cfg.write_text(
        "dataset: ./kb.lance\n"
        "sink: {index: {fts: true}}\n"
        "sources:\n"
        f"  work: {{type: {NOTES}, count: 3, prefix: memo}}\n"
        f"  home: {{type: {NOTES}, count: 2, prefix: memo, version: 7}}\n"
    )
    proc = run_cli("sync", str(cfg), "--quiet", cwd=tmp_path)
    assert proc.returncode == EXIT_OK, proc.stderr
    return cfg


def test_json_lists_one_object_per_hit_with_every_field(
    synced: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["search", str(synced), "version 7", "--mode", "fts", "--json"]) == EXIT_OK
    hits = json_out(capsys.readouterr().out)
    assert [set(h) for h in hits] == [FIELDS] * len(hits)
    assert {h["text"] for h in hits[:2]} == {"version 7 of memo 0", "version 7 of memo 1"}
    assert all(h["uuid"] == h["parent_uuid"] and h["source_type"] == "notes" for h in hits)


def test_a_table_for_people_and_notes_on_stderr(
    synced: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["search", str(synced), "memo", "--k", "2"]) == EXIT_OK
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith("1. memo ") and "[notes]" in lines[0] and "score" in lines[0]
    assert lines[1].strip().startswith("notes:memo-")
    assert "version " in lines[2]
    assert lines[3].startswith("2. ")
    assert len([line for line in lines if line[:1].isdigit()]) == 2
    # the default (hybrid) on a dataset without vectors: full text, and a note saying why
    assert "note: full-text search only" in err


def test_source_keeps_only_that_sources_documents(
    synced: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["search", str(synced), "memo", "--source", "home", "--json"]) == EXIT_OK
    hits = json_out(capsys.readouterr().out)
    assert sorted(h["uuid"] for h in hits) == sorted(
        record_uuid("notes", f"memo-{i}", source_name="home") for i in range(2)
    )
    assert main(["search", str(synced), "memo", "--source", "nope"]) == EXIT_USAGE
    assert "unknown source 'nope'" in capsys.readouterr().err


def test_no_hits_is_not_an_error(synced: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", str(synced), "zebra", "--mode", "fts"]) == EXIT_OK
    assert "no results for 'zebra'" in capsys.readouterr().out


def test_user_mistakes_get_one_line_and_no_traceback(
    write_config: Callable[..., Path],
    synced: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    proc = run_cli("search", str(synced), "memo", "--mode", "vector", cwd=tmp_path)
    assert proc.returncode == EXIT_FAILURE
    assert "has no vectors" in proc.stderr and "Traceback" not in proc.stderr
    fresh = write_config(f"dataset: ./other.lance\nsources:\n  n: {{type: {NOTES}}}\n")
    assert main(["search", str(fresh), "memo"]) == EXIT_FAILURE
    assert "run `cfstream sync` first" in capsys.readouterr().err
    for bad in (["--k", "0"], ["--k", "many"], ["--mode", "semantic"]):
        assert main(["search", str(synced), "memo", *bad]) == EXIT_USAGE
        assert "usage:" in capsys.readouterr().err


def test_a_dataset_folder_is_searched_directly(
    synced: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset = synced.parent / "kb.lance"
    assert main(["search", str(dataset), "version 7", "--mode", "fts", "--json"]) == EXIT_OK
    assert json_out(capsys.readouterr().out)
    # --source names a config's source: with a dataset folder it is a usage error, in one line
    assert main(["search", str(dataset), "memo", "--source", "work"]) == EXIT_USAGE
    assert "--source needs a config" in capsys.readouterr().err
