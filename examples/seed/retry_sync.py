"""Recipe "Retry Logic": sync with exponential backoff.

    python examples/seed/retry_sync.py [--base-url URL]

Needs GITHUB_TOKEN, GITHUB_OWNER, GITHUB_REPO (see seed_services.py). cfstream's HTTP layer
already retries 429/5xx/timeouts itself (with ``Retry-After``); this recipe retries what is left,
such as a sync that failed as a whole.
"""

from __future__ import annotations

import asyncio

from seed_services import github_connector, parser

from cfstream.connectors import BaseConnector, ExternalDocument


async def sync_with_retry(
    connector: BaseConnector, max_retries: int = 3, backoff_factor: float = 2
) -> list[ExternalDocument]:
    """Sync with exponential backoff retry."""
    last_error: Exception | None = None

    for attempt in range(max_retries):
        try:
            if not connector.authenticated:
                await connector.authenticate()

            documents = await connector.sync_documents()
            return documents

        except Exception as e:
            last_error = e
            if attempt < max_retries - 1:
                wait_time = backoff_factor**attempt
                print(f"Error: {e}. Retrying in {wait_time}s...")
                await asyncio.sleep(wait_time)
            else:
                print(f"Failed after {max_retries} attempts")

    assert last_error is not None
    raise last_error


async def main(argv: list[str] | None = None) -> list[ExternalDocument]:
    """Run the recipe; returns the documents."""
    args = parser(__doc__ or "").parse_args(argv)
    documents = await sync_with_retry(github_connector(args.base_url))
    print(f"Synced {len(documents)} documents")
    return documents


if __name__ == "__main__":
    asyncio.run(main())
