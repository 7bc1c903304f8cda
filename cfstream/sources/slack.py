"""Slack: channel messages and thread replies through the Slack Web API.

``SlackSource(token=..., channels=["general", "C0123ABCD"])`` (or ``all_channels=True``) imports
every message of each channel as one record, thread replies as their own records with a ``parent``
relationship to the thread's first message (which has a ``child`` relationship to each reply), and
one ``collection_header`` record per channel that every message is ``member_of``.

How it talks to Slack (see ``docs/connectors/slack.md``):

* ``auth.test`` once per run (checks the token, learns the workspace URL for permalinks);
* ``conversations.list`` to resolve channel names (public and private, what the token can see),
  ``conversations.info`` for channels given by id;
* ``conversations.history`` per channel with ``oldest`` (newest messages first, cursor pages);
* ``conversations.replies`` for threads that are new or changed (``reply_count``/``latest_reply``);
* ``users.info`` to turn user ids into names, cached for the run.

Each channel is a partition with its own cursor: the newest ``ts`` seen and the content hashes of
the messages in the last ``lookback_days`` before it. An incremental sync re-reads only that window
(``oldest = newest - lookback_days``): edits there update their record, unchanged messages are
skipped by hash, and messages gone from the window become tombstones. Slack's history does not
report deletions or edits of older messages; a full sync (``--full``) picks those up.
"""

from __future__ import annotations

import contextlib
import html
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

import anyio
import orjson
from pydantic import Field, model_validator

from cfstream.contract.context import SourceContext
from cfstream.errors import (
    AuthError,
    ClientError,
    NotFoundError,
    SourceError,
    TransientError,
)
from cfstream.http import (
    BearerAuth,
    BodyCursorPaginator,
    Problem,
    RateLimit,
    RawResponse,
    ResponsePolicy,
    Service,
    join_message,
    register_policy,
)
from cfstream.records import Checkpoint, Document, Item, Relationship, Tombstone
from cfstream.secrets import Secret
from cfstream.sources.base import Source, SourceConfig, SourceOutput
from cfstream.sources.options import validate_options

__all__ = ("SlackConfig", "SlackSource")

SOURCE_TYPE = "slack"
_CURSOR_VERSION = 1
_HASH_CHARS = 16
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{6,}$")
_MARKUP = re.compile(r"<([^<>]+)>")
_AUTH_HINT = (
    "check the Slack token given as {token} (an xoxb- bot or xoxp- user token) and "
    "that the app has scopes channels:read, groups:read, channels:history, groups:history and "
    "users:read, and is installed in the workspace"
)


_SLACK_AUTH = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "no_permission",
        "ekm_access_denied",
    }
)
_SLACK_TRANSIENT = frozenset(
    {"internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
_SLACK_NOT_FOUND = {
    "not_in_channel": "invite the app to the channel (/invite @your-app) or use a token of a member",
    "channel_not_found": (
        "check the channel ID and that the token can see it (invite the app to private channels)"
    ),
    "thread_not_found": "the thread's parent message is gone or the ts is wrong",
    "user_not_found": "check the user ID",
    "message_not_found": "the message was deleted or the ts is wrong",
}


class SlackPolicy(ResponsePolicy):
    """Slack Web API: HTTP 200 with ``{"ok": false, "error": ...}`` is an error.

    ``ratelimited`` (at 200 or 429) is a rate limit honouring ``Retry-After``, kept per method;
    ``invalid_auth``/``not_authed``/``account_inactive``/``token_revoked`` are auth errors;
    ``missing_scope`` names the scope needed; ``not_in_channel``/``channel_not_found`` are
    not-found errors that say what to do; other codes are client errors.
    """

    name = "slack"
    default_auth_hint = (
        "check the {service} token (xoxb-/xoxp-) and that it has scopes channels:read and "
        "channels:history (groups:/im:/mpim: for private conversations)"
    )

    def inspect(self, raw: RawResponse, data: Any, service: str, now: float) -> Problem | None:
        """Slack's ``ok: false`` envelope."""
        if not isinstance(data, Mapping) or data.get("ok") is not False:
            if raw.status == 429:
                return self.rate_limited(
                    raw, now, "429 Too Many Requests", scope="bucket", bucket=raw.route
                )
            return None
        code = str(data.get("error") or "unknown_error")
        if code == "ratelimited" or raw.status == 429:
            return self.rate_limited(
                raw, now, f"slack error {code!r}", scope="bucket", bucket=raw.route
            )
        if code == "missing_scope":
            needed = data.get("needed")
            hint = (
                f"the {service} token lacks scope {needed}; add it to the app and reinstall"
                if needed
                else self.auth_hint(service, raw, data)
            )
            return Problem(
                AuthError, join_message("slack error 'missing_scope'", hint), "slack_missing_scope"
            )
        if code in _SLACK_AUTH:
            return Problem(
                AuthError,
                join_message(f"slack error {code!r}", self.auth_hint(service, raw, data)),
                f"slack_{code}",
            )
        if code in _SLACK_NOT_FOUND:
            return Problem(
                NotFoundError,
                join_message(f"slack error {code!r}", _SLACK_NOT_FOUND[code]),
                f"slack_{code}",
            )
        if code in _SLACK_TRANSIENT:
            return Problem(
                TransientError, f"slack error {code!r}", f"slack_{code}", scope="request"
            )
        return Problem(ClientError, f"slack error {code!r}", f"slack_{code}")


register_policy(SlackPolicy)


class SlackConfig(SourceConfig):
    """Settings of :class:`SlackSource` (what a YAML config may set under ``type: slack``)."""

    token: Secret = Field(
        description=("Bot (`xoxb-`) or user (`xoxp-`) token; sent as `Authorization: Bearer`.")
    )
    channels: list[str] | None = Field(
        default=None,
        description=("Channels to import, by id (`C0123ABCD`) or name (`general` or `#general`)."),
    )
    all_channels: bool = Field(
        default=False,
        description=("Import every channel the token can see (and, for bots, is a member of)."),
    )
    base_url: str = Field(
        default="https://slack.com/api",
        description="The Web API root; point it at a fake or proxy in tests.",
    )
    include_threads: bool = Field(
        default=True,
        description="Fetch thread replies (`conversations.replies`) as their own records.",
    )
    include_private: bool = Field(
        default=True, description="With `all_channels`: include private channels the token can see."
    )
    include_archived: bool = Field(
        default=False, description="With `all_channels`: include archived channels."
    )
    page_size: int = Field(
        default=200,
        ge=1,
        le=999,
        description=(
            "Messages per history/replies page (Slack allows up to 999; new non-"
            "Marketplace apps 15)."
        ),
    )
    lookback_days: float = Field(
        default=7.0,
        ge=0,
        description=(
            "How far before the newest message an incremental sync re-reads, to "
            "catch edits, deletions and new thread replies."
        ),
    )
    since: datetime | None = Field(
        default=None,
        description=("Ignore messages older than this on the first sync (ISO 8601 or datetime)."),
    )
    exclude_subtypes: list[str] = Field(
        default_factory=lambda: ["channel_join", "channel_leave"],
        description="Message subtypes not imported (counted as skipped).",
    )
    resolve_users: bool = Field(
        default=True,
        description=(
            "Resolve user ids (authors and `<@U..>` mentions) to names with `users.info`."
        ),
    )
    workspace_url: str | None = Field(
        default=None,
        description=(
            "Workspace URL for permalinks (`https://acme.slack.com/`); default: from `auth.test`."
        ),
    )
    history_rate_per_minute: float = Field(
        default=50.0,
        gt=0,
        description=(
            "Requests per minute to conversations.history/replies (Tier 3: 50; "
            "new non-Marketplace apps: 1)."
        ),
    )
    list_rate_per_minute: float = Field(
        default=20.0,
        gt=0,
        description=("Requests per minute to conversations.list/info and auth.test (Tier 2: 20)."),
    )
    users_rate_per_minute: float = Field(
        default=100.0, gt=0, description="Requests per minute to users.info (Tier 4: 100)."
    )
    max_concurrency: int = Field(default=4, ge=1, description="Channels read at the same time.")

    @model_validator(mode="after")
    def _one_selection(self) -> SlackConfig:
        if bool(self.channels) == self.all_channels:
            raise ValueError(
                "give either `channels` (a list of ids or names) or `all_channels: true`"
            )
        return self


def _rate(per_minute: float) -> RateLimit:
    return RateLimit.per_minute(per_minute, burst=max(1, int(per_minute // 10)))


# -- Slack timestamps --------------------------------------------------------------------------------


def _ts_key(ts: str) -> tuple[int, int]:
    """Order of a Slack ``ts`` (``"1512085950.000216"``); ValueError when it is not one."""
    sec, _, frac = ts.partition(".")
    if not sec.isdigit() or (frac and not frac.isdigit()):
        raise ValueError(f"not a Slack timestamp: {ts!r}")
    return int(sec), int((frac or "0").ljust(6, "0")[:6])


def _ts_datetime(ts: str) -> datetime:
    sec, micro = _ts_key(ts)
    return datetime.fromtimestamp(sec, UTC).replace(microsecond=micro)


def _ts_str(key: tuple[int, int]) -> str:
    return f"{key[0]}.{key[1]:06d}"


def _ts_minus(ts: str, days: float) -> str:
    sec, micro = _ts_key(ts)
    total = sec * 1_000_000 + micro - int(days * 86_400 * 1_000_000)
    total = max(0, total)
    return _ts_str((total // 1_000_000, total % 1_000_000))


def _max_ts(a: str | None, b: str) -> str:
    return b if a is None or _ts_key(b) > _ts_key(a) else a


def _min_ts(a: str | None, b: str) -> str:
    return b if a is None or _ts_key(b) < _ts_key(a) else a


# -- per-channel sync state (the cursor) -------------------------------------------------------------


@dataclass
class _Pass:
    """One walk down a channel's history, newest first; resumable from ``latest``."""

    oldest: str | None
    latest: str | None = None
    newest: str | None = None
    seen: dict[str, str] = field(default_factory=dict)
    threads: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class _ChannelState:
    """What a channel's cursor holds; see :meth:`SlackSource.read`."""

    newest: str | None = None
    header: str | None = None
    seen: dict[str, str] = field(default_factory=dict)
    #: thread ts -> {"sig": "<reply_count>:<latest_reply>", "replies": {reply ts: hash}}
    threads: dict[str, dict[str, Any]] = field(default_factory=dict)
    current: _Pass | None = None

    @classmethod
    def from_cursor(cls, cursor: Mapping[str, Any] | None) -> _ChannelState:
        if not cursor or cursor.get("v") != _CURSOR_VERSION:
            return cls()
        p = cursor.get("pass")
        current = None
        if isinstance(p, Mapping):
            current = _Pass(
                oldest=p.get("oldest"),
                latest=p.get("latest"),
                newest=p.get("newest"),
                seen=dict(p.get("seen") or {}),
                threads={k: dict(v) for k, v in (p.get("threads") or {}).items()},
            )
        return cls(
            newest=cursor.get("newest"),
            header=cursor.get("header"),
            seen=dict(cursor.get("seen") or {}),
            threads={k: dict(v) for k, v in (cursor.get("threads") or {}).items()},
            current=current,
        )

    def to_cursor(self) -> dict[str, Any]:
        """A JSON-safe snapshot (a deep copy: the state keeps changing after a checkpoint)."""
        out: dict[str, Any] = {
            "v": _CURSOR_VERSION,
            "newest": self.newest,
            "header": self.header,
            "seen": self.seen,
            "threads": self.threads,
        }
        if self.current is not None:
            c = self.current
            out["pass"] = {
                "oldest": c.oldest,
                "latest": c.latest,
                "newest": c.newest,
                "seen": c.seen,
                "threads": c.threads,
            }
        copied: dict[str, Any] = orjson.loads(orjson.dumps(out))
        return copied

    def known_hash(self, ts: str) -> str | None:
        if self.current is not None and ts in self.current.seen:
            return self.current.seen[ts]
        return self.seen.get(ts)


def _short_hash(doc: Document) -> str:
    return doc.compute_hash()[:_HASH_CHARS]


# -- the source --------------------------------------------------------------------------------------


@dataclass
class _RunState:
    """Per-run caches: channel info, user names, the workspace URL."""

    workspace_url: str | None = None
    channels: dict[str, dict[str, Any]] = field(default_factory=dict)
    users: dict[str, str] = field(default_factory=dict)
    user_locks: dict[str, anyio.Lock] = field(default_factory=dict)
    users_disabled: bool = False


class SlackSource(Source):
    """Import Slack channels: messages, thread replies, channel headers.

    Example::

        SlackSource(token=cf.env("SLACK_TOKEN"), channels=["general", "C0123ABCD"])

    Every keyword is a :class:`SlackConfig` field (see there, or ``docs/connectors/slack.md``).
    Partitions are channel ids; the cursor of each is described in the module docstring.

    :raises ~cfstream.errors.ConfigError: for invalid settings.
    """

    source_type: ClassVar[str] = SOURCE_TYPE
    uses_http: ClassVar[bool] = True
    config_model: ClassVar[type[SourceConfig] | None] = SlackConfig
    required_scopes: ClassVar[tuple[str, ...]] = (
        "channels:read",
        "groups:read",
        "channels:history",
        "groups:history",
        "users:read",
    )

    def __init__(self, *, name: str | None = None, **options: Any) -> None:
        self.config: SlackConfig = validate_options(SlackConfig, self.source_type, options)
        super().__init__(name=name, max_concurrency=self.config.max_concurrency)
        self._run: _RunState | None = None

    # -- HTTP ----------------------------------------------------------------------------------

    def _service(self, ctx: SourceContext, family: str) -> Service:
        cfg = self.config
        rate = {
            "history": cfg.history_rate_per_minute,
            "users": cfg.users_rate_per_minute,
        }.get(family, cfg.list_rate_per_minute)
        return ctx.http.service(
            "slack" if family == "list" else f"slack-{family}",
            base_url=cfg.base_url,
            auth=BearerAuth(cfg.token),
            rate=_rate(rate),
            policy=SlackPolicy(auth_hint=_AUTH_HINT.format(token=self.option_name("token"))),
        )

    # -- partitions ----------------------------------------------------------------------------

    async def partitions(self, ctx: SourceContext) -> Sequence[str]:
        """Check the token (``auth.test``) and resolve the channels: one partition per channel id."""
        cfg = self.config
        run = self._run = _RunState(workspace_url=cfg.workspace_url)
        svc = self._service(ctx, "list")
        auth = await svc.get("/auth.test")
        if run.workspace_url is None and isinstance(auth.data, Mapping):
            url = auth.data.get("url")
            run.workspace_url = url if isinstance(url, str) and url else None
        wanted = [c.lstrip("#") for c in cfg.channels or []]
        if cfg.all_channels or any(not _CHANNEL_ID.match(c) for c in wanted):
            await self._list_channels(ctx, svc, run)
        if cfg.all_channels:
            ids = []
            for cid, info in run.channels.items():
                if info.get("is_member") is False and not info.get("is_private"):
                    ctx.logger.info(
                        "slack: skipping #%s (%s): the app is not a member; invite it to import",
                        info.get("name"),
                        cid,
                    )
                    continue
                ids.append(cid)
            return ids
        by_name = {str(i.get("name")): cid for cid, i in run.channels.items() if i.get("name")}
        ids = []
        for c in wanted:
            if _CHANNEL_ID.match(c):
                ids.append(c)
            elif c in by_name:
                ids.append(by_name[c])
            else:
                raise SourceError(
                    f"Slack channel {c!r} is not among the {len(run.channels)} channels the token "
                    "can see; check the name, give the channel id (C...), or invite the app to "
                    "the private channel",
                    source=self.name,
                )
        return list(dict.fromkeys(ids))

    async def _list_channels(self, ctx: SourceContext, svc: Service, run: _RunState) -> None:
        cfg = self.config
        types = "public_channel,private_channel" if cfg.include_private else "public_channel"
        paginator = BodyCursorPaginator.slack("channels")
        params: dict[str, str | int | bool] = {
            "types": types,
            "exclude_archived": not cfg.include_archived,
            "limit": 200,
        }
        async for page in svc.paginate(paginator, "/conversations.list", params=params):
            for ch in paginator.items(page):
                if isinstance(ch, Mapping) and isinstance(ch.get("id"), str):
                    run.channels[ch["id"]] = dict(ch)

    async def _channel_info(self, ctx: SourceContext, channel_id: str) -> dict[str, Any]:
        run = self._run_state()
        info = run.channels.get(channel_id)
        if info is None:
            r = await self._service(ctx, "list").get(
                "/conversations.info", params={"channel": channel_id}
            )
            raw = r.data.get("channel") if isinstance(r.data, Mapping) else None
            info = dict(raw) if isinstance(raw, Mapping) else {"id": channel_id}
            run.channels[channel_id] = info
        return info

    def _run_state(self) -> _RunState:
        if self._run is None:
            self._run = _RunState(workspace_url=self.config.workspace_url)
        return self._run

    # -- users ---------------------------------------------------------------------------------

    async def _user_name(self, ctx: SourceContext, user_id: str) -> str:
        run = self._run_state()
        if not self.config.resolve_users or run.users_disabled:
            return user_id
        cached = run.users.get(user_id)
        if cached is not None:
            return cached
        lock = run.user_locks.setdefault(user_id, anyio.Lock())
        async with lock:
            cached = run.users.get(user_id)
            if cached is not None:
                return cached
            name = user_id
            try:
                r = await self._service(ctx, "users").get("/users.info", params={"user": user_id})
                user = r.data.get("user") if isinstance(r.data, Mapping) else None
                if isinstance(user, Mapping):
                    profile = user.get("profile") or {}
                    name = (
                        profile.get("real_name")
                        or user.get("real_name")
                        or profile.get("display_name")
                        or user.get("name")
                        or user_id
                    )
            except NotFoundError:
                pass
            except AuthError as exc:
                run.users_disabled = True
                ctx.logger.warning(
                    "slack: cannot resolve user names (%s); authors stay user ids. Add the "
                    "users:read scope to resolve them",
                    exc,
                )
            run.users[user_id] = str(name)
            return str(name)

    async def _render(self, ctx: SourceContext, text: str) -> str:
        """Slack markup to plain text: ``<@U1>`` -> ``@name``, ``<url|label>`` -> ``label (url)``."""
        replacements: dict[str, str] = {}
        for match in _MARKUP.finditer(text):
            inner = match.group(1)
            target, _, label = inner.partition("|")
            if target.startswith("@"):
                out = "@" + (label or await self._user_name(ctx, target[1:]))
            elif target.startswith("#"):
                cid = target[1:]
                known = self._run_state().channels.get(cid, {}).get("name")
                out = "#" + (label or known or cid)
            elif target.startswith("!"):
                out = label or "@" + target[1:].split("^")[0]
            else:
                out = f"{label} ({target})" if label and label != target else target
            replacements[match.group(0)] = out
        for raw, plain in replacements.items():
            text = text.replace(raw, plain)
        return html.unescape(text)

    # -- mapping -------------------------------------------------------------------------------

    def _permalink(self, channel_id: str, ts: str, thread_ts: str | None = None) -> str | None:
        base = self._run_state().workspace_url
        if not base:
            return None
        url = f"{base.rstrip('/')}/archives/{channel_id}/p{ts.replace('.', '')}"
        if thread_ts and thread_ts != ts:
            url += f"?thread_ts={thread_ts}&cid={channel_id}"
        return url

    def _header(self, info: Mapping[str, Any]) -> Document:
        cid = str(info["id"])
        name = str(info.get("name") or cid)
        topic = (info.get("topic") or {}).get("value") or ""
        purpose = (info.get("purpose") or {}).get("value") or ""
        text = "\n\n".join(p for p in (f"# #{name}", topic, purpose) if p)
        created = info.get("created")
        meta: dict[str, Any] = {
            "slack_channel_id": cid,
            "slack_channel": name,
            "slack_is_private": bool(info.get("is_private", False)),
            "slack_is_archived": bool(info.get("is_archived", False)),
        }
        if topic:
            meta["slack_topic"] = topic
        if purpose:
            meta["slack_purpose"] = purpose
        when = datetime.fromtimestamp(created, UTC) if isinstance(created, int | float) else None
        return Document(
            source_id=f"channel:{cid}",
            source_type=SOURCE_TYPE,
            title=f"#{name}",
            text_content=text,
            source_url=f"{base.rstrip('/')}/archives/{cid}"
            if (base := self._run_state().workspace_url)
            else None,
            collection=f"#{name}",
            collection_id=cid,
            collection_id_type="slack_channel",
            created_at=when,
            updated_at=when,
            record_type="collection_header",
            tags=["slack", "channel"],
            custom_metadata=meta,
        )

    async def _message_doc(
        self,
        ctx: SourceContext,
        info: Mapping[str, Any],
        m: Mapping[str, Any],
        *,
        reply_ts: Sequence[str] = (),
    ) -> Document:
        """Map one message (KeyError/TypeError/ValueError when it cannot be mapped)."""
        cid = str(info["id"])
        channel = str(info.get("name") or cid)
        ts = m["ts"]
        if not isinstance(ts, str):
            raise TypeError(f"'ts' must be a string, got {type(ts).__name__}")
        created = _ts_datetime(ts)
        raw_text = m.get("text") or ""
        if not isinstance(raw_text, str):
            raise TypeError(f"'text' must be a string, got {type(raw_text).__name__}")
        text = await self._render(ctx, raw_text)
        files = [f for f in m.get("files") or [] if isinstance(f, Mapping)]
        if files:
            names = ", ".join(str(f.get("name") or f.get("title") or "file") for f in files)
            text = f"{text}\n\n[files: {names}]" if text else f"[files: {names}]"
        user_id = m.get("user")
        if isinstance(user_id, str) and user_id:
            author: str | None = await self._user_name(ctx, user_id)
        else:
            bot = m.get("bot_profile") or {}
            author = m.get("username") or bot.get("name") or m.get("bot_id")
        edited = m.get("edited") if isinstance(m.get("edited"), Mapping) else None
        edited_ts = edited.get("ts") if edited else None
        updated = _ts_datetime(edited_ts) if isinstance(edited_ts, str) else created
        thread_ts = m.get("thread_ts") if isinstance(m.get("thread_ts"), str) else None
        is_reply = thread_ts is not None and thread_ts != ts
        first_line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
        snippet = first_line if len(first_line) <= 80 else first_line[:77] + "..."
        title = f"#{channel}: {snippet}" if snippet else f"#{channel}: message by {author}"
        meta: dict[str, Any] = {
            "slack_ts": ts,
            "slack_channel_id": cid,
            "slack_channel": channel,
        }
        if isinstance(user_id, str):
            meta["slack_user_id"] = user_id
        if thread_ts:
            meta["slack_thread_ts"] = thread_ts
        if m.get("reply_count"):
            meta["slack_reply_count"] = str(m["reply_count"])
        if edited_ts:
            meta["slack_edited_ts"] = edited_ts
        if m.get("subtype"):
            meta["slack_subtype"] = str(m["subtype"])
        if files:
            meta["slack_files"] = orjson.dumps(
                [
                    {"name": f.get("name"), "url": f.get("permalink") or f.get("url_private")}
                    for f in files
                ]
            ).decode()
        reactions = [r for r in m.get("reactions") or [] if isinstance(r, Mapping)]
        if reactions:
            meta["slack_reactions"] = ",".join(
                f"{r.get('name')}:{r.get('count')}" for r in reactions
            )
        header_uuid = self.record_uuid(f"channel:{cid}")
        rels = [Relationship("member_of", id=header_uuid, title=f"#{channel}")]
        tags = ["slack"]
        if is_reply:
            assert thread_ts is not None
            rels.append(Relationship("parent", id=self.record_uuid(f"{cid}:{thread_ts}")))
            tags.append("reply")
        for rts in reply_ts:
            rels.append(Relationship("child", id=self.record_uuid(f"{cid}:{rts}")))
        if reply_ts:
            tags.append("thread")
        return Document(
            source_id=f"{cid}:{ts}",
            source_type=SOURCE_TYPE,
            title=title,
            text_content=text,
            source_url=self._permalink(cid, ts, thread_ts),
            author=str(author) if author else None,
            created_at=created,
            updated_at=updated,
            source_updated_at=updated,
            collection=f"#{channel}",
            collection_id=cid,
            collection_id_type="slack_channel",
            tags=tags,
            custom_metadata=meta,
            relationships=rels,
        )

    # -- reading -------------------------------------------------------------------------------

    async def read(
        self, partition: str, cursor: Mapping[str, Any] | None, ctx: SourceContext
    ) -> AsyncIterator[SourceOutput]:
        """Sync one channel from its cursor; a checkpoint follows every history page."""
        cfg = self.config
        cid = partition
        info = await self._channel_info(ctx, cid)
        state = _ChannelState.from_cursor(cursor)
        out: list[Item] = []

        header = self._header(info)
        hh = _short_hash(header)
        if hh != state.header:
            out.append(header)
            state.header = hh
        else:
            ctx.skipped_unchanged()

        if state.current is None:
            if state.newest is not None:
                oldest: str | None = _ts_minus(state.newest, cfg.lookback_days)
            elif cfg.since is not None:
                since = cfg.since if cfg.since.tzinfo else cfg.since.replace(tzinfo=UTC)
                oldest = _ts_str((int(since.timestamp()), since.microsecond))
            else:
                oldest = None
            state.current = _Pass(oldest=oldest)
        current = state.current

        params: dict[str, Any] = {"channel": cid, "limit": cfg.page_size, "inclusive": True}
        if current.oldest is not None:
            params["oldest"] = current.oldest
        if current.latest is not None:
            params["latest"] = current.latest
        history = self._service(ctx, "history")
        paginator = BodyCursorPaginator.slack("messages")
        pages = history.paginate(paginator, "/conversations.history", params=params)
        async with contextlib.aclosing(pages):
            async for page in pages:
                for m in paginator.items(page):
                    out.extend(await self._one_message(ctx, info, m, state, current))
                out.append(Checkpoint(state.to_cursor()))
                yield out
                out = []
                if ctx.stopping:
                    return

        out.extend(self._finish_pass(cid, state, current))
        out.append(Checkpoint(state.to_cursor()))
        yield out

    async def _one_message(
        self,
        ctx: SourceContext,
        info: Mapping[str, Any],
        m: Any,
        state: _ChannelState,
        current: _Pass,
    ) -> list[Item]:
        """The records (and tombstones) for one history message and its thread."""
        cfg = self.config
        cid = str(info["id"])
        ts = m.get("ts") if isinstance(m, Mapping) else None
        try:
            if not isinstance(m, Mapping):
                raise TypeError(f"a message must be an object, got {type(m).__name__}")
            if not isinstance(ts, str):
                raise ValueError("the message has no 'ts' string")
            _ts_key(ts)
        except (TypeError, ValueError) as exc:
            ctx.dead_letter(
                f"cannot map Slack message in {cid}: {exc}",
                payload=m,
                source_id=f"{cid}:{ts}" if isinstance(ts, str) else None,
            )
            return []
        if m.get("subtype") in cfg.exclude_subtypes:
            ctx.skipped()
            return []
        thread_ts = m.get("thread_ts")
        if cfg.include_threads and isinstance(thread_ts, str) and thread_ts != ts:
            return []  # a reply also sent to the channel: it comes with its thread
        current.latest = _min_ts(current.latest, ts)
        current.newest = _max_ts(current.newest, ts)

        out: list[Item] = []
        reply_ts: list[str] = []
        if cfg.include_threads and thread_ts == ts and m.get("reply_count"):
            sig = f"{m.get('reply_count')}:{m.get('latest_reply')}"
            prev = current.threads.get(ts) or state.threads.get(ts)
            if prev is not None and prev.get("sig") == sig:
                replies = dict(prev.get("replies") or {})
            else:
                replies = await self._fetch_thread(ctx, info, ts, prev, out)
            current.threads[ts] = {"sig": sig, "replies": replies}
            reply_ts = sorted(replies, key=_ts_key)
        try:
            doc = await self._message_doc(ctx, info, m, reply_ts=reply_ts)
        except (KeyError, TypeError, ValueError) as exc:
            ctx.dead_letter(
                f"cannot map Slack message {cid}:{ts}: {type(exc).__name__}: {exc}",
                payload=m,
                source_id=f"{cid}:{ts}",
            )
            return out
        h = _short_hash(doc)
        if state.known_hash(ts) == h:
            ctx.skipped_unchanged()
        else:
            out.append(doc)
        current.seen[ts] = h
        return out

    async def _fetch_thread(
        self,
        ctx: SourceContext,
        info: Mapping[str, Any],
        thread_ts: str,
        prev: Mapping[str, Any] | None,
        out: list[Item],
    ) -> dict[str, str]:
        """Fetch a thread's replies into ``out``; return ``{reply ts: hash}``."""
        cid = str(info["id"])
        old: Mapping[str, str] = (prev or {}).get("replies") or {}
        replies: dict[str, str] = {}
        paginator = BodyCursorPaginator.slack("messages")
        pages = self._service(ctx, "history").paginate(
            paginator,
            "/conversations.replies",
            params={"channel": cid, "ts": thread_ts, "limit": self.config.page_size},
        )
        async with contextlib.aclosing(pages):
            async for page in pages:
                for r in paginator.items(page):
                    rts = r.get("ts") if isinstance(r, Mapping) else None
                    if rts == thread_ts:
                        continue  # every page starts with the thread's parent
                    try:
                        if not isinstance(r, Mapping) or not isinstance(rts, str):
                            raise ValueError("the reply has no 'ts' string")
                        if r.get("subtype") in self.config.exclude_subtypes:
                            ctx.skipped()
                            continue
                        doc = await self._message_doc(ctx, info, {**r, "thread_ts": thread_ts})
                    except (KeyError, TypeError, ValueError) as exc:
                        ctx.dead_letter(
                            f"cannot map Slack reply in thread {cid}:{thread_ts}: "
                            f"{type(exc).__name__}: {exc}",
                            payload=r,
                            source_id=f"{cid}:{rts}" if isinstance(rts, str) else None,
                        )
                        continue
                    h = _short_hash(doc)
                    if old.get(rts) == h:
                        ctx.skipped_unchanged()
                    else:
                        out.append(doc)
                    replies[rts] = h
        for gone in old.keys() - replies.keys():
            out.append(Tombstone(f"{cid}:{gone}", SOURCE_TYPE))
        return replies

    def _finish_pass(self, cid: str, state: _ChannelState, current: _Pass) -> list[Item]:
        """Tombstones for what vanished from the re-read window; then the pass becomes the state."""
        out: list[Item] = []
        low = _ts_key(current.oldest) if current.oldest is not None else None
        for ts in state.seen.keys() - current.seen.keys():
            if low is None or _ts_key(ts) >= low:
                out.append(Tombstone(f"{cid}:{ts}", SOURCE_TYPE))
        for ts, thread in state.threads.items():
            if ts in current.threads or (low is not None and _ts_key(ts) < low):
                continue
            for rts in thread.get("replies") or {}:
                out.append(Tombstone(f"{cid}:{rts}", SOURCE_TYPE))
        newest = state.newest
        if current.newest is not None:
            newest = _max_ts(newest, current.newest)
        state.newest = newest
        if newest is not None:
            cutoff = _ts_key(_ts_minus(newest, self.config.lookback_days))
            state.seen = {k: v for k, v in current.seen.items() if _ts_key(k) >= cutoff}
            state.threads = {k: v for k, v in current.threads.items() if _ts_key(k) >= cutoff}
        else:
            state.seen, state.threads = {}, {}
        state.current = None
        return out
