"""A fake Notion API (Notion-Version 2022-06-28) on :class:`~cfstream.testing.FakeAPI`.

It speaks the real shapes (field names and nesting as in the recorded payloads of the official
Python SDK's test suite): page, database, block, user and list objects, the
``{"object": "error", "status", "code", "message"}`` envelope, cursor pagination with
``start_cursor``/``page_size`` (query string for GET, JSON body for POST) answering
``next_cursor``/``has_more``, and minute-granular ``created_time``/``last_edited_time``.

Routes::

    GET  /v1/users/me                  the integration's bot user (with workspace_name)
    GET  /v1/users/{id}                a person
    GET  /v1/pages/{id}                a page (trashed ones too, with archived/in_trash true)
    GET  /v1/databases/{id}            a database
    POST /v1/databases/{id}/query      rows; timestamp filters (after, on_or_after, ...), and/or,
                                       timestamp sorts; trashed rows are left out
    POST /v1/search                    pages and databases; filter by object, sort by
                                       last_edited_time, ``query`` on titles; trashed left out
    GET  /v1/blocks/{id}/children      a page's or block's children

Every route checks ``Authorization: Bearer <token>`` (401 ``unauthorized`` otherwise) and the
``Notion-Version`` header (400 ``missing_version``). Sample data is deterministic: a three-level page
tree with every block type, an inline "Glossary" database, a "Tasks" database (``rows`` rows with
every property type), a "Meeting notes" database and a loose page. Mutation helpers stamp the
current minute (``clock``) as ``last_edited_time``, as Notion does.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import orjson
from aiohttp import web

from cfstream.testing.server import FakeAPI, Reply

__all__ = ("FAKE_TOKEN", "NOTION_VERSION", "FakeNotion", "demo_change", "demo_config", "mount")

#: the token the fake accepts by default (a fake string, not a real secret)
FAKE_TOKEN: Final = "secret_fakeNotionIntegrationToken0000000000000"
#: the API version the fake speaks
NOTION_VERSION: Final = "2022-06-28"

_NS = uuid.UUID("2f1d0c8e-5b7a-4c1e-9e55-6d0f8a1b2c3d")
_BASE_TIME = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)

Json = dict[str, Any]


def _iso(t: datetime) -> str:
    """Notion's minute-granular timestamp form: ``2024-05-01T09:00:00.000Z``."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:00.000Z")


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _hex(object_id: str) -> str:
    return object_id.replace("-", "")


def _annotations(**on: bool) -> Json:
    return {
        "bold": on.get("bold", False),
        "italic": on.get("italic", False),
        "strikethrough": on.get("strikethrough", False),
        "underline": on.get("underline", False),
        "code": on.get("code", False),
        "color": "default",
    }


def text(
    content: str,
    *,
    href: str | None = None,
    bold: bool = False,
    italic: bool = False,
    code: bool = False,
    strikethrough: bool = False,
) -> Json:
    """A rich text item of type ``text``."""
    return {
        "type": "text",
        "text": {"content": content, "link": {"url": href} if href else None},
        "annotations": _annotations(
            bold=bold, italic=italic, code=code, strikethrough=strikethrough
        ),
        "plain_text": content,
        "href": href,
    }


def _error(status: int, code: str, message: str) -> Reply:
    return Reply(
        {
            "object": "error",
            "status": status,
            "code": code,
            "message": message,
            "request_id": str(uuid.uuid5(_NS, f"req:{code}:{message}")),
        },
        status=status,
    )


class FakeNotion:
    """Deterministic, mutable Notion workspace data served on a :class:`FakeAPI`.

    :param token: the integration token the fake accepts.
    :param rows: rows of the "Tasks" database (more on request).
    :param clock: the current time for mutations (default: the wall clock); stamped
        minute-granular, as Notion does.
    :param workspace_name: what ``GET /v1/users/me`` reports.
    """

    def __init__(
        self,
        *,
        token: str = FAKE_TOKEN,
        rows: int = 30,
        clock: Callable[[], datetime] | None = None,
        workspace_name: str = "Acme Fake Workspace",
    ) -> None:
        self.token = token
        self.clock = clock or (lambda: datetime.now(UTC))
        self.workspace_name = workspace_name
        self.users: dict[str, Json] = {}
        self.pages: dict[str, Json] = {}
        self.databases: dict[str, Json] = {}
        self.blocks: dict[str, Json] = {}
        #: block/page id -> ids of its child blocks, in order
        self.children: dict[str, list[str]] = {}
        self._counter = 0
        self._tick = 0
        self.bot_id = self._id("bot")
        self._build(rows)

    # -- ids and times -------------------------------------------------------------------------

    def _id(self, key: str) -> str:
        return str(uuid.uuid5(_NS, key))

    def _next_id(self, kind: str) -> str:
        self._counter += 1
        return self._id(f"{kind}:{self._counter}")

    def _initial_time(self) -> str:
        self._tick += 1
        return _iso(_BASE_TIME + timedelta(minutes=self._tick))

    def now(self) -> str:
        """The current minute, as Notion stamps ``last_edited_time``."""
        return _iso(self.clock())

    def _user_ref(self, user_id: str) -> Json:
        return {"object": "user", "id": user_id}

    # -- building objects ----------------------------------------------------------------------

    def _add_user(self, name: str, email: str) -> str:
        uid = self._id(f"user:{email}")
        self.users[uid] = {
            "object": "user",
            "id": uid,
            "name": name,
            "avatar_url": None,
            "type": "person",
            "person": {"email": email},
        }
        return uid

    def user_object(self, user_id: str) -> Json:
        """The full user object, as people properties carry it."""
        return dict(self.users[user_id])

    def _page(
        self,
        parent: Json,
        title: str,
        *,
        author: str,
        properties: Json | None = None,
        when: str | None = None,
        title_prop: str = "title",
    ) -> str:
        pid = self._next_id("page")
        t = when or self._initial_time()
        props = dict(properties or {})
        props[title_prop] = {"id": "title", "type": "title", "title": [text(title)]}
        self.pages[pid] = {
            "object": "page",
            "id": pid,
            "created_time": t,
            "last_edited_time": t,
            "created_by": self._user_ref(author),
            "last_edited_by": self._user_ref(author),
            "cover": None,
            "icon": None,
            "parent": parent,
            "archived": False,
            "in_trash": False,
            "properties": props,
            "url": f"https://www.notion.so/{title.replace(' ', '-')}-{_hex(pid)}",
            "public_url": None,
        }
        self.children.setdefault(pid, [])
        return pid

    def _database(
        self, parent: Json, title: str, schema: Json, *, author: str, inline: bool = False
    ) -> str:
        did = self._next_id("database")
        t = self._initial_time()
        props: Json = {}
        for name, (ptype, config) in schema.items():
            props[name] = {"id": self._id(f"prop:{did}:{name}")[:4], "name": name, "type": ptype}
            props[name][ptype] = config
        self.databases[did] = {
            "object": "database",
            "id": did,
            "cover": None,
            "icon": None,
            "created_time": t,
            "created_by": self._user_ref(author),
            "last_edited_by": self._user_ref(author),
            "last_edited_time": t,
            "title": [text(title)],
            "description": [text(f"The {title.lower()} of the team.")],
            "is_inline": inline,
            "properties": props,
            "parent": parent,
            "url": f"https://www.notion.so/{_hex(did)}",
            "archived": False,
            "in_trash": False,
            "public_url": None,
        }
        return did

    def block(
        self, parent_id: str, kind: str, body: Json, children: Iterable[tuple[str, Json]] = ()
    ) -> str:
        """Append a block of ``kind`` under a page or block; ``children`` are ``(kind, body)``."""
        bid = self._next_id("block")
        parent_type = "page_id" if parent_id in self.pages else "block_id"
        author = next(iter(self.users))
        t = self.pages[parent_id]["last_edited_time"] if parent_id in self.pages else self.now()
        self.blocks[bid] = {
            "object": "block",
            "id": bid,
            "parent": {"type": parent_type, parent_type: parent_id},
            "created_time": t,
            "last_edited_time": t,
            "created_by": self._user_ref(author),
            "last_edited_by": self._user_ref(author),
            "has_children": False,
            "archived": False,
            "in_trash": False,
            "type": kind,
            kind: body,
        }
        self.children.setdefault(parent_id, []).append(bid)
        self.children.setdefault(bid, [])
        for child_kind, child_body in children:
            self.block(bid, child_kind, child_body)
        return bid

    def _para(self, parent_id: str, *rich: Json) -> str:
        return self.block(parent_id, "paragraph", {"rich_text": list(rich), "color": "default"})

    def _child_page(self, parent_page: str, title: str, author: str) -> str:
        """A child page: its block in the parent has the page's own id, as in Notion."""
        pid = self._page({"type": "page_id", "page_id": parent_page}, title, author=author)
        self._attach_child_block(parent_page, pid, "child_page", {"title": title})
        return pid

    def _attach_child_block(self, parent_id: str, object_id: str, kind: str, body: Json) -> None:
        t = self.pages[parent_id]["last_edited_time"] if parent_id in self.pages else self.now()
        author = next(iter(self.users))
        self.blocks[object_id] = {
            "object": "block",
            "id": object_id,
            "parent": {"type": "page_id", "page_id": parent_id},
            "created_time": t,
            "last_edited_time": t,
            "created_by": self._user_ref(author),
            "last_edited_by": self._user_ref(author),
            "has_children": True,
            "archived": False,
            "in_trash": False,
            "type": kind,
            kind: body,
        }
        self.children.setdefault(parent_id, []).append(object_id)

    # -- the sample workspace ------------------------------------------------------------------

    def _build(self, rows: int) -> None:
        ada = self._add_user("Ada Lovelace", "ada@example.com")
        grace = self._add_user("Grace Hopper", "grace@example.com")
        alan = self._add_user("Alan Turing", "alan@example.com")
        self.people = [ada, grace, alan]
        workspace = {"type": "workspace", "workspace": True}

        # a three-level page tree with every block type
        root = self._page(workspace, "Engineering Handbook", author=ada)
        self.root_page_id = root
        self.block(root, "heading_1", {"rich_text": [text("Welcome")], "is_toggleable": False})
        self._para(
            root,
            text("This handbook is "),
            text("the", bold=True),
            text(" place for "),
            text("how we work", italic=True),
            text(". Run "),
            text("make test", code=True),
            text(" before pushing; see the "),
            text("style guide", href="https://example.com/style"),
            text(" and ask "),
            {
                "type": "mention",
                "mention": {"type": "user", "user": self.user_object(grace)},
                "annotations": _annotations(),
                "plain_text": "@Grace Hopper",
                "href": None,
            },
            text(". Reviewed on "),
            {
                "type": "mention",
                "mention": {
                    "type": "date",
                    "date": {"start": "2024-04-30", "end": None, "time_zone": None},
                },
                "annotations": _annotations(),
                "plain_text": "2024-04-30",
                "href": None,
            },
            text("; "),
            text("outdated", strikethrough=True),
            text(" rules are removed. Energy: "),
            {
                "type": "equation",
                "equation": {"expression": "E = mc^2"},
                "annotations": _annotations(),
                "plain_text": "E = mc^2",
                "href": None,
            },
        )
        self.block(root, "heading_2", {"rich_text": [text("Principles")], "is_toggleable": False})
        self.block(
            root,
            "bulleted_list_item",
            {"rich_text": [text("Small changes")], "color": "default"},
            [("bulleted_list_item", {"rich_text": [text("One idea per PR")], "color": "default"})],
        )
        self.block(
            root, "bulleted_list_item", {"rich_text": [text("Tests first")], "color": "default"}
        )
        self.block(
            root, "heading_3", {"rich_text": [text("Release steps")], "is_toggleable": False}
        )
        for step in ("Tag the release", "Build the wheels", "Announce it"):
            self.block(root, "numbered_list_item", {"rich_text": [text(step)], "color": "default"})
        self.block(root, "to_do", {"rich_text": [text("Read the handbook")], "checked": True})
        self.block(root, "to_do", {"rich_text": [text("Set up the laptop")], "checked": False})
        self.block(
            root,
            "toggle",
            {"rich_text": [text("Why so strict?")], "color": "default"},
            [("paragraph", {"rich_text": [text("Because reviews are cheaper than outages.")]})],
        )
        self.block(root, "quote", {"rich_text": [text("Make it work, then make it right.")]})
        self.block(
            root,
            "callout",
            {
                "rich_text": [text("Never commit secrets.")],
                "icon": {"type": "emoji", "emoji": "⚠️"},
                "color": "yellow_background",
            },
        )
        self.block(
            root,
            "code",
            {
                "caption": [],
                "rich_text": [text('def greet(name):\n    return f"hello {name}"')],
                "language": "python",
            },
        )
        self.block(root, "divider", {})
        self.block(root, "equation", {"expression": "\\sum_{i=1}^{n} i = \\frac{n(n+1)}{2}"})
        table = self.block(
            root, "table", {"table_width": 2, "has_column_header": True, "has_row_header": False}
        )
        for cells in (("Tool", "Purpose"), ("ruff", "lint"), ("mypy", "types")):
            self.block(table, "table_row", {"cells": [[text(c)] for c in cells]})
        self.block(
            root,
            "image",
            {
                "caption": [text("Architecture")],
                "type": "file",
                "file": {
                    "url": "https://s3.us-west-2.amazonaws.com/secure.notion-static.com/arch.png"
                    "?X-Amz-Signature=abc123",
                    "expiry_time": "2024-05-01T10:00:00.000Z",
                },
            },
        )
        self.block(root, "bookmark", {"caption": [], "url": "https://example.com/rfc"})
        self.block(root, "table_of_contents", {"color": "default"})
        onboarding = self._child_page(root, "Onboarding", author=grace)
        self.block(
            root,
            "paragraph",
            {
                "rich_text": [
                    text("Start with "),
                    {
                        "type": "mention",
                        "mention": {"type": "page", "page": {"id": onboarding}},
                        "annotations": _annotations(),
                        "plain_text": "Onboarding",
                        "href": f"https://www.notion.so/{_hex(onboarding)}",
                    },
                    text("."),
                ],
                "color": "default",
            },
        )
        self.block(
            onboarding,
            "heading_2",
            {"rich_text": [text("Your first days")], "is_toggleable": True},
            [("paragraph", {"rich_text": [text("Meet the team and pick a starter task.")]})],
        )
        col_list = self.block(onboarding, "column_list", {})
        left = self.block(col_list, "column", {})
        self._para(left, text("Left: accounts"))
        right = self.block(col_list, "column", {})
        self._para(right, text("Right: hardware"))
        self.block(
            onboarding,
            "link_to_page",
            {"type": "page_id", "page_id": root},
        )
        checklist = self._child_page(onboarding, "First week checklist", author=alan)
        self.block(checklist, "to_do", {"rich_text": [text("Get a badge")], "checked": True})
        self.block(checklist, "to_do", {"rich_text": [text("Pair on a bug")], "checked": False})
        self.block(
            checklist,
            "code",
            {
                "caption": [],
                "rich_text": [text("git clone repo && make test")],
                "language": "shell",
            },
        )
        self.onboarding_page_id = onboarding
        self.checklist_page_id = checklist

        glossary = self._database(
            {"type": "page_id", "page_id": root},
            "Glossary",
            {"Term": ("title", {}), "Definition": ("rich_text", {})},
            author=ada,
            inline=True,
        )
        self._attach_child_block(root, glossary, "child_database", {"title": "Glossary"})
        self.glossary_id = glossary
        for term, meaning in (
            ("Checkpoint", "A resume point of a sync."),
            ("Tombstone", "A record that was deleted at the source."),
            ("Partition", "An independent part of a source."),
            ("Upsert", "Insert or update by key."),
            ("Cursor", "Where a sync resumes."),
        ):
            row = self._page(
                {"type": "database_id", "database_id": glossary},
                term,
                author=ada,
                title_prop="Term",
                properties={
                    "Definition": {"id": "def", "type": "rich_text", "rich_text": [text(meaning)]}
                },
            )
            self._para(row, text(meaning))

        self.tasks_id = self._database(
            workspace,
            "Tasks",
            {
                "Name": ("title", {}),
                "Status": ("status", {"options": [], "groups": []}),
                "Priority": ("select", {"options": []}),
                "Tags": ("multi_select", {"options": []}),
                "Assignee": ("people", {}),
                "Due": ("date", {}),
                "Estimate": ("number", {"format": "number"}),
                "Done": ("checkbox", {}),
                "Spec": ("url", {}),
                "Contact": ("email", {}),
                "Phone": ("phone_number", {}),
                "Attachments": ("files", {}),
                "Blocked by": ("relation", {"database_id": "", "type": "single_property"}),
                "Score": ("formula", {"expression": 'prop("Estimate") * 2'}),
                "Subtasks": ("rollup", {"function": "count"}),
                "Created": ("created_time", {}),
                "Edited": ("last_edited_time", {}),
                "Creator": ("created_by", {}),
                "Editor": ("last_edited_by", {}),
                "ID": ("unique_id", {"prefix": "TASK"}),
                "Notes": ("rich_text", {}),
            },
            author=grace,
        )
        self.task_ids: list[str] = []
        for i in range(rows):
            self.add_row(self.tasks_id, f"Task {i + 1:03d}", initial=True)

        self.meetings_id = self._database(
            workspace,
            "Meeting notes",
            {"Title": ("title", {}), "Date": ("date", {}), "Attendees": ("people", {})},
            author=alan,
        )
        for i in range(8):
            who = [self.user_object(self.people[j % 3]) for j in range(i % 3 + 1)]
            row = self._page(
                {"type": "database_id", "database_id": self.meetings_id},
                f"Weekly sync #{i + 1}",
                author=self.people[i % 3],
                title_prop="Title",
                properties={
                    "Date": {
                        "id": "date",
                        "type": "date",
                        "date": {"start": f"2024-04-{i + 1:02d}", "end": None, "time_zone": None},
                    },
                    "Attendees": {"id": "att", "type": "people", "people": who},
                },
            )
            self.block(row, "heading_2", {"rich_text": [text("Decisions")], "is_toggleable": False})
            self.block(
                row,
                "bulleted_list_item",
                {"rich_text": [text(f"Ship milestone {i + 1}")], "color": "default"},
            )
            self.block(row, "quote", {"rich_text": [text("Keep the scope small.")]})

        loose = self._page(workspace, "Team directory", author=alan)
        self.directory_page_id = loose
        tbl = self.block(
            loose, "table", {"table_width": 3, "has_column_header": True, "has_row_header": False}
        )
        for cells in (("Name", "Role", "Email"),) + tuple(
            (u["name"], role, u["person"]["email"])
            for u, role in zip(self.users.values(), ("Docs", "Compilers", "Theory"), strict=True)
        ):
            self.block(tbl, "table_row", {"cells": [[text(c)] for c in cells]})

    def _task_properties(self, n: int, title: str, created: str, author: str) -> Json:
        people = self.people
        ann = _annotations()
        return {
            "Name": {"id": "title", "type": "title", "title": [text(title)]},
            "Status": {
                "id": "st",
                "type": "status",
                "status": {
                    "id": f"s{n % 3}",
                    "name": ("Not started", "In progress", "Done")[n % 3],
                    "color": "blue",
                },
            },
            "Priority": {
                "id": "pr",
                "type": "select",
                "select": {"id": f"p{n % 2}", "name": ("High", "Low")[n % 2], "color": "red"},
            },
            "Tags": {
                "id": "tg",
                "type": "multi_select",
                "multi_select": [
                    {"id": "t1", "name": "backend", "color": "gray"},
                    {"id": f"t{2 + n % 2}", "name": ("docs", "infra")[n % 2], "color": "green"},
                ],
            },
            "Assignee": {
                "id": "as",
                "type": "people",
                "people": [self.user_object(people[n % 3])],
            },
            "Due": {
                "id": "du",
                "type": "date",
                "date": {"start": f"2024-06-{n % 28 + 1:02d}", "end": None, "time_zone": None},
            },
            "Estimate": {"id": "es", "type": "number", "number": n % 8 + 0.5},
            "Done": {"id": "dn", "type": "checkbox", "checkbox": n % 3 == 2},
            "Spec": {"id": "sp", "type": "url", "url": f"https://example.com/specs/{n}"},
            "Contact": {"id": "co", "type": "email", "email": f"owner{n}@example.com"},
            "Phone": {
                "id": "ph",
                "type": "phone_number",
                "phone_number": f"+1-555-01{n % 100:02d}",
            },
            "Attachments": {
                "id": "at",
                "type": "files",
                "files": [
                    {
                        "name": f"design-{n}.pdf",
                        "type": "external",
                        "external": {"url": f"https://example.com/files/design-{n}.pdf"},
                    }
                ],
            },
            "Blocked by": {
                "id": "bl",
                "type": "relation",
                "relation": [{"id": self.task_ids[-1]}] if self.task_ids else [],
                "has_more": False,
            },
            "Score": {
                "id": "sc",
                "type": "formula",
                "formula": {"type": "number", "number": (n % 8 + 0.5) * 2},
            },
            "Subtasks": {
                "id": "ru",
                "type": "rollup",
                "rollup": {"type": "number", "number": n % 4, "function": "count"},
            },
            "Created": {"id": "cr", "type": "created_time", "created_time": created},
            "Edited": {"id": "ed", "type": "last_edited_time", "last_edited_time": created},
            "Creator": {"id": "cb", "type": "created_by", "created_by": self.user_object(author)},
            "Editor": {
                "id": "eb",
                "type": "last_edited_by",
                "last_edited_by": self.user_object(author),
            },
            "ID": {"id": "id", "type": "unique_id", "unique_id": {"prefix": "TASK", "number": n}},
            "Notes": {
                "id": "no",
                "type": "rich_text",
                "rich_text": [{**text(f"Notes for task {n}"), "annotations": ann}],
            },
        }

    # -- mutations -----------------------------------------------------------------------------

    def _touch(self, page_id: str) -> None:
        page = self.pages[page_id]
        now = self.now()
        page["last_edited_time"] = now
        props = page.get("properties")
        if isinstance(props, dict):
            for prop in props.values():
                if isinstance(prop, dict) and prop.get("type") == "last_edited_time":
                    prop["last_edited_time"] = now

    def _page_of(self, block_id: str) -> str | None:
        seen = 0
        current: str | None = block_id
        while current is not None and current not in self.pages and seen < 100:
            parent = self.blocks.get(current, {}).get("parent") or {}
            current = parent.get("page_id") or parent.get("block_id")
            seen += 1
        return current if current in self.pages else None

    def add_row(
        self, database_id: str, title: str, *, body: str | None = None, initial: bool = False
    ) -> str:
        """Add a row to a database (for "Tasks": every property type filled); returns its id."""
        db = self.databases[database_id]
        author = self.people[len(self.pages) % 3]
        when = self._initial_time() if initial else self.now()
        title_prop = next(n for n, p in db["properties"].items() if p["type"] == "title")
        if database_id == getattr(self, "tasks_id", None):
            n = len(self.task_ids) + 1
            props = self._task_properties(n, title, when, author)
            props.pop("Name")
        else:
            n = 0
            props = {}
        pid = self._page(
            {"type": "database_id", "database_id": database_id},
            title,
            author=author,
            properties=props,
            when=when,
            title_prop=title_prop,
        )
        if database_id == getattr(self, "tasks_id", None):
            self.task_ids.append(pid)
        self._para(pid, text(body or f"{title}: implement, test and document the change."))
        if n:
            self.block(pid, "to_do", {"rich_text": [text("Write tests")], "checked": n % 2 == 0})
        return pid

    def add_page(self, parent_page_id: str, title: str, body: str = "New page.") -> str:
        """Add a child page under a page (its ``child_page`` block too); returns its id."""
        author = self.people[0]
        pid = self._page(
            {"type": "page_id", "page_id": parent_page_id}, title, author=author, when=self.now()
        )
        self._attach_child_block(parent_page_id, pid, "child_page", {"title": title})
        self._para(pid, text(body))
        self._touch(parent_page_id)
        return pid

    def edit_page(self, page_id: str, body: str | None = None, *, title: str | None = None) -> None:
        """Append a paragraph and/or rename a page; bumps ``last_edited_time``."""
        page = self.pages[page_id]
        if body is not None:
            self._para(page_id, text(body))
        if title is not None:
            for prop in page["properties"].values():
                if prop.get("type") == "title":
                    prop["title"] = [text(title)]
            parent = page["parent"]
            if parent.get("type") == "page_id" and page_id in self.blocks:
                self.blocks[page_id]["child_page"]["title"] = title
        self._touch(page_id)

    def edit_block(self, block_id: str, new_text: str) -> None:
        """Replace a text block's rich text; bumps the containing page's ``last_edited_time``."""
        block = self.blocks[block_id]
        block[block["type"]]["rich_text"] = [text(new_text)]
        block["last_edited_time"] = self.now()
        page = self._page_of(block_id)
        if page is not None:
            self._touch(page)

    def set_property(self, page_id: str, name: str, value: Json) -> None:
        """Set a property value object (e.g. ``{"type": "checkbox", "checkbox": True}``)."""
        self.pages[page_id]["properties"][name] = {"id": name[:4], **value}
        self._touch(page_id)

    def trash(self, page_id: str) -> None:
        """Move a page (and the pages under it) to the trash, as the Notion UI does."""
        page = self.pages[page_id]
        self._touch(page_id)
        stack = [page_id]
        while stack:
            pid = stack.pop()
            p = self.pages[pid]
            p["archived"] = p["in_trash"] = True
            for bid in self.children.get(pid, []):
                b = self.blocks.get(bid)
                if b is not None and b["type"] == "child_page" and bid in self.pages:
                    stack.append(bid)
        parent = page["parent"]
        if parent.get("type") == "page_id" and page_id in self.blocks:
            self.children[parent["page_id"]].remove(page_id)
            self.blocks[page_id]["archived"] = self.blocks[page_id]["in_trash"] = True
            self._touch(parent["page_id"])

    def add_malformed_row(self, database_id: str) -> str:
        """Add a row the connector cannot map (no properties, an unreadable created_time)."""
        pid = self.add_row(database_id, "Broken row")
        page = self.pages[pid]
        page["properties"] = None
        page["created_time"] = "last tuesday"
        return pid

    # -- serving -------------------------------------------------------------------------------

    def mount(self, api: FakeAPI) -> None:
        """Register the Notion routes on ``api``."""
        # later routes win in FakeAPI: the literal /me after the {id} template
        api.route("GET", "/v1/users/{id}", self._guard(self._user))
        api.route("GET", "/v1/users/me", self._guard(self._users_me))
        api.route("GET", "/v1/pages/{id}", self._guard(self._get_page))
        api.route("GET", "/v1/databases/{id}", self._guard(self._get_database))
        api.route("POST", "/v1/databases/{id}/query", self._guard(self._query))
        api.route("POST", "/v1/search", self._guard(self._search))
        api.route("GET", "/v1/blocks/{id}/children", self._guard(self._block_children))

    def _guard(self, handler: Callable[[web.Request, Json], Any]) -> Callable[[web.Request], Any]:
        async def guarded(request: web.Request) -> Any:
            if request.headers.get("Authorization") != f"Bearer {self.token}":
                return _error(401, "unauthorized", "API token is invalid.")
            if not request.headers.get("Notion-Version"):
                return _error(
                    400,
                    "missing_version",
                    "Notion-Version header failed validation: Notion-Version header should be "
                    "defined, instead was `undefined`.",
                )
            body: Json = {}
            if request.method == "POST":
                raw = await request.read()
                try:
                    loaded = orjson.loads(raw) if raw else {}
                except orjson.JSONDecodeError:
                    return _error(400, "invalid_json", "Error parsing JSON body.")
                body = loaded if isinstance(loaded, dict) else {}
            return handler(request, body)

        return guarded

    def _users_me(self, request: web.Request, body: Json) -> Any:
        return {
            "object": "user",
            "id": self.bot_id,
            "name": "cfstream",
            "avatar_url": None,
            "type": "bot",
            "bot": {
                "owner": {"type": "workspace", "workspace": True},
                "workspace_name": self.workspace_name,
            },
        }

    def _user(self, request: web.Request, body: Json) -> Any:
        user = self.users.get(request.match_info["id"])
        if user is None:
            return _error(404, "object_not_found", "Could not find user.")
        return user

    def _not_found(self, object_id: str) -> Reply:
        return _error(
            404,
            "object_not_found",
            f"Could not find page with ID: {object_id}. Make sure the relevant pages and databases "
            "are shared with your integration.",
        )

    def _get_page(self, request: web.Request, body: Json) -> Any:
        pid = request.match_info["id"]
        page = self.pages.get(pid)
        return page if page is not None else self._not_found(pid)

    def _get_database(self, request: web.Request, body: Json) -> Any:
        did = request.match_info["id"]
        db = self.databases.get(did)
        if db is None or db.get("in_trash"):
            return _error(
                404,
                "object_not_found",
                f"Could not find database with ID: {did}. Make sure the relevant pages and "
                "databases are shared with your integration.",
            )
        return db

    @staticmethod
    def _page_params(source: Mapping[str, Any]) -> tuple[int, str | None] | Reply:
        raw_size = source.get("page_size", 100)
        try:
            size = int(raw_size)
        except (TypeError, ValueError):
            size = -1
        if not 1 <= size <= 100:
            return _error(
                400,
                "validation_error",
                f"body failed validation: body.page_size should be ≤ `100`, instead was `{raw_size}`.",
            )
        cursor = source.get("start_cursor")
        return size, (str(cursor) if cursor else None)

    @staticmethod
    def _paged(items: list[Json], size: int, cursor: str | None, kind: str) -> Any:
        start = 0
        if cursor is not None:
            ids = [i["id"] for i in items]
            if cursor not in ids:
                return _error(
                    400, "validation_error", "start_cursor provided is invalid: " + cursor
                )
            start = ids.index(cursor)
        chunk = items[start : start + size]
        more = start + size < len(items)
        return {
            "object": "list",
            "results": chunk,
            "next_cursor": items[start + size]["id"] if more else None,
            "has_more": more,
            "type": kind,
            kind: {},
        }

    def _match(self, obj: Json, flt: Mapping[str, Any]) -> bool:
        if "and" in flt:
            return all(self._match(obj, f) for f in flt["and"])
        if "or" in flt:
            return any(self._match(obj, f) for f in flt["or"])
        stamp = flt.get("timestamp")
        if stamp not in ("last_edited_time", "created_time"):
            raise ValueError("the fake supports timestamp filters (and/or of them) only")
        cond = flt.get(stamp) or {}
        value = _parse(obj[stamp])
        for op, arg in cond.items():
            if op == "is_empty":
                return False
            if op == "is_not_empty":
                return True
            ref = _parse(str(arg))
            ok = {
                "equals": value == ref,
                "before": value < ref,
                "after": value > ref,
                "on_or_before": value <= ref,
                "on_or_after": value >= ref,
            }.get(op)
            if ok is None:
                raise ValueError(f"unsupported timestamp condition {op!r}")
            if not ok:
                return False
        return True

    @staticmethod
    def _sorted(items: list[Json], sorts: Any, default_desc: str) -> list[Json]:
        if not sorts:
            return sorted(items, key=lambda o: (o[default_desc], o["id"]), reverse=True)
        out = list(items)
        for s in reversed(list(sorts)):
            key = s.get("timestamp")
            if key not in ("last_edited_time", "created_time"):
                raise ValueError("the fake sorts by timestamp only")
            stamp = str(key)
            out.sort(key=lambda o: (o[stamp], o["id"]), reverse=s.get("direction") == "descending")
        return out

    def _query(self, request: web.Request, body: Json) -> Any:
        did = request.match_info["id"]
        db = self.databases.get(did)
        if db is None or db.get("in_trash"):
            return self._get_database(request, body)
        params = self._page_params(body)
        if isinstance(params, Reply):
            return params
        rows = [
            p
            for p in self.pages.values()
            if p["parent"].get("database_id") == did and not p.get("in_trash")
        ]
        try:
            if body.get("filter"):
                rows = [r for r in rows if self._match(r, body["filter"])]
            rows = self._sorted(rows, body.get("sorts"), "created_time")
        except (ValueError, KeyError, TypeError) as exc:
            return _error(400, "validation_error", f"body failed validation: {exc}")
        return self._paged(rows, *params, "page")

    def _search(self, request: web.Request, body: Json) -> Any:
        params = self._page_params(body)
        if isinstance(params, Reply):
            return params
        flt = body.get("filter") or {}
        wanted = flt.get("value") if flt.get("property") == "object" else None
        items: list[Json] = []
        if wanted in (None, "page"):
            items += [p for p in self.pages.values() if not p.get("in_trash")]
        if wanted in (None, "database"):
            items += [d for d in self.databases.values() if not d.get("in_trash")]
        query = str(body.get("query") or "").lower()
        if query:
            items = [i for i in items if query in _title_of(i).lower()]
        sort = body.get("sort")
        try:
            items = self._sorted(items, [sort] if sort else None, "last_edited_time")
        except ValueError as exc:
            return _error(400, "validation_error", f"body failed validation: {exc}")
        return self._paged(items, *params, "page_or_database")

    def _block_children(self, request: web.Request, body: Json) -> Any:
        bid = request.match_info["id"]
        page = self.pages.get(bid)
        if (page is not None and page.get("in_trash")) or (page is None and bid not in self.blocks):
            return _error(
                404,
                "object_not_found",
                f"Could not find block with ID: {bid}. Make sure the relevant pages and databases "
                "are shared with your integration.",
            )
        params = self._page_params(request.query)
        if isinstance(params, Reply):
            return params
        kids = []
        for cid in self.children.get(bid, []):
            block = dict(self.blocks[cid])
            if block["type"] not in ("child_page", "child_database"):
                block["has_children"] = bool(self.children.get(cid))
            kids.append(block)
        return self._paged(kids, *params, "block")

    # -- demo ----------------------------------------------------------------------------------

    def demo_config(self, base_url: str) -> dict[str, Any]:
        """Options of a ``notion`` source that imports this workspace (through search)."""
        return {"token": self.token, "base_url": base_url, "search": True}


def _title_of(obj: Mapping[str, Any]) -> str:
    if obj.get("object") == "database":
        rich = obj.get("title") or []
    else:
        props = obj.get("properties") or {}
        rich = next(
            (
                p.get("title")
                for p in props.values()
                if isinstance(p, Mapping) and p.get("type") == "title"
            ),
            [],
        )
    return "".join(r.get("plain_text", "") for r in rich or [] if isinstance(r, Mapping))


def mount(api: FakeAPI) -> FakeNotion:
    """Mount a default :class:`FakeNotion` on ``api`` and return it (the demo's hook)."""
    fake = FakeNotion()
    fake.mount(api)
    return fake


def demo_config(base_url: str) -> dict[str, Any]:
    """The ``notion`` source options for ``cfstream demo`` against a fake at ``base_url``."""
    return {"token": FAKE_TOKEN, "base_url": base_url, "search": True}


def demo_change(fake: FakeNotion) -> list[str]:
    """Edit two pages and add a task, so that the next sync updates just those records."""
    stamp = fake.now()
    fake.edit_page(fake.directory_page_id, f"Directory reviewed at {stamp}.")
    first_task = fake.task_ids[0]
    fake.edit_page(first_task, f"Progress note of {stamp}.")
    new = fake.add_row(fake.tasks_id, f"Follow-up {stamp}")
    return [
        f"edited page {fake.directory_page_id} (Team directory)",
        f"edited task {first_task}",
        f"added task {new}",
    ]
