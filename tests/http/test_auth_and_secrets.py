"""The token goes only to the service's own origin and never shows in logs, errors or reprs."""

from __future__ import annotations

import logging
import traceback

import pytest
from aiohttp import web

from cfstream.errors import HTTPError
from cfstream.http import (
    BearerAuth,
    HeaderAuth,
    HttpClient,
    LinkHeaderPaginator,
    NoAuth,
    same_origin,
)
from cfstream.secrets import Secret
from cfstream.testing import FakeAPI, FakeClock, Fault, Reply

TOKEN = "cfs-tok-SEKRIT-9f8e7d6c5b4a"


async def test_next_link_to_another_origin_is_fetched_from_the_own_origin_with_auth(
    api: FakeAPI, other_api: FakeAPI, http: HttpClient
) -> None:
    # a GitHub Enterprise behind a proxy names its internal host in the Link header
    api.paginate_link(
        "/repos/o/r/issues", [{"n": i} for i in range(6)], per_page=2, next_base=other_api.url
    )
    other_api.paginate_link("/repos/o/r/issues", [{"n": i} for i in range(6)], per_page=2)
    gh = http.service("github", base_url=api.url, auth=BearerAuth(Secret(TOKEN)))
    got = [
        i
        async for page in gh.paginate(LinkHeaderPaginator(), "/repos/o/r/issues")
        for i in page.data
    ]
    assert got == [{"n": i} for i in range(6)]
    assert other_api.requests == []  # the other origin received nothing, no token above all
    assert [r.headers.get("Authorization") for r in api.requests] == [f"Bearer {TOKEN}"] * 3
    assert [r.query for r in api.requests[1:]] == [
        {"per_page": "2", "page": "2"},
        {"per_page": "2", "page": "3"},
    ]


async def test_a_pagination_started_on_another_origin_follows_its_links_there(
    api: FakeAPI, other_api: FakeAPI, http: HttpClient
) -> None:
    other_api.paginate_link("/public/items", [{"n": i} for i in range(4)], per_page=2)
    svc = http.service("svc", base_url=api.url, auth=BearerAuth(Secret(TOKEN)))
    pages = svc.paginate(LinkHeaderPaginator(), f"{other_api.url}/public/items")
    got = [i async for page in pages for i in page.data]
    assert got == [{"n": i} for i in range(4)]
    assert api.requests == [] and len(other_api.requests) == 2
    assert all("Authorization" not in r.headers for r in other_api.requests)


@pytest.mark.parametrize(
    ("base", "link", "moved"),
    [
        # the link's path sits under base_url's path: only the origin changes
        (
            "https://ghe.example.com/api/v3",
            "http://ghe.internal:8080/api/v3/repositories/7/issues?page=2&per_page=100",
            "https://ghe.example.com/api/v3/repositories/7/issues?page=2&per_page=100",
        ),
        # a proxy mounted under /ghe strips that prefix: it is put back
        (
            "https://proxy.example.com/ghe/api/v3",
            "http://ghe.internal/api/v3/repositories/7/issues?page=2",
            "https://proxy.example.com/ghe/api/v3/repositories/7/issues?page=2",
        ),
        # a proxy that maps base_url's path onto the backend's root
        (
            "https://proxy.example.com/api/v3/",
            "http://10.0.0.5/repositories/7/issues?page=2",
            "https://proxy.example.com/api/v3/repositories/7/issues?page=2",
        ),
        (
            "https://api.github.com",
            "https://api.github.com/x?page=2",
            "https://api.github.com/x?page=2",
        ),
        ("https://api.github.com", "/repositories/7?page=2", "/repositories/7?page=2"),
        ("https://api.github.com", "http://api.github.com/x", "https://api.github.com/x"),
    ],
)
async def test_own_origin_moves_foreign_links_onto_the_service(
    http: HttpClient, base: str, link: str, moved: str
) -> None:
    assert http.service("github", base_url=base).own_origin(link) == moved


async def test_cross_origin_redirect_drops_authorization(
    api: FakeAPI, other_api: FakeAPI, http: HttpClient
) -> None:
    api.route(
        "GET",
        "/download",
        lambda _r: web.Response(status=302, headers={"Location": f"{other_api.url}/blob?sig=abc"}),
    )
    api.route(
        "GET", "/same", lambda _r: web.Response(status=307, headers={"Location": "/download"})
    )
    other_api.route("GET", "/blob", {"content": "ok"})
    svc = http.service("github", base_url=api.url, auth=BearerAuth(TOKEN))
    r = await svc.get("/same")
    assert r.data == {"content": "ok"}
    assert [q.headers.get("Authorization") for q in api.requests] == [f"Bearer {TOKEN}"] * 2
    assert "Authorization" not in other_api.requests[0].headers


async def test_same_host_other_port_or_scheme_is_another_origin() -> None:
    assert same_origin("https://api.github.com/x", "https://api.github.com:443/y")
    assert not same_origin("https://api.github.com", "http://api.github.com")
    assert not same_origin("http://127.0.0.1:8000", "http://127.0.0.1:8001")
    assert not same_origin("https://api.github.com", "https://uploads.github.com")


async def test_absolute_url_to_the_own_origin_keeps_auth(api: FakeAPI, http: HttpClient) -> None:
    api.route("GET", "/x", {"ok": True})
    svc = http.service(
        "svc", base_url=api.url + "/api/v10", auth=HeaderAuth("Authorization", TOKEN)
    )
    await svc.get(f"{api.url}/x")
    assert api.requests[0].headers["Authorization"] == TOKEN


async def test_base_url_path_prefix_is_kept(api: FakeAPI, http: HttpClient) -> None:
    api.route("GET", "/api/v10/channels/{cid}", lambda req: {"id": req.match_info["cid"]})
    svc = http.service("discord", base_url=api.url + "/api/v10/", auth=NoAuth())
    assert (await svc.get("/channels/7")).data == {"id": "7"}
    assert "Authorization" not in api.requests[0].headers


async def test_token_never_appears_in_logs_errors_or_reprs(
    api: FakeAPI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    clock = FakeClock()
    api.route("GET", "/ok", {"fine": True})
    api.route("GET", "/denied", Reply({"message": f"Bad credentials for {TOKEN}"}, status=401))
    api.route("GET", "/flaky", {"fine": True})
    api.faults.script("GET", "/flaky", ["drop", "truncate", 503, "html", "garbage"] * 2)
    api.route("GET", "/limited", {"fine": True})
    api.faults.script("GET", "/limited", [Fault.rate_limit(1), Fault.rate_limit(86400)])
    texts: list[str] = []
    async with HttpClient(clock=clock.time, sleep=clock.sleep) as http:
        svc = http.service("github", base_url=api.url, auth=BearerAuth(TOKEN))
        texts += [repr(http), repr(svc), repr(svc.auth), str(svc.auth)]
        r = await svc.get("/ok", params={"access_token": TOKEN})
        texts += [repr(r)]
        for path in ("/denied", "/flaky", "/limited", f"/ok?token={TOKEN}&x=1"):
            try:
                await svc.get(path, params={"token": TOKEN} if path == "/flaky" else None)
            except HTTPError as exc:
                texts += [
                    str(exc),
                    repr(exc),
                    str(exc.url),
                    "".join(traceback.format_exception(exc)),
                ]
        try:
            await svc.get("/denied?key=1")
        except HTTPError as exc:
            texts.append("".join(traceback.format_exception(exc)))
    texts += [rec.getMessage() for rec in caplog.records]
    texts += [caplog.text, repr(http.metrics.to_dict())]
    assert len(caplog.records) > 10  # requests, retries and waits were logged
    assert any("401" in t for t in texts) and any("max_wait" in t for t in texts)
    leaks = [t for t in texts if TOKEN in t]
    assert leaks == []
    # the server did get it, so the test would notice if auth were simply missing
    assert api.requests[0].headers["Authorization"] == f"Bearer {TOKEN}"


def test_auth_reprs_hide_the_secret() -> None:
    for auth in (
        BearerAuth(TOKEN),
        BearerAuth(TOKEN, scheme="Bot"),
        HeaderAuth("X-Api-Key", TOKEN),
    ):
        assert TOKEN not in repr(auth) and TOKEN not in str(auth)
        assert TOKEN in "".join(auth.headers().values())
    assert BearerAuth("a-token-1").fingerprint() != BearerAuth("a-token-2").fingerprint()


async def test_credentials_in_plain_headers_are_also_kept_home(
    api: FakeAPI, other_api: FakeAPI, http: HttpClient
) -> None:
    api.route(
        "GET",
        "/go",
        lambda _r: web.Response(status=302, headers={"Location": f"{other_api.url}/x"}),
    )
    other_api.route("GET", "/x", {"ok": True})
    svc = http.service(
        "svc",
        base_url=api.url,
        headers={"Authorization": f"token {TOKEN}", "X-Client": "cfstream"},
        auth=HeaderAuth("X-Api-Key", TOKEN),
    )
    await svc.get("/go")
    assert api.requests[0].headers["X-Api-Key"] == TOKEN
    sent = other_api.requests[0].headers
    assert (
        "Authorization" not in sent and "X-Api-Key" not in sent and sent["X-Client"] == "cfstream"
    )
