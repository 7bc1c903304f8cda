"""Recipe "Multi-Source Import": GitHub docs, Linear issues and a Notion database, each tagged.

    python examples/seed/multi_source.py --dataset kb.lance

Needs the GitHub, Linear and Notion variables of seed_services.py; LINEAR_TEAM_ID and
NOTION_DATABASE_ID choose the team and the database (the guide's ``TEAM123`` and ``db123`` by
default), GITHUB_DOCS_PATH the folder (``documentation``). A source that fails is reported and
the others go on.
"""

from __future__ import annotations

import asyncio
import os

from seed_services import open_dataset, parser

from cfstream.connectors import GitHubConnector, LinearConnector, NotionConnector
from cfstream.frame import FrameDataset


async def import_from_multiple_sources(dataset: FrameDataset) -> int:
    """Import from multiple connectors."""

    connectors = [
        {
            "name": "GitHub Docs",
            "connector": GitHubConnector(
                token=os.getenv("GITHUB_TOKEN"),
                owner=os.getenv("GITHUB_OWNER", "myorg"),
                repo=os.getenv("GITHUB_REPO", "docs"),
                base_url=os.getenv("GITHUB_BASE_URL", "https://api.github.com"),
            ),
            "options": {
                "path": os.getenv("GITHUB_DOCS_PATH", "documentation"),
                "file_pattern": "**/*.md",
            },
        },
        {
            "name": "Linear Issues",
            "connector": LinearConnector(
                api_key=os.getenv("LINEAR_API_KEY"),
                base_url=os.getenv("LINEAR_BASE_URL", "https://api.linear.app"),
            ),
            "options": {
                "team_id": os.getenv("LINEAR_TEAM_ID", "TEAM123"),
                "states": ["In Progress", "Done"],
            },
        },
        {
            "name": "Notion KB",
            "connector": NotionConnector(
                api_key=os.getenv("NOTION_API_KEY"),
                base_url=os.getenv("NOTION_BASE_URL", "https://api.notion.com"),
            ),
            "options": {"database_id": os.getenv("NOTION_DATABASE_ID", "db123")},
        },
    ]

    total_imported = 0

    for source in connectors:
        print(f"Importing from {source['name']}...")

        try:
            await source["connector"].authenticate()
            documents = source["connector"].sync_documents(**source["options"])

            records = []
            async for doc in documents:
                record = source["connector"].map_to_frame_record(doc)
                # Tag by source
                record.metadata["tags"] = record.metadata.get("tags", [])
                record.metadata["tags"].append(f"source:{source['name'].lower()}")
                records.append(record)

            await dataset.add_many(records)
            print(f"  Imported {len(records)} documents")
            total_imported += len(records)

        except Exception as e:
            print(f"  Error: {e}")

    return total_imported


async def main(argv: list[str] | None = None) -> int:
    """Run the recipe; returns how many documents were imported."""
    args = parser(__doc__ or "", base_url_env=None).parse_args(argv)
    total = await import_from_multiple_sources(open_dataset(args.dataset))
    print(f"Imported {total} documents in all")
    return total


if __name__ == "__main__":
    asyncio.run(main())
