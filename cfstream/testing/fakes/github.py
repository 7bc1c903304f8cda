"""A fake GitHub REST API (version 2022-11-28) on :class:`~cfstream.testing.FakeAPI`.

:class:`FakeGitHub` holds deterministic, mutable sample repositories - files (as real git blobs
and trees with real sha-1 ids), issues, pull requests and comments - and serves them with GitHub's
shapes and rules:

* ``GET /repos/{o}/{r}`` and ``/repositories/{id}``;
* ``GET /repos/{o}/{r}/git/trees/{sha-or-branch}[?recursive=1]`` (``truncated`` when a listing has
  more than ``truncate_tree_over`` entries) and ``GET /repos/{o}/{r}/git/blobs/{sha}`` (base64 with
  a newline every 60 characters);
* ``GET /repos/{o}/{r}/issues`` (issues and PRs, ``state`` default ``open``, ``labels`` = all of
  them, ``since`` = updated at or after, ``sort``/``direction``, ``per_page`` default 30 max 100 +
  ``page``) with ``Link`` headers whose URLs switch to ``/repositories/{id}/issues`` like the real
  chains; ``GET .../issues/{n}/comments`` and the repo-wide ``GET .../issues/comments?since=``;
* ``GET /rate_limit``; ``x-ratelimit-*`` headers on every answer; a spent budget answers ``403`` with
  ``x-ratelimit-remaining: 0`` and the reset time, as GitHub does;
* ``Authorization: Bearer <token>`` (or ``token <token>``); a wrong token is ``401 Bad
  credentials``; no token works for public repositories at the anonymous limit, and a private
  repository then answers ``404``.

Timestamps come from a virtual clock that ticks one minute per change, so the data is the same in
every process. Assumption, documented in ``docs/connectors/github.md``: adding or deleting a
comment moves its issue's ``updated_at`` (editing a comment does not).

Module hooks for ``cfstream demo``: :func:`mount`, :func:`demo_config`, :func:`demo_change`.
"""

from __future__ import annotations

import base64
import hashlib
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from yarl import URL

from cfstream.testing.server import FakeAPI, Reply, github_link_header

__all__ = (
    "DEMO_TOKEN",
    "FakeGitHub",
    "FakeRepo",
    "demo_change",
    "demo_config",
    "git_blob_sha",
    "mount",
)

#: the token the demo config sends (a fake; the fake server accepts it)
DEMO_TOKEN = "ghp_cfstreamDemoToken0000000000000000000"

_DOCS = "https://docs.github.com/rest"
_TOPICS = (
    (
        "getting-started",
        "Getting started",
        "install the tools, clone the repository and run the checks",
    ),
    ("architecture", "Architecture", "how the services talk to each other and where state lives"),
    ("deployment", "Deployment", "how a release is built, signed and rolled out"),
    ("on-call", "On-call", "what to do when the pager goes off at night"),
    ("code-review", "Code review", "what reviewers look for and how long a review may take"),
    ("testing", "Testing", "unit, integration and end-to-end tests and when to write which"),
    ("security", "Security", "secrets handling, dependency updates and incident reporting"),
    ("observability", "Observability", "metrics, logs and traces and the dashboards that use them"),
    ("releases", "Releases", "versioning, changelogs and the release calendar"),
    ("style", "Style guide", "naming, formatting and documentation conventions"),
)
_USERS = ("octocat", "hubot", "monalisa", "mojombo", "defunkt", "pjhyett")
_LABELS = {
    "bug": ("d73a4a", "Something isn't working"),
    "documentation": ("0075ca", "Improvements or additions to documentation"),
    "enhancement": ("a2eeef", "New feature or request"),
    "question": ("d876e3", "Further information is requested"),
    "good first issue": ("7057ff", "Good for newcomers"),
}
_ISSUE_SUBJECTS = (
    "Broken link in the {t} guide",
    "Document the {t} workflow",
    "Clarify the {t} checklist",
    "{t}: the example does not run",
    "Add a diagram to {t}",
    "Typo in {t}",
)


def git_blob_sha(data: bytes) -> str:
    """The git object id of a blob with ``data`` (what ``git hash-object`` prints)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _git_tree_sha(entries: Sequence[tuple[str, str, str]]) -> str:
    """The git object id of a tree of ``(mode, name, sha)`` entries (git's sort order)."""
    body = b"".join(
        f"{mode.lstrip('0')} {name}".encode() + b"\0" + bytes.fromhex(sha)
        for mode, name, sha in sorted(
            entries, key=lambda e: e[1] + "/" if e[0] == "040000" else e[1]
        )
    )
    return hashlib.sha1(b"tree %d\0" % len(body) + body).hexdigest()


def _wrap64(data: bytes) -> str:
    """Base64 with a newline every 60 characters, as the blobs and contents APIs send it."""
    text = base64.b64encode(data).decode()
    return "".join(text[i : i + 60] + "\n" for i in range(0, len(text), 60))


def _int_param(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


@dataclass
class _Tree:
    sha: str
    #: entries of this folder: (mode, type, name, sha, size or None)
    entries: list[tuple[str, str, str, str, int | None]]


@dataclass
class FakeRepo:
    """One fake repository: files on its default branch, issues (and PRs), comments."""

    id: int
    owner: str
    name: str
    default_branch: str = "main"
    description: str = ""
    private: bool = False
    topics: list[str] = field(default_factory=list)
    created_at: str = ""
    pushed_at: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    #: every blob ever stored, by sha (git objects never change)
    blobs: dict[str, bytes] = field(default_factory=dict)
    issues: dict[int, dict[str, Any]] = field(default_factory=dict)
    comments: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: raw fields merged into an issue's JSON (to serve malformed items)
    overrides: dict[int, dict[str, Any]] = field(default_factory=dict)
    _trees: dict[str, _Tree] | None = None
    _root: str = ""

    @property
    def full_name(self) -> str:
        """``owner/name``."""
        return f"{self.owner}/{self.name}"

    def trees(self) -> tuple[str, dict[str, _Tree]]:
        """The root tree sha and every tree object by sha (cached until the files change)."""
        if self._trees is None:
            folders: dict[str, list[tuple[str, str, str, str, int | None]]] = {"": []}
            for path in sorted(self.files):
                parts = path.split("/")
                for i in range(1, len(parts)):
                    folders.setdefault("/".join(parts[:i]), [])
            for path, data in self.files.items():
                parent, _, base = path.rpartition("/")
                sha = git_blob_sha(data)
                self.blobs[sha] = data
                folders[parent].append(("100644", "blob", base, sha, len(data)))
            trees: dict[str, _Tree] = {}
            shas: dict[str, str] = {}
            for folder in sorted(folders, key=lambda f: -f.count("/") if f else 1):
                entries = folders[folder]
                sha = _git_tree_sha([(m, n, s) for m, _t, n, s, _z in entries])
                shas[folder] = sha
                trees[sha] = _Tree(sha, sorted(entries, key=lambda e: e[2]))
                if folder:
                    parent, _, base = folder.rpartition("/")
                    folders[parent].append(("040000", "tree", base, sha, None))
            self._root = shas[""]
            self._trees = trees
        return self._root, self._trees

    def touch_files(self) -> None:
        """Forget the cached trees after a file change."""
        self._trees = None


class FakeGitHub:
    """Deterministic sample GitHub data and the routes that serve it.

    :param owner: owner of the default repository.
    :param repo: name of the default repository.
    :param files: markdown/Python files in it (a binary ``assets/logo.png`` comes on top).
    :param issues: issues and pull requests in it (every fourth is a PR).
    :param token: the token the fake accepts (None: every request is anonymous).
    :param private: the default repository is private (anonymous requests get 404).
    :param rate_limit: requests per ``rate_window`` seconds for a token.
    :param anonymous_rate_limit: requests per ``rate_window`` seconds without a token.
    :param truncate_tree_over: a recursive tree listing with more entries is cut and marked
        ``truncated`` (GitHub's limit is 100,000 entries).
    :param web_url: the web origin used in ``html_url`` fields.
    """

    def __init__(
        self,
        *,
        owner: str = "acme",
        repo: str = "handbook",
        files: int = 24,
        issues: int = 40,
        token: str | None = DEMO_TOKEN,
        private: bool = False,
        rate_limit: int = 5000,
        anonymous_rate_limit: int = 60,
        rate_window: float = 3600.0,
        truncate_tree_over: int = 100_000,
        web_url: str = "https://github.com",
    ) -> None:
        self.token = token
        self.rate_limit = rate_limit
        self.anonymous_rate_limit = anonymous_rate_limit
        self.rate_window = rate_window
        self.truncate_tree_over = truncate_tree_over
        self.web_url = web_url.rstrip("/")
        self.repos: dict[str, FakeRepo] = {}
        self._clock = datetime(2024, 1, 8, 9, 0, tzinfo=UTC)
        self._next_comment = 1_000_001
        self._usage: dict[str, tuple[float, int]] = {}
        self.add_repo(owner, repo, files=files, issues=issues, private=private)

    # -- data --------------------------------------------------------------------------------

    def tick(self) -> str:
        """Advance the virtual clock by one minute; return the new time (GitHub format)."""
        self._clock += timedelta(minutes=1)
        return self._clock.strftime("%Y-%m-%dT%H:%M:%SZ")

    def repo(self, full_name: str | None = None) -> FakeRepo:
        """A repository by ``owner/name`` (default: the first one)."""
        if full_name is None:
            return next(iter(self.repos.values()))
        return self.repos[full_name]

    def add_repo(
        self,
        owner: str,
        name: str,
        *,
        files: int = 24,
        issues: int = 40,
        private: bool = False,
    ) -> FakeRepo:
        """Add a repository with ``files`` text files and ``issues`` issues/PRs of sample data."""
        created = self.tick()
        repo = FakeRepo(
            id=515435940 + len(self.repos),
            owner=owner,
            name=name,
            description=f"The {name} of {owner}: how we build, ship and run things",
            private=private,
            topics=["documentation", "handbook"],
            created_at=created,
            pushed_at=created,
        )
        self.repos[repo.full_name] = repo
        for i in range(files):
            path, text = self._sample_file(i)
            repo.files[path] = text.encode()
        repo.files["assets/logo.png"] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + bytes(range(256))
        repo.pushed_at = self.tick()
        for i in range(issues):
            number = self.add_issue(
                _ISSUE_SUBJECTS[i % len(_ISSUE_SUBJECTS)].format(
                    t=_TOPICS[i % len(_TOPICS)][1].lower()
                ),
                self._sample_issue_body(i),
                labels=[list(_LABELS)[i % len(_LABELS)]] + (["bug"] if i % 7 == 3 else []),
                pull_request=i % 4 == 3,
                author=_USERS[i % len(_USERS)],
                repo=repo.full_name,
            )
            for j in range(i % 3):
                self.add_comment(
                    number,
                    f"Thanks for the report. {('I can reproduce it.', 'Fixed on main.')[j % 2]}",
                    author=_USERS[(i + j + 1) % len(_USERS)],
                    repo=repo.full_name,
                )
            if i % 5 == 4:
                self.edit_issue(number, state="closed", repo=repo.full_name)
        return repo

    @staticmethod
    def _sample_file(i: int) -> tuple[str, str]:
        slug, title, what = _TOPICS[i % len(_TOPICS)]
        if i < len(_TOPICS):
            return (
                f"docs/{slug}.md",
                f"# {title}\n\nThis page explains {what}.\n\n## Why\n\nEvery team member "
                f"needs to know {what}; ask in #handbook when something is unclear.\n\n"
                f"## Steps\n\n1. Read the checklist.\n2. Follow it.\n3. Update this page.\n",
            )
        if i < 2 * len(_TOPICS):
            return (
                f"docs/teams/{slug}/README.md",
                f"# {title} for teams\n\nTeam-specific notes on {what}.\n\n- Owner: "
                f"@{_USERS[i % len(_USERS)]}\n- Reviewed quarterly.\n",
            )
        if i == 2 * len(_TOPICS):
            return "README.md", "# Handbook\n\nStart with docs/getting-started.md.\n"
        n = i - 2 * len(_TOPICS)
        return (
            f"src/handbook/module_{n:03d}.py",
            f'"""Helpers for the handbook site, part {n}."""\n\n\ndef render_{n}(page: str) -> '
            f'str:\n    """Render one page."""\n    return page.strip() + "\\n"\n',
        )

    @staticmethod
    def _sample_issue_body(i: int) -> str:
        slug, title, what = _TOPICS[i % len(_TOPICS)]
        return (
            f"The page `docs/{slug}.md` should explain {what}, but the section on {title.lower()} "
            f"is out of date.\n\n### Steps to reproduce\n\n1. Open the page\n2. Follow step {i % 5 + 1}"
            f"\n\n### Expected\n\nIt works as written."
        )

    # -- mutations -----------------------------------------------------------------------------

    def add_file(self, path: str, content: str | bytes, *, repo: str | None = None) -> str:
        """Add (or overwrite) a file on the default branch; returns its blob sha."""
        r = self.repo(repo)
        data = content.encode() if isinstance(content, str) else content
        r.files[path] = data
        r.touch_files()
        r.pushed_at = self.tick()
        return git_blob_sha(data)

    def edit_file(self, path: str, content: str | bytes, *, repo: str | None = None) -> str:
        """Change an existing file; returns its new blob sha."""
        if path not in self.repo(repo).files:
            raise KeyError(f"no file {path!r}")
        return self.add_file(path, content, repo=repo)

    def delete_file(self, path: str, *, repo: str | None = None) -> None:
        """Remove a file from the default branch."""
        r = self.repo(repo)
        del r.files[path]
        r.touch_files()
        r.pushed_at = self.tick()

    def add_issue(
        self,
        title: str,
        body: str | None = "",
        *,
        labels: Iterable[str] = (),
        pull_request: bool = False,
        state: str = "open",
        author: str = "octocat",
        repo: str | None = None,
    ) -> int:
        """Open an issue (or a pull request); returns its number."""
        r = self.repo(repo)
        number = max(r.issues, default=0) + 1
        now = self.tick()
        r.issues[number] = {
            "id": 1_000_000 + r.id % 1000 * 10_000 + number,
            "number": number,
            "title": title,
            "body": body,
            "user": author,
            "labels": list(labels),
            "state": state,
            "pull_request": pull_request,
            "created_at": now,
            "updated_at": now,
            "closed_at": now if state == "closed" else None,
            "comments": 0,
        }
        return number

    def edit_issue(
        self,
        number: int,
        *,
        title: str | None = None,
        body: str | None = None,
        state: str | None = None,
        labels: Iterable[str] | None = None,
        repo: str | None = None,
    ) -> None:
        """Change an issue; its ``updated_at`` moves."""
        issue = self.repo(repo).issues[number]
        now = self.tick()
        if title is not None:
            issue["title"] = title
        if body is not None:
            issue["body"] = body
        if labels is not None:
            issue["labels"] = list(labels)
        if state is not None and state != issue["state"]:
            issue["state"] = state
            issue["closed_at"] = now if state == "closed" else None
        issue["updated_at"] = now

    def delete_issue(self, number: int, *, repo: str | None = None) -> None:
        """Delete an issue and its comments (GitHub lets admins do this)."""
        r = self.repo(repo)
        del r.issues[number]
        for cid in [c for c, v in r.comments.items() if v["issue"] == number]:
            del r.comments[cid]

    def malform_issue(self, number: int, *, repo: str | None = None, **fields: Any) -> None:
        """Serve these raw field values in the issue's JSON (e.g. ``title=None``)."""
        self.repo(repo).overrides.setdefault(number, {}).update(fields)

    def add_comment(
        self, number: int, body: str, *, author: str = "hubot", repo: str | None = None
    ) -> int:
        """Comment on an issue; returns the comment id. The issue's ``updated_at`` moves."""
        r = self.repo(repo)
        issue = r.issues[number]
        now = self.tick()
        cid = self._next_comment
        self._next_comment += 1
        r.comments[cid] = {
            "id": cid,
            "issue": number,
            "body": body,
            "user": author,
            "created_at": now,
            "updated_at": now,
        }
        issue["comments"] += 1
        issue["updated_at"] = now
        return cid

    def edit_comment(self, comment_id: int, body: str, *, repo: str | None = None) -> None:
        """Edit a comment; only the comment's ``updated_at`` moves."""
        c = self.repo(repo).comments[comment_id]
        c["body"] = body
        c["updated_at"] = self.tick()

    def delete_comment(self, comment_id: int, *, repo: str | None = None) -> None:
        """Delete a comment; its issue's ``updated_at`` moves."""
        r = self.repo(repo)
        c = r.comments.pop(comment_id)
        issue = r.issues[c["issue"]]
        issue["comments"] -= 1
        issue["updated_at"] = self.tick()

    # -- JSON shapes -----------------------------------------------------------------------------

    def _user(self, api: str, login: str) -> dict[str, Any]:
        uid = 583231 + _USERS.index(login) if login in _USERS else 9_000_000 + len(login)
        return {
            "login": login,
            "id": uid,
            "node_id": base64.b64encode(f"04:User{uid}".encode()).decode(),
            "avatar_url": f"https://avatars.githubusercontent.com/u/{uid}?v=4",
            "gravatar_id": "",
            "url": f"{api}/users/{login}",
            "html_url": f"{self.web_url}/{login}",
            "type": "Bot" if login == "hubot" else "User",
            "site_admin": False,
        }

    def repo_json(self, api: str, r: FakeRepo) -> dict[str, Any]:
        """``GET /repos/{o}/{r}``."""
        return {
            "id": r.id,
            "node_id": base64.b64encode(f"010:Repository{r.id}".encode()).decode(),
            "name": r.name,
            "full_name": r.full_name,
            "private": r.private,
            "owner": self._user(api, r.owner) | {"type": "Organization"},
            "html_url": f"{self.web_url}/{r.full_name}",
            "description": r.description,
            "fork": False,
            "url": f"{api}/repos/{r.full_name}",
            "created_at": r.created_at,
            "updated_at": r.created_at,
            "pushed_at": r.pushed_at,
            "default_branch": r.default_branch,
            "language": "Python",
            "topics": list(r.topics),
            "visibility": "private" if r.private else "public",
            "has_issues": True,
            "open_issues_count": sum(1 for i in r.issues.values() if i["state"] == "open"),
        }

    def issue_json(self, api: str, r: FakeRepo, issue: Mapping[str, Any]) -> dict[str, Any]:
        """One item of ``GET /repos/{o}/{r}/issues``."""
        n = issue["number"]
        base = f"{api}/repos/{r.full_name}/issues/{n}"
        out: dict[str, Any] = {
            "url": base,
            "repository_url": f"{api}/repos/{r.full_name}",
            "labels_url": f"{base}/labels{{/name}}",
            "comments_url": f"{base}/comments",
            "events_url": f"{base}/events",
            "html_url": f"{self.web_url}/{r.full_name}/{'pull' if issue['pull_request'] else 'issues'}/{n}",
            "id": issue["id"],
            "node_id": base64.b64encode(f"05:Issue{issue['id']}".encode()).decode(),
            "number": n,
            "title": issue["title"],
            "user": self._user(api, issue["user"]),
            "labels": [
                {
                    "id": 208045946 + list(_LABELS).index(name) if name in _LABELS else 1,
                    "node_id": base64.b64encode(f"05:Label{name}".encode()).decode(),
                    "url": f"{api}/repos/{r.full_name}/labels/{name}",
                    "name": name,
                    "color": _LABELS.get(name, ("ededed", ""))[0],
                    "default": name in _LABELS,
                    "description": _LABELS.get(name, ("", None))[1],
                }
                for name in issue["labels"]
            ],
            "state": issue["state"],
            "locked": False,
            "assignee": None,
            "assignees": [],
            "milestone": None,
            "comments": issue["comments"],
            "created_at": issue["created_at"],
            "updated_at": issue["updated_at"],
            "closed_at": issue["closed_at"],
            "author_association": "MEMBER",
            "active_lock_reason": None,
            "body": issue["body"],
            "timeline_url": f"{base}/timeline",
            "performed_via_github_app": None,
            "state_reason": "completed" if issue["state"] == "closed" else None,
        }
        if issue["pull_request"]:
            pr = f"{self.web_url}/{r.full_name}/pull/{n}"
            out["draft"] = False
            out["pull_request"] = {
                "url": f"{api}/repos/{r.full_name}/pulls/{n}",
                "html_url": pr,
                "diff_url": f"{pr}.diff",
                "patch_url": f"{pr}.patch",
                "merged_at": issue["closed_at"],
            }
        out.update(r.overrides.get(n, {}))
        return out

    def comment_json(self, api: str, r: FakeRepo, c: Mapping[str, Any]) -> dict[str, Any]:
        """One issue comment."""
        issue = r.issues.get(c["issue"], {"pull_request": False})
        kind = "pull" if issue["pull_request"] else "issues"
        return {
            "url": f"{api}/repos/{r.full_name}/issues/comments/{c['id']}",
            "html_url": f"{self.web_url}/{r.full_name}/{kind}/{c['issue']}#issuecomment-{c['id']}",
            "issue_url": f"{api}/repos/{r.full_name}/issues/{c['issue']}",
            "id": c["id"],
            "node_id": base64.b64encode(f"012:IssueComment{c['id']}".encode()).decode(),
            "user": self._user(api, c["user"]),
            "created_at": c["created_at"],
            "updated_at": c["updated_at"],
            "author_association": "CONTRIBUTOR",
            "body": c["body"],
            "performed_via_github_app": None,
        }

    # -- serving -------------------------------------------------------------------------------

    def mount(self, api: FakeAPI) -> None:
        """Register the GitHub routes on ``api``."""
        api.route("GET", "/rate_limit", self._rate_limit)
        for prefix in ("/repos/{owner}/{repo}", "/repositories/{id}"):
            api.route("GET", prefix, self._get_repo)
            api.route("GET", f"{prefix}/git/trees/{{sha}}", self._get_tree)
            api.route("GET", f"{prefix}/git/blobs/{{sha}}", self._get_blob)
            api.route("GET", f"{prefix}/issues", self._list_issues)
            api.route("GET", f"{prefix}/issues/comments", self._list_repo_comments)
            api.route("GET", f"{prefix}/issues/{{number}}/comments", self._list_issue_comments)

    def _identity(self, request: web.Request) -> tuple[str | None, Reply | None]:
        header = request.headers.get("Authorization")
        if not header:
            return None, None
        scheme, _, token = header.partition(" ")
        if scheme.lower() not in ("bearer", "token") or self.token is None or token != self.token:
            return None, Reply(
                {"message": "Bad credentials", "documentation_url": _DOCS, "status": "401"},
                status=401,
            )
        return "token", None

    def _budget(self, who: str) -> tuple[int, int, int]:
        """Count one request for ``who``: (limit, remaining after it, reset epoch seconds)."""
        limit = self.rate_limit if who == "token" else self.anonymous_rate_limit
        now = time.time()
        start, used = self._usage.get(who, (now, 0))
        if now - start >= self.rate_window:
            start, used = now, 0
        used += 1
        self._usage[who] = (start, used)
        return limit, limit - used, int(math.ceil(start + self.rate_window))

    def _guard(
        self, request: web.Request
    ) -> tuple[FakeRepo | None, dict[str, str], web.Response | None]:
        """Auth, rate limit and repository lookup shared by every route."""
        who, denied = self._identity(request)
        if denied is not None:
            return None, {}, denied.to_response()
        limit, remaining, reset = self._budget(who or f"anon:{request.remote}")
        headers = {
            "x-ratelimit-limit": str(limit),
            "x-ratelimit-remaining": str(max(0, remaining)),
            "x-ratelimit-used": str(limit - max(0, remaining)),
            "x-ratelimit-reset": str(reset),
            "x-ratelimit-resource": "core",
            "X-GitHub-Media-Type": "github.v3; format=json",
        }
        if remaining < 0:
            message = (
                "API rate limit exceeded for user."
                if who
                else "API rate limit exceeded for 127.0.0.1. (But here's the good news: "
                "Authenticated requests get a higher rate limit. Check out the documentation "
                "for more details.)"
            )
            reply = Reply({"message": message, "documentation_url": _DOCS}, 403, headers)
            return None, headers, reply.to_response()
        info = request.match_info
        repo: FakeRepo | None = None
        if "id" in info:
            repo = next((r for r in self.repos.values() if str(r.id) == info["id"]), None)
        elif "owner" in info:
            key = f"{info['owner']}/{info['repo']}".lower()
            repo = next((r for r in self.repos.values() if r.full_name.lower() == key), None)
        else:
            return None, headers, None
        if repo is None or (repo.private and who is None):
            reply = Reply({"message": "Not Found", "documentation_url": _DOCS}, 404, headers)
            return None, headers, reply.to_response()
        return repo, headers, None

    @staticmethod
    def _api(request: web.Request) -> str:
        return f"{request.scheme}://{request.host}"

    def _rate_limit(self, request: web.Request) -> web.Response:
        who, denied = self._identity(request)
        if denied is not None:
            return denied.to_response()
        key = who or f"anon:{request.remote}"
        limit = self.rate_limit if who else self.anonymous_rate_limit
        start, used = self._usage.get(key, (time.time(), 0))
        core = {
            "limit": limit,
            "used": used,
            "remaining": max(0, limit - used),
            "reset": int(start + self.rate_window),
        }
        return Reply({"resources": {"core": core}, "rate": core}).to_response()

    def _get_repo(self, request: web.Request) -> web.Response:
        repo, headers, fail = self._guard(request)
        if fail is not None or repo is None:
            return fail or web.Response(status=500)
        return Reply(self.repo_json(self._api(request), repo), headers=headers).to_response()

    def _get_tree(self, request: web.Request) -> web.Response:
        repo, headers, fail = self._guard(request)
        if fail is not None or repo is None:
            return fail or web.Response(status=500)
        root, trees = repo.trees()
        sha = request.match_info["sha"]
        if sha in (repo.default_branch, f"refs/heads/{repo.default_branch}"):
            sha = root
        tree = trees.get(sha)
        if tree is None:
            return Reply(
                {"message": "Not Found", "documentation_url": _DOCS}, 404, headers
            ).to_response()
        api = self._api(request)
        recursive = "recursive" in request.query
        out: list[dict[str, Any]] = []

        def walk(t: _Tree, prefix: str) -> None:
            for mode, typ, name, esha, size in t.entries:
                entry: dict[str, Any] = {"path": prefix + name, "mode": mode, "type": typ}
                entry["sha"] = esha
                if size is not None:
                    entry["size"] = size
                kind = "blobs" if typ == "blob" else "trees"
                entry["url"] = f"{api}/repos/{repo.full_name}/git/{kind}/{esha}"
                out.append(entry)
                if recursive and typ == "tree":
                    walk(trees[esha], f"{prefix}{name}/")

        walk(tree, "")
        truncated = recursive and len(out) > self.truncate_tree_over
        body = {
            "sha": tree.sha,
            "url": f"{api}/repos/{repo.full_name}/git/trees/{tree.sha}",
            "tree": out[: self.truncate_tree_over] if truncated else out,
            "truncated": truncated,
        }
        return Reply(body, headers=headers).to_response()

    def _get_blob(self, request: web.Request) -> web.Response:
        repo, headers, fail = self._guard(request)
        if fail is not None or repo is None:
            return fail or web.Response(status=500)
        repo.trees()
        sha = request.match_info["sha"]
        data = repo.blobs.get(sha)
        if data is None:
            return Reply(
                {"message": "Not Found", "documentation_url": _DOCS}, 404, headers
            ).to_response()
        body = {
            "sha": sha,
            "node_id": base64.b64encode(f"04:Blob{sha}".encode()).decode(),
            "size": len(data),
            "url": f"{self._api(request)}/repos/{repo.full_name}/git/blobs/{sha}",
            "content": _wrap64(data),
            "encoding": "base64",
        }
        return Reply(body, headers=headers).to_response()

    @staticmethod
    def _page(
        request: web.Request,
        repo: FakeRepo,
        items: list[Any],
        tail: str,
        headers: dict[str, str],
    ) -> web.Response:
        """One page of ``items`` with GitHub's ``Link`` header (``/repositories/{id}`` form)."""
        size = max(1, min(100, _int_param(request.query.get("per_page"), 30)))
        page = max(1, _int_param(request.query.get("page"), 1))
        last = max(1, math.ceil(len(items) / size))
        chunk = items[(page - 1) * size : page * size]
        base = URL(f"{request.scheme}://{request.host}").with_path(f"/repositories/{repo.id}{tail}")
        out = dict(headers)
        link = github_link_header(request, base, page=page, size=size, last=last)
        if link:
            out["Link"] = link
        return Reply(chunk, headers=out).to_response()

    def _list_issues(self, request: web.Request) -> web.Response:
        repo, headers, fail = self._guard(request)
        if fail is not None or repo is None:
            return fail or web.Response(status=500)
        q = request.query
        state = q.get("state", "open")
        if state not in ("open", "closed", "all"):
            return Reply(
                {"message": "Validation Failed", "documentation_url": _DOCS}, 422, headers
            ).to_response()
        labels = {x.strip() for x in q.get("labels", "").split(",") if x.strip()}
        since = q.get("since")
        if since:
            try:
                since_dt = datetime.fromisoformat(since)
            except ValueError:
                return Reply(
                    {"message": "Validation Failed", "documentation_url": _DOCS}, 422, headers
                ).to_response()
        items = [
            i
            for i in repo.issues.values()
            if (state == "all" or i["state"] == state)
            and labels <= set(i["labels"])
            and (not since or datetime.fromisoformat(i["updated_at"]) >= since_dt)
        ]
        sort = q.get("sort", "created")
        key = {"created": "created_at", "updated": "updated_at", "comments": "comments"}.get(
            sort, "created_at"
        )
        items.sort(key=lambda i: (i[key], i["number"]), reverse=q.get("direction") != "asc")
        api = self._api(request)
        return self._page(
            request, repo, [self.issue_json(api, repo, i) for i in items], "/issues", headers
        )

    def _comments(self, request: web.Request, repo: FakeRepo, number: int | None) -> list[Any]:
        q = request.query
        since = q.get("since")
        since_dt = datetime.fromisoformat(since) if since else None
        items = [
            c
            for c in repo.comments.values()
            if (number is None or c["issue"] == number)
            and (since_dt is None or datetime.fromisoformat(c["updated_at"]) >= since_dt)
        ]
        sort = q.get("sort")
        if number is None and sort in ("created", "updated"):
            items.sort(
                key=lambda c: (c[f"{sort}_at"], c["id"]), reverse=q.get("direction") != "asc"
            )
        else:
            items.sort(key=lambda c: c["id"])
        api = self._api(request)
        return [self.comment_json(api, repo, c) for c in items]

    def _list_repo_comments(self, request: web.Request) -> web.Response:
        repo, headers, fail = self._guard(request)
        if fail is not None or repo is None:
            return fail or web.Response(status=500)
        return self._page(
            request, repo, self._comments(request, repo, None), "/issues/comments", headers
        )

    def _list_issue_comments(self, request: web.Request) -> web.Response:
        repo, headers, fail = self._guard(request)
        if fail is not None or repo is None:
            return fail or web.Response(status=500)
        number = _int_param(request.match_info["number"], -1)
        if number not in repo.issues:
            return Reply(
                {"message": "Not Found", "documentation_url": _DOCS}, 404, headers
            ).to_response()
        items = self._comments(request, repo, number)
        return self._page(request, repo, items, f"/issues/{number}/comments", headers)

    # -- demo ----------------------------------------------------------------------------------

    def demo_config(self, base_url: str) -> dict[str, Any]:
        """Source options for ``cfstream demo`` (a plain dict, as a YAML config holds them)."""
        r = self.repo()
        return {
            "type": "github",
            "owner": r.owner,
            "repo": r.name,
            "token": self.token,
            "base_url": base_url,
            "content": ["files", "issues", "pulls"],
            "include": ["**/*.md", "**/*.py", "**/*.png"],
            "requests_per_second": 200,
        }

    def demo_change(self) -> list[str]:
        """Edit some sample data: 2 files changed, 1 added, 1 deleted, 2 issues edited, 1 comment."""
        r = self.repo()
        changed: list[str] = []
        for path in sorted(p for p in r.files if p.endswith(".md"))[:2]:
            self.edit_file(path, r.files[path].decode() + "\nEdited by `cfstream demo --change`.\n")
            changed.append(f"file {path} edited")
        self.add_file("docs/changelog.md", "# Changelog\n\n- Added by `cfstream demo --change`.\n")
        changed.append("file docs/changelog.md added")
        gone = sorted(p for p in r.files if p.startswith("src/"))[:1]
        for path in gone:
            self.delete_file(path)
            changed.append(f"file {path} deleted")
        for number in sorted(r.issues)[:2]:
            self.edit_issue(number, body=f"{r.issues[number]['body']}\n\nUpdate: still happening.")
            changed.append(f"issue #{number} edited")
        number = sorted(r.issues)[2]
        self.add_comment(number, "Looking into this now.", author="monalisa")
        changed.append(f"comment on #{number} added")
        return changed


def mount(api: FakeAPI) -> FakeGitHub:
    """``cfstream demo`` hook: a default :class:`FakeGitHub` mounted on ``api``."""
    fake = FakeGitHub()
    fake.mount(api)
    return fake


def demo_config(base_url: str) -> dict[str, Any]:
    """``cfstream demo`` hook: the source options for the default fake at ``base_url``."""
    return FakeGitHub(files=0, issues=0).demo_config(base_url)


def demo_change(mounted: object) -> list[str]:
    """``cfstream demo --change`` hook: edit some data of the fake :func:`mount` returned."""
    if not isinstance(mounted, FakeGitHub):
        raise TypeError(f"expected the FakeGitHub that mount() returned, got {mounted!r}")
    return mounted.demo_change()
