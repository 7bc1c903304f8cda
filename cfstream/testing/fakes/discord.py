"""A fake Discord REST API (v10) for tests, benchmarks and ``cfstream demo``.

:class:`FakeDiscord` holds a deterministic, mutable guild (channels, threads started from messages,
messages with replies, mentions, attachments and reactions) and serves it on a
:class:`~cfstream.testing.FakeAPI` with Discord's shapes: snowflake ids as strings, messages
newest to oldest for ``before``/``after``/``around`` + ``limit`` (1..100, default 50),
``{"threads": [...], "members": [...]}`` for active threads, ``has_more`` and ``before=<ISO
timestamp>`` for archived public threads, ``Authorization: Bot <token>`` checks (401
``{"message": "401: Unauthorized", "code": 0}``) and ``X-RateLimit-*`` headers on every response.
With ``bucket_limit`` set, each route's bucket (per channel) really enforces its limit and answers
429 with ``retry_after``/``global`` bodies like Discord does.

Module-level :func:`mount`, :func:`demo_config` and :func:`demo_change` are the hooks
``cfstream demo`` looks for.
"""

from __future__ import annotations

import copy
import time
import zlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from cfstream.testing.server import FakeAPI, Reply

__all__ = ("FakeDiscord", "demo_change", "demo_config", "mount")

DEFAULT_TOKEN = "fake-discord-bot-token-0000.cfstream.demo"
DISCORD_EPOCH_MS = 1_420_070_400_000
_START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
GUILD_ID = "1100000000000000001"

_PEOPLE = (
    ("1200000000000000001", "ada", "Ada"),
    ("1200000000000000002", "grace", "Grace H."),
    ("1200000000000000003", "linus", None),
    ("1200000000000000004", "barbara", "Barbara"),
)
_CHANNELS = (
    ("general", "Say hi and share what you are building"),
    ("help", "Ask questions about cfstream"),
)
_LINES = (
    "Has anyone tried streaming a million documents into Lance yet?",
    "Yes! Memory stayed flat the whole time.",
    "How do I point the Slack connector at a proxy?",
    "Set base_url, every connector takes one.",
    "The Discord fake sorts pages newest first, like the real API.",
    "Release notes for 0.4 are up.",
    "Is there a way to skip unchanged documents?",
    "Content hashes in the cursor do that.",
    "Posting the benchmark chart here.",
    "Nice, merge_insert is much faster with big batches.",
    "What's the rate limit on the messages route?",
    "Follow the X-RateLimit headers, the bucket tells you.",
)


def _user(i: int) -> dict[str, Any]:
    uid, username, global_name = _PEOPLE[i % len(_PEOPLE)]
    return {
        "id": uid,
        "username": username,
        "discriminator": "0",
        "global_name": global_name,
        "avatar": None,
    }


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="microseconds")


class FakeDiscord:
    """Deterministic guild data and the routes that serve it.

    :param token: the bot token the fake accepts (``Authorization: Bot <token>``).
    :param messages_per_channel: messages per sample channel.
    :param prefix: where the API lives on the server (``<api.url><prefix>/channels/...``).
    :param bucket_limit: requests per bucket window; None sends headers but never limits.
    :param bucket_reset_after: seconds of a bucket window.
    """

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        messages_per_channel: int = 30,
        prefix: str = "/discord/api/v10",
        bucket_limit: int | None = None,
        bucket_reset_after: float = 1.0,
    ) -> None:
        self.token = token
        self.prefix = prefix.rstrip("/")
        self.guild_id = GUILD_ID
        self.bucket_limit = bucket_limit
        self.bucket_reset_after = bucket_reset_after
        self.channels: dict[str, dict[str, Any]] = {}
        self.threads: dict[str, dict[str, Any]] = {}
        #: channel or thread id -> its messages (oldest first)
        self.messages: dict[str, list[dict[str, Any]]] = {}
        #: responses answered with 429 by the bucket emulation
        self.limited = 0
        #: channels and threads the bot may not read (see :meth:`forbid`)
        self.forbidden: set[str] = set()
        self._ms = _START_MS
        self._seq = 0
        self._changes = 0
        self._buckets: dict[str, tuple[float, int]] = {}
        self.add_channel("rules", topic="Read me first", channel_type=4)  # a category: not imported
        for name, topic in _CHANNELS:
            self.add_channel(name, topic=topic)
        for ci, cid in enumerate(c for c, ch in self.channels.items() if ch["type"] == 0):
            previous: str | None = None
            for i in range(messages_per_channel):
                n = ci * 5 + i
                text = _LINES[n % len(_LINES)]
                extra: dict[str, Any] = {}
                if i % 6 == 3:
                    mentioned = _user(n + 1)
                    text += f" <@{mentioned['id']}>"
                    extra["mentions"] = [mentioned]
                if i % 7 == 5:
                    extra["attachments"] = [self._attachment(cid, f"chart-{i}.png")]
                reply_to = previous if i % 5 == 1 else None
                mid = self.add_message(cid, text, author=n, reply_to=reply_to, **extra)
                if i % 10 == 2:
                    tid = self.start_thread(cid, mid, f"Discussion {ci}-{i}")
                    for j in range(3):
                        self.add_message(tid, _LINES[(n + j + 3) % len(_LINES)], author=n + j + 1)
                    if i % 20 == 12:
                        self.archive_thread(tid)
                previous = mid

    # -- data --------------------------------------------------------------------------------------

    def _snowflake(self) -> str:
        self._ms += 61_000
        self._seq += 1
        return str(((self._ms - DISCORD_EPOCH_MS) << 22) | (self._seq & 0xFFF))

    def _attachment(self, channel_id: str, filename: str) -> dict[str, Any]:
        aid = self._snowflake()
        url = f"https://cdn.discordapp.com/attachments/{channel_id}/{aid}/{filename}"
        return {
            "id": aid,
            "filename": filename,
            "size": 48_213,
            "url": url,
            "proxy_url": url.replace("cdn.discordapp.com", "media.discordapp.net"),
            "content_type": "image/png",
            "width": 800,
            "height": 600,
        }

    def add_channel(self, name: str, *, topic: str = "", channel_type: int = 0) -> str:
        """Add a guild channel (type 0 = text); returns its id."""
        cid = self._snowflake()
        self.channels[cid] = {
            "id": cid,
            "guild_id": self.guild_id,
            "name": name,
            "type": channel_type,
            "position": len(self.channels),
            "permission_overwrites": [],
            "rate_limit_per_user": 0,
            "nsfw": False,
            "topic": topic or None,
            "last_message_id": None,
            "parent_id": None,
            "default_auto_archive_duration": 1440,
        }
        self.messages[cid] = []
        return cid

    def add_message(
        self,
        channel_id: str,
        content: str,
        *,
        author: int = 0,
        reply_to: str | None = None,
        **extra: Any,
    ) -> str:
        """Post a message in a channel or thread (a reply when ``reply_to`` is given); returns its id."""
        mid = self._snowflake()
        msg: dict[str, Any] = {
            "id": mid,
            "type": 19 if reply_to else 0,
            "channel_id": channel_id,
            "author": _user(author),
            "content": content,
            "timestamp": _iso(self._ms),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "reactions": [],
            "pinned": False,
            "flags": 0,
        }
        if reply_to is not None:
            msg["message_reference"] = {
                "type": 0,
                "message_id": reply_to,
                "channel_id": channel_id,
                "guild_id": self.guild_id,
            }
        msg.update(extra)
        self.messages[channel_id].append(msg)
        where = self.channels.get(channel_id) or self.threads.get(channel_id)
        if where is not None:
            where["last_message_id"] = mid
            if channel_id in self.threads:
                where["message_count"] = len(self.messages[channel_id])
                where["total_message_sent"] = where["message_count"]
        return mid

    def add_raw_message(self, channel_id: str, payload: dict[str, Any]) -> None:
        """Append ``payload`` as is (to test malformed messages); it needs a snowflake ``id``."""
        self.messages[channel_id].append(payload)

    def find(self, channel_id: str, message_id: str) -> dict[str, Any] | None:
        """The message, or None."""
        return next((m for m in self.messages[channel_id] if m.get("id") == message_id), None)

    def edit_message(self, channel_id: str, message_id: str, content: str) -> None:
        """Edit a message's content and set ``edited_timestamp``."""
        m = self.find(channel_id, message_id)
        if m is None:
            raise KeyError(f"no message {message_id} in {channel_id}")
        self._ms += 1000
        m["content"] = content
        m["edited_timestamp"] = _iso(self._ms)

    def delete_message(self, channel_id: str, message_id: str) -> None:
        """Delete a message."""
        self.messages[channel_id] = [
            m for m in self.messages[channel_id] if m.get("id") != message_id
        ]

    def start_thread(self, channel_id: str, message_id: str, name: str) -> str:
        """Start a public thread from a message (the thread gets the message's id)."""
        starter = self.find(channel_id, message_id)
        if starter is None:
            raise KeyError(f"no message {message_id} in {channel_id}")
        thread = {
            "id": message_id,
            "guild_id": self.guild_id,
            "parent_id": channel_id,
            "owner_id": starter["author"]["id"],
            "name": name,
            "type": 11,
            "last_message_id": None,
            "message_count": 0,
            "member_count": 2,
            "rate_limit_per_user": 0,
            "flags": 0,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": 1440,
                "archive_timestamp": _iso(self._ms),
                "locked": False,
                "create_timestamp": _iso(self._ms),
            },
            "total_message_sent": 0,
        }
        self.threads[message_id] = thread
        self.messages[message_id] = []
        starter["thread"] = {k: v for k, v in thread.items() if k != "last_message_id"}
        return message_id

    def archive_thread(self, thread_id: str) -> None:
        """Archive a thread (it moves from the active list to the archived one)."""
        self._ms += 1000
        meta = self.threads[thread_id]["thread_metadata"]
        meta["archived"] = True
        meta["archive_timestamp"] = _iso(self._ms)

    def forbid(self, channel_id: str) -> None:
        """Take View Channel / Read Message History away from the bot in ``channel_id`` (a
        mod-only channel): it stays in the guild's channel list, but the channel, its messages
        and its archived threads answer 403 ``{"message": "Missing Access", "code": 50001}``."""
        self.forbidden.add(channel_id)

    def text_channels(self) -> list[str]:
        """Ids of the text channels."""
        return [cid for cid, ch in self.channels.items() if ch["type"] == 0]

    def simulate_changes(self) -> list[str]:
        """One deterministic round of changes: a new message, a thread reply, an edit."""
        self._changes += 1
        n = self._changes
        cid = self.text_channels()[0]
        new = self.add_message(cid, f"Change round {n}: a new message.", author=1)
        tid = next(iter(self.threads))
        self.add_message(tid, f"Thread reply from change round {n}.", author=2)
        target = self.messages[cid][-2]
        self.edit_message(cid, target["id"], f"{target['content']} (edited in round {n})")
        return [f"new message {new}", f"reply in thread {tid}", f"edited {target['id']}"]

    # -- serving -----------------------------------------------------------------------------------

    def mount(self, api: FakeAPI) -> None:
        """Register the routes on ``api`` under :attr:`prefix`."""
        p = self.prefix
        routes = {
            f"{p}/guilds/{{guild_id}}/channels": self._guild_channels,
            f"{p}/guilds/{{guild_id}}/threads/active": self._active_threads,
            f"{p}/channels/{{channel_id}}": self._channel,
            f"{p}/channels/{{channel_id}}/messages": self._messages,
            f"{p}/channels/{{channel_id}}/threads/archived/public": self._archived,
        }
        for path, handler in routes.items():
            api.route("GET", path, self._guarded(path, handler))

    def demo_config(self, base_url: str) -> dict[str, Any]:
        """Source options for this fake served at ``base_url`` (a FakeAPI's url)."""
        return {
            "token": self.token,
            "guild_id": self.guild_id,
            "channel_ids": self.text_channels(),
            "base_url": f"{base_url.rstrip('/')}{self.prefix}",
        }

    def _guarded(self, template: str, handler: Any) -> Any:
        def serve(request: web.Request) -> Any:
            if request.headers.get("Authorization") != f"Bot {self.token}":
                return Reply({"message": "401: Unauthorized", "code": 0}, status=401)
            major = request.match_info.get("channel_id") or request.match_info.get("guild_id", "")
            bucket = f"{template}:{major}"
            headers, limited = self._bucket(bucket)
            if limited is not None:
                self.limited += 1
                return Reply(limited, status=429, headers=headers)
            if request.match_info.get("channel_id") in self.forbidden:
                return Reply({"message": "Missing Access", "code": 50001}, 403, headers)
            result = handler(request)
            if isinstance(result, Reply):
                result.headers = {**headers, **result.headers}
                return result
            return Reply(result, headers=headers)

        return serve

    def _bucket(self, bucket: str) -> tuple[dict[str, str], dict[str, Any] | None]:
        limit = self.bucket_limit or 50
        window = self.bucket_reset_after
        now = time.monotonic()
        start, used = self._buckets.get(bucket, (now, 0))
        if now - start >= window:
            start, used = now, 0
        used += 1
        self._buckets[bucket] = (start, used)
        reset_after = max(0.0, start + window - now)
        headers = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(max(0, limit - used)),
            "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": f"{zlib.crc32(bucket.rsplit(':', 1)[0].encode()):08x}",
        }
        if self.bucket_limit is not None and used > limit:
            headers["Retry-After"] = str(max(1, round(reset_after)))
            headers["X-RateLimit-Scope"] = "user"
            body = {
                "message": "You are being rate limited.",
                "retry_after": round(reset_after, 3),
                "global": False,
            }
            return headers, body
        return headers, None

    def _guild_channels(self, request: web.Request) -> Any:
        if request.match_info["guild_id"] != self.guild_id:
            return Reply({"message": "Unknown Guild", "code": 10004}, status=404)
        return copy.deepcopy(list(self.channels.values()))

    def _active_threads(self, request: web.Request) -> Any:
        if request.match_info["guild_id"] != self.guild_id:
            return Reply({"message": "Unknown Guild", "code": 10004}, status=404)
        active = [t for t in self.threads.values() if not t["thread_metadata"]["archived"]]
        return {"threads": copy.deepcopy(active), "members": []}

    def _channel(self, request: web.Request) -> Any:
        cid = request.match_info["channel_id"]
        found = self.channels.get(cid) or self.threads.get(cid)
        if found is None:
            return Reply({"message": "Unknown Channel", "code": 10003}, status=404)
        return copy.deepcopy(found)

    def _archived(self, request: web.Request) -> Any:
        cid = request.match_info["channel_id"]
        if cid not in self.channels:
            return Reply({"message": "Unknown Channel", "code": 10003}, status=404)
        limit = max(1, min(100, int(request.query.get("limit") or 50)))
        before = request.query.get("before")
        archived = [
            t
            for t in self.threads.values()
            if t["parent_id"] == cid
            and t["thread_metadata"]["archived"]
            and (before is None or t["thread_metadata"]["archive_timestamp"] < before)
        ]
        archived.sort(key=lambda t: t["thread_metadata"]["archive_timestamp"], reverse=True)
        return {
            "threads": copy.deepcopy(archived[:limit]),
            "members": [],
            "has_more": len(archived) > limit,
        }

    def _messages(self, request: web.Request) -> Any:
        cid = request.match_info["channel_id"]
        if cid not in self.messages:
            return Reply({"message": "Unknown Channel", "code": 10003}, status=404)
        try:
            limit = int(request.query.get("limit") or 50)
        except ValueError:
            limit = 0
        if not 1 <= limit <= 100:
            return Reply(
                {
                    "code": 50035,
                    "errors": {
                        "limit": {
                            "_errors": [
                                {
                                    "code": "NUMBER_TYPE_MAX",
                                    "message": "int value should be less than or equal to 100.",
                                }
                            ]
                        }
                    },
                    "message": "Invalid Form Body",
                },
                status=400,
            )
        ordered = sorted(self.messages[cid], key=_order)
        after, before = request.query.get("after"), request.query.get("before")
        if after is not None:
            chunk = [m for m in ordered if _order(m) > int(after)][:limit]
        elif before is not None:
            chunk = [m for m in ordered if _order(m) < int(before)][-limit:]
        else:
            chunk = ordered[-limit:]
        return copy.deepcopy(list(reversed(chunk)))


def _order(m: Mapping[str, Any]) -> int:
    mid = m.get("id")
    return int(mid) if isinstance(mid, str) and mid.isdigit() else 0


def mount(api: FakeAPI) -> FakeDiscord:
    """``cfstream demo`` hook: a :class:`FakeDiscord` with the sample guild, mounted on ``api``."""
    fake = FakeDiscord()
    fake.mount(api)
    return fake


def demo_config(base_url: str) -> dict[str, Any]:
    """``cfstream demo`` hook: the ``discord`` source options for the fake at ``base_url``."""
    return FakeDiscord().demo_config(base_url)


def demo_change(mounted: object) -> list[str]:
    """``cfstream demo --change`` hook: a new message, a thread reply and an edit."""
    if not isinstance(mounted, FakeDiscord):
        return []
    return mounted.simulate_changes()
