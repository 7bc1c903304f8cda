"""GitHub: repository files, issues, pull requests and issue comments over the REST API.

Each repository is split into partitions that run concurrently (up to ``max_concurrency``), each
with its own cursor:

* ``"<owner>/<repo>:files"`` - the files of one ref, listed with the git trees API
  (``GET /repos/{o}/{r}/git/trees/{ref}?recursive=1``; a ``truncated`` listing falls back to walking
  the tree one folder at a time) and fetched as blobs (``GET /repos/{o}/{r}/git/blobs/{sha}``,
  base64). Text files only: binary files and files over ``max_file_size`` are skipped and counted.
  Each path's blob sha is kept in the state's item store (the cursor keeps only the tree read to
  the end and counts): a later sync fetches only blobs whose sha changed and turns paths gone
  from the tree into tombstones; an unchanged tree is not compared at all.
* ``"<owner>/<repo>:issues"`` (``":pulls"`` when only pull requests are wanted) - issues and pull
  requests from ``GET /repos/{o}/{r}/issues`` (PRs carry a ``pull_request`` key), incremental on
  ``updated_at`` with ``since`` + ``sort=updated&direction=asc``, and their comments (fetched per
  issue when the issue changed, plus a repo-wide ``/issues/comments?since=`` pass for edits).

Every repository is also a ``collection_header`` record (source id ``"<owner>/<repo>"``); files,
issues and comments are ``member_of`` it, comments are ``child`` of their issue and the issue
lists them as ``child`` records (``parent`` on the comment). See ``docs/connectors/github.md``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

import anyio
from pydantic import Field, field_validator, model_validator

from cfstream.contract.context import SourceContext
from cfstream.errors import ConfigError, HTTPError, NotFoundError, ResponseFormatError
from cfstream.http import (
    BearerAuth,
    Gate,
    LinkHeaderPaginator,
    NoAuth,
    Problem,
    RateLimit,
    RawResponse,
    ResponsePolicy,
    Service,
    join_message,
    parse_reset,
    parse_retry_after,
    register_policy,
)
from cfstream.records import Checkpoint, Document, Item, Tombstone
from cfstream.secrets import Secret
from cfstream.sources._files import matches_any
from cfstream.sources._items import ItemLedger
from cfstream.sources.base import (
    Source,
    SourceConfig,
    SourceOutput,
    fetch_verified,
    is_transient,
    require_list,
    size_and_digest_problem,
)
from cfstream.sources.options import validate_options

__all__ = ("GitHubConfig", "GitHubSource")

ContentKind = Literal["files", "issues", "pulls"]

_API_HEADERS = {
    "Accept": "application/vnd.github+json",
    "X-GitHub-Api-Version": "2022-11-28",
}


def _default_content() -> list[ContentKind]:
    return ["files", "issues"]


_AUTH_HINT = (
    "check the GitHub token (the source's `token` option): it must be valid and not expired, and "
    "grant read access to the repository - classic tokens need scope `repo` for private "
    "repositories (`public_repo` is enough for public ones); fine-grained tokens need Contents, "
    "Issues, Pull requests and Metadata read access"
)
#: blob mode of symbolic links in git trees
_SYMLINK_MODE = "120000"
_BINARY_SNIFF = 8192


class GitHubPolicy(ResponsePolicy):
    """GitHub REST: primary limit via ``x-ratelimit-remaining``/``-reset``, secondary via ``retry-after``.

    ``x-ratelimit-remaining: 0`` closes the service until ``x-ratelimit-reset`` (epoch seconds). A
    403/429 with ``retry-after`` is a secondary limit; one with remaining 0 waits for the reset; a
    403 whose message mentions a rate limit but gives neither waits 60 s as GitHub's docs ask.
    """

    name = "github"
    default_auth_hint = (
        "check the {service} token and that it has scope repo (or read access to this repository)"
    )

    def auth_hint(self, service: str, raw: RawResponse, data: Any) -> str:
        """Names the scopes GitHub says the endpoint accepts (``X-Accepted-OAuth-Scopes``)."""
        accepted = raw.header("X-Accepted-OAuth-Scopes")
        if accepted and not self.custom_hint:
            return f"check the {service} token and that it has scope {accepted}"
        return super().auth_hint(service, raw, data)

    def gates(self, raw: RawResponse, now: float) -> list[Gate]:
        """Close the service until the reset when the primary budget is spent."""
        if raw.header("x-ratelimit-remaining") == "0":
            wait = parse_reset(raw.header("x-ratelimit-reset"), now=now)
            if wait:
                return [
                    Gate(
                        now + wait,
                        None,
                        "x-ratelimit-remaining is 0; waiting for x-ratelimit-reset",
                    )
                ]
        return []

    def inspect(self, raw: RawResponse, data: Any, service: str, now: float) -> Problem | None:
        """403/429 rate limits (primary and secondary)."""
        if raw.status not in (403, 429):
            return None
        detail = self.error_message(data)
        retry_after = parse_retry_after(raw.header("retry-after"), now=now)
        if retry_after is not None:
            return self.rate_limited(
                raw, now, join_message("secondary rate limit", detail), retry_after=retry_after
            )
        if raw.header("x-ratelimit-remaining") == "0":
            wait = parse_reset(raw.header("x-ratelimit-reset"), now=now)
            return self.rate_limited(
                raw, now, join_message("primary rate limit", detail), retry_after=wait or 60.0
            )
        if "rate limit" in detail.lower():
            return self.rate_limited(
                raw, now, join_message("secondary rate limit", detail), retry_after=60.0
            )
        return None


register_policy(GitHubPolicy)


class GitHubConfig(SourceConfig):
    """Settings of :class:`GitHubSource` (the keys a YAML config may set)."""

    owner: str | None = Field(
        default=None,
        description="Owner (user or organisation) of `repo`, or of bare `repos` names.",
    )
    repo: str | None = Field(
        default=None, description="One repository: `name` (with `owner`) or `owner/name`."
    )
    repos: list[str] = Field(
        default_factory=list,
        description="Several repositories: `owner/name`, or bare names with `owner`.",
    )
    token: Secret | None = Field(
        default=None,
        description="A GitHub token (sent as `Authorization: Bearer`). None: unauthenticated, "
        "public repositories only, 60 requests per hour.",
    )
    base_url: str = Field(
        default="https://api.github.com",
        description="The REST API root; `https://HOST/api/v3` for GitHub Enterprise Server.",
    )
    ref: str | None = Field(
        default=None, description="Branch, tag or commit of the files; default: the default branch."
    )
    path: str | None = Field(
        default=None, description="Only files under this folder (e.g. `docs`)."
    )
    include: list[str] = Field(
        default_factory=list,
        description="Globs over repository paths that files must match (`**/*.md`); empty: all.",
    )
    exclude: list[str] = Field(
        default_factory=list, description="Globs over repository paths to leave out."
    )
    content: list[ContentKind] = Field(
        default_factory=lambda: _default_content(),
        description="What to import: `files`, `issues`, `pulls`.",
    )
    state: Literal["open", "closed", "all"] = Field(
        default="all", description="Issue / pull request state to import."
    )
    labels: list[str] = Field(
        default_factory=list,
        description="Only issues / pull requests carrying all of these labels.",
    )
    since: datetime | None = Field(
        default=None,
        description="Only issues / pull requests updated at or after this time (first sync).",
    )
    comments: bool = Field(default=True, description="Import issue and pull request comments.")
    max_file_size: int = Field(
        default=1_000_000, ge=1, description="Files larger than this many bytes are skipped."
    )
    per_page: int = Field(default=100, ge=1, le=100, description="Items per page (max 100).")
    requests_per_second: float | None = Field(
        default=15.0,
        gt=0,
        description="Proactive request budget (GitHub's secondary limit is about 900 per minute); "
        "None: only the concurrency cap and GitHub's own rate-limit headers limit the pace.",
    )
    max_in_flight: int = Field(default=8, ge=1, description="Requests in flight at once.")
    checkpoint_every: int = Field(
        default=200, ge=1, description="Fetched files per checkpoint of a files partition."
    )
    max_concurrency: int = Field(default=4, ge=1, description="Partitions read at once.")

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("path")
    @classmethod
    def _clean_path(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip("/")
        return value or None

    @model_validator(mode="after")
    def _check_repos(self) -> GitHubConfig:
        if not self.repo and not self.repos:
            raise ValueError("give `repo` (with `owner`, or as `owner/name`) or `repos`")
        for name in self.repo_names():
            owner, _, repo = name.partition("/")
            if not owner or not repo or "/" in repo:
                raise ValueError(
                    f"repository {name!r} is not `owner/name` (set `owner` for bare names)"
                )
        if not self.content:
            raise ValueError("`content` needs at least one of files, issues, pulls")
        return self

    def repo_names(self) -> list[str]:
        """Every repository as ``owner/name``, in order, without duplicates."""
        out: list[str] = []
        for name in ([self.repo] if self.repo else []) + list(self.repos):
            full = name if "/" in name or not self.owner else f"{self.owner}/{name}"
            if full not in out:
                out.append(full)
        return out


@dataclass(frozen=True, slots=True)
class _Repo:
    owner: str
    name: str

    @property
    def full(self) -> str:
        return f"{self.owner}/{self.name}"

    @property
    def api(self) -> str:
        return f"/repos/{self.owner}/{self.name}"


def _ts(value: Any) -> datetime | None:
    """A GitHub timestamp (``2011-04-22T13:33:48Z``) as an aware datetime; ValueError if bad."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"timestamp {value!r} is not a string")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _stamp(value: Any) -> str | None:
    """``value`` as a normalised ``YYYY-MM-DDTHH:MM:SSZ`` string (comparable), None if invalid."""
    try:
        parsed = _ts(value)
    except ValueError:
        return None
    return _iso(parsed) if parsed is not None else None


def _login(user: Any) -> str | None:
    if isinstance(user, Mapping):
        login = user.get("login")
        return login if isinstance(login, str) else None
    return None


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} is {type(value).__name__}, expected a string")
    return value


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} is {value!r}, expected an integer")
    return value


class _Frontier:
    """The newest ``updated_at`` seen and the ids that carry it; ``base`` is where a sync began."""

    def __init__(self, since: str | None, at: set[int]) -> None:
        self.base, self.base_at = since, frozenset(at)
        self.since, self.at = since, set(at)

    def bump(self, stamp: str | None, key: int) -> None:
        """Take ``stamp`` of item ``key`` into account."""
        if stamp is None:
            return
        if self.since is None or stamp > self.since:
            self.since, self.at = stamp, {key}
        elif stamp == self.since:
            self.at.add(key)

    def seen_before(self, stamp: str | None, key: int) -> bool:
        """True when the last sync already had this version of item ``key``."""
        if stamp is None or self.base is None:
            return False
        return stamp < self.base or (stamp == self.base and key in self.base_at)


def _legacy_file_entries(cursor: Mapping[str, Any], trusted: bool) -> dict[str, Any] | None:
    """The entries of a files cursor saved before the item store (``files``/``binary`` maps of
    path to sha), as item store entries; None for a current cursor (which has no maps)."""
    files, binary = cursor.get("files"), cursor.get("binary")
    if not isinstance(files, Mapping) and not isinstance(binary, Mapping):
        return None
    out: dict[str, Any] = {}
    if isinstance(binary, Mapping) and trusted:
        out.update((str(p), ["b", str(s)]) for p, s in binary.items())
    if isinstance(files, Mapping):
        out.update((str(p), ["f", str(s)]) for p, s in files.items())
    return out


def _count(cursor: Mapping[str, Any], key: str, legacy: str) -> int:
    """A count kept in the files cursor (or the size of the old cursor's map)."""
    value = cursor.get(key)
    if isinstance(value, int):
        return value
    old = cursor.get(legacy)
    return len(old) if isinstance(old, Mapping) else 0


def _file_entry(value: Any) -> tuple[str | None, str | None]:
    """(``"f"`` or ``"b"``, sha) of a files entry; (None, None) for anything else."""
    if isinstance(value, list) and len(value) == 2 and value[0] in ("f", "b"):
        return str(value[0]), str(value[1])
    return None, None


class GitHubSource(Source):
    """Files, issues, pull requests and comments of GitHub repositories.

    Example::

        GitHubSource(owner="octocat", repo="docs", token=cf.env("GITHUB_TOKEN"),
                     include=["**/*.md"], content=["files", "issues", "pulls"])

    Every option is documented on :class:`GitHubConfig` and in ``docs/connectors/github.md``.

    :raises ~cfstream.errors.ConfigError: an option is invalid (the message names it).
    """

    source_type: ClassVar[str] = "github"
    uses_http: ClassVar[bool] = True
    config_model: ClassVar[type[SourceConfig] | None] = GitHubConfig
    required_scopes: ClassVar[tuple[str, ...]] = (
        "classic token: repo (private repositories) or public_repo (public ones)",
        "fine-grained token: Contents, Issues, Pull requests and Metadata: read",
    )

    def __init__(self, *, name: str | None = None, **options: Any) -> None:
        self.config: GitHubConfig = validate_options(GitHubConfig, self.source_type, options)
        super().__init__(name=name, max_concurrency=self.config.max_concurrency)
        self.repos = [_Repo(*n.split("/", 1)) for n in self.config.repo_names()]

    # -- partitions ------------------------------------------------------------------------------

    @property
    def _issue_kind(self) -> str | None:
        content = self.config.content
        if "issues" in content:
            return "issues"
        if "pulls" in content:
            return "pulls"
        return None

    async def partitions(self, ctx: SourceContext) -> Sequence[str]:
        """``owner/repo:files`` and ``owner/repo:issues`` (or ``:pulls``) for each repository."""
        out: list[str] = []
        for repo in self.repos:
            if "files" in self.config.content:
                out.append(f"{repo.full}:files")
            if self._issue_kind:
                out.append(f"{repo.full}:{self._issue_kind}")
        return out

    async def authenticate(self, ctx: SourceContext) -> None:
        """``GET /repos/{owner}/{repo}`` for each repository: an AuthError (or NotFoundError)
        says what to check before a sync starts."""
        svc = self._service(ctx)
        for repo in self.repos:
            await svc.get(repo.api)

    def _service(self, ctx: SourceContext) -> Service:
        cfg = self.config
        rps = cfg.requests_per_second
        return ctx.http.service(
            "github",
            base_url=cfg.base_url,
            auth=BearerAuth(cfg.token) if cfg.token is not None else NoAuth(),
            rate=RateLimit(per_second=rps, burst=max(1, int(rps))) if rps else None,
            headers=_API_HEADERS,
            concurrency=cfg.max_in_flight,
            policy=GitHubPolicy(auth_hint=_AUTH_HINT),
        )

    async def read(
        self, partition: str, cursor: Mapping[str, Any] | None, ctx: SourceContext
    ) -> AsyncIterator[SourceOutput]:
        """Read one partition (``owner/repo:files|issues|pulls``) from ``cursor``."""
        full, _, kind = partition.rpartition(":")
        owner, _, name = full.partition("/")
        if not owner or not name or kind not in ("files", "issues", "pulls"):
            raise ConfigError(f"github: unknown partition {partition!r}")
        repo = _Repo(owner, name)
        svc = self._service(ctx)
        if kind == "files":
            inner = self._read_files(svc, repo, cursor or {}, ctx, partition)
        else:
            inner = self._read_issues(svc, repo, cursor, ctx)
        async with contextlib.aclosing(inner) as items:
            async for out in items:
                yield out

    # -- shared mapping --------------------------------------------------------------------------

    def _sid(self, repo: _Repo, kind: str, key: str | int) -> str:
        return f"{repo.full}:{kind}:{key}"

    def _uuid(self, source_id: str) -> str:
        return self.record_uuid(source_id)

    def _member(self, doc: Document, repo: _Repo) -> None:
        header = self._uuid(repo.full)
        doc.collection = repo.full
        doc.collection_id = header
        doc.collection_id_type = "uuid"
        doc.relate("member_of", header, title=repo.full)

    def map_repository(self, repo: _Repo, info: Mapping[str, Any]) -> Document:
        """The repository's ``collection_header`` record."""
        topics = info.get("topics")
        doc = Document(
            source_id=repo.full,
            title=str(info.get("full_name") or repo.full),
            text_content=str(info.get("description") or ""),
            source_type=self.source_type,
            source_url=info.get("html_url") if isinstance(info.get("html_url"), str) else None,
            author=_login(info.get("owner")),
            created_at=_ts(info.get("created_at")),
            updated_at=_ts(info.get("updated_at")),
            collection=repo.full,
            record_type="collection_header",
            tags=[t for t in topics if isinstance(t, str)] if isinstance(topics, list) else None,
            custom_metadata={
                "github_repo": repo.full,
                "github_kind": "repository",
                "github_id": str(info.get("id", "")),
                "github_default_branch": str(info.get("default_branch") or ""),
                "github_private": "true" if info.get("private") else "false",
                "github_language": str(info.get("language") or ""),
            },
        )
        doc.source_updated_at = doc.updated_at
        return doc

    async def _repo_info(self, svc: Service, repo: _Repo) -> Mapping[str, Any]:
        r = await svc.get(repo.api)
        if not isinstance(r.data, Mapping):
            raise ResponseFormatError(
                "the repository answer is not a JSON object", service="github", url=repo.api
            )
        return r.data

    def _header(
        self,
        repo: _Repo,
        info: Mapping[str, Any],
        cursor: Mapping[str, Any] | None,
        ctx: SourceContext,
    ) -> tuple[Document | None, str]:
        """The header record (None when the cursor says it is unchanged) and its hash."""
        doc = self.map_repository(repo, info)
        digest = doc.compute_hash()
        if cursor and cursor.get("header") == digest:
            ctx.skipped_unchanged(1)
            return None, digest
        return doc, digest

    def _header_partition(self) -> str:
        return "files" if "files" in self.config.content else (self._issue_kind or "")

    # -- files -----------------------------------------------------------------------------------

    def _file_wanted(self, path: str) -> bool:
        cfg = self.config
        if cfg.path and not (path == cfg.path or path.startswith(cfg.path + "/")):
            return False
        if cfg.include and not matches_any(path, cfg.include):
            return False
        return not (cfg.exclude and matches_any(path, cfg.exclude))

    def _filter_key(self, ref: str) -> str:
        cfg = self.config
        raw = repr((ref, cfg.path, cfg.include, cfg.exclude, cfg.max_file_size))
        return hashlib.blake2b(raw.encode(), digest_size=8).hexdigest()

    async def _tree(
        self, svc: Service, repo: _Repo, ref: str, ctx: SourceContext
    ) -> tuple[str, list[Mapping[str, Any]]]:
        """The root tree sha and every entry of ``ref`` (recursive; walks folders if truncated)."""
        r = await svc.get(f"{repo.api}/git/trees/{ref}", params={"recursive": 1})
        data = r.data
        if not isinstance(data, Mapping) or not isinstance(data.get("tree"), list):
            raise ResponseFormatError(
                "the git tree answer has no `tree` list", service="github", url=repo.api
            )
        root = str(data.get("sha") or "")
        if not data.get("truncated"):
            return root, [e for e in data["tree"] if isinstance(e, Mapping)]
        ctx.logger.warning(
            "github: the tree of %s@%s is too large for one listing (truncated); walking it "
            "folder by folder",
            repo.full,
            ref,
        )
        entries: list[Mapping[str, Any]] = []
        pending: list[tuple[str, str]] = [("", root)]
        prefix = self.config.path
        while pending:
            folder, sha = pending.pop()
            sub = await svc.get(f"{repo.api}/git/trees/{sha}")
            items = sub.data.get("tree") if isinstance(sub.data, Mapping) else None
            if not isinstance(items, list):
                # never an empty folder: its files would turn into tombstones
                raise ResponseFormatError(
                    f"the git tree of {folder or '/'} has no `tree` list",
                    service="github",
                    url=repo.api,
                )
            for e in items:
                if not isinstance(e, Mapping) or not isinstance(e.get("path"), str):
                    continue
                path = f"{folder}{e['path']}"
                full = {**e, "path": path}
                if e.get("type") == "tree":
                    inside = (
                        not prefix
                        or (prefix + "/").startswith(path + "/")
                        or (path + "/").startswith(prefix + "/")
                    )
                    if inside:
                        pending.append((path + "/", str(e.get("sha"))))
                entries.append(full)
        return root, entries

    async def _read_files(
        self,
        svc: Service,
        repo: _Repo,
        cursor: Mapping[str, Any],
        ctx: SourceContext,
        partition: str,
    ) -> AsyncGenerator[SourceOutput, None]:
        """The files partition. Each path's blob sha lives in the item store (``["f", sha]``
        for a file imported, ``["b", sha]`` for one skipped as binary); the cursor keeps the
        tree that was read to the end and how many of each it held."""
        cfg = self.config
        info = await self._repo_info(svc, repo)
        header: str | None = None
        if self._header_partition() == "files":
            hdoc, header = self._header(repo, info, cursor, ctx)
            if hdoc is not None:
                yield [hdoc]
        ref = cfg.ref or str(info.get("default_branch") or "main")
        web = str(info.get("html_url") or f"https://github.com/{repo.full}")
        filter_key = self._filter_key(ref)
        trusted = cursor.get("filter") == filter_key
        ledger = ItemLedger(ctx, partition, legacy=_legacy_file_entries(cursor, trusted))
        n_files = _count(cursor, "n_files", "files")
        n_binary = _count(cursor, "n_binary", "binary") if trusted else 0
        #: paths whose blob failed for a transient reason: the tree is not done until they are in
        retry: set[str] = set()
        root = ""

        def snapshot(done: bool) -> Checkpoint:
            return Checkpoint(
                {
                    "ref": ref,
                    "header": header,
                    "filter": filter_key,
                    "tree": root if done and not retry else None,
                    "n_files": n_files,
                    "n_binary": n_binary,
                },
                items=ledger.changes(),
            )

        root, entries = await self._tree(svc, repo, ref, ctx)
        if trusted and root and cursor.get("tree") == root:
            ctx.skipped_unchanged(n_files)
            ctx.skipped(n_binary)
            if (header is not None and cursor.get("header") != header) or ledger.migrating:
                yield snapshot(True)
            return

        wanted: dict[str, Mapping[str, Any]] = {}
        too_big = 0
        for e in entries:
            path = e.get("path")
            if e.get("type") != "blob" or not isinstance(path, str) or not self._file_wanted(path):
                continue
            if e.get("mode") == _SYMLINK_MODE:
                continue
            size = e.get("size")
            if isinstance(size, int) and size > cfg.max_file_size:
                too_big += 1
                continue
            wanted[path] = e
        if too_big:
            ctx.skipped(too_big)

        # one pass over the saved entries (streamed from the item store) against the tree
        gone: list[str] = []
        todo: list[tuple[str, str]] = []
        seen: set[str] = set()
        unchanged = skipped_binary = n_files = n_binary = 0
        for path, value in ledger.items():
            kind, old_sha = _file_entry(value)
            listed = wanted.get(path)
            if listed is None:
                ledger.delete(path)
                if kind == "f":
                    gone.append(path)
                continue
            seen.add(path)
            sha = str(listed.get("sha") or "")
            if kind == "f":
                n_files += 1
                if trusted and old_sha == sha:
                    unchanged += 1
                    continue
            elif kind == "b" and trusted:
                n_binary += 1
                if old_sha == sha:
                    skipped_binary += 1
                    continue
            elif kind is not None:  # skipped as binary under other options: look again
                ledger.delete(path)
            todo.append((path, sha))
        todo.extend((p, str(e.get("sha") or "")) for p, e in wanted.items() if p not in seen)
        todo.sort()
        del seen
        tombstones: list[Item] = [
            Tombstone(self._sid(repo, "file", p), self.source_type) for p in sorted(gone)
        ]
        if unchanged:
            ctx.skipped_unchanged(unchanged)
        if skipped_binary:
            ctx.skipped(skipped_binary)
        if tombstones:
            yield [*tombstones, snapshot(not todo)]
        elif not todo:
            yield snapshot(True)

        step = cfg.checkpoint_every
        for start in range(0, len(todo), step):
            chunk = todo[start : start + step]
            blobs = await self._fetch_blobs(svc, repo, chunk)
            out: list[Item] = []
            skipped = 0
            for (path, sha), blob in zip(chunk, blobs, strict=True):
                sid = self._sid(repo, "file", path)
                if isinstance(blob, BaseException):
                    if is_transient(blob):
                        # not done: its entry keeps its old sha (or none), the tree stays open,
                        # so the next run fetches this blob again
                        retry.add(path)
                        ctx.retry_next_run(f"blob {sha} of {path}: {blob}", source_id=sid)
                    else:
                        ctx.dead_letter(
                            f"cannot fetch blob {sha} of {path}: {blob}",
                            {"path": path, "sha": sha},
                            source_id=sid,
                        )
                    continue
                try:
                    text = self._decode_blob(blob, path)
                except ValueError as exc:
                    ctx.dead_letter(str(exc), _blob_payload(blob), source_id=sid)
                    continue
                was, _ = _file_entry(ledger.get(path))
                if text is None:  # binary
                    skipped += 1
                    ledger.put(path, ["b", sha])
                    n_binary += was != "b"
                    if was == "f":
                        n_files -= 1
                        out.append(Tombstone(sid, self.source_type))
                    continue
                out.append(self.map_file(repo, path, sha, wanted[path], text, ref, web))
                ledger.put(path, ["f", sha])
                n_files += was != "f"
                n_binary -= was == "b"
            if skipped:
                ctx.skipped(skipped)
            last = start + step >= len(todo)
            out.append(snapshot(last))
            yield out
            if ctx.stopping and not last:
                return

    async def _fetch_blobs(
        self, svc: Service, repo: _Repo, chunk: Sequence[tuple[str, str]]
    ) -> list[Mapping[str, Any] | BaseException]:
        results: list[Mapping[str, Any] | BaseException] = [
            NotFoundError("not fetched", service="github")
        ] * len(chunk)

        async def fetch(i: int, sha: str) -> None:
            url = f"{repo.api}/git/blobs/{sha}"
            try:
                r = await fetch_verified(
                    svc, lambda: svc.get(url), lambda r: self._blob_problem(r.data, sha), what=url
                )
            except NotFoundError as exc:  # gone between the tree listing and now
                results[i] = exc
                return
            except HTTPError as exc:
                if not is_transient(exc):
                    raise
                results[i] = exc
                return
            results[i] = r.data

        async with anyio.create_task_group() as tg:
            for i, (_path, sha) in enumerate(chunk):
                tg.start_soon(fetch, i, sha)
        return results

    @staticmethod
    def _blob_bytes(blob: Mapping[str, Any], path: str) -> bytes:
        """The blob's bytes; ValueError when it has no content or an unknown encoding."""
        encoding = blob.get("encoding")
        content = blob.get("content")
        if not isinstance(content, str):
            raise ValueError(f"blob of {path} has no `content` string")
        if encoding == "base64":
            try:
                return base64.b64decode(content.replace("\n", ""), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ValueError(f"blob of {path} is not valid base64: {exc}") from None
        if encoding in ("utf-8", "utf8"):
            return content.encode()
        raise ValueError(f"blob of {path} has unknown encoding {encoding!r}")

    def _blob_problem(self, blob: Any, sha: str) -> str | None:
        """Why a blob answer is not the blob ``sha`` (retried as a transient fault), or None.

        A body that is not a JSON object, content that does not decode, or bytes whose size or git
        sha differ from the blob's stated ``size`` and the sha asked for (a short body). A blob
        with no content or an unknown encoding passes: it is bad in itself (a dead letter).
        """
        if not isinstance(blob, Mapping):
            return "the blob answer is not a JSON object"
        if not isinstance(blob.get("content"), str) or blob.get("encoding") not in (
            "base64",
            "utf-8",
            "utf8",
        ):
            return None
        try:
            data = self._blob_bytes(blob, sha)
        except ValueError as exc:
            return str(exc)
        size = blob.get("size")
        return size_and_digest_problem(
            data,
            size=size if isinstance(size, int) and not isinstance(size, bool) else None,
            git_sha=sha or None,
        )

    def _decode_blob(self, blob: Mapping[str, Any], path: str) -> str | None:
        """The blob's text; None for binary content; ValueError when it cannot be decoded."""
        data = self._blob_bytes(blob, path)
        if len(data) > self.config.max_file_size:
            return None
        if b"\0" in data[:_BINARY_SNIFF]:
            return None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return None

    def map_file(
        self,
        repo: _Repo,
        path: str,
        sha: str,
        entry: Mapping[str, Any],
        text: str,
        ref: str,
        web: str,
    ) -> Document:
        """One repository file as a record."""
        name = path.rsplit("/", 1)[-1]
        ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
        doc = Document(
            source_id=self._sid(repo, "file", path),
            title=path,
            text_content=text,
            source_type=self.source_type,
            source_url=f"{web}/blob/{ref}/{path}",
            tags=["file", f"ext:{ext}"] if ext else ["file"],
            custom_metadata={
                "github_repo": repo.full,
                "github_kind": "file",
                "github_path": path,
                "github_sha": sha,
                "github_ref": ref,
                "github_size": str(entry.get("size", len(text.encode()))),
                "github_mode": str(entry.get("mode") or ""),
            },
        )
        self._member(doc, repo)
        return doc

    # -- issues, pull requests, comments ---------------------------------------------------------

    def _wants_item(self, item: Mapping[str, Any]) -> bool:
        """Whether an issue-list item matches ``content``, ``state`` and ``labels``."""
        cfg = self.config
        is_pr = "pull_request" in item
        if is_pr and "pulls" not in cfg.content:
            return False
        if not is_pr and "issues" not in cfg.content:
            return False
        if cfg.state != "all" and item.get("state") != cfg.state:
            return False
        if cfg.labels:
            names = {
                lab.get("name") if isinstance(lab, Mapping) else lab
                for lab in item.get("labels") or []
            }
            if not set(cfg.labels) <= names:
                return False
        return True

    def map_issue(
        self, repo: _Repo, item: Mapping[str, Any], comment_ids: Sequence[int] = ()
    ) -> Document:
        """An issue or pull request as a record (ValueError/KeyError/TypeError when malformed)."""
        number = _int(item["number"], "number")
        title = _str(item["title"], "title")
        body = item.get("body")
        if body is not None and not isinstance(body, str):
            raise ValueError(f"body is {type(body).__name__}, expected a string")
        created = _ts(item.get("created_at"))
        updated = _ts(item["updated_at"])
        is_pr = "pull_request" in item
        labels = [
            _str(lab.get("name") if isinstance(lab, Mapping) else lab, "label name")
            for lab in item.get("labels") or []
        ]
        assignees = [a for a in (_login(u) for u in item.get("assignees") or []) if a]
        milestone = item.get("milestone")
        meta: dict[str, Any] = {
            "github_repo": repo.full,
            "github_kind": "pull_request" if is_pr else "issue",
            "github_number": str(number),
            "github_id": str(item.get("id", "")),
            "github_state": str(item.get("state") or ""),
            "github_labels": ",".join(labels),
            "github_comments": str(item.get("comments", 0)),
        }
        if assignees:
            meta["github_assignees"] = ",".join(assignees)
        if isinstance(milestone, Mapping) and milestone.get("title"):
            meta["github_milestone"] = str(milestone["title"])
        for key in ("closed_at", "state_reason", "author_association"):
            if item.get(key):
                meta[f"github_{key}"] = str(item[key])
        if item.get("locked"):
            meta["github_locked"] = "true"
        pr = item.get("pull_request")
        if isinstance(pr, Mapping) and pr.get("merged_at"):
            meta["github_merged_at"] = str(pr["merged_at"])
        doc = Document(
            source_id=self._sid(repo, "issue", number),
            title=title,
            text_content=body or "",
            source_type=self.source_type,
            source_url=item.get("html_url") if isinstance(item.get("html_url"), str) else None,
            author=_login(item.get("user")),
            contributors=assignees or None,
            tags=labels or None,
            created_at=created,
            updated_at=updated,
            source_updated_at=updated,
            status=str(item.get("state") or "") or None,
            custom_metadata=meta,
        )
        self._member(doc, repo)
        for cid in sorted(comment_ids):
            doc.relate("child", self._uuid(self._sid(repo, "comment", cid)))
        return doc

    def map_comment(self, repo: _Repo, item: Mapping[str, Any]) -> tuple[int, Document]:
        """An issue comment as a record, with its issue number (ValueError when malformed)."""
        cid = _int(item["id"], "id")
        issue_url = _str(item["issue_url"], "issue_url")
        tail = issue_url.rstrip("/").rsplit("/", 1)[-1]
        if not tail.isdigit():
            raise ValueError(f"issue_url {issue_url!r} does not end in an issue number")
        number = int(tail)
        body = item.get("body")
        if body is not None and not isinstance(body, str):
            raise ValueError(f"body is {type(body).__name__}, expected a string")
        updated = _ts(item["updated_at"])
        author = _login(item.get("user"))
        doc = Document(
            source_id=self._sid(repo, "comment", cid),
            title=f"Comment by {author or 'unknown'} on {repo.full}#{number}",
            text_content=body or "",
            source_type=self.source_type,
            source_url=item.get("html_url") if isinstance(item.get("html_url"), str) else None,
            author=author,
            created_at=_ts(item.get("created_at")),
            updated_at=updated,
            source_updated_at=updated,
            tags=["comment"],
            custom_metadata={
                "github_repo": repo.full,
                "github_kind": "comment",
                "github_id": str(cid),
                "github_number": str(number),
                "github_author_association": str(item.get("author_association") or ""),
            },
        )
        doc.relate("parent", self._uuid(self._sid(repo, "issue", number)))
        self._member(doc, repo)
        return number, doc

    async def _issue_comments(
        self, svc: Service, repo: _Repo, number: int
    ) -> list[Mapping[str, Any]]:
        out: list[Mapping[str, Any]] = []
        pages = svc.paginate(
            LinkHeaderPaginator(),
            f"{repo.api}/issues/{number}/comments",
            params={"per_page": self.config.per_page},
        )
        async with contextlib.aclosing(pages) as it:
            async for page in it:
                # only a complete, well-formed answer says which comments exist: anything else
                # would turn the stored comments into tombstones
                out.extend(
                    c
                    for c in require_list(page.data, "comments", service="github")
                    if isinstance(c, Mapping)
                )
        return out

    async def _read_issues(
        self,
        svc: Service,
        repo: _Repo,
        cursor: Mapping[str, Any] | None,
        ctx: SourceContext,
    ) -> AsyncGenerator[SourceOutput, None]:
        cfg = self.config
        header: str | None = None
        if self._header_partition() != "files":
            info = await self._repo_info(svc, repo)
            hdoc, header = self._header(repo, info, cursor, ctx)
            if hdoc is not None:
                yield [hdoc]
        incremental = bool(cursor and cursor.get("since"))
        cur = cursor or {}
        since: str | None = cur.get("since") or (_iso(cfg.since) if cfg.since else None)
        # the issues' bookmark: where the last sync stopped (base) and where this one is
        issues = _Frontier(since, set(cur.get("at_since") or []))
        known: dict[str, list[int]] = {
            str(k): list(v) for k, v in (cur.get("comments") or {}).items()
        }
        comments = _Frontier(
            cur.get("comments_since") or (since if incremental else None),
            set(cur.get("comments_at") or []),
        )
        filtered = cfg.state != "all" or bool(cfg.labels)
        st = self.source_type

        params: dict[str, Any] = {
            "state": "all" if incremental else cfg.state,
            "sort": "updated",
            "direction": "asc",
            "per_page": cfg.per_page,
        }
        if cfg.labels and not incremental:
            params["labels"] = ",".join(cfg.labels)
        if since:
            params["since"] = since
        processed: set[int] = set()
        # the first issue whose comments failed for a transient reason; the frontier holds there
        first_failed: Mapping[str, Any] | None = None
        held = False

        def snapshot() -> Checkpoint:
            return Checkpoint(
                {
                    "since": issues.since,
                    "at_since": sorted(issues.at),
                    "header": header,
                    "comments": dict(known),
                    "comments_since": comments.since,
                    "comments_at": sorted(comments.at),
                }
            )

        pages = svc.paginate(LinkHeaderPaginator(), f"{repo.api}/issues", params=params)
        async with contextlib.aclosing(pages) as it:
            async for page in it:
                items = require_list(page.data, "issues", service="github")
                out: list[Item] = []
                selected: list[tuple[int, Mapping[str, Any]]] = []
                skipped = unchanged = 0
                for item in items:
                    if not isinstance(item, Mapping):
                        ctx.dead_letter("an issue list item is not a JSON object", item)
                        continue
                    number = item.get("number")
                    updated = _stamp(item.get("updated_at"))
                    if isinstance(number, int) and issues.seen_before(updated, number):
                        unchanged += 1
                        continue
                    if not isinstance(number, int):
                        ctx.dead_letter(
                            f"issue has no integer `number` ({number!r})",
                            item,
                            source_id=None,
                        )
                        continue
                    if not self._wants_item(item):
                        skipped += 1
                        if incremental and filtered:
                            out.append(Tombstone(self._sid(repo, "issue", number), st))
                            out.extend(
                                Tombstone(self._sid(repo, "comment", c), st)
                                for c in known.pop(str(number), [])
                            )
                        processed.add(number)
                        continue
                    selected.append((number, item))
                if unchanged:
                    ctx.skipped_unchanged(unchanged)
                if skipped:
                    ctx.skipped(skipped)

                fetched = await self._comments_for(svc, repo, selected, known)
                for number, item in selected:
                    sid = self._sid(repo, "issue", number)
                    got = fetched.get(number)
                    ids: list[int] = list(known.get(str(number), []))
                    if isinstance(got, BaseException) and is_transient(got):
                        # not done: its stored comments stay (no tombstones), and the frontier
                        # stops before it so the next run lists this issue and fetches them again
                        ctx.retry_next_run(f"the comments of #{number}: {got}", source_id=sid)
                        if first_failed is None:
                            first_failed = item
                    elif isinstance(got, BaseException):
                        ctx.dead_letter(
                            f"cannot fetch the comments of #{number}: {got}",
                            {"number": number},
                            source_id=sid,
                        )
                    elif got is not None:
                        new_ids: list[int] = []
                        for raw in got:
                            try:
                                _n, cdoc = self.map_comment(repo, raw)
                            except (KeyError, TypeError, ValueError) as exc:
                                ctx.dead_letter(
                                    f"cannot map comment: {type(exc).__name__}: {exc}",
                                    raw,
                                    source_id=None,
                                )
                                continue
                            out.append(cdoc)
                            new_ids.append(int(raw["id"]))
                            comments.bump(_stamp(raw["updated_at"]), int(raw["id"]))
                        out.extend(
                            Tombstone(self._sid(repo, "comment", c), st)
                            for c in ids
                            if c not in set(new_ids)
                        )
                        ids = sorted(new_ids)
                        if ids:
                            known[str(number)] = ids
                        else:
                            known.pop(str(number), None)
                    try:
                        out.append(self.map_issue(repo, item, ids))
                    except (KeyError, TypeError, ValueError) as exc:
                        ctx.dead_letter(
                            f"cannot map issue #{number}: {type(exc).__name__}: {exc}",
                            item,
                            source_id=sid,
                        )
                    processed.add(number)
                if not held:
                    done = items
                    if first_failed is not None:
                        done = items[: next(i for i, x in enumerate(items) if x is first_failed)]
                        held = True  # later issues are listed again next run (upserts)
                    for x in done:
                        if isinstance(x, Mapping) and isinstance(x.get("number"), int):
                            issues.bump(_stamp(x.get("updated_at")), x["number"])
                out.append(snapshot())
                yield out
                if ctx.stopping:
                    return

        if not (cfg.comments and incremental and comments.base and known):
            return
        # comments edited since the last sync on issues whose own updated_at did not move
        pages = svc.paginate(
            LinkHeaderPaginator(),
            f"{repo.api}/issues/comments",
            params={
                "since": comments.base,
                "sort": "updated",
                "direction": "asc",
                "per_page": cfg.per_page,
            },
        )
        async with contextlib.aclosing(pages) as it:
            async for page in it:
                out = []
                for raw in require_list(page.data, "comments", service="github"):
                    if not isinstance(raw, Mapping):
                        continue
                    try:
                        number, cdoc = self.map_comment(repo, raw)
                    except (KeyError, TypeError, ValueError) as exc:
                        ctx.dead_letter(
                            f"cannot map comment: {type(exc).__name__}: {exc}", raw, source_id=None
                        )
                        continue
                    cid = int(raw["id"])
                    updated = _stamp(raw.get("updated_at"))
                    comments.bump(updated, cid)
                    have = known.get(str(number))
                    if comments.seen_before(updated, cid):
                        ctx.skipped_unchanged(1)
                    elif number in processed or have is None:
                        ctx.skipped(1)
                    elif cid in have:
                        out.append(cdoc)
                    else:  # a comment the issue pass has not seen: the issue will list it next time
                        ctx.skipped(1)
                out.append(snapshot())
                yield out
                if ctx.stopping:
                    return

    async def _comments_for(
        self,
        svc: Service,
        repo: _Repo,
        selected: Sequence[tuple[int, Mapping[str, Any]]],
        known: Mapping[str, list[int]],
    ) -> dict[int, list[Mapping[str, Any]] | BaseException | None]:
        """Fetch, concurrently, the comments of the selected issues that have or had any."""
        out: dict[int, list[Mapping[str, Any]] | BaseException | None] = {}
        if not self.config.comments:
            return out

        async def fetch(number: int) -> None:
            try:
                out[number] = await self._issue_comments(svc, repo, number)
            except HTTPError as exc:
                if not (isinstance(exc, NotFoundError) or is_transient(exc)):
                    raise
                out[number] = exc

        async with anyio.create_task_group() as tg:
            for number, item in selected:
                count = item.get("comments")
                if (isinstance(count, int) and count > 0) or str(number) in known:
                    tg.start_soon(fetch, number)
        return out


def _blob_payload(blob: Mapping[str, Any]) -> dict[str, Any]:
    """A blob for a dead letter, its content cut short."""
    out = dict(blob)
    content = out.get("content")
    if isinstance(content, str) and len(content) > 2000:
        out["content"] = content[:2000] + "..."
    return out
