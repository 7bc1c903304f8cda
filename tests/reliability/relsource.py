"""``ItemsSource``: a small, real HTTP connector for the items API of ``fakeapi.py``.

It is written the way a production connector is: a :class:`~cfstream.Source` subclass with a
config model (so ``cfstream sync`` builds it from YAML as ``type: relsource:ItemsSource``), one
partition per collection, the run's shared HTTP client with a rate limit and retries, a Link-header
paginator, stubs fetched concurrently, a :class:`~cfstream.Checkpoint` after every page and an
incremental ``after`` cursor. Items it cannot map go to the dead-letter file with the reason.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, ClassVar

import anyio
from pydantic import Field

from cfstream import Checkpoint, Document, Secret, Source
from cfstream.contract.context import SourceContext
from cfstream.errors import HTTPError
from cfstream.http import BearerAuth, LinkHeaderPaginator, NoAuth, RateLimit, RetryPolicy, Service
from cfstream.sources.base import SourceConfig, SourceOutput


class ItemsConfig(SourceConfig):
    """Settings of the items connector."""

    base_url: str
    token: Secret | None = None
    collections: list[str] | None = Field(default=None, description="default: every collection")
    page_size: int = Field(default=100, ge=1, le=1000)
    rate_per_second: float = Field(default=100.0, gt=0)
    burst: int = Field(default=10, ge=1)
    concurrency: int = Field(default=8, ge=1)
    max_tries: int = Field(default=5, ge=1)
    retry_base: float = Field(default=0.5, gt=0)


class ItemsSource(Source):
    """Items of every collection of an items API, incrementally by ``seq``."""

    source_type: ClassVar[str] = "relitems"
    uses_http: ClassVar[bool] = True
    config_model: ClassVar[type[SourceConfig] | None] = ItemsConfig

    def __init__(self, *, name: str | None = None, **options: Any) -> None:
        super().__init__(name=name)
        self.cfg = ItemsConfig.model_validate(options)

    def _service(self, ctx: SourceContext) -> Service:
        cfg = self.cfg
        return ctx.http.service(
            f"items-{self.name}",
            base_url=cfg.base_url,
            auth=BearerAuth(cfg.token) if cfg.token is not None else NoAuth(),
            rate=RateLimit(per_second=cfg.rate_per_second, burst=cfg.burst),
            concurrency=cfg.concurrency,
            retry=RetryPolicy(max_tries=cfg.max_tries, base=cfg.retry_base, max_backoff=5.0),
        )

    async def partitions(self, ctx: SourceContext) -> Sequence[str]:
        """The configured collections, or every collection the API lists."""
        if self.cfg.collections is not None:
            return list(self.cfg.collections)
        resp = await self._service(ctx).get("/v1/collections")
        return [str(c) for c in resp.data["collections"]]

    async def read(
        self, partition: str, cursor: Mapping[str, Any] | None, ctx: SourceContext
    ) -> AsyncIterator[SourceOutput]:
        """Pages of documents after the saved ``after`` cursor, each followed by a checkpoint."""
        svc = self._service(ctx)
        after = int((cursor or {}).get("after", 0))
        pager = LinkHeaderPaginator(items_path="items")
        params = {"after": after, "limit": self.cfg.page_size}
        pages = svc.paginate(pager, f"/v1/collections/{partition}/items", params=params)
        async with contextlib.aclosing(pages):
            async for page in pages:
                out: list[Any] = await self._map_page(svc, partition, pager.items(page), ctx)
                out.append(Checkpoint({"after": int(page.data["last_seq"])}))
                yield out
                if ctx.stopping:
                    return

    async def _map_page(
        self, svc: Service, collection: str, items: list[Any], ctx: SourceContext
    ) -> list[Any]:
        docs: list[Document | None] = [None] * len(items)

        async def one(i: int, raw: dict[str, Any]) -> None:
            docs[i] = await self._map(svc, collection, raw, ctx)

        async with anyio.create_task_group() as tg:
            for i, raw in enumerate(items):
                if isinstance(raw, dict) and ("href" in raw or "body_url" in raw):
                    tg.start_soon(one, i, raw)
                else:
                    docs[i] = self._document(collection, raw, raw.get("body"), ctx)
        return [d for d in docs if d is not None]

    async def _map(
        self, svc: Service, collection: str, raw: dict[str, Any], ctx: SourceContext
    ) -> Document | None:
        sid = raw.get("id")
        try:
            if "href" in raw:
                full = (await svc.get(raw["href"])).data
                return self._document(collection, full, full.get("body"), ctx)
            blob = await svc.get(raw["body_url"], expect="bytes")
        except HTTPError as exc:
            ctx.dead_letter(exc, raw, source_id=sid)
            return None
        try:
            body = blob.content.decode("utf-8")
        except UnicodeDecodeError as exc:
            ctx.dead_letter(f"the body is not valid UTF-8: {exc}", raw, source_id=sid)
            return None
        return self._document(collection, raw, body, ctx)

    def _document(
        self, collection: str, raw: Any, body: Any, ctx: SourceContext
    ) -> Document | None:
        if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
            ctx.dead_letter("missing field 'id' (a string)", raw)
            return None
        sid = raw["id"]
        return Document(
            source_id=sid,
            title=raw.get("title"),  # type: ignore[arg-type]  # validate() checks it
            text_content=body,
            updated_at=raw.get("updated_at"),
            tags=raw.get("tags"),
            collection=collection,
            source_url=f"{self.cfg.base_url}/v1/items/{sid}",
            custom_metadata={"rel_seq": raw.get("seq")},
        )
