"""Replay real recorded headers and bodies from ../shared/fixtures through the fake server.

Skipped when that folder is absent. Nothing is copied into the repository.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from yarl import URL

from cfstream.errors import AuthError, NotFoundError, RateLimitWaitTooLong, TransientError
from cfstream.http import BodyCursorPaginator, HttpClient, LinkHeaderPaginator
from cfstream.sources.discord import DiscordPolicy
from cfstream.sources.github import GitHubPolicy
from cfstream.sources.google_drive import GooglePolicy
from cfstream.sources.notion import NotionPolicy
from cfstream.sources.slack import SlackPolicy
from cfstream.testing import FakeAPI, FakeClock, Reply

FIXTURES = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures"

pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason="../shared/fixtures is not present")

_HOP_BY_HOP = {
    "content-length",
    "connection",
    "transfer-encoding",
    "content-encoding",
    "date",
    "server",
}


def body(rel: str) -> Any:
    return json.loads((FIXTURES / rel).read_text())


def headers(rel: str) -> tuple[int, dict[str, str]]:
    doc = json.loads((FIXTURES / rel).read_text())
    kept = {k: v for k, v in doc["headers"].items() if k.lower() not in _HOP_BY_HOP}
    return int(doc["status"]), kept


def rebase_links(link: str, base: str) -> str:
    """Point the recorded api.github.com links at the fake server; path and query stay verbatim."""
    return link.replace("https://api.github.com", base)


async def test_github_recorded_link_chain(api: FakeAPI, http: HttpClient) -> None:
    pages = {}
    for name in ("page-1", "page-2", "page-5-last"):
        status, hdrs = headers(f"github/recorded/issues-list.{name}.headers.json")
        hdrs["Link"] = rebase_links(hdrs["Link"], api.url)
        pages[name] = Reply(
            body(f"github/recorded/issues-list.{name}.json"), status=status, headers=hdrs
        )
    first_path = str(
        URL(
            json.loads((FIXTURES / "github/recorded/issues-list.page-1.headers.json").read_text())[
                "request"
            ].split()[1]
        ).path
    )
    api.route("GET", first_path, pages["page-1"])
    # the recording holds pages 1, 2 and 5: serve page 5 (no rel="next") for page 3 to end the chain
    api.route(
        "GET",
        "/repositories/515435940/issues",
        lambda req: pages["page-2"] if req.query["page"] == "2" else pages["page-5-last"],
    )
    gh = http.service("github", policy=GitHubPolicy(), base_url=api.url)
    got = [
        page
        async for page in gh.paginate(LinkHeaderPaginator(), first_path, params={"per_page": 3})
    ]
    assert [len(p.data) for p in got] == [3, 3, 1]
    assert [r.path for r in api.requests] == [first_path] + ["/repositories/515435940/issues"] * 2
    # the links were followed verbatim (query order and values as recorded)
    assert api.requests[1].url.endswith("/repositories/515435940/issues?per_page=3&page=2")
    assert api.requests[2].url.endswith("/repositories/515435940/issues?per_page=3&page=3")
    numbers = [issue["number"] for p in got for issue in p.data]
    assert len(set(numbers)) == 7
    # x-ratelimit-remaining 4922 and a reset in 2022: nothing to wait for
    assert http.metrics.wait_seconds == 0 and http.metrics.waiting_until == {}


@pytest.mark.parametrize(
    ("name", "expected_wait"),
    [("error.429-user", 64.57), ("error.429-global", 64.57)],
)
async def test_discord_recorded_429s_wait_the_body_retry_after(
    api: FakeAPI, http: HttpClient, clock: FakeClock, name: str, expected_wait: float
) -> None:
    status, hdrs = headers(f"discord/{name}.headers.json")
    api.replies(
        "GET",
        "/channels/1/messages",
        [Reply(body(f"discord/{name}.json"), status=status, headers=hdrs), []],
    )
    discord = http.service("discord", policy=DiscordPolicy(), base_url=api.url)
    assert (await discord.get("/channels/1/messages")).data == []
    # the body's float retry_after (64.57) is more precise than the Retry-After header (65)
    assert clock.sleeps == [pytest.approx(expected_wait)]
    assert http.metrics.rate_limited == 1


async def test_discord_recorded_user_429_closes_only_its_bucket(
    api: FakeAPI, http: HttpClient, clock: FakeClock
) -> None:
    status, hdrs = headers("discord/error.429-user.headers.json")
    api.replies(
        "GET",
        "/channels/1/messages",
        [Reply(body("discord/error.429-user.json"), status=status, headers=hdrs), []],
    )
    api.route("GET", "/users/@me", {"id": "1"})
    discord = http.service("discord", policy=DiscordPolicy(), base_url=api.url)
    await discord.get("/channels/1/messages")
    assert discord._state.gates.bucket_for("GET /channels/1/messages") == hdrs["X-RateLimit-Bucket"]
    await discord.get("/users/@me")
    assert clock.sleeps == [pytest.approx(64.57)]


async def test_discord_recorded_shared_429_beyond_max_wait(api: FakeAPI, http: HttpClient) -> None:
    status, hdrs = headers("discord/error.429-shared-resource.headers.json")
    api.route(
        "GET",
        "/channels/1/messages",
        Reply(body("discord/error.429-shared-resource.json"), status=status, headers=hdrs),
    )
    with pytest.raises(
        RateLimitWaitTooLong, match=r"discord asked to wait 1337 s .*max_wait=300 s"
    ):
        await http.service("discord", policy=DiscordPolicy(), base_url=api.url).get(
            "/channels/1/messages"
        )


async def test_slack_recorded_cursor_chain(api: FakeAPI, http: HttpClient) -> None:
    chain = {
        None: body("slack/conversations.list.cursor-page-1.json"),
        "has_page2": body("slack/conversations.list.cursor-page-2.json"),
        "has_page3": body("slack/conversations.list.last-page.json"),
    }
    api.route("GET", "/api/conversations.list", lambda req: chain[req.query.get("cursor")])
    slack = http.service("slack", policy=SlackPolicy(), base_url=api.url)
    paginator = BodyCursorPaginator.slack(items_path="channels")
    pages = [
        page
        async for page in slack.paginate(paginator, "/api/conversations.list", params={"limit": 1})
    ]
    assert [r.query.get("cursor") for r in api.requests] == [None, "has_page2", "has_page3"]
    ids = [c["id"] for p in pages for c in paginator.items(p)]
    expected = [c["id"] for page in chain.values() for c in page["channels"]]
    assert ids == expected and len(ids) == 4


async def test_slack_recorded_errors(api: FakeAPI, http: HttpClient) -> None:
    api.route("GET", "/api/conversations.list", body("slack/error.invalid_auth.json"))
    api.route("GET", "/api/conversations.history", body("slack/error.channel_not_found.json"))
    slack = http.service("slack", policy=SlackPolicy(), base_url=api.url)
    with pytest.raises(AuthError, match="invalid_auth"):
        await slack.get("/api/conversations.list")
    with pytest.raises(NotFoundError, match="channel_not_found"):
        await slack.get("/api/conversations.history")


@pytest.mark.parametrize(
    ("chain", "method"),
    [("databases-query", "POST"), ("search.pages", "POST"), ("blocks-children.paginated", "GET")],
)
async def test_notion_recorded_cursor_chains(
    api: FakeAPI, http: HttpClient, chain: str, method: str
) -> None:
    files = sorted((FIXTURES / "notion").glob(f"{chain}.page-*.json"))
    assert len(files) == 3
    by_cursor: dict[str | None, Any] = {}
    cursor: str | None = None
    for f in files:
        page = json.loads(f.read_text())
        by_cursor[cursor] = page
        cursor = page["next_cursor"]

    async def handler(request: web.Request) -> Any:
        if request.method == "GET":
            return by_cursor[request.query.get("start_cursor")]
        sent = await request.json()
        return by_cursor[sent.get("start_cursor")]

    api.route(method, "/v1/chain", handler)
    notion = http.service("notion", policy=NotionPolicy(), base_url=api.url)
    paginator = BodyCursorPaginator.notion()
    pages = [
        p
        async for p in notion.paginate(
            paginator,
            "/v1/chain",
            method=method,
            json={"page_size": 2} if method == "POST" else None,
        )
    ]
    assert [len(paginator.items(p)) for p in pages] == [2, 2, 1]
    sent = [
        r.json().get("start_cursor") if method == "POST" else r.query.get("start_cursor")
        for r in api.requests
    ]
    assert sent == [None, by_cursor[None]["next_cursor"], pages[1].data["next_cursor"]]


async def test_notion_recorded_401(api: FakeAPI, http: HttpClient) -> None:
    status, hdrs = headers("notion/error-401-unauthorized.headers.json")
    api.route(
        "GET",
        "/v1/users",
        Reply(body("notion/error-401-unauthorized.json"), status=status, headers=hdrs),
    )
    with pytest.raises(AuthError, match="API token is invalid.*shared with the integration"):
        await http.service("notion", policy=NotionPolicy(), base_url=api.url).get("/v1/users")


async def test_google_recorded_503_is_retried_then_reported(api: FakeAPI, http: HttpClient) -> None:
    api.route("GET", "/drive/v3/files", Reply(body("google-drive/error-503.json"), status=503))
    with pytest.raises(TransientError, match="Service Unavailable.*gave up after 4 attempts"):
        await http.service("google", policy=GooglePolicy(), base_url=api.url).get("/drive/v3/files")
    assert len(api.requests) == 4
