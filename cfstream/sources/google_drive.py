"""Google Drive: files under folders (recursively) or a whole shared drive, kept in sync by the
changes feed.

Partitions are the configured folders (``folder:<id>``) or the shared drive (``drive:<id>``); each
is read on its own, with its own cursor:

1. **Full sync** (no cursor): take ``changes/startPageToken`` *before* listing, then walk the tree
   breadth first with ``files.list(q="'<folder>' in parents and trashed=false")``, one page at a
   time. Folders become ``collection_header`` records; Google Docs are exported as
   ``text/markdown`` (``text/plain`` when Drive refuses markdown), Sheets as ``text/csv``, Slides
   as ``text/plain``; plain-text files (md, txt, csv, json, html) are downloaded with
   ``alt=media``; other files are recorded with metadata only or skipped (``binaries``).
2. **Incremental sync**: ``changes.list(pageToken=...)`` until ``newStartPageToken``. A change is
   in scope when its file is the partition's root or its parent is a folder of the tree (the
   cursor knows them). Removed, trashed and moved-out files become tombstones (a folder takes
   everything below it along); new or moved-in folders are walked; a renamed folder re-imports its
   direct files (their ``collection`` is the folder's name). A file's content is fetched again
   only when the metadata that a record is built from moved (``modifiedTime``, ``md5Checksum``,
   ``size``, ``name``, ``parents``, ...; a bare ``version`` bump is skipped): a fingerprint of it
   is kept per file.

The cursor (JSON)::

    {"v": 2, "phase": "full" | "changes", "token": "<changes page token>",
     "queue": ["<folder ids still to list>"], "page_token": "<files.list page of queue[0]>",
     "retry": {"<id>": "<parent id>"}}

The folders and files of the tree live in the state's item store, one entry each:
``"d:<id>" -> ["<name>", "<parent id>"]`` and ``"f:<id>" -> ["<fingerprint>", "<parent id>"]``,
read as needed, and each checkpoint carries the entries that changed since the previous one. A
version 1 cursor (which held them as two maps) is moved into the store on the first run.

A file whose content fetch failed for a transient reason (a 5xx or an empty, short or
mismatching body after the retries) gets no entry: it goes to ``retry``, the run reports it,
and the next run fetches that file again before anything else.

A checkpoint follows every page (a crash refetches at most one page). See
``docs/connectors/google_drive.md``.
"""

from __future__ import annotations

import functools
import hashlib
import posixpath
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

import anyio
import orjson
from pydantic import Field, model_validator

from cfstream.contract.context import RunContext, SourceContext
from cfstream.errors import (
    AuthError,
    ClientError,
    HTTPError,
    NotFoundError,
    PaginationLoopError,
    ResponseFormatError,
    SourceError,
)
from cfstream.http import (
    HttpClient,
    JsonResponse,
    Problem,
    RateLimit,
    RawResponse,
    ResponsePolicy,
    SeenRequests,
    Service,
    get_path,
    join_message,
    register_policy,
)
from cfstream.records import Checkpoint, Document, Item, Tombstone, parse_timestamp
from cfstream.sources._google_auth import (
    DRIVE_READONLY_SCOPE,
    AccessTokenCredentials,
    CredentialsFile,
    GoogleCredentials,
    GoogleTokenAuth,
    OAuthCredentials,
    ServiceAccountCredentials,
)
from cfstream.sources._items import ItemLedger
from cfstream.sources.base import (
    Source,
    SourceConfig,
    SourceOutput,
    fetch_verified,
    is_transient,
    size_and_digest_problem,
)
from cfstream.sources.options import validate_options

__all__ = (
    "AccessTokenCredentials",
    "CredentialsFile",
    "GoogleDriveConfig",
    "GoogleDriveSource",
    "OAuthCredentials",
    "ServiceAccountCredentials",
    "file_fingerprint",
)

FOLDER = "application/vnd.google-apps.folder"
DOC = "application/vnd.google-apps.document"
SHEET = "application/vnd.google-apps.spreadsheet"
SLIDES = "application/vnd.google-apps.presentation"
SHORTCUT = "application/vnd.google-apps.shortcut"

#: Google Docs Editors type -> export formats to try, in order
EXPORT_FORMATS: dict[str, tuple[str, ...]] = {
    DOC: ("text/markdown", "text/plain"),
    SHEET: ("text/csv",),
    SLIDES: ("text/plain",),
}
_KIND_TAGS = {DOC: "google-doc", SHEET: "google-sheet", SLIDES: "google-slides"}
TEXT_MIME_TYPES = frozenset(
    {
        "text/plain",
        "text/markdown",
        "text/x-markdown",
        "text/csv",
        "application/json",
        "text/html",
    }
)
TEXT_EXTENSIONS = frozenset({"md", "markdown", "txt", "csv", "json", "html", "htm"})

#: the File fields every request asks for (partial response)
FILE_FIELDS = (
    "id,name,mimeType,parents,createdTime,modifiedTime,version,md5Checksum,size,trashed,"
    "starred,description,webViewLink,driveId,fileExtension,owners(displayName,emailAddress),"
    "lastModifyingUser(displayName,emailAddress),shortcutDetails(targetId,targetMimeType)"
)
_LIST_FIELDS = f"nextPageToken,incompleteSearch,files({FILE_FIELDS})"
_CHANGE_FIELDS = (
    f"nextPageToken,newStartPageToken,changes(changeType,removed,fileId,time,driveId,"
    f"file({FILE_FIELDS}))"
)
#: the File fields a record is built from: a change that moves none of them is skipped
_FINGERPRINT_KEYS = (
    "name",
    "mimeType",
    "parents",
    "createdTime",
    "modifiedTime",
    "md5Checksum",
    "size",
    "starred",
    "description",
    "webViewLink",
    "driveId",
    "owners",
    "lastModifyingUser",
    "shortcutDetails",
)
_CURSOR_VERSION = 2
#: cursors of version 1 held the folder and file maps themselves (moved into the item store)
_OLD_CURSOR_VERSION = 1
#: records held back at most before they are sent on, within one changes page
_FLUSH_ITEMS = 500
_DRIVE = "/drive/v3"

T = TypeVar("T")


_GOOGLE_RATE = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
#: 403 reasons about one file, not the credential: retrying or re-authenticating will not help
_GOOGLE_PER_FILE = frozenset(
    {
        "exportSizeLimitExceeded",
        "fileNotDownloadable",
        "fileNotExportable",
        "cannotDownloadAbusiveFile",
        "downloadQuotaExceeded",
    }
)


class GooglePolicy(ResponsePolicy):
    """Google APIs: 403 ``rateLimitExceeded``/``userRateLimitExceeded`` and 429 are rate limits.

    Google sends no ``Retry-After``, so those waits use exponential backoff with jitter.
    """

    name = "google"
    default_auth_hint = (
        "check the {service} access token (it may have expired) and that it has scope "
        "https://www.googleapis.com/auth/drive.readonly, and that the file is shared with the account"
    )

    def inspect(self, raw: RawResponse, data: Any, service: str, now: float) -> Problem | None:
        """Rate-limit reasons in the ``error.errors[].reason`` envelope."""
        if raw.status not in (403, 429):
            return None
        errors = get_path(data, "error.errors")
        reasons = (
            {e.get("reason") for e in errors if isinstance(e, Mapping)}
            if isinstance(errors, list)
            else set()
        )
        if raw.status == 429 or reasons & _GOOGLE_RATE:
            why = ", ".join(sorted(r for r in reasons if isinstance(r, str))) or "429"
            return self.rate_limited(
                raw, now, join_message(why, self.error_message(data)), scope="request"
            )
        per_file = sorted(r for r in reasons & _GOOGLE_PER_FILE if isinstance(r, str))
        if per_file:
            return Problem(
                ClientError,
                join_message(
                    ", ".join(per_file), self.error_message(data), "this file cannot be read"
                ),
                f"google_{per_file[0]}",
            )
        return None


register_policy(GooglePolicy, "gdrive", "google-drive", "google_drive", "drive")


class GoogleDriveConfig(SourceConfig):
    """Settings of a Google Drive source (the ``google_drive`` type in a YAML config)."""

    folder_ids: list[str] | None = Field(
        default=None, description="folders to import recursively (one partition each)"
    )
    drive_id: str | None = Field(default=None, description="a shared drive to import whole")
    credentials: GoogleCredentials = Field(
        description="type: oauth | service_account | access_token | file, or the path of a "
        "credential file from gcloud or the Cloud console (see the docs page)"
    )
    base_url: str = Field(
        default="https://www.googleapis.com", description="the Drive API origin (tests: a fake)"
    )
    token_url: str = Field(
        default="https://oauth2.googleapis.com/token", description="the OAuth 2.0 token endpoint"
    )
    binaries: Literal["metadata", "skip"] = Field(
        default="metadata",
        description="files that are neither Docs Editors files nor plain text: a record with "
        "metadata only, or nothing",
    )
    max_export_bytes: int = Field(
        default=10 * 1024 * 1024,
        ge=1,
        description="largest export or download kept as text; larger files get metadata only",
    )
    page_size: int = Field(default=100, ge=1, le=1000, description="files.list/changes pageSize")
    fetch_concurrency: int = Field(
        default=8, ge=1, le=64, description="requests in flight for this source"
    )
    requests_per_second: float = Field(
        default=10.0, gt=0, description="request budget for this credential"
    )
    max_concurrency: int | None = Field(
        default=None, ge=1, description="partitions (folders) read at once"
    )

    @model_validator(mode="after")
    def _one_scope(self) -> GoogleDriveConfig:
        if bool(self.folder_ids) == bool(self.drive_id):
            raise ValueError(
                "give either folder_ids (a non-empty list of folder ids) or drive_id (a shared "
                "drive id), not both and not neither"
            )
        if self.folder_ids and len(set(self.folder_ids)) != len(self.folder_ids):
            raise ValueError("folder_ids has duplicates")
        return self


def file_fingerprint(f: Mapping[str, Any]) -> str:
    """A short digest of the File fields a record is built from (``version`` excluded)."""
    payload = orjson.dumps({k: f.get(k) for k in _FINGERPRINT_KEYS}, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(payload, digest_size=8).hexdigest()


class _DrivePolicy(GooglePolicy):
    """Google's policy, plus: a refused export or download is a per-file problem, not an auth one."""

    _PER_FILE = frozenset(
        {
            "exportSizeLimitExceeded",
            "fileNotDownloadable",
            "fileNotExportable",
            "cannotExportFile",
            "cannotDownloadAbusiveFile",
            "downloadQuotaExceeded",
        }
    )

    def inspect(self, raw: RawResponse, data: Any, service: str, now: float) -> Problem | None:
        """403s about one file's content become :class:`~cfstream.errors.ClientError`."""
        if raw.status == 403 and isinstance(data, Mapping):
            err = data.get("error")
            errors = err.get("errors") if isinstance(err, Mapping) else None
            reasons = {
                e.get("reason") for e in errors or () if isinstance(e, Mapping)
            } & self._PER_FILE
            if reasons:
                return Problem(
                    ClientError,
                    f"{', '.join(sorted(str(r) for r in reasons))}: {self.error_message(data)}",
                    "http_403",
                )
        return super().inspect(raw, data, service, now)


class _Entries:
    """The folders (``d:<id>``) or files (``f:<id>``) of a partition, as a dict over the item
    store: ``id -> [name, parent id]`` / ``id -> [fingerprint, parent id]``."""

    def __init__(self, ledger: ItemLedger, prefix: str) -> None:
        self._ledger = ledger
        self._prefix = prefix

    def get(self, key: str) -> list[str | None] | None:
        value = self._ledger.get(self._prefix + key)
        return list(value) if isinstance(value, list) and len(value) == 2 else None

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __getitem__(self, key: str) -> list[str | None]:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: list[str | None]) -> None:
        if self.get(key) != value:  # an unchanged entry is not written again
            self._ledger.put(self._prefix + key, list(value))

    def __delitem__(self, key: str) -> None:
        self._ledger.delete(self._prefix + key)

    def items(self) -> Iterator[tuple[str, list[str | None]]]:
        """Every entry, streamed from the item store (this run's changes applied)."""
        n = len(self._prefix)
        for key, value in self._ledger.items(self._prefix):
            if isinstance(value, list) and len(value) == 2:
                yield key[n:], list(value)

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self.items())


@dataclass
class _State:
    """A partition's cursor, in memory, and its folders and files (kept in the item store)."""

    phase: Literal["full", "changes"]
    token: str
    ledger: ItemLedger
    queue: list[str] = field(default_factory=list)
    page_token: str | None = None
    #: files not done: their content fetch failed for a transient reason (id -> parent id)
    retry: dict[str, str] = field(default_factory=dict)

    @property
    def folders(self) -> _Entries:
        return _Entries(self.ledger, "d:")

    @property
    def files(self) -> _Entries:
        return _Entries(self.ledger, "f:")

    def snapshot(self) -> dict[str, Any]:
        return {
            "v": _CURSOR_VERSION,
            "phase": self.phase,
            "token": self.token,
            "queue": list(self.queue),
            "page_token": self.page_token,
            "retry": dict(self.retry),
        }

    def checkpoint(self) -> Checkpoint:
        """The cursor and the folder and file entries changed since the previous checkpoint."""
        return Checkpoint(self.snapshot(), items=self.ledger.changes())

    @classmethod
    def load(cls, cursor: Mapping[str, Any] | None, ctx: SourceContext, partition: str) -> _State:
        """The saved state, or a new one (phase ``full``, no token yet) when there is none."""
        version = cursor.get("v") if cursor else None
        try:
            if cursor is None or version not in (_OLD_CURSOR_VERSION, _CURSOR_VERSION):
                raise KeyError("v")
            phase = cursor["phase"]
            token = cursor["token"]
            if phase not in ("full", "changes") or not isinstance(token, str):
                raise KeyError("phase")
            legacy: dict[str, Any] | None = None
            if version == _OLD_CURSOR_VERSION:  # the maps were in the cursor: into the store
                legacy = {f"d:{k}": list(v) for k, v in (cursor.get("folders") or {}).items()}
                legacy.update((f"f:{k}", list(v)) for k, v in (cursor.get("files") or {}).items())
            return cls(
                phase=phase,
                token=token,
                ledger=ItemLedger(ctx, partition, legacy=legacy),
                queue=[str(q) for q in cursor.get("queue") or ()],
                page_token=cursor.get("page_token"),
                retry={str(k): str(v) for k, v in (cursor.get("retry") or {}).items()},
            )
        except (KeyError, TypeError, AttributeError):
            return cls(phase="full", token="", ledger=ItemLedger(ctx, partition, fresh=True))


class _Skip(Exception):
    """A file not to import (the reason says why); counted, not dead-lettered."""


class _Bad(Exception):
    """A file that cannot be mapped: dead-lettered with this reason."""


class _Retry:
    """A file whose content fetch failed for a transient reason: not done, fetched next run."""


class _Api:
    """The Drive service of one run, with token refresh on 401."""

    def __init__(self, source: GoogleDriveSource, http: HttpClient) -> None:
        cfg = source.config
        self.http = http
        self.auth = source.auth
        self.svc: Service = http.service(
            "google_drive",
            base_url=cfg.base_url,
            auth=self.auth,
            rate=RateLimit(
                per_second=cfg.requests_per_second, burst=max(1, int(cfg.requests_per_second))
            ),
            policy=_DrivePolicy(auth_hint=self.auth.what_to_check),
            concurrency=cfg.fetch_concurrency,
        )
        self.slots = anyio.CapacityLimiter(cfg.fetch_concurrency)

    async def get(
        self, path: str, params: Mapping[str, Any], *, expect: Literal["json", "bytes"] = "json"
    ) -> JsonResponse:
        await self.auth.ensure(self.http)
        sent = self.auth.current_token
        try:
            return await self.svc.get(path, params=params, expect=expect)
        except AuthError as exc:
            if exc.status != 401 or not await self.auth.refresh(self.http, rejected=sent):
                raise
        return await self.svc.get(path, params=params, expect=expect)


async def _gather(
    fns: Sequence[Callable[[], Awaitable[T]]], limiter: anyio.CapacityLimiter
) -> list[T]:
    """Run ``fns`` concurrently (at most ``limiter`` at once); results in order; first error raised."""
    results: list[Any] = [None] * len(fns)

    async def one(i: int, fn: Callable[[], Awaitable[T]]) -> None:
        async with limiter:
            results[i] = await fn()

    try:
        async with anyio.create_task_group() as tg:
            for i, fn in enumerate(fns):
                tg.start_soon(one, i, fn)
    except BaseExceptionGroup as group:
        cancelled = anyio.get_cancelled_exc_class()
        leaves = [e for e in _leaves(group) if not isinstance(e, cancelled)]
        if leaves:
            raise leaves[0] from None
        raise
    return results


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in _leaves(e)]
    return [exc]


def _user_name(user: Any) -> str | None:
    if isinstance(user, Mapping):
        name = user.get("displayName") or user.get("emailAddress")
        return str(name) if name else None
    return None


def _extension(f: Mapping[str, Any]) -> str:
    ext = f.get("fileExtension")
    if isinstance(ext, str) and ext:
        return ext.lower()
    return posixpath.splitext(str(f.get("name", "")))[1].lstrip(".").lower()


class GoogleDriveSource(Source):
    """Import Google Drive folders (recursively) or a shared drive.

    Args:
        folder_ids: folders to import, each a partition (give this or ``drive_id``).
        drive_id: a shared drive to import whole (``corpora=drive``).
        credentials: ``{"type": "oauth", "client_id", "client_secret", "refresh_token"}``,
            ``{"type": "service_account", "key_file" | "key_json", "subject"?, "scopes"?}`` or
            ``{"type": "access_token", "access_token"}`` (or the pydantic models).
        base_url: the Drive API origin (``https://www.googleapis.com``).
        token_url: the OAuth 2.0 token endpoint.
        binaries: ``"metadata"`` records other files with metadata only; ``"skip"`` leaves them out.
        max_export_bytes: exports/downloads larger than this keep metadata only (default 10 MB,
            Drive's own export cap).
        page_size: items per ``files.list``/``changes.list`` page (1-1000).
        fetch_concurrency: requests in flight for this source (content fetches of a page run
            concurrently).
        requests_per_second: the request budget for the credential.
        name: the source's name in the sync state (default ``google_drive``).
        max_concurrency: partitions read at once.

    Example::

        GoogleDriveSource(
            folder_ids=["1AbC..."],
            credentials={"type": "oauth", "client_id": "...", "client_secret": cf.env("GDRIVE_SECRET"),
                         "refresh_token": cf.env("GDRIVE_REFRESH_TOKEN")},
        ) | LanceSink("kb.lance")
    """

    source_type: ClassVar[str] = "google_drive"
    uses_http: ClassVar[bool] = True
    config_model: ClassVar[type[SourceConfig] | None] = GoogleDriveConfig
    required_scopes: ClassVar[tuple[str, ...]] = (DRIVE_READONLY_SCOPE,)

    def __init__(self, *, name: str | None = None, **options: Any) -> None:
        self.config: GoogleDriveConfig = validate_options(
            GoogleDriveConfig, self.source_type, options
        )
        super().__init__(name=name, max_concurrency=self.config.max_concurrency)
        self.auth = GoogleTokenAuth(self.config.credentials, token_url=self.config.token_url)
        self._api: _Api | None = None
        self._api_run: RunContext | None = None

    def __repr__(self) -> str:
        where = (
            f"drive_id={self.config.drive_id!r}"
            if self.config.drive_id
            else f"folder_ids={self.config.folder_ids!r}"
        )
        return f"<GoogleDriveSource {self.name!r} {where}>"

    # -- Source --------------------------------------------------------------------------------

    async def partitions(self, ctx: SourceContext) -> Sequence[str]:
        """``folder:<id>`` per configured folder, or ``drive:<id>`` for the shared drive."""
        if self.config.drive_id:
            return [f"drive:{self.config.drive_id}"]
        return [f"folder:{fid}" for fid in self.config.folder_ids or ()]

    async def authenticate(self, ctx: SourceContext) -> None:
        """Fetch an access token and read the first root folder: raises AuthError on bad credentials."""
        api = self._api_for(ctx)
        root = self.config.drive_id or (self.config.folder_ids or [""])[0]
        await api.get(f"{_DRIVE}/files/{root}", {"fields": "id,name", "supportsAllDrives": True})

    async def read(
        self, partition: str, cursor: Mapping[str, Any] | None, ctx: SourceContext
    ) -> AsyncIterator[SourceOutput]:
        """Yield a page of records (and tombstones) at a time, each followed by a Checkpoint."""
        kind, _, root = partition.partition(":")
        if kind not in ("folder", "drive") or not root:
            raise SourceError(
                f"unknown partition {partition!r}; expected 'folder:<id>' or 'drive:<id>'",
                source=self.name,
            )
        reader = _PartitionReader(self, self._api_for(ctx), ctx, root, drive=kind == "drive")
        async for out in reader.run(_State.load(cursor, ctx, partition)):
            yield out

    def _api_for(self, ctx: SourceContext) -> _Api:
        if self._api is None or self._api_run is not ctx.run:
            self.auth.reset()
            self._api = _Api(self, ctx.http)
            self._api_run = ctx.run
        return self._api


class _PartitionReader:
    """Reads one folder tree (or shared drive) for one run."""

    def __init__(
        self,
        source: GoogleDriveSource,
        api: _Api,
        ctx: SourceContext,
        root: str,
        *,
        drive: bool,
    ) -> None:
        self.source = source
        self.cfg = source.config
        self.api = api
        self.ctx = ctx
        self.root = root
        self.drive = drive
        self.st = source.source_type
        # every page request of this run: a page token Drive hands back twice would loop forever
        self.seen = SeenRequests()

    # -- requests ------------------------------------------------------------------------------

    def _scope(self) -> dict[str, Any]:
        params: dict[str, Any] = {"supportsAllDrives": True}
        if self.drive:
            params["driveId"] = self.root
        return params

    async def _start_token(self) -> str:
        resp = await self.api.get(f"{_DRIVE}/changes/startPageToken", self._scope())
        token = resp.data.get("startPageToken") if isinstance(resp.data, Mapping) else None
        if not isinstance(token, str) or not token:
            raise SourceError(
                "changes/startPageToken answered without a startPageToken", source=self.source.name
            )
        return token

    async def _root_file(self) -> dict[str, Any]:
        try:
            resp = await self.api.get(
                f"{_DRIVE}/files/{self.root}",
                {"fields": FILE_FIELDS, "supportsAllDrives": True},
            )
        except NotFoundError as exc:
            what = "shared drive" if self.drive else "folder"
            raise NotFoundError(
                f"the {what} {self.root!r} was not found: check the id and that it is shared "
                "with the account the credentials belong to",
                service="google_drive",
                status=exc.status,
                url=exc.url,
            ) from None
        f = resp.data
        if not isinstance(f, dict) or f.get("mimeType") != FOLDER:
            raise SourceError(
                f"{self.root!r} is not a folder (mimeType {f.get('mimeType') if isinstance(f, dict) else None!r}); "
                "folder_ids takes folder ids",
                source=self.source.name,
            )
        return f

    def _no_loop(self, endpoint: str, folder: str, token: Any) -> None:
        """Raise PaginationLoopError when this run already asked for this page."""
        if not self.seen.add(endpoint, folder, token):
            raise PaginationLoopError(
                f"Drive's {endpoint} handed back a page token it already gave in this run "
                f"({'folder ' + folder if folder else 'changes'}); following it would loop "
                "forever. The partition stops at its last checkpoint; run again later, and "
                "report it if it persists",
                service="google_drive",
                url=f"{_DRIVE}/{'files' if folder else 'changes'}",
            )

    async def _list_page(self, folder: str, page_token: str | None) -> tuple[list[Any], str | None]:
        params: dict[str, Any] = {
            "q": f"'{folder}' in parents and trashed=false",
            "fields": _LIST_FIELDS,
            "pageSize": self.cfg.page_size,
            "includeItemsFromAllDrives": True,
            **self._scope(),
        }
        if self.drive:
            params["corpora"] = "drive"
        if page_token:
            params["pageToken"] = page_token
            self._no_loop("files.list", folder, page_token)
        resp = await self.api.get(f"{_DRIVE}/files", params)
        data = resp.data
        if not isinstance(data, Mapping) or not isinstance(data.get("files"), list):
            # never an empty folder: an absence is only concluded from a complete answer
            raise ResponseFormatError(
                f"files.list of folder {folder} answered without a `files` list",
                service="google_drive",
            )
        if data.get("incompleteSearch"):
            self.ctx.logger.warning(
                "google_drive: Drive reported an incomplete search listing folder %s", folder
            )
        nxt = data.get("nextPageToken")
        return list(data["files"]), (nxt if isinstance(nxt, str) and nxt else None)

    # -- the two phases ------------------------------------------------------------------------

    async def run(self, state: _State) -> AsyncIterator[list[Item]]:
        if not state.token:  # nothing saved: a full sync
            # the token first: changes made while we list are replayed by the next sync
            state.token = await self._start_token()
            root = await self._root_file()
            state.queue = [self.root]
            state.folders[self.root] = [str(root.get("name", "")), None]
            header = self._map_safely(root, state)
            yield [*([header] if header else []), state.checkpoint()]
        elif state.retry:
            items = await self._retry(state)
            yield [*items, state.checkpoint()]
        if state.phase == "full":
            async for out in self._full(state):
                yield out
            if self.ctx.stopping:
                return
            state.phase = "changes"
            state.queue = []
            state.page_token = None
            yield [state.checkpoint()]
        async for out in self._changes(state):
            yield out

    async def _full(self, state: _State) -> AsyncIterator[list[Item]]:
        while state.queue and not self.ctx.stopping:
            folder = state.queue[0]
            files, nxt = await self._list_page(folder, state.page_token)
            items = await self._import_files(files, state, force=False, discovered=state.queue)
            if nxt is None:
                state.queue.pop(0)
            state.page_token = nxt
            yield [*items, state.checkpoint()]

    async def _walk(self, folder: str, state: _State) -> AsyncIterator[list[Item]]:
        """Import everything below ``folder`` (a folder that just came into the tree)."""
        queue = [folder]
        while queue:
            current = queue.pop(0)
            token: str | None = None
            while True:
                files, token = await self._list_page(current, token)
                items = await self._import_files(files, state, force=False, discovered=queue)
                if items:
                    yield items
                if token is None:
                    break

    async def _changes(self, state: _State) -> AsyncIterator[list[Item]]:
        while not self.ctx.stopping:
            params = {
                "pageToken": state.token,
                "pageSize": self.cfg.page_size,
                "includeRemoved": True,
                "includeItemsFromAllDrives": True,
                "spaces": "drive",
                "fields": _CHANGE_FIELDS,
                **self._scope(),
            }
            self._no_loop("changes.list", "", state.token)
            resp = await self.api.get(f"{_DRIVE}/changes", params)
            data = resp.data
            if not isinstance(data, Mapping) or not isinstance(data.get("changes"), list):
                # never "nothing changed": the page token must not move past unread changes
                raise ResponseFormatError(
                    "changes.list answered without a `changes` list", service="google_drive"
                )
            changes = data["changes"]
            out: list[Item] = []
            async for items in self._apply_changes(changes, state):
                out.extend(items)
                if len(out) >= _FLUSH_ITEMS:  # a folder that came in can hold a lot
                    yield out
                    out = []
            nxt, new_start = data.get("nextPageToken"), data.get("newStartPageToken")
            if isinstance(nxt, str) and nxt:
                state.token = nxt
                done = False
            elif isinstance(new_start, str) and new_start:
                state.token = new_start
                done = True
            else:
                raise SourceError(
                    "changes.list answered with neither nextPageToken nor newStartPageToken",
                    source=self.source.name,
                )
            yield [*out, state.checkpoint()]
            if done:
                return

    async def _retry(self, state: _State) -> list[Item]:
        """Fetch again the files a previous run could not fetch (``state.retry``)."""
        pending: list[dict[str, Any]] = []
        out: list[Item] = []
        for fid in list(state.retry):
            try:
                resp = await self.api.get(
                    f"{_DRIVE}/files/{fid}", {"fields": FILE_FIELDS, "supportsAllDrives": True}
                )
            except NotFoundError:
                del state.retry[fid]
                out += self._remove(fid, state)
                continue
            except HTTPError as exc:
                if not is_transient(exc):
                    raise
                self.ctx.retry_next_run(exc, source_id=fid)
                continue
            f = resp.data
            if not isinstance(f, dict) or f.get("trashed") or self._in_tree(f, state) is None:
                # gone from the tree meanwhile (the changes feed may not say so again)
                del state.retry[fid]
                out += self._remove(fid, state)
                continue
            pending.append(f)
        if pending:
            out += await self._import_files(pending, state, force=True, discovered=None)
        return out

    # -- applying changes ----------------------------------------------------------------------

    def _in_tree(self, f: Mapping[str, Any], state: _State) -> str | None:
        """The parent folder of ``f`` inside the tree, or None when ``f`` is outside it."""
        parents = f.get("parents")
        if isinstance(parents, list):
            for p in parents:
                if p in state.folders and p != f.get("id"):
                    return str(p)
        return None

    async def _apply_changes(self, changes: list[Any], state: _State) -> AsyncIterator[list[Item]]:
        pending: list[dict[str, Any]] = []  # changed files in the tree, fetched together
        renamed: list[str] = []
        for change in changes:
            if not isinstance(change, Mapping):
                self.ctx.dead_letter("a change that is not an object", payload=change)
                continue
            if change.get("changeType", "file") != "file":
                continue  # shared-drive metadata changes
            fid = change.get("fileId")
            f = change.get("file")
            if not isinstance(fid, str):
                self.ctx.dead_letter("a change without fileId", payload=change)
                continue
            if change.get("removed") or not isinstance(f, dict) or f.get("trashed"):
                if fid == self.root:
                    yield self._remove_root(state)
                else:
                    yield self._remove(fid, state)
                continue
            if fid == self.root:
                name = str(f.get("name", ""))
                if state.folders[self.root][0] != name:
                    state.folders[self.root] = [name, None]
                    renamed.append(fid)
                header = self._map_safely(f, state)
                if header is not None:
                    yield [header]
                continue
            parent = self._in_tree(f, state)
            if parent is None:
                if fid in state.files or fid in state.folders:
                    yield self._remove(fid, state)  # moved out of the tree
                continue
            if f.get("mimeType") == FOLDER:
                known = state.folders.get(fid)
                state.folders[fid] = [str(f.get("name", "")), parent]
                header = self._map_safely(f, state)
                if header is not None:
                    yield [header]
                if known is None:  # a new folder, or one moved in: import what it holds
                    async for items in self._walk(fid, state):
                        yield items
                elif known[0] != f.get("name"):
                    renamed.append(fid)
                continue
            pending.append(f)
        if pending:
            yield await self._import_files(pending, state, force=False, discovered=None)
        for folder in renamed:
            # the direct files carry the folder's name as their collection: import them again
            token: str | None = None
            while True:
                files, token = await self._list_page(folder, token)
                direct = [x for x in files if isinstance(x, dict) and x.get("mimeType") != FOLDER]
                items = await self._import_files(direct, state, force=True, discovered=None)
                if items:
                    yield items
                if token is None:
                    break

    def _remove(self, fid: str, state: _State) -> list[Item]:
        """Tombstones for ``fid`` and, for a folder, everything known below it."""
        out: list[Item] = []
        state.retry.pop(fid, None)
        if fid in state.files:
            del state.files[fid]
            out.append(Tombstone(fid))
        if fid not in state.folders:
            return out
        # the folders below: one pass over the folder entries, then their closure in memory
        children: dict[str, list[str]] = {}
        for k, (_name, parent) in state.folders.items():
            if parent is not None:
                children.setdefault(parent, []).append(k)
        gone = {fid}
        stack = [fid]
        while stack:
            for k in children.get(stack.pop(), ()):
                if k not in gone:
                    gone.add(k)
                    stack.append(k)
        del children
        for k in sorted(gone):
            del state.folders[k]
            out.append(Tombstone(k))
        for k in [k for k, (_fp, parent) in state.files.items() if parent in gone]:
            del state.files[k]
            out.append(Tombstone(k))
        for k in [k for k, parent in state.retry.items() if parent in gone]:
            del state.retry[k]
        return out

    def _remove_root(self, state: _State) -> list[Item]:
        """The root folder itself was trashed or deleted: everything goes."""
        out: list[Item] = [Tombstone(k) for k in sorted(state.folders)]
        out += [Tombstone(k) for k in sorted(state.files)]
        state.ledger.clear()
        state.folders[self.root] = ["", None]  # keep the root so it comes back if restored
        state.retry = {}
        return out

    # -- importing files -----------------------------------------------------------------------

    async def _import_files(
        self, files: list[Any], state: _State, *, force: bool, discovered: list[str] | None
    ) -> list[Item]:
        """Map a page of File resources; fetch the content of those that changed, concurrently."""
        docs: list[Item] = []
        to_fetch: list[tuple[dict[str, Any], str, str]] = []
        for f in files:
            if not isinstance(f, dict) or not isinstance(f.get("id"), str):
                self.ctx.dead_letter("a file entry without an id", payload=f)
                continue
            fid = f["id"]
            parent = self._in_tree(f, state)
            if parent is None:
                continue  # listed under a folder we no longer track (moved meanwhile)
            if f.get("mimeType") == FOLDER:
                if fid in state.folders and discovered is not None and fid in discovered:
                    continue
                state.folders[fid] = [str(f.get("name", "")), parent]
                header = self._map_safely(f, state)
                if header is not None:
                    docs.append(header)
                if discovered is not None:
                    discovered.append(fid)
                continue
            fp = file_fingerprint(f)
            if not force and state.files.get(fid) == [fp, parent]:
                self.ctx.skipped_unchanged()
                continue
            to_fetch.append((f, fp, parent))
        if to_fetch:
            fns: list[Callable[[], Awaitable[Document | _Retry | None]]] = [
                functools.partial(self._document, f, state) for f, _fp, _p in to_fetch
            ]
            results = await _gather(fns, self.api.slots)
            for (f, fp, parent), doc in zip(to_fetch, results, strict=True):
                # the point where a file is done: entered in state.files (or dropped from it)
                if isinstance(doc, _Retry):
                    # not done: its old row and fingerprint stay, the next run fetches it again
                    state.retry[f["id"]] = parent
                    continue
                state.retry.pop(f["id"], None)
                if doc is not None:
                    state.files[f["id"]] = [fp, parent]
                    docs.append(doc)
                elif f["id"] in state.files:  # no longer importable (skipped): drop its row
                    del state.files[f["id"]]
                    docs.append(Tombstone(f["id"]))
        return docs

    async def _document(self, f: dict[str, Any], state: _State) -> Document | _Retry | None:
        """The record of one file (content included), None (skipped or dead-lettered), or
        :class:`_Retry` when its content fetch failed for a transient reason."""
        try:
            content, fmt, note = await self._content(f)
            return self._map(f, state, content, fmt, note)
        except HTTPError as exc:
            if not is_transient(exc):
                raise
            self.ctx.retry_next_run(exc, source_id=f.get("id"))
            return _Retry()
        except _Skip:
            self.ctx.skipped()
            return None
        except _Bad as exc:
            self.ctx.dead_letter(str(exc), payload=f, source_id=f.get("id"))
            return None

    async def _content(self, f: Mapping[str, Any]) -> tuple[str | None, str | None, str | None]:
        """``(text, format, note)``: the text and the MIME type it came as, or why there is none."""
        fid = f["id"]
        mime = f.get("mimeType")
        if not isinstance(mime, str) or not isinstance(f.get("name"), str):
            raise _Bad("the file has no name or mimeType")
        formats = EXPORT_FORMATS.get(mime)
        if formats is not None:
            for fmt in formats:
                try:
                    resp = await self.api.get(
                        f"{_DRIVE}/files/{fid}/export", {"mimeType": fmt}, expect="bytes"
                    )
                except ClientError as exc:
                    if exc.status == 403:  # exportSizeLimitExceeded and friends
                        return None, None, "export_refused"
                    if exc.status == 400:  # this format is not offered: try the next
                        continue
                    raise
                except NotFoundError:
                    raise _Skip("deleted while syncing") from None
                return self._decode(resp.content, fmt)
            return None, None, "no_export_format"
        if mime in TEXT_MIME_TYPES or _extension(f) in TEXT_EXTENSIONS:
            size = _int(f.get("size"))
            if size is not None and size > self.cfg.max_export_bytes:
                return None, None, "too_large"
            md5 = f.get("md5Checksum")
            url = f"{_DRIVE}/files/{fid}"
            try:
                # a body that is not the size and MD5 Drive states is retried, never stored
                resp = await fetch_verified(
                    self.api.svc,
                    lambda: self.api.get(
                        url, {"alt": "media", "supportsAllDrives": True}, expect="bytes"
                    ),
                    lambda r: size_and_digest_problem(
                        r.content, size=size, md5=md5 if isinstance(md5, str) else None
                    ),
                    what=f"the download of {fid}",
                )
            except NotFoundError:
                raise _Skip("deleted while syncing") from None
            except ClientError as exc:
                if exc.status == 403:  # fileNotDownloadable, abuse flags
                    return None, None, "download_refused"
                raise
            return self._decode(resp.content, mime)
        if mime != SHORTCUT and self.cfg.binaries == "skip":
            raise _Skip("binary")
        return None, None, "metadata_only"

    def _decode(self, raw: bytes, fmt: str) -> tuple[str | None, str | None, str | None]:
        if len(raw) > self.cfg.max_export_bytes:
            return None, None, "too_large"
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise _Bad(f"the {fmt} content is not valid UTF-8 (byte {exc.start})") from None
        return text, fmt, None

    # -- mapping -------------------------------------------------------------------------------

    def _map_safely(self, f: Mapping[str, Any], state: _State) -> Document | None:
        try:
            return self._map(f, state, None, None, None)
        except _Bad as exc:
            self.ctx.dead_letter(str(exc), payload=f, source_id=f.get("id"))
            return None

    def _map(
        self,
        f: Mapping[str, Any],
        state: _State,
        text: str | None,
        fmt: str | None,
        note: str | None,
    ) -> Document:
        fid = f.get("id")
        name = f.get("name")
        mime = f.get("mimeType")
        if not isinstance(fid, str) or not isinstance(name, str) or not isinstance(mime, str):
            raise _Bad("the file lacks id, name or mimeType")
        try:
            created = parse_timestamp(f.get("createdTime"))
            modified = parse_timestamp(f.get("modifiedTime"))
        except (ValueError, TypeError) as exc:
            raise _Bad(f"createdTime/modifiedTime is not RFC 3339: {exc}") from None
        is_folder = mime == FOLDER
        is_root = fid == self.root
        parent = None if is_root else self._in_tree(f, state)
        meta: dict[str, Any] = {"google_drive_id": fid, "google_drive_mime_type": mime}
        if parent:
            meta["google_drive_parent_id"] = parent
        drive_id = f.get("driveId")
        if drive_id:
            meta["google_drive_drive_id"] = drive_id
        for key, src in (
            ("google_drive_md5", "md5Checksum"),
            ("google_drive_size", "size"),
            ("google_drive_description", "description"),
        ):
            value = f.get(src)
            if value not in (None, ""):
                meta[key] = str(value)
        modifier = _user_name(f.get("lastModifyingUser"))
        if modifier:
            meta["google_drive_last_modifying_user"] = modifier
        if fmt:
            meta["google_drive_content_format"] = fmt
        if note:
            meta["google_drive_content"] = note
        owners = f.get("owners")
        author = _user_name(owners[0]) if isinstance(owners, list) and owners else None
        tags = [_KIND_TAGS.get(mime) or ("folder" if is_folder else "")]
        if not tags[0]:
            if mime == SHORTCUT:
                tags = ["shortcut"]
            elif fmt:
                tags = ["text"]
            else:
                tags = ["binary"]
        if f.get("starred"):
            tags.append("starred")
        doc = Document(
            source_id=fid,
            title=name,
            text_content=text,
            source_url=f.get("webViewLink") if isinstance(f.get("webViewLink"), str) else None,
            author=author or modifier,
            created_at=created,
            updated_at=modified,
            source_updated_at=modified,
            tags=tags,
            custom_metadata=meta,
            source_type=self.st,
        )
        if is_folder:
            doc.record_type = "collection_header"
            doc.collection = name
            doc.collection_id = fid
            doc.collection_id_type = "google_drive_folder"
        elif parent:
            doc.collection = str(state.folders[parent][0] or "")
            doc.collection_id = parent
            doc.collection_id_type = "google_drive_folder"
        if parent:
            target = self.source.record_uuid(parent)
            doc.relate("parent", target)
            doc.relate("member_of", target)
        shortcut = f.get("shortcutDetails")
        if isinstance(shortcut, Mapping) and isinstance(shortcut.get("targetId"), str):
            meta["google_drive_shortcut_target"] = shortcut["targetId"]
            doc.relate("reference", self.source.record_uuid(shortcut["targetId"]))
        return doc


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
