"""A fake HTTP API on 127.0.0.1 for connector tests: routes, pagination styles, faults, a rate meter.

:class:`FakeAPI` is a real aiohttp server on an ephemeral port, so the code under test uses real
sockets, real timeouts and real connection drops. It does not need pytest.

Example::

    async with FakeAPI() as api:
        api.paginate_link("/repos/o/r/issues", [{"number": n} for n in range(250)])
        api.faults.script("GET", "/repos/o/r/issues", [503, "drop", Fault.rate_limit(1)])
        async with HttpClient() as http:
            gh = http.service("github", base_url=api.url, auth=BearerAuth("t0ken"))
            pages = [p async for p in gh.paginate(LinkHeaderPaginator(), "/repos/o/r/issues")]
        assert api.requests[0].headers["Authorization"] == "Bearer t0ken"
        api.meter.assert_rate_at_most(20, per=1.0)

Run it in another process (benchmarks do) with ``python -m cfstream.testing.server --setup
mymodule:configure``; it prints ``FakeAPI listening on <url>`` once ready.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import email.utils
import importlib
import inspect
import math
import random
import re
import sys
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self

import orjson
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from cfstream.engine.signals import route_signals

__all__ = (
    "Fault",
    "FaultInjector",
    "FakeAPI",
    "FakeClock",
    "LoggedRequest",
    "RateMeter",
    "Reply",
    "github_link_header",
    "main",
)

Handler = Callable[[web.Request], Any]


# -- responses -------------------------------------------------------------------------------------


def github_link_header(
    request: web.Request, base: URL, *, page: int, size: int, last: int
) -> str | None:
    """GitHub's ``Link`` header for ``page`` of ``last`` pages of ``size`` under ``base``:
    ``prev``/``next``/``last``/``first`` as GitHub orders them, keeping the request's other query
    parameters. None when there is nothing to link (a single page)."""
    keep = {k: v for k, v in request.query.items() if k not in ("page", "per_page")}

    def link(n: int, rel: str) -> str:
        return f'<{base.with_query({**keep, "per_page": size, "page": n})}>; rel="{rel}"'

    rels: list[str] = []
    if page > 1:
        rels.append(link(page - 1, "prev"))
    if page < last:
        rels += [link(page + 1, "next"), link(last, "last")]
    if page > 1:
        rels.append(link(1, "first"))
    return ", ".join(rels) or None


@dataclass
class Reply:
    """A canned response: JSON ``data`` (or a raw ``body``), a status and headers.

    ``Reply({"ok": True})``, ``Reply(status=429, headers={"Retry-After": "1"})``,
    ``Reply(body="<html>...</html>", content_type="text/html", status=502)``.
    """

    data: Any = None
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | str | None = None
    content_type: str | None = None

    def to_response(self) -> web.Response:
        """The aiohttp response for this reply."""
        headers = CIMultiDict(self.headers)
        if self.body is not None:
            raw = self.body.encode() if isinstance(self.body, str) else self.body
            ctype = self.content_type or headers.pop("Content-Type", "application/octet-stream")
        else:
            raw = b"" if self.data is None and self.status == 204 else orjson.dumps(self.data)
            ctype = self.content_type or headers.pop("Content-Type", "application/json")
        headers.pop("Content-Length", None)
        headers.pop("Content-Encoding", None)
        headers.pop("Transfer-Encoding", None)
        headers["Content-Type"] = ctype
        return web.Response(status=self.status, body=raw, headers=headers)


def _to_response(result: Any) -> web.StreamResponse:
    if isinstance(result, web.StreamResponse):
        return result
    if isinstance(result, Reply):
        return result.to_response()
    if isinstance(result, bytes):
        return Reply(body=result).to_response()
    if isinstance(result, str):
        return Reply(body=result, content_type="text/plain").to_response()
    return Reply(result).to_response()


# -- request log and meter -------------------------------------------------------------------------


@dataclass(frozen=True)
class LoggedRequest:
    """One request the fake server received.

    ``time`` is ``time.monotonic()`` on arrival; ``headers`` keep every header as sent (including
    ``Authorization``: this is a test tool). ``query`` keeps the first value of each parameter.
    """

    method: str
    path: str
    url: str
    query: dict[str, str]
    headers: CIMultiDictProxy[str]
    body: bytes
    time: float

    def json(self) -> Any:
        """The request body decoded as JSON (None when empty)."""
        return orjson.loads(self.body) if self.body else None


class RateMeter:
    """Server-side request timestamps, to prove a client kept to a rate limit."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def record(self, when: float) -> None:
        """Add a request arrival time (``time.monotonic()``)."""
        self.times.append(when)

    @property
    def count(self) -> int:
        """Requests recorded."""
        return len(self.times)

    def clear(self) -> None:
        """Forget every timestamp."""
        self.times.clear()

    def max_rate(self, window: float = 1.0) -> int:
        """The most requests seen in any window of ``window`` seconds (a sliding, half-open window)."""
        times = sorted(self.times)
        best = 0
        for i, start in enumerate(times):
            j = bisect_left(times, start + window, lo=i)
            best = max(best, j - i)
        return best

    def assert_rate_at_most(self, n: int, per: float = 1.0) -> None:
        """Fail with the numbers when more than ``n`` requests arrived within some ``per`` seconds."""
        seen = self.max_rate(per)
        if seen > n:
            raise AssertionError(
                f"rate exceeded: {seen} requests within {per} s (allowed {n}); "
                f"{self.count} requests over {self.span():.2f} s"
            )

    def span(self) -> float:
        """Seconds between the first and the last request."""
        return max(self.times) - min(self.times) if len(self.times) > 1 else 0.0


# -- faults ----------------------------------------------------------------------------------------

FaultKind = Literal[
    "ok", "status", "drop", "rate_limit", "truncate", "html", "garbage", "empty", "latency"
]


@dataclass(frozen=True)
class Fault:
    """One injected fault. Build them with the class methods; scripts also accept shorthands:

    ``500``/``502``/``503`` (any int: that status with a JSON error body), ``429`` (no
    Retry-After), ``"drop"``, ``"truncate"``, ``"html"``, ``"garbage"`` (200 with a non-JSON
    body), ``"empty"`` (200 with an empty JSON body), ``"ok"`` or ``None`` (serve normally), a
    float (latency in seconds, then serve normally).
    """

    kind: FaultKind
    status: int = 500
    retry_after: float | None = None
    http_date: bool = False
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @classmethod
    def ok(cls) -> Fault:
        """No fault: serve normally."""
        return cls("ok")

    @classmethod
    def error(
        cls, status: int = 500, body: Any = None, headers: Mapping[str, str] | None = None
    ) -> Fault:
        """Answer ``status`` with a JSON body (default ``{"message": "injected <status>"}``)."""
        return cls("status", status=status, body=body, headers=dict(headers or {}))

    @classmethod
    def drop(cls) -> Fault:
        """Close the connection without sending a response."""
        return cls("drop")

    @classmethod
    def rate_limit(
        cls,
        retry_after: float | None = 1,
        *,
        http_date: bool = False,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        status: int = 429,
    ) -> Fault:
        """A rate-limit answer: ``Retry-After`` in seconds (or as an HTTP date), optional JSON body.

        Use ``status=200`` with a body for services that signal rate limits in the body (Slack's
        ``{"ok": false, "error": "ratelimited"}``, Linear's GraphQL ``RATELIMITED``).
        """
        return cls(
            "rate_limit",
            status=status,
            retry_after=retry_after,
            http_date=http_date,
            body=body,
            headers=dict(headers or {}),
        )

    @classmethod
    def truncate(cls) -> Fault:
        """Send a ``Content-Length`` larger than the body, then close the connection."""
        return cls("truncate", status=200)

    @classmethod
    def html(cls, status: int = 502) -> Fault:
        """A proxy's HTML error page (``text/html``) with ``status``."""
        return cls("html", status=status)

    @classmethod
    def garbage(cls) -> Fault:
        """HTTP 200 ``application/json`` whose body is not JSON."""
        return cls("garbage", status=200)

    @classmethod
    def empty(cls) -> Fault:
        """HTTP 200 ``application/json`` with an empty body (a faulty answer, not "no items")."""
        return cls("empty", status=200)

    @classmethod
    def latency(cls, seconds: float) -> Fault:
        """Wait ``seconds`` before serving normally (drive client timeouts with it)."""
        return cls("latency", seconds=seconds)

    @classmethod
    def coerce(cls, spec: Fault | int | str | float | None) -> Fault:
        """Turn a shorthand into a :class:`Fault`."""
        if isinstance(spec, Fault):
            return spec
        if spec is None:
            return cls.ok()
        if isinstance(spec, bool):
            raise TypeError("a fault cannot be a bool")
        if isinstance(spec, int):
            return cls.rate_limit(None) if spec == 429 else cls.error(spec)
        if isinstance(spec, float):
            return cls.latency(spec)
        named: dict[str, Callable[[], Fault]] = {
            "ok": cls.ok,
            "drop": cls.drop,
            "truncate": cls.truncate,
            "html": cls.html,
            "garbage": cls.garbage,
            "empty": cls.empty,
        }
        if spec in named:
            return named[spec]()
        raise ValueError(
            f"unknown fault {spec!r}; use an int status, a float latency, {sorted(named)} or a Fault"
        )


def _path_regex(pattern: str) -> re.Pattern[str]:
    """``/channels/{id}/messages`` -> a regex with named groups; ``*`` matches anything."""
    out = []
    for part in re.split(r"(\{[A-Za-z_][A-Za-z0-9_]*\}|\*)", pattern):
        if part == "*":
            out.append(".*")
        elif part.startswith("{") and part.endswith("}"):
            out.append(f"(?P<{part[1:-1]}>[^/]+)")
        else:
            out.append(re.escape(part))
    return re.compile("^" + "".join(out) + "$")


@dataclass
class _Script:
    method: str
    pattern: re.Pattern[str]
    faults: list[Fault]


@dataclass
class _RandomFaults:
    probability: float
    kinds: list[Fault]
    method: str
    pattern: re.Pattern[str]


class FaultInjector:
    """Faults to inject: scripted (the next matching requests, in order) and random (seeded)."""

    def __init__(self, seed: int = 0) -> None:
        self._scripts: list[_Script] = []
        self._random: list[_RandomFaults] = []
        self._rng = random.Random(seed)
        #: ``(method, path, kind)`` of every fault injected so far
        self.injected: list[tuple[str, str, str]] = []

    def script(
        self,
        method: str,
        path: str,
        faults: Iterable[Fault | int | str | float | None],
    ) -> None:
        """Answer the next requests matching ``method`` (``"*"`` for any) and ``path`` (a template
        like ``/channels/{id}/messages``, or with ``*``) with ``faults``, one per request, in order.
        After the script runs out, requests are served normally."""
        self._scripts.append(
            _Script(method.upper(), _path_regex(path), [Fault.coerce(f) for f in faults])
        )

    def rate(
        self,
        probability: float,
        kinds: Sequence[Fault | int | str | float | None] = (500, 503, "drop", "truncate"),
        *,
        method: str = "*",
        path: str = "*",
        seed: int | None = None,
    ) -> None:
        """Inject a fault drawn from ``kinds`` into each matching request with ``probability``."""
        if not 0.0 <= probability <= 1.0:
            raise ValueError("probability must be within [0, 1]")
        if seed is not None:
            self._rng.seed(seed)
        self._random.append(
            _RandomFaults(
                probability, [Fault.coerce(k) for k in kinds], method.upper(), _path_regex(path)
            )
        )

    def clear(self) -> None:
        """Remove every scripted and random fault."""
        self._scripts.clear()
        self._random.clear()

    def pending(self) -> int:
        """Scripted faults not yet used."""
        return sum(len(s.faults) for s in self._scripts)

    def take(self, method: str, path: str) -> Fault | None:
        """The fault for this request, if any (consumes scripted ones)."""
        for script in self._scripts:
            if script.faults and script.method in ("*", method) and script.pattern.match(path):
                fault = script.faults.pop(0)
                self.injected.append((method, path, fault.kind))
                return fault
        for rnd in self._random:
            matches = rnd.method in ("*", method) and rnd.pattern.match(path)
            if matches and self._rng.random() < rnd.probability:
                fault = self._rng.choice(rnd.kinds)
                self.injected.append((method, path, fault.kind))
                return fault
        return None


_HTML_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>{status} Bad Gateway</title></head>\n"
    "<body><center><h1>{status} Bad Gateway</h1></center><hr><center>nginx</center></body></html>\n"
)


async def _apply(fault: Fault, request: web.Request) -> web.StreamResponse | None:
    """Perform ``fault``; None means: now serve the request normally."""
    if fault.kind == "ok":
        return None
    if fault.kind == "latency":
        await asyncio.sleep(fault.seconds)
        return None
    if fault.kind == "status":
        body = fault.body if fault.body is not None else {"message": f"injected {fault.status}"}
        return Reply(body, status=fault.status, headers=fault.headers).to_response()
    if fault.kind == "rate_limit":
        headers = dict(fault.headers)
        if fault.retry_after is not None:
            if fault.http_date:
                headers["Retry-After"] = email.utils.formatdate(
                    math.ceil(time.time() + fault.retry_after), usegmt=True
                )
            else:
                ra = fault.retry_after
                headers["Retry-After"] = str(int(ra)) if float(ra).is_integer() else str(ra)
        body = fault.body if fault.body is not None else {"message": "You are being rate limited."}
        return Reply(body, status=fault.status, headers=headers).to_response()
    if fault.kind == "html":
        return Reply(
            body=_HTML_PAGE.format(status=fault.status),
            status=fault.status,
            content_type="text/html",
        ).to_response()
    if fault.kind == "garbage":
        return Reply(body=b"this is not JSON {", content_type="application/json").to_response()
    if fault.kind == "empty":
        return Reply(body=b"", content_type="application/json").to_response()
    transport = request.transport
    if fault.kind == "truncate":
        body = b'{"items": [{"id": 1, "name": "first"}, {"id": 2, "na'
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        resp.content_length = len(body) + 64
        await resp.prepare(request)
        await resp.write(body)
        if transport is not None:
            transport.close()
        return resp
    # drop
    if transport is not None:
        transport.close()
    return web.Response(status=500)


# -- pagination helpers ----------------------------------------------------------------------------


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        return int(raw.split(":", 1)[1])
    except (ValueError, IndexError) as exc:
        raise web.HTTPBadRequest(
            text=orjson.dumps({"ok": False, "error": "invalid_cursor"}).decode(),
            content_type="application/json",
        ) from exc


def _int_param(value: Any, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except (TypeError, ValueError):
        return default


def _has_next(offset: int, size: int, total: int, n_page: int, empty_last_page: bool) -> bool:
    if offset + size < total:
        return True
    return empty_last_page and n_page > 0


def _nest(path: str, value: Any) -> Any:
    for key in reversed(path.split(".")):
        value = {key: value}
    return value


# -- the server ------------------------------------------------------------------------------------


@dataclass
class _Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler


class FakeAPI:
    """A fake HTTP API on 127.0.0.1 with an ephemeral port; use as ``async with FakeAPI() as api``.

    Handlers receive the aiohttp ``web.Request`` (path parameters in ``request.match_info``)
    and return a ``web.Response``, a :class:`Reply`, bytes, str, or anything JSON-serialisable.
    Routes can be added at any time, also while serving; a later route for the same method and
    path replaces the earlier one.

    :param host: the interface (keep 127.0.0.1 for tests).
    :param port: 0 for an ephemeral port.
    :param seed: seed of the random fault generator.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, seed: int = 0) -> None:
        self.host = host
        self.port = port
        self.requests: list[LoggedRequest] = []
        self.meter = RateMeter()
        self.faults = FaultInjector(seed)
        self._routes: list[_Route] = []
        self._runner: web.AppRunner | None = None

    def __repr__(self) -> str:
        state = self.url if self._runner else "stopped"
        return f"FakeAPI({state}, routes={len(self._routes)}, requests={len(self.requests)})"

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Start serving (done by ``async with``)."""
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._runner = runner
        address = runner.addresses[0]
        self.port = int(address[1])

    async def aclose(self) -> None:
        """Stop serving and close every connection."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:54321`` (no trailing slash)."""
        if self._runner is None:
            raise RuntimeError("FakeAPI is not running: use 'async with FakeAPI() as api:'")
        return f"http://{self.host}:{self.port}"

    # -- routes --------------------------------------------------------------------------------

    def route(
        self, method: str, path: str, handler: Handler | Reply | Any = None
    ) -> Callable[[Handler], Handler]:
        """Add a route; as a decorator when ``handler`` is omitted.

        ``handler`` is a callable ``(request) -> result`` (sync or async), a :class:`Reply`, or a
        static JSON value. ``path`` may contain ``{name}`` parameters and ``*``; ``method`` may be
        ``"*"``. Returns a decorator (which also works when ``handler`` was given and is ignored).
        """

        def register(fn: Handler) -> Handler:
            self._add(method, path, fn)
            return fn

        if handler is None:
            return register
        if isinstance(handler, Reply):
            reply = handler
            self._add(method, path, lambda _request: reply)
        elif callable(handler):
            self._add(method, path, handler)
        else:
            value = handler
            self._add(method, path, lambda _request: value)
        return register

    def replies(
        self, method: str, path: str, replies: Sequence[Reply | Any], *, repeat_last: bool = True
    ) -> None:
        """Serve ``replies`` in order, one per request (then repeat the last, or 404 if not
        ``repeat_last``). Handy for replaying recorded responses."""
        queue = list(replies)
        if not queue:
            raise ValueError("replies needs at least one reply")
        served = 0

        def handler(_request: web.Request) -> Any:
            nonlocal served
            if served < len(queue):
                served += 1
                return queue[served - 1]
            if repeat_last:
                return queue[-1]
            return Reply({"message": f"no more replies for {method} {path}"}, status=404)

        self._add(method, path, handler)

    def _add(self, method: str, path: str, handler: Handler) -> None:
        method = method.upper()
        pattern = _path_regex(path)
        self._routes = [
            r
            for r in self._routes
            if not (r.method == method and r.pattern.pattern == pattern.pattern)
        ]
        self._routes.append(_Route(method, pattern, handler))

    def requests_for(
        self, method: str | None = None, path: str | None = None
    ) -> list[LoggedRequest]:
        """Logged requests, filtered by method and path (template or ``*`` allowed)."""
        pattern = _path_regex(path) if path else None
        return [
            r
            for r in self.requests
            if (method is None or r.method == method.upper())
            and (pattern is None or pattern.match(r.path))
        ]

    def clear(self) -> None:
        """Forget logged requests and meter timestamps (routes and faults stay)."""
        self.requests.clear()
        self.meter.clear()

    # -- pagination styles ---------------------------------------------------------------------

    def paginate_link(
        self,
        path: str,
        items: Sequence[Any],
        *,
        per_page: int = 30,
        next_path: str | None = None,
        next_base: str | None = None,
        empty_last_page: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Serve ``items`` as GitHub does: ``per_page``/``page`` query parameters and a ``Link``
        header with ``next``/``last`` (``prev``/``first`` after page 1).

        :param per_page: the default page size (the request's ``per_page`` wins, max 100).
        :param next_path: path used in the links (e.g. ``/repositories/42/issues``, which is then
            served too), like GitHub's chains that switch URL form after page 1.
        :param next_base: base URL used in the links, e.g. another FakeAPI's ``url`` (a different
            origin: the client must not send its token there). Serve the path there yourself.
        :param empty_last_page: end the chain with one extra, empty page (some services do; a
            paginator must cope).
        :param headers: extra headers on every page (e.g. ``x-ratelimit-*``).
        """
        data = list(items)
        link_path = next_path or path

        def handler(request: web.Request) -> web.Response:
            size = min(100, max(1, _int_param(request.query.get("per_page"), per_page)))
            page = max(1, _int_param(request.query.get("page"), 1))
            offset = (page - 1) * size
            chunk = data[offset : offset + size]
            last = max(1, math.ceil(len(data) / size))
            if empty_last_page and data:
                last += 1
            base = URL(next_base or f"{request.scheme}://{request.host}").with_path(link_path)
            out = dict(headers or {})
            link = github_link_header(request, base, page=page, size=size, last=last)
            if link:
                out["Link"] = link
            return Reply(chunk, headers=out).to_response()

        self._add("GET", path, handler)
        if next_path and next_base is None and next_path != path:
            self._add("GET", next_path, handler)

    def paginate_cursor(
        self,
        path: str,
        items: Sequence[Any],
        *,
        style: Literal["slack", "notion"] = "slack",
        items_key: str | None = None,
        page_size: int | None = None,
        method: str = "GET",
        empty_last_page: bool = False,
    ) -> None:
        """Serve ``items`` with a body cursor (``empty_last_page``: end with one extra empty page).

        ``style="slack"``: ``limit`` + ``cursor`` query parameters, ``{"ok": true, <items_key>:
        [...], "response_metadata": {"next_cursor": ""}}`` (items_key defaults to ``channels``).
        ``style="notion"``: ``page_size`` + ``start_cursor`` in the query (GET) or JSON body
        (POST), ``{"object": "list", "results": [...], "next_cursor": null, "has_more": false}``.
        """
        data = list(items)
        key = items_key or ("channels" if style == "slack" else "results")
        default_size = page_size or (100 if style == "slack" else 100)

        async def handler(request: web.Request) -> web.Response:
            if style == "slack":
                size = _int_param(request.query.get("limit"), default_size)
                offset = _decode_cursor(request.query.get("cursor"))
            else:
                source: Mapping[str, Any] = request.query
                if request.method != "GET":
                    body = await request.read()
                    source = orjson.loads(body) if body else {}
                size = min(100, _int_param(source.get("page_size"), default_size))
                offset = _decode_cursor(source.get("start_cursor"))
            size = max(1, size)
            chunk = data[offset : offset + size]
            more = _has_next(offset, size, len(data), len(chunk), empty_last_page)
            nxt = _encode_cursor(offset + size) if more else None
            if style == "slack":
                payload = {"ok": True, key: chunk, "response_metadata": {"next_cursor": nxt or ""}}
            else:
                payload = {
                    "object": "list",
                    key: chunk,
                    "next_cursor": nxt,
                    "has_more": more,
                    "type": "page_or_database",
                }
            return Reply(payload).to_response()

        self._add(method, path, handler)

    def paginate_page_token(
        self,
        path: str,
        items: Sequence[Any],
        *,
        items_key: str = "files",
        page_size: int = 100,
        kind: str = "drive#fileList",
        empty_last_page: bool = False,
        last_page_extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Serve ``items`` Google style: ``pageSize`` + ``pageToken`` -> ``nextPageToken``.

        ``last_page_extra`` is merged into the last page (e.g. ``{"newStartPageToken": "42"}`` for
        a Drive changes feed).
        """
        data = list(items)

        def handler(request: web.Request) -> web.Response:
            size = max(1, min(1000, _int_param(request.query.get("pageSize"), page_size)))
            offset = _decode_cursor(request.query.get("pageToken"))
            chunk = data[offset : offset + size]
            payload: dict[str, Any] = {"kind": kind, "incompleteSearch": False, items_key: chunk}
            if _has_next(offset, size, len(data), len(chunk), empty_last_page):
                payload["nextPageToken"] = _encode_cursor(offset + size)
            elif last_page_extra:
                payload.update(last_page_extra)
            return Reply(payload).to_response()

        self._add("GET", path, handler)

    def paginate_graphql(
        self,
        path: str,
        items: Sequence[Any],
        *,
        connection: str = "issues",
        page_size: int = 50,
        empty_last_page: bool = False,
    ) -> None:
        """Serve ``items`` as a Relay connection at ``data.<connection>`` (dotted path allowed).

        Reads ``variables.first`` and ``variables.after`` from the POSTed JSON; answers
        ``{"data": {...: {"nodes": [...], "pageInfo": {"hasNextPage", "endCursor"}}}}``.
        """
        data = list(items)

        async def handler(request: web.Request) -> web.Response:
            body = await request.read()
            doc = orjson.loads(body) if body else {}
            variables = doc.get("variables") or {}
            size = max(1, _int_param(variables.get("first"), page_size))
            offset = _decode_cursor(variables.get("after"))
            chunk = data[offset : offset + size]
            more = _has_next(offset, size, len(data), len(chunk), empty_last_page)
            end = offset + size if more else offset + len(chunk)
            info = {
                "hasNextPage": more,
                "endCursor": _encode_cursor(end) if chunk or more else None,
            }
            return Reply(
                {"data": _nest(connection, {"nodes": chunk, "pageInfo": info})}
            ).to_response()

        self._add("POST", path, handler)

    def paginate_snowflake(
        self,
        path: str,
        items: Sequence[Mapping[str, Any]],
        *,
        id_field: str = "id",
        default_limit: int = 50,
    ) -> None:
        """Serve ``items`` (with snowflake ``id`` strings) Discord style, newest first.

        ``before=<id>`` gives the newest items older than it, ``after=<id>`` the oldest items newer
        than it (still returned newest first), neither the newest; ``limit`` 1..100.
        """
        ordered = sorted(items, key=lambda m: int(m[id_field]))

        def handler(request: web.Request) -> web.Response:
            limit = max(1, min(100, _int_param(request.query.get("limit"), default_limit)))
            before, after = request.query.get("before"), request.query.get("after")
            if after is not None:
                chunk = [m for m in ordered if int(m[id_field]) > int(after)][:limit]
            elif before is not None:
                older = [m for m in ordered if int(m[id_field]) < int(before)]
                chunk = older[-limit:]
            else:
                chunk = ordered[-limit:]
            return Reply(list(reversed(chunk))).to_response()

        self._add("GET", path, handler)

    # -- dispatch ------------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        arrived = time.monotonic()
        body = await request.read() if request.can_read_body else b""
        self.meter.record(arrived)
        self.requests.append(
            LoggedRequest(
                method=request.method,
                path=request.path,
                url=str(request.url),
                query={k: request.query[k] for k in request.query},
                headers=CIMultiDictProxy(CIMultiDict(request.headers)),
                body=body,
                time=arrived,
            )
        )
        fault = self.faults.take(request.method, request.path)
        if fault is not None:
            faulty = await _apply(fault, request)
            if faulty is not None:
                return faulty
        for route in reversed(self._routes):
            if route.method not in ("*", request.method):
                continue
            match = route.pattern.match(request.path)
            if match is None:
                continue
            request.match_info.update(match.groupdict())
            result = route.handler(request)
            if inspect.isawaitable(result):
                result = await result
            return _to_response(result)
        return Reply(
            {"message": f"FakeAPI has no route for {request.method} {request.path}"}, status=404
        ).to_response()


class FakeClock:
    """Virtual time for tests: ``HttpClient(clock=fake.time, sleep=fake.sleep)``.

    ``sleep`` advances the clock instantly and records the wait in ``sleeps``. ``time`` starts at
    ``start`` (wall-clock epoch seconds by default, so HTTP dates and reset headers make sense).
    """

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start
        self.sleeps: list[float] = []

    def time(self) -> float:
        """The current virtual time."""
        return self.now

    async def sleep(self, seconds: float) -> None:
        """Advance by ``seconds`` (and let other tasks run once)."""
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)

    @property
    def slept(self) -> float:
        """Total virtual seconds slept."""
        return sum(self.sleeps)


# -- running in its own process --------------------------------------------------------------------


def _load_setup(spec: str) -> Callable[[FakeAPI], Awaitable[None] | None]:
    module_name, _, attr = spec.partition(":")
    if not attr:
        raise SystemExit(f"--setup must look like 'package.module:function', got {spec!r}")
    fn = getattr(importlib.import_module(module_name), attr)
    if not callable(fn):
        raise SystemExit(f"{spec} is not callable")
    return fn  # type: ignore[no-any-return]


async def _serve(host: str, port: int, setup: str | None, seed: int) -> None:
    stop = asyncio.Event()
    with route_signals(stop.set):
        async with FakeAPI(host=host, port=port, seed=seed) as api:
            if setup:
                result = _load_setup(setup)(api)
                if inspect.isawaitable(result):
                    await result
            print(f"FakeAPI listening on {api.url}", flush=True)
            await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cfstream.testing.server [--host H] [--port P] [--setup module:function]``.

    ``setup`` receives the running :class:`FakeAPI` (sync or async) and adds routes. The first
    line on stdout is ``FakeAPI listening on <url>``; SIGTERM or SIGINT stops the server.
    """
    parser = argparse.ArgumentParser(
        prog="python -m cfstream.testing.server", description=main.__doc__
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--setup", default=None, help="module:function that adds routes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.host, args.port, args.setup, args.seed))
    return 0


if __name__ == "__main__":
    # Run the importable module's main, not this __main__ copy: a --setup module imports Reply and
    # Fault from cfstream.testing, and they must be the classes the server checks against.
    from cfstream.testing import server as _server

    sys.exit(_server.main())
