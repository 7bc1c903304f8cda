"""Recipe "Basic Import": the Markdown files under ``docs/`` of a GitHub repository.

    python examples/seed/basic_import.py --dataset my_knowledge_base.lance [--base-url URL]

Needs GITHUB_TOKEN, GITHUB_OWNER, GITHUB_REPO (see seed_services.py).
"""

from __future__ import annotations

import asyncio

from seed_services import github_connector, parser

from cfstream.frame import FrameDataset


async def main(argv: list[str] | None = None) -> int:
    """Run the recipe; returns how many documents were imported."""
    args = parser(__doc__ or "").parse_args(argv)

    # Setup
    dataset = FrameDataset.create(args.dataset)
    connector = github_connector(args.base_url)

    # Authenticate
    await connector.authenticate()

    # Sync documents
    documents = connector.sync_documents(path="docs", file_pattern="**/*.md")

    # Import to dataset
    records = []
    async for doc in documents:
        record = connector.map_to_frame_record(doc)
        records.append(record)

    await dataset.add_many(records)
    print(f"Imported {len(records)} documents from GitHub")
    return len(records)


if __name__ == "__main__":
    asyncio.run(main())
