"""The benchmarks' fake document API, served by cfstream's testing kit in its own process.

Start it with::

    python -m cfstream.testing.server --setup benchmarks.fake_api:setup [--port P]

It prints ``FakeAPI listening on <url>``. Configuration comes from the environment at start-up and
can be changed at any time with ``POST /admin/reset``:

=========================  =======  ======================================================
env                        default  meaning
=========================  =======  ======================================================
``BENCH_API_DOCS``         100000   documents in total
``BENCH_API_PARTITIONS``   8        channels; document ``i`` lives in channel ``i % P``
``BENCH_API_LATENCY_MS``   0        extra latency added to every ``/channels/...`` request
``BENCH_API_SEED``         7        seed of the text and of which documents change
``BENCH_API_CACHE_MB``     400      rendered pages kept in memory (0: render every request)
=========================  =======  ======================================================

Routes:

- ``GET /channels`` -> ``{"items": [{"id": "0", "name": "channel-0"}, ...], "next_cursor": null}``
- ``GET /channels/{k}/docs?limit=100&cursor=C&updated_after=T`` -> ``{"items": [...],
  "next_cursor": "..." | null}``: the channel's documents ordered by ``updated_at`` (oldest first),
  keyset pagination (the cursor is the last ``updated_at`` served, so changes made during a
  pagination never skip or repeat a document), ``updated_after`` (alias ``since``) an ISO 8601 time.
- ``POST /admin/change?fraction=0.01`` -> ``{"changed": n}``: edits that fraction of documents
  (chosen by the seed and the number of earlier changes): new body text, ``updated_at`` later than
  any before.
- ``POST /admin/reset?docs=&partitions=&latency_ms=&seed=`` -> the new config; back to the initial
  documents.
- ``POST /admin/warm`` -> renders (and caches) every full-listing page, so that the first timed run
  does not pay for rendering. ``GET /admin/config`` -> the config and counters.

A document is about 1 KB of JSON: ``id``, ``channel``, ``title``, ``body`` (~850 characters),
``author``, ``created_at``, ``updated_at``, ``labels``. Everything is a pure function of the seed,
the config and the sequence of ``/admin`` calls, so two servers started alike serve the same bytes.

Documents are rendered on demand from their index (nothing is stored per document except a
revision for changed ones), so a million documents cost the server about 60 MB.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
from bisect import bisect_right
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web

from cfstream.testing.server import FakeAPI

__all__ = ("DocStore", "setup")

BASE_TIME = datetime(2024, 1, 1, tzinfo=UTC)
PAGE_MAX = 100
_WORDS_SEED_SIZE = 4000
_POOL_CHARS = 1 << 20
BODY_CHARS = 850


def iso(ts: int) -> str:
    """Seconds after :data:`BASE_TIME` as an ISO 8601 UTC string (``...Z``)."""
    return (BASE_TIME + timedelta(seconds=ts)).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(value: str) -> int:
    """The inverse of :func:`iso` (any ISO 8601 time; earlier than the base gives -1)."""
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return max(-1, int((dt - BASE_TIME).total_seconds()))


def _encode_cursor(ts: int) -> str:
    return base64.urlsafe_b64encode(f"t:{ts}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    return int(raw.split(":", 1)[1])


class DocStore:
    """The documents: ordering per channel, revisions, rendering and a page cache."""

    def __init__(
        self,
        docs: int,
        partitions: int,
        *,
        latency_ms: float = 0.0,
        seed: int = 7,
        cache_mb: int = 400,
    ) -> None:
        if docs < 0 or partitions < 1:
            raise ValueError("docs must be >= 0 and partitions >= 1")
        self.docs = docs
        self.partitions = partitions
        self.latency = latency_ms / 1000.0
        self.seed = seed
        self.cache_bytes = cache_mb * 1024 * 1024
        rng = random.Random(seed)
        letters = "abcdefghijklmnopqrstuvwxyz"
        words = [
            "".join(rng.choice(letters) for _ in range(rng.randint(2, 10)))
            for _ in range(_WORDS_SEED_SIZE)
        ]
        pool: list[str] = []
        size = 0
        while size < _POOL_CHARS + BODY_CHARS:
            w = rng.choice(words)
            pool.append(w)
            size += len(w) + 1
        self._pool = " ".join(pool)
        self._words = words
        # per channel: timestamps (seconds after BASE_TIME) in order, and the document at each.
        # Initial document i has updated_at = i seconds; every change gets a later, unique time,
        # so a timestamp identifies one document and is a valid keyset cursor.
        self._ts: list[list[int]] = [list(range(k, docs, partitions)) for k in range(partitions)]
        self._ids: list[list[int]] = [list(range(k, docs, partitions)) for k in range(partitions)]
        self._rev: dict[int, tuple[int, int]] = {}  # doc -> (revision, updated_at)
        self._clock = docs  # the next change time
        self._changes = 0
        self._cache: OrderedDict[tuple[int, int, int], bytes] = OrderedDict()
        self._cached = 0
        self.requests = 0

    def config(self) -> dict[str, Any]:
        """The current settings and counters."""
        return {
            "docs": self.docs,
            "partitions": self.partitions,
            "latency_ms": self.latency * 1000.0,
            "seed": self.seed,
            "changes": self._changes,
            "changed_docs": len(self._rev),
            "requests": self.requests,
            "cached_pages": len(self._cache),
            "cached_mb": round(self._cached / 1e6, 1),
        }

    # -- documents -------------------------------------------------------------------------------

    def render(self, i: int) -> dict[str, Any]:
        """Document ``i`` at its current revision, as the API returns it."""
        rev, updated = self._rev.get(i, (0, i))
        offset = (i * 7919 + rev * 104729) % _POOL_CHARS
        body = self._pool[offset : offset + BODY_CHARS]
        if rev:
            body = f"[edit {rev}] {body}"
        w = self._words
        return {
            "id": f"doc-{i:07d}",
            "channel": str(i % self.partitions),
            "title": f"{w[i % len(w)].title()} {w[(i * 31) % len(w)]} {w[(i * 17) % len(w)]} #{i}",
            "body": body,
            "author": {"id": f"u{i % 211}", "name": f"User {i % 211}"},
            "created_at": iso(i),
            "updated_at": iso(updated),
            "labels": [f"label-{i % 7}", f"team-{i % 5}"],
        }

    def change(self, fraction: float) -> int:
        """Edit ``fraction`` of the documents; returns how many changed."""
        n = min(self.docs, round(self.docs * fraction))
        self._changes += 1
        rng = random.Random(self.seed * 1_000_003 + self._changes)
        for i in sorted(rng.sample(range(self.docs), n)):
            k = i % self.partitions
            rev, updated = self._rev.get(i, (0, i))
            ts_list, id_list = self._ts[k], self._ids[k]
            pos = bisect_right(ts_list, updated) - 1
            assert id_list[pos] == i, "index out of sync"
            del ts_list[pos]
            del id_list[pos]
            new_ts = self._clock
            self._clock += 1
            ts_list.append(new_ts)
            id_list.append(i)
            self._rev[i] = (rev + 1, new_ts)
        self._cache.clear()
        self._cached = 0
        return n

    # -- pages -----------------------------------------------------------------------------------

    def page(self, channel: int, after: int, limit: int) -> bytes:
        """The JSON body of the page of ``channel`` starting after time ``after``."""
        ts_list = self._ts[channel]
        start = bisect_right(ts_list, after)
        key = (channel, start, limit)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        end = min(len(ts_list), start + limit)
        ids = self._ids[channel][start:end]
        nxt = _encode_cursor(ts_list[end - 1]) if end < len(ts_list) else None
        body = orjson.dumps({"items": [self.render(i) for i in ids], "next_cursor": nxt})
        if self.cache_bytes and self._cached + len(body) <= self.cache_bytes:
            self._cache[key] = body
            self._cached += len(body)
        return body

    def warm(self) -> int:
        """Render every full-listing page into the cache; returns how many pages are cached."""
        for k in range(self.partitions):
            ts_list = self._ts[k]
            after = -1
            while True:
                self.page(k, after, PAGE_MAX)
                start = bisect_right(ts_list, after)
                end = min(len(ts_list), start + PAGE_MAX)
                if end >= len(ts_list):
                    break
                after = ts_list[end - 1]
        return len(self._cache)


def _store_from_env() -> DocStore:
    env = os.environ
    return DocStore(
        int(env.get("BENCH_API_DOCS", "100000")),
        int(env.get("BENCH_API_PARTITIONS", "8")),
        latency_ms=float(env.get("BENCH_API_LATENCY_MS", "0")),
        seed=int(env.get("BENCH_API_SEED", "7")),
        cache_mb=int(env.get("BENCH_API_CACHE_MB", "400")),
    )


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def setup(api: FakeAPI) -> None:
    """Add the benchmark routes to ``api`` (the ``--setup`` hook of ``cfstream.testing.server``)."""
    holder = {"store": _store_from_env()}

    def store() -> DocStore:
        return holder["store"]

    async def channels(request: web.Request) -> web.Response:
        s = store()
        items = [{"id": str(k), "name": f"channel-{k}"} for k in range(s.partitions)]
        return _json({"items": items, "next_cursor": None})

    async def docs(request: web.Request) -> web.Response:
        s = store()
        s.requests += 1
        if s.latency:
            await asyncio.sleep(s.latency)
        try:
            k = int(request.match_info["k"])
            if not 0 <= k < s.partitions:
                raise ValueError
        except ValueError:
            return _json({"error": "no such channel"}, 404)
        q = request.query
        try:
            limit = max(1, min(PAGE_MAX, int(q.get("limit", PAGE_MAX))))
            after = -1
            since = q.get("updated_after") or q.get("since")
            if since:
                after = parse_iso(since)
            cursor = q.get("cursor")
            if cursor:
                after = max(after, _decode_cursor(cursor))
        except (ValueError, IndexError) as exc:
            return _json({"error": f"bad query: {exc}"}, 400)
        body = s.page(k, after, limit)
        return web.Response(body=body, content_type="application/json")

    async def change(request: web.Request) -> web.Response:
        fraction = float(request.query.get("fraction", "0.01"))
        if not 0.0 <= fraction <= 1.0:
            return _json({"error": "fraction must be within [0, 1]"}, 400)
        return _json({"changed": store().change(fraction)})

    async def reset(request: web.Request) -> web.Response:
        old = store()
        q = request.query
        holder["store"] = DocStore(
            int(q.get("docs", old.docs)),
            int(q.get("partitions", old.partitions)),
            latency_ms=float(q.get("latency_ms", old.latency * 1000.0)),
            seed=int(q.get("seed", old.seed)),
            cache_mb=int(q.get("cache_mb", old.cache_bytes // (1024 * 1024))),
        )
        api.clear()  # the kit's request log would otherwise grow for the whole benchmark
        return _json(holder["store"].config())

    async def warm(request: web.Request) -> web.Response:
        pages = store().warm()
        return _json({"cached_pages": pages, **store().config()})

    async def config(request: web.Request) -> web.Response:
        api.clear()
        return _json(store().config())

    api.route("GET", "/channels", channels)
    api.route("GET", "/channels/{k}/docs", docs)
    api.route("POST", "/admin/change", change)
    api.route("POST", "/admin/reset", reset)
    api.route("POST", "/admin/warm", warm)
    api.route("GET", "/admin/config", config)
