"""``cfstream status`` summarises the state kept in state.json and in the item store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cfstream.cli import main


def test_status_counts_tracked_items_and_never_creates_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "docs"
    for top in ("a", "b"):
        (root / top).mkdir(parents=True)
        for i in range(3):
            (root / top / f"n{i}.md").write_text(f"# {top} {i}\n")
    ds = tmp_path / "kb.lance"
    cfg = tmp_path / "cfstream.yaml"
    cfg.write_text(f"dataset: {ds}\nsources:\n  notes:\n    type: files\n    path: {root}\n")

    assert main(["status", str(cfg), "--json"]) == 0
    before = json.loads(capsys.readouterr().out)
    assert before["sources"]["notes"]["tracked_items"] == 0
    assert before["sources"]["notes"]["cursor"] == "no cursor (next sync is a full sync)"
    assert not (ds / "_cfstream" / "state.items.sqlite").exists()  # status only reads

    assert main(["sync", str(cfg), "--json", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["status", str(cfg), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    notes = status["sources"]["notes"]
    assert notes["tracked_items"] == 6 + 3  # six files, headers "/", "a/", "b/"
    assert notes["partitions"] == 3
    assert notes["cursor"] == "3 partitions, 9 items tracked"
    assert main(["status", str(cfg)]) == 0
    assert "9 items tracked" in capsys.readouterr().out
