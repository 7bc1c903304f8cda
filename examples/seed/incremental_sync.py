"""Recipe "Incremental Sync": only new or modified documents since the last sync.

    python examples/seed/incremental_sync.py --dataset kb.lance --since 2024-01-01T00:00:00Z

Needs GITHUB_TOKEN, GITHUB_OWNER, GITHUB_REPO (see seed_services.py). The connector keeps its
cursors in ``<dataset>.connector-state.json``, so each run resumes where the previous one ended
(``since`` only bounds the very first run). A dataset without rows gets a full import first.
"""

from __future__ import annotations

import asyncio

from seed_services import github_connector, open_dataset, parser

from cfstream.connectors import BaseConnector
from cfstream.frame import FrameDataset


async def incremental_sync(
    connector: BaseConnector, dataset: FrameDataset, last_sync_time: str | None
) -> tuple[int, int]:
    """Sync only changes since last sync."""
    # Get existing document IDs
    existing_ids = set()
    for batch in dataset.to_batches(columns=["custom_metadata"]):
        for row in batch.to_pylist():
            source_id = row["custom_metadata"].get("source_id")
            if source_id:
                existing_ids.add(source_id)

    # Sync new/modified documents
    documents = connector.sync_documents(since=last_sync_time, modified_only=True)

    new_records = []
    updated_records = []

    async for doc in documents:
        source_id = doc.metadata.get("id")
        record = connector.map_to_frame_record(doc)

        if source_id in existing_ids:
            # Update existing
            updated_records.append((source_id, record))
        else:
            # Add new
            new_records.append(record)

    # Apply changes
    if new_records:
        await dataset.add_many(new_records)

    for source_id, record in updated_records:
        # Find and update by source_id
        results = (
            dataset.scanner(filter=f"custom_metadata.source_id = '{source_id}'")
            .to_table()
            .to_pylist()
        )

        if results:
            await dataset.update_record(results[0]["uuid"], record)

    return len(new_records), len(updated_records)


async def main(argv: list[str] | None = None) -> tuple[int, int]:
    """Run the recipe; returns (new, updated)."""
    p = parser(__doc__ or "")
    p.add_argument("--since", default=None, help="ISO 8601 time of the last sync")
    args = p.parse_args(argv)
    dataset = open_dataset(args.dataset)
    connector = github_connector(args.base_url, state_path=f"{args.dataset}.connector-state.json")
    await connector.authenticate()
    if dataset.count_rows() == 0:  # first run: a full import (and the cursors to resume from)
        records = [connector.map_to_frame_record(d) async for d in connector.sync_documents()]
        await dataset.add_many(records)
        print(f"Full import: {len(records)} documents")
    new, updated = await incremental_sync(connector, dataset, args.since)
    print(f"Incremental sync: {new} new, {updated} updated")
    return new, updated


if __name__ == "__main__":
    asyncio.run(main())
