"""A fake Slack Web API for tests, benchmarks and ``cfstream demo``.

:class:`FakeSlack` holds deterministic, mutable workspace data (users, channels, messages with
threads) and serves it on a :class:`~cfstream.testing.FakeAPI` with Slack's real shapes: the
``{"ok": ...}`` envelope (errors as HTTP 200 ``{"ok": false, "error": "<code>"}``), cursor pages
(``limit`` + ``cursor`` -> ``response_metadata.next_cursor``, ``""`` on the last page), history
newest first filtered by ``oldest``/``latest``/``inclusive``, thread parents carrying
``reply_count``/``latest_reply``, ``conversations.replies`` starting every page with the parent,
and ``Authorization: Bearer`` checks (``not_authed``/``invalid_auth``).

Example::

    async with FakeAPI() as api:
        slack = FakeSlack()
        slack.mount(api)
        source = SlackSource(**slack.demo_config(api.url))

Module-level :func:`mount`, :func:`demo_config` and :func:`demo_change` are the hooks
``cfstream demo`` looks for.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from cfstream.testing.server import FakeAPI

__all__ = ("FakeSlack", "demo_change", "demo_config", "mount")

DEFAULT_TOKEN = "xoxb-fake-cfstream-0000-slack-token"
_START = 1_700_000_000

_PEOPLE = (
    ("U01ADA", "ada", "Ada Lovelace"),
    ("U02GRACE", "grace", "Grace Hopper"),
    ("U03LINUS", "linus", "Linus Torvalds"),
    ("U04BARBARA", "barbara", "Barbara Liskov"),
    ("U05KEN", "ken", "Ken Thompson"),
)
_CHANNELS = (
    ("C01GENERAL", "general", False, "Company-wide announcements", "Everyone is here."),
    ("C02ENGINEER", "engineering", False, "Build, ship, repeat", "Engineering discussions."),
    ("G03INCIDENT", "incidents", True, "Sev1 playbook pinned", "Private incident response."),
)
_LINES = (
    "Morning all! The deploy of v2.3 went out at 09:00 without issues.",
    "Can someone review the Lance sink PR? <https://example.com/pr/42|PR #42> is ready.",
    "Reminder: the design review for the streaming runner is at 14:00.",
    "I measured the chunked channel hop at 0.09 µs per document &amp; it holds up.",
    "The nightly benchmark regressed by 8% on the merge_insert path.",
    "Does anyone know why the Notion fixture has minute-granular timestamps?",
    "Heads up: the staging cluster will be down for maintenance on Friday.",
    "I pushed a fix for the flaky retry test; it used wall-clock time.",
    "New hire onboarding doc is updated, please skim it.",
    "Backpressure works: memory stayed flat at 1M documents.",
    "Who owns the Slack connector docs page?",
    "The rate limiter now honours Retry-After on 429s.",
    "Lunch order closes at 11:30 today.",
    "We should bound every wait in the Discord client, no exceptions.",
    "Dataset compaction ran in 4.2 s on the 10 GB benchmark.",
    "Post-mortem for yesterday's outage is in the wiki.",
)
_REPLIES = (
    "Thanks, looking now.",
    "Agreed, let's do it.",
    "I can take this one.",
    "Done, see the updated numbers.",
    "Could we discuss in the standup?",
)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(cursor: str) -> str:
    try:
        return base64.b64decode(cursor.encode()).decode()
    except (ValueError, UnicodeDecodeError):
        return ""


def _ts_key(ts: str) -> tuple[int, int]:
    sec, _, frac = ts.partition(".")
    return int(sec), int(frac or 0)


def _key(m: Mapping[str, Any]) -> tuple[int, int]:
    """Sort key of a message; malformed test messages (no ``ts``) sort first."""
    ts = m.get("ts")
    return _ts_key(ts) if isinstance(ts, str) else (0, 0)


class FakeSlack:
    """Deterministic Slack workspace data and the routes that serve it.

    :param token: the token the fake accepts (``Authorization: Bearer <token>``).
    :param messages_per_channel: top-level messages per sample channel (every fourth one gets a
        thread of replies).
    :param prefix: where the Web API lives on the server (``<api.url><prefix>/conversations.list``);
        a prefix keeps several fakes apart on one server.
    :param workspace_url: what ``auth.test`` answers as the workspace URL.
    """

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        messages_per_channel: int = 16,
        prefix: str = "/slack/api",
        workspace_url: str = "https://cfstream-demo.slack.com/",
    ) -> None:
        self.token = token
        self.prefix = prefix.rstrip("/")
        self.workspace_url = workspace_url
        self.users: dict[str, dict[str, Any]] = {}
        self.channels: dict[str, dict[str, Any]] = {}
        #: channel id -> every message (top-level and replies), raw Slack objects
        self.messages: dict[str, list[dict[str, Any]]] = {}
        self._clock = _START
        self._seq = 0
        self._changes = 0
        for uid, handle, real in _PEOPLE:
            self.add_user(handle, real, user_id=uid)
        for cid, name, private, topic, purpose in _CHANNELS:
            self.add_channel(name, private=private, topic=topic, purpose=purpose, channel_id=cid)
        for ci, cid in enumerate(self.channels):
            for i in range(messages_per_channel):
                n = ci * 7 + i
                user = _PEOPLE[n % len(_PEOPLE)][0]
                text = _LINES[n % len(_LINES)]
                if i % 5 == 2:
                    text += f" cc <@{_PEOPLE[(n + 1) % len(_PEOPLE)][0]}>"
                ts = self.add_message(cid, text, user=user)
                if i % 4 == 1:
                    for j in range(1 + n % 3):
                        self.add_message(
                            cid,
                            _REPLIES[(n + j) % len(_REPLIES)],
                            user=_PEOPLE[(n + j + 2) % len(_PEOPLE)][0],
                            thread_ts=ts,
                        )

    # -- data --------------------------------------------------------------------------------------

    def _next_ts(self) -> str:
        self._clock += 97
        self._seq += 1
        return f"{self._clock}.{self._seq:06d}"

    def add_user(self, handle: str, real_name: str, *, user_id: str | None = None) -> str:
        """Add a user (``users.info`` shape); returns its id."""
        uid = user_id or f"U{len(self.users) + 1:02d}{handle.upper()[:8]}"
        self.users[uid] = {
            "id": uid,
            "team_id": "T0CFSTRM",
            "name": handle,
            "deleted": False,
            "real_name": real_name,
            "tz": "Europe/London",
            "is_bot": False,
            "profile": {
                "real_name": real_name,
                "real_name_normalized": real_name,
                "display_name": handle,
                "display_name_normalized": handle,
                "email": f"{handle}@example.com",
                "team": "T0CFSTRM",
            },
            "updated": _START,
        }
        return uid

    def add_channel(
        self,
        name: str,
        *,
        private: bool = False,
        topic: str = "",
        purpose: str = "",
        is_member: bool = True,
        archived: bool = False,
        channel_id: str | None = None,
    ) -> str:
        """Add a channel (``conversations.list`` shape); returns its id."""
        cid = channel_id or f"C{len(self.channels) + 1:02d}{name.upper().replace('-', '')[:8]}"
        self.channels[cid] = {
            "id": cid,
            "name": name,
            "name_normalized": name,
            "is_channel": not private,
            "is_group": private,
            "is_im": False,
            "is_mpim": False,
            "is_private": private,
            "is_archived": archived,
            "is_general": name == "general",
            "is_member": is_member,
            "is_shared": False,
            "is_ext_shared": False,
            "is_org_shared": False,
            "created": _START - 86_400,
            "creator": _PEOPLE[0][0],
            "unlinked": 0,
            "topic": {"value": topic, "creator": "", "last_set": 0},
            "purpose": {"value": purpose, "creator": "", "last_set": 0},
            "previous_names": [],
            "num_members": len(self.users),
        }
        self.messages.setdefault(cid, [])
        return cid

    def add_message(
        self,
        channel: str,
        text: str,
        *,
        user: str | None = None,
        thread_ts: str | None = None,
        **extra: Any,
    ) -> str:
        """Post a message (a reply when ``thread_ts`` is given); returns its ``ts``."""
        ts = self._next_ts()
        msg: dict[str, Any] = {
            "type": "message",
            "user": user or _PEOPLE[0][0],
            "text": text,
            "ts": ts,
            "team": "T0CFSTRM",
        }
        if thread_ts is not None:
            msg["thread_ts"] = thread_ts
            parent = self.find(channel, thread_ts)
            msg["parent_user_id"] = parent.get("user") if parent else None
        msg.update(extra)
        self.messages[channel].append(msg)
        return ts

    def add_raw_message(self, channel: str, payload: dict[str, Any]) -> None:
        """Append ``payload`` as is (to test malformed messages)."""
        self.messages[channel].append(payload)

    def find(self, channel: str, ts: str) -> dict[str, Any] | None:
        """The message with ``ts`` in ``channel``, or None."""
        for m in self.messages.get(channel, []):
            if m.get("ts") == ts:
                return m
        return None

    def edit_message(self, channel: str, ts: str, text: str) -> None:
        """Edit a message's text; Slack adds ``edited: {user, ts}``."""
        m = self.find(channel, ts)
        if m is None:
            raise KeyError(f"no message {ts} in {channel}")
        m["text"] = text
        m["edited"] = {"user": m.get("user"), "ts": self._next_ts()}

    def delete_message(self, channel: str, ts: str) -> None:
        """Delete a message (and, for a thread parent, its replies)."""
        self.messages[channel] = [
            m
            for m in self.messages[channel]
            if m.get("ts") != ts and not (m.get("thread_ts") == ts and m.get("ts") != ts)
        ]

    def top_level(self, channel: str) -> list[dict[str, Any]]:
        """Messages as ``conversations.history`` shows them (oldest first)."""
        out = []
        for m in self.messages[channel]:
            t = m.get("thread_ts")
            if t is None or t == m.get("ts") or m.get("subtype") == "thread_broadcast":
                out.append(self._with_thread_fields(channel, m))
        return out

    def replies(self, channel: str, thread_ts: str) -> list[dict[str, Any]]:
        """A thread's replies, oldest first (without the parent)."""
        return [
            m
            for m in self.messages[channel]
            if m.get("thread_ts") == thread_ts and m.get("ts") != thread_ts
        ]

    def _with_thread_fields(self, channel: str, m: dict[str, Any]) -> dict[str, Any]:
        ts = m.get("ts")
        if not isinstance(ts, str) or m.get("thread_ts") not in (None, ts):
            return m
        replies = self.replies(channel, ts)
        if not replies:
            return {k: v for k, v in m.items() if k != "thread_ts"}
        out = dict(m)
        out["thread_ts"] = ts
        out["reply_count"] = len(replies)
        out["reply_users"] = sorted({str(r.get("user")) for r in replies})
        out["reply_users_count"] = len(out["reply_users"])
        out["latest_reply"] = replies[-1]["ts"]
        return out

    def simulate_changes(self) -> list[str]:
        """One deterministic round of changes: a new message, a reply, an edit; returns a summary."""
        self._changes += 1
        n = self._changes
        cid = next(iter(self.channels))
        tops = [m for m in self.top_level(cid) if isinstance(m.get("ts"), str)]
        new_ts = self.add_message(cid, f"Change round {n}: a new message.", user=_PEOPLE[1][0])
        thread = tops[-1]["ts"]
        self.add_message(cid, f"Reply from change round {n}.", user=_PEOPLE[2][0], thread_ts=thread)
        edited = tops[-2]["ts"]
        self.edit_message(cid, edited, f"{tops[-2]['text']} (edited in change round {n})")
        return [f"new message {new_ts}", f"reply in thread {thread}", f"edited {edited}"]

    # -- serving -----------------------------------------------------------------------------------

    def mount(self, api: FakeAPI) -> None:
        """Register the Web API methods on ``api`` under :attr:`prefix`."""
        routes = {
            "auth.test": self._auth_test,
            "conversations.list": self._conversations_list,
            "conversations.info": self._conversations_info,
            "conversations.history": self._conversations_history,
            "conversations.replies": self._conversations_replies,
            "users.info": self._users_info,
        }
        for method, handler in routes.items():
            api.route("GET", f"{self.prefix}/{method}", self._guarded(handler))
            api.route("POST", f"{self.prefix}/{method}", self._guarded(handler))

    def demo_config(self, base_url: str) -> dict[str, Any]:
        """Source options for this fake served at ``base_url`` (a FakeAPI's url)."""
        return {
            "token": self.token,
            "channels": ["general", "engineering", "G03INCIDENT"],
            "base_url": f"{base_url.rstrip('/')}{self.prefix}",
        }

    def _guarded(self, handler: Any) -> Any:
        async def serve(request: web.Request) -> Any:
            auth = request.headers.get("Authorization")
            if not auth:
                return {"ok": False, "error": "not_authed"}
            if auth != f"Bearer {self.token}":
                return {"ok": False, "error": "invalid_auth"}
            params: dict[str, str] = dict(request.query)
            if request.method == "POST":
                form = await request.post()
                params.update({k: str(v) for k, v in form.items()})
            return handler(params)

        return serve

    def _auth_test(self, params: Mapping[str, str]) -> Any:
        return {
            "ok": True,
            "url": self.workspace_url,
            "team": "cfstream demo",
            "user": "cfstream-bot",
            "team_id": "T0CFSTRM",
            "user_id": "U0BOT",
            "bot_id": "B0BOT",
        }

    def _channel_or_error(self, params: Mapping[str, str]) -> tuple[str, Any]:
        cid = params.get("channel", "")
        ch = self.channels.get(cid)
        if ch is None:
            return cid, {"ok": False, "error": "channel_not_found"}
        if not ch.get("is_member", True):
            return cid, {"ok": False, "error": "not_in_channel"}
        return cid, None

    def _conversations_list(self, params: Mapping[str, str]) -> Any:
        types = set((params.get("types") or "public_channel").split(","))
        exclude_archived = params.get("exclude_archived") in ("true", "1")
        chans = [
            copy.deepcopy(c)
            for c in self.channels.values()
            if ("private_channel" if c["is_private"] else "public_channel") in types
            and not (exclude_archived and c["is_archived"])
        ]
        limit = max(1, min(1000, int(params.get("limit") or 100)))
        offset = 0
        if params.get("cursor"):
            raw = _unb64(params["cursor"])
            if not raw.startswith("team:"):
                return {"ok": False, "error": "invalid_cursor"}
            offset = int(raw[5:])
        chunk = chans[offset : offset + limit]
        more = offset + limit < len(chans)
        return {
            "ok": True,
            "channels": chunk,
            "response_metadata": {"next_cursor": _b64(f"team:{offset + limit}") if more else ""},
        }

    def _conversations_info(self, params: Mapping[str, str]) -> Any:
        cid, err = self._channel_or_error(params)
        if err is not None and err["error"] == "channel_not_found":
            return err
        return {"ok": True, "channel": copy.deepcopy(self.channels[cid])}

    def _page(
        self,
        items: list[dict[str, Any]],
        params: Mapping[str, str],
        *,
        newest_first: bool,
    ) -> Any:
        limit = max(1, min(999, int(params.get("limit") or 100)))
        if params.get("cursor"):
            raw = _unb64(params["cursor"])
            if not raw.startswith("next_ts:"):
                return {"ok": False, "error": "invalid_cursor"}
            edge = _ts_key(raw[8:])
            items = [m for m in items if (_key(m) <= edge if newest_first else _key(m) >= edge)]
        chunk, rest = items[:limit], items[limit:]
        body: dict[str, Any] = {
            "ok": True,
            "messages": copy.deepcopy(chunk),
            "has_more": bool(rest),
        }
        nxt = _key(rest[0]) if rest else None
        cursor = _b64(f"next_ts:{nxt[0]}.{nxt[1]:06d}") if nxt is not None else ""
        body["response_metadata"] = {"next_cursor": cursor}
        return body

    def _conversations_history(self, params: Mapping[str, str]) -> Any:
        cid, err = self._channel_or_error(params)
        if err is not None:
            return err
        inclusive = params.get("inclusive") in ("true", "1")
        oldest = _ts_key(params["oldest"]) if params.get("oldest") else None
        latest = _ts_key(params["latest"]) if params.get("latest") else None

        def keep(m: Mapping[str, Any]) -> bool:
            ts = m.get("ts")
            if not isinstance(ts, str):
                return True  # malformed test data is served as is
            k = _ts_key(ts)
            if oldest is not None and (k < oldest or (k == oldest and not inclusive)):
                return False
            return not (latest is not None and (k > latest or (k == latest and not inclusive)))

        msgs = [m for m in self.top_level(cid) if keep(m)]
        msgs.sort(key=_key)
        msgs.reverse()
        page = self._page(msgs, params, newest_first=True)
        if page.get("ok"):
            page["pin_count"] = 0
        return page

    def _conversations_replies(self, params: Mapping[str, str]) -> Any:
        cid, err = self._channel_or_error(params)
        if err is not None:
            return err
        ts = params.get("ts", "")
        parent = self.find(cid, ts)
        if parent is None:
            return {"ok": False, "error": "thread_not_found"}
        page = self._page(self.replies(cid, ts), params, newest_first=False)
        if page.get("ok"):
            head = self._with_thread_fields(cid, parent)
            page["messages"].insert(0, copy.deepcopy(head))
        return page

    def _users_info(self, params: Mapping[str, str]) -> Any:
        user = self.users.get(params.get("user", ""))
        if user is None:
            return {"ok": False, "error": "user_not_found"}
        return {"ok": True, "user": copy.deepcopy(user)}


def mount(api: FakeAPI) -> FakeSlack:
    """``cfstream demo`` hook: a :class:`FakeSlack` with the sample workspace, mounted on ``api``."""
    fake = FakeSlack()
    fake.mount(api)
    return fake


def demo_config(base_url: str) -> dict[str, Any]:
    """``cfstream demo`` hook: the ``slack`` source options for the fake at ``base_url``."""
    return FakeSlack().demo_config(base_url)


def demo_change(mounted: object) -> list[str]:
    """``cfstream demo --change`` hook: a new message, a new reply and an edit."""
    if not isinstance(mounted, FakeSlack):
        return []
    return mounted.simulate_changes()
