"""Discord: guild channel and thread messages through the Discord REST API (v10).

``DiscordSource(token=..., guild_id="...", channel_ids=["..."])`` imports every message of the given
text channels (all text and announcement channels of the guild when ``channel_ids`` is omitted) and
of their active and archived public threads. Each channel and each thread is a partition with its
own cursor and its own ``collection_header`` record.

How it talks to Discord (see ``docs/connectors/discord.md``):

* ``GET /guilds/{guild}/channels`` once per run (names, topics, which channels exist);
* ``GET /guilds/{guild}/threads/active`` and ``GET /channels/{id}/threads/archived/public``
  (paged with ``before=<archive timestamp>``) to find threads;
* ``GET /channels/{id}/messages?after=<snowflake>&limit=100`` per channel or thread, oldest first
  (Discord answers newest to oldest within a page: pages are sorted by id).

The cursor is the last snowflake seen plus the content hashes of messages within ``lookback_days``
before it. An incremental sync starts ``after`` a snowflake synthesised from ``last -
lookback_days``: edits there update their record, unchanged messages are skipped by hash, messages
gone from that window become tombstones. Older edits and deletions are not reported by the API; a
full sync picks them up. Waits are bounded by the HTTP client's ``max_wait``/``max_elapsed``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

import orjson
from pydantic import Field

from cfstream.contract.context import SourceContext
from cfstream.errors import (
    AuthError,
    PartitionError,
    ResponseFormatError,
    SourceError,
)
from cfstream.http import (
    BearerAuth,
    Gate,
    Problem,
    RateLimit,
    RawResponse,
    ResponsePolicy,
    Service,
    SnowflakePaginator,
    join_message,
    parse_reset,
    register_policy,
)
from cfstream.records import Checkpoint, Document, Item, Relationship, Tombstone
from cfstream.secrets import Secret
from cfstream.sources.base import Source, SourceConfig, SourceOutput, require_list
from cfstream.sources.options import validate_options

__all__ = ("DiscordConfig", "DiscordSource", "snowflake_at", "snowflake_time")

SOURCE_TYPE = "discord"
DISCORD_EPOCH_MS = 1_420_070_400_000
_CURSOR_VERSION = 1
_HASH_CHARS = 16
#: channel types whose messages are imported: GUILD_TEXT, GUILD_ANNOUNCEMENT
_TEXT_TYPES = frozenset({0, 5})
#: thread channel types: ANNOUNCEMENT_THREAD, PUBLIC_THREAD, PRIVATE_THREAD
_THREAD_TYPES = frozenset({10, 11, 12})
#: forum and media channels: a thread's starter message lives in the thread itself
_FORUM_TYPES = frozenset({15, 16})
_MENTION = re.compile(r"<(@!?|#|@&)(\d+)>")
_AUTH_HINT = (
    "check the Discord bot token given as {token} (sent as 'Authorization: Bot "
    "<token>'), that the bot is in the guild, has the View Channel and Read Message History "
    "permissions, and that the Message Content intent is enabled for it"
)


def snowflake_time(snowflake: str | int) -> datetime:
    """When a snowflake was created (UTC): ``(id >> 22) + 1420070400000`` ms."""
    ms = (int(snowflake) >> 22) + DISCORD_EPOCH_MS
    return datetime.fromtimestamp(ms / 1000, UTC)


def snowflake_at(when: datetime) -> int:
    """The smallest snowflake of ``when`` (for ``after=`` filters by time)."""
    ms = int(when.timestamp() * 1000) - DISCORD_EPOCH_MS
    return max(0, ms) << 22


class DiscordPolicy(ResponsePolicy):
    """Discord: per-bucket limits (``X-RateLimit-Bucket``/``-Remaining``/``-Reset-After``) and 429 bodies.

    A response with remaining 0 closes its bucket for ``Reset-After`` seconds. A 429 waits for the
    body's ``retry_after`` (float seconds); ``global: true`` (or ``X-RateLimit-Global``) closes the
    whole service, otherwise only the bucket.
    """

    name = "discord"
    default_auth_hint = (
        "check the {service} bot token (sent as 'Authorization: Bot <token>') and that the bot can "
        "view the channel and read its message history"
    )

    def learned_bucket(self, raw: RawResponse) -> tuple[str, str] | None:
        """Discord names the bucket of every route in ``X-RateLimit-Bucket``."""
        bucket = raw.header("X-RateLimit-Bucket")
        return (raw.route, bucket) if bucket else None

    def _bucket(self, raw: RawResponse) -> str:
        return raw.header("X-RateLimit-Bucket") or raw.route

    def gates(self, raw: RawResponse, now: float) -> list[Gate]:
        """Close the bucket when its remaining budget is 0."""
        if raw.status != 429 and raw.header("X-RateLimit-Remaining") == "0":
            wait = parse_reset(raw.header("X-RateLimit-Reset-After"), now=now)
            if wait:
                return [Gate(now + wait, self._bucket(raw), "X-RateLimit-Remaining is 0")]
        return []

    def inspect(self, raw: RawResponse, data: Any, service: str, now: float) -> Problem | None:
        """429 with ``retry_after``/``global`` in the body."""
        if raw.status != 429:
            return None
        body_wait = data.get("retry_after") if isinstance(data, Mapping) else None
        retry_after = float(body_wait) if isinstance(body_wait, int | float) else None
        is_global = (isinstance(data, Mapping) and data.get("global") is True) or (
            (raw.header("X-RateLimit-Global") or "").lower() == "true"
        )
        scope_hdr = raw.header("X-RateLimit-Scope") or ("global" if is_global else "")
        detail = join_message(self.error_message(data), f"scope {scope_hdr}" if scope_hdr else "")
        if is_global:
            return self.rate_limited(raw, now, detail, retry_after=retry_after, scope="service")
        return self.rate_limited(
            raw, now, detail, retry_after=retry_after, scope="bucket", bucket=self._bucket(raw)
        )


register_policy(DiscordPolicy)


class DiscordConfig(SourceConfig):
    """Settings of :class:`DiscordSource` (what a YAML config may set under ``type: discord``)."""

    token: Secret = Field(
        description=(
            "Bot token (`Authorization: Bot <token>`), or an OAuth token with `token_type: Bearer`."
        )
    )
    guild_id: str = Field(pattern=r"^\d+$", description="The guild (server) id.")
    channel_ids: list[str] | None = Field(
        default=None,
        description=(
            "Channel ids to import; default: every text and announcement channel of the guild."
        ),
    )
    base_url: str = Field(
        default="https://discord.com/api/v10",
        description="The REST API root; point it at a fake or proxy in tests.",
    )
    web_url: str = Field(
        default="https://discord.com",
        description=(
            "Where message links point (`<web_url>/channels/<guild>/<channel>/<message>`)."
        ),
    )
    token_type: Literal["Bot", "Bearer"] = Field(
        default="Bot", description="`Bot` for bot tokens, `Bearer` for OAuth2 access tokens."
    )
    include_threads: bool = Field(
        default=True,
        description=(
            "Import threads (active and archived public threads) as their own partitions."
        ),
    )
    include_archived_threads: bool = Field(
        default=True,
        description=("Also list archived public threads (one call per channel and 100 threads)."),
    )
    page_size: int = Field(
        default=100, ge=1, le=100, description="Messages per page (`limit`, 1..100)."
    )
    lookback_days: float = Field(
        default=7.0,
        ge=0,
        description=(
            "How far before the newest synced message an incremental sync re-"
            "reads, to catch edits and deletions."
        ),
    )
    message_types: list[int] = Field(
        default_factory=lambda: [0, 19, 20, 23],
        description=(
            "Message types imported (0 default, 19 reply, 20 slash command, 23 "
            "context menu command); system messages (joins, pins, thread-created "
            "notices) are skipped and counted."
        ),
    )
    rate_per_second: float = Field(
        default=40.0,
        gt=0,
        description=(
            "Requests per second for this token (Discord's global cap is 50; per-"
            "route buckets are followed from the `X-RateLimit-*` headers on top "
            "of this)."
        ),
    )
    max_concurrency: int = Field(
        default=4, ge=1, description="Channels and threads read at the same time."
    )


def _short_hash(doc: Document) -> str:
    return doc.compute_hash()[:_HASH_CHARS]


@dataclass
class _Pass:
    after: int
    floor: int | None
    top: int | None = None
    seen: dict[str, str] = field(default_factory=dict)


@dataclass
class _State:
    last: int | None = None
    header: str | None = None
    seen: dict[str, str] = field(default_factory=dict)
    current: _Pass | None = None

    @classmethod
    def from_cursor(cls, cursor: Mapping[str, Any] | None) -> _State:
        if not cursor or cursor.get("v") != _CURSOR_VERSION:
            return cls()
        p = cursor.get("pass")
        current = None
        if isinstance(p, Mapping):
            current = _Pass(
                after=int(p.get("after") or 0),
                floor=int(p["floor"]) if p.get("floor") is not None else None,
                top=int(p["top"]) if p.get("top") is not None else None,
                seen=dict(p.get("seen") or {}),
            )
        last = cursor.get("last")
        return cls(
            last=int(last) if last is not None else None,
            header=cursor.get("header"),
            seen=dict(cursor.get("seen") or {}),
            current=current,
        )

    def to_cursor(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "v": _CURSOR_VERSION,
            "last": str(self.last) if self.last is not None else None,
            "header": self.header,
            "seen": self.seen,
        }
        if self.current is not None:
            c = self.current
            out["pass"] = {
                "after": str(c.after),
                "floor": str(c.floor) if c.floor is not None else None,
                "top": str(c.top) if c.top is not None else None,
                "seen": c.seen,
            }
        copied: dict[str, Any] = orjson.loads(orjson.dumps(out))
        return copied


@dataclass
class _RunState:
    channels: dict[str, dict[str, Any]] = field(default_factory=dict)
    threads: dict[str, dict[str, Any]] = field(default_factory=dict)


def _forbidden(exc: BaseException) -> bool:
    """A 403 for one channel: the bot lacks View Channel / Read Message History there (Discord's
    ``50001 Missing Access`` or ``50013 Missing Permissions``)."""
    return isinstance(exc, AuthError) and exc.status == 403


class DiscordSource(Source):
    """Import Discord guild channels and threads: messages, replies, attachments, headers.

    Example::

        DiscordSource(token=cf.env("DISCORD_BOT_TOKEN"), guild_id="1234", channel_ids=["5678"])

    Every keyword is a :class:`DiscordConfig` field (see there, or ``docs/connectors/discord.md``).
    Partitions are ``channel:<id>`` and ``thread:<id>``.

    :raises ~cfstream.errors.ConfigError: for invalid settings.
    """

    source_type: ClassVar[str] = SOURCE_TYPE
    uses_http: ClassVar[bool] = True
    config_model: ClassVar[type[SourceConfig] | None] = DiscordConfig
    required_scopes: ClassVar[tuple[str, ...]] = (
        "bot",
        "View Channel",
        "Read Message History",
        "Message Content intent",
    )

    def __init__(self, *, name: str | None = None, **options: Any) -> None:
        self.config: DiscordConfig = validate_options(DiscordConfig, self.source_type, options)
        super().__init__(name=name, max_concurrency=self.config.max_concurrency)
        self._run: _RunState | None = None

    def _service(self, ctx: SourceContext) -> Service:
        cfg = self.config
        return ctx.http.service(
            "discord",
            base_url=cfg.base_url,
            auth=BearerAuth(cfg.token, scheme=cfg.token_type),
            rate=RateLimit(per_second=cfg.rate_per_second, burst=max(1, int(cfg.rate_per_second))),
            policy=DiscordPolicy(auth_hint=_AUTH_HINT.format(token=self.option_name("token"))),
        )

    def _run_state(self) -> _RunState:
        if self._run is None:
            self._run = _RunState()
        return self._run

    # -- partitions ----------------------------------------------------------------------------

    async def partitions(self, ctx: SourceContext) -> Sequence[str]:
        """``channel:<id>`` for each selected channel and ``thread:<id>`` for each of its threads."""
        cfg = self.config
        run = self._run = _RunState()
        svc = self._service(ctx)
        r = await svc.get(f"/guilds/{cfg.guild_id}/channels")
        for ch in require_list(r.data, "guild channels", service="discord"):
            if isinstance(ch, Mapping) and isinstance(ch.get("id"), str):
                run.channels[ch["id"]] = dict(ch)
        if cfg.channel_ids is None:
            selected = [cid for cid, ch in run.channels.items() if ch.get("type") in _TEXT_TYPES]
        else:
            missing = [c for c in cfg.channel_ids if c not in run.channels]
            if missing:
                raise SourceError(
                    f"Discord channel(s) {', '.join(missing)} are not channels of guild "
                    f"{cfg.guild_id} that the bot can see; check the ids (Developer Mode -> Copy "
                    "Channel ID) and the bot's View Channel permission",
                    source=self.name,
                )
            selected = list(dict.fromkeys(cfg.channel_ids))
        out = [f"channel:{cid}" for cid in selected]
        if cfg.include_threads:
            wanted = set(selected)
            r = await svc.get(f"/guilds/{cfg.guild_id}/threads/active")
            threads = r.data.get("threads") if isinstance(r.data, Mapping) else None
            for th in require_list(threads, "active threads", service="discord"):
                if isinstance(th, Mapping) and th.get("parent_id") in wanted:
                    run.threads[str(th["id"])] = dict(th)
            if cfg.include_archived_threads:
                for cid in list(selected):
                    try:
                        await self._archived_threads(svc, cid, run)
                    except AuthError as exc:
                        if not _forbidden(exc):
                            raise
                        if cfg.channel_ids is None:  # found in the guild: skip it, import the rest
                            self._skip_unreadable(ctx, "channel", cid, exc)
                            selected.remove(cid)
                            out.remove(f"channel:{cid}")
                        # a channel listed in channel_ids: its own partition fails, clearly
            out += [
                f"thread:{tid}"
                for tid in run.threads
                if run.threads[tid].get("parent_id") in selected
            ]
        return out

    def _skip_unreadable(self, ctx: SourceContext, kind: str, cid: str, exc: BaseException) -> None:
        """Leave out a channel or thread the bot cannot read (found, not asked for): warn, count."""
        ctx.skipped()
        ctx.warn(
            f"skipped Discord {kind} {self._channel_name(cid)} ({cid}): the bot cannot read it "
            f"(403 {_reason(exc)}); give the bot View Channel and Read Message History there to "
            "import it"
        )

    def _unreadable_error(self, cid: str, exc: BaseException) -> PartitionError:
        return PartitionError(
            f"the bot cannot read Discord channel {self._channel_name(cid)} ({cid}) listed in "
            f"`channel_ids` (403 {_reason(exc)}): give the bot View Channel and Read Message "
            "History in that channel, or remove it from `channel_ids`",
        )

    async def _archived_threads(self, svc: Service, channel_id: str, run: _RunState) -> None:
        before: str | None = None
        while True:
            params: dict[str, str | int] = {"limit": 100}
            if before is not None:
                params["before"] = before
            r = await svc.get(f"/channels/{channel_id}/threads/archived/public", params=params)
            data = r.data
            if not isinstance(data, Mapping):
                raise ResponseFormatError(
                    "the archived threads answer is not a JSON object", service="discord"
                )
            threads = [
                t
                for t in require_list(data.get("threads"), "archived threads", service="discord")
                if isinstance(t, Mapping)
            ]
            for th in threads:
                run.threads.setdefault(str(th["id"]), dict(th))
            if not data.get("has_more") or not threads:
                return
            stamp = (threads[-1].get("thread_metadata") or {}).get("archive_timestamp")
            if not isinstance(stamp, str) or stamp == before:
                return
            before = stamp

    # -- mapping -------------------------------------------------------------------------------

    def _channel_name(self, channel_id: str) -> str:
        run = self._run_state()
        info = run.channels.get(channel_id) or run.threads.get(channel_id) or {}
        return str(info.get("name") or channel_id)

    def _header(self, kind: str, info: Mapping[str, Any]) -> Document:
        cfg = self.config
        cid = str(info["id"])
        name = str(info.get("name") or cid)
        meta: dict[str, Any] = {
            "discord_channel_id": cid,
            "discord_guild_id": cfg.guild_id,
            "discord_channel_type": str(info.get("type")),
        }
        rels: list[Relationship] = []
        if kind == "thread":
            parent_id = str(info.get("parent_id") or "")
            parent_name = self._channel_name(parent_id)
            collection = f"#{parent_name} / {name}"
            title = f"Thread: {name}"
            text = f"# {name}\n\nThread in #{parent_name}."
            meta["discord_parent_id"] = parent_id
            tm = info.get("thread_metadata") or {}
            meta["discord_archived"] = bool(tm.get("archived", False))
            rels.append(
                Relationship(
                    "member_of",
                    id=self.record_uuid(f"channel:{parent_id}"),
                    title=parent_name,
                )
            )
            rels.append(Relationship("parent", id=self._starter_uuid(info)))
            created = tm.get("create_timestamp") or snowflake_time(cid)
        else:
            collection = f"#{name}"
            title = f"#{name}"
            topic = info.get("topic") or ""
            text = f"# #{name}\n\n{topic}" if topic else f"# #{name}"
            if topic:
                meta["discord_topic"] = topic
            created = snowflake_time(cid)
        return Document(
            source_id=f"{kind}:{cid}",
            source_type=SOURCE_TYPE,
            title=title,
            text_content=text,
            source_url=f"{cfg.web_url.rstrip('/')}/channels/{cfg.guild_id}/{cid}",
            collection=collection,
            collection_id=cid,
            collection_id_type=f"discord_{kind}",
            created_at=created,
            updated_at=created,
            record_type="collection_header",
            tags=["discord", kind],
            custom_metadata=meta,
            relationships=rels,
        )

    def _starter_uuid(self, thread: Mapping[str, Any]) -> str:
        """The thread's starter message: same id as the thread, in the parent channel (or, in
        forum and media channels, in the thread itself)."""
        tid = str(thread["id"])
        parent = self._run_state().channels.get(str(thread.get("parent_id")), {})
        where = tid if parent.get("type") in _FORUM_TYPES else str(thread.get("parent_id"))
        return self.record_uuid(f"{where}:{tid}")

    def _render(self, m: Mapping[str, Any]) -> str:
        users = {
            str(u.get("id")): str(u.get("global_name") or u.get("username"))
            for u in m.get("mentions") or []
            if isinstance(u, Mapping)
        }

        def sub(match: re.Match[str]) -> str:
            kind, ident = match.group(1), match.group(2)
            if kind.startswith("@") and kind != "@&":
                return "@" + users.get(ident, ident)
            if kind == "#":
                return "#" + self._channel_name(ident)
            return match.group(0)

        content = m.get("content")
        if not isinstance(content, str):
            raise TypeError(f"'content' must be a string, got {type(content).__name__}")
        parts = [_MENTION.sub(sub, content)] if content else []
        for e in m.get("embeds") or []:
            if isinstance(e, Mapping):
                bits = [str(e[k]) for k in ("title", "description") if e.get(k)]
                if bits:
                    parts.append(" — ".join(bits))
        names = [
            str(a.get("filename")) for a in m.get("attachments") or [] if isinstance(a, Mapping)
        ]
        if names:
            parts.append(f"[attachments: {', '.join(names)}]")
        return "\n\n".join(parts)

    def _message_doc(self, kind: str, info: Mapping[str, Any], m: Mapping[str, Any]) -> Document:
        """Map one message (KeyError/TypeError/ValueError when it cannot be mapped)."""
        cfg = self.config
        cid = str(info["id"])
        mid = m["id"]
        if not isinstance(mid, str) or not mid.isdigit():
            raise ValueError(f"'id' must be a snowflake string, got {mid!r}")
        created = datetime.fromisoformat(m["timestamp"])
        edited_raw = m.get("edited_timestamp")
        updated = datetime.fromisoformat(edited_raw) if isinstance(edited_raw, str) else created
        author_obj = m.get("author") or {}
        author = author_obj.get("global_name") or author_obj.get("username")
        text = self._render(m)
        first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
        snippet = first if len(first) <= 80 else first[:77] + "..."
        name = str(info.get("name") or cid)
        if kind == "thread":
            parent_name = self._channel_name(str(info.get("parent_id")))
            collection = f"#{parent_name} / {name}"
        else:
            collection = f"#{name}"
        meta: dict[str, Any] = {
            "discord_id": mid,
            "discord_channel_id": cid,
            "discord_guild_id": cfg.guild_id,
            "discord_type": str(m.get("type", 0)),
        }
        if author_obj.get("id"):
            meta["discord_author_id"] = str(author_obj["id"])
        if isinstance(edited_raw, str):
            meta["discord_edited_timestamp"] = edited_raw
        if m.get("pinned"):
            meta["discord_pinned"] = True
        attachments = [a for a in m.get("attachments") or [] if isinstance(a, Mapping)]
        if attachments:
            meta["discord_attachments"] = orjson.dumps(
                [
                    {"filename": a.get("filename"), "url": a.get("url"), "size": a.get("size")}
                    for a in attachments
                ]
            ).decode()
        reactions = [r for r in m.get("reactions") or [] if isinstance(r, Mapping)]
        if reactions:
            meta["discord_reactions"] = ",".join(
                f"{(r.get('emoji') or {}).get('name')}:{r.get('count')}" for r in reactions
            )
        tags = ["discord"]
        rels = [Relationship("member_of", id=self.record_uuid(f"{kind}:{cid}"), title=collection)]
        if kind == "thread":
            meta["discord_thread_id"] = cid
            tags.append("thread")
            starter = self._starter_uuid(info)
            if starter != self.record_uuid(f"{cid}:{mid}"):
                rels.append(Relationship("parent", id=starter))
        ref = m.get("message_reference")
        if isinstance(ref, Mapping) and ref.get("message_id") and ref.get("type", 0) == 0:
            ref_channel = str(ref.get("channel_id") or cid)
            meta["discord_reference_message_id"] = str(ref["message_id"])
            rels.append(
                Relationship("reference", id=self.record_uuid(f"{ref_channel}:{ref['message_id']}"))
            )
            if m.get("type") == 19:
                tags.append("reply")
        thread = m.get("thread")
        if isinstance(thread, Mapping) and thread.get("id"):
            rels.append(
                Relationship(
                    "related",
                    id=self.record_uuid(f"thread:{thread['id']}"),
                    title=str(thread.get("name") or ""),
                )
            )
        return Document(
            source_id=f"{cid}:{mid}",
            source_type=SOURCE_TYPE,
            title=f"{collection}: {snippet}" if snippet else f"{collection}: message by {author}",
            text_content=text,
            source_url=f"{cfg.web_url.rstrip('/')}/channels/{cfg.guild_id}/{cid}/{mid}",
            author=str(author) if author else None,
            created_at=created,
            updated_at=updated,
            source_updated_at=updated,
            collection=collection,
            collection_id=cid,
            collection_id_type=f"discord_{kind}",
            tags=tags,
            custom_metadata=meta,
            relationships=rels,
        )

    # -- reading -------------------------------------------------------------------------------

    async def _info(self, ctx: SourceContext, kind: str, cid: str) -> dict[str, Any]:
        run = self._run_state()
        table = run.threads if kind == "thread" else run.channels
        info = table.get(cid)
        if info is None:
            r = await self._service(ctx).get(f"/channels/{cid}")
            if not isinstance(r.data, Mapping):
                raise ResponseFormatError(
                    f"the answer for channel {cid} is not a JSON object", service="discord"
                )
            info = dict(r.data)
            table[cid] = info
        return info

    async def read(
        self, partition: str, cursor: Mapping[str, Any] | None, ctx: SourceContext
    ) -> AsyncIterator[SourceOutput]:
        """Sync one channel or thread from its cursor; a checkpoint follows every page."""
        cfg = self.config
        kind, _, cid = partition.partition(":")
        if kind not in ("channel", "thread") or not cid:
            raise SourceError(
                f"unknown Discord partition {partition!r} (expected channel:<id> or thread:<id>)",
                source=self.name,
            )
        try:
            info = await self._info(ctx, kind, cid)
        except AuthError as exc:
            if not _forbidden(exc):
                raise
            if kind == "channel" and self.config.channel_ids is not None:
                raise self._unreadable_error(cid, exc) from None
            self._skip_unreadable(ctx, kind, cid, exc)
            return
        state = _State.from_cursor(cursor)
        out: list[Item] = []
        header = self._header(kind, info)
        hh = _short_hash(header)
        if hh != state.header:
            out.append(header)
            state.header = hh
        else:
            ctx.skipped_unchanged()

        if kind == "channel" and info.get("type") in _FORUM_TYPES:
            # a forum or media channel has no messages of its own: its posts are threads
            out.append(Checkpoint(state.to_cursor()))
            yield out
            return
        if state.current is None:
            if state.last is not None:
                floor = snowflake_at(
                    datetime.fromtimestamp(
                        snowflake_time(state.last).timestamp() - cfg.lookback_days * 86_400, UTC
                    )
                )
                state.current = _Pass(after=max(0, floor - 1), floor=floor)
            else:
                state.current = _Pass(after=0, floor=None)
        current = state.current

        paginator = SnowflakePaginator("after", limit=cfg.page_size)
        pages = self._service(ctx).paginate(
            paginator, f"/channels/{cid}/messages", params={"after": str(current.after)}
        )
        got_page = False
        try:
            async with contextlib.aclosing(pages):
                async for page in pages:
                    got_page = True
                    # a page that is not a list is no answer: never "no more messages", which
                    # would tombstone the rest of the lookback window
                    items = list(require_list(page.data, "messages", service="discord"))
                    items.sort(key=_id_order)
                    for m in items:
                        out.extend(self._one(ctx, kind, info, m, state, current))
                    out.append(Checkpoint(state.to_cursor()))
                    yield out
                    out = []
                    if ctx.stopping:
                        return
        except AuthError as exc:
            if got_page or not _forbidden(exc):
                raise
            if kind == "channel" and self.config.channel_ids is not None:
                raise self._unreadable_error(cid, exc) from None
            self._skip_unreadable(ctx, kind, cid, exc)
            return

        low = current.floor
        for mid in state.seen.keys() - current.seen.keys():
            if low is None or int(mid) >= low:
                out.append(Tombstone(f"{cid}:{mid}", SOURCE_TYPE))
        last = state.last
        if current.top is not None:
            last = max(last or 0, current.top)
        state.last = last
        if last is not None:
            cutoff = snowflake_at(
                datetime.fromtimestamp(
                    snowflake_time(last).timestamp() - cfg.lookback_days * 86_400, UTC
                )
            )
            state.seen = {k: v for k, v in current.seen.items() if int(k) >= cutoff}
        else:
            state.seen = {}
        state.current = None
        out.append(Checkpoint(state.to_cursor()))
        yield out

    def _one(
        self,
        ctx: SourceContext,
        kind: str,
        info: Mapping[str, Any],
        m: Any,
        state: _State,
        current: _Pass,
    ) -> list[Item]:
        cid = str(info["id"])
        mid = m.get("id") if isinstance(m, Mapping) else None
        try:
            if not isinstance(m, Mapping):
                raise TypeError(f"a message must be an object, got {type(m).__name__}")
            if m.get("type", 0) not in self.config.message_types:
                if isinstance(mid, str) and mid.isdigit():
                    current.after = max(current.after, int(mid))
                ctx.skipped()
                return []
            doc = self._message_doc(kind, info, m)
        except (KeyError, TypeError, ValueError) as exc:
            ctx.dead_letter(
                f"cannot map Discord message in {kind} {cid}: {type(exc).__name__}: {exc}",
                payload=m,
                source_id=f"{cid}:{mid}" if isinstance(mid, str) else None,
            )
            return []
        assert isinstance(mid, str)
        n = int(mid)
        current.after = max(current.after, n)
        current.top = max(current.top or 0, n)
        h = _short_hash(doc)
        current.seen[mid] = h
        known = state.seen.get(mid)
        if known == h:
            ctx.skipped_unchanged()
            return []
        return [doc]


def _reason(exc: BaseException) -> str:
    """Discord's own words for a refusal (``Missing Access``), else a generic one."""
    text = str(exc)
    for reason in ("Missing Access", "Missing Permissions"):
        if reason in text:
            return reason
    return "Forbidden"


def _id_order(m: Any) -> int:
    mid = m.get("id") if isinstance(m, Mapping) else None
    return int(mid) if isinstance(mid, str) and mid.isdigit() else 0
