"""Recipe "Full Sync": import every document of a source.

    python examples/seed/full_sync.py --dataset kb.lance [--base-url URL]

Needs GITHUB_TOKEN, GITHUB_OWNER, GITHUB_REPO (see seed_services.py). Re-running it updates the
same rows: records are upserted on their uuid, never duplicated.
"""

from __future__ import annotations

import asyncio

from seed_services import github_connector, open_dataset, parser

from cfstream.connectors import BaseConnector
from cfstream.frame import FrameDataset


async def full_sync(connector: BaseConnector, dataset: FrameDataset) -> int:
    """Perform full synchronization."""
    documents = await connector.sync_documents()

    records = []
    for doc in documents:
        record = connector.map_to_frame_record(doc)
        records.append(record)

    await dataset.add_many(records)
    return len(records)


async def main(argv: list[str] | None = None) -> int:
    """Run the recipe; returns how many records were imported."""
    args = parser(__doc__ or "").parse_args(argv)
    dataset = open_dataset(args.dataset)
    connector = github_connector(args.base_url)
    await connector.authenticate()
    count = await full_sync(connector, dataset)
    print(f"Imported {count} documents")
    return count


if __name__ == "__main__":
    asyncio.run(main())
