"""The exceptions cfstream raises.

Every exception cfstream raises on purpose derives from :class:`CfStreamError`. Errors from the
libraries underneath (aiohttp, pydantic, lance, yaml) are translated at the boundary with
``raise ... from exc``, so callers only ever need to catch one root. Each class says whether the
condition is worth retrying (``retryable``).

::

    CfStreamError
    ├── ConfigError              bad configuration, unknown key, missing ${VAR}      (exit code 2)
    ├── StateError               the sync-state file is corrupt or cannot be written
    ├── SourceError              a source failed as a whole (not one record)
    │   ├── PartitionError       one partition cannot be read; the other partitions go on
    │   └── HTTPError            an HTTP call failed; carries service, status, redacted URL
    │       ├── AuthError        401/403: which credential and scope to check
    │       ├── NotFoundError    404: the repo/channel/page does not exist or is not shared
    │       ├── ClientError      any other 4xx (not retried)
    │       ├── RateLimitError   429 or a service's own rate-limit signal        (retryable)
    │       │   └── RateLimitWaitTooLong  the wait asked exceeds the configured cap
    │       ├── TransientError   5xx, timeouts, dropped connections              (retryable)
    │       │   └── ResponseFormatError  empty, truncated or non-JSON 2xx body  (retryable)
    │       ├── ResponseTooLargeError  a body over the client's size cap: that one answer
    │       └── PaginationLoopError  the service sent a page cursor it had already sent
    ├── SinkError                the dataset could not be written
    │   ├── DatasetError         the path is not a Lance dataset or its schema is incompatible
    │   ├── DatasetBusyError     another writer holds the dataset
    │   └── CommitError          a commit failed (disk full, permission denied, conflicts)
    ├── RecordError              one record is invalid: becomes a dead letter, never ends a run
    ├── SearchError              a search cannot run (no dataset, a bad filter, no vectors)
    └── PipelineError            a stage failed as a whole; wraps the original cause
"""

from __future__ import annotations

__all__ = (
    "AuthError",
    "CfStreamError",
    "ClientError",
    "CommitError",
    "ConfigError",
    "DatasetBusyError",
    "DatasetError",
    "HTTPError",
    "NotFoundError",
    "PaginationLoopError",
    "PartitionError",
    "PipelineError",
    "RateLimitError",
    "RateLimitWaitTooLong",
    "RecordError",
    "ResponseFormatError",
    "ResponseTooLargeError",
    "SearchError",
    "SinkError",
    "SourceError",
    "StateError",
    "TransientError",
)


class CfStreamError(Exception):
    """Root of every error cfstream raises on purpose."""

    retryable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(CfStreamError):
    """The configuration is invalid: the message names the file, the key path and what was expected."""


class StateError(CfStreamError):
    """The sync-state file cannot be read or written."""


class SourceError(CfStreamError):
    """A source failed as a whole (it could not list, authenticate, or page)."""

    def __init__(self, message: str, *, source: str | None = None) -> None:
        if source:
            message = f"source {source!r}: {message}"
        super().__init__(message)
        self.source = source


class PartitionError(SourceError):
    """One partition of a source cannot be read (a channel the bot may not read, say).

    The runner records it for that partition (``SourceStats.failed_partitions``) and reports the
    source as failed, while the source's other partitions finish; the partition's cursor stays at
    its last checkpoint. The message says what to do.
    """


class HTTPError(SourceError):
    """An HTTP request failed. ``url`` is already redacted; no header or token is ever kept."""

    def __init__(
        self,
        message: str,
        *,
        service: str = "http",
        status: int | None = None,
        url: str | None = None,
        method: str = "GET",
    ) -> None:
        where = f"{method} {url}" if url else method
        status_txt = f" -> {status}" if status is not None else ""
        super().__init__(f"{service}: {where}{status_txt}: {message}")
        self.service = service
        self.status = status
        self.url = url
        self.method = method


class AuthError(HTTPError):
    """Authentication or authorisation failed (401/403): check the named credential and its scopes."""


class NotFoundError(HTTPError):
    """The resource does not exist or the credential cannot see it (404)."""


class ClientError(HTTPError):
    """A 4xx response that retrying will not fix."""


class RateLimitError(HTTPError):
    """The service asked us to slow down. ``retry_after`` is the wait it asked for, in seconds."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after


class RateLimitWaitTooLong(RateLimitError):
    """The wait a service asked for is longer than ``max_wait``, or retries ran past ``max_elapsed``."""

    retryable = False


class TransientError(HTTPError):
    """5xx, a timeout or a dropped connection: worth retrying with backoff."""

    retryable = True


class ResponseFormatError(TransientError):
    """A 2xx body was empty, truncated, not JSON or an HTML page where JSON was expected.

    A :class:`TransientError`: the answer was faulty, not the record, so it is retried like a
    5xx, and after the last try it must neither dead-letter the record nor advance a cursor.
    """

    retryable = True


class ResponseTooLargeError(HTTPError):
    """A response body (after decompression) exceeded the client's cap; reading stopped there.

    It concerns that one answer: a file download can be skipped or dead-lettered as too large,
    while a listing page fails its partition. ``limit`` is the cap in bytes; raise
    ``HttpClient(max_body_bytes=...)`` (JSON) or ``max_download_bytes=...`` (bytes) to allow more.
    """

    def __init__(self, message: str, *, limit: int | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.limit = limit


class PaginationLoopError(HTTPError, PartitionError):
    """The service returned a pagination cursor or next link it had already returned.

    Following it would loop forever, so the pagination stops; re-running the same request will
    not help (the service's paging is at fault). It fails that partition only (a
    :class:`PartitionError`): the others finish and its cursor stays at what was committed.
    """


class SinkError(CfStreamError):
    """The dataset could not be written."""


class DatasetError(SinkError):
    """The dataset path is not a Lance dataset, or its schema cannot hold FrameRecords."""


class DatasetBusyError(SinkError):
    """Another process is writing this dataset with the same source; try again later."""


class CommitError(SinkError):
    """A Lance commit failed; the sync state was not advanced past the last good commit."""


class RecordError(CfStreamError):
    """One record is invalid. Stages turn these into dead letters; they never end a run."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


class SearchError(CfStreamError):
    """A search cannot run: the dataset is missing, the filter is invalid, or the dataset cannot
    do the vector search asked for. The message says what to do."""


class PipelineError(CfStreamError):
    """A stage failed as a whole. ``stage`` names it; ``__cause__`` is the original exception."""

    def __init__(self, message: str, *, stage: str | None = None) -> None:
        super().__init__(f"stage {stage!r} failed: {message}" if stage else message)
        self.stage = stage
