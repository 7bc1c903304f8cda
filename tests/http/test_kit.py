"""The fake API kit itself: routes, request log, faults, and running in its own process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

import cfstream.http
import cfstream.testing
from cfstream.testing import FakeAPI, Fault, FaultInjector, Reply


async def test_routes_decorator_path_params_and_log(api: FakeAPI) -> None:
    @api.route("POST", "/items/{item_id}/notes")
    async def add_note(request: web.Request) -> Reply:
        payload = await request.json()
        return Reply({"item": request.match_info["item_id"], "text": payload["text"]}, status=201)

    api.route("GET", "/static", [1, 2, 3])
    async with aiohttp.ClientSession() as s:
        async with s.post(
            f"{api.url}/items/42/notes?x=1", json={"text": "hi"}, headers={"X-Test": "yes"}
        ) as r:
            assert r.status == 201 and await r.json() == {"item": "42", "text": "hi"}
        async with s.get(f"{api.url}/static") as r:
            assert await r.json() == [1, 2, 3]
        async with s.get(f"{api.url}/missing") as r:
            assert r.status == 404 and "no route for GET /missing" in (await r.json())["message"]
    first = api.requests[0]
    assert (first.method, first.path, first.query, first.json()) == (
        "POST",
        "/items/42/notes",
        {"x": "1"},
        {"text": "hi"},
    )
    assert first.headers["x-test"] == "yes"
    assert [r.path for r in api.requests_for("GET")] == ["/static", "/missing"]
    assert len(api.requests_for(path="/items/{id}/notes")) == 1
    assert api.meter.count == 3


async def test_later_route_replaces_earlier(api: FakeAPI) -> None:
    api.route("GET", "/v", {"v": 1})
    api.route("GET", "/v", {"v": 2})
    async with aiohttp.ClientSession() as s, s.get(f"{api.url}/v") as r:
        assert await r.json() == {"v": 2}


def test_random_faults_are_reproducible_with_a_seed() -> None:
    def draw(seed: int) -> list[str | None]:
        inj = FaultInjector(seed)
        inj.rate(0.5, [500, "drop"])
        return [getattr(inj.take("GET", "/x"), "kind", None) for _ in range(30)]

    assert draw(3) == draw(3)
    assert draw(3) != draw(4)
    assert set(draw(3)) == {None, "status", "drop"}


def test_fault_shorthands() -> None:
    assert Fault.coerce(503) == Fault.error(503)
    assert Fault.coerce(0.2) == Fault.latency(0.2)
    assert Fault.coerce(None).kind == "ok"
    assert Fault.coerce("drop").kind == "drop"
    with pytest.raises(ValueError, match="unknown fault 'explode'"):
        Fault.coerce("explode")


async def test_http_date_retry_after_header_shape(api: FakeAPI) -> None:
    api.route("GET", "/x", {})
    api.faults.script("GET", "/x", [Fault.rate_limit(5, http_date=True)])
    async with aiohttp.ClientSession() as s, s.get(f"{api.url}/x") as r:
        assert r.status == 429 and r.headers["Retry-After"].endswith(" GMT")


async def test_runs_in_a_separate_process(tmp_path: Path) -> None:
    (tmp_path / "bench_setup.py").write_text(
        textwrap.dedent(
            """
            def configure(api):
                api.paginate_cursor("/api/conversations.list", [{"id": i} for i in range(5)], style="slack")
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cfstream.testing.server",
        "--setup",
        "bench_setup:configure",
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), timeout=20)).decode()
        assert line.startswith("FakeAPI listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1].strip()
        async with cfstream.http.HttpClient() as http:
            slack = http.service("slack", base_url=url)
            pager = cfstream.http.BodyCursorPaginator.slack(items_path="channels")
            ids = [
                c["id"]
                async for p in slack.paginate(pager, "/api/conversations.list", params={"limit": 2})
                for c in pager.items(p)
            ]
        assert ids == [0, 1, 2, 3, 4]
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), timeout=10) == 0


@pytest.mark.parametrize("module", [cfstream.http, cfstream.testing])
def test_public_names_are_sorted_complete_and_documented(module: object) -> None:
    names = module.__all__  # type: ignore[attr-defined]
    assert isinstance(names, tuple) and list(names) == sorted(names)
    for name in names:
        obj = getattr(module, name)
        assert obj.__doc__, f"{name} has no docstring"
    public = {n for n in vars(module) if not n.startswith("_") and n[0].isupper()}
    assert public <= set(names)


async def test_the_docs_example_works() -> None:
    """The first example of docs/testing.md, verbatim."""
    from cfstream.http import BearerAuth, HttpClient, LinkHeaderPaginator
    from cfstream.testing import FakeClock

    async with FakeAPI() as api:
        api.paginate_link("/repos/o/r/issues", [{"number": n} for n in range(250)], per_page=100)
        api.faults.script(
            "GET", "/repos/o/r/issues", [503, "drop", Fault.rate_limit(2), "truncate"]
        )
        clock = FakeClock()
        async with HttpClient(clock=clock.time, sleep=clock.sleep) as http:
            gh = http.service("github", base_url=api.url, auth=BearerAuth("test-token"))
            issues = [
                i
                async for p in gh.paginate(LinkHeaderPaginator(), "/repos/o/r/issues")
                for i in p.data
            ]
        assert len(issues) == 250
        assert 2.0 in clock.sleeps
        assert api.requests[0].headers["Authorization"] == "Bearer test-token"
