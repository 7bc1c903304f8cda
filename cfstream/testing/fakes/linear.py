"""A fake Linear GraphQL API for tests, benchmarks and ``cfstream demo``.

:class:`FakeLinear` holds deterministic, mutable sample data (teams, workflow states, users,
labels, projects, issues with sub-issues, comments, documents) and serves it on ``POST /graphql``
of a :class:`~cfstream.testing.FakeAPI` with Linear's real shapes:

* Relay connections ``{nodes, edges{cursor node}, pageInfo{hasNextPage hasPreviousPage
  startCursor endCursor}}`` paged with ``first`` (default 50, at most 250) and ``after``;
* ``orderBy: createdAt`` (the default) or ``updatedAt``; ``includeArchived`` (archived and
  trashed items are hidden unless it is true);
* ``filter`` with the comparators of ``DateComparator``/``IDComparator`` (``eq neq gt gte lt lte
  in nin null``), nested object filters (``team``, ``issue``, ``project``), collection filters
  (``some``/``every``, ``accessibleTeams``) and ``and``/``or``;
* authentication: a personal API key as ``Authorization: <key>``, an OAuth token as
  ``Authorization: Bearer <token>``; anything else is Linear's ``AUTHENTICATION_ERROR``;
* rate-limit headers (``X-RateLimit-Requests-*``, ``X-Complexity``) on every answer, and
  :meth:`FakeLinear.rate_limited` for the ``RATELIMITED`` GraphQL error.

Queries are recognised by their operation name (``operationName`` or ``query <Name>``) and by the
root field they select; the answer contains exactly the fields the query selects (a small GraphQL
selection parser), and selecting a field the fake does not know is a GraphQL error, as on Linear.
Field names follow ``../shared/fixtures/linear/schema-excerpt.md`` (Linear's SDK schema).
"""

from __future__ import annotations

import base64
import random
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web

from cfstream.testing.server import FakeAPI, Fault, Reply

__all__ = ("FakeLinear", "GraphQLError", "demo_change", "demo_config", "mount")

DEFAULT_API_KEY = "lin_api_fAk3k3y0000000000000000000000000000demo"
DEFAULT_OAUTH_TOKEN = "lin_oauth_fAk3t0k3n00000000000000000000000000000demo"
MAX_FIRST = 250
_EPOCH = datetime(2024, 1, 8, 9, 0, tzinfo=UTC)


class GraphQLError(Exception):
    """A GraphQL error answered as ``{"errors": [...]}`` (HTTP 400, as Linear does)."""

    def __init__(self, message: str, code: str = "GRAPHQL_VALIDATION_FAILED") -> None:
        super().__init__(message)
        self.code = code


def _ts(value: datetime) -> str:
    return (
        value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    )


def _parse(value: Any) -> datetime:
    if not isinstance(value, str):
        raise GraphQLError(f"DateTimeOrDuration expected, got {value!r}", "INVALID_INPUT")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise GraphQLError(f"invalid DateTimeOrDuration {value!r}", "INVALID_INPUT") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# -- a small GraphQL reader: operation name, root field, arguments skipped, selection sets --------

_TOKEN = re.compile(
    r'"(?:[^"\\]|\\.)*"|\.\.\.|[A-Za-z_][A-Za-z0-9_]*|[{}():$!\[\]=@]|-?\d[\d.eE+-]*'
)
Selection = dict[str, "Selection | None"]


def _tokens(query: str) -> list[str]:
    text = re.sub(r"#[^\n]*", "", query)
    return _TOKEN.findall(text)


def _skip_parens(toks: list[str], i: int) -> int:
    depth = 0
    while i < len(toks):
        if toks[i] == "(":
            depth += 1
        elif toks[i] == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise GraphQLError("Syntax Error: unbalanced parentheses")


def _selection(toks: list[str], i: int) -> tuple[Selection, int]:
    """Parse ``{ a b(x: 1) { c } }`` starting at ``{``; aliases and fragments are not supported."""
    if toks[i] != "{":
        raise GraphQLError(f"Syntax Error: expected '{{', found {toks[i]!r}")
    i += 1
    out: Selection = {}
    while i < len(toks) and toks[i] != "}":
        name = toks[i]
        if name == "...":
            raise GraphQLError("the fake Linear API does not support fragments")
        i += 1
        if i < len(toks) and toks[i] == "(":
            i = _skip_parens(toks, i)
        sub: Selection | None = None
        if i < len(toks) and toks[i] == "{":
            sub, i = _selection(toks, i)
        out[name] = sub
    if i >= len(toks):
        raise GraphQLError("Syntax Error: unbalanced braces")
    return out, i + 1


def _value(toks: list[str], i: int, variables: Mapping[str, Any]) -> tuple[Any, int]:
    """One GraphQL input value starting at ``toks[i]``: a variable, literal, list or object."""
    tok = toks[i]
    if tok == "$":
        return variables.get(toks[i + 1]), i + 2
    if tok == "[":
        items: list[Any] = []
        i += 1
        while toks[i] != "]":
            item, i = _value(toks, i, variables)
            items.append(item)
        return items, i + 1
    if tok == "{":
        obj: dict[str, Any] = {}
        i += 1
        while toks[i] != "}":
            key = toks[i]
            if toks[i + 1] != ":":
                raise GraphQLError(f"Syntax Error: expected ':' after {key!r}")
            obj[key], i = _value(toks, i + 2, variables)
        return obj, i + 1
    if tok.startswith('"'):
        return orjson.loads(tok), i + 1
    if tok in ("true", "false"):
        return tok == "true", i + 1
    if tok == "null":
        return None, i + 1
    if re.fullmatch(r"-?\d+", tok):
        return int(tok), i + 1
    if re.fullmatch(r"-?\d[\d.eE+-]*", tok):
        return float(tok), i + 1
    return tok, i + 1  # an enum value such as updatedAt


def _args(toks: list[str], i: int, variables: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
    """The arguments ``( name: value ... )`` starting at ``toks[i] == "("``."""
    out: dict[str, Any] = {}
    i += 1
    while toks[i] != ")":
        name = toks[i]
        if toks[i + 1] != ":":
            raise GraphQLError(f"Syntax Error: expected ':' after argument {name!r}")
        out[name], i = _value(toks, i + 2, variables)
    return out, i + 1


def parse_operation(
    query: str, variables: Mapping[str, Any] | None = None
) -> tuple[str | None, str, dict[str, Any], Selection]:
    """``(operation name, root field, its arguments, its selection)`` of a one-root-field query.

    Arguments are resolved against ``variables``; aliases and fragments are not supported.
    """
    toks = _tokens(query)
    if not toks:
        raise GraphQLError("Syntax Error: empty query")
    i = 0
    name: str | None = None
    if toks[0] in ("query", "mutation", "subscription"):
        if toks[0] != "query":
            raise GraphQLError(f"the fake Linear API serves queries only, not {toks[0]}")
        i = 1
        if i < len(toks) and re.match(r"[A-Za-z_]", toks[i]):
            name = toks[i]
            i += 1
        if i < len(toks) and toks[i] == "(":
            i = _skip_parens(toks, i)
    if i >= len(toks) or toks[i] != "{":
        raise GraphQLError("Syntax Error: expected a selection set")
    root = toks[i + 1]
    args: dict[str, Any] = {}
    if toks[i + 2] == "(":
        try:
            args, _ = _args(toks, i + 2, variables or {})
        except IndexError:
            raise GraphQLError("Syntax Error: unexpected end of the query") from None
    body, _ = _selection(toks, i)
    if len(body) != 1:
        raise GraphQLError("the fake Linear API answers queries with exactly one root field")
    sub = body[root]
    if sub is None:
        raise GraphQLError(f"Field {root!r} must have a selection of subfields")
    return name, root, args, sub


def _project(value: Any, selection: Selection | None, type_name: str) -> Any:
    """Keep only the selected fields of ``value`` (a node, a list of nodes, or a scalar)."""
    if selection is None or value is None:
        return value
    if isinstance(value, list):
        return [_project(v, selection, type_name) for v in value]
    if not isinstance(value, Mapping):
        return value
    out: dict[str, Any] = {}
    for key, sub in selection.items():
        if key == "__typename":
            out[key] = value.get("__typename", type_name)
            continue
        if key not in value:
            raise GraphQLError(f'Cannot query field "{key}" on type "{type_name}".')
        out[key] = _project(value[key], sub, key)
    return out


# -- filters ---------------------------------------------------------------------------------------

_COMPARATORS = frozenset({"eq", "neq", "gt", "gte", "lt", "lte", "in", "nin", "null"})
_DATE_FIELDS = frozenset(
    {"createdAt", "updatedAt", "archivedAt", "completedAt", "canceledAt", "startedAt"}
)


def _compare(field_name: str, actual: Any, cond: Mapping[str, Any]) -> bool:
    is_date = field_name in _DATE_FIELDS

    def norm(v: Any) -> Any:
        return _parse(v) if is_date and v is not None else v

    a = norm(actual)
    for op, expected in cond.items():
        if op == "null":
            if (actual is None) != bool(expected):
                return False
            continue
        if op in ("in", "nin"):
            values = [norm(v) for v in (expected or [])]
            if (a in values) != (op == "in"):
                return False
            continue
        e = norm(expected)
        if op == "eq":
            ok = a == e
        elif op == "neq":
            ok = a != e
        elif a is None:
            ok = False
        elif op == "gt":
            ok = a > e
        elif op == "gte":
            ok = a >= e
        elif op == "lt":
            ok = a < e
        elif op == "lte":
            ok = a <= e
        else:
            raise GraphQLError(f"unknown comparator {op!r} on {field_name}", "INVALID_INPUT")
        if not ok:
            return False
    return True


def _matches(node: Mapping[str, Any] | None, flt: Mapping[str, Any] | None) -> bool:
    if not flt:
        return True
    if node is None:
        return False
    for key, cond in flt.items():
        if key == "and":
            if not all(_matches(node, f) for f in cond or []):
                return False
            continue
        if key == "or":
            if not any(_matches(node, f) for f in cond or []):
                return False
            continue
        if not isinstance(cond, Mapping):
            raise GraphQLError(f"filter {key!r} expects an object", "INVALID_INPUT")
        value_key = "teams" if key == "accessibleTeams" else key
        if value_key not in node:
            raise GraphQLError(f"the fake cannot filter on {key!r}", "INVALID_INPUT")
        value = node[value_key]
        if isinstance(value, Mapping) and isinstance(value.get("nodes"), list):
            items = value["nodes"]
            for op, sub in cond.items():
                if op == "some" and not any(_matches(n, sub) for n in items):
                    return False
                if op == "every" and not all(_matches(n, sub) for n in items):
                    return False
                if op not in ("some", "every", "length"):
                    raise GraphQLError(f"unknown collection filter {op!r}", "INVALID_INPUT")
            continue
        if set(cond) <= _COMPARATORS:
            if not _compare(key, value, cond):
                return False
            continue
        if not _matches(value if isinstance(value, Mapping) else None, cond):
            return False
    return True


def _cursor(key: tuple[str, str]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(key))).decode().rstrip("=")


def _uncursor(value: str) -> tuple[str, str]:
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        a, b = orjson.loads(raw)
        return str(a), str(b)
    except (ValueError, TypeError) as exc:
        raise GraphQLError(f"Invalid cursor {value!r}", "INVALID_INPUT") from exc


# -- sample data ------------------------------------------------------------------------------------

_TEAMS = [
    ("ENG", "Engineering", "Backend, frontend and infrastructure work."),
    ("DES", "Design", "Product design, research and the design system."),
    ("OPS", "Operations", "Support escalations, billing and internal tooling."),
]
_STATES = [
    ("Backlog", "backlog", "#bec2c8"),
    ("Todo", "unstarted", "#e2e2e2"),
    ("In Progress", "started", "#f2c94c"),
    ("In Review", "started", "#5e6ad2"),
    ("Done", "completed", "#5e6ad2"),
    ("Canceled", "canceled", "#95a2b3"),
]
_USERS = [
    ("Ada Lovelace", "ada"),
    ("Grace Hopper", "grace"),
    ("Linus Pauling", "linus"),
    ("Margaret Hamilton", "margaret"),
    ("Alan Kay", "alan"),
]
_LABELS = [
    ("Bug", "#eb5757"),
    ("Feature", "#bb87fc"),
    ("Improvement", "#4ea7fc"),
    ("Docs", "#26b5ce"),
]
_PROJECTS = [
    ("Search v2", "Rebuild search on the new index with typo tolerance.", "started"),
    ("Onboarding revamp", "Shorten time-to-value for new workspaces.", "planned"),
    ("Billing migration", "Move invoicing to the new payments provider.", "started"),
    ("Design system 3.0", "Tokens, dark mode and accessible components.", "backlog"),
]
_SUBJECTS = [
    "search results",
    "the sign-up form",
    "invoice PDFs",
    "the settings page",
    "webhook retries",
    "the mobile navbar",
    "SSO login",
    "CSV export",
    "the activity feed",
    "dark mode colours",
    "rate limiting",
    "email digests",
    "the API docs",
    "file uploads",
    "keyboard shortcuts",
]
_VERBS = ["Fix", "Improve", "Add tests for", "Refactor", "Document", "Speed up", "Redesign"]
_COMMENTS = [
    "I can reproduce this on staging. Logs attached below.",
    "Looks good to me, shipping behind the feature flag first.",
    "Could we split this into two smaller PRs?",
    "Customer reported this again today (ticket #4821).",
    "Blocked on the API change, picking it up next cycle.",
    "Added a regression test; CI is green.",
    "Design review done, see the Figma link in the description.",
]
_DOCS = [
    (
        "Technical spec",
        "## Goals\n\n- Keep p95 latency under 200 ms\n- No downtime during rollout\n\n"
        "## Plan\n\n1. Dual-write\n2. Backfill\n3. Switch reads",
    ),
    ("Launch checklist", "- [ ] Changelog entry\n- [ ] Docs updated\n- [x] Support briefed"),
    ("Meeting notes", "**Decisions**: ship in two phases. **Owners**: Ada (backend), Grace (UI)."),
]


@dataclass
class _Store:
    users: list[dict[str, Any]] = field(default_factory=list)
    teams: list[dict[str, Any]] = field(default_factory=list)
    states: dict[str, dict[str, Any]] = field(default_factory=dict)
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)
    projects: dict[str, dict[str, Any]] = field(default_factory=dict)
    issues: dict[str, dict[str, Any]] = field(default_factory=dict)
    comments: dict[str, dict[str, Any]] = field(default_factory=dict)
    documents: dict[str, dict[str, Any]] = field(default_factory=dict)


class FakeLinear:
    """Deterministic Linear workspace data served as Linear's GraphQL API.

    :param issues: how many issues to generate (spread over the teams; every 6th is a sub-issue).
    :param comments_per_issue: average comments per issue.
    :param teams: how many teams (1..3).
    :param seed: the random seed; the same seed gives the same workspace.
    :param api_key: the personal API key the fake accepts.
    :param oauth_token: the OAuth token the fake accepts (as ``Bearer``).

    The data is plain dicts (``fake.issues[id]["title"] = ...`` works); after a direct edit call
    :meth:`touch` so the item's ``updatedAt`` moves, as Linear's does. :attr:`served` records the
    IDs of the nodes each answer contained, ``(operation, [ids])``.
    """

    def __init__(
        self,
        *,
        issues: int = 36,
        comments_per_issue: float = 1.5,
        teams: int = 2,
        seed: int = 0,
        api_key: str = DEFAULT_API_KEY,
        oauth_token: str = DEFAULT_OAUTH_TOKEN,
    ) -> None:
        if not 1 <= teams <= len(_TEAMS):
            raise ValueError(f"teams must be within 1..{len(_TEAMS)}")
        self.api_key = api_key
        self.oauth_token = oauth_token
        self.rng = random.Random(seed)
        self.data = _Store()
        self.served: list[tuple[str, list[str]]] = []
        self.requests_limit = 5000
        self._requests_used = 0
        self._last = _EPOCH
        self._numbers: dict[str, int] = {}
        self._generate(issues, comments_per_issue, teams)

    # -- ids and clock ---------------------------------------------------------------------------

    def _id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _seed_time(self, step_minutes: float) -> str:
        self._last = self._last + timedelta(
            minutes=step_minutes, milliseconds=self.rng.randint(1, 999)
        )
        return _ts(self._last)

    def now(self) -> str:
        """A new ``updatedAt`` for a mutation: wall-clock time, never before the previous one."""
        wall = datetime.now(UTC)
        self._last = max(wall, self._last + timedelta(milliseconds=1))
        return _ts(self._last)

    # -- generation ------------------------------------------------------------------------------

    def _generate(self, n_issues: int, comments_per_issue: float, n_teams: int) -> None:
        d = self.data
        rng = self.rng
        for full, handle in _USERS:
            d.users.append(
                {
                    "id": self._id(),
                    "name": full,
                    "displayName": handle,
                    "email": f"{handle}@example.com",
                    "active": True,
                    "createdAt": self._seed_time(5),
                    "updatedAt": _ts(self._last),
                    "archivedAt": None,
                    "url": f"https://linear.app/acme/profiles/{handle}",
                }
            )
        for key, name, description in _TEAMS[:n_teams]:
            created = self._seed_time(30)
            team: dict[str, Any] = {
                "id": self._id(),
                "key": key,
                "name": name,
                "description": description,
                "createdAt": created,
                "updatedAt": created,
                "archivedAt": None,
            }
            d.teams.append(team)
            self._numbers[team["id"]] = 0
            for pos, (sname, stype, color) in enumerate(_STATES):
                sid = self._id()
                d.states[sid] = {
                    "id": sid,
                    "name": sname,
                    "type": stype,
                    "color": color,
                    "position": float(pos),
                    "team_id": team["id"],
                    "createdAt": created,
                    "updatedAt": created,
                    "archivedAt": None,
                }
        for lname, color in _LABELS:
            lid = self._id()
            d.labels[lid] = {
                "id": lid,
                "name": lname,
                "color": color,
                "description": None,
                "createdAt": self._seed_time(1),
                "updatedAt": _ts(self._last),
                "archivedAt": None,
            }
        for i, (pname, desc, state) in enumerate(_PROJECTS):
            team_ids = [d.teams[i % len(d.teams)]["id"]]
            if i == 0 and len(d.teams) > 1:
                team_ids.append(d.teams[1]["id"])  # one project spans two teams
            self.add_project(pname, desc, team_ids=team_ids, state=state, _seed=True)
        for _ in range(n_issues):
            self.add_issue(_seed=True)
        for iid in list(d.issues):
            for _ in range(int(comments_per_issue) + (rng.random() < comments_per_issue % 1)):
                self.add_comment(iid, _seed=True)
        for i, (title, content) in enumerate(_DOCS * 2):
            project = list(d.projects)[i % len(d.projects)]
            self.add_document(project, title=f"{title} #{i + 1}", content=content, _seed=True)

    # -- mutation helpers ------------------------------------------------------------------------

    def _stamp(self, seed: bool) -> str:
        return self._seed_time(self.rng.randint(20, 400)) if seed else self.now()

    def team_ids(self) -> list[str]:
        """IDs of the teams, in creation order."""
        return [t["id"] for t in self.data.teams]

    def identifier(self, issue_id: str) -> str:
        """The human identifier of an issue (``ENG-12``)."""
        row = self.data.issues[issue_id]
        return f"{self.team(row['team_id'])['key']}-{int(row['number'])}"

    def team(self, key_or_id: str) -> dict[str, Any]:
        """A team by key (``ENG``) or ID."""
        for t in self.data.teams:
            if key_or_id in (t["id"], t["key"]):
                return t
        raise KeyError(key_or_id)

    def add_project(
        self,
        name: str,
        description: str = "",
        *,
        team_ids: list[str] | None = None,
        state: str = "planned",
        _seed: bool = False,
    ) -> str:
        """Add a project (in ``team_ids``, default the first team); returns its ID."""
        pid = self._id()
        stamp = self._stamp(_seed)
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        self.data.projects[pid] = {
            "id": pid,
            "name": name,
            "description": description,
            "state": state,
            "startDate": stamp[:10] if state != "backlog" else None,
            "targetDate": None,
            "url": f"https://linear.app/acme/project/{slug}-{pid[:8]}",
            "createdAt": stamp,
            "updatedAt": stamp,
            "archivedAt": None,
            "trashed": None,
            "lead_id": self.rng.choice(self.data.users)["id"],
            "team_ids": list(team_ids or [self.data.teams[0]["id"]]),
        }
        return pid

    def add_issue(
        self,
        team: str | None = None,
        *,
        title: str | None = None,
        description: str | None = None,
        parent_id: str | None = None,
        project_id: str | None = None,
        _seed: bool = False,
    ) -> str:
        """Add an issue to ``team`` (key or ID; default: a random team); returns its ID."""
        d = self.data
        rng = self.rng
        team_row = self.team(team) if team else rng.choice(d.teams)
        tid = team_row["id"]
        candidates = [i for i in d.issues.values() if i["team_id"] == tid and not i["parent_id"]]
        if parent_id is None and _seed and candidates and rng.random() < 1 / 6:
            parent_id = rng.choice(candidates)["id"]
        if project_id is None and _seed and rng.random() < 0.6:
            in_team = [p for p in d.projects.values() if tid in p["team_ids"]]
            project_id = rng.choice(in_team)["id"] if in_team else None
        self._numbers[tid] += 1
        number = self._numbers[tid]
        states = [s for s in d.states.values() if s["team_id"] == tid]
        state = rng.choice(states)
        subject = rng.choice(_SUBJECTS)
        stamp = self._stamp(_seed)
        iid = self._id()
        d.issues[iid] = {
            "id": iid,
            "team_id": tid,
            "number": float(number),
            "title": title or f"{rng.choice(_VERBS)} {subject}",
            "description": description
            if description is not None
            else (
                f"When using {subject}, users see unexpected behaviour.\n\n"
                f"**Steps**\n1. Open {subject}\n2. Try again after a refresh\n\n"
                f"_Expected_: it works the first time."
            ),
            "priority": float(rng.randint(0, 4)),
            "estimate": float(rng.choice([1, 2, 3, 5, 8])) if rng.random() < 0.7 else None,
            "dueDate": None,
            "state_id": state["id"],
            "assignee_id": rng.choice(d.users)["id"] if rng.random() < 0.8 else None,
            "creator_id": rng.choice(d.users)["id"],
            "label_ids": sorted(rng.sample(list(d.labels), rng.randint(0, 2))),
            "project_id": project_id,
            "parent_id": parent_id,
            "createdAt": stamp,
            "updatedAt": stamp,
            "completedAt": stamp if state["type"] == "completed" else None,
            "canceledAt": stamp if state["type"] == "canceled" else None,
            "archivedAt": None,
            "trashed": None,
        }
        return iid

    def add_comment(
        self,
        issue_id: str,
        body: str | None = None,
        *,
        parent_id: str | None = None,
        _seed: bool = False,
    ) -> str:
        """Add a comment to an issue; returns its ID."""
        cid = self._id()
        stamp = self._stamp(_seed)
        self.data.comments[cid] = {
            "id": cid,
            "issue_id": issue_id,
            "user_id": self.rng.choice(self.data.users)["id"],
            "body": body or self.rng.choice(_COMMENTS),
            "parent_id": parent_id,
            "createdAt": stamp,
            "updatedAt": stamp,
            "editedAt": None,
            "archivedAt": None,
        }
        return cid

    def add_document(
        self, project_id: str, *, title: str, content: str = "", _seed: bool = False
    ) -> str:
        """Add a document to a project; returns its ID."""
        did = self._id()
        stamp = self._stamp(_seed)
        self.data.documents[did] = {
            "id": did,
            "title": title,
            "content": content,
            "slugId": did.replace("-", "")[:12],
            "project_id": project_id,
            "creator_id": self.rng.choice(self.data.users)["id"],
            "createdAt": stamp,
            "updatedAt": stamp,
            "archivedAt": None,
            "trashed": None,
        }
        return did

    def _table(self, kind: str) -> dict[str, dict[str, Any]]:
        tables: dict[str, dict[str, dict[str, Any]]] = {
            "issue": self.data.issues,
            "comment": self.data.comments,
            "project": self.data.projects,
            "document": self.data.documents,
        }
        return tables[kind]

    def touch(self, kind: str, item_id: str) -> str:
        """Move ``updatedAt`` of an item (``issue``, ``comment``, ``project``, ``document``)."""
        row = self._table(kind)[item_id]
        row["updatedAt"] = self.now()
        return str(row["updatedAt"])

    def edit(self, kind: str, item_id: str, **fields: Any) -> None:
        """Change fields of an item and move its ``updatedAt`` (``fake.edit("issue", id, title=...)``)."""
        row = self._table(kind)[item_id]
        for key, value in fields.items():
            if key not in row:
                raise KeyError(f"{kind} has no field {key!r}")
            row[key] = value
        if kind == "issue" and "state_id" in fields:
            stype = self.data.states[row["state_id"]]["type"]
            row["completedAt"] = self.now() if stype == "completed" else None
        self.touch(kind, item_id)

    def set_state(self, issue_id: str, state_name: str) -> None:
        """Move an issue to its team's workflow state named ``state_name``."""
        tid = self.data.issues[issue_id]["team_id"]
        for s in self.data.states.values():
            if s["team_id"] == tid and s["name"] == state_name:
                self.edit("issue", issue_id, state_id=s["id"])
                return
        raise KeyError(state_name)

    def archive(self, kind: str, item_id: str) -> None:
        """Archive an item (``archivedAt`` and ``updatedAt`` set to now)."""
        row = self._table(kind)[item_id]
        row["archivedAt"] = row["updatedAt"] = self.now()

    def delete(self, kind: str, item_id: str) -> None:
        """Delete an item the way Linear's UI does: to the trash (``trashed``, archived).

        Deleting an issue also archives its comments and detaches its sub-issues (their
        ``parent`` becomes null); deleting a project detaches its issues and trashes its documents.
        Comments have no trash: they are archived.
        """
        row = self._table(kind)[item_id]
        stamp = self.now()
        row["archivedAt"] = row["updatedAt"] = stamp
        if "trashed" in row:
            row["trashed"] = True
        if kind == "issue":
            for c in self.data.comments.values():
                if c["issue_id"] == item_id and c["archivedAt"] is None:
                    c["archivedAt"] = c["updatedAt"] = stamp
            for child in self.data.issues.values():
                if child["parent_id"] == item_id:
                    child["parent_id"] = None
                    child["updatedAt"] = stamp
        elif kind == "project":
            for issue in self.data.issues.values():
                if issue["project_id"] == item_id:
                    issue["project_id"] = None
                    issue["updatedAt"] = stamp
            for doc in self.data.documents.values():
                if doc["project_id"] == item_id and doc["archivedAt"] is None:
                    doc["archivedAt"] = doc["updatedAt"] = stamp
                    doc["trashed"] = True

    def purge(self, kind: str, item_id: str) -> None:
        """Remove an item for good (what Linear does 30 days after trashing): nothing reports it."""
        del self._table(kind)[item_id]

    def corrupt(self, kind: str, item_id: str, **fields: Any) -> None:
        """Give an item invalid values (``title=None``, ``createdAt="yesterday"``) and touch it."""
        row = self._table(kind)[item_id]
        row.update(fields)
        row["updatedAt"] = self.now()

    def rate_limited(self, wait: float = 0.05) -> Fault:
        """Linear's rate-limit answer: HTTP 400, GraphQL error ``RATELIMITED``, reset headers.

        Use with ``api.faults.script("POST", "/graphql", [..., fake.rate_limited()])``.
        """
        reset_ms = int((time.time() + wait) * 1000)
        return Fault.rate_limit(
            None,
            status=400,
            body={
                "errors": [
                    {
                        "message": "Rate limit exceeded",
                        "extensions": {
                            "code": "RATELIMITED",
                            "type": "ratelimited",
                            "userPresentableMessage": "Too many requests: please try again later.",
                        },
                    }
                ]
            },
            headers={
                "X-RateLimit-Requests-Limit": str(self.requests_limit),
                "X-RateLimit-Requests-Remaining": "0",
                "X-RateLimit-Requests-Reset": str(reset_ms),
            },
        )

    # -- rendering (the API's node shapes) -------------------------------------------------------

    def _user(self, uid: str | None) -> dict[str, Any] | None:
        if uid is None:
            return None
        for u in self.data.users:
            if u["id"] == uid:
                return dict(u)
        return None

    def _team_node(self, tid: str) -> dict[str, Any]:
        return dict(self.team(tid))

    def _state_node(self, sid: str) -> dict[str, Any]:
        s = dict(self.data.states[sid])
        s["team"] = self._team_node(s.pop("team_id"))
        return s

    def _project_node(self, pid: str | None) -> dict[str, Any] | None:
        if pid is None or pid not in self.data.projects:
            return None
        p = dict(self.data.projects[pid])
        p["lead"] = self._user(p.pop("lead_id"))
        teams = [self._team_node(t) for t in p.pop("team_ids")]
        p["teams"] = _connection(teams)
        slug = p["url"].rsplit("/", 1)[-1]
        p["slugId"] = slug.rsplit("-", 1)[-1]
        return p

    def _issue_node(self, iid: str, depth: int = 0) -> dict[str, Any] | None:
        row = self.data.issues.get(iid)
        if row is None:
            return None
        i = dict(row)
        team = self._team_node(i.pop("team_id"))
        number = int(i["number"])
        i["identifier"] = f"{team['key']}-{number}"
        i["url"] = f"https://linear.app/acme/issue/{i['identifier']}"
        i["team"] = team
        i["state"] = self._state_node(i.pop("state_id"))
        i["assignee"] = self._user(i.pop("assignee_id"))
        i["creator"] = self._user(i.pop("creator_id"))
        i["labels"] = _connection([dict(self.data.labels[x]) for x in i.pop("label_ids")])
        i["project"] = self._project_node(i.pop("project_id"))
        parent_id = i.pop("parent_id")
        i["parent"] = self._issue_node(parent_id, depth + 1) if parent_id and depth < 3 else None
        i["priorityLabel"] = ["No priority", "Urgent", "High", "Medium", "Low"][int(i["priority"])]
        return i

    def _comment_node(self, cid: str) -> dict[str, Any]:
        c = dict(self.data.comments[cid])
        c["user"] = self._user(c.pop("user_id"))
        issue = self._issue_node(c.pop("issue_id"))
        c["issue"] = issue
        parent_id = c.pop("parent_id")
        c["parent"] = {"id": parent_id} if parent_id else None
        ident = issue["identifier"] if issue else "unknown"
        c["url"] = f"https://linear.app/acme/issue/{ident}#comment-{cid[:8]}"
        return c

    def _document_node(self, did: str) -> dict[str, Any]:
        doc = dict(self.data.documents[did])
        doc["creator"] = self._user(doc.pop("creator_id"))
        doc["project"] = self._project_node(doc.pop("project_id"))
        doc["url"] = f"https://linear.app/acme/document/{doc['slugId']}"
        return doc

    def _nodes(self, root: str) -> tuple[str, list[dict[str, Any]]]:
        d = self.data
        if root == "issues":
            return "Issue", [n for i in d.issues if (n := self._issue_node(i)) is not None]
        if root == "comments":
            return "Comment", [self._comment_node(c) for c in d.comments]
        if root == "projects":
            return "Project", [p for x in d.projects if (p := self._project_node(x)) is not None]
        if root == "documents":
            return "Document", [self._document_node(x) for x in d.documents]
        if root == "teams":
            return "Team", [self._team_node(t["id"]) for t in d.teams]
        if root == "users":
            return "User", [dict(u) for u in d.users]
        raise GraphQLError(f'Cannot query field "{root}" on type "Query".')

    # -- serving ---------------------------------------------------------------------------------

    def mount(self, api: FakeAPI) -> None:
        """Serve this workspace on ``POST /graphql`` of ``api``."""
        api.route("POST", "/graphql", self._handle)

    def _rate_headers(self) -> dict[str, str]:
        now = time.time()
        reset = (int(now // 3600) + 1) * 3600 * 1000
        remaining = max(1, self.requests_limit - self._requests_used)
        return {
            "X-RateLimit-Requests-Limit": str(self.requests_limit),
            "X-RateLimit-Requests-Remaining": str(remaining),
            "X-RateLimit-Requests-Reset": str(reset),
            "X-RateLimit-Complexity-Limit": "3000000",
            "X-RateLimit-Complexity-Remaining": "2999000",
            "X-RateLimit-Complexity-Reset": str(reset),
        }

    def _authorised(self, header: str | None) -> bool:
        return header is not None and header in (self.api_key, f"Bearer {self.oauth_token}")

    async def _handle(self, request: web.Request) -> Reply:
        self._requests_used += 1
        headers = self._rate_headers()
        if not self._authorised(request.headers.get("Authorization")):
            return Reply(
                {
                    "errors": [
                        {
                            "message": "Authentication required, not authenticated",
                            "extensions": {
                                "code": "AUTHENTICATION_ERROR",
                                "type": "authentication error",
                                "statusCode": 401,
                                "userError": True,
                                "userPresentableMessage": (
                                    "You need to authenticate to access this operation."
                                ),
                            },
                        }
                    ]
                },
                status=400,
                headers=headers,
            )
        try:
            raw = await request.read()
            doc = orjson.loads(raw) if raw else None
            if not isinstance(doc, dict) or not isinstance(doc.get("query"), str):
                raise GraphQLError("Must provide query string.", "BAD_USER_INPUT")
            data, complexity = self.execute(
                doc["query"], doc.get("variables") or {}, doc.get("operationName")
            )
        except GraphQLError as exc:
            return Reply(
                {"errors": [{"message": str(exc), "extensions": {"code": exc.code}}]},
                status=400,
                headers=headers,
            )
        except orjson.JSONDecodeError:
            return Reply(
                {
                    "errors": [
                        {
                            "message": "POST body is not JSON",
                            "extensions": {"code": "BAD_USER_INPUT"},
                        }
                    ]
                },
                status=400,
                headers=headers,
            )
        headers["X-Complexity"] = str(complexity)
        return Reply({"data": data}, headers=headers)

    def execute(
        self, query: str, variables: Mapping[str, Any], operation_name: str | None = None
    ) -> tuple[dict[str, Any], int]:
        """Run one query; returns ``(data, complexity)`` or raises :class:`GraphQLError`."""
        name, root, args, selection = parse_operation(query, variables)
        if operation_name is not None and name is not None and operation_name != name:
            raise GraphQLError(f'Unknown operation named "{operation_name}".')
        type_name, nodes = self._nodes(root)
        first = args.get("first")
        if args.get("last") is not None or args.get("before") is not None:
            raise GraphQLError("the fake Linear API pages forward only (first/after)")
        size = 50 if first is None else int(first)
        if not 0 < size <= MAX_FIRST:
            raise GraphQLError(
                f"first must be between 1 and {MAX_FIRST}, got {size}", "INVALID_INPUT"
            )
        if not args.get("includeArchived"):
            nodes = [n for n in nodes if n.get("archivedAt") is None]
        flt = args.get("filter")
        if flt is not None and not isinstance(flt, Mapping):
            raise GraphQLError("filter must be an object", "INVALID_INPUT")
        nodes = [n for n in nodes if _matches(n, flt)]
        order = args.get("orderBy") or "createdAt"
        if order not in ("createdAt", "updatedAt"):
            raise GraphQLError(f'Value "{order}" does not exist in "PaginationOrderBy" enum.')

        def key(n: Mapping[str, Any]) -> tuple[str, str]:
            return (_ts(_parse(n[order])), str(n["id"]))

        nodes.sort(key=key)
        after = args.get("after")
        if after:
            mark = _uncursor(str(after))
            nodes = [n for n in nodes if key(n) > mark]
        page, more = nodes[:size], len(nodes) > size
        edges = [{"cursor": _cursor(key(n)), "node": n} for n in page]
        connection = {
            "nodes": page,
            "edges": edges,
            "pageInfo": {
                "hasNextPage": more,
                "hasPreviousPage": bool(after),
                "startCursor": edges[0]["cursor"] if edges else None,
                "endCursor": edges[-1]["cursor"] if edges else None,
            },
        }
        result = _project(connection, selection, f"{type_name}Connection")
        self.served.append((name or root, [str(n["id"]) for n in page]))
        return {root: result}, 1 + size * max(1, len(selection.get("nodes") or {}) // 4)


def _connection(nodes: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "nodes": nodes,
        "edges": [{"cursor": _cursor(("", str(n["id"]))), "node": n} for n in nodes],
        "pageInfo": {
            "hasNextPage": False,
            "hasPreviousPage": False,
            "startCursor": None,
            "endCursor": None,
        },
    }


# -- the module interface cfstream demo and benchmarks use -----------------------------------------


def mount(api: FakeAPI, **options: Any) -> FakeLinear:
    """Serve a :class:`FakeLinear` (built with ``options``) on ``api``; returns it."""
    fake = FakeLinear(**options)
    fake.mount(api)
    return fake


def demo_config(base_url: str) -> dict[str, Any]:
    """The ``linear`` source options for ``cfstream demo`` against a fake at ``base_url``."""
    return {
        "api_key": DEFAULT_API_KEY,
        "base_url": base_url,
        "page_size": 10,
        "requests_per_second": 50.0,
        "burst": 50,
    }


def demo_change(fake: FakeLinear) -> list[str]:
    """Edit the demo workspace: one new issue, two edits, a new comment, one deletion."""
    issues = [i for i in fake.data.issues.values() if i["archivedAt"] is None]
    changed: list[str] = []
    first, second, third = issues[0]["id"], issues[1]["id"], issues[2]["id"]
    new = fake.add_issue(fake.data.teams[0]["key"], title="Investigate slow dashboard load")
    changed.append(f"added issue {fake.identifier(new)}")
    fake.edit("issue", first, title=str(issues[0]["title"]) + " (updated)")
    changed.append(f"renamed issue {fake.identifier(first)}")
    fake.set_state(second, "Done")
    changed.append(f"closed issue {fake.identifier(second)}")
    fake.add_comment(second, "Verified on production, closing.")
    changed.append("added a comment")
    fake.delete("issue", third)
    changed.append(f"deleted issue {fake.identifier(third)}")
    return changed
