"""Connectors built from environment variables, shared by the recipe scripts in this folder.

Each service reads its credentials and its API root from the environment, so the recipes run
against the real services (the default roots) or against cfstream's fake APIs (tests set
``GITHUB_BASE_URL`` and friends to a local :class:`cfstream.testing.FakeAPI`):

=========  ======================================================  ===========================
service    credentials                                             API root (default)
=========  ======================================================  ===========================
GitHub     GITHUB_TOKEN, GITHUB_OWNER, GITHUB_REPO                 GITHUB_BASE_URL
Linear     LINEAR_API_KEY, LINEAR_TEAM_ID                          LINEAR_BASE_URL
Notion     NOTION_API_KEY, NOTION_DATABASE_ID                      NOTION_BASE_URL
Slack      SLACK_TOKEN, SLACK_CHANNEL_IDS (comma-separated)        SLACK_BASE_URL
=========  ======================================================  ===========================
"""

from __future__ import annotations

import argparse
import os

from cfstream.connectors import GitHubConnector, LinearConnector, NotionConnector, SlackConnector
from cfstream.errors import DatasetError
from cfstream.frame import FrameDataset

__all__ = (
    "github_connector",
    "linear_connector",
    "notion_connector",
    "open_dataset",
    "parser",
    "slack_connector",
)


def parser(
    description: str, *, base_url_env: str | None = "GITHUB_BASE_URL"
) -> argparse.ArgumentParser:
    """The recipes' command line: ``--dataset`` and ``--base-url`` (one service's API root)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--dataset", default="my_knowledge_base.lance", help="the Lance dataset")
    if base_url_env is not None:
        p.add_argument(
            "--base-url",
            default=None,
            help=f"the service's API root (default: ${base_url_env} or the real API)",
        )
    return p


def github_connector(base_url: str | None = None, **config: object) -> GitHubConnector:
    """``GitHubConnector`` from GITHUB_TOKEN / GITHUB_OWNER / GITHUB_REPO / GITHUB_BASE_URL."""
    return GitHubConnector(
        token=os.getenv("GITHUB_TOKEN"),
        owner=os.getenv("GITHUB_OWNER", "myorg"),
        repo=os.getenv("GITHUB_REPO", "documentation"),
        base_url=base_url or os.getenv("GITHUB_BASE_URL", "https://api.github.com"),
        **config,
    )


def linear_connector() -> LinearConnector:
    """``LinearConnector`` from LINEAR_API_KEY / LINEAR_BASE_URL."""
    return LinearConnector(
        api_key=os.getenv("LINEAR_API_KEY"),
        base_url=os.getenv("LINEAR_BASE_URL", "https://api.linear.app"),
    )


def notion_connector() -> NotionConnector:
    """``NotionConnector`` from NOTION_API_KEY / NOTION_BASE_URL."""
    return NotionConnector(
        api_key=os.getenv("NOTION_API_KEY"),
        base_url=os.getenv("NOTION_BASE_URL", "https://api.notion.com"),
    )


def slack_connector() -> SlackConnector:
    """``SlackConnector`` from SLACK_TOKEN / SLACK_BASE_URL."""
    return SlackConnector(
        token=os.getenv("SLACK_TOKEN"),
        base_url=os.getenv("SLACK_BASE_URL", "https://slack.com/api"),
    )


def open_dataset(path: str) -> FrameDataset:
    """Open the dataset at ``path``, creating it on the first run."""
    try:
        return FrameDataset.open(path)
    except DatasetError:
        return FrameDataset.create(path)
