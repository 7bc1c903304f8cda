"""Recipe "Partial Success": import what can be imported, log the failures to sync_failures.json.

    python examples/seed/partial_success.py --dataset kb.lance [--base-url URL]

Needs GITHUB_TOKEN, GITHUB_OWNER, GITHUB_REPO (see seed_services.py). Each document that ``sync_documents``
returns is a JSON-serialisable dict, so the failure log holds it whole.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from seed_services import github_connector, open_dataset, parser

from cfstream.connectors import BaseConnector
from cfstream.frame import FrameDataset


async def sync_with_partial_success(
    connector: BaseConnector, dataset: FrameDataset
) -> tuple[list[str], list[dict[str, Any]]]:
    """Handle partial sync failures gracefully."""
    documents = connector.sync_documents()

    succeeded = []
    failed = []

    async for doc in documents:
        try:
            record = connector.map_to_frame_record(doc)
            await dataset.add(record)
            succeeded.append(doc.id)
        except Exception as e:
            failed.append({"document_id": doc.id, "error": str(e), "document": doc})

    # Log failures
    if failed:
        with open("sync_failures.json", "w") as f:  # noqa: ASYNC230 - the guide's small log file
            json.dump(failed, f, indent=2)

    print(f"Synced: {len(succeeded)} succeeded, {len(failed)} failed")
    return succeeded, failed


async def main(argv: list[str] | None = None) -> tuple[list[str], list[dict[str, Any]]]:
    """Run the recipe; returns (succeeded ids, failures)."""
    args = parser(__doc__ or "").parse_args(argv)
    return await sync_with_partial_success(
        github_connector(args.base_url), open_dataset(args.dataset)
    )


if __name__ == "__main__":
    asyncio.run(main())
