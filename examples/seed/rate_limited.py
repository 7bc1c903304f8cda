"""Recipe "Rate Limiting": at most ``rate_limit`` syncs a minute, on top of any connector.

    python examples/seed/rate_limited.py --syncs 3 --rate-limit 60 [--base-url URL]

Needs GITHUB_TOKEN, GITHUB_OWNER, GITHUB_REPO (see seed_services.py). The recipe's class is a
mixin: ``RateLimitedGitHubConnector(RateLimitedConnector, GitHubConnector)``. Its
``time.sleep`` blocks the event loop, as in the guide; cfstream's Sources already pace their own
HTTP requests per service (``requests_per_second``) without blocking.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from seed_services import github_connector, parser

from cfstream.connectors import BaseConnector, DocumentStream, GitHubConnector


class RateLimitedConnector(BaseConnector):
    """Connector with rate limiting."""

    def __init__(self, rate_limit: int = 60, **config: Any) -> None:
        super().__init__(**config)
        self.rate_limit = rate_limit  # requests per minute
        self.request_times: list[float] = []

    def _check_rate_limit(self) -> None:
        """Enforce rate limiting."""
        now = time.time()
        # Remove requests older than 1 minute
        self.request_times = [t for t in self.request_times if now - t < 60]

        if len(self.request_times) >= self.rate_limit:
            # Wait until oldest request expires
            sleep_time = 60 - (now - self.request_times[0]) + 1
            time.sleep(sleep_time)
            self.request_times = self.request_times[1:]

        self.request_times.append(now)

    def sync_documents(self, **options: Any) -> DocumentStream:
        """Sync with rate limiting."""
        self._check_rate_limit()
        return super().sync_documents(**options)


class RateLimitedGitHubConnector(RateLimitedConnector, GitHubConnector):
    """A GitHub connector with the recipe's rate limit."""


async def main(argv: list[str] | None = None) -> list[int]:
    """Run ``--syncs`` syncs; returns the number of documents of each."""
    p = parser(__doc__ or "")
    p.add_argument("--syncs", type=int, default=3)
    p.add_argument("--rate-limit", type=int, default=60, help="syncs per minute")
    args = p.parse_args(argv)
    plain = github_connector(args.base_url)
    connector = RateLimitedGitHubConnector(rate_limit=args.rate_limit, **plain.config)
    counts = []
    for _ in range(args.syncs):
        documents = await connector.sync_documents()
        counts.append(len(documents))
        print(f"Synced {len(documents)} documents")
    return counts


if __name__ == "__main__":
    asyncio.run(main())
