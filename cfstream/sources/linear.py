"""Linear: issues, comments, projects and documents through Linear's GraphQL API.

One ``POST /graphql`` endpoint; Relay connections paged with ``first``/``after`` and
``pageInfo { hasNextPage endCursor }`` (the HTTP layer's :class:`~cfstream.http.GraphQLPaginator`),
ordered by ``updatedAt``. Incremental syncs send ``filter: {updatedAt: {gt: <cursor>}}``.

Partitions (read concurrently, each with its own cursor):

* ``teams``: one collection header per team (snapshot; a team that disappears is tombstoned);
* ``<kind>:<team id>`` for each team and each kind in ``content`` (``issues``, ``comments``,
  ``projects``, ``documents``).

Cursor of a ``<kind>:<team id>`` partition::

    {"high": "<max updatedAt imported>", "recent": {"<linear id>": "<updatedAt>", ...},
     "page": {"gt": ..., "after": "<endCursor>", "high": ..., "archived": bool}}   # mid-pass only

See ``docs/connectors/linear.md``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Final, Literal

from pydantic import Field, field_validator, model_validator

from cfstream.contract.context import SourceContext
from cfstream.errors import AuthError, ClientError, NotFoundError, TransientError
from cfstream.http import (
    Auth,
    BearerAuth,
    Gate,
    GraphQLPaginator,
    HeaderAuth,
    JsonResponse,
    Problem,
    RateLimit,
    RawResponse,
    ResponsePolicy,
    Service,
    get_path,
    join_message,
    parse_reset,
    parse_retry_after,
    register_policy,
)
from cfstream.http.policies import RETRY_STATUSES
from cfstream.records import Checkpoint, Document, Item, Relationship, Tombstone, record_uuid
from cfstream.secrets import Secret
from cfstream.sources.base import Source, SourceConfig, SourceOutput
from cfstream.sources.options import validate_options

__all__ = (
    "COMMENTS_QUERY",
    "CONTENT_KINDS",
    "DOCUMENTS_QUERY",
    "ISSUES_QUERY",
    "PROJECTS_QUERY",
    "TEAMS_QUERY",
    "LinearConfig",
    "LinearSource",
)

ContentKind = Literal["issues", "comments", "projects", "documents"]

#: what ``content`` may hold, in the order partitions are listed
CONTENT_KINDS: Final[tuple[ContentKind, ...]] = ("issues", "comments", "projects", "documents")

# -- the GraphQL documents (the fake in cfstream.testing.fakes.linear recognises them by name) ---

TEAMS_QUERY: Final = """
query CfstreamTeams($first: Int!, $after: String, $filter: TeamFilter) {
  teams(first: $first, after: $after, filter: $filter) {
    nodes {
      id
      key
      name
      description
      createdAt
      updatedAt
    }
    pageInfo { hasNextPage endCursor }
  }
}
"""

ISSUES_QUERY: Final = """
query CfstreamIssues($first: Int!, $after: String, $filter: IssueFilter, $includeArchived: Boolean) {
  issues(first: $first, after: $after, filter: $filter, orderBy: updatedAt, includeArchived: $includeArchived) {
    nodes {
      id
      identifier
      number
      title
      description
      url
      priority
      priorityLabel
      estimate
      dueDate
      createdAt
      updatedAt
      completedAt
      canceledAt
      archivedAt
      trashed
      state { id name type }
      assignee { id name displayName }
      creator { id name displayName }
      team { id key name }
      project { id name }
      parent { id identifier }
      labels(first: 50) { nodes { id name } }
    }
    pageInfo { hasNextPage endCursor }
  }
}
"""

COMMENTS_QUERY: Final = """
query CfstreamComments($first: Int!, $after: String, $filter: CommentFilter, $includeArchived: Boolean) {
  comments(first: $first, after: $after, filter: $filter, orderBy: updatedAt, includeArchived: $includeArchived) {
    nodes {
      id
      body
      url
      createdAt
      updatedAt
      archivedAt
      user { id name displayName }
      parent { id }
      issue { id identifier team { id key name } }
    }
    pageInfo { hasNextPage endCursor }
  }
}
"""

PROJECTS_QUERY: Final = """
query CfstreamProjects($first: Int!, $after: String, $filter: ProjectFilter, $includeArchived: Boolean) {
  projects(first: $first, after: $after, filter: $filter, orderBy: updatedAt, includeArchived: $includeArchived) {
    nodes {
      id
      name
      description
      url
      state
      startDate
      targetDate
      createdAt
      updatedAt
      archivedAt
      trashed
      lead { id name displayName }
      teams { nodes { id key name } }
    }
    pageInfo { hasNextPage endCursor }
  }
}
"""

DOCUMENTS_QUERY: Final = """
query CfstreamDocuments($first: Int!, $after: String, $filter: DocumentFilter, $includeArchived: Boolean) {
  documents(first: $first, after: $after, filter: $filter, orderBy: updatedAt, includeArchived: $includeArchived) {
    nodes {
      id
      title
      content
      url
      slugId
      createdAt
      updatedAt
      archivedAt
      trashed
      creator { id name displayName }
      project { id name }
    }
    pageInfo { hasNextPage endCursor }
  }
}
"""

_QUERIES: Final[dict[str, tuple[str, str]]] = {
    # kind: (operation name, query)
    "issues": ("CfstreamIssues", ISSUES_QUERY),
    "comments": ("CfstreamComments", COMMENTS_QUERY),
    "projects": ("CfstreamProjects", PROJECTS_QUERY),
    "documents": ("CfstreamDocuments", DOCUMENTS_QUERY),
}

_AUTH_HINT = (
    "check the {service} credential: api_key (a personal API key, sent as-is in Authorization) or "
    "oauth_token (sent as 'Bearer <token>', needs scope 'read'), and that it can see the teams"
)
#: most entries kept in a cursor's ``recent`` map (items inside the lookback window)
_MAX_RECENT: Final = 5000


class LinearPolicy(ResponsePolicy):
    """Linear GraphQL: ``errors[].extensions.code == "RATELIMITED"`` is a rate limit at any status.

    Any other GraphQL error becomes a typed error (never data): authentication codes an
    :class:`~cfstream.errors.AuthError`, the rest a :class:`~cfstream.errors.ClientError`.
    ``X-RateLimit-Requests-Remaining: 0`` closes the service until ``X-RateLimit-Requests-Reset``.
    """

    name = "linear"
    default_auth_hint = (
        "check the {service} API key (personal keys are sent without 'Bearer') and that it can "
        "read the team"
    )

    def gates(self, raw: RawResponse, now: float) -> list[Gate]:
        """Close the service when the request or complexity budget is spent."""
        out: list[Gate] = []
        for kind in ("Requests", "Complexity"):
            if raw.header(f"X-RateLimit-{kind}-Remaining") == "0":
                wait = parse_reset(raw.header(f"X-RateLimit-{kind}-Reset"), now=now)
                if wait:
                    out.append(Gate(now + wait, None, f"X-RateLimit-{kind}-Remaining is 0"))
        return out

    def inspect(self, raw: RawResponse, data: Any, service: str, now: float) -> Problem | None:
        """GraphQL ``errors`` in the body, whatever the HTTP status."""
        errors = data.get("errors") if isinstance(data, Mapping) else None
        if not isinstance(errors, list) or not errors:
            if raw.status == 429:
                return self._rate_limit(raw, now, "429 Too Many Requests")
            return None
        codes: list[str] = []
        for err in errors:
            ext = err.get("extensions") if isinstance(err, Mapping) else None
            if isinstance(ext, Mapping):
                codes += [str(ext.get("code") or "").upper(), str(ext.get("type") or "").upper()]
        message = self.error_message(data)
        if raw.status == 429 or "RATELIMITED" in codes:
            return self._rate_limit(raw, now, message)
        if {"AUTHENTICATION_ERROR", "AUTHENTICATION ERROR", "FORBIDDEN"} & set(
            codes
        ) or raw.status in (401, 403):
            return Problem(
                AuthError,
                join_message("GraphQL error", message, self.auth_hint(service, raw, data)),
                "graphql_auth",
            )
        if raw.status in RETRY_STATUSES:
            return Problem(
                TransientError,
                join_message("server error", message),
                f"http_{raw.status}",
                scope="request",
            )
        return Problem(ClientError, join_message("GraphQL error", message), "graphql_error")

    def _rate_limit(self, raw: RawResponse, now: float, detail: str) -> Problem:
        wait = parse_retry_after(raw.header("Retry-After"), now=now)
        if wait is None:
            wait = parse_reset(raw.header("X-RateLimit-Requests-Reset"), now=now)
        return self.rate_limited(raw, now, join_message("RATELIMITED", detail), retry_after=wait)


register_policy(LinearPolicy)


class LinearConfig(SourceConfig):
    """Settings of :class:`LinearSource` (what a YAML ``type: linear`` source may set)."""

    api_key: Secret | None = Field(
        default=None,
        description=(
            "a personal API key (Settings -> Security & access -> Personal API keys), sent as-is"
        ),
    )
    oauth_token: Secret | None = Field(
        default=None,
        description=("an OAuth 2.0 access token with scope `read`, sent as `Bearer <token>`"),
    )
    team_ids: list[str] | None = Field(
        default=None,
        description="team IDs to import; None imports every team the credential can see",
    )
    base_url: str = Field(
        default="https://api.linear.app",
        description=(
            "the API origin (`/graphql` is appended); point it at a fake or a proxy in tests"
        ),
    )
    content: list[ContentKind] = Field(
        default_factory=lambda: list(CONTENT_KINDS), description="what to import"
    )
    page_size: int = Field(
        50,
        ge=1,
        le=250,
        description="nodes per GraphQL page (Linear allows 1..250; 50 is its default)",
    )
    include_archived: bool = Field(
        default=False,
        description=("keep archived (not trashed) items as documents instead of deleting them"),
    )
    lookback_seconds: float = Field(
        60.0,
        ge=0,
        description=(
            "seconds re-read before the saved cursor, so late commits are not "
            "missed (unchanged items seen again are skipped)"
        ),
    )
    checkpoint_every: int = Field(
        1,
        ge=1,
        description=(
            "pages between two checkpoints (a crash refetches at most this many "
            "pages per partition)"
        ),
    )
    requests_per_second: float = Field(
        1.3,
        gt=0,
        description=("sustained request rate (Linear allows about 5,000 requests an hour per key)"),
    )
    burst: int = Field(
        10, ge=1, description="requests that may go at once before the sustained rate applies"
    )
    http_concurrency: int = Field(
        4, ge=1, description="requests in flight at once for this credential"
    )
    max_concurrency: int | None = Field(
        None,
        ge=1,
        description=(
            "partitions (teams and content kinds) read at once; None: the source's default (4)"
        ),
    )

    @field_validator("content")
    @classmethod
    def _unique_content(cls, value: list[ContentKind]) -> list[ContentKind]:
        if not value:
            raise ValueError(f"content must name at least one of {', '.join(CONTENT_KINDS)}")
        return list(dict.fromkeys(value))

    @field_validator("team_ids")
    @classmethod
    def _team_ids(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (not value or any(not t.strip() for t in value)):
            raise ValueError("team_ids must be a non-empty list of team IDs, or left out for all")
        return value

    @model_validator(mode="after")
    def _one_credential(self) -> LinearConfig:
        if (self.api_key is None) == (self.oauth_token is None):
            raise ValueError("give exactly one of api_key (personal API key) or oauth_token")
        return self


# -- small helpers -------------------------------------------------------------------------------


def _parse_ts(value: Any) -> datetime:
    """A Linear DateTime (``2024-05-01T10:00:00.000Z``) as an aware UTC datetime."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected an ISO 8601 timestamp, got {value!r}")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp without a timezone: {value!r}")
    return parsed.astimezone(UTC)


def _fmt_ts(value: datetime) -> str:
    return (
        value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    )


def _name(user: Any) -> str | None:
    if not isinstance(user, Mapping):
        return None
    name = user.get("name") or user.get("displayName")
    return str(name) if name else None


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _require_str(node: Mapping[str, Any], key: str) -> str:
    value = node.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"field {key!r} is missing or empty")
    return value


def _meta(**values: Any) -> dict[str, Any]:
    """``linear_``-prefixed custom metadata; None values are left out, the rest become strings."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[f"linear_{key}"] = "true" if value else "false"
        elif isinstance(value, float) and value.is_integer():
            out[f"linear_{key}"] = str(int(value))
        else:
            out[f"linear_{key}"] = str(value)
    return out


def _first_line(text: str, limit: int = 80) -> str:
    for line in text.splitlines():
        line = line.strip().lstrip("#>*- ").strip()
        if line:
            return line if len(line) <= limit else line[: limit - 1] + "…"
    return ""


def team_source_id(team_id: str) -> str:
    """The ``source_id`` of a team's collection header."""
    return f"team:{team_id}"


def project_source_id(project_id: str) -> str:
    """The ``source_id`` of a project's collection header."""
    return f"project:{project_id}"


# -- mapping -------------------------------------------------------------------------------------


class _Mapper:
    """Turns Linear nodes into Documents; raises ValueError/TypeError/KeyError on bad nodes."""

    def __init__(self, source_type: str, source: Source | None = None) -> None:
        self.st = source_type
        self.source = source

    def uuid(self, source_id: str) -> str:
        if self.source is not None:
            return self.source.record_uuid(source_id, self.st)
        return record_uuid(self.st, source_id)

    def team(self, node: Mapping[str, Any]) -> Document:
        tid = _require_str(node, "id")
        name = _require_str(node, "name")
        _parse_ts(node.get("updatedAt"))
        return Document(
            source_id=team_source_id(tid),
            source_type=self.st,
            title=name,
            text_content=node.get("description") or None,
            record_type="collection_header",
            collection=name,
            collection_id=tid,
            collection_id_type="linear_team",
            created_at=node.get("createdAt"),
            updated_at=node["updatedAt"],
            source_updated_at=node["updatedAt"],
            custom_metadata=_meta(id=tid, type="team", team_key=node.get("key")),
        )

    def issue(self, node: Mapping[str, Any], include_archived: bool) -> Document:
        iid = _require_str(node, "id")
        identifier = _require_str(node, "identifier")
        title = _require_str(node, "title")
        created = _parse_ts(node.get("createdAt"))
        updated = _parse_ts(node.get("updatedAt"))
        team = node.get("team")
        if not isinstance(team, Mapping):
            raise ValueError("field 'team' is missing")
        team_id = _require_str(team, "id")
        raw_state = node.get("state")
        state: Mapping[str, Any] = raw_state if isinstance(raw_state, Mapping) else {}
        project = node.get("project") if isinstance(node.get("project"), Mapping) else None
        parent = node.get("parent") if isinstance(node.get("parent"), Mapping) else None
        labels_conn = node.get("labels")
        label_nodes = labels_conn.get("nodes") if isinstance(labels_conn, Mapping) else None
        labels = sorted(
            str(lab["name"])
            for lab in (label_nodes or [])
            if isinstance(lab, Mapping) and lab.get("name")
        )
        rels = [
            Relationship("member_of", self.uuid(team_source_id(team_id)), title=team.get("name"))
        ]
        if project is not None:
            pid = _require_str(project, "id")
            rels.append(
                Relationship(
                    "member_of", self.uuid(project_source_id(pid)), title=project.get("name")
                )
            )
        if parent is not None:
            parent_id = _require_str(parent, "id")
            rels.append(
                Relationship(
                    "child", self.uuid(f"issue:{parent_id}"), title=parent.get("identifier")
                )
            )
        assignee = _name(node.get("assignee"))
        archived_at = node.get("archivedAt")
        return Document(
            source_id=f"issue:{iid}",
            source_type=self.st,
            title=f"{identifier} {title}",
            text_content=node.get("description") or "",
            source_url=node.get("url"),
            author=_name(node.get("creator")),
            contributors=[assignee] if assignee else None,
            tags=labels or None,
            created_at=created,
            updated_at=updated,
            source_updated_at=updated,
            collection=str(team.get("name") or team.get("key") or team_id),
            collection_id=team_id,
            collection_id_type="linear_team",
            status="archived"
            if include_archived and archived_at
            else _str_or_none(state.get("name")),
            relationships=rels,
            custom_metadata=_meta(
                id=iid,
                type="issue",
                identifier=identifier,
                number=node.get("number"),
                state=state.get("name"),
                state_type=state.get("type"),
                priority=node.get("priority"),
                priority_label=node.get("priorityLabel"),
                estimate=node.get("estimate"),
                due_date=node.get("dueDate"),
                assignee=assignee,
                team_id=team_id,
                team_key=team.get("key"),
                project_id=project.get("id") if project else None,
                project=project.get("name") if project else None,
                parent_id=parent.get("id") if parent else None,
                parent_identifier=parent.get("identifier") if parent else None,
                completed_at=node.get("completedAt"),
                canceled_at=node.get("canceledAt"),
                archived_at=archived_at,
            ),
        )

    def comment(self, node: Mapping[str, Any], include_archived: bool) -> Document:
        cid = _require_str(node, "id")
        body = node.get("body")
        if not isinstance(body, str):
            raise ValueError("field 'body' is missing")
        created = _parse_ts(node.get("createdAt"))
        updated = _parse_ts(node.get("updatedAt"))
        issue = node.get("issue")
        if not isinstance(issue, Mapping):
            raise ValueError("field 'issue' is missing (only issue comments are imported)")
        issue_id = _require_str(issue, "id")
        team = issue.get("team") if isinstance(issue.get("team"), Mapping) else None
        identifier = issue.get("identifier")
        rels = [Relationship("child", self.uuid(f"issue:{issue_id}"), title=identifier)]
        parent = node.get("parent") if isinstance(node.get("parent"), Mapping) else None
        if parent is not None:
            rels.append(Relationship("child", self.uuid(f"comment:{_require_str(parent, 'id')}")))
        if team is not None:
            rels.append(
                Relationship(
                    "member_of",
                    self.uuid(team_source_id(_require_str(team, "id"))),
                    title=team.get("name"),
                )
            )
        author = _name(node.get("user"))
        headline = _first_line(body) or "Comment"
        return Document(
            source_id=f"comment:{cid}",
            source_type=self.st,
            title=f"{identifier}: {headline}" if identifier else headline,
            text_content=body,
            source_url=node.get("url"),
            author=author,
            created_at=created,
            updated_at=updated,
            source_updated_at=updated,
            collection=str(team.get("name") or team.get("key")) if team else None,
            collection_id=team.get("id") if team else None,
            collection_id_type="linear_team" if team else None,
            status="archived" if include_archived and node.get("archivedAt") else None,
            relationships=rels,
            custom_metadata=_meta(
                id=cid,
                type="comment",
                issue_id=issue_id,
                issue_identifier=identifier,
                parent_comment_id=parent.get("id") if parent else None,
                team_id=team.get("id") if team else None,
                archived_at=node.get("archivedAt"),
            ),
        )

    def project(self, node: Mapping[str, Any], include_archived: bool) -> Document:
        pid = _require_str(node, "id")
        name = _require_str(node, "name")
        created = _parse_ts(node.get("createdAt"))
        updated = _parse_ts(node.get("updatedAt"))
        teams_conn = node.get("teams")
        team_nodes = teams_conn.get("nodes") if isinstance(teams_conn, Mapping) else None
        teams = sorted(
            (t for t in (team_nodes or []) if isinstance(t, Mapping) and t.get("id")),
            key=lambda t: str(t["id"]),
        )
        rels = [
            Relationship("member_of", self.uuid(team_source_id(str(t["id"]))), title=t.get("name"))
            for t in teams
        ]
        return Document(
            source_id=project_source_id(pid),
            source_type=self.st,
            title=name,
            text_content=node.get("description") or "",
            source_url=node.get("url"),
            author=_name(node.get("lead")),
            created_at=created,
            updated_at=updated,
            source_updated_at=updated,
            record_type="collection_header",
            collection=name,
            collection_id=pid,
            collection_id_type="linear_project",
            status="archived" if include_archived and node.get("archivedAt") else node.get("state"),
            relationships=rels or None,
            custom_metadata=_meta(
                id=pid,
                type="project",
                state=node.get("state"),
                start_date=node.get("startDate"),
                target_date=node.get("targetDate"),
                lead=_name(node.get("lead")),
                team_ids=",".join(str(t["id"]) for t in teams) or None,
                team_keys=",".join(str(t.get("key")) for t in teams if t.get("key")) or None,
                archived_at=node.get("archivedAt"),
            ),
        )

    def document(self, node: Mapping[str, Any], include_archived: bool) -> Document:
        did = _require_str(node, "id")
        title = _require_str(node, "title")
        created = _parse_ts(node.get("createdAt"))
        updated = _parse_ts(node.get("updatedAt"))
        project = node.get("project") if isinstance(node.get("project"), Mapping) else None
        rels = None
        if project is not None:
            rels = [
                Relationship(
                    "member_of",
                    self.uuid(project_source_id(_require_str(project, "id"))),
                    title=project.get("name"),
                )
            ]
        return Document(
            source_id=f"document:{did}",
            source_type=self.st,
            title=title,
            text_content=node.get("content") or "",
            source_url=node.get("url"),
            author=_name(node.get("creator")),
            created_at=created,
            updated_at=updated,
            source_updated_at=updated,
            collection=str(project.get("name")) if project and project.get("name") else None,
            collection_id=project.get("id") if project else None,
            collection_id_type="linear_project" if project else None,
            status="archived" if include_archived and node.get("archivedAt") else None,
            relationships=rels,
            custom_metadata=_meta(
                id=did,
                type="document",
                slug_id=node.get("slugId"),
                project_id=project.get("id") if project else None,
                project=project.get("name") if project else None,
                archived_at=node.get("archivedAt"),
            ),
        )


_PREFIX: Final[dict[str, str]] = {
    "issues": "issue",
    "comments": "comment",
    "projects": "project",
    "documents": "document",
}


def _filter_for(kind: str, team_id: str, gt: str | None) -> dict[str, Any]:
    """The GraphQL ``filter`` variable of a partition's query."""
    team_eq = {"id": {"eq": team_id}}
    flt: dict[str, Any]
    if kind == "issues":
        flt = {"team": team_eq}
    elif kind == "comments":
        flt = {"issue": {"team": team_eq}}
    elif kind == "projects":
        flt = {"accessibleTeams": {"some": team_eq}}
    else:
        flt = {"project": {"accessibleTeams": {"some": team_eq}}}
    if gt is not None:
        flt["updatedAt"] = {"gt": gt}
    return flt


class LinearSource(Source):
    """Import Linear issues, comments, projects and documents (GraphQL API).

    Args:
        api_key: a personal API key, sent as-is in ``Authorization``.
        oauth_token: an OAuth access token (scope ``read``), sent as ``Bearer``. Give exactly one.
        team_ids: team IDs to import; None for every team the credential sees.
        base_url: the API origin (``https://api.linear.app``); ``/graphql`` is appended.
        content: any of ``"issues"``, ``"comments"``, ``"projects"``, ``"documents"``.
        page_size: nodes per page (1..250).
        include_archived: keep archived items (status ``archived``) instead of deleting them;
            trashed items are always deleted.
        lookback_seconds: how far before the cursor an incremental sync re-reads.
        checkpoint_every: pages between checkpoints.
        requests_per_second: the proactive request rate; ``burst`` requests may go at once.
        http_concurrency: requests in flight at once.
        name: the source's name (its cursors are kept under it).
        max_concurrency: partitions read at once.

    Raises:
        ConfigError: invalid options (the message names the option).
    """

    source_type: ClassVar[str] = "linear"
    uses_http: ClassVar[bool] = True
    config_model: ClassVar[type[SourceConfig] | None] = LinearConfig
    required_scopes: ClassVar[tuple[str, ...]] = ("read",)

    def __init__(self, *, name: str | None = None, **options: Any) -> None:
        self.config: LinearConfig = validate_options(LinearConfig, self.source_type, options)
        super().__init__(name=name, max_concurrency=self.config.max_concurrency)
        self._map = _Mapper(self.source_type, self)
        self._teams: list[dict[str, Any]] | None = None

    def __repr__(self) -> str:
        return f"<LinearSource {self.name!r} teams={self.config.team_ids or 'all'}>"

    # -- HTTP ------------------------------------------------------------------------------------

    def _auth(self) -> Auth:
        cfg = self.config
        if cfg.api_key is not None:
            return HeaderAuth("Authorization", cfg.api_key)
        assert cfg.oauth_token is not None
        return BearerAuth(cfg.oauth_token)

    def _service(self, ctx: SourceContext) -> Service:
        cfg = self.config
        return ctx.http.service(
            "linear",
            base_url=cfg.base_url,
            auth=self._auth(),
            rate=RateLimit(per_second=cfg.requests_per_second, burst=cfg.burst),
            concurrency=cfg.http_concurrency,
            policy=LinearPolicy(auth_hint=_AUTH_HINT),
            headers={"Content-Type": "application/json"},
        )

    def _pages(
        self, svc: Service, connection: str, operation: str, query: str, variables: dict[str, Any]
    ) -> AsyncGenerator[JsonResponse, None]:
        return svc.paginate(
            GraphQLPaginator(connection),
            "/graphql",
            method="POST",
            json={"query": query, "operationName": operation, "variables": variables},
        )

    async def _fetch_teams(self, ctx: SourceContext) -> list[dict[str, Any]]:
        svc = self._service(ctx)
        variables: dict[str, Any] = {"first": min(self.config.page_size, 250)}
        wanted = self.config.team_ids
        if wanted:
            variables["filter"] = {"id": {"in": list(wanted)}}
        teams: list[dict[str, Any]] = []
        paginator = GraphQLPaginator("teams")
        async with contextlib.aclosing(
            self._pages(svc, "teams", "CfstreamTeams", TEAMS_QUERY, variables)
        ) as pages:
            async for page in pages:
                teams.extend(t for t in paginator.items(page) if isinstance(t, dict))
        if wanted:
            seen = {t.get("id") for t in teams}
            missing = [t for t in wanted if t not in seen]
            if missing:
                raise NotFoundError(
                    f"team_ids {missing} are not visible to this credential; check the IDs "
                    "(Linear: team settings, or `query { teams { nodes { id name } } }`) and that "
                    "the key's user is a member of those teams",
                    service="linear",
                    method="POST",
                    url=f"{self.config.base_url.rstrip('/')}/graphql",
                )
        return teams

    # -- partitions ------------------------------------------------------------------------------

    async def partitions(self, ctx: SourceContext) -> Sequence[str]:
        """``teams`` plus ``<kind>:<team id>`` for every team and content kind."""
        teams = await self._fetch_teams(ctx)
        self._teams = teams
        ids = sorted({str(t["id"]) for t in teams if t.get("id")})
        return ["teams", *(f"{kind}:{tid}" for tid in ids for kind in self.config.content)]

    def read(
        self, partition: str, cursor: Mapping[str, Any] | None, ctx: SourceContext
    ) -> AsyncIterator[SourceOutput]:
        """Read one partition from its cursor (see the module docstring for the cursor)."""
        if partition == "teams":
            return self._read_teams(cursor, ctx)
        kind, _, team_id = partition.partition(":")
        if kind not in _QUERIES or not team_id:
            raise ValueError(f"unknown Linear partition {partition!r}")
        return self._read_kind(kind, team_id, cursor, ctx)

    async def _read_teams(
        self, cursor: Mapping[str, Any] | None, ctx: SourceContext
    ) -> AsyncIterator[SourceOutput]:
        teams = self._teams if self._teams is not None else await self._fetch_teams(ctx)
        old: Mapping[str, Any] = (cursor or {}).get("hashes") or {}
        hashes: dict[str, str] = {}
        out: list[Item] = []
        unchanged = 0
        for node in teams:
            tid = str(node.get("id") or "")
            try:
                doc = self._map.team(node)
            except (ValueError, TypeError, KeyError) as exc:
                ctx.dead_letter(f"cannot map Linear team: {exc}", node, source_id=tid or None)
                if tid and tid in old:
                    hashes[tid] = str(old[tid])  # keep it: a broken payload is not a deletion
                continue
            h = doc.compute_hash()
            hashes[tid] = h
            if old.get(tid) == h:
                unchanged += 1
            else:
                out.append(doc)
        for tid in old:
            if tid not in hashes:
                out.append(Tombstone(team_source_id(tid), self.source_type))
        if unchanged:
            ctx.skipped_unchanged(unchanged)
        out.append(Checkpoint({"hashes": hashes}))
        yield out

    async def _read_kind(
        self, kind: str, team_id: str, cursor: Mapping[str, Any] | None, ctx: SourceContext
    ) -> AsyncIterator[SourceOutput]:
        cfg = self.config
        cursor = cursor or {}
        high: str | None = cursor.get("high")
        recent: dict[str, str] = dict(cursor.get("recent") or {})
        page_state: Mapping[str, Any] | None = cursor.get("page")
        lookback = timedelta(seconds=cfg.lookback_seconds)
        if page_state:  # resume an interrupted pass exactly where its last checkpoint was
            gt: str | None = page_state.get("gt")
            after: str | None = page_state.get("after")
            running: str | None = page_state.get("high")
            see_archived = bool(page_state.get("archived"))
        else:
            gt = _fmt_ts(_parse_ts(high) - lookback) if high else None
            after = None
            running = high
            # an incremental pass must see archived/trashed items to delete them
            see_archived = cfg.include_archived or high is not None or ctx.full_refresh
        operation, query = _QUERIES[kind]
        variables: dict[str, Any] = {
            "first": cfg.page_size,
            "filter": _filter_for(kind, team_id, gt),
            "includeArchived": see_archived,
        }
        if after:
            variables["after"] = after
        mapper = getattr(self._map, kind[:-1])
        prefix = _PREFIX[kind]
        paginator = GraphQLPaginator(kind)
        running_dt = _parse_ts(running) if running else None
        pages_since_checkpoint = 0
        out: list[Item] = []
        unchanged = 0
        async with contextlib.aclosing(
            self._pages(self._service(ctx), kind, operation, query, variables)
        ) as pages:
            async for page in pages:
                for node in paginator.items(page):
                    if not isinstance(node, Mapping):
                        ctx.dead_letter(f"Linear {kind} page held a non-object node", node)
                        continue
                    nid = node.get("id")
                    updated = node.get("updatedAt")
                    if isinstance(nid, str) and isinstance(updated, str):
                        if recent.get(nid) == updated:
                            unchanged += 1
                            continue
                        try:
                            up_dt = _parse_ts(updated)
                        except ValueError:
                            up_dt = None
                        if up_dt is not None:
                            recent[nid] = updated
                            if running_dt is None or up_dt > running_dt:
                                running_dt = up_dt
                    sid = f"{prefix}:{nid}" if isinstance(nid, str) else None
                    if sid is not None and (
                        node.get("trashed") is True
                        or (node.get("archivedAt") is not None and not cfg.include_archived)
                    ):
                        out.append(Tombstone(sid, self.source_type))
                        continue
                    try:
                        out.append(mapper(node, cfg.include_archived))
                    except (ValueError, TypeError, KeyError, AttributeError) as exc:
                        ctx.dead_letter(
                            f"cannot map Linear {prefix} {nid!r}: {exc}", node, source_id=sid
                        )
                pages_since_checkpoint += 1
                info = get_path(page.data, f"data.{kind}.pageInfo") or {}
                more = info.get("hasNextPage") is True and bool(info.get("endCursor"))
                if more and pages_since_checkpoint < cfg.checkpoint_every and not ctx.stopping:
                    continue
                pages_since_checkpoint = 0
                running = _fmt_ts(running_dt) if running_dt else running
                if more:
                    state: dict[str, Any] = {
                        "high": high,
                        "recent": _prune(recent, running, lookback),
                        "page": {
                            "gt": gt,
                            "after": info.get("endCursor"),
                            "high": running,
                            "archived": see_archived,
                        },
                    }
                else:
                    state = {"high": running, "recent": _prune(recent, running, lookback)}
                out.append(Checkpoint(state))
                if unchanged:
                    ctx.skipped_unchanged(unchanged)
                    unchanged = 0
                yield out
                out = []
                if ctx.stopping:
                    return


def _prune(recent: Mapping[str, str], high: str | None, lookback: timedelta) -> dict[str, str]:
    """Keep the entries inside the lookback window below ``high`` (at most ``_MAX_RECENT``)."""
    if high is None:
        return dict(recent)
    floor = _parse_ts(high) - lookback
    kept: list[tuple[datetime, str, str]] = []
    for nid, ts in recent.items():
        try:
            when = _parse_ts(ts)
        except ValueError:
            continue
        if when >= floor:
            kept.append((when, nid, ts))
    kept.sort(reverse=True)
    return {nid: ts for _, nid, ts in kept[:_MAX_RECENT]}
