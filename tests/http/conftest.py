"""Fixtures for the HTTP layer tests: a running FakeAPI, a virtual clock, fast retries."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from cfstream.http import HttpClient, RetryPolicy
from cfstream.testing import FakeAPI, FakeClock


@pytest.fixture
async def api() -> AsyncIterator[FakeAPI]:
    """A fake API on 127.0.0.1."""
    async with FakeAPI() as server:
        yield server


@pytest.fixture
async def other_api() -> AsyncIterator[FakeAPI]:
    """A second fake API: a different port, so a different origin."""
    async with FakeAPI() as server:
        yield server


@pytest.fixture
def clock() -> FakeClock:
    """Virtual time: retry and rate-limit sleeps return at once and are recorded."""
    return FakeClock()


@pytest.fixture
def fast_retry() -> RetryPolicy:
    """Deterministic, short backoff steps."""
    return RetryPolicy(max_tries=4, base=0.01, factor=2.0, max_backoff=0.05, jitter=False)


@pytest.fixture
async def http(clock: FakeClock, fast_retry: RetryPolicy) -> AsyncIterator[HttpClient]:
    """A client on virtual time (the token bucket still uses real time)."""
    async with HttpClient(
        timeout=5, retry=fast_retry, clock=clock.time, sleep=clock.sleep
    ) as client:
        yield client
