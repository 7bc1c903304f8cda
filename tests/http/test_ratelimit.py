"""Token bucket, in-flight cap and rate-limit gates, measured on the server side."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web

from cfstream.errors import RateLimitWaitTooLong
from cfstream.http import BearerAuth, HttpClient, RateLimit
from cfstream.sources.discord import DiscordPolicy
from cfstream.sources.github import GitHubPolicy
from cfstream.testing import FakeAPI, FakeClock, Reply


async def test_rate_never_exceeded_with_32_concurrent_callers(api: FakeAPI) -> None:
    api.route("GET", "/item/{n}", lambda req: {"n": req.match_info["n"]})
    rate = RateLimit(per_second=40, burst=4)
    async with HttpClient(limit_per_host=32) as http:

        async def caller(worker: int) -> list[str]:
            svc = http.service("svc", base_url=api.url, rate=rate, concurrency=32)
            return [(await svc.get(f"/item/{worker}-{i}")).data["n"] for i in range(2)]

        results = await asyncio.gather(*(caller(w) for w in range(32)))
    assert sum(len(r) for r in results) == 64
    # a leaky bucket admits at most burst + rate * window requests in any window; +1 for jitter
    api.meter.assert_rate_at_most(4 + 40 + 1, per=1.0)
    api.meter.assert_rate_at_most(4 + 10 + 1, per=0.25)
    assert api.meter.span() >= (64 - 4) / 40 - 0.1


async def test_the_meter_catches_an_unlimited_client(api: FakeAPI) -> None:
    api.route("GET", "/x", {"ok": True})
    async with HttpClient(limit_per_host=32) as http:
        svc = http.service("svc", base_url=api.url, concurrency=32)
        await asyncio.gather(*(svc.get("/x") for _ in range(64)))
    with pytest.raises(AssertionError, match="rate exceeded: 64 requests within 1.0 s"):
        api.meter.assert_rate_at_most(45, per=1.0)


def test_meter_max_rate_on_known_timestamps() -> None:
    from cfstream.testing import RateMeter

    meter = RateMeter()
    for t in (0.0, 0.1, 0.2, 0.95, 1.05, 1.1, 3.0):
        meter.record(t)
    assert meter.max_rate(1.0) == 4  # [0.1, 1.1) and [0.2, 1.2) hold four each
    assert meter.max_rate(0.2) == 3  # [0.95, 1.15)
    assert meter.max_rate(10.0) == 7
    meter.assert_rate_at_most(4, per=1.0)
    with pytest.raises(AssertionError, match="4 requests within 1.0 s"):
        meter.assert_rate_at_most(3, per=1.0)


async def test_limiters_are_shared_per_service_and_credential(api: FakeAPI) -> None:
    async with HttpClient() as http:
        a = http.service(
            "github",
            policy=GitHubPolicy(),
            base_url=api.url,
            auth=BearerAuth("tok-one-1234"),
            rate=RateLimit(5, 5),
        )
        b = http.service(
            "github",
            policy=GitHubPolicy(),
            base_url=api.url,
            auth=BearerAuth("tok-one-1234"),
            rate=RateLimit(99, 99),
        )
        c = http.service(
            "github",
            policy=GitHubPolicy(),
            base_url=api.url,
            auth=BearerAuth("tok-two-5678"),
            rate=RateLimit(7, 7),
        )
        d = http.service("gitlab", base_url=api.url, auth=BearerAuth("tok-one-1234"))
    assert a._state is b._state and b.rate == RateLimit(5, 5)
    assert c._state is not a._state and c.rate == RateLimit(7, 7)
    assert d._state is not a._state


async def test_concurrency_caps_requests_in_flight(api: FakeAPI) -> None:
    in_flight = 0
    peak = 0

    async def slow(_request: web.Request) -> Reply:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.02)
        in_flight -= 1
        return Reply({"ok": True})

    api.route("GET", "/slow", slow)
    async with HttpClient(limit_per_host=20) as http:
        svc = http.service("svc", base_url=api.url, concurrency=3)
        await asyncio.gather(*(svc.get("/slow") for _ in range(12)))
    assert peak == 3


async def test_github_exhausted_budget_pauses_until_reset(api: FakeAPI, clock: FakeClock) -> None:
    clock.now = 1_700_000_000.0
    api.replies(
        "GET",
        "/rate",
        [
            Reply(
                {"n": 1},
                headers={
                    "x-ratelimit-remaining": "0",
                    "x-ratelimit-reset": str(int(clock.now) + 30),
                },
            ),
            Reply({"n": 2}, headers={"x-ratelimit-remaining": "4999"}),
        ],
    )
    seen: list[dict[str, float]] = []

    async def sleep(seconds: float) -> None:
        seen.append(dict(http.metrics.waiting_until))
        await clock.sleep(seconds)

    async with HttpClient(clock=clock.time, sleep=sleep) as http:
        gh = http.service("github", policy=GitHubPolicy(), base_url=api.url)
        assert (await gh.get("/rate")).data == {"n": 1}
        assert (await gh.get("/rate")).data == {"n": 2}
    assert clock.sleeps == [30.0]
    assert seen == [{"github": 1_700_000_030.0}]
    assert http.metrics.waiting_until == {}
    assert http.metrics.wait_seconds == 30.0


async def test_github_reset_beyond_max_wait_fails_fast(api: FakeAPI, clock: FakeClock) -> None:
    clock.now = 1_700_000_000.0
    reset = str(int(clock.now) + 3600)
    api.route(
        "GET",
        "/rate",
        Reply({"n": 1}, headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": reset}),
    )
    async with HttpClient(clock=clock.time, sleep=clock.sleep) as http:
        gh = http.service("github", policy=GitHubPolicy(), base_url=api.url)
        await gh.get("/rate")
        with pytest.raises(
            RateLimitWaitTooLong, match=r"github asked to wait 3600 s \(x-ratelimit-remaining is 0"
        ):
            await gh.get("/rate")
    assert len(api.requests) == 1


async def test_discord_bucket_pause_only_affects_its_bucket(api: FakeAPI, clock: FakeClock) -> None:
    bucket_headers = {
        "X-RateLimit-Bucket": "b-chan-1",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset-After": "2.5",
    }
    api.replies(
        "GET", "/channels/1/messages", [Reply([], headers=bucket_headers), Reply([{"id": "9"}])]
    )
    api.route(
        "GET",
        "/channels/2/messages",
        Reply([], headers={"X-RateLimit-Bucket": "b-chan-2", "X-RateLimit-Remaining": "4"}),
    )
    async with HttpClient(clock=clock.time, sleep=clock.sleep) as http:
        discord = http.service(
            "discord",
            policy=DiscordPolicy(),
            base_url=api.url,
            auth=BearerAuth("bot-token-xyz", scheme="Bot"),
        )
        await discord.get("/channels/1/messages")
        await discord.get("/channels/2/messages")
        assert clock.sleeps == []
        assert (await discord.get("/channels/1/messages")).data == [{"id": "9"}]
    assert clock.sleeps == [2.5]
    assert api.requests[0].headers["Authorization"] == "Bot bot-token-xyz"


async def test_token_bucket_paces_a_slow_budget_in_real_time(api: FakeAPI) -> None:
    api.route("GET", "/x", {"ok": True})
    async with HttpClient() as http:
        svc = http.service("svc", base_url=api.url, rate=RateLimit(per_second=10, burst=1))
        started = time.monotonic()
        for _ in range(4):
            await svc.get("/x")
        elapsed = time.monotonic() - started
    assert elapsed >= 0.28
    gaps = [b.time - a.time for a, b in zip(api.requests, api.requests[1:], strict=False)]
    assert min(gaps) >= 0.07
