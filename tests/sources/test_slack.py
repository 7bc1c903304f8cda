"""SlackSource against FakeSlack on 127.0.0.1, into real Lance datasets."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import lance
import orjson
import pytest
from aiohttp import web

from cfstream.contract.deadletter import read_dead_letters
from cfstream.contract.report import RunReport
from cfstream.errors import AuthError, ConfigError, NotFoundError
from cfstream.http import HttpClient, RetryPolicy
from cfstream.records import record_uuid
from cfstream.sinks import LanceSink
from cfstream.sources.slack import SlackSource
from cfstream.testing import FakeAPI, Fault, RateMeter
from cfstream.testing.fakes.slack import FakeSlack

TOKEN = "xoxb-test-SEKRIT-7f3a9c21e5"
FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "slack"
FAST = {
    "history_rate_per_minute": 60_000,
    "list_rate_per_minute": 60_000,
    "users_rate_per_minute": 60_000,
    "page_size": 4,
}


@pytest.fixture
async def api() -> AsyncIterator[FakeAPI]:
    async with FakeAPI() as server:
        yield server


@pytest.fixture
def fake(api: FakeAPI) -> FakeSlack:
    f = FakeSlack(token=TOKEN, messages_per_channel=10)
    f.mount(api)
    return f


def make_source(fake: FakeSlack, api: FakeAPI, **options: Any) -> SlackSource:
    opts = {**fake.demo_config(api.url), **FAST, **options}
    return SlackSource(**opts)


async def sync(source: SlackSource, path: Path) -> RunReport:
    retry = RetryPolicy(max_tries=4, base=0.01, max_backoff=0.05, jitter=False)
    async with HttpClient(timeout=5, retry=retry) as http:
        return await (source | LanceSink(str(path))).run(http=http)


def rows(path: Path) -> dict[str, dict[str, Any]]:
    table = lance.dataset(str(path)).to_table()
    return {r["uuid"]: r for r in table.to_pylist()}


def hashes(path: Path) -> list[tuple[str, str]]:
    t = lance.dataset(str(path)).to_table(columns=["uuid", "content_hash"]).to_pylist()
    return sorted((r["uuid"], r["content_hash"]) for r in t)


def meta(row: dict[str, Any]) -> dict[str, str]:
    return {m["key"]: m["value"] for m in row["custom_metadata"]}


def expected_ids(fake: FakeSlack, channels: list[str] | None = None) -> set[str]:
    out = set()
    for cid in channels or list(fake.channels):
        out.add(f"channel:{cid}")
        out.update(f"{cid}:{m['ts']}" for m in fake.messages[cid])
    return out


async def test_full_sync_pages_threads_and_relationships(
    api: FakeAPI, fake: FakeSlack, tmp_path: Path
) -> None:
    report = await sync(make_source(fake, api), tmp_path / "kb.lance")
    assert report.ok, report.to_dict()
    got = rows(tmp_path / "kb.lance")
    assert {r["source_id"] for r in got.values()} == expected_ids(fake)

    # several history pages per channel (page_size 4), users looked up once each
    history = api.requests_for("GET", "/slack/api/conversations.history")
    assert len(history) >= 3 * 3
    user_calls = [r.query["user"] for r in api.requests_for("GET", "/slack/api/users.info")]
    assert len(user_calls) == len(set(user_calls))
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in api.requests)

    headers = [r for r in got.values() if r["record_type"] == "collection_header"]
    assert sorted(h["title"] for h in headers) == ["#engineering", "#general", "#incidents"]
    for cid in fake.channels:
        header_uuid = record_uuid("slack", f"channel:{cid}")
        assert header_uuid in got
        members = [
            r for r in got.values() if r["collection_id"] == cid and r["uuid"] != header_uuid
        ]
        assert members
        for r in members:
            assert {"type": "member_of", "id": header_uuid} in [
                {"type": rel["type"], "id": rel["id"]} for rel in r["relationships"]
            ]

    # a thread: replies point at the parent, the parent at each reply
    cid = "C01GENERAL"
    parent = next(m for m in fake.top_level(cid) if m.get("reply_count"))
    replies = fake.replies(cid, parent["ts"])
    parent_row = got[record_uuid("slack", f"{cid}:{parent['ts']}")]
    children = {rel["id"] for rel in parent_row["relationships"] if rel["type"] == "child"}
    assert children == {record_uuid("slack", f"{cid}:{r['ts']}") for r in replies}
    for r in replies:
        row = got[record_uuid("slack", f"{cid}:{r['ts']}")]
        parents = [rel["id"] for rel in row["relationships"] if rel["type"] == "parent"]
        assert parents == [parent_row["uuid"]]
        assert meta(row)["slack_thread_ts"] == parent["ts"]
        assert "reply" in row["tags"]

    # mapping: author names, mentions, permalinks, timestamps, metadata
    first = fake.top_level(cid)[0]
    row = got[record_uuid("slack", f"{cid}:{first['ts']}")]
    assert row["author"] == fake.users[first["user"]]["real_name"]
    assert row["collection"] == "#general"
    assert row["title"].startswith("#general: ")
    assert row["source_url"] == (
        f"https://cfstream-demo.slack.com/archives/{cid}/p{first['ts'].replace('.', '')}"
    )
    assert meta(row)["slack_ts"] == first["ts"]
    assert meta(row)["slack_user_id"] == first["user"]
    assert row["source_updated_at"].timestamp() == pytest.approx(float(first["ts"]))
    mention = next(m for m in fake.top_level(cid) if "<@" in m["text"])
    mrow = got[record_uuid("slack", f"{cid}:{mention['ts']}")]
    assert "<@" not in mrow["text_content"] and "cc @" in mrow["text_content"]
    link = next(m for m in fake.top_level(cid) if "|PR #42>" in m["text"])
    assert (
        "PR #42 (https://example.com/pr/42)"
        in got[record_uuid("slack", f"{cid}:{link['ts']}")]["text_content"]
    )


async def test_incremental_fetches_only_changes_and_equals_full_sync(
    api: FakeAPI, fake: FakeSlack, tmp_path: Path
) -> None:
    inc = tmp_path / "inc.lance"
    await sync(make_source(fake, api), inc)

    cid = "C01GENERAL"
    tops = fake.top_level(cid)
    threads = [m for m in tops if m.get("reply_count")]
    plain = [m for m in tops if not m.get("reply_count")]
    # adds, edits, deletions
    new_ts = fake.add_message(cid, "A brand new message", user="U02GRACE")
    fake.add_message(cid, "A new reply", user="U03LINUS", thread_ts=threads[0]["ts"])
    fake.add_message(
        cid, "First reply of a new thread", user="U04BARBARA", thread_ts=plain[-1]["ts"]
    )
    fake.edit_message(cid, plain[-2]["ts"], "This text was edited")
    fake.delete_message(cid, plain[-3]["ts"])
    doomed_reply = fake.replies(cid, threads[1]["ts"])[0]["ts"]
    fake.delete_message(cid, doomed_reply)
    fake.delete_message(cid, threads[-1]["ts"])  # a thread parent: its replies go too
    fake.edit_message("C02ENGINEER", fake.top_level("C02ENGINEER")[-1]["ts"], "Edited elsewhere")

    api.clear()
    report = await sync(make_source(fake, api), inc)
    assert report.ok, report.to_dict()
    stats = report.sources["slack"]
    # only the new and edited messages (and parents whose threads changed) are written
    assert 0 < stats.fetched <= 10
    assert stats.skipped_unchanged > 0
    assert stats.tombstones >= 4
    for r in api.requests_for("GET", "/slack/api/conversations.history"):
        assert "oldest" in r.query, "an incremental sync must use the saved cursor"
    refetched = {r.query["ts"] for r in api.requests_for("GET", "/slack/api/conversations.replies")}
    assert refetched == {threads[0]["ts"], threads[1]["ts"], plain[-1]["ts"]}

    full = tmp_path / "full.lance"
    await sync(make_source(fake, api), full)
    assert hashes(inc) == hashes(full)
    got = rows(inc)
    assert {r["source_id"] for r in got.values()} == expected_ids(fake)
    assert got[record_uuid("slack", f"{cid}:{new_ts}")]["text_content"] == "A brand new message"
    edited = got[record_uuid("slack", f"{cid}:{plain[-2]['ts']}")]
    assert edited["text_content"] == "This text was edited"
    assert meta(edited)["slack_edited_ts"] == fake.find(cid, plain[-2]["ts"])["edited"]["ts"]

    # a third sync with nothing changed writes nothing
    api.clear()
    again = await sync(make_source(fake, api), inc)
    assert again.sources["slack"].fetched == 0 and again.sources["slack"].tombstones == 0
    assert api.requests_for("GET", "/slack/api/conversations.replies") == []


async def test_rate_limit_and_server_error_mid_sync_recover(
    api: FakeAPI, fake: FakeSlack, tmp_path: Path
) -> None:
    clean = tmp_path / "clean.lance"
    await sync(make_source(fake, api), clean)
    ratelimited = Fault.rate_limit(0.05, body={"ok": False, "error": "ratelimited"})
    api.faults.script("GET", "/slack/api/conversations.history", [None, ratelimited, 500])
    api.faults.script("GET", "/slack/api/conversations.replies", [503])
    api.faults.script("GET", "/slack/api/users.info", [ratelimited])
    faulty = tmp_path / "faulty.lance"
    report = await sync(make_source(fake, api), faulty)
    assert report.ok, report.to_dict()
    assert api.faults.pending() == 0
    assert report.http["rate_limited"] >= 2
    assert report.http["retries"].get("http_500") == 1
    assert hashes(faulty) == hashes(clean)


async def test_ratelimited_in_a_200_body_is_honoured(
    api: FakeAPI, fake: FakeSlack, tmp_path: Path
) -> None:
    api.faults.script(
        "GET",
        "/slack/api/conversations.history",
        [Fault.rate_limit(0.05, status=200, body={"ok": False, "error": "ratelimited"})],
    )
    report = await sync(make_source(fake, api, channels=["general"]), tmp_path / "kb.lance")
    assert report.ok and report.http["rate_limited"] == 1
    assert {r["source_id"] for r in rows(tmp_path / "kb.lance").values()} == expected_ids(
        fake, ["C01GENERAL"]
    )


async def test_configured_history_rate_is_respected(
    api: FakeAPI, fake: FakeSlack, tmp_path: Path
) -> None:
    # 60/min: a burst of 6, then one request per second on conversations.history/replies
    source = make_source(fake, api, channels=["general"], history_rate_per_minute=60, page_size=2)
    await sync(source, tmp_path / "kb.lance")
    calls = api.requests_for("GET", "/slack/api/conversations.history") + api.requests_for(
        "GET", "/slack/api/conversations.replies"
    )
    times = sorted(r.time for r in calls)
    assert len(times) >= 8
    assert times[-1] - times[0] >= (len(times) - 6) * 1.0 * 0.9
    meter = RateMeter()
    for t in times:
        meter.record(t)
    meter.assert_rate_at_most(6 + 1, per=1.0)


async def test_malformed_message_goes_to_dead_letters(
    api: FakeAPI, fake: FakeSlack, tmp_path: Path
) -> None:
    fake.add_raw_message("C01GENERAL", {"type": "message", "text": "no ts here", "user": "U01ADA"})
    bad_ts = fake.add_message("C01GENERAL", "will be broken")
    broken = fake.find("C01GENERAL", bad_ts)
    assert broken is not None
    broken["text"] = {"not": "text"}
    path = tmp_path / "kb.lance"
    report = await sync(make_source(fake, api, channels=["general"]), path)
    assert report.dead_lettered == 2
    letters = read_dead_letters(path / "_cfstream" / "dead-letters.jsonl")
    assert len(letters) == 2
    assert all(letter["stage"] == "source" and letter["source"] == "slack" for letter in letters)
    errors = " ".join(letter["error"] for letter in letters)
    assert "'ts'" in errors and "'text' must be a string" in errors
    assert TOKEN not in orjson.dumps(letters).decode()
    good = {
        f"C01GENERAL:{m['ts']}"
        for m in fake.messages["C01GENERAL"]
        if isinstance(m.get("ts"), str) and isinstance(m.get("text"), str)
    }
    got = {r["source_id"] for r in rows(path).values()}
    assert got == good | {"channel:C01GENERAL"}


async def test_invalid_token_fails_with_a_clear_message(
    api: FakeAPI, fake: FakeSlack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = "xoxb-wrong-SEKRIT-0000111122"
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AuthError) as info:
        await sync(make_source(fake, api, token=bad), tmp_path / "kb.lance")
    message = str(info.value)
    assert "invalid_auth" in message and "SlackSource(token=...)" in message
    assert "channels:history" in message
    assert bad not in message and bad not in caplog.text
    assert [r.path for r in api.requests] == ["/slack/api/auth.test"]


async def test_channel_the_app_is_not_in_says_what_to_do(
    api: FakeAPI, fake: FakeSlack, tmp_path: Path
) -> None:
    cid = fake.add_channel("secret-club", is_member=False)
    with pytest.raises(NotFoundError, match="invite the app"):
        await sync(make_source(fake, api, channels=[cid]), tmp_path / "kb.lance")


async def test_unknown_channel_name_and_bad_options(
    api: FakeAPI, fake: FakeSlack, tmp_path: Path
) -> None:
    with pytest.raises(Exception, match="'nope' is not among"):
        await sync(make_source(fake, api, channels=["nope"]), tmp_path / "kb.lance")
    with pytest.raises(ConfigError, match="either `channels`"):
        SlackSource(token=TOKEN)
    with pytest.raises(ConfigError, match="page_size") as info:
        SlackSource(token=TOKEN, channels=["general"], page_size=0)
    assert TOKEN not in str(info.value)


async def test_all_channels_lists_public_and_private(
    api: FakeAPI, fake: FakeSlack, tmp_path: Path
) -> None:
    fake.add_channel("old-stuff", archived=True)
    opts = {**fake.demo_config(api.url), **FAST}
    opts.pop("channels")
    report = await sync(SlackSource(all_channels=True, **opts), tmp_path / "kb.lance")
    assert report.ok
    assert report.sources["slack"].partitions == 3  # the archived channel is left out
    assert {r["source_id"] for r in rows(tmp_path / "kb.lance").values()} == expected_ids(
        fake, ["C01GENERAL", "C02ENGINEER", "G03INCIDENT"]
    )
    listed = api.requests_for("GET", "/slack/api/conversations.list")
    assert listed and listed[0].query["types"] == "public_channel,private_channel"


def _fixture(name: str) -> Any:
    return orjson.loads((FIXTURES / name).read_bytes())


async def test_replays_the_real_slack_payloads(api: FakeAPI, tmp_path: Path) -> None:
    if not FIXTURES.is_dir():
        pytest.skip("../shared/fixtures/slack is not present")
    pages = {
        None: _fixture("conversations.list.cursor-page-1.json"),
        "has_page2": _fixture("conversations.list.cursor-page-2.json"),
        "has_page3": _fixture("conversations.list.last-page.json"),
    }
    history = _fixture("conversations.history.json")
    replies = _fixture("conversations.replies.json")
    parent = replies["messages"][0]
    history["messages"].append(parent)
    end = {"ok": True, "messages": [], "has_more": False, "response_metadata": {"next_cursor": ""}}

    def by_cursor(first: Any, rest: Any) -> Any:
        def handler(request: web.Request) -> Any:
            return rest if request.query.get("cursor") else first

        return handler

    api.route("GET", "/api/auth.test", {"ok": True, "url": "https://example.slack.com/"})
    api.route("GET", "/api/conversations.list", lambda r: pages[r.query.get("cursor")])
    api.route("GET", "/api/conversations.history", by_cursor(history, end))
    api.route(
        "GET", "/api/conversations.replies", by_cursor(replies, {**end, "messages": [parent]})
    )
    api.route("GET", "/api/users.info", _fixture("users.info.json"))
    source = SlackSource(token=TOKEN, channels=["#random"], base_url=f"{api.url}/api", **FAST)
    path = tmp_path / "kb.lance"
    report = await sync(source, path)
    assert report.ok, report.to_dict()
    got = {r["source_id"]: r for r in rows(path).values()}
    cid = "C222"
    expected = {f"channel:{cid}"} | {
        f"{cid}:{m['ts']}" for m in history["messages"] + replies["messages"]
    }
    assert set(got) == expected
    assert [r.query.get("cursor") for r in api.requests_for("GET", "/api/conversations.list")] == [
        None,
        "has_page2",
        "has_page3",
    ]
    first = got[f"{cid}:1512085950.000216"]
    assert first["text_content"] == "I find you punny and would like to smell your nose letter"
    assert first["author"] == "Egon Spengler"
    assert first["created_at"] == "2017-11-30"
    assert first["collection"] == "#random"
    parent_uuid = record_uuid("slack", f"{cid}:{parent['ts']}")
    for m in replies["messages"][1:]:
        rels = got[f"{cid}:{m['ts']}"]["relationships"]
        assert [r["id"] for r in rels if r["type"] == "parent"] == [parent_uuid]
    header = got[f"channel:{cid}"]
    assert header["record_type"] == "collection_header"
    assert "non-work banter" in header["text_content"]

    api.route("GET", "/api/auth.test", _fixture("error.invalid_auth.json"))
    with pytest.raises(AuthError, match="invalid_auth"):
        await sync(source, tmp_path / "other.lance")


async def test_a_failed_sync_resumes_mid_pass_and_matches_a_full_sync(
    api: FakeAPI, fake: FakeSlack, tmp_path: Path
) -> None:
    path = tmp_path / "kb.lance"
    history = "/slack/api/conversations.history"
    api.faults.script(
        "GET", history, [None, None, Fault.error(400, {"ok": False, "error": "boom"})]
    )
    with pytest.raises(Exception, match="boom"):
        await sync(make_source(fake, api, channels=["general"]), path)
    done_before = {r["source_id"] for r in rows(path).values()}
    assert 1 < len(done_before) < len(expected_ids(fake, ["C01GENERAL"]))

    api.clear()
    report = await sync(make_source(fake, api, channels=["general"]), path)
    assert report.ok
    resumed = api.requests_for("GET", history)
    assert resumed and all("latest" in r.query for r in resumed), "resume below the last page done"
    full = tmp_path / "full.lance"
    await sync(make_source(fake, api, channels=["general"]), full)
    assert hashes(path) == hashes(full)
