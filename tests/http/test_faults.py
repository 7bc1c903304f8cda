"""Recovery from every fault kind; Retry-After handling; the caps on waiting; typed errors."""

from __future__ import annotations

import time

import pytest

from cfstream.errors import (
    AuthError,
    ClientError,
    HTTPError,
    NotFoundError,
    RateLimitWaitTooLong,
    ResponseFormatError,
    TransientError,
)
from cfstream.http import HttpClient, RetryPolicy
from cfstream.sources.github import GitHubPolicy
from cfstream.sources.notion import NotionPolicy
from cfstream.testing import FakeAPI, FakeClock, Fault

PAYLOAD = {"items": [{"id": 1}, {"id": 2}]}


@pytest.mark.parametrize(
    ("fault", "cause"),
    [
        (500, "http_500"),
        (502, "http_502"),
        (503, "http_503"),
        (504, "http_504"),
        ("drop", "disconnected"),
        ("truncate", "truncated"),
        ("html", "http_502"),
        (Fault.html(status=200), "html"),
        ("garbage", "invalid_json"),
        ("empty", "empty_body"),
        (429, "rate_limited"),
        (Fault.rate_limit(2, body={"message": "slow down"}), "rate_limited"),
    ],
    ids=lambda v: str(getattr(v, "kind", v)) + (f"-{v.status}" if hasattr(v, "status") else ""),
)
async def test_recovers_from_fault(
    api: FakeAPI, http: HttpClient, clock: FakeClock, fault: Fault | int | str, cause: str
) -> None:
    api.route("GET", "/things", PAYLOAD)
    api.faults.script("GET", "/things", [fault, fault])
    svc = http.service("svc", base_url=api.url)
    r = await svc.get("/things")
    assert r.status == 200 and r.data == PAYLOAD
    assert len(api.requests) == 3
    assert api.faults.pending() == 0
    if fault == "drop":
        # aiohttp itself resends once when a reused keep-alive connection drops, so the client may
        # see only one of the two drops
        assert http.metrics.retries in ({cause: 1}, {cause: 2})
    else:
        assert http.metrics.retries == {cause: 2}
        assert http.metrics.requests == 3


async def test_recovers_from_latency_beyond_the_timeout(api: FakeAPI, clock: FakeClock) -> None:
    api.route("GET", "/slow", PAYLOAD)
    api.faults.script("GET", "/slow", [Fault.latency(0.5)])
    async with HttpClient(timeout=0.15, clock=clock.time, sleep=clock.sleep) as http:
        svc = http.service("svc", base_url=api.url)
        r = await svc.get("/slow")
    assert r.data == PAYLOAD
    assert http.metrics.retries == {"timeout": 1}
    assert len(api.requests) == 2


async def test_latency_within_the_timeout_is_not_a_fault(api: FakeAPI, http: HttpClient) -> None:
    api.route("GET", "/slowish", PAYLOAD)
    api.faults.script("GET", "/slowish", [0.05])
    r = await http.service("svc", base_url=api.url).get("/slowish")
    assert r.data == PAYLOAD and http.metrics.retries == {} and len(api.requests) == 1


async def test_random_faults_are_survived(api: FakeAPI, clock: FakeClock) -> None:
    api.route("GET", "/r/{n}", lambda req: {"n": int(req.match_info["n"])})
    api.faults.rate(0.3, [500, 503, "drop", "truncate", "html", "garbage"], seed=7)
    retry = RetryPolicy(max_tries=10, base=0.001, jitter=False)
    async with HttpClient(retry=retry, clock=clock.time, sleep=clock.sleep) as http:
        svc = http.service("svc", base_url=api.url)
        got = [(await svc.get(f"/r/{n}")).data["n"] for n in range(40)]
    assert got == list(range(40))
    assert len(api.faults.injected) > 5
    # every injected fault cost at most one retry (aiohttp may absorb a drop on a reused connection)
    assert 0 < http.metrics.total_retries <= len(api.faults.injected)


async def test_gives_up_after_max_tries_with_a_typed_error(api: FakeAPI, http: HttpClient) -> None:
    api.route("GET", "/down", PAYLOAD)
    api.faults.script("GET", "/down", [503] * 10)
    with pytest.raises(TransientError, match=r"gave up after 4 attempts") as info:
        await http.service("svc", base_url=api.url).get("/down")
    assert info.value.status == 503 and info.value.service == "svc"
    assert len(api.requests) == 4


async def test_truncated_body_exhausted_is_a_response_format_error(
    api: FakeAPI, http: HttpClient
) -> None:
    api.route("GET", "/cut", PAYLOAD)
    api.faults.script("GET", "/cut", ["truncate"] * 4)
    with pytest.raises(ResponseFormatError, match="truncated"):
        await http.service("svc", base_url=api.url).get("/cut")


async def test_non_json_body_exhausted_is_a_response_format_error(
    api: FakeAPI, http: HttpClient
) -> None:
    api.route("GET", "/text", "plain words, no JSON")
    with pytest.raises(ResponseFormatError, match="not valid JSON") as info:
        await http.service("svc", base_url=api.url).get("/text")
    assert len(api.requests) == 4 and info.value.retryable


async def test_bytes_are_returned_verbatim_when_asked(api: FakeAPI, http: HttpClient) -> None:
    api.route("GET", "/raw", "# README\n")
    r = await http.service("svc", base_url=api.url).get("/raw", expect="bytes")
    assert r.content == b"# README\n" and r.data is None and r.text() == "# README\n"


async def test_connection_refused_is_transient(http: HttpClient) -> None:
    async with FakeAPI() as gone:
        url = gone.url
    with pytest.raises(TransientError, match="cannot connect"):
        await http.service("svc", base_url=url).get("/x")


@pytest.mark.parametrize(
    ("status", "error", "text"),
    [
        (401, AuthError, "check the github token"),
        (403, AuthError, "check the github token and that it has scope repo"),
        (404, NotFoundError, "not found"),
        (422, ClientError, "Validation Failed"),
        (501, HTTPError, "not retried"),
    ],
)
async def test_client_errors_are_not_retried(
    api: FakeAPI, http: HttpClient, status: int, error: type[HTTPError], text: str
) -> None:
    api.route("GET", "/e", PAYLOAD)
    api.faults.script("GET", "/e", [Fault.error(status, {"message": "Validation Failed"})])
    with pytest.raises(error, match=text) as info:
        await http.service("github", policy=GitHubPolicy(), base_url=api.url).get("/e")
    assert type(info.value) is error
    assert info.value.status == status
    assert len(api.requests) == 1


async def test_retry_after_seconds_is_honoured_in_real_time(api: FakeAPI) -> None:
    api.route("GET", "/limited", PAYLOAD)
    api.faults.script("GET", "/limited", [Fault.rate_limit(1)])
    async with HttpClient() as http:
        r = await http.service("svc", base_url=api.url).get("/limited")
    assert r.data == PAYLOAD
    first, second = (req.time for req in api.requests)
    assert 0.95 <= second - first < 2.0
    assert http.metrics.rate_limited == 1 and http.metrics.wait_seconds == pytest.approx(
        1.0, abs=0.05
    )


async def test_retry_after_http_date_is_honoured(
    api: FakeAPI, http: HttpClient, clock: FakeClock
) -> None:
    api.route("GET", "/limited", PAYLOAD)
    api.faults.script("GET", "/limited", [Fault.rate_limit(120, http_date=True)])
    clock.now = time.time()
    r = await http.service("svc", base_url=api.url).get("/limited")
    assert r.data == PAYLOAD
    assert "GMT" in (api.requests[0].headers.get("Retry-After") or "GMT")
    assert len(clock.sleeps) == 1 and 118.5 <= clock.sleeps[0] <= 121.5


async def test_a_retry_after_of_a_day_is_capped(
    api: FakeAPI, http: HttpClient, clock: FakeClock
) -> None:
    api.route("GET", "/limited", PAYLOAD)
    api.faults.script("GET", "/limited", [Fault.rate_limit(86400)])
    with pytest.raises(RateLimitWaitTooLong) as info:
        await http.service("github", policy=GitHubPolicy(), base_url=api.url).get("/limited")
    message = str(info.value)
    assert "github asked to wait 86400 s" in message
    assert "max_wait=300 s" in message and "try again later" in message
    assert info.value.retry_after == pytest.approx(86400)
    assert clock.sleeps == [] and len(api.requests) == 1


async def test_total_retry_time_is_capped(api: FakeAPI, clock: FakeClock) -> None:
    api.route("GET", "/limited", PAYLOAD)
    api.faults.script("GET", "/limited", [Fault.rate_limit(100)] * 5)
    async with HttpClient(max_elapsed=250, clock=clock.time, sleep=clock.sleep) as http:
        with pytest.raises(RateLimitWaitTooLong, match=r"max_elapsed=250"):
            await http.service("notion", policy=NotionPolicy(), base_url=api.url).get("/limited")
    assert clock.sleeps == [100, 100]
    assert len(api.requests) == 3


async def test_redirects_are_followed(api: FakeAPI, http: HttpClient) -> None:
    api.route("GET", "/old", lambda _r: _redirect("/new"))
    api.route("GET", "/new", PAYLOAD)
    r = await http.service("svc", base_url=api.url).get("/old")
    assert r.data == PAYLOAD and r.url.endswith("/new")
    assert [q.path for q in api.requests] == ["/old", "/new"]


async def test_redirect_loops_end_with_a_client_error(api: FakeAPI, http: HttpClient) -> None:
    api.route("GET", "/loop", lambda _r: _redirect("/loop"))
    with pytest.raises(ClientError, match="more than 5 redirects"):
        await http.service("svc", base_url=api.url).get("/loop")
    assert len(api.requests) == 6


def _redirect(location: str) -> object:
    from aiohttp import web

    return web.Response(status=302, headers={"Location": location})
