"""ContextFrame's connector API, made true on top of cfstream's streaming core.

::

    from cfstream.connectors import GitHubConnector
    from cfstream.frame import FrameDataset

    dataset = FrameDataset.create("kb.lance")
    connector = GitHubConnector(token=token, owner="myorg", repo="documentation")
    await connector.authenticate()
    records = [
        connector.map_to_frame_record(doc)
        async for doc in connector.sync_documents(path="docs", file_pattern="**/*.md")
    ]
    await dataset.add_many(records)

Each connector is a thin face over the matching :mod:`cfstream.sources` Source, run by cfstream's
runner; see ``docs/contextframe.md`` for the guide's API beside cfstream's pipeline form.
"""

from __future__ import annotations

from cfstream.connectors.base import (
    BaseConnector,
    DocumentFilter,
    DocumentStream,
    ExternalDocument,
    SourceConnector,
)
from cfstream.connectors.config import (
    SecretManager,
    load_connector_config,
    load_connectors_config,
)
from cfstream.connectors.services import (
    CONNECTORS,
    DiscordConnector,
    GitHubConnector,
    GoogleDriveConnector,
    LinearConnector,
    NotionConnector,
    ObsidianConnector,
    SlackConnector,
    create_connector,
)
from cfstream.frame import FrameDataset, FrameRecord

__all__ = (
    "BaseConnector",
    "CONNECTORS",
    "DiscordConnector",
    "DocumentFilter",
    "DocumentStream",
    "ExternalDocument",
    "FrameDataset",
    "FrameRecord",
    "GitHubConnector",
    "GoogleDriveConnector",
    "LinearConnector",
    "NotionConnector",
    "ObsidianConnector",
    "SecretManager",
    "SlackConnector",
    "SourceConnector",
    "create_connector",
    "load_connector_config",
    "load_connectors_config",
)
