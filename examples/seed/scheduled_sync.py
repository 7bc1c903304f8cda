"""Recipe "Scheduled Sync": Slack every 15 minutes, GitHub every hour, everything every 6 hours.

    python examples/seed/scheduled_sync.py --dataset kb.lance [--slack-every 900 ...]

Needs the Slack and GitHub variables of seed_services.py. The guide uses the ``schedule`` package;
cfstream does not depend on it, so :class:`Every` below is the same idea in a few lines
(``Every(seconds, job)`` and :func:`run_pending`). Each sync resumes from the connector's cursors
(``sync_incremental``), and records are upserted: a re-sync never duplicates a row.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from seed_services import github_connector, open_dataset, parser, slack_connector

from cfstream.frame import FrameDataset


class Every:
    """A job run every ``seconds`` (what ``schedule.every(n).minutes.do(job)`` sets up)."""

    jobs: list[Every] = []

    def __init__(self, seconds: float, job: Callable[[], Awaitable[None]]) -> None:
        self.seconds = seconds
        self.job = job
        self.next_run = time.monotonic() + seconds
        Every.jobs.append(self)


async def run_pending() -> None:
    """Run the jobs that are due (``schedule.run_pending()``)."""
    now = time.monotonic()
    for job in list(Every.jobs):
        if job.next_run <= now:
            job.next_run = now + job.seconds
            await job.job()


class ConnectorSync:
    """Scheduled connector synchronization."""

    def __init__(self, dataset: FrameDataset, connectors: list[dict[str, Any]]) -> None:
        self.dataset = dataset
        self.connectors = connectors
        self.last_sync: dict[str, str] = {}

    async def sync_connector(self, name: str, connector: Any, options: dict[str, Any]) -> None:
        """Sync single connector."""
        print(f"[{datetime.now()}] Syncing {name}...")

        try:
            # Incremental sync if supported
            if hasattr(connector, "sync_incremental"):
                last_sync = self.last_sync.get(name)
                documents = connector.sync_incremental(since=last_sync, **options)
            else:
                documents = connector.sync_documents(**options)

            # Import documents
            records = []
            async for doc in documents:
                record = connector.map_to_frame_record(doc)
                record.metadata["sync_timestamp"] = datetime.now().isoformat()
                records.append(record)

            if records:
                await self.dataset.add_many(records)
                print(f"  Added {len(records)} new documents")

            self.last_sync[name] = datetime.now().isoformat()

        except Exception as e:
            print(f"  Error syncing {name}: {e}")

    async def sync_all(self) -> None:
        """Sync all connectors."""
        for conn_config in self.connectors:
            await self.sync_connector(
                conn_config["name"], conn_config["connector"], conn_config.get("options", {})
            )

    async def run_scheduled(
        self,
        slack_every: float = 15 * 60,
        github_every: float = 60 * 60,
        all_every: float = 6 * 60 * 60,
        tick: float = 60,
    ) -> None:
        """Run scheduled sync."""
        # Schedule different sources at different intervals
        Every(
            slack_every,
            lambda: self.sync_connector(
                "Slack", self.connectors[0]["connector"], self.connectors[0].get("options", {})
            ),
        )

        Every(
            github_every,
            lambda: self.sync_connector(
                "GitHub", self.connectors[1]["connector"], self.connectors[1].get("options", {})
            ),
        )

        Every(all_every, self.sync_all)

        while True:
            await run_pending()
            await asyncio.sleep(tick)


async def main(argv: list[str] | None = None) -> ConnectorSync:
    """Run the schedule (until interrupted, or for ``--run-for`` seconds)."""
    p = parser(__doc__ or "", base_url_env=None)
    p.add_argument("--slack-every", type=float, default=15 * 60)
    p.add_argument("--github-every", type=float, default=60 * 60)
    p.add_argument("--all-every", type=float, default=6 * 60 * 60)
    p.add_argument("--tick", type=float, default=60)
    p.add_argument("--run-for", type=float, default=None, help="stop after this many seconds")
    args = p.parse_args(argv)
    Every.jobs.clear()
    sync = ConnectorSync(
        open_dataset(args.dataset),
        [
            {"name": "Slack", "connector": slack_connector()},
            {"name": "GitHub", "connector": github_connector()},
        ],
    )
    try:
        await asyncio.wait_for(
            sync.run_scheduled(args.slack_every, args.github_every, args.all_every, args.tick),
            timeout=args.run_for,
        )
    except TimeoutError:
        pass
    return sync


if __name__ == "__main__":
    asyncio.run(main())
