"""Each paginator over at least three pages, ending on an empty page, against the fake server."""

from __future__ import annotations

from contextlib import aclosing
from typing import Any

import pytest

from cfstream.errors import PaginationLoopError
from cfstream.http import (
    BodyCursorPaginator,
    GraphQLPaginator,
    HttpClient,
    LinkHeaderPaginator,
    PageTokenPaginator,
    Paginator,
    Service,
    SnowflakePaginator,
    parse_link_header,
)
from cfstream.testing import FakeAPI, Reply


async def collect(
    svc: Service, paginator: Paginator, url: str, **kw: Any
) -> tuple[list[list[Any]], list[Any]]:
    pages: list[list[Any]] = []
    async with aclosing(svc.paginate(paginator, url, **kw)) as it:
        async for page in it:
            pages.append(paginator.items(page))
    return pages, [x for p in pages for x in p]


async def test_link_header_follows_next_verbatim_and_ends_on_empty_page(
    api: FakeAPI, http: HttpClient
) -> None:
    items = [{"number": n} for n in range(9)]
    api.paginate_link(
        "/repos/o/r/issues", items, next_path="/repositories/42/issues", empty_last_page=True
    )
    gh = http.service("github", base_url=api.url)
    pages, got = await collect(
        gh, LinkHeaderPaginator(), "/repos/o/r/issues", params={"per_page": 3, "state": "all"}
    )
    assert [len(p) for p in pages] == [3, 3, 3, 0]
    assert got == items
    paths = [r.path for r in api.requests]
    assert paths == ["/repos/o/r/issues"] + ["/repositories/42/issues"] * 3
    # the link URLs carried every parameter; nothing was rebuilt or duplicated
    assert [r.query for r in api.requests[1:]] == [
        {"state": "all", "per_page": "3", "page": str(n)} for n in (2, 3, 4)
    ]


async def test_slack_cursor_empty_string_ends(api: FakeAPI, http: HttpClient) -> None:
    channels = [{"id": f"C{n}"} for n in range(6)]
    api.paginate_cursor("/api/conversations.list", channels, style="slack", empty_last_page=True)
    slack = http.service("slack", base_url=api.url)
    pages, got = await collect(
        slack,
        BodyCursorPaginator.slack(items_path="channels"),
        "/api/conversations.list",
        params={"limit": 2},
    )
    assert [len(p) for p in pages] == [2, 2, 2, 0]
    assert got == channels
    cursors = [r.query.get("cursor") for r in api.requests]
    assert cursors[0] is None and all(cursors[1:]) and len(set(cursors[1:])) == 3


async def test_notion_cursor_in_query_for_get(api: FakeAPI, http: HttpClient) -> None:
    blocks = [{"id": f"b{n}"} for n in range(4)]
    api.paginate_cursor("/v1/blocks/{id}/children", blocks, style="notion", empty_last_page=True)
    notion = http.service("notion", base_url=api.url)
    pages, got = await collect(
        notion, BodyCursorPaginator.notion(), "/v1/blocks/p1/children", params={"page_size": 2}
    )
    assert [len(p) for p in pages] == [2, 2, 0]
    assert got == blocks
    assert [r.body for r in api.requests] == [b"", b"", b""]
    assert "start_cursor" in api.requests[1].query and "start_cursor" in api.requests[2].query


async def test_notion_cursor_in_json_body_for_post(api: FakeAPI, http: HttpClient) -> None:
    rows = [{"id": f"p{n}"} for n in range(5)]
    api.paginate_cursor("/v1/databases/{id}/query", rows, style="notion", method="POST")
    notion = http.service("notion", base_url=api.url)
    filt = {"timestamp": "last_edited_time", "last_edited_time": {"after": "2024-01-01"}}
    pages, got = await collect(
        notion,
        BodyCursorPaginator.notion(),
        "/v1/databases/db/query",
        method="POST",
        json={"page_size": 2, "filter": filt},
    )
    assert [len(p) for p in pages] == [2, 2, 1]
    assert got == rows
    bodies = [r.json() for r in api.requests]
    assert "start_cursor" not in bodies[0]
    assert all(b["start_cursor"] and b["filter"] == filt for b in bodies[1:])
    assert all("start_cursor" not in r.query for r in api.requests)


async def test_page_token(api: FakeAPI, http: HttpClient) -> None:
    files = [{"id": f"f{n}"} for n in range(6)]
    api.paginate_page_token("/drive/v3/files", files, empty_last_page=True)
    drive = http.service("google", base_url=api.url)
    pages, got = await collect(
        drive, PageTokenPaginator(items_path="files"), "/drive/v3/files", params={"pageSize": 2}
    )
    assert [len(p) for p in pages] == [2, 2, 2, 0]
    assert got == files
    assert [("pageToken" in r.query) for r in api.requests] == [False, True, True, True]


async def test_graphql_page_info(api: FakeAPI, http: HttpClient) -> None:
    issues = [{"id": f"i{n}"} for n in range(6)]
    api.paginate_graphql("/graphql", issues, connection="team.issues", empty_last_page=True)
    linear = http.service("linear", base_url=api.url)
    query = "query($first: Int, $after: String) { team { issues(first: $first, after: $after) { nodes { id } pageInfo { hasNextPage endCursor } } } }"
    pages, got = await collect(
        linear,
        GraphQLPaginator("team.issues"),
        "/graphql",
        method="POST",
        json={"query": query, "variables": {"first": 3}},
    )
    assert [len(p) for p in pages] == [3, 3, 0]
    assert got == issues
    variables = [r.json()["variables"] for r in api.requests]
    assert variables[0] == {"first": 3}
    assert all(v["first"] == 3 and v["after"] for v in variables[1:])


def snowflakes(n: int) -> list[dict[str, str]]:
    base = 1_100_000_000_000_000_000
    return [{"id": str(base + (i << 22)), "content": f"m{i}"} for i in range(n)]


async def test_snowflake_before_walks_back(api: FakeAPI, http: HttpClient) -> None:
    messages = snowflakes(9)
    api.paginate_snowflake("/channels/{cid}/messages", messages)
    discord = http.service("discord", base_url=api.url)
    pages, got = await collect(
        discord, SnowflakePaginator("before", limit=3), "/channels/1/messages"
    )
    assert [len(p) for p in pages] == [3, 3, 3, 0]
    assert sorted(got, key=lambda m: int(m["id"])) == messages
    assert api.requests[1].query["before"] == messages[6]["id"]


async def test_snowflake_after_walks_forward(api: FakeAPI, http: HttpClient) -> None:
    messages = snowflakes(7)
    api.paginate_snowflake("/channels/{cid}/messages", messages)
    discord = http.service("discord", base_url=api.url)
    pages, got = await collect(
        discord,
        SnowflakePaginator("after", limit=3),
        "/channels/1/messages",
        params={"after": "0"},
    )
    assert [len(p) for p in pages] == [3, 3, 1]
    assert sorted(got, key=lambda m: int(m["id"])) == messages
    assert [r.query["after"] for r in api.requests] == ["0", messages[2]["id"], messages[5]["id"]]
    assert all(r.query["limit"] == "3" for r in api.requests)


async def test_a_cursor_that_does_not_advance_stops(api: FakeAPI, http: HttpClient) -> None:
    api.route(
        "GET",
        "/loop",
        Reply({"ok": True, "channels": [1], "response_metadata": {"next_cursor": "same"}}),
    )
    slack = http.service("slack", base_url=api.url)
    with pytest.raises(PaginationLoopError, match="already returned"):
        await collect(slack, BodyCursorPaginator.slack(items_path="channels"), "/loop")
    assert len(api.requests) == 2


def test_parse_link_header() -> None:
    header = (
        '<https://api.github.com/repositories/1/issues?per_page=3&page=2>; rel="next", '
        '<https://api.github.com/repositories/1/issues?per_page=3&page=5>; rel="last"'
    )
    assert parse_link_header(header) == {
        "next": "https://api.github.com/repositories/1/issues?per_page=3&page=2",
        "last": "https://api.github.com/repositories/1/issues?per_page=3&page=5",
    }
    assert parse_link_header(None) == {}
    assert parse_link_header("<a>; rel=prev") == {"prev": "a"}
