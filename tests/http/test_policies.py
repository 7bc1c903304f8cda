"""Each service family's own signals: errors in 200 bodies, rate limits at odd statuses."""

from __future__ import annotations

import pytest

from cfstream.errors import (
    AuthError,
    ClientError,
    NotFoundError,
    RateLimitWaitTooLong,
    TransientError,
)
from cfstream.http import GenericPolicy, HttpClient, policy_for
from cfstream.sources.discord import DiscordPolicy
from cfstream.sources.github import GitHubPolicy
from cfstream.sources.google_drive import GooglePolicy
from cfstream.sources.linear import LinearPolicy
from cfstream.sources.notion import NotionPolicy
from cfstream.sources.slack import SlackPolicy
from cfstream.testing import FakeAPI, FakeClock, Fault, Reply

OK_SLACK = {"ok": True, "channels": []}


async def test_slack_ok_false_ratelimited_is_a_rate_limit(
    api: FakeAPI, http: HttpClient, clock: FakeClock
) -> None:
    api.route("GET", "/api/conversations.list", OK_SLACK)
    api.faults.script(
        "GET",
        "/api/conversations.list",
        [Fault.rate_limit(3, status=200, body={"ok": False, "error": "ratelimited"})],
    )
    slack = http.service("slack", policy=SlackPolicy(), base_url=api.url)
    assert (await slack.get("/api/conversations.list")).data == OK_SLACK
    assert clock.sleeps == [3.0]
    assert http.metrics.rate_limited == 1 and http.metrics.retries == {"rate_limited": 1}


async def test_slack_rate_limit_waits_per_method(
    api: FakeAPI, http: HttpClient, clock: FakeClock
) -> None:
    api.route("GET", "/api/{method}", OK_SLACK)
    api.faults.script(
        "GET",
        "/api/conversations.history",
        [Fault.rate_limit(5, body={"ok": False, "error": "ratelimited"})],
    )
    slack = http.service("slack", policy=SlackPolicy(), base_url=api.url)
    await slack.get("/api/conversations.history")
    assert clock.sleeps == [5.0]
    await slack.get("/api/users.info")  # another method: another tier, no wait
    assert clock.sleeps == [5.0]


@pytest.mark.parametrize(
    ("code", "error", "text"),
    [
        ("invalid_auth", AuthError, "check the slack token"),
        ("not_authed", AuthError, "check the slack token"),
        ("account_inactive", AuthError, "channels:history"),
        ("token_revoked", AuthError, "check the slack token"),
        ("not_in_channel", NotFoundError, "invite the app to the channel"),
        ("channel_not_found", NotFoundError, "check the channel ID"),
        ("invalid_cursor", ClientError, "slack error 'invalid_cursor'"),
    ],
)
async def test_slack_error_codes_become_typed_errors(
    api: FakeAPI, http: HttpClient, code: str, error: type[Exception], text: str
) -> None:
    api.route("GET", "/api/conversations.history", {"ok": False, "error": code})
    with pytest.raises(error, match=text) as info:
        await http.service("slack", policy=SlackPolicy(), base_url=api.url).get(
            "/api/conversations.history"
        )
    assert type(info.value) is error
    assert len(api.requests) == 1


async def test_slack_missing_scope_names_the_scope(api: FakeAPI, http: HttpClient) -> None:
    api.route(
        "GET",
        "/api/conversations.history",
        {"ok": False, "error": "missing_scope", "needed": "groups:history"},
    )
    with pytest.raises(AuthError, match="lacks scope groups:history"):
        await http.service("slack", policy=SlackPolicy(), base_url=api.url).get(
            "/api/conversations.history"
        )


async def test_slack_internal_error_is_retried(api: FakeAPI, http: HttpClient) -> None:
    api.replies("GET", "/api/x", [{"ok": False, "error": "internal_error"}, OK_SLACK])
    assert (
        await http.service("slack", policy=SlackPolicy(), base_url=api.url).get("/api/x")
    ).data == OK_SLACK


LINEAR_OK = {"data": {"viewer": {"id": "u1"}}}


async def test_linear_graphql_ratelimited_is_a_rate_limit(
    api: FakeAPI, http: HttpClient, clock: FakeClock
) -> None:
    clock.now = 1_700_000_000.0
    limited = Reply(
        {"errors": [{"message": "Rate limit exceeded", "extensions": {"code": "RATELIMITED"}}]},
        headers={
            "X-RateLimit-Requests-Remaining": "0",
            "X-RateLimit-Requests-Reset": str(int(clock.now * 1000) + 4000),
        },
    )
    api.replies("POST", "/graphql", [limited, LINEAR_OK])
    linear = http.service("linear", policy=LinearPolicy(), base_url=api.url)
    r = await linear.post("/graphql", json={"query": "{ viewer { id } }"})
    assert r.data == LINEAR_OK
    assert clock.sleeps == [pytest.approx(4.0)]
    assert http.metrics.rate_limited == 1


async def test_linear_other_graphql_errors_are_errors_not_data(
    api: FakeAPI, http: HttpClient
) -> None:
    api.route(
        "POST",
        "/graphql",
        {
            "data": {"issue": None},
            "errors": [
                {"message": "Entity not found: Issue", "extensions": {"code": "INVALID_INPUT"}}
            ],
        },
    )
    with pytest.raises(ClientError, match="Entity not found: Issue"):
        await http.service("linear", policy=LinearPolicy(), base_url=api.url).post(
            "/graphql", json={"query": "{ issue(id: 1) { id } }"}
        )
    assert len(api.requests) == 1


async def test_linear_authentication_error(api: FakeAPI, http: HttpClient) -> None:
    api.route(
        "POST",
        "/graphql",
        Reply(
            {
                "errors": [
                    {
                        "message": "Authentication required",
                        "extensions": {"code": "AUTHENTICATION_ERROR"},
                    }
                ]
            },
            status=400,
        ),
    )
    with pytest.raises(AuthError, match="check the linear API key"):
        await http.service("linear", policy=LinearPolicy(), base_url=api.url).post(
            "/graphql", json={"query": "{ viewer { id } }"}
        )


def google_error(status: int, reason: str) -> dict[str, object]:
    return {
        "error": {
            "errors": [{"domain": "usageLimits", "reason": reason, "message": reason}],
            "code": status,
            "message": reason,
        }
    }


async def test_google_403_rate_limit_exceeded_backs_off(
    api: FakeAPI, http: HttpClient, clock: FakeClock
) -> None:
    api.replies(
        "GET",
        "/drive/v3/files",
        [
            Reply(google_error(403, "userRateLimitExceeded"), status=403),
            Reply(google_error(403, "rateLimitExceeded"), status=403),
            Reply(google_error(429, "rateLimitExceeded"), status=429),
            {"files": []},
        ],
    )
    drive = http.service("google", policy=GooglePolicy(), base_url=api.url)
    assert (await drive.get("/drive/v3/files")).data == {"files": []}
    # no Retry-After from Google: exponential backoff, never below the rate-limit floor (1 s)
    assert len(clock.sleeps) == 3 and all(s >= 1.0 for s in clock.sleeps)
    assert http.metrics.rate_limited == 3


async def test_google_403_other_reason_is_auth(api: FakeAPI, http: HttpClient) -> None:
    api.route(
        "GET", "/drive/v3/files", Reply(google_error(403, "insufficientPermissions"), status=403)
    )
    with pytest.raises(AuthError, match="drive.readonly"):
        await http.service("gdrive", policy=GooglePolicy(), base_url=api.url).get("/drive/v3/files")


async def test_discord_429_body_retry_after_wins(
    api: FakeAPI, http: HttpClient, clock: FakeClock
) -> None:
    api.replies(
        "GET",
        "/channels/1/messages",
        [
            Reply(
                {"message": "You are being rate limited.", "retry_after": 0.75, "global": False},
                status=429,
                headers={
                    "Retry-After": "1",
                    "X-RateLimit-Bucket": "abc",
                    "X-RateLimit-Scope": "user",
                },
            ),
            [],
        ],
    )
    api.route("GET", "/guilds/1", {"id": "1"})
    discord = http.service("discord", policy=DiscordPolicy(), base_url=api.url)
    assert (await discord.get("/channels/1/messages")).data == []
    assert clock.sleeps == [0.75]
    await discord.get("/guilds/1")  # another bucket: not paused
    assert clock.sleeps == [0.75]


async def test_discord_global_429_pauses_every_route(
    api: FakeAPI, http: HttpClient, clock: FakeClock
) -> None:
    api.route("GET", "/guilds/1", {"id": "1"})
    api.replies(
        "GET",
        "/channels/1/messages",
        [
            Reply(
                {"message": "You are being rate limited.", "retry_after": 2.5, "global": True},
                status=429,
                headers={"X-RateLimit-Global": "true"},
            ),
            [],
        ],
    )
    discord = http.service("discord", policy=DiscordPolicy(), base_url=api.url)
    http.max_wait = 1.0  # so that the global wait fails instead of being slept through
    with pytest.raises(RateLimitWaitTooLong, match="asked to wait 2 s"):
        await discord.get("/channels/1/messages")
    http.max_wait = 300.0
    # the global gate also holds back a route in another bucket
    assert (await discord.get("/guilds/1")).data == {"id": "1"}
    assert clock.sleeps == [2.5]


async def test_notion_rate_limited_and_not_shared(
    api: FakeAPI, http: HttpClient, clock: FakeClock
) -> None:
    err = {
        "object": "error",
        "status": 429,
        "code": "rate_limited",
        "message": "You have been rate limited.",
    }
    api.replies(
        "GET",
        "/v1/pages/p1",
        [Reply(err, status=429, headers={"Retry-After": "2"}), {"object": "page"}],
    )
    api.route(
        "GET",
        "/v1/pages/p2",
        Reply(
            {
                "object": "error",
                "status": 404,
                "code": "object_not_found",
                "message": "Could not find page with ID: p2.",
            },
            status=404,
        ),
    )
    notion = http.service("notion", policy=NotionPolicy(), base_url=api.url)
    assert (await notion.get("/v1/pages/p1")).data == {"object": "page"}
    assert clock.sleeps == [2.0]
    with pytest.raises(NotFoundError, match="share the page or database with the integration"):
        await notion.get("/v1/pages/p2")


async def test_github_secondary_limit_and_scope_hint(
    api: FakeAPI, http: HttpClient, clock: FakeClock
) -> None:
    api.replies(
        "GET",
        "/repos/o/r",
        [
            Reply(
                {"message": "You have exceeded a secondary rate limit."},
                status=403,
                headers={"retry-after": "7"},
            ),
            Reply({"message": "API rate limit exceeded"}, status=403),
            {"id": 1},
        ],
    )
    api.route(
        "GET",
        "/repos/o/private",
        Reply(
            {"message": "Resource not accessible"},
            status=403,
            headers={"X-Accepted-OAuth-Scopes": "repo"},
        ),
    )
    gh = http.service("github", policy=GitHubPolicy(), base_url=api.url)
    assert (await gh.get("/repos/o/r")).data == {"id": 1}
    assert clock.sleeps == [7.0, 60.0]
    with pytest.raises(AuthError, match="check the github token and that it has scope repo"):
        await gh.get("/repos/o/private")


async def test_generic_policy_uses_status_and_retry_after(
    api: FakeAPI, http: HttpClient, clock: FakeClock
) -> None:
    api.replies("GET", "/x", [Reply({"ok": False, "error": "ratelimited"}), {"fine": True}])
    svc = http.service("acme", base_url=api.url)
    assert isinstance(svc.policy, GenericPolicy)
    assert (await svc.get("/x")).data == {"ok": False, "error": "ratelimited"}  # not Slack: data
    assert clock.sleeps == []


def test_policy_resolution() -> None:
    assert isinstance(policy_for(None, "slack"), SlackPolicy)
    assert isinstance(policy_for("SLACK"), SlackPolicy)
    assert isinstance(policy_for(None, "my-wiki"), GenericPolicy)
    custom = SlackPolicy(auth_hint="check SLACK_TOKEN in .env")
    assert policy_for(custom, "x") is custom
    assert policy_for("google").name == policy_for(None, "gdrive").name == "google"
    with pytest.raises(
        ValueError, match="unknown response policy 'jira'; use one of discord, generic"
    ):
        policy_for("jira")


async def test_custom_auth_hint(api: FakeAPI, http: HttpClient) -> None:
    api.route("GET", "/api/x", {"ok": False, "error": "invalid_auth"})
    svc = http.service(
        "slack",
        base_url=api.url,
        policy=SlackPolicy(auth_hint="set SLACK_TOKEN to a bot token"),
    )
    with pytest.raises(AuthError, match="set SLACK_TOKEN to a bot token"):
        await svc.get("/api/x")


async def test_server_error_html_page_is_transient(api: FakeAPI, http: HttpClient) -> None:
    api.route("GET", "/x", {"ok": True})
    api.faults.script("GET", "/x", ["html"] * 4)
    with pytest.raises(TransientError, match="HTML error page"):
        await http.service("svc", base_url=api.url).get("/x")


def test_google_per_file_403_is_a_client_error_not_an_auth_error() -> None:
    import orjson
    from multidict import CIMultiDict, CIMultiDictProxy

    from cfstream.errors import AuthError, ClientError
    from cfstream.http import RawResponse

    def judge(reason: str) -> type:
        body = orjson.dumps(
            {
                "error": {
                    "errors": [{"domain": "global", "reason": reason, "message": "no"}],
                    "code": 403,
                }
            }
        )
        raw = RawResponse(
            "GET",
            "https://www.googleapis.com/drive/v3/files/x/export",
            403,
            CIMultiDictProxy(CIMultiDict()),
            body,
        )
        verdict = GooglePolicy().judge(raw, service="google_drive", now=0)
        assert verdict.problem is not None
        return verdict.problem.kind

    assert judge("exportSizeLimitExceeded") is ClientError
    assert judge("fileNotDownloadable") is ClientError
    assert judge("insufficientFilePermissions") is AuthError
