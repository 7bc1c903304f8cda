"""The HTTP client: one aiohttp session per run, and per-service request handling on top of it.

:class:`HttpClient` owns the session and the run's :class:`~cfstream.http.HttpMetrics`.
:meth:`HttpClient.service` returns a :class:`Service`: a base URL, a credential, a response
policy, a token bucket and an in-flight cap. Every request of a service goes through one loop:

1. wait at the service's rate-limit gate (closed by a 429 or an exhausted budget), capped by
   ``max_wait``;
2. take an in-flight slot and a token from the bucket;
3. send, following redirects by hand so the auth header never leaves the service's origin;
4. let the policy judge the response; retry transient problems with backoff and jitter, honour the
   waits services ask for, and raise a typed :mod:`cfstream.errors` error otherwise.

Callers never see aiohttp exceptions; URLs in errors and logs are redacted and headers never
appear in either.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, Literal, Self

import aiohttp
import anyio
import orjson
from aiolimiter import AsyncLimiter
from multidict import CIMultiDictProxy
from yarl import URL

from cfstream.errors import (
    ClientError,
    HTTPError,
    PaginationLoopError,
    RateLimitError,
    RateLimitWaitTooLong,
    ResponseFormatError,
    ResponseTooLargeError,
    TransientError,
)
from cfstream.http.auth import Auth, NoAuth, origin_of
from cfstream.http.metrics import HttpMetrics
from cfstream.http.paginate import PageRequest, Paginator, SeenRequests, parse_link_header
from cfstream.http.policies import Problem, RawResponse, ResponsePolicy, policy_for
from cfstream.http.ratelimit import Gate, RateLimit, RateLimitState
from cfstream.http.retry import RetryPolicy
from cfstream.logs import get_logger
from cfstream.secrets import redact, redact_url

__all__ = ("HttpClient", "JsonResponse", "Service")

log = get_logger("cfstream.http")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
#: query parameters: values are sent with ``str()``; None dropped; bools as true/false; lists repeat
Params = Mapping[str, object]
#: a check of a decoded body: None when it is what the endpoint promises, else why not
Check = Callable[[Any], str | None]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_PRIVATE_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
_USER_AGENT = "cfstream/0.1 (+https://github.com/cfstream)"
_MiB = 1024 * 1024
#: default caps on a decompressed body: JSON answers, and ``expect="bytes"`` downloads
DEFAULT_MAX_BODY_BYTES = 64 * _MiB
DEFAULT_MAX_DOWNLOAD_BYTES = 256 * _MiB


def _shape_problem(why: str | None) -> Problem | None:
    if why is None:
        return None
    return Problem(
        ResponseFormatError,
        f"the answer is not what the endpoint returns ({why}): a faulty answer, never taken as "
        "'nothing there'",
        "unexpected_shape",
        scope="request",
    )


@dataclass(frozen=True, repr=False)
class JsonResponse:
    """A successful response.

    Attributes:
        status: the HTTP status (2xx).
        headers: response headers (case-insensitive).
        data: the orjson-decoded body (None for a 204/205 or ``HEAD`` answer, or when bytes were
            asked for; an empty 2xx body where JSON was expected is retried, never None).
        url: the final URL (after redirects). It may contain secrets in its query: pass it through
            :func:`cfstream.secrets.redact_url` before showing it.
        content: the raw body bytes (for ``TypeAdapter.validate_json`` or binary downloads).
    """

    status: int
    headers: CIMultiDictProxy[str]
    data: Any
    url: str
    content: bytes = field(default=b"")

    @property
    def links(self) -> dict[str, str]:
        """The ``Link`` header as ``{rel: url}`` (empty when absent)."""
        return parse_link_header(self.headers.get("Link"))

    def text(self, encoding: str = "utf-8") -> str:
        """The body decoded as text."""
        return self.content.decode(encoding, errors="replace")

    def __repr__(self) -> str:
        return f"JsonResponse(status={self.status}, url={redact_url(self.url)!r}, bytes={len(self.content)})"


class _ServiceState:
    """What every task of a run shares for one (service, credential): bucket, slots, gates."""

    def __init__(self, rate: RateLimit | None, concurrency: int) -> None:
        self.rate = rate
        self.limiter: AsyncLimiter | None = rate.limiter() if rate else None
        self.slots = anyio.Semaphore(concurrency)
        self.gates = RateLimitState()


class HttpClient:
    """The run's HTTP client: one aiohttp session, shared rate limits, retries and metrics.

    Use it as an async context manager; hand :meth:`service` objects to connectors::

        async with HttpClient(timeout=30, limit_per_host=8) as http:
            gh = http.service("github", base_url="https://api.github.com", auth=BearerAuth(token),
                              rate=RateLimit(per_second=10, burst=10))
            r = await gh.get("/repos/o/r")

    :param timeout: total seconds for one attempt (connect, send, read the whole body).
    :param connect_timeout: seconds to open a connection.
    :param read_timeout: seconds between two reads of the socket (None: only ``timeout``).
    :param limit: open connections in total.
    :param limit_per_host: open connections per host.
    :param max_wait: the longest single wait a service may ask for (``Retry-After``, a reset
        header); a longer one raises :class:`~cfstream.errors.RateLimitWaitTooLong`.
    :param max_elapsed: the longest time one request may spend retrying and waiting.
    :param max_redirects: redirects followed per request.
    :param retry: the default :class:`RetryPolicy` of every service.
    :param user_agent: the ``User-Agent`` header.
    :param clock: wall-clock seconds (``time.time``); inject a fake clock in tests.
    :param sleep: the async sleep used for retry and rate-limit waits (``anyio.sleep``).
    :param session: an existing aiohttp session to use (it is not closed by this client).
    :param rate_share: the fraction of every service's ``rate`` this client may use (``1/k`` when
        ``k`` workers share one credential, as the Ray engine does); never below one request
        of burst.
    :param max_body_bytes: the largest body of a JSON answer, counted after decompression
        (default 64 MiB). The body is read in chunks and reading stops as soon as it is passed:
        a :class:`~cfstream.errors.ResponseTooLargeError` (not retried). A gzip bomb costs at
        most this much memory.
    :param max_download_bytes: the same cap for ``expect="bytes"`` requests (file downloads;
        default 256 MiB). A request can set its own cap with ``max_bytes=``.
    """

    def __init__(
        self,
        *,
        timeout: float = 60.0,
        connect_timeout: float = 15.0,
        read_timeout: float | None = 30.0,
        limit: int = 100,
        limit_per_host: int = 10,
        max_wait: float = 300.0,
        max_elapsed: float = 900.0,
        max_redirects: int = 5,
        retry: RetryPolicy | None = None,
        user_agent: str = _USER_AGENT,
        clock: Clock = time.time,
        sleep: Sleep = anyio.sleep,
        session: aiohttp.ClientSession | None = None,
        rate_share: float = 1.0,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
    ) -> None:
        if not 0 < rate_share <= 1:
            raise ValueError("rate_share must be in (0, 1]")
        if max_body_bytes < 1 or max_download_bytes < 1:
            raise ValueError("max_body_bytes and max_download_bytes must be at least 1")
        self.max_body_bytes = max_body_bytes
        self.max_download_bytes = max_download_bytes
        self.rate_share = rate_share
        self.timeout = aiohttp.ClientTimeout(
            total=timeout, connect=connect_timeout, sock_read=read_timeout
        )
        self.limit = limit
        self.limit_per_host = limit_per_host
        self.max_wait = max_wait
        self.max_elapsed = max_elapsed
        self.max_redirects = max_redirects
        self.retry = retry or RetryPolicy()
        self.user_agent = user_agent
        self.clock = clock
        self.sleep = sleep
        self.metrics = HttpMetrics()
        self._session = session
        self._owns_session = session is None
        self._states: dict[tuple[str, str], _ServiceState] = {}

    def __repr__(self) -> str:
        return f"HttpClient(services={sorted({k[0] for k in self._states})}, open={self._session is not None})"

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def open(self) -> None:
        """Create the session (done by ``async with``)."""
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self.limit, limit_per_host=self.limit_per_host)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self.timeout,
                raise_for_status=False,
                cookie_jar=aiohttp.DummyCookieJar(),  # APIs need no cookies; keep requests independent
            )
            # aiohttp silently resends an idempotent request once when a reused connection was
            # dropped; that resend bypasses the rate limiter. Our own retry loop handles drops.
            if hasattr(self._session, "_retry_connection"):
                self._session._retry_connection = False
            self._owns_session = True

    async def aclose(self) -> None:
        """Close the session if this client created it."""
        session, self._session = self._session, None
        if session is not None and self._owns_session:
            await session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        """The aiohttp session; only while the client is open."""
        if self._session is None:
            raise RuntimeError(
                "HttpClient is not open: use it as 'async with HttpClient() as http:'"
            )
        return self._session

    def service(
        self,
        name: str,
        *,
        base_url: str,
        auth: Auth | None = None,
        rate: RateLimit | None = None,
        headers: Mapping[str, str] | None = None,
        concurrency: int = 8,
        policy: str | ResponsePolicy | None = None,
        retry: RetryPolicy | None = None,
    ) -> Service:
        """A handle on one service for one credential.

        Calls with the same ``name`` and credential share one token bucket, one in-flight cap and
        one set of rate-limit gates, whichever task makes them (the first call's ``rate`` and
        ``concurrency`` win).

        :param name: the service's name in errors, logs and metrics; also picks the response
            policy when ``policy`` is None and the name is a known family.
        :param base_url: where relative paths are joined; its origin is the only one that gets
            the auth header.
        :param auth: the credential (:class:`BearerAuth`, :class:`HeaderAuth`, :class:`NoAuth`).
        :param rate: the proactive budget; None sends as fast as ``concurrency`` allows.
        :param headers: headers for every request (never put secrets here: use ``auth``).
        :param concurrency: requests in flight at once for this service and credential.
        :param policy: ``"github"``, ``"discord"``, ``"linear"``, ``"slack"``, ``"notion"``,
            ``"google"``, ``"generic"`` or a :class:`ResponsePolicy`.
        :param retry: this service's retry settings (default: the client's).
        """
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        auth = auth or NoAuth()
        key = (name, auth.fingerprint())
        state = self._states.get(key)
        if state is None:
            if rate is not None and self.rate_share < 1:
                rate = RateLimit(
                    per_second=rate.per_second * self.rate_share,
                    burst=max(1, int(rate.burst * self.rate_share)),
                )
            state = self._states[key] = _ServiceState(rate, concurrency)
        return Service(
            self,
            name,
            base_url=base_url,
            auth=auth,
            headers=headers,
            policy=policy_for(policy, name),
            retry=retry or self.retry,
            state=state,
        )


@dataclass
class _Attempt:
    """Bookkeeping of one logical request across its retries."""

    start: float
    tries: int = 0
    rate_tries: int = 0
    delays: Iterator[float] = field(default_factory=lambda: iter(()))


class Service:
    """Requests to one service with one credential. Get one from :meth:`HttpClient.service`.

    Paths are joined to ``base_url``; absolute URLs are used verbatim. Every method returns a
    :class:`JsonResponse` or raises a :class:`~cfstream.errors.HTTPError` subclass.
    """

    def __init__(
        self,
        client: HttpClient,
        name: str,
        *,
        base_url: str,
        auth: Auth,
        headers: Mapping[str, str] | None,
        policy: ResponsePolicy,
        retry: RetryPolicy,
        state: _ServiceState,
    ) -> None:
        self.client = client
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.auth = auth
        self.headers = dict(headers or {})
        self.policy = policy
        self.retry = retry
        self._state = state
        self._origin = origin_of(self.base_url)

    def __repr__(self) -> str:
        return (
            f"Service(name={self.name!r}, base_url={redact_url(self.base_url)!r}, "
            f"policy={self.policy!r}, auth={self.auth!r})"
        )

    @property
    def rate(self) -> RateLimit | None:
        """The token-bucket budget shared by this service and credential."""
        return self._state.rate

    # -- verbs ---------------------------------------------------------------------------------

    async def get(
        self,
        url: str,
        *,
        params: Params | None = None,
        headers: Mapping[str, str] | None = None,
        expect: Literal["json", "bytes"] = "json",
        max_bytes: int | None = None,
        check: Check | None = None,
    ) -> JsonResponse:
        """``GET url``; see :meth:`request`."""
        return await self.request(
            "GET",
            url,
            params=params,
            headers=headers,
            expect=expect,
            max_bytes=max_bytes,
            check=check,
        )

    async def post(
        self,
        url: str,
        *,
        json: Any = None,
        params: Params | None = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        expect: Literal["json", "bytes"] = "json",
        max_bytes: int | None = None,
        check: Check | None = None,
    ) -> JsonResponse:
        """``POST url`` with a JSON body (or raw ``data``); see :meth:`request`."""
        return await self.request(
            "POST",
            url,
            json=json,
            params=params,
            data=data,
            headers=headers,
            expect=expect,
            max_bytes=max_bytes,
            check=check,
        )

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Params | None = None,
        json: Any = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        expect: Literal["json", "bytes"] = "json",
        max_bytes: int | None = None,
        check: Check | None = None,
    ) -> JsonResponse:
        """Send a request with rate limiting, retries and auth scoping.

        :param method: the HTTP method.
        :param url: a path joined to ``base_url``, or an absolute URL used verbatim.
        :param params: query parameters (added to those already in ``url``; None values dropped,
            booleans sent as ``true``/``false``, sequences repeated).
        :param json: a body encoded with orjson (``Content-Type: application/json``).
        :param data: a raw body instead of ``json``.
        :param headers: extra headers for this request.
        :param expect: ``"json"`` decodes the body (an empty or non-JSON 2xx body is a retried
            :class:`~cfstream.errors.ResponseFormatError`; 204 is fine); ``"bytes"`` leaves it
            in ``content`` unjudged.
        :param max_bytes: the cap on the decompressed body (default: the client's
            ``max_body_bytes`` for JSON, ``max_download_bytes`` for bytes).
        :param check: what the endpoint promises: called with the decoded 2xx body, it returns
            None when the body is that, or why not; a body that fails it is a faulty answer,
            retried like a 5xx and finally a :class:`~cfstream.errors.ResponseFormatError`.
        :raises ~cfstream.errors.AuthError: 401/403: check the credential and its scopes.
        :raises ~cfstream.errors.NotFoundError: 404 or the service's equivalent.
        :raises ~cfstream.errors.ClientError: another 4xx, or a service error code.
        :raises ~cfstream.errors.RateLimitWaitTooLong: a wait above ``max_wait`` or past ``max_elapsed``.
        :raises ~cfstream.errors.TransientError: 5xx/timeouts/disconnects after the last try.
        :raises ~cfstream.errors.ResponseFormatError: empty, cut-off or non-JSON bodies after the
            last try (a :class:`~cfstream.errors.TransientError`: never the record's fault).
        :raises ~cfstream.errors.ResponseTooLargeError: the body passed ``max_bytes`` (not retried).
        """
        method = method.upper()
        target = self._target(url, params)
        extra = dict(headers or {})
        body = data
        if json is not None:
            body = orjson.dumps(json)
            extra.setdefault("Content-Type", "application/json")
        expect_json = expect == "json"
        client = self.client
        if max_bytes is None:
            max_bytes = client.max_body_bytes if expect_json else client.max_download_bytes
        attempt = _Attempt(start=client.clock(), delays=self.retry.delays())
        route = f"{method} {target.path}"
        while True:
            await self._wait_at_gate(route, attempt, method, target)
            attempt.tries += 1
            async with self._state.slots:
                if self._state.limiter is not None:
                    await self._state.limiter.acquire()
                raw, problem = await self._send(method, target, body, extra, max_bytes)
            if raw is not None:
                verdict = self.policy.judge(
                    raw, service=self.name, now=client.clock(), expect_json=expect_json
                )
                if verdict.learned_bucket:
                    self._state.gates.learn_bucket(*verdict.learned_bucket)
                for gate in verdict.gates:
                    self._state.gates.close(gate)
                problem = verdict.problem
                if problem is None and check is not None and expect_json:
                    problem = _shape_problem(check(verdict.data))
                if problem is None:
                    return JsonResponse(raw.status, raw.headers, verdict.data, raw.url, raw.body)
            assert problem is not None
            status = raw.status if raw is not None else None
            final_method = raw.method if raw is not None else method
            await self._after_problem(problem, attempt, final_method, target, status, route)

    async def paginate(
        self,
        paginator: Paginator,
        url: str,
        *,
        method: str = "GET",
        params: Params | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncGenerator[JsonResponse, None]:
        """Yield every page of a paginated endpoint, in order, as :class:`JsonResponse`.

        The paginator decides the first request and each next one from the previous page; use
        ``paginator.items(page)`` to get a page's items. Drive the iterator under
        ``contextlib.aclosing`` when you may stop early. A page whose items are not where the
        paginator expects them (:meth:`Paginator.check`) is a faulty answer, retried, and never
        yielded as an empty page.

        When ``url`` is on this service's origin, a next request that points at another origin
        (a next link naming a proxied server's internal host) is sent to this service's own
        origin with its credential instead: see :meth:`own_origin`. Credentials never go to
        another origin.

        :raises ~cfstream.errors.PaginationLoopError: the service returned a cursor or next link
            it had already returned in this run (``a -> b -> a`` or a cursor that does not
            advance): paging stops instead of looping forever. Not retryable.
        """
        request: PageRequest | None = paginator.first(
            PageRequest(method.upper(), url, dict(params or {}), json)
        )
        seen = SeenRequests()
        endpoint = redact_url(self._target(url, None).path)
        # next links are kept on the service's origin when the pagination started there
        home = origin_of(self._target(url, None)) == self._origin
        while request is not None:
            target = self._target(request.url, request.params)
            if not seen.add(request.method, str(target), request.json):
                raise PaginationLoopError(
                    f"the service returned a pagination cursor (next link or page token) it had "
                    f"already returned, after {len(seen)} pages of {endpoint!r}; stopped "
                    "instead of requesting the same pages forever. Re-running will not help: "
                    "the service's paging of this endpoint is broken",
                    service=self.name,
                    url=redact_url(target.human_repr()),
                    method=request.method,
                )
            page = await self.request(
                request.method,
                request.url,
                params=request.params,
                json=request.json,
                headers=headers,
                check=paginator.check,
            )
            yield page
            request = paginator.next(request, page)
            if request is not None and home:
                request = replace(request, url=self.own_origin(request.url))

    def own_origin(self, url: str) -> str:
        """``url`` moved onto this service's origin when it names another one.

        Services behind a proxy send next links with their internal host
        (``http://ghe.internal:8080/api/v3/...``). The link's path and query are kept and the
        scheme, host and port of ``base_url`` used. When the link's path does not start with
        ``base_url``'s path, the proxy is taken to strip a prefix: the leading part of
        ``base_url``'s path that the link lacks is put in front (base ``/ghe/api/v3`` and link
        ``/api/v3/x`` give ``/ghe/api/v3/x``; base ``/api/v3`` and link ``/x`` give
        ``/api/v3/x``). Relative URLs and URLs on this origin are returned unchanged.
        """
        if not url.startswith(("http://", "https://")):
            return url
        link = URL(url, encoded=True)
        if origin_of(link) == self._origin:
            return url
        base = URL(self.base_url, encoded=True)
        base_parts = [p for p in base.raw_path.split("/") if p]
        link_parts = [p for p in link.raw_path.split("/") if p]
        keep = len(base_parts)
        for k in range(len(base_parts) + 1):
            suffix = base_parts[k:]
            if link_parts[: len(suffix)] == suffix:
                keep = k
                break
        path = "/" + "/".join(base_parts[:keep] + link_parts)
        if link.raw_path.endswith("/") and link_parts:
            path += "/"
        query = f"?{link.raw_query_string}" if link.raw_query_string else ""
        moved = f"{base.origin()}{path}{query}"
        log.warning(
            "%s: a next-page link named another origin (%s); fetching %s from the configured "
            "origin instead (credentials never go to another origin)",
            self.name,
            redact_url(str(link.origin())),
            redact_url(moved),
        )
        return moved

    # -- internals -----------------------------------------------------------------------------

    def _target(self, url: str, params: Params | None) -> URL:
        if url.startswith(("http://", "https://")):
            target = URL(url, encoded=True)
        else:
            target = URL(f"{self.base_url}/{url.lstrip('/')}", encoded=True)
        if params:
            pairs: list[tuple[str, str]] = []
            for key, value in params.items():
                if value is None:
                    continue
                values: Sequence[object] = value if isinstance(value, list | tuple) else [value]
                for v in values:
                    pairs.append(
                        (key, ("true" if v else "false") if isinstance(v, bool) else str(v))
                    )
            if pairs:
                target = target.update_query(pairs)
        return target

    def _headers_for(self, url: URL, extra: Mapping[str, str]) -> dict[str, str]:
        hdrs = {"User-Agent": self.client.user_agent, "Accept": "application/json"}
        hdrs.update(self.headers)
        hdrs.update(extra)
        if origin_of(url) == self._origin:
            hdrs.update(self.auth.headers())
        else:
            # another origin never gets a credential, whichever way it was configured
            private = _PRIVATE_HEADERS | {name.lower() for name in self.auth.headers()}
            hdrs = {k: v for k, v in hdrs.items() if k.lower() not in private}
        return hdrs

    async def _read_body(self, resp: aiohttp.ClientResponse, method: str, limit: int) -> bytes:
        """The decompressed body, read in chunks; stops as soon as it passes ``limit``."""
        length = resp.content_length
        encoded = bool(resp.headers.get("Content-Encoding"))
        if method == "HEAD" or resp.status in (204, 304):
            return await resp.read()  # no body, whatever Content-Length says
        if length is not None and length <= limit and not encoded:
            return await resp.read()  # the parser stops at Content-Length: it cannot pass limit
        size = 0
        chunks: list[bytes] = []
        if length is None or encoded:
            async for chunk in resp.content.iter_any():
                size += len(chunk)
                if size > limit:
                    break
                chunks.append(chunk)
            else:
                return b"".join(chunks)
        resp.close()  # drop the connection instead of draining the rest
        self.client.metrics.bytes_received += min(size, limit)
        url = redact_url(str(resp.url))
        read = f"stopped reading after {size:,} bytes" if size else f"Content-Length is {length:,}"
        mib = f" ({limit / _MiB:.0f} MiB)" if limit >= _MiB else ""
        raise ResponseTooLargeError(
            f"the response body is larger than the limit of {limit:,} bytes{mib} "
            f"(counted after decompression; {read}); if such answers are "
            "legitimate, raise HttpClient(max_body_bytes=...) for JSON answers, "
            "HttpClient(max_download_bytes=...) for downloads, or pass max_bytes= to the request",
            limit=limit,
            service=self.name,
            status=resp.status,
            url=url,
            method=method,
        )

    async def _send(
        self,
        method: str,
        target: URL,
        body: bytes | None,
        extra: Mapping[str, str],
        max_bytes: int,
    ) -> tuple[RawResponse | None, Problem | None]:
        """One attempt, redirects included; aiohttp errors become problems here."""
        session = self.client.session
        metrics = self.client.metrics
        url = target
        started = time.monotonic()
        try:
            for _hop in range(self.client.max_redirects + 1):
                hdrs = self._headers_for(url, extra)
                metrics.count_request(self.name)
                async with session.request(
                    method, url, data=body, headers=hdrs, allow_redirects=False
                ) as resp:
                    location = resp.headers.get("Location")
                    if resp.status in _REDIRECTS and location:
                        await self._read_body(resp, method, max_bytes)
                        nxt = url.join(URL(location, encoded=True))
                        log.debug(
                            "%s: %s %s -> %d redirect to %s",
                            self.name,
                            method,
                            redact_url(str(url)),
                            resp.status,
                            redact_url(str(nxt)),
                        )
                        if resp.status == 303 or (resp.status in (301, 302) and method == "POST"):
                            method, body = "GET", None
                            extra = {k: v for k, v in extra.items() if k.lower() != "content-type"}
                        url = nxt
                        continue
                    content = await self._read_body(resp, method, max_bytes)
                    metrics.bytes_received += len(content)
                    log.debug(
                        "%s: %s %s -> %d (%d bytes, %.3f s)",
                        self.name,
                        method,
                        redact_url(str(resp.url)),
                        resp.status,
                        len(content),
                        time.monotonic() - started,
                    )
                    return RawResponse(
                        method, str(resp.url), resp.status, resp.headers, content
                    ), None
            return None, Problem(
                ClientError,
                f"more than {self.client.max_redirects} redirects; check base_url",
                "redirects",
            )
        except TimeoutError:
            total = self.client.timeout.total
            return None, Problem(
                TransientError,
                f"timed out (timeout={total} s per attempt)",
                "timeout",
                scope="request",
            )
        except aiohttp.ClientPayloadError as exc:
            return None, Problem(
                ResponseFormatError,
                f"the body was cut off before its end (truncated): {redact(str(exc))}",
                "truncated",
                scope="request",
            )
        except aiohttp.ServerDisconnectedError:
            return None, Problem(
                TransientError,
                "the server closed the connection without a response",
                "disconnected",
                scope="request",
            )
        except aiohttp.InvalidURL as exc:
            return None, Problem(ClientError, f"invalid URL: {redact_url(str(exc))}", "invalid_url")
        except aiohttp.ClientConnectorError as exc:
            return None, Problem(
                TransientError,
                f"cannot connect ({type(exc).__name__}: {redact(str(exc))}); check base_url and the network",
                "connect",
                scope="request",
            )
        except aiohttp.ClientResponseError as exc:
            return None, Problem(
                ResponseFormatError,
                f"malformed HTTP response ({exc.status}: {redact(exc.message)})",
                "bad_response",
                scope="request",
            )
        except aiohttp.ClientError as exc:
            return None, Problem(
                TransientError,
                f"connection failed ({type(exc).__name__}: {redact(str(exc))})",
                "connection",
                scope="request",
            )

    def _error(
        self, problem: Problem, method: str, target: URL, status: int | None, note: str = ""
    ) -> HTTPError:
        kwargs: dict[str, Any] = {
            "service": self.name,
            "status": status,
            "url": redact_url(target.human_repr()),
            "method": method,
        }
        message = redact(problem.message + note)
        if issubclass(problem.kind, RateLimitError):
            return problem.kind(message, retry_after=problem.retry_after, **kwargs)
        return problem.kind(message, **kwargs)

    def _too_long(
        self, wait: float, why: str, method: str, target: URL, status: int | None
    ) -> RateLimitWaitTooLong:
        return RateLimitWaitTooLong(
            redact(why),
            retry_after=wait,
            service=self.name,
            status=status,
            url=redact_url(target.human_repr()),
            method=method,
        )

    async def _after_problem(
        self,
        problem: Problem,
        attempt: _Attempt,
        method: str,
        target: URL,
        status: int | None,
        route: str,
    ) -> None:
        """Decide on a problem: raise a typed error, or count, wait and return to retry."""
        client = self.client
        metrics = client.metrics
        if problem.is_rate_limit:
            metrics.rate_limited += 1
        if not problem.retryable:
            raise self._error(problem, method, target, status)
        now = client.clock()
        elapsed = now - attempt.start
        if problem.is_rate_limit:
            attempt.rate_tries += 1
            if attempt.rate_tries >= self.retry.max_rate_limit_tries:
                raise self._error(
                    problem,
                    method,
                    target,
                    status,
                    f" (still rate limited after {attempt.rate_tries} attempts in {elapsed:.1f} s)",
                )
        elif attempt.tries - attempt.rate_tries >= self.retry.max_tries:
            raise self._error(
                problem,
                method,
                target,
                status,
                f" (gave up after {attempt.tries} attempts in {elapsed:.1f} s)",
            )
        if problem.retry_after is not None and problem.scope != "request":
            # an announced wait: close the gate for every task; the loop waits there
            until = now + problem.retry_after
            self._state.gates.close(
                Gate(
                    until,
                    problem.bucket if problem.scope == "bucket" else None,
                    f"{problem.message}; Retry-After",
                )
            )
            metrics.count_retry(problem.cause)
            log.info(
                "%s: %s %s -> %s; the service asked to wait %.1f s",
                self.name,
                method,
                redact_url(target.human_repr()),
                status or problem.cause,
                problem.retry_after,
            )
            if problem.scope == "bucket":
                self._state.gates.learn_bucket(route, problem.bucket or route)
            return
        if problem.retry_after is not None:
            delay = problem.retry_after
        else:
            delay = next(attempt.delays)
            if problem.is_rate_limit:
                delay = max(delay, self.retry.rate_limit_floor)
        if delay > client.max_wait:
            raise self._too_long(
                delay,
                f"{self.name} asked to wait {delay:.0f} s ({problem.message}), more than "
                f"max_wait={client.max_wait:.0f} s; try again later or raise max_wait",
                method,
                target,
                status,
            )
        if elapsed + delay > client.max_elapsed:
            note = (
                f" (gave up after {attempt.tries} attempts in {elapsed:.1f} s: waiting {delay:.1f} s "
                f"more would pass max_elapsed={client.max_elapsed:.0f} s)"
            )
            if problem.is_rate_limit:
                raise self._too_long(
                    delay, f"{self.name}: {problem.message}{note}", method, target, status
                )
            raise self._error(problem, method, target, status, note)
        metrics.count_retry(problem.cause)
        metrics.wait_seconds += delay
        log.info(
            "%s: %s %s -> %s (%s); retry %d in %.2f s",
            self.name,
            method,
            redact_url(target.human_repr()),
            status or "no response",
            problem.cause,
            attempt.tries,
            delay,
        )
        await client.sleep(delay)

    async def _wait_at_gate(self, route: str, attempt: _Attempt, method: str, target: URL) -> None:
        """Sleep while the service (or the route's bucket) is closed by a rate limit."""
        client = self.client
        metrics = client.metrics
        while True:
            until, reason = self._state.gates.opens_at(route)
            now = client.clock()
            wait = until - now
            if wait <= 0:
                return
            if wait > client.max_wait:
                raise self._too_long(
                    wait,
                    f"{self.name} asked to wait {wait:.0f} s ({reason}), more than "
                    f"max_wait={client.max_wait:.0f} s; try again later or raise max_wait",
                    method,
                    target,
                    None,
                )
            if now - attempt.start + wait > client.max_elapsed:
                raise self._too_long(
                    wait,
                    f"{self.name} asked to wait {wait:.0f} s ({reason}), which would pass "
                    f"max_elapsed={client.max_elapsed:.0f} s for this request; try again later",
                    method,
                    target,
                    None,
                )
            metrics.waiting_until[self.name] = max(until, metrics.waiting_until.get(self.name, 0.0))
            metrics.wait_seconds += wait
            log.info("%s: rate limited (%s); waiting %.1f s", self.name, reason, wait)
            try:
                await client.sleep(wait)
            finally:
                if metrics.waiting_until.get(self.name, 0.0) <= client.clock():
                    metrics.waiting_until.pop(self.name, None)
