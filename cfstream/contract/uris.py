"""Where a dataset is and where cfstream keeps its files for it.

A dataset URI is a local path (``kb.lance``, ``file:///data/kb.lance``) or an object store URL
(``s3://``, ``gs://``, ...). cfstream keeps the files of a local dataset's run (the sync state,
the item store, run locks, the dead-letter file) in ``<dataset>/_cfstream/``, so copying the
dataset copies them.
"""

from __future__ import annotations

import re
from pathlib import Path

from cfstream.errors import StateError

__all__ = ("dataset_exists", "local_path", "state_dir_for")


def local_path(uri: str) -> Path | None:
    """The local filesystem path of a dataset URI, or None for object stores (s3://, gs://, ...)."""
    if uri.startswith("file://"):
        return Path(uri[len("file://") :])
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", uri):
        return None
    return Path(uri)


def state_dir_for(dataset_uri: str) -> Path:
    """Where cfstream keeps its files for a local dataset: ``<dataset>/_cfstream``."""
    p = local_path(dataset_uri)
    if p is None:
        raise StateError(
            f"dataset {dataset_uri!r} is not on the local filesystem: pass state_path= to keep "
            "the sync state somewhere local"
        )
    return p / "_cfstream"


def dataset_exists(uri: str) -> bool:
    """Whether the dataset at ``uri`` has been created (has a committed version); a dataset in an
    object store is taken to exist (finding out would cost a request)."""
    local = local_path(uri)
    return local is None or (local / "_versions").exists()
