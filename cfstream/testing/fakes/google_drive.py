"""A fake Google Drive v3 API (and OAuth token endpoint) on :class:`~cfstream.testing.FakeAPI`.

It speaks the real shapes of the Drive v3 discovery document: ``File``, ``FileList``, ``Change``,
``ChangeList`` and ``StartPageToken`` with the real field names, Google's error envelope
``{"error": {"errors": [{"domain", "reason", "message"}], "code", "message"}}``, partial responses
(``fields=nextPageToken,files(id,name)``; without ``fields`` only the default fields come back),
``pageSize``/``pageToken``/``nextPageToken`` pagination and the changes feed
(``changes/startPageToken``, then ``changes?pageToken=`` until ``newStartPageToken``).

Routes (under the server's URL):

* ``POST /token``: OAuth 2.0 token endpoint (``refresh_token`` and service-account
  ``jwt-bearer`` grants); issues ``ya29.fake-*`` access tokens.
* ``GET /drive/v3/files`` with ``q`` (``'<id>' in parents``, ``trashed = false``, ``mimeType``
  comparisons, ``name = '...'``, ``modifiedTime > '...'``, joined by ``and``), ``corpora``
  (``user``, ``drive`` with ``driveId``, ``allDrives``), ``supportsAllDrives`` and
  ``includeItemsFromAllDrives`` (shared-drive items are invisible without them, as on Drive).
* ``GET /drive/v3/files/{id}`` (metadata, or the bytes with ``alt=media``; Google Docs Editors
  files answer 403 ``fileNotDownloadable``).
* ``GET /drive/v3/files/{id}/export?mimeType=``: Docs as ``text/markdown``/``text/plain``, Sheets as
  ``text/csv``, Slides as ``text/plain``; 403 ``exportSizeLimitExceeded`` above ``export_limit``.
* ``GET /drive/v3/changes/startPageToken`` and ``GET /drive/v3/changes``.

Every Drive route wants ``Authorization: Bearer <a token this fake issued>`` (401 ``authError``
otherwise). The data is deterministic and mutable: :meth:`FakeGoogleDrive.add_file`,
:meth:`~FakeGoogleDrive.edit_file`, :meth:`~FakeGoogleDrive.rename`, :meth:`~FakeGoogleDrive.move`,
:meth:`~FakeGoogleDrive.trash` and :meth:`~FakeGoogleDrive.delete` record changes in the feed.
No pytest import here: ``cfstream demo`` and the benchmarks use it too.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import orjson
from aiohttp import web

from cfstream.testing.server import FakeAPI, Reply

__all__ = (
    "DOC",
    "FOLDER",
    "SHEET",
    "SHORTCUT",
    "SLIDES",
    "FakeGoogleDrive",
    "demo_change",
    "demo_config",
    "mount",
)

FOLDER = "application/vnd.google-apps.folder"
DOC = "application/vnd.google-apps.document"
SHEET = "application/vnd.google-apps.spreadsheet"
SLIDES = "application/vnd.google-apps.presentation"
SHORTCUT = "application/vnd.google-apps.shortcut"
_DRAWING = "application/vnd.google-apps.drawing"
_GOOGLE_APPS = "application/vnd.google-apps."

_EXPORTS: dict[str, tuple[str, ...]] = {
    DOC: ("text/markdown", "text/plain", "text/html"),
    SHEET: ("text/csv",),
    SLIDES: ("text/plain",),
}

#: ids of the default sample tree
ROOT_ID = "1EngRootFolder0000000000000000000"
SHARED_DRIVE_ID = "0AKdTeamDrive0000000Uk9PVA"

_DEFAULT_LIST = ("kind", "nextPageToken", "incompleteSearch", "files(kind,id,name,mimeType)")
_DEFAULT_FILE = ("kind", "id", "name", "mimeType")
_DEFAULT_CHANGES = (
    "kind",
    "nextPageToken",
    "newStartPageToken",
    "changes(kind,type,changeType,time,removed,fileId,driveId,file(kind,id,name,mimeType))",
)

CLIENT_ID = "1234567890-fake.apps.googleusercontent.com"
CLIENT_SECRET = "GOCSPX-fake-client-secret"
REFRESH_TOKEN = "1//fake-refresh-token-for-cfstream-demo"


def _error(code: int, reason: str, message: str, domain: str = "global") -> Reply:
    """Google's JSON error envelope."""
    return Reply(
        {
            "error": {
                "errors": [{"domain": domain, "reason": reason, "message": message}],
                "code": code,
                "message": message,
            }
        },
        status=code,
    )


def _rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


# -- partial responses -----------------------------------------------------------------------------


def parse_fields(spec: str) -> dict[str, Any]:
    """Parse a partial-response ``fields`` value into a tree (``None`` leaves: whole value).

    ``"nextPageToken,files(id,name,owners(displayName))"`` ->
    ``{"nextPageToken": None, "files": {"id": None, "name": None, "owners": {"displayName": None}}}``.
    ``a/b`` is the same as ``a(b)``; ``*`` selects everything.
    """
    pos = 0

    def parse_list(end: str | None) -> dict[str, Any]:
        nonlocal pos
        tree: dict[str, Any] = {}
        while pos < len(spec):
            if end is not None and spec[pos] == end:
                pos += 1
                return tree
            if spec[pos] in ", ":
                pos += 1
                continue
            match = re.match(r"[A-Za-z_*][A-Za-z0-9_/*]*", spec[pos:])
            if match is None:
                raise ValueError(f"invalid field selector at {spec[pos:]!r}")
            name = match.group(0)
            pos += len(name)
            sub: Any = None
            if pos < len(spec) and spec[pos] == "(":
                pos += 1
                sub = parse_list(")")
            parts = name.split("/")
            node = tree
            for part in parts[:-1]:
                nxt = node.get(part)
                if not isinstance(nxt, dict):
                    nxt = node[part] = {}
                node = nxt
            node[parts[-1]] = sub
        if end is not None:
            raise ValueError(f"unbalanced parentheses in fields={spec!r}")
        return tree

    return parse_list(None)


def _select(value: Any, tree: Mapping[str, Any] | None) -> Any:
    if tree is None or "*" in tree:
        return value
    if isinstance(value, list):
        return [_select(v, tree) for v in value]
    if isinstance(value, Mapping):
        return {k: _select(value[k], sub) for k, sub in tree.items() if k in value}
    return value


def _apply_fields(payload: Mapping[str, Any], fields: str | None, default: Sequence[str]) -> Any:
    tree = parse_fields(fields if fields else ",".join(default))
    return _select(payload, tree)


# -- query language --------------------------------------------------------------------------------

_COND = re.compile(
    r"""^\s*(?:
        '(?P<pid>[^']+)'\s+in\s+parents
      | (?P<field>trashed|starred|mimeType|name|modifiedTime|createdTime)\s*(?P<op>!=|>=|<=|=|>|<)\s*
        (?P<value>'(?:[^'\\]|\\.)*'|true|false)
    )\s*$""",
    re.X,
)


def _compile_query(q: str) -> list[Any]:
    conds: list[Any] = []
    if not q.strip():
        return conds
    for part in re.split(r"\s+and\s+", q.strip()):
        m = _COND.match(part)
        if m is None:
            raise ValueError(part)
        if m.group("pid"):
            conds.append(("parents", m.group("pid")))
        else:
            raw = m.group("value")
            value: Any = (
                raw == "true" if raw in ("true", "false") else raw[1:-1].replace("\\'", "'")
            )
            conds.append((m.group("field"), m.group("op"), value))
    return conds


def _matches(f: Mapping[str, Any], conds: list[Any]) -> bool:
    for cond in conds:
        if cond[0] == "parents":
            if cond[1] not in f.get("parents", ()):
                return False
            continue
        field_name, op, value = cond
        have = f.get(field_name, False if field_name in ("trashed", "starred") else "")
        ok = {
            "=": have == value,
            "!=": have != value,
            ">": have > value,
            "<": have < value,
            ">=": have >= value,
            "<=": have <= value,
        }[op]
        if not ok:
            return False
    return True


def _truthy(value: str | None) -> bool:
    return (value or "").lower() == "true"


def _b64(n: int) -> str:
    return base64.urlsafe_b64encode(f"p{n}".encode()).decode().rstrip("=")


def _unb64(token: str) -> int:
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    if not raw.startswith("p"):
        raise ValueError(token)
    return int(raw[1:])


# -- sample data -----------------------------------------------------------------------------------

_DESIGN_DOC = """# Streaming ingestion design

## Goals

- Import documents from every service the team uses into one dataset.
- Keep memory flat: **bounded channels** between stages.

## Non-goals

Real-time sync (we poll the change feeds every few minutes).
"""

_RUNBOOK = """# On-call runbook

1. Check the dashboard for error spikes.
2. Page the owner of the failing stage.
3. Write a short incident note in *Incidents*.
"""

_MEETING = """# Weekly sync, {n}

Attendees: Ada, Grace, Linus

- Decided to ship the Drive connector behind a flag.
- Follow-up: measure export latency on big Docs.
"""

_SHEET_CSV = (
    "quarter,region,revenue\nQ1,EMEA,120000\nQ1,APAC,95000\nQ2,EMEA,134000\nQ2,APAC,101000\n"
)
_SLIDES_TEXT = "Roadmap 2025\n\nH1: connectors\nH2: embeddings and search\n"
_README = "# Data folder\n\nRaw exports land here; see the ingestion design for the schema.\n"
_NOTES_TXT = "Remember: rotate the service account key every 90 days.\n"
_CONFIG_JSON = '{"service": "ingest", "batch_rows": 10000, "sources": ["drive", "slack"]}\n'
_PAGE_HTML = "<html><body><h1>Status</h1><p>All systems operational.</p></body></html>\n"
_METRICS_CSV = "day,docs_per_s\nmon,98000\ntue,101500\nwed,99800\n"


@dataclass(frozen=True)
class _User:
    name: str
    email: str

    def resource(self, me: bool = False) -> dict[str, Any]:
        return {
            "kind": "drive#user",
            "displayName": self.name,
            "emailAddress": self.email,
            "me": me,
            "permissionId": hashlib.md5(self.email.encode()).hexdigest()[:20],
        }


_ADA = _User("Ada Lovelace", "ada@example.com")
_GRACE = _User("Grace Hopper", "grace@example.com")


class FakeGoogleDrive:
    """Deterministic, mutable Drive data plus the routes that serve it (see the module docstring).

    :param extra_docs: add this many more Google Docs (and text files) under the sample tree, spread
        over the subfolders (for multi-page and benchmark runs).
    :param token_lifetime: ``expires_in`` of issued access tokens, in seconds.
    :param export_limit: exports larger than this many bytes fail with 403
        ``exportSizeLimitExceeded`` (Drive's real cap is 10 MB).
    """

    def __init__(
        self,
        *,
        extra_docs: int = 0,
        token_lifetime: int = 3599,
        export_limit: int = 10 * 1024 * 1024,
        client_id: str = CLIENT_ID,
        client_secret: str = CLIENT_SECRET,
        refresh_token: str = REFRESH_TOKEN,
    ) -> None:
        self.files: dict[str, dict[str, Any]] = {}
        self.contents: dict[str, bytes] = {}
        self.drives: dict[str, str] = {}
        self.changes: list[tuple[int, str, str | None]] = []  # (number, fileId, driveId)
        self.token_lifetime = token_lifetime
        self.export_limit = export_limit
        self.client_id = client_id
        self.client_secret = client_secret
        self.refresh_token = refresh_token
        self.issued_tokens: set[str] = set()
        self.token_requests = 0
        self.service_accounts: dict[str, bytes] = {}
        self._next_change = 1000
        self._seq = 0
        self._clock = datetime(2024, 3, 1, 9, 0, 0, tzinfo=UTC)
        self._build_sample(extra_docs)

    # -- identifiers and time ------------------------------------------------------------------

    def _new_id(self, hint: str) -> str:
        self._seq += 1
        digest = hashlib.sha256(f"{hint}:{self._seq}".encode()).digest()
        return "1" + base64.urlsafe_b64encode(digest).decode().rstrip("=")[:32]

    def _tick(self) -> str:
        self._clock += timedelta(minutes=7, seconds=13, milliseconds=250)
        return _rfc3339(self._clock)

    def _record_change(self, file_id: str) -> None:
        self._next_change += 1
        self.changes.append(
            (self._next_change, file_id, self.files.get(file_id, {}).get("driveId"))
        )

    @property
    def start_page_token(self) -> str:
        """The token of the next change (what ``changes/startPageToken`` returns now)."""
        return str(self._next_change + 1)

    # -- building data -------------------------------------------------------------------------

    def _build_sample(self, extra_docs: int) -> None:
        root = self.add_folder("Engineering", parent=None, file_id=ROOT_ID, record=False)
        design = self.add_folder("Design Docs", parent=root, record=False)
        archive = self.add_folder("Archive", parent=design, record=False)
        runbooks = self.add_folder("Runbooks", parent=root, record=False)
        data = self.add_folder("Data", parent=root, record=False)
        meetings = self.add_folder("Meeting Notes", parent=root, record=False)
        add = self.add_file
        add("Streaming ingestion design", DOC, design, _DESIGN_DOC, owner=_ADA, record=False)
        add(
            "Old ingestion design (2022)",
            DOC,
            archive,
            "# Old design\n\nBatch only.\n",
            record=False,
        )
        add("On-call runbook", DOC, runbooks, _RUNBOOK, owner=_GRACE, record=False)
        add("Revenue by quarter", SHEET, data, _SHEET_CSV, record=False)
        add("Roadmap 2025", SLIDES, root, _SLIDES_TEXT, owner=_GRACE, record=False)
        add("README.md", "text/markdown", data, _README, record=False)
        add("notes.txt", "text/plain", runbooks, _NOTES_TXT, record=False)
        add("metrics.csv", "text/csv", data, _METRICS_CSV, record=False)
        add("ingest-config.json", "application/json", data, _CONFIG_JSON, record=False)
        add("status.html", "text/html", root, _PAGE_HTML, record=False)
        add("architecture.pdf", "application/pdf", design, b"%PDF-1.7\n%fake pdf\n", record=False)
        add("whiteboard.png", "image/png", meetings, b"\x89PNG\r\n\x1a\nfakepng", record=False)
        add("Pipeline sketch", _DRAWING, design, None, record=False)
        for n in range(1, 13):
            day = f"2024-02-{n:02d}"
            add(f"Weekly sync {day}", DOC, meetings, _MEETING.format(n=day), record=False)
        folders = [design, archive, runbooks, data, meetings]
        for n in range(extra_docs):
            where = folders[n % len(folders)]
            if n % 3 == 2:
                add(f"log-{n:05d}.txt", "text/plain", where, f"log line {n}\n" * 5, record=False)
            else:
                add(f"Note {n:05d}", DOC, where, f"# Note {n}\n\nBody of note {n}.\n", record=False)
        # outside the synced tree: must never be imported when syncing ROOT_ID
        add("Personal todo", DOC, None, "# Todo\n\n- buy milk\n", record=False)
        # a shared drive with a small tree of its own
        self.drives[SHARED_DRIVE_ID] = "Team Drive"
        specs = self.add_folder("Specs", parent=SHARED_DRIVE_ID, record=False)
        add(
            "Team charter",
            DOC,
            SHARED_DRIVE_ID,
            "# Team charter\n\nWe own ingestion.\n",
            record=False,
        )
        add("API spec", DOC, specs, "# API spec\n\nGET /documents\n", record=False)
        add("budget.csv", "text/csv", specs, "item,eur\nservers,1200\n", record=False)

    def _drive_of(self, parent: str | None) -> str | None:
        if parent is None:
            return None
        if parent in self.drives:
            return parent
        return self.files.get(parent, {}).get("driveId")

    def add_folder(
        self,
        name: str,
        parent: str | None,
        *,
        file_id: str | None = None,
        record: bool = True,
    ) -> str:
        """Create a folder under ``parent`` (a folder id, a shared drive id, or None for My Drive)."""
        return self.add_file(name, FOLDER, parent, None, file_id=file_id, record=record)

    def add_file(
        self,
        name: str,
        mime_type: str,
        parent: str | None,
        content: str | bytes | None,
        *,
        owner: _User | None = None,
        file_id: str | None = None,
        record: bool = True,
    ) -> str:
        """Create a file; ``content`` is the text (Docs: markdown, Sheets: CSV, Slides: text) or bytes.

        Returns the new file id; the creation is recorded in the changes feed unless ``record`` is
        False (used for the initial sample data).
        """
        fid = file_id or self._new_id(name)
        now = self._tick()
        drive_id = self._drive_of(parent)
        owner = owner or _ADA
        f: dict[str, Any] = {
            "kind": "drive#file",
            "id": fid,
            "name": name,
            "mimeType": mime_type,
            "parents": [parent] if parent else [],
            "createdTime": now,
            "modifiedTime": now,
            "version": "1",
            "trashed": False,
            "explicitlyTrashed": False,
            "starred": False,
            "webViewLink": self._view_link(fid, mime_type),
            "lastModifyingUser": owner.resource(),
            "spaces": ["drive"],
        }
        if drive_id:
            f["driveId"] = drive_id
        else:
            f["owners"] = [owner.resource(me=owner is _ADA)]
            f["ownedByMe"] = owner is _ADA
        if not parent:
            f.pop("parents")
        if mime_type == SHORTCUT and isinstance(content, str):
            target = self.files[content]
            f["shortcutDetails"] = {"targetId": content, "targetMimeType": target["mimeType"]}
            content = None
        self.files[fid] = f
        if content is not None:
            self._set_content(fid, content)
        if record:
            self._record_change(fid)
        return fid

    def add_shortcut(self, name: str, parent: str, target_id: str) -> str:
        """Create a shortcut to ``target_id`` in ``parent``."""
        return self.add_file(name, SHORTCUT, parent, target_id)

    @staticmethod
    def _view_link(fid: str, mime: str) -> str:
        kind = {DOC: "document", SHEET: "spreadsheets", SLIDES: "presentation"}.get(mime)
        if kind:
            return f"https://docs.google.com/{kind}/d/{fid}/edit?usp=drivesdk"
        if mime == FOLDER:
            return f"https://drive.google.com/drive/folders/{fid}"
        return f"https://drive.google.com/file/d/{fid}/view?usp=drivesdk"

    def _set_content(self, fid: str, content: str | bytes) -> None:
        raw = content.encode() if isinstance(content, str) else content
        self.contents[fid] = raw
        f = self.files[fid]
        f["size"] = str(len(raw))
        if not f["mimeType"].startswith(_GOOGLE_APPS):
            f["md5Checksum"] = hashlib.md5(raw).hexdigest()
            f["headRevisionId"] = hashlib.sha1(raw).hexdigest()[:24]

    def _bump(self, fid: str, *, content_changed: bool) -> dict[str, Any]:
        f = self.files[fid]
        f["version"] = str(int(f["version"]) + 1)
        if content_changed:
            f["modifiedTime"] = self._tick()
        return f

    # -- mutations (each one is a change in the feed) ------------------------------------------

    def edit_file(self, file_id: str, content: str | bytes) -> None:
        """Replace a file's content (a new ``modifiedTime``, ``version`` and checksum)."""
        self._bump(file_id, content_changed=True)
        self._set_content(file_id, content)
        self._record_change(file_id)

    def rename(self, file_id: str, name: str) -> None:
        """Rename a file or folder (``modifiedTime`` moves, as on Drive)."""
        self._bump(file_id, content_changed=True)["name"] = name
        self._record_change(file_id)

    def move(self, file_id: str, new_parent: str | None) -> None:
        """Move a file or folder to another parent (or to the My Drive root with None)."""
        f = self._bump(file_id, content_changed=False)
        if new_parent:
            f["parents"] = [new_parent]
        else:
            f.pop("parents", None)
        self._record_change(file_id)

    def touch_metadata(self, file_id: str) -> None:
        """A change that moves only ``version`` (a permission change, say): content is unchanged."""
        self._bump(file_id, content_changed=False)
        self._record_change(file_id)

    def trash(self, file_id: str) -> None:
        """Move a file (and, for a folder, everything under it) to the trash."""
        for fid in [file_id, *self.descendants(file_id)]:
            f = self._bump(fid, content_changed=False)
            f["trashed"] = True
            f["explicitlyTrashed"] = fid == file_id
            self._record_change(fid)

    def delete(self, file_id: str) -> None:
        """Delete a file for good (the feed reports ``removed: true`` without a ``file``)."""
        for fid in [file_id, *self.descendants(file_id)]:
            drive_id = self.files[fid].get("driveId")
            del self.files[fid]
            self.contents.pop(fid, None)
            self._next_change += 1
            self.changes.append((self._next_change, fid, drive_id))

    def descendants(self, folder_id: str) -> list[str]:
        """Ids of every file below ``folder_id``."""
        out: list[str] = []
        todo = [folder_id]
        while todo:
            current = todo.pop()
            for fid, f in self.files.items():
                if current in f.get("parents", ()):
                    out.append(fid)
                    if f["mimeType"] == FOLDER:
                        todo.append(fid)
        return out

    def find(self, name: str) -> str:
        """The id of the (first) file called ``name``."""
        for fid, f in self.files.items():
            if f["name"] == name:
                return fid
        raise KeyError(name)

    def tree_ids(self, root: str = ROOT_ID, *, include_trashed: bool = False) -> set[str]:
        """Ids under ``root`` (root included) that a sync of it should see."""
        ids = {root} if root in self.files else set()
        for fid in self.descendants(root):
            if include_trashed or not self.files[fid]["trashed"]:
                ids.add(fid)
        return ids

    def demo_change(self) -> list[str]:
        """A small batch of realistic changes (for ``cfstream demo --change``): what was done."""
        # real time (for the clock and the change numbers), so that the next --change run, with a
        # fresh fake, is again newer than the token the previous run saved
        self._clock = max(self._clock, datetime.now(UTC))
        self._next_change = max(self._next_change, int(time.time() * 1000))
        design = self.find("Design Docs")
        stamp = self._clock.strftime("%Y-%m-%d %H:%M:%S")
        added = self.add_file(
            f"Retro {stamp}", DOC, design, f"# Retro {stamp}\n\n- went well: streaming\n"
        )
        self.edit_file(self.find("On-call runbook"), _RUNBOOK + "4. Close the incident.\n")
        victim = next(
            (fid for fid, f in self.files.items() if f["name"].startswith("Weekly sync")), None
        )
        done = [f"added {self.files[added]['name']!r}", "edited 'On-call runbook'"]
        if victim is not None:
            done.append(f"deleted {self.files[victim]['name']!r}")
            self.delete(victim)
        return done

    # -- demo ----------------------------------------------------------------------------------

    def demo_config(self, base_url: str) -> dict[str, Any]:
        """Source options for ``cfstream demo`` against this fake served at ``base_url``."""
        return {
            "folder_ids": [ROOT_ID],
            "credentials": {
                "type": "oauth",
                "client_id": self.client_id,
                "client_secret": self.client_secret,
                "refresh_token": self.refresh_token,
            },
            "base_url": base_url,
            "token_url": f"{base_url.rstrip('/')}/token",
        }

    # -- serving -------------------------------------------------------------------------------

    def mount(self, api: FakeAPI) -> None:
        """Register the token endpoint and the Drive v3 routes on ``api``."""
        api.route("POST", "/token", self._token)
        api.route("GET", "/drive/v3/files", self._list_files)
        api.route("GET", "/drive/v3/files/{file_id}", self._get_file)
        api.route("GET", "/drive/v3/files/{file_id}/export", self._export)
        api.route("GET", "/drive/v3/changes/startPageToken", self._start_token)
        api.route("GET", "/drive/v3/changes", self._list_changes)

    def revoke_access_tokens(self) -> None:
        """Invalidate every issued access token (the next Drive call answers 401)."""
        self.issued_tokens.clear()

    def accept_service_account(self, client_email: str, public_key_pem: bytes) -> None:
        """Accept JWT-bearer grants signed by this key for ``client_email`` (needs google-auth)."""
        self.service_accounts[client_email] = public_key_pem

    def _issue(self) -> Reply:
        self.token_requests += 1
        token = (
            f"ya29.fake-{self.token_requests}-"
            + hashlib.sha1(f"{self.client_id}{self.token_requests}".encode()).hexdigest()[:24]
        )
        self.issued_tokens.add(token)
        return Reply(
            {
                "access_token": token,
                "expires_in": self.token_lifetime,
                "scope": "https://www.googleapis.com/auth/drive.readonly",
                "token_type": "Bearer",
            }
        )

    async def _token(self, request: web.Request) -> Reply:
        form = {k: v[0] for k, v in parse_qs((await request.read()).decode()).items()}
        grant = form.get("grant_type")
        if grant == "refresh_token":
            if (
                form.get("client_id") != self.client_id
                or form.get("client_secret") != self.client_secret
            ):
                return Reply(
                    {
                        "error": "invalid_client",
                        "error_description": "The OAuth client was not found.",
                    },
                    status=401,
                )
            if form.get("refresh_token") != self.refresh_token:
                return Reply(
                    {
                        "error": "invalid_grant",
                        "error_description": "Token has been expired or revoked.",
                    },
                    status=400,
                )
            return self._issue()
        if grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return self._jwt_grant(
                form.get("assertion", ""), f"{request.scheme}://{request.host}/token"
            )
        return Reply(
            {
                "error": "unsupported_grant_type",
                "error_description": f"Invalid grant_type: {grant}",
            },
            status=400,
        )

    def _jwt_grant(self, assertion: str, audience: str) -> Reply:
        invalid = Reply(
            {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}, status=400
        )
        try:
            payload_b64 = assertion.split(".")[1]
            claims = orjson.loads(
                base64.urlsafe_b64decode(payload_b64 + "=" * (-len(payload_b64) % 4))
            )
        except (IndexError, ValueError):
            return invalid
        key = self.service_accounts.get(str(claims.get("iss")))
        if key is None:
            return invalid
        from google.auth import jwt  # optional dependency, only for service-account tests

        try:
            jwt.decode(assertion, certs=key, audience=audience)
        except ValueError:
            return invalid
        return self._issue()

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        return header.startswith("Bearer ") and header[7:] in self.issued_tokens

    @staticmethod
    def _unauthorized() -> Reply:
        return Reply(
            {
                "error": {
                    "errors": [
                        {
                            "domain": "global",
                            "reason": "authError",
                            "message": "Invalid Credentials",
                            "locationType": "header",
                            "location": "Authorization",
                        }
                    ],
                    "code": 401,
                    "message": "Invalid Credentials",
                }
            },
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'},
        )

    def _visible(self, f: Mapping[str, Any], all_drives: bool) -> bool:
        return all_drives or not f.get("driveId")

    def _root_resource(self, drive_id: str) -> dict[str, Any]:
        return {
            "kind": "drive#file",
            "id": drive_id,
            "name": self.drives[drive_id],
            "mimeType": FOLDER,
            "driveId": drive_id,
            "trashed": False,
            "createdTime": "2024-01-15T08:00:00.000Z",
            "modifiedTime": "2024-01-15T08:00:00.000Z",
            "version": "1",
            "webViewLink": f"https://drive.google.com/drive/folders/{drive_id}",
        }

    def _list_files(self, request: web.Request) -> Reply:
        if not self._authorized(request):
            return self._unauthorized()
        query = request.query
        try:
            conds = _compile_query(query.get("q", ""))
        except ValueError as exc:
            return _error(400, "invalid", f"Invalid Value: q (near {exc.args[0]!r})")
        corpora = query.get("corpora", "user")
        supports = _truthy(query.get("supportsAllDrives"))
        include = _truthy(query.get("includeItemsFromAllDrives"))
        drive_id = query.get("driveId")
        if corpora == "drive":
            if not drive_id or not (supports and include):
                return _error(
                    400,
                    "invalid",
                    "The includeItemsFromAllDrives and supportsAllDrives parameters must be "
                    "set to true when corpora is drive.",
                )
            if drive_id not in self.drives:
                return _error(404, "notFound", f"Shared drive not found: {drive_id}")
        try:
            size = max(1, min(1000, int(query.get("pageSize", "100"))))
            offset = _unb64(query["pageToken"]) if "pageToken" in query else 0
        except (ValueError, KeyError):
            return _error(400, "invalid", "Invalid Value: pageToken")
        hits = [
            f
            for f in sorted(self.files.values(), key=lambda f: (f["name"].lower(), f["id"]))
            if _matches(f, conds)
            and (f.get("driveId") == drive_id if corpora == "drive" else True)
            and self._visible(f, supports and include)
        ]
        page = hits[offset : offset + size]
        payload: dict[str, Any] = {
            "kind": "drive#fileList",
            "incompleteSearch": False,
            "files": page,
        }
        if offset + size < len(hits):
            payload["nextPageToken"] = _b64(offset + size)
        return Reply(_apply_fields(payload, query.get("fields"), _DEFAULT_LIST))

    def _get_file(self, request: web.Request) -> Reply:
        if not self._authorized(request):
            return self._unauthorized()
        fid = request.match_info["file_id"]
        supports = _truthy(request.query.get("supportsAllDrives"))
        if fid in self.drives and supports:
            f = self._root_resource(fid)
        else:
            found = self.files.get(fid)
            if found is None or not self._visible(found, supports):
                return _error(404, "notFound", f"File not found: {fid}.")
            f = found
        if request.query.get("alt") == "media":
            if f["mimeType"].startswith(_GOOGLE_APPS):
                return _error(
                    403,
                    "fileNotDownloadable",
                    "Only files with binary content can be downloaded. Use Export with Docs "
                    "Editors files.",
                )
            return Reply(body=self.contents.get(fid, b""), content_type=f["mimeType"])
        return Reply(_apply_fields(f, request.query.get("fields"), _DEFAULT_FILE))

    def _export(self, request: web.Request) -> Reply:
        if not self._authorized(request):
            return self._unauthorized()
        fid = request.match_info["file_id"]
        f = self.files.get(fid)
        if f is None:  # files.export has no supportsAllDrives: it works on any file by id
            return _error(404, "notFound", f"File not found: {fid}.")
        target = request.query.get("mimeType", "")
        formats = _EXPORTS.get(f["mimeType"])
        if formats is None:
            return _error(403, "fileNotExportable", "Export only supports Docs Editors files.")
        if target not in formats:
            return _error(400, "badRequest", "The requested conversion is not supported.")
        raw = self.contents.get(fid, b"")
        if target == "text/plain" and f["mimeType"] == DOC:
            raw = re.sub(rb"(?m)^#+\s*|\*\*|(?<!\w)\*(?!\s)|(?<!\s)\*(?!\w)", b"", raw)
        elif target == "text/html":
            raw = b"<html><body><pre>" + raw + b"</pre></body></html>"
        if len(raw) > self.export_limit:
            return _error(403, "exportSizeLimitExceeded", "This file is too large to be exported.")
        return Reply(body=raw, content_type=f"{target}; charset=utf-8")

    def _start_token(self, request: web.Request) -> Reply:
        if not self._authorized(request):
            return self._unauthorized()
        return Reply({"kind": "drive#startPageToken", "startPageToken": self.start_page_token})

    def _list_changes(self, request: web.Request) -> Reply:
        if not self._authorized(request):
            return self._unauthorized()
        query = request.query
        token = query.get("pageToken")
        if not token or not token.isdigit():
            return _error(400, "invalid", "Invalid Value: pageToken")
        supports = _truthy(query.get("supportsAllDrives"))
        include = _truthy(query.get("includeItemsFromAllDrives"))
        drive_id = query.get("driveId")
        if drive_id and not supports:
            return _error(
                403, "teamDrivesSupportRequired", "supportsAllDrives must be true with driveId."
            )
        include_removed = query.get("includeRemoved", "true").lower() != "false"
        size = max(1, min(1000, int(query.get("pageSize", "100"))))
        start = int(token)
        # the latest change of each file, in feed order, from the token on
        latest: dict[str, tuple[int, str | None]] = {}
        for number, fid, change_drive in self.changes:
            if number < start:
                continue
            if drive_id and change_drive != drive_id:
                continue
            if change_drive and not drive_id and not (supports and include):
                continue
            latest.pop(fid, None)
            latest[fid] = (number, change_drive)
        entries = sorted(latest.items(), key=lambda kv: kv[1][0])
        out: list[dict[str, Any]] = []
        next_token: str | None = None
        for fid, (number, change_drive) in entries:
            f = self.files.get(fid)
            removed = f is None
            if removed and not include_removed:
                continue
            if len(out) == size:
                next_token = str(number)
                break
            change: dict[str, Any] = {
                "kind": "drive#change",
                "type": "file",
                "changeType": "file",
                "time": _rfc3339(self._clock),
                "removed": removed,
                "fileId": fid,
            }
            if change_drive:
                change["driveId"] = change_drive
            if f is not None:
                change["file"] = f
            out.append(change)
        payload: dict[str, Any] = {"kind": "drive#changeList", "changes": out}
        if next_token is not None:
            payload["nextPageToken"] = next_token
        else:  # never behind the token asked for
            payload["newStartPageToken"] = str(max(start, int(self.start_page_token)))
        return Reply(_apply_fields(payload, query.get("fields"), _DEFAULT_CHANGES))


def mount(api: FakeAPI, drive: FakeGoogleDrive | None = None) -> FakeGoogleDrive:
    """Mount ``drive`` (default: a fresh :class:`FakeGoogleDrive`) on ``api`` and return it."""
    drive = drive or FakeGoogleDrive()
    drive.mount(api)
    return drive


def demo_config(base_url: str) -> dict[str, Any]:
    """Source options for ``cfstream demo`` against a default :class:`FakeGoogleDrive`."""
    return FakeGoogleDrive().demo_config(base_url)


def demo_change(mounted: FakeGoogleDrive) -> list[str]:
    """``cfstream demo --change``: add, edit and delete a few files of the mounted fake."""
    return mounted.demo_change()
