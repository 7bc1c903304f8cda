"""Recipe "Selective Sync": sync only what the filters select.

    python examples/seed/selective_sync.py --dataset kb.lance --filter file_pattern='*.md'

Needs GITHUB_TOKEN, GITHUB_OWNER, GITHUB_REPO (see seed_services.py). ``--filter KEY=VALUE`` may
repeat; a value with commas is a list (``labels=bug,feature``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from seed_services import github_connector, open_dataset, parser

from cfstream.connectors import BaseConnector
from cfstream.frame import FrameDataset


async def selective_sync(
    connector: BaseConnector, dataset: FrameDataset, filters: dict[str, Any]
) -> int:
    """Sync with filters."""
    documents = connector.sync_documents(**filters)

    # Example filters:
    # - file_pattern="*.md" (GitHub)
    # - database_id="xxx" (Notion)
    # - folder_id="xxx" (Google Drive)
    # - channel_ids=["C123", "C456"] (Slack)

    records = [connector.map_to_frame_record(doc) async for doc in documents]
    await dataset.add_many(records)

    return len(records)


def parse_filters(pairs: list[str]) -> dict[str, Any]:
    """``["file_pattern=*.md", "labels=bug,feature"]`` -> keyword arguments."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--filter takes KEY=VALUE, got {pair!r}")
        out[key] = value.split(",") if "," in value else value
    return out


async def main(argv: list[str] | None = None) -> int:
    """Run the recipe; returns how many documents were imported."""
    p = parser(__doc__ or "")
    p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    filters = parse_filters(args.filter) or {"file_pattern": "*.md"}
    connector = github_connector(args.base_url)
    count = await selective_sync(connector, open_dataset(args.dataset), filters)
    print(f"Imported {count} documents matching {filters}")
    return count


if __name__ == "__main__":
    asyncio.run(main())
