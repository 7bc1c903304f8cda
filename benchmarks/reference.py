"""The hand-written reference loop: aiohttp -> orjson -> pyarrow -> ``lance.write_dataset``.

What a developer would write without a framework: ``concurrency`` channels fetched at once (one
request in flight each), pages decoded with orjson, rows buffered as dicts and appended to Lance
with ``pa.Table.from_pylist`` + ``lance.write_dataset`` every ``batch_rows`` rows, in a worker
thread so that fetching goes on while Lance writes. No transforms, no validation, no dedupe, no
upsert, no checkpoints: the ceiling a framework is measured against.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import lance
import orjson
import pyarrow as pa

__all__ = ("reference_import",)


async def _import(url: str, uri: str, concurrency: int, batch_rows: int) -> int:
    buffer: list[dict[str, Any]] = []
    written = 0
    created = False
    write_lock = asyncio.Lock()

    def write(rows: list[dict[str, Any]]) -> None:
        nonlocal created
        table = pa.Table.from_pylist(rows)
        lance.write_dataset(table, uri, mode="append" if created else "create")
        created = True

    async def flush(rows: list[dict[str, Any]]) -> None:
        nonlocal written
        async with write_lock:
            await asyncio.to_thread(write, rows)
            written += len(rows)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(f"{url}/channels") as resp:
            channels = orjson.loads(await resp.read())["items"]

        async def channel(cid: str) -> None:
            cursor: str | None = None
            while True:
                params: dict[str, Any] = {"limit": 100}
                if cursor:
                    params["cursor"] = cursor
                async with session.get(f"{url}/channels/{cid}/docs", params=params) as resp:
                    resp.raise_for_status()
                    page = orjson.loads(await resp.read())
                buffer.extend(page["items"])
                if len(buffer) >= batch_rows:
                    rows = buffer[:]
                    buffer.clear()
                    await flush(rows)
                cursor = page["next_cursor"]
                if not cursor:
                    return

        sem = asyncio.Semaphore(concurrency)

        async def bounded(cid: str) -> None:
            async with sem:
                await channel(cid)

        await asyncio.gather(*(bounded(str(c["id"])) for c in channels))
        if buffer:
            await flush(buffer[:])
    return written


def reference_import(url: str, uri: str, *, concurrency: int = 8, batch_rows: int = 10_000) -> int:
    """Import every document of the fake API at ``url`` into a new dataset; returns the rows."""
    return asyncio.run(_import(url, uri, concurrency, batch_rows))
