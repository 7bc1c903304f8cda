"""Recipe "Logging and Monitoring": log every sync with its size and duration.

    python examples/seed/logging_sync.py [--base-url URL]

Needs GITHUB_TOKEN, GITHUB_OWNER, GITHUB_REPO (see seed_services.py). The recipe's class is a
mixin: ``LoggingGitHubConnector(LoggingConnector, GitHubConnector)``. Tokens never reach the log:
the connector's settings hold them as ``Secret`` (printed ``**********``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from typing import Any

from seed_services import github_connector, parser

from cfstream.connectors import BaseConnector, ExternalDocument, GitHubConnector


class LoggingConnector(BaseConnector):
    """Connector with comprehensive logging."""

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self.logger = logging.getLogger(f"connector.{self.__class__.__name__}")
        self.metrics: list[dict[str, Any]] = []

    async def sync_documents(self, **options: Any) -> list[ExternalDocument]:  # type: ignore[override]
        """Sync with logging."""
        self.logger.info(f"Starting sync with options: {options}")
        start_time = time.time()

        try:
            documents = await super().sync_documents(**options)
            duration = time.time() - start_time

            self.logger.info(f"Sync completed: {len(documents)} documents in {duration:.2f}s")

            # Log metrics
            self._log_metrics(
                {
                    "documents_synced": len(documents),
                    "sync_duration": duration,
                    "sync_timestamp": datetime.now().isoformat(),
                }
            )

            return documents

        except Exception as e:
            self.logger.error(f"Sync failed: {e}", exc_info=True)
            raise

    def _log_metrics(self, metrics: dict[str, Any]) -> None:
        """Log metrics for monitoring."""
        # Could send to monitoring service
        self.metrics.append(metrics)


class LoggingGitHubConnector(LoggingConnector, GitHubConnector):
    """A GitHub connector that logs its syncs."""


async def main(argv: list[str] | None = None) -> LoggingGitHubConnector:
    """Run one logged sync; returns the connector (its ``metrics`` hold the numbers)."""
    args = parser(__doc__ or "").parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    connector = LoggingGitHubConnector(**github_connector(args.base_url).config)
    await connector.sync_documents(file_pattern="**/*.md")
    return connector


if __name__ == "__main__":
    asyncio.run(main())
