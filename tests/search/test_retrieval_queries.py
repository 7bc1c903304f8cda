"""The labelled retrieval query set of the search benchmark (``benchmarks/retrieval_queries.json``)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import anyio
import pytest

import cfstream as cf
from cfstream.records import record_uuid
from cfstream.sinks import LanceSink
from cfstream.sources.files import FilesSource
from cfstream.sources.obsidian import ObsidianSource

REPO = Path(__file__).resolve().parents[2]
QUERIES = REPO / "benchmarks" / "retrieval_queries.json"


@pytest.fixture(scope="module")
def labelled() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(QUERIES.read_text(encoding="utf-8"))
    return data


def _title(path: Path) -> str:
    heading = re.search(r"^# (.+)$", path.read_text(encoding="utf-8"), re.MULTILINE)
    return heading.group(1).strip() if heading else path.stem


def test_the_set_is_well_formed(labelled: dict[str, Any]) -> None:
    queries = labelled["queries"]
    assert len(queries) >= 30
    assert len({q["id"] for q in queries}) == len(queries)
    assert len({q["query"].lower() for q in queries}) == len(queries)
    for q in queries:
        assert q["expected"], q["id"]
        for e in q["expected"]:
            corpus = labelled["corpora"][e["corpus"]]
            path = REPO / corpus["path"] / e["source_id"]
            assert path.is_file(), (q["id"], path)
            # phrased by a user, not a copy of the title
            assert q["query"].lower() != _title(path).lower(), q["id"]
    assert {e["corpus"] for q in queries for e in q["expected"]} == set(labelled["corpora"])


def test_full_text_search_answers_most_of_them(labelled: dict[str, Any], tmp_path: Path) -> None:
    """A floor, not the benchmark: the labels point at documents search can find."""
    uri = str(tmp_path / "kb.lance")
    corpora = labelled["corpora"]

    async def sync() -> None:
        for name, corpus in corpora.items():
            folder = str(REPO / corpus["path"])
            src = (
                ObsidianSource(vault_path=folder, name=name)
                if corpus["type"] == "obsidian"
                else FilesSource(path=folder, name=name)
            )
            await (src | LanceSink(uri)).run()

    anyio.run(sync)
    found = 0
    for q in labelled["queries"]:
        want = {
            record_uuid(corpora[e["corpus"]]["type"], e["source_id"], source_name=e["corpus"])
            for e in q["expected"]
        }
        hits = cf.search(uri, q["query"], k=5, mode="fts")
        found += any(h.parent_uuid in want for h in hits)
    assert found / len(labelled["queries"]) >= 0.8
