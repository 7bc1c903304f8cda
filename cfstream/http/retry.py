"""Retry settings and the parsing of the "wait this long" signals services send.

The retry loop itself lives in :class:`cfstream.http.Service`; this module holds what it needs:
:class:`RetryPolicy` (exponential backoff with full jitter, built on the ``backoff`` library's
``expo`` and ``full_jitter``) and the parsers for ``Retry-After`` (seconds or an HTTP date) and for
rate-limit reset values (epoch seconds, epoch milliseconds or seconds from now).
"""

from __future__ import annotations

import email.utils
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

import backoff

__all__ = ("RetryPolicy", "parse_reset", "parse_retry_after")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a failed request is retried.

    Waits grow exponentially (``base * factor ** n``, at most ``max_backoff``) with full jitter, so
    many tasks that failed together do not retry together. A wait the service asked for
    (``Retry-After``, a reset header, a body ``retry_after``) replaces the computed one.

    Attributes:
        max_tries: attempts in total for transient failures (5xx, timeouts, dropped connections,
            empty, truncated or non-JSON bodies), the first one included.
        max_rate_limit_tries: attempts in total while the service keeps answering "rate limited".
            Those waits are usually announced and bounded by ``max_elapsed`` anyway.
        base: the first backoff step, in seconds.
        factor: growth of each step.
        max_backoff: the longest computed backoff step, in seconds.
        rate_limit_floor: the shortest wait after a rate-limit signal that named no wait
            (Google's 403 ``rateLimitExceeded``).
        jitter: full jitter when true (the default); exact steps when false (for tests).
    """

    max_tries: int = 5
    max_rate_limit_tries: int = 20
    base: float = 0.5
    factor: float = 2.0
    max_backoff: float = 30.0
    rate_limit_floor: float = 1.0
    jitter: bool = True
    _rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def delays(self) -> Iterator[float]:
        """The backoff waits for retry 1, 2, 3, ... (an endless iterator)."""
        gen = backoff.expo(base=self.factor, factor=self.base, max_value=self.max_backoff)
        next(gen)  # backoff's generators must be primed; the first value is for "before try 1"
        for value in gen:
            step = float(value)
            if self.jitter:
                step = self._rng.uniform(0.0, step) if step > 0 else 0.0
            yield step


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds (decimals accepted) or an HTTP date.

    ``now`` is the current wall-clock time (epoch seconds). Returns ``None`` when the value is
    missing or unreadable, and never a negative number.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP date is always GMT
        return None
    return max(0.0, when.timestamp() - now)


def parse_reset(value: str | None, *, now: float) -> float | None:
    """Seconds until a rate-limit window resets, from a reset header.

    Services disagree on units, so the value is read by size: a number above 10^11 is epoch
    milliseconds (Linear), above 10^9 epoch seconds (GitHub, Discord ``X-RateLimit-Reset``), anything
    smaller is seconds from now (Discord ``Reset-After``). Returns ``None`` when unreadable.
    """
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    if not math.isfinite(number) or number < 0:
        return None
    if number > 1e11:
        return max(0.0, number / 1000.0 - now)
    if number > 1e9:
        return max(0.0, number - now)
    return number
