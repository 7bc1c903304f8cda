"""Connectors. Each lives in its own module and is imported on first use::

from cfstream.sources import GitHubSource, SlackSource
"""

from __future__ import annotations

import importlib
from typing import Any

from cfstream.sources.base import FunctionSource, MergedSource, Source, merge, source
from cfstream.sources.registry import BUILTIN_SOURCES, available_sources, load_source_class

__all__ = (
    "BUILTIN_SOURCES",
    "DiscordSource",
    "FunctionSource",
    "GitHubSource",
    "GoogleDriveSource",
    "LinearSource",
    "MergedSource",
    "NotionSource",
    "ObsidianSource",
    "SlackSource",
    "Source",
    "available_sources",
    "load_source_class",
    "merge",
    "source",
)

_LAZY = {target.split(":")[1]: target.split(":")[0] for target in BUILTIN_SOURCES.values()}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cfstream.sources' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
