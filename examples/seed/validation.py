"""Recipe "Data Validation": check each FrameRecord before import; invalid ones are not imported.

    python examples/seed/validation.py --dataset kb.lance [--base-url URL]

Needs GITHUB_TOKEN, GITHUB_OWNER, GITHUB_REPO (see seed_services.py). The recipe's class is a
mixin: ``ValidatingGitHubConnector(ValidatingConnector, GitHubConnector)``.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from seed_services import github_connector, open_dataset, parser

from cfstream.connectors import BaseConnector, GitHubConnector
from cfstream.frame import FrameRecord


def validate_frame_record(record: FrameRecord) -> tuple[bool, list[str]]:
    """Validate FrameRecord before import."""
    errors = []

    # Required fields
    if not record.metadata.get("title"):
        errors.append("Missing title")

    if not record.text_content:
        errors.append("Missing content")

    # Source tracking
    if not record.metadata.get("source_type"):
        errors.append("Missing source_type")

    if not record.metadata.get("source_url"):
        errors.append("Missing source_url")

    # Metadata validation
    if record.metadata.get("created_at"):
        try:
            datetime.fromisoformat(record.metadata["created_at"])
        except (TypeError, ValueError):
            errors.append("Invalid created_at timestamp")

    return len(errors) == 0, errors


class ValidatingConnector(BaseConnector):
    """Connector with validation."""

    def map_to_frame_record(self, external_doc: Any) -> FrameRecord:
        """Map with validation."""
        record = super().map_to_frame_record(external_doc)

        is_valid, errors = validate_frame_record(record)
        if not is_valid:
            raise ValueError(f"Invalid record: {errors}")

        return record


class ValidatingGitHubConnector(ValidatingConnector, GitHubConnector):
    """A GitHub connector that validates every record."""


async def main(argv: list[str] | None = None) -> tuple[int, list[str]]:
    """Import the valid records; returns (imported, messages about the invalid ones)."""
    args = parser(__doc__ or "").parse_args(argv)
    connector = ValidatingGitHubConnector(**github_connector(args.base_url).config)
    records, rejected = [], []
    async for doc in connector.sync_documents():
        try:
            records.append(connector.map_to_frame_record(doc))
        except ValueError as e:
            rejected.append(f"{doc.id}: {e}")
    await open_dataset(args.dataset).add_many(records)
    print(f"Imported {len(records)} records, rejected {len(rejected)}")
    for line in rejected:
        print(f"  {line}")
    return len(records), rejected


if __name__ == "__main__":
    asyncio.run(main())
