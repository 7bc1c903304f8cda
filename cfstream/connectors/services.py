"""The seven built-in connectors of ContextFrame's guide, each a thin face over a cfstream Source.

==================  ===============================  =============================================
connector           Source                           ``sync_documents`` options
==================  ===============================  =============================================
GitHubConnector     :class:`~cfstream.sources.github.GitHubSource`   ``path``, ``file_pattern(s)``,
                                                     ``exclude_paths``, ``filter_type``, ``labels``,
                                                     ``state``, ``ref``
LinearConnector     LinearSource                     ``team_id(s)``, ``states`` *, ``labels`` *,
                                                     ``filter_type``
GoogleDriveConnector GoogleDriveSource               ``folder_id(s)``, ``drive_id``
NotionConnector     NotionSource                     ``database_id(s)``, ``page_id(s)``, ``search``
SlackConnector      SlackSource                      ``channel_ids`` / ``channels``,
                                                     ``include_threads``
DiscordConnector    DiscordSource                    ``channel_ids``, ``guild_id``,
                                                     ``include_threads``
ObsidianConnector   ObsidianSource                   ``path``, ``file_pattern(s)``,
                                                     ``exclude_paths``
==================  ===============================  =============================================

Every connector also takes ``since`` and ``modified_only`` (see
:meth:`~cfstream.connectors.base.SourceConnector.sync_documents`). Options marked * have no
equivalent in the Source: they are applied as a filter on the mapped documents (the Source still
fetches the others). ``since`` is the Source's own option for GitHub (issues) and Slack; for every
connector it is also applied to the mapped documents' update time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar

import anyio

from cfstream.connectors.base import (
    DocumentFilter,
    SourceConnector,
    reveal,
)
from cfstream.contract.context import SourceContext
from cfstream.errors import ConfigError
from cfstream.records import Document
from cfstream.secrets import Secret
from cfstream.sources.base import Source
from cfstream.sources.discord import DiscordSource
from cfstream.sources.github import GitHubSource
from cfstream.sources.google_drive import GoogleDriveSource
from cfstream.sources.linear import LinearSource
from cfstream.sources.notion import NotionSource
from cfstream.sources.obsidian import ObsidianSource
from cfstream.sources.slack import SlackSource

__all__ = (
    "CONNECTORS",
    "DiscordConnector",
    "GitHubConnector",
    "GoogleDriveConnector",
    "LinearConnector",
    "NotionConnector",
    "ObsidianConnector",
    "SlackConnector",
    "create_connector",
)


def _strings(value: Any, option: str) -> list[str]:
    """One string or a list of strings, as a list."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(f"option {option!r}: expected a string or a list of strings, got {value!r}")


def _first(options: Mapping[str, Any], one: str, many: str) -> list[str]:
    """``options[one]`` (a single id) and ``options[many]`` (a list) together, in order."""
    return _strings(options.get(one), one) + _strings(options.get(many), many)


# ------------------------------------------------------------------------------------------------
# GitHub
# ------------------------------------------------------------------------------------------------

_GITHUB_KINDS: dict[str, tuple[str, ...]] = {
    "files": ("files",),
    "file": ("files",),
    "code": ("files",),
    "docs": ("files",),
    "documents": ("files",),
    "issues": ("issues",),
    "issue": ("issues",),
    "pulls": ("pulls",),
    "pull_requests": ("pulls",),
    "prs": ("pulls",),
    "all": ("files", "issues", "pulls"),
}


class GitHubConnector(SourceConnector):
    """Files, issues and pull requests of GitHub repositories (over :class:`GitHubSource`).

    ``GitHubConnector(token=..., owner="octocat", repo="hello-world")``; ``repos=[...]`` for
    several repositories of ``owner``; ``base_url`` for GitHub Enterprise or a test server. Any
    other :class:`~cfstream.sources.github.GitHubConfig` option (``requests_per_second``, ...)
    passes through.

    ``sync_documents`` options: ``path`` (a folder), ``file_pattern``/``file_patterns`` (globs over
    repository paths, e.g. ``**/*.md``), ``exclude_paths``, ``filter_type`` (``files``,
    ``issues``, ``pulls`` or ``all``; default: files when a file option is given, issues when
    ``labels`` or ``state`` is, else files and issues), ``labels`` (issues carrying all of them),
    ``state`` (``open``, ``closed``, ``all``), ``ref``.
    """

    source_type: ClassVar[str] = "github"
    source_class: ClassVar[type[Source]] = GitHubSource
    native_since: ClassVar[bool] = True
    option_names: ClassVar[frozenset[str]] = frozenset(
        {
            "path",
            "file_pattern",
            "file_patterns",
            "exclude_paths",
            "filter_type",
            "labels",
            "state",
            "ref",
        }
    )

    def __init__(
        self,
        token: str | Secret | None = None,
        owner: str | None = None,
        repo: str | None = None,
        *,
        repos: Sequence[str] | None = None,
        base_url: str = "https://api.github.com",
        **config: Any,
    ) -> None:
        super().__init__(
            token=reveal(token),
            owner=owner,
            repo=repo,
            repos=list(repos or []),
            base_url=base_url,
            **config,
        )

    @classmethod
    def settings(cls) -> frozenset[str]:
        """``token``, ``owner``, ``repo``, ``repos``, ``base_url``."""
        return frozenset({"token", "owner", "repo", "repos", "base_url"})

    def describe(self) -> str:
        """``owner/repo`` names."""
        names = ([self.config["repo"]] if self.config["repo"] else []) + self.config["repos"]
        return f"{self.config['owner'] or ''}: {', '.join(names)}"

    def source_options(self, options: Mapping[str, Any], since: datetime | None) -> dict[str, Any]:
        """GitHubSource keyword arguments."""
        cfg = self.config
        out: dict[str, Any] = {
            "token": cfg["token"],
            "owner": cfg["owner"],
            "repo": cfg["repo"],
            "repos": cfg["repos"],
            "base_url": cfg["base_url"],
        }
        if options.get("path"):
            out["path"] = str(options["path"]).strip("/")
        include = _first(options, "file_pattern", "file_patterns")
        if include:
            out["include"] = include
        exclude = _strings(options.get("exclude_paths"), "exclude_paths")
        if exclude:
            out["exclude"] = exclude
        kind = options.get("filter_type")
        if kind is not None:
            kinds: list[str] = []
            for k in _strings(kind, "filter_type"):
                if k not in _GITHUB_KINDS:
                    raise ConfigError(
                        f"filter_type {k!r} is not one of {', '.join(sorted(_GITHUB_KINDS))}"
                    )
                kinds.extend(x for x in _GITHUB_KINDS[k] if x not in kinds)
            if "issues" in kinds and "pulls" in kinds:
                kinds.remove("pulls")  # GitHub's issues listing holds pull requests too
            out["content"] = kinds
        elif options.get("path") or include or exclude:
            out["content"] = ["files"]  # a file selection: files only
        elif options.get("labels") or options.get("state"):
            out["content"] = ["issues"]  # an issue selection: issues only
        if options.get("labels") is not None:
            out["labels"] = _strings(options["labels"], "labels")
        if options.get("state") is not None:
            out["state"] = options["state"]
        if options.get("ref") is not None:
            out["ref"] = options["ref"]
        if since is not None:
            out["since"] = since
        return out

    async def authenticate(self) -> None:
        """Check the token: the repositories' metadata, or ``GET /rate_limit`` without one."""
        if self.config["repo"] or self.config["repos"]:
            await super().authenticate()
            return
        from cfstream.http import BearerAuth, HttpClient, NoAuth

        self.authenticated = False
        token = self.config["token"]
        async with HttpClient() as http:
            svc = http.service(
                "github",
                base_url=self.config["base_url"],
                auth=BearerAuth(token) if token is not None else NoAuth(),
            )
            await svc.get("/rate_limit")
        self.authenticated = True


# ------------------------------------------------------------------------------------------------
# Linear
# ------------------------------------------------------------------------------------------------

_LINEAR_KINDS = {
    "issues": "issues",
    "issue": "issues",
    "comments": "comments",
    "projects": "projects",
    "documents": "documents",
    "docs": "documents",
}


class LinearConnector(SourceConnector):
    """Issues, comments, projects and documents of Linear (over :class:`LinearSource`).

    ``LinearConnector(api_key=..., team_id=...)`` (or ``oauth_token=``, ``team_ids=[...]``).

    ``sync_documents`` options: ``team_id``/``team_ids``, ``filter_type`` (``issues``,
    ``comments``, ``projects``, ``documents``, or a list), ``states`` (workflow state names, e.g.
    ``["In Progress", "Done"]``) and ``labels`` (issues carrying all of them). LinearSource has no
    state or label filter: ``states`` and ``labels`` keep matching issues among the mapped
    documents, and with either of them only issues (and team headers) are fetched unless
    ``filter_type`` says otherwise.
    """

    source_type: ClassVar[str] = "linear"
    source_class: ClassVar[type[Source]] = LinearSource
    option_names: ClassVar[frozenset[str]] = frozenset(
        {"team_id", "team_ids", "states", "labels", "filter_type"}
    )

    def __init__(
        self,
        api_key: str | Secret | None = None,
        team_id: str | None = None,
        *,
        oauth_token: str | Secret | None = None,
        team_ids: Sequence[str] | None = None,
        base_url: str = "https://api.linear.app",
        **config: Any,
    ) -> None:
        super().__init__(
            api_key=reveal(api_key),
            oauth_token=reveal(oauth_token),
            team_id=team_id,
            team_ids=list(team_ids or []),
            base_url=base_url,
            **config,
        )

    @classmethod
    def settings(cls) -> frozenset[str]:
        """``api_key``, ``oauth_token``, ``team_id``, ``team_ids``, ``base_url``."""
        return frozenset({"api_key", "oauth_token", "team_id", "team_ids", "base_url"})

    def source_options(self, options: Mapping[str, Any], since: datetime | None) -> dict[str, Any]:
        """LinearSource keyword arguments."""
        cfg = self.config
        teams = _first(options, "team_id", "team_ids") or (
            ([cfg["team_id"]] if cfg["team_id"] else []) + cfg["team_ids"]
        )
        out: dict[str, Any] = {"base_url": cfg["base_url"]}
        if cfg["api_key"] is not None:
            out["api_key"] = cfg["api_key"]
        if cfg["oauth_token"] is not None:
            out["oauth_token"] = cfg["oauth_token"]
        if teams:
            out["team_ids"] = teams
        kinds = options.get("filter_type")
        if kinds is not None:
            content: list[str] = []
            for k in _strings(kinds, "filter_type"):
                if k not in _LINEAR_KINDS:
                    raise ConfigError(
                        f"filter_type {k!r} is not one of {', '.join(sorted(_LINEAR_KINDS))}"
                    )
                content.append(_LINEAR_KINDS[k])
            out["content"] = list(dict.fromkeys(content))
        elif options.get("states") or options.get("labels"):
            out["content"] = ["issues"]
        return out

    def document_filters(self, options: Mapping[str, Any]) -> list[DocumentFilter]:
        """``states`` and ``labels`` over issues (other records pass)."""
        states = set(_strings(options.get("states"), "states"))
        labels = set(_strings(options.get("labels"), "labels"))
        if not states and not labels:
            return []

        def keep(doc: Document) -> bool:
            meta = doc.custom_metadata or {}
            if meta.get("linear_type") != "issue":
                return True
            if states and meta.get("linear_state") not in states:
                return False
            return labels <= set(doc.tags or ())

        return [keep]


# ------------------------------------------------------------------------------------------------
# Google Drive
# ------------------------------------------------------------------------------------------------


class GoogleDriveConnector(SourceConnector):
    """Files of Google Drive folders or a shared drive (over :class:`GoogleDriveSource`).

    OAuth: ``GoogleDriveConnector(client_id=..., client_secret=..., refresh_token=...)``; a service
    account: ``GoogleDriveConnector(service_account_file="/path/to/credentials.json")``; or a
    ready ``access_token=``. ``folder_id``/``drive_id`` choose what to import (default: the
    user's My Drive, ``root``); ``base_url``/``token_url`` point elsewhere for tests.

    ``sync_documents`` options: ``folder_id``/``folder_ids``, ``drive_id``.
    """

    source_type: ClassVar[str] = "google_drive"
    source_class: ClassVar[type[Source]] = GoogleDriveSource
    option_names: ClassVar[frozenset[str]] = frozenset({"folder_id", "folder_ids", "drive_id"})

    def __init__(
        self,
        client_id: str | None = None,
        client_secret: str | Secret | None = None,
        refresh_token: str | Secret | None = None,
        *,
        service_account_file: str | os.PathLike[str] | None = None,
        access_token: str | Secret | None = None,
        subject: str | None = None,
        folder_id: str | None = None,
        drive_id: str | None = None,
        base_url: str = "https://www.googleapis.com",
        token_url: str = "https://oauth2.googleapis.com/token",
        **config: Any,
    ) -> None:
        super().__init__(
            client_id=client_id,
            client_secret=reveal(client_secret),
            refresh_token=reveal(refresh_token),
            service_account_file=None
            if service_account_file is None
            else str(service_account_file),
            access_token=reveal(access_token),
            subject=subject,
            folder_id=folder_id,
            drive_id=drive_id,
            base_url=base_url,
            token_url=token_url,
            **config,
        )
        self.credentials()  # fail early on incomplete credentials

    @classmethod
    def settings(cls) -> frozenset[str]:
        """Credentials, ``folder_id``, ``drive_id``, ``base_url``, ``token_url``."""
        return frozenset(
            {
                "client_id",
                "client_secret",
                "refresh_token",
                "service_account_file",
                "access_token",
                "subject",
                "folder_id",
                "drive_id",
                "base_url",
                "token_url",
                "credentials",
            }
        )

    def credentials(self) -> dict[str, Any]:
        """The Source's ``credentials`` mapping.

        Raises:
            ConfigError: no complete set of credentials was given.
        """
        cfg = self.config
        if cfg.get("credentials") is not None:
            return dict(cfg["credentials"])
        if cfg["service_account_file"]:
            out: dict[str, Any] = {
                "type": "service_account",
                "key_file": cfg["service_account_file"],
            }
            if cfg["subject"]:
                out["subject"] = cfg["subject"]
            return out
        if cfg["access_token"] is not None:
            return {"type": "access_token", "access_token": cfg["access_token"]}
        if cfg["client_id"] and cfg["client_secret"] is not None and cfg["refresh_token"]:
            return {
                "type": "oauth",
                "client_id": cfg["client_id"],
                "client_secret": cfg["client_secret"],
                "refresh_token": cfg["refresh_token"],
            }
        raise ConfigError(
            "GoogleDriveConnector needs credentials: client_id + client_secret + refresh_token "
            "(OAuth), service_account_file, or access_token"
        )

    def source_options(self, options: Mapping[str, Any], since: datetime | None) -> dict[str, Any]:
        """GoogleDriveSource keyword arguments."""
        cfg = self.config
        drive = options.get("drive_id") or None
        folders = _first(options, "folder_id", "folder_ids")
        if not folders and not drive:
            drive = cfg["drive_id"]
            folders = [] if drive else [cfg["folder_id"] or "root"]
        out: dict[str, Any] = {
            "credentials": self.credentials(),
            "base_url": cfg["base_url"],
            "token_url": cfg["token_url"],
        }
        if drive:
            out["drive_id"] = drive
        else:
            out["folder_ids"] = folders
        return out


# ------------------------------------------------------------------------------------------------
# Notion
# ------------------------------------------------------------------------------------------------


class NotionConnector(SourceConnector):
    """Pages and databases of Notion (over :class:`NotionSource`).

    ``NotionConnector(api_key=...)`` (the integration token); ``databases=[{"db_id": ...,
    "name": ...}]`` (the guide's config layout) or ``database_ids=[...]`` set the default
    databases.

    ``sync_documents`` options: ``database_id``/``database_ids``, ``page_id``/``page_ids``,
    ``search`` (everything shared with the integration; the default when nothing else is chosen).
    """

    source_type: ClassVar[str] = "notion"
    source_class: ClassVar[type[Source]] = NotionSource
    option_names: ClassVar[frozenset[str]] = frozenset(
        {"database_id", "database_ids", "page_id", "page_ids", "search"}
    )

    def __init__(
        self,
        api_key: str | Secret | None = None,
        *,
        token: str | Secret | None = None,
        databases: Sequence[Mapping[str, Any] | str] | None = None,
        database_ids: Sequence[str] | None = None,
        page_ids: Sequence[str] | None = None,
        base_url: str = "https://api.notion.com",
        **config: Any,
    ) -> None:
        ids = list(database_ids or [])
        for db in databases or []:
            if isinstance(db, str):
                ids.append(db)
            elif isinstance(db, Mapping) and isinstance(db.get("db_id") or db.get("id"), str):
                ids.append(str(db.get("db_id") or db.get("id")))
            else:
                raise ConfigError(
                    f"NotionConnector: databases entries are ids or {{db_id: ..., name: ...}}, "
                    f"got {db!r}"
                )
        key = reveal(api_key) or reveal(token)
        if key is None:
            raise ConfigError("NotionConnector needs api_key (the integration's secret)")
        super().__init__(
            api_key=key,
            database_ids=ids,
            page_ids=list(page_ids or []),
            base_url=base_url,
            **config,
        )

    @classmethod
    def settings(cls) -> frozenset[str]:
        """``api_key``, ``database_ids``, ``page_ids``, ``base_url``."""
        return frozenset({"api_key", "database_ids", "page_ids", "base_url"})

    def source_options(self, options: Mapping[str, Any], since: datetime | None) -> dict[str, Any]:
        """NotionSource keyword arguments."""
        cfg = self.config
        dbs = _first(options, "database_id", "database_ids")
        pages = _first(options, "page_id", "page_ids")
        search = bool(options.get("search", False))
        if not dbs and not pages and not search:
            dbs, pages = list(cfg["database_ids"]), list(cfg["page_ids"])
            search = not dbs and not pages
        return {
            "token": cfg["api_key"],
            "database_ids": dbs,
            "page_ids": pages,
            "search": search,
            "base_url": cfg["base_url"],
        }


# ------------------------------------------------------------------------------------------------
# Slack
# ------------------------------------------------------------------------------------------------


class SlackConnector(SourceConnector):
    """Messages and threads of Slack channels (over :class:`SlackSource`).

    ``SlackConnector(token=...)`` (a bot or user token); ``channels=[...]`` sets default channels
    (ids or names); without any, every channel the token can see is imported.

    ``sync_documents`` options: ``channel_ids`` (or ``channels``), ``include_threads``.
    """

    source_type: ClassVar[str] = "slack"
    source_class: ClassVar[type[Source]] = SlackSource
    native_since: ClassVar[bool] = True
    option_names: ClassVar[frozenset[str]] = frozenset(
        {"channel_ids", "channels", "include_threads"}
    )

    def __init__(
        self,
        token: str | Secret | None = None,
        *,
        channels: Sequence[str] | None = None,
        base_url: str = "https://slack.com/api",
        **config: Any,
    ) -> None:
        key = reveal(token)
        if key is None:
            raise ConfigError("SlackConnector needs token (a bot xoxb- or user xoxp- token)")
        super().__init__(token=key, channels=list(channels or []), base_url=base_url, **config)

    @classmethod
    def settings(cls) -> frozenset[str]:
        """``token``, ``channels``, ``base_url``."""
        return frozenset({"token", "channels", "base_url"})

    def source_options(self, options: Mapping[str, Any], since: datetime | None) -> dict[str, Any]:
        """SlackSource keyword arguments."""
        cfg = self.config
        channels = _first(options, "channel_ids", "channels") or list(cfg["channels"])
        out: dict[str, Any] = {"token": cfg["token"], "base_url": cfg["base_url"]}
        if channels:
            out["channels"] = channels
        else:
            out["all_channels"] = True
        if options.get("include_threads") is not None:
            out["include_threads"] = bool(options["include_threads"])
        if since is not None:
            out["since"] = since
        return out


# ------------------------------------------------------------------------------------------------
# Discord
# ------------------------------------------------------------------------------------------------


class DiscordConnector(SourceConnector):
    """Messages and threads of a Discord guild (over :class:`DiscordSource`).

    ``DiscordConnector(token=..., guild_id=...)`` (``bot_token=`` works too).

    ``sync_documents`` options: ``channel_ids``, ``guild_id``, ``include_threads``.
    """

    source_type: ClassVar[str] = "discord"
    source_class: ClassVar[type[Source]] = DiscordSource
    option_names: ClassVar[frozenset[str]] = frozenset(
        {"channel_ids", "guild_id", "include_threads"}
    )

    def __init__(
        self,
        token: str | Secret | None = None,
        guild_id: str | int | None = None,
        *,
        bot_token: str | Secret | None = None,
        channel_ids: Sequence[str] | None = None,
        base_url: str = "https://discord.com/api/v10",
        **config: Any,
    ) -> None:
        key = reveal(token) or reveal(bot_token)
        if key is None:
            raise ConfigError("DiscordConnector needs token (the bot's token)")
        super().__init__(
            token=key,
            guild_id=None if guild_id is None else str(guild_id),
            channel_ids=[str(c) for c in channel_ids or []],
            base_url=base_url,
            **config,
        )

    @classmethod
    def settings(cls) -> frozenset[str]:
        """``token``, ``guild_id``, ``channel_ids``, ``base_url``."""
        return frozenset({"token", "guild_id", "channel_ids", "base_url"})

    def source_options(self, options: Mapping[str, Any], since: datetime | None) -> dict[str, Any]:
        """DiscordSource keyword arguments."""
        cfg = self.config
        guild = options.get("guild_id") or cfg["guild_id"]
        if not guild:
            raise ConfigError("DiscordConnector needs guild_id (the server's id)")
        channels = [str(c) for c in _strings(options.get("channel_ids"), "channel_ids")] or list(
            cfg["channel_ids"]
        )
        out: dict[str, Any] = {
            "token": cfg["token"],
            "guild_id": str(guild),
            "base_url": cfg["base_url"],
        }
        if channels:
            out["channel_ids"] = channels
        if options.get("include_threads") is not None:
            out["include_threads"] = bool(options["include_threads"])
        return out


# ------------------------------------------------------------------------------------------------
# Obsidian
# ------------------------------------------------------------------------------------------------


class ObsidianConnector(SourceConnector):
    """Notes of an Obsidian vault on disk (over :class:`ObsidianSource`).

    ``ObsidianConnector(vault_path="~/Notes")``; no credentials (``authenticate`` checks that the
    vault folder can be read).

    ``sync_documents`` options: ``path`` (a folder of the vault), ``file_pattern``/
    ``file_patterns`` (globs over vault paths; default ``**/*.md``), ``exclude_paths``.
    """

    source_type: ClassVar[str] = "obsidian"
    source_class: ClassVar[type[Source]] = ObsidianSource
    option_names: ClassVar[frozenset[str]] = frozenset(
        {"path", "file_pattern", "file_patterns", "exclude_paths"}
    )

    def __init__(self, vault_path: str | os.PathLike[str] | None = None, **config: Any) -> None:
        if vault_path is None:
            raise ConfigError("ObsidianConnector needs vault_path (the vault's folder)")
        super().__init__(vault_path=os.path.expanduser(str(vault_path)), **config)

    @classmethod
    def settings(cls) -> frozenset[str]:
        """``vault_path``."""
        return frozenset({"vault_path"})

    def source_options(self, options: Mapping[str, Any], since: datetime | None) -> dict[str, Any]:
        """ObsidianSource keyword arguments."""
        patterns = _first(options, "file_pattern", "file_patterns") or ["**/*.md"]
        folder = str(options.get("path") or "").strip("/")
        if folder:
            patterns = [p if p.startswith(folder + "/") else f"{folder}/{p}" for p in patterns]
        out: dict[str, Any] = {"vault_path": self.config["vault_path"], "include": patterns}
        exclude = _strings(options.get("exclude_paths"), "exclude_paths")
        if exclude:
            out["exclude"] = exclude
        return out

    async def check_access(self, source: Source, ctx: SourceContext) -> None:
        """The vault folder exists and can be listed."""
        path = self.config["vault_path"]
        if not await anyio.Path(path).is_dir():
            raise ConfigError(f"ObsidianConnector: vault_path {path!r} is not a folder")
        await source.partitions(ctx)


#: connector type -> class, as the guide's ``create_connector`` maps them
CONNECTORS: dict[str, type[SourceConnector]] = {
    "github": GitHubConnector,
    "linear": LinearConnector,
    "notion": NotionConnector,
    "gdrive": GoogleDriveConnector,
    "google_drive": GoogleDriveConnector,
    "slack": SlackConnector,
    "discord": DiscordConnector,
    "obsidian": ObsidianConnector,
}


def create_connector(connector_type: str, config: Mapping[str, Any]) -> SourceConnector:
    """Create a connector from its type (``github``, ``gdrive``, ...) and settings.

    ``config`` may be a whole ``connectors:`` entry: ``enabled`` and ``sync_options`` are kept on
    the connector (``sync_options`` become the defaults of ``sync_documents``).

    Raises:
        ValueError: an unknown connector type (a :class:`~cfstream.errors.ConfigError`, which
            is not a ValueError, for invalid settings).
    """
    cls = CONNECTORS.get(connector_type)
    if cls is None:
        raise ValueError(
            f"Unknown connector type: {connector_type!r}; use one of {', '.join(sorted(CONNECTORS))}"
        )
    return cls(**dict(config))
