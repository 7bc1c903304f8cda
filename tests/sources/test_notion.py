"""The Notion connector against the fake Notion API on 127.0.0.1, into real Lance datasets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import lance
import orjson
import pytest

from cfstream.contract.report import RunReport
from cfstream.contract.state import StateStore
from cfstream.errors import AuthError, ConfigError, NotFoundError
from cfstream.http import HttpClient, RetryPolicy
from cfstream.records import record_uuid
from cfstream.sinks import LanceSink
from cfstream.sources._notion_markdown import render_blocks
from cfstream.sources.notion import NotionSource, property_text
from cfstream.testing import FakeAPI, Fault, Reply
from cfstream.testing.fakes.notion import FAKE_TOKEN, FakeNotion

DATA = Path(__file__).parent / "data"
FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "notion"
BLOCKS_PATH = "/v1/blocks/{id}/children"


class Clock:
    """A settable clock for the fake's edit timestamps (minute-granular, like Notion)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def api() -> AsyncIterator[FakeAPI]:
    async with FakeAPI() as server:
        yield server


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake(api: FakeAPI, clock: Clock) -> FakeNotion:
    f = FakeNotion(clock=clock)
    f.mount(api)
    return f


@pytest.fixture
async def http() -> AsyncIterator[HttpClient]:
    retry = RetryPolicy(max_tries=4, base=0.01, factor=2.0, max_backoff=0.05, jitter=False)
    async with HttpClient(timeout=10, retry=retry) as client:
        yield client


def source(api: FakeAPI, **options: Any) -> NotionSource:
    options.setdefault("page_size", 5)
    return NotionSource(
        token=FAKE_TOKEN, base_url=api.url, requests_per_second=1000, burst=100, **options
    )


async def sync(src: NotionSource, path: Path, http: HttpClient, **kw: Any) -> RunReport:
    return await (src | LanceSink(str(path))).run(http=http, **kw)


def rows(path: Path) -> dict[str, dict[str, Any]]:
    return {r["uuid"]: r for r in lance.dataset(str(path)).to_table().to_pylist()}


def hashes(path: Path) -> list[tuple[str, str]]:
    table = lance.dataset(str(path)).to_table(columns=["uuid", "content_hash"])
    return sorted(zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True))


def by_source_id(path: Path) -> dict[str, dict[str, Any]]:
    return {r["source_id"]: r for r in rows(path).values()}


def meta(row: dict[str, Any]) -> dict[str, str]:
    return {m["key"]: m["value"] for m in row["custom_metadata"] or []}


def block_fetches(api: FakeAPI) -> set[str]:
    """Ids whose block children were requested (pages and nested blocks)."""
    return {r.path.split("/")[3] for r in api.requests_for("GET", BLOCKS_PATH)}


def uuid(source_id: str) -> str:
    return record_uuid("notion", source_id)


# -- full sync ---------------------------------------------------------------------------------


async def test_full_sync_search_pages_through_everything(
    api: FakeAPI, fake: FakeNotion, http: HttpClient, tmp_path: Path
) -> None:
    report = await sync(source(api, search=True), tmp_path / "kb.lance", http)
    got = by_source_id(tmp_path / "kb.lance")
    live_pages = [p for p in fake.pages.values() if not p["in_trash"]]
    # every page, every database header and the workspace header
    assert len(got) == len(live_pages) + len(fake.databases) + 1
    assert report.sources["notion"].fetched == len(got)
    searches = api.requests_for("POST", "/v1/search")
    assert len(searches) >= len(live_pages) // 5  # page_size=5: many pages of results
    cursors = [r.json().get("start_cursor") for r in searches]
    assert sum(c is not None for c in cursors) >= len(live_pages) // 5 - 1
    # the handbook has more than 5 top-level blocks: its children came in several pages
    root_block_reqs = api.requests_for("GET", f"/v1/blocks/{fake.root_page_id}/children")
    assert len(root_block_reqs) > 3
    assert all(r.query["page_size"] == "5" for r in root_block_reqs)
    assert all(r.headers["Notion-Version"] == "2022-06-28" for r in api.requests)
    assert all(r.headers["Authorization"] == f"Bearer {FAKE_TOKEN}" for r in api.requests)

    task = got[fake.task_ids[3]]
    m = meta(task)
    assert task["title"] == "Task 004"
    assert task["collection"] == "Tasks"
    assert task["author"] in {"Ada Lovelace", "Grace Hopper", "Alan Turing"}
    page = fake.pages[fake.task_ids[3]]
    assert task["created_at"] == page["created_time"][:10]
    assert task["source_updated_at"].isoformat().startswith(page["last_edited_time"][:16])
    assert task["tags"] == ["backend", "docs"]
    assert task["source_url"].startswith("https://www.notion.so/")
    assert m["notion_prop_Status"] == "In progress" and m["notion_prop_Priority"] == "High"
    assert m["notion_prop_Tags"] == "backend, docs"
    assert m["notion_prop_Done"] == "false" and m["notion_prop_Estimate"] == "4.5"
    assert m["notion_prop_ID"] == "TASK-4" and m["notion_prop_Score"] == "9.0"
    assert m["notion_prop_Subtasks"] == "0"
    assert m["notion_prop_Blocked by"] == fake.task_ids[2]
    assert m["notion_prop_Attachments"] == "https://example.com/files/design-4.pdf"
    assert m["notion_prop_Due"] == "2024-06-05"
    assert m["notion_prop_Assignee"] in {"Ada Lovelace", "Grace Hopper", "Alan Turing"}
    for name in ("Spec", "Contact", "Phone", "Created", "Edited", "Creator", "Editor", "Notes"):
        assert m[f"notion_prop_{name}"], name
    assert (
        "- [ ] Write tests" in task["text_content"] or "- [x] Write tests" in task["text_content"]
    )


async def test_relationships_and_collection_headers(
    api: FakeAPI, fake: FakeNotion, http: HttpClient, tmp_path: Path
) -> None:
    await sync(source(api, search=True), tmp_path / "kb.lance", http)
    got = by_source_id(tmp_path / "kb.lance")
    headers = {r["source_id"]: r for r in got.values() if r["record_type"] == "collection_header"}
    workspace = next(r for r in headers.values() if r["source_id"].startswith("workspace:"))
    assert workspace["title"] == "Acme Fake Workspace"
    assert {fake.tasks_id, fake.meetings_id, fake.glossary_id} <= set(headers)
    assert headers[fake.tasks_id]["title"] == "Tasks"

    def rels(source_id: str) -> set[tuple[str, str]]:
        return {(r["type"], r["id"]) for r in got[source_id]["relationships"] or []}

    root, onboarding, checklist = fake.root_page_id, fake.onboarding_page_id, fake.checklist_page_id
    assert ("child", uuid(onboarding)) in rels(root)
    assert ("child", uuid(fake.glossary_id)) in rels(root)
    assert ("reference", uuid(onboarding)) in rels(root)  # the page mention
    assert ("parent", uuid(root)) in rels(onboarding)
    assert ("child", uuid(checklist)) in rels(onboarding)
    assert ("reference", uuid(root)) in rels(onboarding)  # link_to_page
    assert ("parent", uuid(onboarding)) in rels(checklist)
    assert ("parent", uuid(root)) in rels(fake.glossary_id)
    for task in fake.task_ids:
        assert ("member_of", uuid(fake.tasks_id)) in rels(task)
        assert ("member_of", workspace["uuid"]) in rels(task)
    glossary_rows = [
        p for p in fake.pages.values() if p["parent"].get("database_id") == fake.glossary_id
    ]
    for row in glossary_rows:
        assert ("member_of", uuid(fake.glossary_id)) in rels(row["id"])
        assert got[row["id"]]["collection"] == "Glossary"
    # every relationship points at a record of the dataset
    uuids = {r["uuid"] for r in got.values()}
    for r in got.values():
        for rel in r["relationships"] or []:
            assert rel["id"] in uuids, (r["title"], rel)


async def test_page_tree_renders_to_expected_markdown(
    api: FakeAPI, fake: FakeNotion, http: HttpClient, tmp_path: Path
) -> None:
    await sync(source(api, page_ids=[fake.root_page_id]), tmp_path / "kb.lance", http)
    got = by_source_id(tmp_path / "kb.lance")
    tree = [fake.root_page_id, fake.onboarding_page_id, fake.checklist_page_id]
    rendered = "".join(
        f"<!-- page: {got[pid]['title']} -->\n{got[pid]['text_content']}\n" for pid in tree
    )
    expected = (DATA / "notion_expected.md").read_text(encoding="utf-8")
    assert rendered == expected
    # the page tree's records carry the root page's title as their collection
    assert {got[pid]["collection"] for pid in tree} == {"Engineering Handbook"}
    # the child database and its rows came along
    assert got[fake.glossary_id]["record_type"] == "collection_header"
    assert sum(r["collection"] == "Glossary" for r in got.values()) == 6


# -- incremental -------------------------------------------------------------------------------


def advance(clock: Clock) -> None:
    clock.now += timedelta(minutes=1)


async def test_incremental_fetches_only_changes_and_equals_full_sync(
    api: FakeAPI, fake: FakeNotion, clock: Clock, http: HttpClient, tmp_path: Path
) -> None:
    ds = tmp_path / "inc.lance"
    src = source(api, database_ids=[fake.tasks_id])
    first = await sync(src, ds, http)
    assert first.sources["notion"].fetched == len(fake.task_ids) + 1
    before = rows(ds)

    edited = [fake.task_ids[1], fake.task_ids[7]]
    gone = fake.task_ids[4]
    fake.edit_page(edited[0], "A new finding.")
    fake.set_property(edited[1], "Done", {"type": "checkbox", "checkbox": True})
    added = fake.add_row(fake.tasks_id, "Task new")
    fake.trash(gone)
    api.clear()

    second = await sync(source(api, database_ids=[fake.tasks_id]), ds, http)
    # the service's filter was used, and only changed pages' blocks were fetched
    queries = [r.json() for r in api.requests_for("POST", f"/v1/databases/{fake.tasks_id}/query")]
    assert any(q.get("filter", {}).get("last_edited_time", {}).get("on_or_after") for q in queries)
    assert block_fetches(api) == {edited[0], edited[1], added}
    assert second.sources["notion"].tombstones == 1
    after = rows(ds)
    assert uuid(gone) not in after
    assert uuid(added) in after
    assert after[uuid(edited[0])]["content_hash"] != before[uuid(edited[0])]["content_hash"]
    assert "A new finding." in after[uuid(edited[0])]["text_content"]
    assert meta(after[uuid(edited[1])])["notion_prop_Done"] == "true"
    unchanged = uuid(fake.task_ids[10])
    assert after[unchanged]["content_hash"] == before[unchanged]["content_hash"]

    fresh = tmp_path / "fresh.lance"
    await sync(source(api, database_ids=[fake.tasks_id]), fresh, http)
    assert hashes(ds) == hashes(fresh)


async def test_incremental_page_tree_and_search_equal_full_sync(
    api: FakeAPI, fake: FakeNotion, clock: Clock, http: HttpClient, tmp_path: Path
) -> None:
    configs: list[dict[str, Any]] = [{"page_ids": [fake.root_page_id]}, {"search": True}]
    for i, options in enumerate(configs):
        await sync(source(api, **options, name=f"n{i}"), tmp_path / f"inc{i}.lance", http)

    advance(clock)
    new_child = fake.add_page(fake.onboarding_page_id, "Mentoring", "Find a mentor.")
    fake.edit_block(fake.children[fake.checklist_page_id][0], "Get a badge and a laptop")
    fake.add_row(fake.glossary_id, "Backpressure", body="Slowing producers down.")
    glossary_rows = [
        p["id"] for p in fake.pages.values() if p["parent"].get("database_id") == fake.glossary_id
    ]
    fake.trash(glossary_rows[0])
    fake.trash(fake.task_ids[0])

    for i, options in enumerate(configs):
        inc = tmp_path / f"inc{i}.lance"
        report = await sync(source(api, **options, name=f"n{i}"), inc, http)
        assert report.sources[f"n{i}"].tombstones >= 1
        fresh = tmp_path / f"fresh{i}.lance"
        await sync(source(api, **options, name=f"n{i}"), fresh, http)
        assert hashes(inc) == hashes(fresh), options
        got = by_source_id(inc)
        assert new_child in got and glossary_rows[0] not in got
        assert "Get a badge and a laptop" in got[fake.checklist_page_id]["text_content"]


async def test_same_minute_edits_are_refetched_and_repeats_dropped_by_hash(
    api: FakeAPI, fake: FakeNotion, clock: Clock, http: HttpClient, tmp_path: Path
) -> None:
    ds = tmp_path / "kb.lance"
    await sync(source(api, database_ids=[fake.tasks_id]), ds, http)
    task = fake.task_ids[2]
    fake.edit_page(task, "first edit")
    await sync(source(api, database_ids=[fake.tasks_id]), ds, http)
    # a second edit within the same minute: last_edited_time does not move
    stamp = fake.pages[task]["last_edited_time"]
    fake.edit_page(task, "second edit, same minute")
    assert fake.pages[task]["last_edited_time"] == stamp
    api.clear()
    report = await sync(source(api, database_ids=[fake.tasks_id]), ds, http)
    assert task in block_fetches(api)
    assert "second edit, same minute" in by_source_id(ds)[task]["text_content"]
    assert report.sources["notion"].fetched == 1
    # nothing changed since: the page is fetched again (still "hot") but dropped by its hash
    api.clear()
    report = await sync(source(api, database_ids=[fake.tasks_id]), ds, http)
    assert block_fetches(api) == {task}
    assert report.sources["notion"].fetched == 0
    assert report.sources["notion"].skipped_unchanged >= 1


# -- failures ----------------------------------------------------------------------------------


def rate_limited() -> Fault:
    return Fault.rate_limit(
        0.05,
        body={
            "object": "error",
            "status": 429,
            "code": "rate_limited",
            "message": "You have been rate limited. Please try again in a few minutes.",
        },
    )


async def test_429_and_500_mid_sync_recover_to_the_same_result(
    api: FakeAPI, fake: FakeNotion, http: HttpClient, tmp_path: Path
) -> None:
    clean = tmp_path / "clean.lance"
    await sync(source(api, database_ids=[fake.tasks_id]), clean, http)
    query = f"/v1/databases/{fake.tasks_id}/query"
    api.faults.script("POST", query, [None, rate_limited(), 500])
    api.faults.script("GET", BLOCKS_PATH, [None, None, 503, rate_limited()])
    faulty = tmp_path / "faulty.lance"
    report = await sync(source(api, database_ids=[fake.tasks_id]), faulty, http)
    assert api.faults.pending() == 0
    assert {k for _, _, k in api.faults.injected} - {"ok"} == {"rate_limit", "status"}
    assert report.sources["notion"].error is None
    assert http.metrics.rate_limited >= 2
    assert hashes(faulty) == hashes(clean)


async def test_malformed_row_is_dead_lettered_and_the_rest_imported(
    api: FakeAPI, fake: FakeNotion, http: HttpClient, tmp_path: Path
) -> None:
    broken = fake.add_malformed_row(fake.tasks_id)
    ds = tmp_path / "kb.lance"
    report = await sync(source(api, database_ids=[fake.tasks_id]), ds, http)
    got = by_source_id(ds)
    assert broken not in got
    assert len(got) == len(fake.task_ids)  # the other rows and the header
    letters = [
        orjson.loads(line)
        for line in (ds / "_cfstream" / "dead-letters.jsonl").read_text().splitlines()
    ]
    assert len(letters) == 1 and report.dead_lettered == 1
    letter = letters[0]
    assert letter["source_id"] == broken
    assert "created_time" in letter["error"] or "properties" in letter["error"]
    assert FAKE_TOKEN not in orjson.dumps(letter).decode()


async def test_bad_token_fails_with_a_clear_auth_error(
    api: FakeAPI, fake: FakeNotion, http: HttpClient, tmp_path: Path
) -> None:
    bad = "secret_thisTokenIsWrong1234567890abcdef"
    src = NotionSource(token=bad, base_url=api.url, database_ids=[fake.tasks_id])
    with pytest.raises(AuthError) as info:
        await sync(src, tmp_path / "kb.lance", http)
    message = str(info.value)
    assert "401" in message and "token" in message and "shared" in message
    assert bad not in message
    assert bad not in repr(src) and bad not in repr(src.config)


async def test_unshared_database_says_what_to_do(
    api: FakeAPI, fake: FakeNotion, http: HttpClient, tmp_path: Path
) -> None:
    missing = "0123456789abcdef0123456789abcdef"
    with pytest.raises(NotFoundError, match="share the page or database"):
        await sync(source(api, database_ids=[missing]), tmp_path / "kb.lance", http)


def test_config_errors_are_clear() -> None:
    with pytest.raises(ConfigError, match="`database_ids`, `page_ids` or `search"):
        NotionSource(token="secret_x1234")
    with pytest.raises(ConfigError, match="not a Notion id"):
        NotionSource(token="secret_x1234", page_ids=["handbook"])
    with pytest.raises(ConfigError, match="page_size"):
        NotionSource(token="secret_x1234", search=True, page_size=500)
    src = NotionSource(
        token="secret_x1234",
        page_ids=["https://www.notion.so/Handbook-0123456789abcdef0123456789abcdef"],
    )
    assert src.config.page_ids == ["01234567-89ab-cdef-0123-456789abcdef"]


# -- the real payloads -------------------------------------------------------------------------


@pytest.fixture
def notion_fixtures() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip("../shared/fixtures/notion is not present")
    return FIXTURES


def load(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


def test_real_blocks_render(notion_fixtures: Path) -> None:
    blocks = load(notion_fixtures / "blocks-children.all-types.json")["results"]
    md = render_blocks(blocks)
    for snippet in (
        "# Heading 1",
        "## Heading 2",
        "### Heading 3",
        "- [ ] ",
        "- Bulleted list",
        "1. Numbered list",
        "<summary>Toggle</summary>",
        "> Quote",
        "> ✅ Callout",
        "```shell\n% ls -l\n```",
        "$$\nx = \\frac{-b\\pm\\sqrt{b^2-4ac}}{2a}\n$$",
        "---",
        "@Hiroyuki KOBAYASHI",
        "$y = f(x)$",
        "2022-04-24",
        "[Child page](https://www.notion.so/",
    ):
        assert snippet.strip() in md, snippet
    # signed S3 URLs lose their changing signature
    assert "X-Amz-Signature" not in md and "X-Amz-Credential" not in md


def test_real_database_properties_map(notion_fixtures: Path) -> None:
    page = load(notion_fixtures / "pages-retrieve.json")
    props = {name: property_text(p) for name, p in page["properties"].items()}
    assert props["Title"] == "ABC"
    assert props["MultiSelectTitle"] == "Multi Select 2, Multi Select 1"
    assert props["CheckboxTitle"] == "true"
    assert props["StatusTitle"] == "In progress"
    assert props["DateTitle"] == "2022-02-25T01:23:00.000+09:00"
    assert props["RollupTitle"] == "Tag 1"
    assert props["FormulaTitle"] == "2023-06-04T04:17:00.000+00:00"
    assert props["UserTitle"] == "Hiroyuki KOBAYASHI"
    assert props["NumberTitle"] == "1.41421356"
    assert props["ID"] == "ST-3"
    assert props["RelationTitle"] == "860753bb-6d1f-48de-9621-1fa6e0e31f82"
    assert props["File&MediaTitle"] == "https://img.icons8.com/ios-filled/250/000000/mac-os.png"
    assert props["TelTitle"] == "xx-xxxx-xxxx"


async def test_real_payloads_replayed_through_a_sync(
    notion_fixtures: Path, api: FakeAPI, http: HttpClient, tmp_path: Path
) -> None:
    database = load(notion_fixtures / "search.databases.json")["results"][0]
    db_id = database["id"]
    chain = [
        load(notion_fixtures / name)
        for name in (
            "databases-query.page-1.json",
            "databases-query.page-2.json",
            "databases-query.page-3-last.json",
        )
    ]
    all_types = load(notion_fixtures / "blocks-children.all-types.json")
    empty = {"object": "list", "results": [], "next_cursor": None, "has_more": False}
    row_ids = [r["id"] for page in chain for r in page["results"]]
    api.route("GET", f"/v1/databases/{db_id}", database)
    api.replies("POST", f"/v1/databases/{db_id}/query", chain, repeat_last=False)
    api.route(
        "GET",
        BLOCKS_PATH,
        lambda request: all_types if request.match_info["id"] == row_ids[0] else empty,
    )
    api.route("GET", "/v1/users/{id}", Reply({"object": "error", "status": 404}, status=404))
    ds = tmp_path / "kb.lance"
    report = await sync(
        source(api, database_ids=[db_id], follow_children=False, page_size=100), ds, http
    )
    got = by_source_id(ds)
    assert report.sources["notion"].fetched == len(row_ids) + 1
    assert set(row_ids) <= set(got)
    header = got[db_id]
    assert header["record_type"] == "collection_header" and header["title"] == "Sample table"
    first = got[row_ids[0]]
    assert "# Heading 1" in first["text_content"]
    assert first["collection"] == "Sample table"
    assert ("member_of", uuid(db_id)) in {(r["type"], r["id"]) for r in first["relationships"]}
    assert all("notion_prop_Title" in meta(got[r]) for r in row_ids)
    # the query chain was followed by its next_cursor
    bodies = [r.json() for r in api.requests_for("POST", f"/v1/databases/{db_id}/query")]
    assert [b.get("start_cursor") for b in bodies] == [None] + [
        page["next_cursor"] for page in chain[:-1]
    ]


# -- what is known per page lives in the item store --------------------------------------------


def notion_entries(ds: Path, partition: str) -> dict[str, Any]:
    store = StateStore.for_dataset(str(ds))
    try:
        return dict(store.items.entries("notion", partition))
    finally:
        store.items.close()


def store_bytes(ds: Path) -> bytes:
    return (ds / "_cfstream" / "state.items.sqlite").read_bytes()


async def test_the_cursor_keeps_no_page_map_and_a_quiet_resync_writes_nothing(
    api: FakeAPI, fake: FakeNotion, clock: Clock, http: HttpClient, tmp_path: Path
) -> None:
    ds = tmp_path / "kb.lance"
    opts: dict[str, Any] = {"database_ids": [fake.tasks_id], "lookback_seconds": 0}
    await sync(source(api, **opts), ds, http)
    part = f"database:{fake.tasks_id}"
    cursor = StateStore.for_dataset(str(ds)).cursor("notion", part)
    assert cursor is not None and set(cursor) == {"v", "since"}
    entries = notion_entries(ds, part)
    assert set(entries) == {fake.tasks_id, *fake.task_ids}

    before = store_bytes(ds)
    api.clear()
    report = await sync(source(api, **opts), ds, http)
    assert block_fetches(api) == set() and report.sources["notion"].fetched == 0
    assert store_bytes(ds) == before, "a sync with nothing new wrote to the item store"

    advance(clock)  # edits in a later minute than the last sync
    edited, gone = fake.task_ids[1], fake.task_ids[4]
    fake.edit_page(edited, "A new finding.")
    fake.trash(gone)
    await sync(source(api, **opts), ds, http)
    now = notion_entries(ds, part)
    assert gone not in now and now[edited] != entries[edited]
    assert {k for k in now if now[k] != entries.get(k)} == {edited}


async def test_a_version_1_cursor_with_every_page_migrates_to_the_item_store(
    api: FakeAPI, fake: FakeNotion, clock: Clock, http: HttpClient, tmp_path: Path
) -> None:
    ds = tmp_path / "kb.lance"
    opts: dict[str, Any] = {"database_ids": [fake.tasks_id], "lookback_seconds": 0}
    await sync(source(api, **opts), ds, http)
    part = f"database:{fake.tasks_id}"
    entries = notion_entries(ds, part)
    store = StateStore.for_dataset(str(ds))
    data = store.load()
    data["sources"]["notion"]["partitions"][part].update(v=1, known=entries)
    store.items.close()
    for f in (ds / "_cfstream").glob("state.items.sqlite*"):
        f.unlink()
    (ds / "_cfstream" / "state.json").write_bytes(orjson.dumps(data))

    advance(clock)  # edits in a later minute than the last sync
    edited, gone = fake.task_ids[2], fake.task_ids[5]
    fake.edit_page(edited, "Edited after the upgrade.")
    fake.trash(gone)
    api.clear()
    report = await sync(source(api, **opts), ds, http)
    assert block_fetches(api) == {edited}
    assert report.sources["notion"].tombstones == 1
    cursor = StateStore.for_dataset(str(ds)).cursor("notion", part)
    assert cursor is not None and cursor["v"] == 2 and "known" not in cursor
    now = notion_entries(ds, part)
    assert set(now) == set(entries) - {gone}
    api.clear()
    again = await sync(source(api, **opts), ds, http)
    # the edited page is "hot" (edited in the minute of the sync): fetched, dropped by its hash
    assert block_fetches(api) <= {edited} and again.sources["notion"].fetched == 0
