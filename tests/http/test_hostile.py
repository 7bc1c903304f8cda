"""Hostile answers: empty or cut-off 200s, broken text, cycling cursors, decompression bombs."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from contextlib import aclosing
from typing import Any

import orjson
import pytest
from aiohttp import web

from cfstream.errors import (
    HTTPError,
    PaginationLoopError,
    RecordError,
    ResponseFormatError,
    ResponseTooLargeError,
    TransientError,
)
from cfstream.http import (
    BodyCursorPaginator,
    GraphQLPaginator,
    HttpClient,
    LinkHeaderPaginator,
    PageTokenPaginator,
    Paginator,
    RetryPolicy,
)
from cfstream.testing import FakeAPI, FakeClock, Reply

PAYLOAD = [{"id": 1}, {"id": 2}]


def _empty(status: int = 200) -> web.Response:
    return web.Response(status=status, body=b"", content_type="application/json")


# -- item 2: an empty or cut-off 200 is a retried fault, never "nothing there" ------------------


@pytest.mark.parametrize("body", [b"", b"  \n"])
async def test_an_empty_200_is_retried_like_a_5xx(
    api: FakeAPI, http: HttpClient, clock: FakeClock, body: bytes
) -> None:
    empty = Reply(body=body, content_type="application/json")
    api.replies("GET", "/repos/o/r/issues/7/comments", [empty, empty, Reply(PAYLOAD)])
    r = await http.service("github", base_url=api.url).get("/repos/o/r/issues/7/comments")
    assert r.data == PAYLOAD
    assert len(api.requests) == 3
    assert http.metrics.retries == {"empty_body": 2}
    assert clock.sleeps == [0.01, 0.02]  # the same backoff as a 503


async def test_an_empty_200_to_the_end_is_a_transient_error_not_a_record_error(
    api: FakeAPI, http: HttpClient
) -> None:
    api.route("GET", "/blob", lambda _r: _empty())
    with pytest.raises(ResponseFormatError, match="empty where JSON was expected") as info:
        await http.service("github", base_url=api.url).get("/blob")
    err = info.value
    assert isinstance(err, TransientError) and err.retryable
    assert not isinstance(err, RecordError)
    assert "gave up after 4 attempts" in str(err) and err.status == 200
    assert len(api.requests) == 4


async def test_an_empty_page_inside_a_pagination_is_retried(api: FakeAPI, http: HttpClient) -> None:
    calls = 0

    def handler(request: web.Request) -> Any:
        nonlocal calls
        calls += 1
        n = int(request.query.get("page", "1"))
        if calls == 2:
            return _empty()  # page 2 answers empty once
        link = {"Link": f'</items?page={n + 1}>; rel="next"'} if n < 3 else {}
        return Reply([{"n": 2 * n}, {"n": 2 * n + 1}], headers=link)

    api.route("GET", "/items", handler)
    got: list[Any] = []
    async for page in http.service("github", base_url=api.url).paginate(
        LinkHeaderPaginator(), "/items"
    ):
        got += page.data
    assert got == [{"n": n} for n in range(2, 8)]
    assert [r.query.get("page") for r in api.requests] == [None, "2", "2", "3"]


@pytest.mark.parametrize(
    ("name", "paginator", "faulty", "good"),
    [
        ("github", LinkHeaderPaginator(), {}, [1, 2]),
        ("slack", BodyCursorPaginator.slack(items_path="channels"), {"ok": True}, None),
        ("linear", GraphQLPaginator("issues"), {"data": {"issues": None}}, None),
    ],
    ids=["list-body-is-object", "slack-items-missing", "graphql-connection-null"],
)
async def test_a_page_without_its_items_is_retried_not_read_as_empty(
    api: FakeAPI, http: HttpClient, name: str, paginator: Paginator, faulty: Any, good: Any
) -> None:
    if good is None:
        good = (
            {"ok": True, "channels": [1, 2], "response_metadata": {"next_cursor": ""}}
            if name == "slack"
            else {"data": {"issues": {"nodes": [1, 2], "pageInfo": {"hasNextPage": False}}}}
        )
    method = "POST" if name == "linear" else "GET"
    api.replies(method, "/items", [Reply(faulty), Reply(good)])
    svc = http.service(name, base_url=api.url)
    json = {"query": "q"} if method == "POST" else None
    pages = [page async for page in svc.paginate(paginator, "/items", method=method, json=json)]
    assert [paginator.items(p) for p in pages] == [[1, 2]]
    assert http.metrics.retries == {"unexpected_shape": 1}

    api.replies(method, "/items", [Reply(faulty)])
    with pytest.raises(ResponseFormatError, match="not what the endpoint returns") as info:
        async for _page in svc.paginate(paginator, "/items", method=method, json=json):
            pass
    assert isinstance(info.value, TransientError)


async def test_a_caller_check_makes_a_wrong_shape_a_retried_fault(
    api: FakeAPI, http: HttpClient
) -> None:
    api.replies("GET", "/blob", [Reply({"sha": "x"}), Reply({"sha": "x", "content": "aGk="})])

    def blob(data: Any) -> str | None:
        return None if isinstance(data, dict) and "content" in data else "no `content`"

    r = await http.service("github", base_url=api.url).get("/blob", check=blob)
    assert r.data["content"] == "aGk=" and len(api.requests) == 2


async def test_no_body_is_fine_where_none_is_promised(api: FakeAPI, http: HttpClient) -> None:
    api.route("DELETE", "/thing", lambda _r: web.Response(status=204))
    api.route("GET", "/empty-file", lambda _r: _empty())
    svc = http.service("svc", base_url=api.url)
    r = await svc.request("DELETE", "/thing")
    assert r.status == 204 and r.data is None
    r = await svc.get("/empty-file", expect="bytes")
    assert r.status == 200 and r.content == b""
    assert len(api.requests) == 2 and http.metrics.retries == {}


async def test_a_chunked_body_cut_off_midway_is_retried(api: FakeAPI, http: HttpClient) -> None:
    calls = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        if calls > 1:
            return web.json_response(PAYLOAD)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(b'[{"id": 1},')
        assert request.transport is not None
        request.transport.close()  # the connection dies before the last chunk
        return resp

    api.route("GET", "/cut", handler)
    r = await http.service("svc", base_url=api.url).get("/cut")
    assert r.data == PAYLOAD and calls == 2
    assert http.metrics.retries == {"truncated": 1}


# -- item 4: a lone surrogate escape does not reject the whole page -----------------------------


def test_repair_json_replaces_only_lone_surrogates() -> None:
    from cfstream.http.policies import repair_json

    body = (
        rb'["cut \ud83d", "pair \ud83d\ude00", "low \ude00 alone", "\\ud83d is text",'
        rb' "\\\ud83d", "\ud83d\ud83d\ude00", "\n\u00e9\"\\"]'
    )
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(body)
    assert repair_json(body) == [
        "cut \ufffd",
        "pair \U0001f600",
        "low \ufffd alone",
        "\\ud83d is text",
        "\\\ufffd",
        "\ufffd\U0001f600",
        '\n\u00e9"\\',
    ]
    assert repair_json(b'{"a": "\xed\xa0\xbd!"}') == {"a": "\ufffd\ufffd\ufffd!"}
    with pytest.raises(orjson.JSONDecodeError):
        repair_json(b'{"a": "\\ud83d')  # still truncated: still an error


async def test_every_item_of_a_pagination_with_a_lone_surrogate_comes_out(
    api: FakeAPI, http: HttpClient
) -> None:
    pages = 5

    def handler(request: web.Request) -> web.Response:
        n = int(request.query.get("page", "1"))
        docs = [{"id": (n - 1) * 100 + i, "body": f"doc CUT{i}"} for i in range(100)]
        body = orjson.dumps(docs)
        if n == 2:
            body = body.replace(b"CUT7", rb"\ud83d", 1)  # one cut emoji in one document
        headers = {}
        if n < pages:
            headers["Link"] = f'<{api.url}/docs?page={n + 1}>; rel="next"'
        return web.Response(body=body, headers=headers, content_type="application/json")

    api.route("GET", "/docs", handler)
    got: list[Any] = []
    async for page in http.service("github", base_url=api.url).paginate(
        LinkHeaderPaginator(), "/docs"
    ):
        got += page.data
    assert [d["id"] for d in got] == list(range(500))
    assert got[107]["body"] == "doc \ufffd"
    assert len(api.requests) == pages and http.metrics.retries == {}


# -- item 5: a cursor that cycles ends the pagination with a clear error -----------------------


def _cycling(
    reply: Callable[[str, str | None], Any],
) -> tuple[Callable[[web.Request], Any], list[int]]:
    """A handler whose cursor goes a -> b -> a -> ...; after 50 requests it ends the chain."""
    count = [0]

    async def handler(request: web.Request) -> Any:
        count[0] += 1
        body = await request.json() if request.method == "POST" else {}
        cursor = (
            request.query.get("cursor")
            or request.query.get("pageToken")
            or request.query.get("page")
            or (body.get("variables") or {}).get("after")
            or body.get("start_cursor")
        )
        nxt = None if count[0] >= 50 else ("b" if cursor == "a" else "a")
        return reply(cursor or "start", nxt)

    return handler, count


def _link(cursor: str, nxt: str | None) -> Any:
    headers = {"Link": f'</items?page={nxt}&per_page=2>; rel="next"'} if nxt else {}
    return Reply([cursor], headers=headers)


def _slack(cursor: str, nxt: str | None) -> Any:
    return {"ok": True, "items": [cursor], "response_metadata": {"next_cursor": nxt or ""}}


def _page_token(cursor: str, nxt: str | None) -> Any:
    return {"files": [cursor], **({"nextPageToken": nxt} if nxt else {})}


def _notion(cursor: str, nxt: str | None) -> Any:
    return {"object": "list", "results": [cursor], "has_more": bool(nxt), "next_cursor": nxt}


def _graphql(cursor: str, nxt: str | None) -> Any:
    info = {"hasNextPage": bool(nxt), "endCursor": nxt}
    return {"data": {"issues": {"nodes": [cursor], "pageInfo": info}}}


@pytest.mark.parametrize(
    ("name", "paginator", "reply", "method"),
    [
        ("github", LinkHeaderPaginator(), _link, "GET"),
        ("slack", BodyCursorPaginator.slack(items_path="items"), _slack, "GET"),
        ("google", PageTokenPaginator(items_path="files"), _page_token, "GET"),
        ("notion", BodyCursorPaginator.notion(), _notion, "POST"),
        ("linear", GraphQLPaginator("issues"), _graphql, "POST"),
    ],
    ids=["link-header", "slack-cursor", "page-token", "notion-post-cursor", "graphql"],
)
async def test_a_cursor_cycle_stops_with_a_pagination_loop_error(
    api: FakeAPI,
    http: HttpClient,
    name: str,
    paginator: Paginator,
    reply: Callable[[str, str | None], Any],
    method: str,
) -> None:
    handler, count = _cycling(reply)
    api.route(method, "/items", handler)
    svc = http.service(name, base_url=api.url)
    seen: list[Any] = []
    json = {"query": "q", "variables": {}} if method == "POST" else None
    with pytest.raises(PaginationLoopError) as info:
        async with aclosing(svc.paginate(paginator, "/items", method=method, json=json)) as it:
            async for page in it:
                seen += paginator.items(page)
    # start, a, b: the next request (a again) is refused before it is sent
    assert seen == ["start", "a", "b"]
    assert count[0] == 3
    err = info.value
    assert not err.retryable and isinstance(err, HTTPError)
    assert not isinstance(err, TransientError | RecordError)
    message = str(err)
    assert "pagination cursor" in message and "already returned" in message
    assert "'/items'" in message and name in message


def test_seen_requests_keeps_digests_not_pages() -> None:
    from cfstream.http import SeenRequests

    seen = SeenRequests()
    assert seen.add("GET", "https://h/x?page=2", None)
    assert seen.add("GET", "https://h/x?page=3", None)
    assert not seen.add("GET", "https://h/x?page=2", None)
    assert seen.add("POST", "https://h/q", {"b": 1, "a": [2]})
    assert not seen.add("POST", "https://h/q", {"a": [2], "b": 1})  # key order does not matter
    assert len(seen) == 3


# -- item 9: a decompression bomb stops at the cap ----------------------------------------------


def _gzip_bomb(megabytes: int) -> bytes:
    """One gzip stream of ``megabytes`` MiB of zeros (about 1 KB per MiB), built in a few ms.

    One MiB is deflated once into self-contained blocks (a full flush resets the dictionary),
    repeated, and framed with the gzip header and the trailer of the whole stream.
    """
    zeros = bytes(1024 * 1024)
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = packer.compress(zeros) + packer.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(megabytes):
        crc = zlib.crc32(zeros, crc)
    size = megabytes * len(zeros)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    trailer = struct.pack("<II", crc, size & 0xFFFFFFFF)
    return header + block * megabytes + packer.flush() + trailer


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return _gzip_bomb(100)


def _gzip_route(body: bytes) -> Callable[[web.Request], web.Response]:
    def handler(_request: web.Request) -> web.Response:
        return web.Response(
            body=body,
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )

    return handler


async def test_a_gzip_bomb_stops_at_max_body_bytes(
    api: FakeAPI, clock: FakeClock, fast_retry: RetryPolicy, bomb: bytes
) -> None:
    assert len(bomb) < 200_000
    assert len(zlib.decompressobj(31).decompress(bomb, 1 << 16)) == 1 << 16  # real gzip
    api.route("GET", "/bomb", _gzip_route(bomb))
    limit = 1024 * 1024
    async with HttpClient(
        max_body_bytes=limit, retry=fast_retry, clock=clock.time, sleep=clock.sleep
    ) as http:
        with pytest.raises(ResponseTooLargeError) as info:
            await http.service("github", base_url=api.url).get("/bomb", params={"sig": "s3cr3t"})
    err = info.value
    assert err.limit == limit and not err.retryable
    assert not isinstance(err, TransientError | RecordError)
    message = str(err)
    assert "1,048,576 bytes" in message and "max_body_bytes" in message
    assert f"{api.url}/bomb" in message and "s3cr3t" not in message
    assert len(api.requests) == 1  # not retried
    # reading stopped at the cap: far less than the 100 MiB the bomb expands to
    assert http.metrics.bytes_received <= limit


async def test_downloads_have_their_own_cap_and_a_request_can_set_one(
    api: FakeAPI, bomb: bytes
) -> None:
    api.route("GET", "/file", _gzip_route(bomb))
    small = _gzip_bomb(3)
    api.route("GET", "/small", _gzip_route(small))
    async with HttpClient(max_body_bytes=1024, max_download_bytes=4 * 1024 * 1024) as http:
        svc = http.service("google", base_url=api.url)
        with pytest.raises(ResponseTooLargeError, match="4,194,304 bytes") as info:
            await svc.get("/file", expect="bytes")
        assert info.value.limit == 4 * 1024 * 1024
        r = await svc.get("/small", expect="bytes")  # 3 MiB: under the download cap
        assert r.content == bytes(3 * 1024 * 1024)
        with pytest.raises(ResponseTooLargeError, match="1,000 bytes"):
            await svc.get("/small", expect="bytes", max_bytes=1000)


async def test_a_declared_length_over_the_cap_is_refused_before_reading(api: FakeAPI) -> None:
    api.route("GET", "/big", Reply(body=b"x" * 5000))
    async with HttpClient(max_body_bytes=1000) as http:
        with pytest.raises(ResponseTooLargeError, match="Content-Length is 5,000"):
            await http.service("svc", base_url=api.url).get("/big")
        assert http.metrics.bytes_received == 0


async def test_a_head_answer_declaring_a_large_length_is_fine(api: FakeAPI) -> None:
    api.route("HEAD", "/big", lambda _r: web.Response(headers={"Content-Length": "5000"}))
    async with HttpClient(max_download_bytes=1000) as http:
        r = await http.service("svc", base_url=api.url).request("HEAD", "/big", expect="bytes")
    assert r.status == 200 and r.content == b""


async def test_a_compressed_answer_under_the_cap_is_read_whole(api: FakeAPI) -> None:
    data = [{"id": n, "text": "x" * 50} for n in range(2000)]
    api.route("GET", "/gz", _gzip_route(zlib.compress(orjson.dumps(data), wbits=31)))
    async with HttpClient(max_body_bytes=len(orjson.dumps(data))) as http:
        r = await http.service("svc", base_url=api.url).get("/gz")
    assert r.data == data
