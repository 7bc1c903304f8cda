"""``Sink.stored``: what a destination already holds, for stages that skip unchanged work."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio

from cfstream import Document, LanceSink, MemorySink, source
from cfstream.records import Tombstone


def _docs(n: int, text: str = "t") -> list[Document]:
    return [Document(source_id=f"d{i}", title=f"T{i}", text_content=f"{text}{i}") for i in range(n)]


def test_lance_sink_reports_committed_rows(tmp_path: Path) -> None:
    uri = str(tmp_path / "kb.lance")

    @source(source_type="s")
    async def gen() -> AsyncIterator[Document]:
        for d in _docs(3):
            yield d

    async def main() -> None:
        sink = LanceSink(uri)
        assert await sink.stored(["x"], ["content_hash"]) == {}  # no dataset yet
        await (gen(name="s") | sink).run()
        probe = LanceSink(uri)
        uids = [
            Document(source_id=f"d{i}", title="", source_type="s", source_name="s").uuid
            for i in range(4)
        ]
        got = await probe.stored(uids, ["content_hash", "text_content", "no_such_column"])
        assert set(got) == set(uids[:3])
        assert got[uids[1]]["text_content"] == "t1"
        assert len(got[uids[1]]["content_hash"]) > 0
        assert "no_such_column" not in got[uids[1]]

    anyio.run(main)


def test_memory_sink_reports_latest_and_forgets_deleted() -> None:
    async def main() -> None:
        sink = MemorySink()
        a, b = _docs(2)
        for d in (a, b):
            d.source_type = "s"
        sink.items.extend([a, b, Tombstone(source_id="d1", source_type="s")])
        got = await sink.stored([a.uuid, b.uuid], ["text_content"])
        assert got == {a.uuid: {"text_content": "t0"}}

    anyio.run(main)
