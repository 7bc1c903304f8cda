"""DiscordSource against FakeDiscord on 127.0.0.1, into real Lance datasets."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import lance
import orjson
import pytest

from cfstream.cli import EXIT_OK, EXIT_PARTIAL, exit_code
from cfstream.contract.deadletter import read_dead_letters
from cfstream.contract.report import RunReport
from cfstream.errors import AuthError, ConfigError, RateLimitWaitTooLong, SourceError
from cfstream.http import HttpClient, RetryPolicy
from cfstream.records import record_uuid
from cfstream.sinks import LanceSink
from cfstream.sources.discord import DiscordSource, snowflake_at, snowflake_time
from cfstream.testing import FakeAPI, Fault, Reply
from cfstream.testing.fakes.discord import FakeDiscord

TOKEN = "discord-bot-SEKRIT.7f3a9c21e5.token"
FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "discord"
MESSAGES = "/discord/api/v10/channels/{id}/messages"


@pytest.fixture
async def api() -> AsyncIterator[FakeAPI]:
    async with FakeAPI() as server:
        yield server


@pytest.fixture
def fake(api: FakeAPI) -> FakeDiscord:
    f = FakeDiscord(token=TOKEN, messages_per_channel=30)
    f.mount(api)
    return f


def make_source(fake: FakeDiscord, api: FakeAPI, **options: Any) -> DiscordSource:
    opts = {**fake.demo_config(api.url), "page_size": 7, "rate_per_second": 1000, **options}
    return DiscordSource(**opts)


async def sync(source: DiscordSource, path: Path, **client: Any) -> RunReport:
    retry = RetryPolicy(max_tries=4, base=0.01, max_backoff=0.05, jitter=False)
    async with HttpClient(timeout=5, retry=retry, **client) as http:
        return await (source | LanceSink(str(path))).run(http=http)


def rows(path: Path) -> dict[str, dict[str, Any]]:
    return {r["source_id"]: r for r in lance.dataset(str(path)).to_table().to_pylist()}


def hashes(path: Path) -> list[tuple[str, str]]:
    t = lance.dataset(str(path)).to_table(columns=["uuid", "content_hash"]).to_pylist()
    return sorted((r["uuid"], r["content_hash"]) for r in t)


def meta(row: dict[str, Any]) -> dict[str, str]:
    return {m["key"]: m["value"] for m in row["custom_metadata"]}


def rels(row: dict[str, Any], kind: str) -> list[str]:
    return [r["id"] for r in row["relationships"] if r["type"] == kind]


def expected_ids(fake: FakeDiscord) -> set[str]:
    out = {f"channel:{c}" for c in fake.text_channels()} | {f"thread:{t}" for t in fake.threads}
    for cid in [*fake.text_channels(), *fake.threads]:
        out |= {f"{cid}:{m['id']}" for m in fake.messages[cid]}
    return out


def uid(source_id: str) -> str:
    return record_uuid("discord", source_id)


async def test_full_sync_channels_threads_and_relationships(
    api: FakeAPI, fake: FakeDiscord, tmp_path: Path
) -> None:
    report = await sync(make_source(fake, api), tmp_path / "kb.lance")
    assert report.ok, report.to_dict()
    got = rows(tmp_path / "kb.lance")
    assert set(got) == expected_ids(fake)
    assert any(t["thread_metadata"]["archived"] for t in fake.threads.values())
    assert report.sources["discord"].partitions == 2 + len(fake.threads)

    calls = api.requests_for("GET", MESSAGES)
    assert len(calls) >= 2 * 5  # 30 messages per channel, 7 a page
    assert all("after" in r.query and "before" not in r.query for r in calls)
    assert all(r.headers["Authorization"] == f"Bot {TOKEN}" for r in api.requests)

    cid = fake.text_channels()[0]
    header = got[f"channel:{cid}"]
    assert header["record_type"] == "collection_header" and header["title"] == "#general"
    for m in fake.messages[cid]:
        row = got[f"{cid}:{m['id']}"]
        assert rels(row, "member_of") == [uid(f"channel:{cid}")]
        assert row["collection"] == "#general"
        assert row["created_at"] == m["timestamp"][:10]
        if m.get("message_reference"):
            target = f"{cid}:{m['message_reference']['message_id']}"
            assert rels(row, "reference") == [uid(target)] and "reply" in row["tags"]
        if m.get("attachments"):
            stored = orjson.loads(meta(row)["discord_attachments"])
            assert [a["filename"] for a in stored] == [a["filename"] for a in m["attachments"]]
            assert stored[0]["url"].startswith("https://cdn.discordapp.com/attachments/")
        if m.get("mentions"):
            assert "<@" not in row["text_content"] and "@" in row["text_content"]
    first = fake.messages[cid][0]
    assert got[f"{cid}:{first['id']}"]["author"] == "Ada"
    assert got[f"{cid}:{first['id']}"]["source_url"].endswith(
        f"/channels/{fake.guild_id}/{cid}/{first['id']}"
    )

    # a thread: its own header and partition; messages point at the starter message
    tid, thread = next(iter(fake.threads.items()))
    parent = thread["parent_id"]
    starter = uid(f"{parent}:{tid}")
    theader = got[f"thread:{tid}"]
    assert theader["record_type"] == "collection_header"
    assert rels(theader, "parent") == [starter]
    assert rels(theader, "member_of") == [uid(f"channel:{parent}")]
    assert rels(got[f"{parent}:{tid}"], "related") == [uid(f"thread:{tid}")]
    assert fake.messages[tid]
    for m in fake.messages[tid]:
        row = got[f"{tid}:{m['id']}"]
        assert rels(row, "parent") == [starter]
        assert rels(row, "member_of") == [uid(f"thread:{tid}")]
        assert row["collection"] == f"#general / {thread['name']}"


async def test_incremental_fetches_only_changes_and_equals_full_sync(
    api: FakeAPI, fake: FakeDiscord, tmp_path: Path
) -> None:
    inc = tmp_path / "inc.lance"
    await sync(make_source(fake, api), inc)
    cid = fake.text_channels()[0]
    other = fake.text_channels()[1]
    tid = next(iter(fake.threads))
    new = fake.add_message(cid, "A brand new message", author=2)
    fake.add_message(tid, "A new thread reply", author=1)
    edited = fake.messages[cid][-3]["id"]
    fake.edit_message(cid, edited, "Edited text")
    gone = fake.messages[other][-2]["id"]
    fake.delete_message(other, gone)

    api.clear()
    report = await sync(make_source(fake, api), inc)
    assert report.ok, report.to_dict()
    stats = report.sources["discord"]
    assert stats.fetched == 3  # the new message, the thread reply, the edit
    assert stats.tombstones == 1
    assert stats.skipped_unchanged > 0
    for r in api.requests_for("GET", MESSAGES):
        assert int(r.query["after"]) > 0, "an incremental sync must start after the cursor"

    full = tmp_path / "full.lance"
    await sync(make_source(fake, api), full)
    assert hashes(inc) == hashes(full)
    got = rows(inc)
    assert set(got) == expected_ids(fake)
    assert got[f"{cid}:{new}"]["text_content"] == "A brand new message"
    assert got[f"{cid}:{edited}"]["text_content"] == "Edited text"
    assert meta(got[f"{cid}:{edited}"])["discord_edited_timestamp"]
    assert f"{other}:{gone}" not in got


async def test_rate_limits_and_server_errors_mid_sync_recover(
    api: FakeAPI, fake: FakeDiscord, tmp_path: Path
) -> None:
    clean = tmp_path / "clean.lance"
    await sync(make_source(fake, api), clean)
    user_429 = Fault.rate_limit(
        None,
        body={"message": "You are being rate limited.", "retry_after": 0.05, "global": False},
        headers={"X-RateLimit-Scope": "user", "X-RateLimit-Bucket": "abcd1234"},
    )
    global_429 = Fault.rate_limit(
        None,
        body={"message": "You are being rate limited.", "retry_after": 0.05, "global": True},
        headers={"X-RateLimit-Global": "true", "X-RateLimit-Scope": "global"},
    )
    api.faults.script("GET", MESSAGES, [None, user_429, 500, None, global_429, 502])
    faulty = tmp_path / "faulty.lance"
    started = time.monotonic()
    report = await sync(make_source(fake, api), faulty)
    assert report.ok, report.to_dict()
    assert api.faults.pending() == 0
    assert report.http["rate_limited"] == 2
    assert report.http["retries"]["http_500"] == 1 and report.http["retries"]["http_502"] == 1
    assert hashes(faulty) == hashes(clean)
    assert time.monotonic() - started < 10


async def test_bucket_headers_are_followed(tmp_path: Path) -> None:
    async with FakeAPI() as api:
        # each channel's messages bucket allows 3 requests per 0.15 s; 40 messages at 5 a page
        fake = FakeDiscord(
            token=TOKEN, messages_per_channel=40, bucket_limit=3, bucket_reset_after=0.15
        )
        fake.mount(api)
        started = time.monotonic()
        report = await sync(make_source(fake, api, page_size=5), tmp_path / "kb.lance")
        took = time.monotonic() - started
        pages = api.requests_for("GET", MESSAGES)
    assert report.ok
    assert fake.limited == 0, "the client must wait when X-RateLimit-Remaining is 0"
    per_channel = max(
        len([r for r in pages if f"/channels/{c}/" in r.path]) for c in fake.text_channels()
    )
    assert per_channel >= 9
    assert took >= (per_channel // 3 - 1) * 0.15 * 0.9
    assert set(rows(tmp_path / "kb.lance")) == expected_ids(fake)


async def test_a_long_retry_after_fails_fast_instead_of_hanging(
    api: FakeAPI, fake: FakeDiscord, tmp_path: Path
) -> None:
    api.faults.script(
        "GET",
        MESSAGES,
        [
            Fault.rate_limit(
                3600, body={"message": "slow down", "retry_after": 3600.0, "global": False}
            )
        ],
    )
    started = time.monotonic()
    with pytest.raises(RateLimitWaitTooLong, match="max_wait"):
        await sync(make_source(fake, api), tmp_path / "kb.lance", max_wait=5)
    assert time.monotonic() - started < 5


async def test_malformed_message_goes_to_dead_letters(
    api: FakeAPI, fake: FakeDiscord, tmp_path: Path
) -> None:
    cid = fake.text_channels()[0]
    bad_id = str(int(fake.messages[cid][-1]["id"]) + 1)
    fake.add_raw_message(cid, {"id": bad_id, "type": 0, "content": "no timestamp", "author": {}})
    path = tmp_path / "kb.lance"
    report = await sync(make_source(fake, api), path)
    assert report.dead_lettered == 1
    [letter] = read_dead_letters(path / "_cfstream" / "dead-letters.jsonl")
    assert letter["source_id"] == f"{cid}:{bad_id}" and "timestamp" in letter["error"]
    assert letter["payload"]["content"] == "no timestamp"
    got = rows(path)
    assert f"{cid}:{bad_id}" not in got
    assert set(got) == expected_ids(fake) - {f"{cid}:{bad_id}"}


async def test_bad_token_fails_with_a_clear_message(
    api: FakeAPI, fake: FakeDiscord, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = "wrong-discord-SEKRIT-0123456789"
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AuthError) as info:
        await sync(make_source(fake, api, token=bad), tmp_path / "kb.lance")
    message = str(info.value)
    assert "401" in message and "Bot <token>" in message and "Read Message History" in message
    assert bad not in message and bad not in caplog.text
    assert len(api.requests) == 1


async def test_unknown_channel_and_bad_options(
    api: FakeAPI, fake: FakeDiscord, tmp_path: Path
) -> None:
    with pytest.raises(SourceError, match="not channels of guild"):
        await sync(make_source(fake, api, channel_ids=["123"]), tmp_path / "kb.lance")
    with pytest.raises(ConfigError, match="guild_id") as info:
        DiscordSource(token=TOKEN, guild_id="not-a-number")
    assert TOKEN not in str(info.value)


def test_snowflake_time_round_trip() -> None:
    # the documented example: 175928847299117063 was created 2016-04-30 11:18:25.796 UTC
    when = snowflake_time("175928847299117063")
    assert when.isoformat() == "2016-04-30T11:18:25.796000+00:00"
    assert snowflake_time(snowflake_at(when)) == when


def _fixture(name: str) -> Any:
    return orjson.loads((FIXTURES / name).read_bytes())


async def test_replays_the_real_discord_payloads(api: FakeAPI, tmp_path: Path) -> None:
    if not FIXTURES.is_dir():
        pytest.skip("../shared/fixtures/discord is not present")
    channel = _fixture("channel.guild-text.json")
    thread = _fixture("channel.thread.json")
    thread["id"] = "41771983423143938"  # the docs reuse one id for both examples
    example = _fixture("message.example.json")
    crossposted = _fixture("message.crossposted.json")
    crossposted["id"] = "334385199974967043"  # the docs reuse one id for both examples
    guild, cid = channel["guild_id"], channel["id"]
    base = "/api/v10"
    limit_headers = _fixture("rate-limit-headers.example.headers.json")["headers"]
    limit_headers = {**limit_headers, "X-RateLimit-Remaining": "4"}
    api.route("GET", f"{base}/guilds/{guild}/channels", [channel])
    api.route("GET", f"{base}/guilds/{guild}/threads/active", {"threads": [thread], "members": []})
    api.route(
        "GET",
        f"{base}/channels/{cid}/threads/archived/public",
        {"threads": [], "members": [], "has_more": False},
    )
    api.route(
        "GET",
        f"{base}/channels/{cid}/messages",
        Reply([crossposted, example], headers=limit_headers),
    )
    api.route("GET", f"{base}/channels/{thread['id']}/messages", [])
    source = DiscordSource(
        token=TOKEN, guild_id=guild, channel_ids=[cid], base_url=f"{api.url}{base}", page_size=50
    )
    path = tmp_path / "kb.lance"
    report = await sync(source, path)
    assert report.ok, report.to_dict()
    got = rows(path)
    assert set(got) == {
        f"channel:{cid}",
        f"thread:{thread['id']}",
        f"{cid}:{example['id']}",
        f"{cid}:{crossposted['id']}",
    }
    row = got[f"{cid}:{example['id']}"]
    assert row["text_content"] == "Supa Hot" and row["author"] == "Mason"
    assert row["created_at"] == "2017-07-11"
    assert meta(row)["discord_author_id"] == "53908099506183680"
    assert meta(row)["discord_reactions"] == "🔥:1"
    ref = crossposted["message_reference"]
    crow = got[f"{cid}:{crossposted['id']}"]
    assert rels(crow, "reference") == [uid(f"{ref['channel_id']}:{ref['message_id']}")]
    assert "#" in crow["text_content"] and "<#" not in crow["text_content"]
    assert got[f"channel:{cid}"]["text_content"].endswith(channel["topic"])
    assert got[f"thread:{thread['id']}"]["title"] == f"Thread: {thread['name']}"

    # the documented 429 with its 64.57 s retry_after: bounded by max_wait, never a hang
    user_429 = _fixture("error.429-user.json")
    headers = _fixture("error.429-user.headers.json")["headers"]
    api.route("GET", f"{base}/channels/{cid}/messages", Reply(user_429, 429, headers))
    with pytest.raises(RateLimitWaitTooLong):
        await sync(source, tmp_path / "limited.lance", max_wait=10)
    api.route(
        "GET", f"{base}/guilds/{guild}/channels", Reply(_fixture("error.json-error.json"), 401)
    )
    with pytest.raises(AuthError, match="Invalid authentication token"):
        await sync(source, tmp_path / "other.lance")


# -- channels the bot cannot read -------------------------------------------------------------------


def _ids_of(fake: FakeDiscord, cid: str) -> set[str]:
    """Source ids of a channel, its messages, its threads and their messages."""
    threads = [t for t, th in fake.threads.items() if th["parent_id"] == cid]
    out = {f"channel:{cid}"} | {f"thread:{t}" for t in threads}
    for c in [cid, *threads]:
        out |= {f"{c}:{m['id']}" for m in fake.messages[c]}
    return out


async def test_unreadable_channel_found_in_the_guild_is_skipped_and_reported(
    api: FakeAPI, fake: FakeDiscord, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A mod-only channel (403 Missing Access) found by listing the guild is left out with a
    warning in the log and the report; every other channel is imported."""
    hidden = fake.text_channels()[0]
    assert any(th["parent_id"] == hidden for th in fake.threads.values())
    fake.forbid(hidden)
    path = tmp_path / "kb.lance"
    with caplog.at_level(logging.WARNING, logger="cfstream"):
        report = await sync(make_source(fake, api, channel_ids=None), path)
    stats = report.sources["discord"]
    assert report.error is None and stats.error is None and report.dead_lettered == 0
    assert report.ok and exit_code(report) == EXIT_OK
    [warning] = stats.warnings
    assert hidden in warning and "View Channel" in warning and "Missing Access" in warning
    assert any(hidden in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert set(rows(path)) == expected_ids(fake) - _ids_of(fake, hidden)
    assert hidden in str(report)


async def test_unreadable_channel_listed_in_channel_ids_fails_only_its_partition(
    api: FakeAPI, fake: FakeDiscord, tmp_path: Path
) -> None:
    """A channel the user listed that the bot cannot read fails its own partition with a message
    that says what to do; the other channels are imported and the run says it partly failed."""
    hidden, *others = fake.text_channels()
    fake.forbid(hidden)
    path = tmp_path / "kb.lance"
    report = await sync(make_source(fake, api), path)
    stats = report.sources["discord"]
    assert list(stats.failed_partitions) == [f"channel:{hidden}"]
    message = stats.failed_partitions[f"channel:{hidden}"]
    assert "Read Message History" in message and "remove it from `channel_ids`" in message
    assert stats.error is not None and hidden in stats.error
    assert not report.ok and exit_code(report) == EXIT_PARTIAL
    got = set(rows(path))
    for cid in others:
        assert _ids_of(fake, cid) <= got
    assert f"channel:{hidden}" not in got
    assert not {f"{hidden}:{m['id']}" for m in fake.messages[hidden]} & got


async def test_unreadable_channel_found_when_reading_its_messages_is_skipped(
    api: FakeAPI, fake: FakeDiscord, tmp_path: Path
) -> None:
    """Without the archived-threads listing, the 403 first shows on the messages request: the
    channel is skipped there, with the same warning."""
    hidden, *others = fake.text_channels()
    fake.forbid(hidden)
    path = tmp_path / "kb.lance"
    source = make_source(fake, api, channel_ids=None, include_archived_threads=False)
    report = await sync(source, path)
    stats = report.sources["discord"]
    assert report.ok and stats.error is None and not stats.failed_partitions
    assert len(stats.warnings) == 1 and hidden in stats.warnings[0]
    got = set(rows(path))
    assert (
        f"channel:{hidden}" not in got and f"{hidden}:{fake.messages[hidden][0]['id']}" not in got
    )
    for cid in others:
        assert {f"channel:{cid}"} | {f"{cid}:{m['id']}" for m in fake.messages[cid]} <= got


async def test_empty_messages_answer_tombstones_nothing(
    api: FakeAPI, fake: FakeDiscord, tmp_path: Path
) -> None:
    """An empty 200 for a channel's messages is no answer: it does not end the listing (which
    would tombstone the lookback window); that channel fails and is read again next run, the
    other channels finish. (This also holds once the HTTP client retries empty 200s itself.)"""
    path = tmp_path / "kb.lance"
    source = make_source(fake, api)
    assert (await sync(source, path)).ok
    before = set(rows(path))
    cid, *others = fake.text_channels()
    fake.add_message(others[0], "a new message while one channel misbehaves")
    api.route(
        "GET",
        f"/discord/api/v10/channels/{cid}/messages",
        Reply(body=b"", content_type="application/json"),
    )
    second = await sync(source, path)
    stats = second.sources["discord"]
    assert stats.tombstones == 0 and second.sink.deleted == 0
    assert list(stats.failed_partitions) == [f"channel:{cid}"] and not second.ok
    assert before < set(rows(path))  # the other channels went on

    fake.mount(api)
    assert (await sync(source, path)).ok
    fresh = tmp_path / "fresh.lance"
    await sync(make_source(fake, api), fresh)
    assert hashes(path) == hashes(fresh)
