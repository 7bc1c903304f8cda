"""LinearSource against the fake Linear GraphQL API on 127.0.0.1, into real Lance datasets."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import lance
import orjson
import pytest

from cfstream.contract.deadletter import read_dead_letters
from cfstream.contract.report import RunReport
from cfstream.errors import AuthError, ConfigError
from cfstream.http import HttpClient, RetryPolicy
from cfstream.records import record_uuid
from cfstream.sinks import LanceSink
from cfstream.sources.linear import (
    COMMENTS_QUERY,
    DOCUMENTS_QUERY,
    ISSUES_QUERY,
    PROJECTS_QUERY,
    TEAMS_QUERY,
    LinearSource,
    _Mapper,
)
from cfstream.testing import FakeAPI
from cfstream.testing.fakes.linear import FakeLinear, parse_operation

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"


def U(source_id: str) -> str:
    return record_uuid("linear", source_id)


@pytest.fixture
async def api() -> AsyncIterator[FakeAPI]:
    async with FakeAPI() as server:
        yield server


@pytest.fixture
def fake(api: FakeAPI) -> FakeLinear:
    f = FakeLinear(issues=30, seed=7)
    f.mount(api)
    return f


@pytest.fixture
async def http() -> AsyncIterator[HttpClient]:
    retry = RetryPolicy(max_tries=4, base=0.01, factor=2.0, max_backoff=0.05, jitter=False)
    async with HttpClient(timeout=5, retry=retry) as client:
        yield client


def source(api: FakeAPI, fake: FakeLinear, **options: Any) -> LinearSource:
    opts: dict[str, Any] = {
        "api_key": fake.api_key,
        "base_url": api.url,
        "page_size": 4,
        "requests_per_second": 1000.0,
        "burst": 1000,
    }
    opts.update(options)
    return LinearSource(**opts)


async def sync(src: LinearSource, path: Path, http: HttpClient, **run: Any) -> RunReport:
    return await (src | LanceSink(str(path), max_latency=0.05)).run(http=http, **run)


def table(path: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for row in lance.dataset(str(path)).to_table().to_pylist():
        row["meta"] = {m["key"]: m["value"] for m in row["custom_metadata"] or []}
        assert row["source_id"] not in out, f"duplicate row {row['source_id']}"
        out[row["source_id"]] = row
    return out


def snapshot(path: Path) -> list[tuple[str, str]]:
    t = lance.dataset(str(path)).to_table(columns=["uuid", "content_hash"])
    return sorted(
        zip(t.column("uuid").to_pylist(), t.column("content_hash").to_pylist(), strict=True)
    )


def live(fake: FakeLinear) -> set[str]:
    """The source_ids a correct sync of ``fake`` (archived items excluded) must hold."""
    d = fake.data
    ids = {f"team:{t['id']}" for t in d.teams}
    ids |= {f"issue:{i}" for i, r in d.issues.items() if r["archivedAt"] is None}
    ids |= {
        f"comment:{c}"
        for c, r in d.comments.items()
        if r["archivedAt"] is None and d.issues[r["issue_id"]]["archivedAt"] is None
    }
    ids |= {f"project:{p}" for p, r in d.projects.items() if r["archivedAt"] is None}
    ids |= {
        f"document:{x}"
        for x, r in d.documents.items()
        if r["archivedAt"] is None and d.projects[r["project_id"]]["archivedAt"] is None
    }
    return ids


def served(fake: FakeLinear, operation: str) -> list[str]:
    return [i for op, ids in fake.served if op == operation for i in ids]


async def test_full_sync_many_pages_maps_columns(
    api: FakeAPI, fake: FakeLinear, http: HttpClient, tmp_path: Path
) -> None:
    report = await sync(source(api, fake), tmp_path / "kb.lance", http)
    assert report.ok, report.error
    rows = table(tmp_path / "kb.lance")
    assert set(rows) == live(fake)
    per_op = {op for op, _ in fake.served}
    assert {"CfstreamTeams", "CfstreamIssues", "CfstreamComments", "CfstreamProjects"} <= per_op
    assert sum(op == "CfstreamIssues" for op, _ in fake.served) >= 30 // 4  # many pages
    assert report.sources["linear"].partitions == 1 + 4 * len(fake.data.teams)

    iid, raw = next((i, r) for i, r in fake.data.issues.items() if r["assignee_id"])
    node = fake._issue_node(iid)
    assert node is not None
    row = rows[f"issue:{iid}"]
    assert row["title"] == f"{node['identifier']} {raw['title']}"
    assert row["text_content"] == raw["description"]
    assert row["source_url"] == node["url"]
    assert row["author"] == node["creator"]["name"]
    assert row["contributors"] == [node["assignee"]["name"]]
    assert row["created_at"] == raw["createdAt"][:10]
    assert row["source_updated_at"].isoformat().startswith(raw["updatedAt"][:19])
    assert row["collection"] == node["team"]["name"]
    assert row["status"] == node["state"]["name"]
    assert row["tags"] == sorted(lab["name"] for lab in node["labels"]["nodes"])
    assert row["meta"]["linear_id"] == iid
    assert row["meta"]["linear_identifier"] == node["identifier"]
    assert row["meta"]["linear_state"] == node["state"]["name"]
    assert row["meta"]["linear_priority"] == str(int(raw["priority"]))
    assert all(isinstance(v, str) for v in row["meta"].values())
    # every query carried the personal key as-is, ordered by updatedAt
    for req in api.requests_for("POST", "/graphql"):
        assert req.headers["Authorization"] == fake.api_key
        body = req.json()
        if body["operationName"] != "CfstreamTeams":
            assert "orderBy: updatedAt" in body["query"]


async def test_relationships_and_collection_headers(
    api: FakeAPI, fake: FakeLinear, http: HttpClient, tmp_path: Path
) -> None:
    await sync(source(api, fake), tmp_path / "kb.lance", http)
    rows = table(tmp_path / "kb.lance")
    by_uuid = {r["uuid"]: r for r in rows.values()}
    for team in fake.data.teams:
        header = rows[f"team:{team['id']}"]
        assert header["record_type"] == "collection_header"
        assert header["uuid"] == U(f"team:{team['id']}")
        assert header["title"] == team["name"]
    sub = next(r for r in fake.data.issues.values() if r["parent_id"])
    rels = {(x["type"], x["id"]) for x in rows[f"issue:{sub['id']}"]["relationships"]}
    assert ("child", U(f"issue:{sub['parent_id']}")) in rels
    assert ("member_of", U(f"team:{sub['team_id']}")) in rels
    in_project = next(r for r in fake.data.issues.values() if r["project_id"])
    rels = {(x["type"], x["id"]) for x in rows[f"issue:{in_project['id']}"]["relationships"]}
    project_uuid = U(f"project:{in_project['project_id']}")
    assert ("member_of", project_uuid) in rels
    assert by_uuid[project_uuid]["record_type"] == "collection_header"
    comment_id, comment = next(iter(fake.data.comments.items()))
    rels = {(x["type"], x["id"]) for x in rows[f"comment:{comment_id}"]["relationships"]}
    assert ("child", U(f"issue:{comment['issue_id']}")) in rels
    doc_id, doc = next(iter(fake.data.documents.items()))
    rels = {(x["type"], x["id"]) for x in rows[f"document:{doc_id}"]["relationships"]}
    assert rels == {("member_of", U(f"project:{doc['project_id']}"))}
    # every relationship points at a record of the dataset
    for row in rows.values():
        for rel in row["relationships"] or []:
            assert rel["id"] in by_uuid, (row["source_id"], rel)


async def test_incremental_fetches_only_changed_items(
    api: FakeAPI, fake: FakeLinear, http: HttpClient, tmp_path: Path
) -> None:
    path = tmp_path / "kb.lance"
    await sync(source(api, fake, lookback_seconds=0), path, http)
    high = max(r["updatedAt"] for r in fake.data.issues.values())
    fake.served.clear()
    api.clear()
    ids = list(fake.data.issues)
    fake.edit("issue", ids[3], title="Renamed: flaky checkout test")
    fake.set_state(ids[5], "Done")
    new = fake.add_issue("ENG", title="Brand new issue", description="fresh")
    comment = fake.add_comment(ids[3], "A new comment")

    report = await sync(source(api, fake, lookback_seconds=0), path, http)
    assert report.ok, report.error
    assert sorted(served(fake, "CfstreamIssues")) == sorted([ids[3], ids[5], new])
    assert served(fake, "CfstreamComments") == [comment]
    assert served(fake, "CfstreamProjects") == served(fake, "CfstreamDocuments") == []
    assert report.sink.inserted == 2 and report.sink.updated == 2
    gts = {
        req.json()["variables"]["filter"]["updatedAt"]["gt"]
        for req in api.requests_for("POST", "/graphql")
        if req.json()["operationName"] == "CfstreamIssues"
    }
    assert max(gts) == high  # the saved cursor, sent as Linear's own filter
    rows = table(path)
    assert rows[f"issue:{ids[3]}"]["title"].endswith("Renamed: flaky checkout test")
    assert rows[f"issue:{new}"]["text_content"] == "fresh"

    # a third run with nothing changed fetches nothing and writes nothing
    fake.served.clear()
    report = await sync(source(api, fake, lookback_seconds=0), path, http)
    assert all(not ids for _, ids in fake.served if _ != "CfstreamTeams")
    assert report.sink.inserted == report.sink.updated == 0
    assert report.sources["linear"].skipped_unchanged == len(fake.data.teams)  # team headers


async def test_lookback_rereads_are_skipped_as_unchanged(
    api: FakeAPI, fake: FakeLinear, http: HttpClient, tmp_path: Path
) -> None:
    path = tmp_path / "kb.lance"
    await sync(source(api, fake, lookback_seconds=3600 * 24 * 365), path, http)
    report = await sync(source(api, fake, lookback_seconds=3600 * 24 * 365), path, http)
    stats = report.sources["linear"]
    assert stats.fetched == 0
    assert stats.skipped_unchanged >= len(fake.data.issues)
    assert report.sink.inserted == report.sink.updated == 0


async def test_deletions_become_tombstones(
    api: FakeAPI, fake: FakeLinear, http: HttpClient, tmp_path: Path
) -> None:
    path = tmp_path / "kb.lance"
    await sync(source(api, fake), path, http)
    issue = next(i for i, r in fake.data.issues.items() if not r["parent_id"])
    archived_comment = next(c for c, r in fake.data.comments.items() if r["issue_id"] != issue)
    issue_comments = [c for c, r in fake.data.comments.items() if r["issue_id"] == issue]
    project = next(iter(fake.data.projects))
    fake.delete("issue", issue)
    fake.archive("comment", archived_comment)
    fake.delete("project", project)

    report = await sync(source(api, fake), path, http)
    assert report.ok, report.error
    rows = table(path)
    assert f"issue:{issue}" not in rows
    assert f"comment:{archived_comment}" not in rows
    assert not {f"comment:{c}" for c in issue_comments} & set(rows)
    assert f"project:{project}" not in rows
    assert set(rows) == live(fake)
    assert report.sink.deleted >= 3


async def test_include_archived_keeps_archived_but_drops_trashed(
    api: FakeAPI, fake: FakeLinear, http: HttpClient, tmp_path: Path
) -> None:
    path = tmp_path / "kb.lance"
    ids = list(fake.data.issues)
    fake.archive("issue", ids[0])
    fake.delete("issue", ids[1])
    await sync(source(api, fake, include_archived=True), path, http)
    rows = table(path)
    assert rows[f"issue:{ids[0]}"]["status"] == "archived"
    assert rows[f"issue:{ids[0]}"]["meta"]["linear_archived_at"]
    assert f"issue:{ids[1]}" not in rows
    assert all(r.json()["variables"].get("includeArchived", True) for r in api.requests[1:])


async def test_rate_limit_and_server_error_mid_sync_recover(
    api: FakeAPI, fake: FakeLinear, http: HttpClient, tmp_path: Path
) -> None:
    clean = FakeLinear(issues=30, seed=7)
    async with FakeAPI() as other:
        clean.mount(other)
        await sync(source(other, clean), tmp_path / "clean.lance", http)

    api.faults.script(
        "POST", "/graphql", ["ok", "ok", fake.rate_limited(0.05), "ok", 500, "ok", 503]
    )
    report = await sync(source(api, fake), tmp_path / "kb.lance", http)
    assert report.ok, report.error
    assert api.faults.pending() == 0
    assert report.http["rate_limited"] >= 1
    assert report.http["total_retries"] >= 3
    assert snapshot(tmp_path / "kb.lance") == snapshot(tmp_path / "clean.lance")


async def test_malformed_item_goes_to_dead_letters(
    api: FakeAPI, fake: FakeLinear, http: HttpClient, tmp_path: Path
) -> None:
    ids = list(fake.data.issues)
    fake.corrupt("issue", ids[2], title=None)
    fake.corrupt("issue", ids[4], createdAt="last tuesday")
    path = tmp_path / "kb.lance"
    report = await sync(source(api, fake), path, http)
    assert report.error is None and not report.failed_sources
    assert report.dead_lettered == 2
    letters = list(read_dead_letters(path / "_cfstream" / "dead-letters.jsonl"))
    by_id = {d["source_id"]: d for d in letters}
    assert "'title'" in by_id[f"issue:{ids[2]}"]["error"]
    assert "last tuesday" in by_id[f"issue:{ids[4]}"]["error"]
    assert by_id[f"issue:{ids[2]}"]["payload"]["id"] == ids[2]
    rows = table(path)
    assert set(rows) == live(fake) - {f"issue:{ids[2]}", f"issue:{ids[4]}"}
    raw = (path / "_cfstream" / "dead-letters.jsonl").read_text()
    assert fake.api_key not in raw


async def test_auth_failure_is_clear_and_secret_free(
    api: FakeAPI, fake: FakeLinear, http: HttpClient, tmp_path: Path, caplog: Any
) -> None:
    bad = "lin_api_WRONGkey1234567890abcdefWRONG"
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AuthError) as info:
        await sync(source(api, fake, api_key=bad), tmp_path / "kb.lance", http)
    message = str(info.value)
    assert "api_key" in message and "oauth_token" in message
    assert "Authentication required" in message
    assert bad not in message
    assert bad not in caplog.text
    assert bad not in repr(source(api, fake, api_key=bad).config)


async def test_oauth_token_is_sent_as_bearer(
    api: FakeAPI, fake: FakeLinear, http: HttpClient, tmp_path: Path
) -> None:
    src = LinearSource(
        oauth_token=fake.oauth_token,
        base_url=api.url,
        team_ids=[fake.team_ids()[0]],
        content=["issues"],
        requests_per_second=1000.0,
    )
    report = await sync(src, tmp_path / "kb.lance", http)
    assert report.ok, report.error
    assert {r.headers["Authorization"] for r in api.requests} == {f"Bearer {fake.oauth_token}"}
    rows = table(tmp_path / "kb.lance")
    tid = fake.team_ids()[0]
    expected = {f"issue:{i}" for i, r in fake.data.issues.items() if r["team_id"] == tid}
    assert set(rows) == expected | {f"team:{tid}"}


async def test_unknown_team_id_fails_with_a_clear_error(
    api: FakeAPI, fake: FakeLinear, http: HttpClient, tmp_path: Path
) -> None:
    with pytest.raises(Exception, match="not visible to this credential"):
        await sync(source(api, fake, team_ids=["no-such-team"]), tmp_path / "kb.lance", http)


def test_config_errors_name_the_option() -> None:
    with pytest.raises(ConfigError, match="exactly one of api_key"):
        LinearSource(base_url="http://x")
    with pytest.raises(ConfigError, match="page_size"):
        LinearSource(api_key="lin_api_abcdefgh", page_size=1000)
    with pytest.raises(ConfigError, match="content"):
        LinearSource(api_key="lin_api_abcdefgh", content=["tickets"])
    with pytest.raises(ConfigError) as info:
        LinearSource(api_key="lin_api_secretvalue", oauth_token="lin_oauth_secretvalue")
    assert "secretvalue" not in str(info.value)


async def test_incremental_equals_fresh_full_sync(
    api: FakeAPI, fake: FakeLinear, http: HttpClient, tmp_path: Path
) -> None:
    inc = tmp_path / "incremental.lance"
    await sync(source(api, fake), inc, http)
    d = fake.data
    ids = list(d.issues)
    eng = fake.team("ENG")["id"]
    parent = next(i for i in ids if d.issues[i]["team_id"] == eng and not d.issues[i]["parent_id"])
    for n in range(5):
        fake.add_issue("ENG" if n % 2 else "DES", title=f"New issue {n}")
    fake.add_issue("ENG", title="A new sub-issue", parent_id=parent)
    for i in ids[:8]:
        fake.edit("issue", i, description=d.issues[i]["description"] + "\n\nEdited.")
    fake.set_state(ids[9], "Canceled")
    fake.edit("issue", ids[10], label_ids=[], assignee_id=None)
    fake.add_comment(ids[11], "Follow-up after the incident review")
    fake.edit("comment", next(iter(d.comments)), body="Edited comment body")
    fake.delete("issue", ids[12])
    fake.delete("issue", parent if parent != ids[12] else ids[13])
    fake.archive("comment", list(d.comments)[5])
    project = next(iter(d.projects))
    fake.edit("project", project, description="New scope for the quarter")
    fake.delete("document", list(d.documents)[1])
    fake.add_document(project, title="Post-mortem", content="What went wrong and why.")
    fake.served.clear()

    report = await sync(source(api, fake), inc, http)
    assert report.ok, report.error
    incremental_nodes = sum(len(ids) for _, ids in fake.served)
    fresh = tmp_path / "fresh.lance"
    fake.served.clear()
    await sync(source(api, fake), fresh, http)
    full_nodes = sum(len(ids) for _, ids in fake.served)
    assert snapshot(inc) == snapshot(fresh)
    assert incremental_nodes < full_nodes / 2
    assert set(table(inc)) == live(fake)


async def test_resume_after_a_failed_run_equals_fresh_sync(
    api: FakeAPI, fake: FakeLinear, http: HttpClient, tmp_path: Path
) -> None:
    path = tmp_path / "kb.lance"
    api.faults.script("POST", "/graphql", ["ok"] * 3 + [500] * 4)  # retries run out mid-pass
    first = await sync(source(api, fake, max_concurrency=1), path, http)
    # that partition failed after the retries; the other partitions went on
    assert first.failed_sources == ["linear"] and "500" in str(first.sources["linear"].error)
    state = (path / "_cfstream" / "state.json").read_text()
    assert '"page"' in state and '"after"' in state  # a pass was cut in the middle
    api.faults.clear()
    fake.served.clear()
    report = await sync(source(api, fake), path, http)
    assert report.ok, report.error
    # the interrupted pass went on from its saved endCursor: committed pages were not refetched
    assert len(set(served(fake, "CfstreamIssues"))) < len(fake.data.issues)
    fresh = tmp_path / "fresh.lance"
    await sync(source(api, fake), fresh, http)
    assert snapshot(path) == snapshot(fresh)


# -- the shared fixtures: Linear's own schema ---------------------------------------------------


def _schema_types(text: str) -> dict[str, set[str]]:
    types: dict[str, set[str]] = {}
    for block in re.findall(r"```graphql\n(.*?)```", text, re.S):
        for m in re.finditer(r"^(?:type|input|enum) (\w+)[^{]*\{(.*?)^\}", block, re.S | re.M):
            fields = set(re.findall(r"^  (\w+)\s*[(:]", m.group(2), re.M))
            fields |= set(re.findall(r"^  (\w+)\s*$", m.group(2), re.M))
            types[m.group(1)] = fields
    return types


_FIELD_TYPES = {
    ("Issue", "state"): "WorkflowState",
    ("Issue", "assignee"): "User",
    ("Issue", "creator"): "User",
    ("Issue", "team"): "Team",
    ("Issue", "project"): "Project",
    ("Issue", "parent"): "Issue",
    ("Issue", "labels"): "IssueLabelConnection",
    ("IssueLabelConnection", "nodes"): "IssueLabel",
    ("IssueConnection", "nodes"): "Issue",
    ("IssueConnection", "pageInfo"): "PageInfo",
}
#: fields the connector selects that Linear's schema has but the stored excerpt cut
_OUTSIDE_EXCERPT = {
    ("Issue", "trashed"),
    ("Project", "trashed"),
    ("Project", "lead"),
    ("Project", "teams"),
}


def _check_selection(
    types: dict[str, set[str]], type_name: str, selection: dict[str, Any], seen: list[str]
) -> None:
    if type_name not in types:
        return
    for name, sub in selection.items():
        if (type_name, name) in _OUTSIDE_EXCERPT:
            continue
        assert name in types[type_name], f"{type_name}.{name} is not in Linear's schema"
        seen.append(f"{type_name}.{name}")
        if sub is not None:
            _check_selection(types, _FIELD_TYPES.get((type_name, name), ""), sub, seen)


def test_queries_and_fake_follow_linears_schema() -> None:
    excerpt = SHARED / "linear" / "schema-excerpt.md"
    if not excerpt.is_file():
        pytest.skip("../shared/fixtures/linear is not present")
    types = _schema_types(excerpt.read_text(encoding="utf-8"))
    assert {"Issue", "IssueConnection", "PageInfo", "IssueFilter", "DateComparator"} <= set(types)
    # the incremental filter and ordering the connector sends exist
    assert {"team", "updatedAt"} <= types["IssueFilter"]
    assert "gt" in types["DateComparator"]
    assert "updatedAt" in types["PaginationOrderBy"]
    assert {"hasNextPage", "endCursor"} <= types["PageInfo"]
    _, root, args, selection = parse_operation(ISSUES_QUERY, {"first": 50})
    assert root == "issues"
    assert set(args) <= set(re.findall(r"^    (\w+):", _query_args(excerpt.read_text()), re.M))
    seen: list[str] = []
    _check_selection(types, "IssueConnection", selection, seen)
    assert "Issue.identifier" in seen and "WorkflowState.type" in seen
    for query, type_name in ((TEAMS_QUERY, "Team"), (PROJECTS_QUERY, "Project")):
        _, _, _, sel = parse_operation(query, {})
        _check_selection(types, type_name, sel["nodes"], seen)
    for query in (COMMENTS_QUERY, DOCUMENTS_QUERY):
        parse_operation(query, {})

    # the fake serves exactly those shapes, and its nodes map
    fake = FakeLinear(issues=12, seed=3)
    data, _ = fake.execute(ISSUES_QUERY, {"first": 50, "filter": None}, "CfstreamIssues")
    mapper = _Mapper("linear")
    for node in data["issues"]["nodes"]:
        assert set(node) == set(selection["nodes"])
        doc = mapper.issue(node, include_archived=False)
        assert doc.custom_metadata and doc.custom_metadata["linear_id"] == node["id"]
    body = orjson.dumps(data)
    assert b'"pageInfo":{"hasNextPage":false' in body


def _query_args(text: str) -> str:
    m = re.search(r"issues\(\n(.*?)\n  \): IssueConnection!", text, re.S)
    assert m is not None
    return m.group(1)
