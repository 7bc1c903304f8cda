"""The "items" API the reliability suite syncs from: a FakeAPI setup, usable in or out of process.

Data is generated deterministically from the settings, so a test computes exactly what the server
serves (``expected_good``, ``bad_records``) without talking to it.

Routes (every ``/v1`` route can require ``Authorization: Bearer <token>``):

* ``GET /v1/collections`` -> ``{"collections": [...]}``
* ``GET /v1/collections/{c}/items?after=<seq>&limit=<n>`` -> ``{"items": [...], "last_seq": n}``
  with a ``Link: <...>; rel="next"`` header (keyset pagination on ``seq``, which grows with
  ``updated_at``: ``after`` is the incremental cursor). The ``handoff`` collection's next links
  point at ``other_url`` (another origin).
* ``GET /v1/items/{id}`` -> the full item (stubs in a page carry only ``href``); some answer HTML.
* ``GET /v1/blobs/{id}`` -> raw body bytes (invalid UTF-8 or 10 MB for bad records).
* ``GET /v1/redirect/{id}`` -> 302 to ``other_url``'s ``/v1/items/{id}``.

Admin routes for tests (never faulted, never authenticated, not in the rate figures):

* ``GET /_admin/log?since=i`` -> every ``/v1`` request from index ``i``: method, path, query, and
  whether an Authorization header came with it (never its value).
* ``GET /_admin/served?since=i`` -> the item pages served with status 200: collection, first/last seq.
* ``GET /_admin/stats`` -> request count, injected faults by kind, most requests in any 1 s window.

Out of process: ``python -m cfstream.testing.server --setup fakeapi:configure`` with the settings
in ``REL_*`` environment variables (see :meth:`Settings.from_env`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from yarl import URL

from cfstream.testing import FakeAPI, Reply
from cfstream.testing.server import RateMeter

BAD_KINDS = (
    "missing_title",
    "missing_id",
    "wrong_type_title",
    "wrong_type_body",
    "bad_date",
    "invalid_utf8",
    "html",
    "big",
)
#: the reason each kind of bad record must be dead-lettered with (a substring of the error)
BAD_REASONS = {
    "missing_title": "title",
    "missing_id": "missing field 'id'",
    "wrong_type_title": "title",
    "wrong_type_body": "text_content",
    "bad_date": "ISO 8601",
    "invalid_utf8": "UTF-8",
    "html": "HTML",
    "big": "over the limit",
}
BIG_BYTES = 10 * 1024 * 1024
HANDOFF = "handoff"


@dataclass(frozen=True)
class Settings:
    """What the fake serves; every field has a ``REL_<NAME>`` environment variable."""

    collections: tuple[str, ...] = ("c0", "c1", "c2", "c3")
    docs_per: int = 1000  # good documents per collection
    bad_per: int = 0  # malformed records per collection
    big_per: int = 0  # of those, how many have a 10 MB body
    stub_every: int = 10  # every n-th good item is a stub fetched from /v1/items/{id}
    token: str | None = None  # required bearer token
    latency: float = 0.0  # random extra latency per /v1 request, up to this many seconds
    page_delay: float = 0.0  # fixed delay per item page
    faults: bool = False  # R1: 5% 500, 2% drop, 1% truncate, 429 bursts
    seed: int = 7
    echo_auth: bool = False  # error bodies echo the Authorization header (a leaky service)
    other_url: str | None = None  # the other origin for the handoff collection and redirects
    rate_limit_every: int = 0  # answer every n-th /v1 request with a 429 (R4)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Settings from ``REL_COLLECTIONS``, ``REL_DOCS_PER``, ... (unset: the default)."""
        env = dict(os.environ if env is None else env)
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(f"REL_{f.name.upper()}")
            if raw is None:
                continue
            if f.name == "collections":
                kwargs[f.name] = tuple(c for c in raw.split(",") if c)
            elif f.type in ("int",):
                kwargs[f.name] = int(raw)
            elif f.type in ("float",):
                kwargs[f.name] = float(raw)
            elif f.type in ("bool",):
                kwargs[f.name] = raw.lower() in ("1", "true", "yes")
            else:
                kwargs[f.name] = raw or None
        return cls(**kwargs)

    def to_env(self) -> dict[str, str]:
        """The ``REL_*`` variables that reproduce these settings in another process."""
        out: dict[str, str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if f.name == "collections":
                out["REL_COLLECTIONS"] = ",".join(value)
            elif isinstance(value, bool):
                out[f"REL_{f.name.upper()}"] = "1" if value else "0"
            else:
                out[f"REL_{f.name.upper()}"] = str(value)
        return out


# -- the data --------------------------------------------------------------------------------------


def item_id(collection: str, seq: int) -> str:
    """The id of the item at ``seq`` (1-based) in ``collection``."""
    return f"{collection}-{seq:06d}"


def updated_at(seq: int) -> str:
    """A timestamp growing with ``seq``."""
    day, rest = divmod(seq, 86_400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return f"2026-{1 + day // 28:02d}-{1 + day % 28:02d}T{h:02d}:{m:02d}:{s:02d}Z"


def layout(s: Settings, collection: str) -> list[str]:
    """The kind of each item of ``collection`` by position: ``"good"``, ``"stub"`` or a bad kind."""
    total = s.docs_per + s.bad_per
    rng = random.Random(f"{s.seed}:{collection}")
    bad_positions = sorted(rng.sample(range(total), s.bad_per)) if s.bad_per else []
    kinds = ["good"] * total
    non_big = [k for k in BAD_KINDS if k != "big"]
    for n, pos in enumerate(bad_positions):
        kinds[pos] = "big" if n < s.big_per else non_big[n % len(non_big)]
    good = 0
    for pos, k in enumerate(kinds):
        if k == "good":
            good += 1
            if s.stub_every and good % s.stub_every == 0:
                kinds[pos] = "stub"
    return kinds


def good_item(collection: str, seq: int) -> dict[str, Any]:
    """The full JSON of a good item."""
    iid = item_id(collection, seq)
    return {
        "id": iid,
        "seq": seq,
        "title": f"Item {iid}",
        "body": f"# {iid}\n\nBody of {iid}. " + "lorem ipsum dolor sit amet " * (1 + seq % 7),
        "updated_at": updated_at(seq),
        "tags": ["rel", collection],
    }


def page_entry(s: Settings, collection: str, seq: int, kind: str) -> dict[str, Any]:
    """What a list page holds for the item at ``seq`` of the given kind."""
    item = good_item(collection, seq)
    iid = item["id"]
    if kind == "good":
        return item
    if kind == "stub":
        href = f"/v1/redirect/{iid}" if collection == HANDOFF else f"/v1/items/{iid}"
        return {"id": iid, "seq": seq, "updated_at": item["updated_at"], "href": href}
    if kind == "missing_title":
        del item["title"]
    elif kind == "missing_id":
        item["ref"] = item.pop("id")
    elif kind == "wrong_type_title":
        item["title"] = 12345
    elif kind == "wrong_type_body":
        item["body"] = ["not", "a", "string"]
    elif kind == "bad_date":
        item["updated_at"] = "the day before yesterday"
    elif kind == "html":
        return {"id": iid, "seq": seq, "updated_at": item["updated_at"], "href": f"/v1/items/{iid}"}
    elif kind in ("invalid_utf8", "big"):
        item.pop("body")
        item["body_url"] = f"/v1/blobs/{iid}"
    return item


def expected_good(s: Settings) -> dict[str, dict[str, Any]]:
    """source_id -> full item of every good record (stubs included) the fake serves."""
    out: dict[str, dict[str, Any]] = {}
    for c in s.collections:
        for pos, kind in enumerate(layout(s, c)):
            if kind in ("good", "stub"):
                item = good_item(c, pos + 1)
                out[item["id"]] = item
    return out


def bad_records(s: Settings) -> dict[str, str]:
    """item id -> bad kind of every malformed record."""
    out: dict[str, str] = {}
    for c in s.collections:
        for pos, kind in enumerate(layout(s, c)):
            if kind in BAD_KINDS:
                out[item_id(c, pos + 1)] = kind
    return out


# -- the server ------------------------------------------------------------------------------------


@dataclass
class Fake:
    """The state of one fake: settings, layouts, what was served."""

    api: FakeAPI
    s: Settings
    kinds: dict[str, list[str]] = field(default_factory=dict)
    served: list[dict[str, Any]] = field(default_factory=list)
    v1_count: int = 0
    rng: random.Random = field(default_factory=random.Random)
    faults_on: bool = False
    burst_left: int = 0
    burst_wait: float = 0.1
    rate_limited: int = 0  # 429s answered in bursts

    def start_faults(self) -> None:
        """From now on: 5% HTTP 500, 2% dropped connections, 1% truncated bodies, 429 bursts."""
        self.faults_on = True
        kinds: list[Any] = [500] * 5 + ["drop"] * 2 + ["truncate"]
        self.api.faults.rate(0.08, kinds, path="/v1/*", seed=self.s.seed)

    def check_auth(self, request: web.Request) -> web.Response | None:
        if self.s.token is None:
            return None
        got = request.headers.get("Authorization", "")
        if got == f"Bearer {self.s.token}":
            return None
        message = "bad credentials"
        if self.s.echo_auth:
            message += f" (you sent {got!r})"
        return Reply({"message": message}, status=401).to_response()

    async def before(self, request: web.Request) -> web.Response | None:
        self.v1_count += 1
        if self.s.latency:
            await asyncio.sleep(self.rng.uniform(0, self.s.latency))
        if self.faults_on:
            # a burst of 2-6 answers 429 with Retry-After 0.05-0.2 s after every 53rd request
            if self.burst_left == 0 and self.v1_count % 53 == 0:
                self.burst_left = self.rng.randint(2, 6)
                self.burst_wait = self.rng.choice((0.05, 0.1, 0.2))
            if self.burst_left > 0:
                self.burst_left -= 1
                self.rate_limited += 1
                return Reply(
                    {"message": "You are being rate limited."},
                    status=429,
                    headers={"Retry-After": str(self.burst_wait)},
                ).to_response()
        denied = self.check_auth(request)
        if denied is not None:
            return denied
        if self.s.rate_limit_every and self.v1_count % self.s.rate_limit_every == 0:
            body = {"message": "slow down"}
            if self.s.echo_auth:
                body["you_sent"] = request.headers.get("Authorization", "")
            return Reply(body, status=429, headers={"Retry-After": "0.05"}).to_response()
        return None

    async def collections(self, request: web.Request) -> Any:
        return await self.before(request) or {"collections": list(self.s.collections)}

    async def items(self, request: web.Request) -> Any:
        early = await self.before(request)
        if early is not None:
            return early
        c = request.match_info["c"]
        kinds = self.kinds.get(c)
        if kinds is None:
            return Reply({"message": f"no collection {c}"}, status=404)
        after = int(request.query.get("after", "0"))
        limit = max(1, min(1000, int(request.query.get("limit", "100"))))
        if self.s.page_delay:
            await asyncio.sleep(self.s.page_delay)
        seqs = range(after + 1, min(len(kinds), after + limit) + 1)
        page = [page_entry(self.s, c, q, kinds[q - 1]) for q in seqs]
        last = seqs[-1] if seqs else after
        headers = {}
        if last < len(kinds):
            base = self.s.other_url if (c == HANDOFF and self.s.other_url) else None
            origin = URL(base) if base else URL(f"{request.scheme}://{request.host}")
            nxt = origin.with_path(request.path).with_query({"after": last, "limit": limit})
            headers["Link"] = f'<{nxt}>; rel="next"'
        if seqs:
            self.served.append({"collection": c, "first": seqs[0], "last": last, "n": len(seqs)})
        return Reply({"items": page, "last_seq": last}, headers=headers)

    def _locate(self, iid: str) -> tuple[str, int, str] | None:
        c, _, num = iid.rpartition("-")
        kinds = self.kinds.get(c)
        if kinds is None or not num.isdigit() or not 1 <= int(num) <= len(kinds):
            return None
        return c, int(num), kinds[int(num) - 1]

    async def item(self, request: web.Request) -> Any:
        early = await self.before(request)
        if early is not None:
            return early
        found = self._locate(request.match_info["iid"])
        if found is None:
            return Reply({"message": "no such item"}, status=404)
        c, seq, kind = found
        if kind == "html":
            return Reply(
                body="<!DOCTYPE html><html><body><h1>Welcome! Please sign in</h1></body></html>",
                content_type="text/html",
            )
        return good_item(c, seq)

    async def blob(self, request: web.Request) -> Any:
        early = await self.before(request)
        if early is not None:
            return early
        found = self._locate(request.match_info["iid"])
        if found is None:
            return Reply({"message": "no such blob"}, status=404)
        _c, _seq, kind = found
        if kind == "big":
            return Reply(body=b"A" * BIG_BYTES, content_type="text/plain")
        if kind == "invalid_utf8":
            return Reply(body=b"caf\xe9 \xff\xfe broken \xc3\x28 bytes", content_type="text/plain")
        return Reply(body=b"plain body", content_type="text/plain")

    async def redirect(self, request: web.Request) -> Any:
        early = await self.before(request)
        if early is not None:
            return early
        target = self.s.other_url or f"{request.scheme}://{request.host}"
        return web.Response(
            status=302, headers={"Location": f"{target}/v1/items/{request.match_info['iid']}"}
        )

    # -- admin ---------------------------------------------------------------------------------

    def v1_requests(self) -> list[Any]:
        return [r for r in self.api.requests if r.path.startswith("/v1/")]

    def admin_log(self, request: web.Request) -> Any:
        since = int(request.query.get("since", "0"))
        reqs = self.v1_requests()
        return {
            "next": len(reqs),
            "requests": [
                {
                    "method": r.method,
                    "path": r.path,
                    "query": r.query,
                    "auth": "Authorization" in r.headers,
                }
                for r in reqs[since:]
            ],
        }

    def admin_served(self, request: web.Request) -> Any:
        since = int(request.query.get("since", "0"))
        return {"next": len(self.served), "pages": self.served[since:]}

    def stats(self) -> dict[str, Any]:
        meter = RateMeter()
        for r in self.v1_requests():
            meter.record(r.time)
        return {
            "requests": meter.count,
            "faults": dict(
                Counter(kind for _m, _p, kind in self.api.faults.injected),
                rate_limit=self.rate_limited,
            ),
            "max_rate_1s": meter.max_rate(1.0),
            "span": meter.span(),
        }


def configure_with(api: FakeAPI, s: Settings) -> Fake:
    """Add the items API with settings ``s`` to ``api``; return its state."""
    fake = Fake(api, s, rng=random.Random(s.seed))
    names = list(s.collections)
    for c in names:
        fake.kinds[c] = layout(s, c)
    api.route("GET", "/v1/collections", fake.collections)
    api.route("GET", "/v1/collections/{c}/items", fake.items)
    api.route("GET", "/v1/items/{iid}", fake.item)
    api.route("GET", "/v1/blobs/{iid}", fake.blob)
    api.route("GET", "/v1/redirect/{iid}", fake.redirect)
    api.route("GET", "/_admin/log", fake.admin_log)
    api.route("GET", "/_admin/served", fake.admin_served)
    api.route("GET", "/_admin/stats", lambda _r: fake.stats())
    if s.faults:
        fake.start_faults()
    return fake


def configure(api: FakeAPI) -> None:
    """The ``--setup`` entry point: settings from the ``REL_*`` environment variables."""
    configure_with(api, Settings.from_env())
