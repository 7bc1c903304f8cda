"""Recipe "Dynamic Connector Loading": create the enabled connectors of ``connectors.yaml``.

    python examples/seed/dynamic_loading.py [--config connectors.yaml] --dataset kb.lance

Creates every enabled connector with ``create_connector`` and imports what each syncs with its
``sync_options``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from seed_services import open_dataset, parser

from cfstream.connectors import create_connector, load_connector_config

HERE = Path(__file__).resolve().parent


async def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Create the connectors and import; returns the active connectors."""
    p = parser(__doc__ or "", base_url_env=None)
    p.add_argument("--config", default=str(HERE / "connectors.yaml"))
    args = p.parse_args(argv)

    # Usage
    config = load_connector_config(args.config)
    active_connectors = []

    for conn_type, conn_config in config["connectors"].items():
        if conn_config.get("enabled", False):
            connector = create_connector(conn_type, conn_config)
            active_connectors.append(
                {
                    "name": conn_type,
                    "connector": connector,
                    "options": conn_config.get("sync_options", {}),
                }
            )

    dataset = open_dataset(args.dataset)
    for active in active_connectors:
        connector = active["connector"]
        records = [
            connector.map_to_frame_record(doc)
            async for doc in connector.sync_documents(**active["options"])
        ]
        await dataset.add_many(records)
        print(f"{active['name']}: imported {len(records)} documents")
    return active_connectors


if __name__ == "__main__":
    asyncio.run(main())
