"""Paginators: each pagination style as a small state machine, written once.

A paginator never sends anything. Given the request that produced a page and the page itself, it
returns the next :class:`PageRequest`, or None when the pages are exhausted.
:meth:`cfstream.http.Service.paginate` drives it. Paginators hold only configuration, so one
instance can serve many concurrent paginations.

==========================  ==============================================================
:class:`LinkHeaderPaginator`  GitHub: follow the ``Link: <...>; rel="next"`` URL verbatim
:class:`BodyCursorPaginator`  Slack ``response_metadata.next_cursor``; Notion ``next_cursor``/``has_more``
:class:`PageTokenPaginator`   Google Drive ``nextPageToken`` -> ``pageToken``
:class:`GraphQLPaginator`     Linear ``pageInfo { hasNextPage endCursor }`` -> variable ``after``
:class:`SnowflakePaginator`   Discord ``before``/``after`` a message ID; stops on a short page
==========================  ==============================================================
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import orjson
from yarl import URL

if TYPE_CHECKING:
    from cfstream.http.client import JsonResponse

__all__ = (
    "BodyCursorPaginator",
    "GraphQLPaginator",
    "LinkHeaderPaginator",
    "PageRequest",
    "PageTokenPaginator",
    "Paginator",
    "SeenRequests",
    "SnowflakePaginator",
    "get_path",
    "parse_link_header",
)

_LINK = re.compile(r"<([^>]*)>\s*((?:;\s*[^;,]+)*)")
_REL = re.compile(r"""rel\s*=\s*"?([^";]+)"?""", re.IGNORECASE)


def parse_link_header(value: str | None) -> dict[str, str]:
    """Parse an RFC 8288 ``Link`` header into ``{rel: url}`` (URLs kept verbatim)."""
    links: dict[str, str] = {}
    if not value:
        return links
    for match in _LINK.finditer(value):
        url, params = match.group(1).strip(), match.group(2)
        rel = _REL.search(params)
        if rel:
            for name in rel.group(1).split():
                links.setdefault(name.lower(), url)
    return links


def get_path(data: Any, path: str | None) -> Any:
    """``data["a"]["b"]`` for ``path="a.b"``; None when a step is missing; ``data`` for None/""."""
    if not path:
        return data
    for key in path.split("."):
        if isinstance(data, Mapping):
            data = data.get(key)
        elif isinstance(data, list) and key.isdigit() and int(key) < len(data):
            data = data[int(key)]
        else:
            return None
    return data


@dataclass(frozen=True)
class PageRequest:
    """One page's request: method, URL (path or absolute), query parameters and JSON body."""

    method: str
    url: str
    params: Mapping[str, Any]
    json: Any = None


class SeenRequests:
    """The page requests one pagination run has made, as 16-byte digests (never the pages).

    :meth:`Service.paginate <cfstream.http.Service.paginate>` uses one per run to stop a cursor
    or next link that comes back to an earlier one (``a -> b -> a``), which would loop forever.
    A connector that pages by hand can use one the same way with its own cursor values.
    """

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: set[bytes] = set()

    def __len__(self) -> int:
        return len(self._seen)

    def add(self, *parts: Any) -> bool:
        """Record a request made of ``parts`` (JSON-able values); False when it was seen before."""
        raw = orjson.dumps(
            parts, default=str, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
        )
        key = hashlib.blake2b(raw, digest_size=16).digest()
        if key in self._seen:
            return False
        self._seen.add(key)
        return True


class Paginator(ABC):
    """A pagination style: :meth:`first` shapes the first request, :meth:`next` derives the next.

    :param items_path: where a page's items are in its body (dotted path, e.g. ``"channels"`` or
        ``"data.issues.nodes"``); None means the body itself is the list.
    """

    def __init__(self, *, items_path: str | None = None) -> None:
        self.items_path = items_path

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"

    def first(self, request: PageRequest) -> PageRequest:
        """The first request (unchanged by default)."""
        return request

    @abstractmethod
    def next(self, request: PageRequest, page: JsonResponse) -> PageRequest | None:
        """The request for the page after ``page``, or None when there is none."""

    def items(self, page: JsonResponse) -> list[Any]:
        """The items of ``page`` (an empty list when the body has none)."""
        found = get_path(page.data, self.items_path)
        return found if isinstance(found, list) else []

    def check(self, data: Any) -> str | None:
        """Why a decoded page is not a complete page (its items are not a list), or None.

        :meth:`Service.paginate <cfstream.http.Service.paginate>` retries a page that fails
        this, so a faulty answer (``{}`` where a list was due) is never read as "no items".
        """
        found = get_path(data, self.items_path)
        if isinstance(found, list):
            return None
        where = f"`{self.items_path}`" if self.items_path else "the body"
        what = "missing" if found is None else f"a {type(found).__name__}"
        return f"{where} should be a list of items but is {what}"


class LinkHeaderPaginator(Paginator):
    """Follow the ``Link`` header's ``rel="next"`` URL verbatim (GitHub, and many REST APIs).

    The next URL already carries every query parameter, so the original ``params`` are dropped.
    Real GitHub chains switch from ``/repos/{o}/{r}/issues`` to ``/repositories/{id}/issues``;
    the URL is never rebuilt. A relative link is resolved against the page's URL. A link to
    another origin (a server behind a proxy naming its internal host) is fetched from the
    service's own origin by :meth:`Service.paginate <cfstream.http.Service.paginate>`.
    """

    def __init__(self, *, rel: str = "next", items_path: str | None = None) -> None:
        super().__init__(items_path=items_path)
        self.rel = rel

    def next(self, request: PageRequest, page: JsonResponse) -> PageRequest | None:
        """The ``rel`` link of ``page``, or None."""
        url = parse_link_header(page.headers.get("Link")).get(self.rel)
        if not url:
            return None
        if not url.startswith(("http://", "https://")):
            url = str(URL(page.url, encoded=True).join(URL(url, encoded=True)))
        return PageRequest(request.method, url, {}, request.json)


class BodyCursorPaginator(Paginator):
    """A cursor read from the body, sent back as a query parameter (GET) or in the JSON body (POST).

    Stops when the cursor is missing, null or ``""`` (Slack's last page), or when ``has_more_path``
    is set and false (Notion). Use :meth:`slack` and :meth:`notion` for those services.

    :param cursor_path: where the next cursor is in the body.
    :param cursor_param: the name the cursor is sent back under.
    :param has_more_path: a boolean in the body that must be true to continue.
    :param in_body: send the cursor in the JSON body (True), the query (False), or decide by
        method (None: JSON body for anything but GET).
    """

    def __init__(
        self,
        cursor_path: str = "response_metadata.next_cursor",
        cursor_param: str = "cursor",
        *,
        has_more_path: str | None = None,
        in_body: bool | None = None,
        items_path: str | None = None,
    ) -> None:
        super().__init__(items_path=items_path)
        self.cursor_path = cursor_path
        self.cursor_param = cursor_param
        self.has_more_path = has_more_path
        self.in_body = in_body

    @classmethod
    def slack(cls, items_path: str | None = None) -> BodyCursorPaginator:
        """Slack Web API: ``response_metadata.next_cursor`` -> ``cursor``; ``""`` ends."""
        return cls("response_metadata.next_cursor", "cursor", items_path=items_path)

    @classmethod
    def notion(cls, items_path: str | None = "results") -> BodyCursorPaginator:
        """Notion: ``next_cursor`` -> ``start_cursor`` (query for GET, body for POST) while ``has_more``."""
        return cls("next_cursor", "start_cursor", has_more_path="has_more", items_path=items_path)

    def next(self, request: PageRequest, page: JsonResponse) -> PageRequest | None:
        """The same request with the new cursor, or None."""
        if self.has_more_path is not None and get_path(page.data, self.has_more_path) is not True:
            return None
        cursor = get_path(page.data, self.cursor_path)
        if cursor is None or cursor == "":
            return None
        in_body = self.in_body if self.in_body is not None else request.method != "GET"
        if in_body:
            body = dict(request.json) if isinstance(request.json, Mapping) else {}
            body[self.cursor_param] = cursor
            return replace(request, json=body)
        return replace(request, params={**request.params, self.cursor_param: cursor})


class PageTokenPaginator(Paginator):
    """Google style: the body's ``nextPageToken`` is sent back as the ``pageToken`` parameter.

    Stops when the token is absent (a Drive changes feed's last page carries ``newStartPageToken``
    instead: read it from that page's data).
    """

    def __init__(
        self,
        token_field: str = "nextPageToken",
        param: str = "pageToken",
        *,
        items_path: str | None = None,
    ) -> None:
        super().__init__(items_path=items_path)
        self.token_field = token_field
        self.param = param

    def next(self, request: PageRequest, page: JsonResponse) -> PageRequest | None:
        """The same request with the new token, or None."""
        token = get_path(page.data, self.token_field)
        if not token:
            return None
        return replace(request, params={**request.params, self.param: token})


class GraphQLPaginator(Paginator):
    """Relay connections: ``pageInfo { hasNextPage endCursor }`` -> the ``after`` variable.

    :param connection_path: the connection inside the response's ``data``, e.g. ``"issues"`` or
        ``"team.issues"``. ``pageInfo`` and ``nodes`` (or ``edges[].node``) are read from it.
    :param variable: the GraphQL variable that receives ``endCursor``.

    The request must be a POST with ``json={"query": ..., "variables": {...}}``.
    """

    def __init__(self, connection_path: str, *, variable: str = "after") -> None:
        super().__init__(items_path=f"data.{connection_path}.nodes")
        self.connection_path = connection_path
        self.variable = variable

    def next(self, request: PageRequest, page: JsonResponse) -> PageRequest | None:
        """The same query with ``variables[variable] = endCursor`` while ``hasNextPage``."""
        info = get_path(page.data, f"data.{self.connection_path}.pageInfo")
        if not isinstance(info, Mapping) or info.get("hasNextPage") is not True:
            return None
        cursor = info.get("endCursor")
        if not cursor:
            return None
        body = dict(request.json) if isinstance(request.json, Mapping) else {}
        variables = dict(body.get("variables") or {})
        variables[self.variable] = cursor
        body["variables"] = variables
        return replace(request, json=body)

    def check(self, data: Any) -> str | None:
        """Why a page has no ``nodes`` or ``edges`` list in its connection, or None."""
        connection = get_path(data, f"data.{self.connection_path}")
        if isinstance(connection, Mapping) and (
            isinstance(connection.get("nodes"), list) or isinstance(connection.get("edges"), list)
        ):
            return None
        return f"`data.{self.connection_path}` should hold a `nodes` or `edges` list"

    def items(self, page: JsonResponse) -> list[Any]:
        """``nodes`` of the connection, or the ``node`` of each edge."""
        connection = get_path(page.data, f"data.{self.connection_path}")
        if not isinstance(connection, Mapping):
            return []
        nodes = connection.get("nodes")
        if isinstance(nodes, list):
            return nodes
        edges = connection.get("edges")
        if isinstance(edges, list):
            return [e.get("node") for e in edges if isinstance(e, Mapping)]
        return []


class SnowflakePaginator(Paginator):
    """Discord style: ``before=<smallest id of the page>`` (backfill) or ``after=<largest id>``.

    Sets ``limit`` on the first request unless given; stops on a page shorter than ``limit``
    (including an empty one). IDs are compared as integers, whatever order the page is in.

    :param direction: ``"before"`` walks to older messages, ``"after"`` to newer ones.
    :param limit: items per page (Discord: 1..100).
    :param id_field: the ID field of an item.
    """

    def __init__(
        self,
        direction: Literal["before", "after"] = "before",
        *,
        limit: int = 100,
        id_field: str = "id",
        limit_param: str = "limit",
        items_path: str | None = None,
    ) -> None:
        if direction not in ("before", "after"):
            raise ValueError("direction must be 'before' or 'after'")
        super().__init__(items_path=items_path)
        self.direction = direction
        self.limit = limit
        self.id_field = id_field
        self.limit_param = limit_param

    def first(self, request: PageRequest) -> PageRequest:
        """Add ``limit`` when the caller did not."""
        if self.limit_param in request.params:
            return request
        return replace(request, params={**request.params, self.limit_param: self.limit})

    def next(self, request: PageRequest, page: JsonResponse) -> PageRequest | None:
        """Move past the page's oldest (``before``) or newest (``after``) ID."""
        items = self.items(page)
        limit = int(request.params.get(self.limit_param, self.limit))
        if not items or len(items) < limit:
            return None
        ids = [int(item[self.id_field]) for item in items if isinstance(item, Mapping)]
        if not ids:
            return None
        edge = min(ids) if self.direction == "before" else max(ids)
        params = {k: v for k, v in request.params.items() if k not in ("before", "after", "around")}
        params[self.direction] = str(edge)
        return replace(request, params=params)
