"""A cfstream source for the benchmark API (:mod:`benchmarks.fake_api`), and the benchmark pipeline.

:class:`BenchDocsSource` is written the way a connector is: a :class:`~cfstream.Source` subclass
whose partitions are the API's channels, reading through the run's shared HTTP client
(``ctx.http.service``) with the :class:`~cfstream.http.BodyCursorPaginator`, yielding each page as
a list that ends with a :class:`~cfstream.Checkpoint` holding the newest ``updated_at`` seen, and
resuming from it with the API's ``updated_after`` filter.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, ClassVar

from cfstream import transforms as T
from cfstream.contract.context import SourceContext
from cfstream.engine.pipeline import Pipeline
from cfstream.http import BodyCursorPaginator
from cfstream.records import Checkpoint, Document, Item
from cfstream.sinks import LanceSink
from cfstream.sources.base import Source, SourceOutput

__all__ = ("BenchDocsSource", "build_pipeline", "touch")

PAGE_SIZE = 100


class BenchDocsSource(Source):
    """The benchmark API's documents, one partition per channel.

    :param base_url: the fake API's URL.
    :param concurrency: channels read at once, and requests in flight for the service.
    """

    source_type: ClassVar[str] = "benchdocs"
    uses_http: ClassVar[bool] = True

    def __init__(self, base_url: str, *, concurrency: int = 8, name: str | None = None) -> None:
        super().__init__(name=name, max_concurrency=concurrency)
        self.base_url = base_url.rstrip("/")
        self.concurrency = concurrency

    def _service(self, ctx: SourceContext) -> Any:
        return ctx.http.service("benchdocs", base_url=self.base_url, concurrency=self.concurrency)

    async def partitions(self, ctx: SourceContext) -> Sequence[str]:
        """The channel ids (``GET /channels``)."""
        response = await self._service(ctx).get("/channels")
        return [str(c["id"]) for c in response.data["items"]]

    async def read(
        self, partition: str, cursor: Mapping[str, Any] | None, ctx: SourceContext
    ) -> AsyncIterator[SourceOutput]:
        """Every document of the channel updated after the saved cursor, a page at a time."""
        api = self._service(ctx)
        since = (cursor or {}).get("updated_after")
        pager = BodyCursorPaginator("next_cursor", "cursor", items_path="items")
        params = {"limit": PAGE_SIZE, "updated_after": since}
        base = self.base_url
        async for page in api.paginate(pager, f"/channels/{partition}/docs", params=params):
            batch: list[Item] = []
            for d in page.data["items"]:
                doc_id = d["id"]
                updated = d["updated_at"]
                batch.append(
                    Document(
                        source_id=doc_id,
                        title=d["title"],
                        text_content=d["body"],
                        author=d["author"]["name"],
                        tags=d["labels"],
                        created_at=d["created_at"],
                        updated_at=updated,
                        source_url=f"{base}/docs/{doc_id}",
                        collection=f"channel-{d['channel']}",
                    )
                )
                since = updated  # the API lists oldest first
            if since is not None:
                batch.append(Checkpoint({"updated_after": since}))
            if batch:
                yield batch
            if ctx.stopping:
                return


def touch(doc: Document) -> Document:
    """The benchmark's map step: a light clean-up a user might do (strip the title)."""
    doc.title = doc.title.strip()
    return doc


def build_pipeline(
    url: str,
    uri: str,
    *,
    concurrency: int = 8,
    mode: str = "upsert",
    batch_rows: int = 10_000,
) -> Pipeline:
    """``BenchDocsSource -> map -> validate -> tag -> dedupe -> LanceSink(upsert)``."""
    src: Source = BenchDocsSource(url, concurrency=concurrency)
    sink = LanceSink(uri, mode=mode, batch_rows=batch_rows)  # type: ignore[arg-type]
    return src | T.map(touch) | T.validate() | T.tag("bench") | T.dedupe() | sink
