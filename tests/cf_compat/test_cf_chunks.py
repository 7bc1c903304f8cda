"""Chunk rows written by ``T.chunk`` read back through ContextFrame 0.1.1's own FrameDataset."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import cfstream as cf
from cfstream import transforms as T
from cfstream.records import Document, Tombstone
from cfstream.sinks import LanceSink

NOTE = "# Runbook\n\n" + "\n\n".join(
    f"## Step {i}\n\n" + " ".join(f"Do thing {i}.{j} carefully." for j in range(8))
    for i in range(4)
)


@cf.source(source_type="notes")
async def notes(deleted: bool = False, cursor: dict[str, Any] | None = None) -> AsyncIterator[Any]:
    if deleted:
        yield Tombstone("runbook")
        return
    yield [
        Document(source_id="runbook", title="Runbook", text_content=NOTE, tags=["ops"]),
        Document(source_id="short", title="Short", text_content="One line."),
    ]


async def test_frame_dataset_reads_chunks_and_parents(tmp_path: Path) -> None:
    contextframe = pytest.importorskip("contextframe")
    uri = str(tmp_path / "kb.lance")
    sink = LanceSink(uri, contextframe_compat=True)
    report = await (notes(name="notes") | T.chunk(max_tokens=40, overlap=4) | sink).run()
    assert report.ok

    frames = contextframe.FrameDataset.open(uri)
    parent_uuid = Document(source_id="runbook", title="", source_type="notes").uuid
    parent = frames.get_by_uuid(parent_uuid)
    assert parent.text_content == NOTE
    count = int(parent.metadata["custom_metadata"]["cfstream.chunks"])
    assert count > 2

    chunks = frames.find_related_to(parent_uuid, relationship_type="parent")
    assert len(chunks) == count
    chunks.sort(key=lambda r: r.metadata["position"])
    for i, frame in enumerate(chunks):
        meta = frame.metadata
        assert meta["position"] == i and meta["record_type"] == "document"
        assert meta["relationships"][0]["type"] == "parent"
        assert meta["relationships"][0]["id"] == parent_uuid
        assert meta["custom_metadata"]["cfstream.chunk_of"] == parent_uuid
        assert meta["custom_metadata"]["cfstream.chunk_index"] == str(i)
        assert meta["title"].startswith("Runbook")
        assert meta["tags"] == ["ops"]
        assert frame.text_content in NOTE  # a slice of the note (overlap included)
    assert any("## Step 3" in c.text_content for c in chunks)
    short = frames.get_by_uuid(
        Document(source_id="short#chunk-0", title="", source_type="notes").uuid
    )
    assert short.text_content == "One line." and short.metadata["title"] == "Short"

    # the document deleted at its source takes its chunks with it
    await (notes(deleted=True, name="notes") | T.chunk(max_tokens=40, overlap=4) | sink).run()
    frames = contextframe.FrameDataset.open(uri)
    assert frames.get_by_uuid(parent_uuid) is None
    assert frames.find_related_to(parent_uuid, relationship_type="parent") == []
    assert frames.count_by_filter("uuid IS NOT NULL") == 2  # "short" and its one chunk
