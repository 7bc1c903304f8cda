"""Proactive rate limiting: a token bucket per service and credential, plus "closed until" gates.

Two mechanisms keep cfstream under a service's limits:

* :class:`RateLimit` configures an ``aiolimiter.AsyncLimiter`` (a leaky bucket): at most ``burst``
  requests at once, refilled at ``per_second``. Over any window of ``w`` seconds a client sends at
  most ``burst + per_second * w`` requests.
* A gate closes a whole service, or one bucket of it (Discord's ``X-RateLimit-Bucket``), until a
  wall-clock time. Policies close gates when a response says the budget is spent
  (``x-ratelimit-remaining: 0``) or after a 429; every task of the run waits at the gate instead of
  spending requests that would be refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiolimiter import AsyncLimiter

__all__ = ("Gate", "RateLimit", "RateLimitState")


@dataclass(frozen=True)
class RateLimit:
    """A request budget: ``per_second`` sustained, up to ``burst`` at once.

    ``RateLimit(per_second=10, burst=10)`` allows 10 requests immediately, then 10 per second.
    Use :meth:`per_minute` for slow APIs (Slack tiers, Notion's 3 requests per second is
    ``RateLimit(per_second=3, burst=3)``).
    """

    per_second: float
    burst: int = 1

    def __post_init__(self) -> None:
        if self.per_second <= 0:
            raise ValueError("RateLimit.per_second must be positive")
        if self.burst < 1:
            raise ValueError("RateLimit.burst must be at least 1")

    @classmethod
    def per_minute(cls, requests: float, *, burst: int = 1) -> RateLimit:
        """A budget of ``requests`` per minute."""
        return cls(per_second=requests / 60.0, burst=burst)

    def limiter(self) -> AsyncLimiter:
        """A fresh token bucket for this budget."""
        return AsyncLimiter(self.burst, self.burst / self.per_second)


@dataclass(frozen=True)
class Gate:
    """Close ``bucket`` (or the whole service when ``bucket`` is None) until ``until`` (clock seconds).

    ``reason`` says why, for logs and error messages ("x-ratelimit-remaining is 0", "429").
    """

    until: float
    bucket: str | None = None
    reason: str = "rate limit"


class RateLimitState:
    """The gates of one service and credential, shared by all its tasks."""

    def __init__(self) -> None:
        self._service_until = 0.0
        self._service_reason = ""
        self._buckets: dict[str, float] = {}
        self._route_bucket: dict[str, str] = {}

    def close(self, gate: Gate) -> None:
        """Close the service or a bucket until ``gate.until`` (never shortens an existing wait)."""
        if gate.bucket is None:
            if gate.until > self._service_until:
                self._service_until = gate.until
                self._service_reason = gate.reason
        else:
            if gate.until > self._buckets.get(gate.bucket, 0.0):
                self._buckets[gate.bucket] = gate.until

    def learn_bucket(self, route: str, bucket: str) -> None:
        """Remember that ``route`` belongs to ``bucket`` (Discord tells us in a header)."""
        self._route_bucket[route] = bucket

    def bucket_for(self, route: str) -> str:
        """The bucket of ``route``: the one the service announced, else the route itself."""
        return self._route_bucket.get(route, route)

    def opens_at(self, route: str) -> tuple[float, str]:
        """When a request on ``route`` may go, and why it waits (``(0.0, "")`` when open now)."""
        bucket_until = self._buckets.get(self.bucket_for(route), 0.0)
        if bucket_until > self._service_until:
            return bucket_until, "bucket rate limit"
        return self._service_until, self._service_reason
