"""Counters the HTTP layer keeps for the run report and the progress display."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ("HttpMetrics",)


@dataclass
class HttpMetrics:
    """What the HTTP layer did during a run.

    One instance lives on :attr:`cfstream.http.HttpClient.metrics` and is shared by every service of
    the run. All counters only grow; read them at any time (the runner copies :meth:`to_dict` into
    the run report).

    Attributes:
        requests: HTTP requests sent (every attempt and every redirect hop counts).
        retries: retries by cause, e.g. ``{"rate_limited": 2, "http_503": 1, "timeout": 1}``.
        rate_limited: responses that meant "slow down" (429, or a service's own signal such as
            Slack's ``ok: false, error: "ratelimited"``).
        bytes_received: response body bytes read.
        wait_seconds: time spent sleeping before retries and on rate-limit gates (not time spent
            waiting for the token bucket, which is ordinary pacing).
        requests_by_service: ``requests`` split by service name.
        waiting_until: for the progress display, service name -> wall-clock time (``clock()``
            seconds) until which that service is paused by a rate limit. Entries are removed when
            the wait ends.
    """

    requests: int = 0
    retries: dict[str, int] = field(default_factory=dict)
    rate_limited: int = 0
    bytes_received: int = 0
    wait_seconds: float = 0.0
    requests_by_service: dict[str, int] = field(default_factory=dict)
    waiting_until: dict[str, float] = field(default_factory=dict)

    def count_request(self, service: str) -> None:
        """Count one request sent to ``service``."""
        self.requests += 1
        self.requests_by_service[service] = self.requests_by_service.get(service, 0) + 1

    def count_retry(self, cause: str) -> None:
        """Count one retry caused by ``cause``."""
        self.retries[cause] = self.retries.get(cause, 0) + 1

    @property
    def total_retries(self) -> int:
        """All retries, whatever their cause."""
        return sum(self.retries.values())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy of every counter (for the run report)."""
        return {
            "requests": self.requests,
            "retries": dict(sorted(self.retries.items())),
            "total_retries": self.total_retries,
            "rate_limited": self.rate_limited,
            "bytes_received": self.bytes_received,
            "wait_seconds": round(self.wait_seconds, 3),
            "requests_by_service": dict(sorted(self.requests_by_service.items())),
            "waiting_until": dict(self.waiting_until),
        }
