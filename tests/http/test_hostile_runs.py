"""Hostile answers through a whole run: a real source, the runner, a Lance dataset and its state."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import lance
import orjson
import pytest
from aiohttp import web

from cfstream import Checkpoint, Document, Source
from cfstream.contract.context import SourceContext
from cfstream.errors import PaginationLoopError
from cfstream.http import HttpClient, LinkHeaderPaginator
from cfstream.sinks import LanceSink
from cfstream.sources.base import SourceOutput
from cfstream.testing import FakeAPI, FakeClock

ITEMS = 10
PAGE = 2


class PagedSource(Source):
    """One partition read with a Link-header paginator, a checkpoint (``after``) after each page."""

    source_type: ClassVar[str] = "paged"
    uses_http: ClassVar[bool] = True

    def __init__(self, base_url: str) -> None:
        super().__init__(name="paged")
        self.base_url = base_url

    async def partitions(self, ctx: SourceContext) -> Sequence[str]:
        return ["all"]

    async def read(
        self, partition: str, cursor: Mapping[str, Any] | None, ctx: SourceContext
    ) -> AsyncIterator[SourceOutput]:
        svc = ctx.http.service("paged", base_url=self.base_url)
        after = int((cursor or {}).get("after", 0))
        pages = svc.paginate(LinkHeaderPaginator(), "/items", params={"after": after})
        async with contextlib.aclosing(pages):
            async for page in pages:
                out: list[Any] = [
                    Document(
                        source_id=str(i["id"]), title=f"item {i['id']}", text_content=i["text"]
                    )
                    for i in page.data
                ]
                if page.data:
                    out.append(Checkpoint({"after": page.data[-1]["id"] + 1}))
                yield out


def _server(api: FakeAPI, *, cycle_at: int | None = None, cut_emoji_in: int | None = None) -> None:
    """Items 0..9, two a page. With ``cycle_at``, that page's next link goes back to ``after=2``
    (for 30 requests: code that does not catch the cycle ends instead of hanging); the text of
    item ``cut_emoji_in`` ends in a lone surrogate escape, half of a cut emoji."""
    served = 0

    def handler(request: web.Request) -> web.Response:
        nonlocal served
        served += 1
        after = int(request.query.get("after", "0"))
        items = [{"id": n, "text": f"text {n} END"} for n in range(after, min(after + PAGE, ITEMS))]
        body = orjson.dumps(items)
        if cut_emoji_in is not None and after <= cut_emoji_in < after + PAGE:
            body = body.replace(f"text {cut_emoji_in} END".encode(), rb"cut \ud83d")
        nxt = 2 if after == cycle_at and served < 30 else after + PAGE
        link = {"Link": f'</items?after={nxt}>; rel="next"'} if after + PAGE < ITEMS else {}
        return web.Response(body=body, headers=link, content_type="application/json")

    api.route("GET", "/items", handler)


async def test_a_cursor_cycle_fails_the_partition_and_the_next_run_resumes(
    tmp_path: Path,
) -> None:
    ds = tmp_path / "kb.lance"
    clock = FakeClock()
    async with FakeAPI() as api, HttpClient(clock=clock.time, sleep=clock.sleep) as http:
        _server(api, cycle_at=4)  # after=0, 2, 4 -> next link after=2 again
        # the only source failed, so the run raises its error
        with pytest.raises(PaginationLoopError, match="pagination cursor"):
            await (PagedSource(api.url) | LanceSink(str(ds))).run(http=http)
        assert [r.query["after"] for r in api.requests] == ["0", "2", "4"]  # no 29k requests
        rows = lance.dataset(str(ds)).to_table(columns=["source_id"]).column(0).to_pylist()
        assert sorted(int(s) for s in rows) == list(range(6))  # the pages read are kept

        api.clear()
        _server(api, cycle_at=None)  # the service is fixed: the next run resumes at after=6
        report = await (PagedSource(api.url) | LanceSink(str(ds))).run(http=http)
        assert report.error is None and report.failed_sources == []
        assert [r.query["after"] for r in api.requests] == ["6", "8"]
    rows = lance.dataset(str(ds)).to_table(columns=["source_id"]).column(0).to_pylist()
    assert sorted(int(s) for s in rows) == list(range(ITEMS))


async def test_a_page_with_a_lone_surrogate_imports_every_item(tmp_path: Path) -> None:
    ds = tmp_path / "kb.lance"
    async with FakeAPI() as api, HttpClient() as http:
        _server(api, cut_emoji_in=5)
        report = await (PagedSource(api.url) | LanceSink(str(ds))).run(http=http)
        assert report.error is None and report.dead_lettered == 0
        assert len(api.requests) == ITEMS // PAGE  # no page was retried or skipped
    rows = lance.dataset(str(ds)).to_table(columns=["source_id", "text_content"]).to_pylist()
    text = {int(r["source_id"]): r["text_content"] for r in rows}
    assert sorted(text) == list(range(ITEMS))
    assert text[5] == "cut \ufffd" and text[4] == "text 4 END"
