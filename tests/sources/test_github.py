"""GitHubSource against FakeGitHub on 127.0.0.1, into real Lance datasets."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import lance
import pytest

from cfstream.cli import EXIT_PARTIAL, exit_code
from cfstream.contract.deadletter import read_dead_letters
from cfstream.contract.report import RunReport
from cfstream.contract.state import StateStore
from cfstream.errors import AuthError, ConfigError, NotFoundError
from cfstream.http import HttpClient, RetryPolicy
from cfstream.records import record_uuid
from cfstream.sinks import LanceSink
from cfstream.sources.github import GitHubSource
from cfstream.testing import FakeAPI, FakeClock, Fault, Reply
from cfstream.testing.fakes import github as fakes_github
from cfstream.testing.fakes.github import DEMO_TOKEN, FakeGitHub, git_blob_sha

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"
REPO = "acme/handbook"


def uid(source_id: str) -> str:
    return record_uuid("github", source_id)


@pytest.fixture
async def api() -> AsyncIterator[FakeAPI]:
    async with FakeAPI() as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[HttpClient]:
    clock = FakeClock()
    retry = RetryPolicy(max_tries=4, base=0.01, max_backoff=0.05, jitter=False)
    async with HttpClient(timeout=10, retry=retry, clock=clock.time, sleep=clock.sleep) as client:
        yield client


def source(api: FakeAPI, **options: Any) -> GitHubSource:
    opts: dict[str, Any] = {
        "owner": "acme",
        "repo": "handbook",
        "token": DEMO_TOKEN,
        "base_url": api.url,
        "content": ["files", "issues", "pulls"],
        "requests_per_second": None,
        "per_page": 10,
        "checkpoint_every": 5,
    }
    opts.update(options)
    return GitHubSource(**opts)


async def sync(src: GitHubSource, ds: Path, http: HttpClient, **kw: Any) -> RunReport:
    return await (src | LanceSink(str(ds))).run(http=http, **kw)


def table(ds: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = lance.dataset(str(ds)).to_table().to_pylist()
    return rows


def by_source_id(ds: Path) -> dict[str, dict[str, Any]]:
    return {r["source_id"]: r for r in table(ds)}


def hashes(ds: Path) -> list[tuple[str, str]]:
    t = lance.dataset(str(ds)).to_table(columns=["uuid", "content_hash"])
    return sorted(
        zip(t.column("uuid").to_pylist(), t.column("content_hash").to_pylist(), strict=True)
    )


def meta(row: dict[str, Any]) -> dict[str, str]:
    return {m["key"]: m["value"] for m in row["custom_metadata"]}


def expected_ids(fake: FakeGitHub, *, png: bool = False) -> set[str]:
    r = fake.repo()
    ids = {REPO}
    ids |= {f"{REPO}:file:{p}" for p in r.files if png or not p.endswith(".png")}
    ids |= {f"{REPO}:issue:{n}" for n in r.issues}
    ids |= {f"{REPO}:comment:{c}" for c in r.comments}
    return ids


async def test_full_sync_many_pages(api: FakeAPI, http: HttpClient, tmp_path: Path) -> None:
    fake = FakeGitHub()
    fake.mount(api)
    ds = tmp_path / "kb.lance"
    report = await sync(source(api), ds, http)
    assert report.error is None
    rows = by_source_id(ds)
    assert set(rows) == expected_ids(fake)
    stats = report.sources["github"]
    assert stats.skipped >= 1  # assets/logo.png is binary
    assert stats.checkpoints >= 5 + 4  # 5 file chunks, 4 issue pages

    issue_pages = api.requests_for("GET", "*/issues")
    assert len(issue_pages) == 4
    assert issue_pages[0].path == f"/repos/{REPO}/issues"
    assert all(r.path.startswith("/repositories/") for r in issue_pages[1:])
    assert issue_pages[0].query["sort"] == "updated" and issue_pages[0].query["direction"] == "asc"
    assert issue_pages[0].query["state"] == "all"
    for r in api.requests:
        assert r.headers["Authorization"] == f"Bearer {DEMO_TOKEN}"
        assert r.headers["Accept"] == "application/vnd.github+json"
        assert r.headers["X-GitHub-Api-Version"] == "2022-11-28"

    f = rows[f"{REPO}:file:docs/testing.md"]
    assert f["text_content"] == fake.repo().files["docs/testing.md"].decode()
    assert f["title"] == "docs/testing.md"
    assert f["source_url"] == "https://github.com/acme/handbook/blob/main/docs/testing.md"
    m = meta(f)
    assert m["github_path"] == "docs/testing.md"
    assert m["github_sha"] == git_blob_sha(fake.repo().files["docs/testing.md"])
    assert f["collection"] == REPO

    pr = rows[f"{REPO}:issue:4"]
    assert meta(pr)["github_kind"] == "pull_request"
    assert meta(rows[f"{REPO}:issue:1"])["github_kind"] == "issue"
    issue = fake.repo().issues[5]
    row = rows[f"{REPO}:issue:5"]
    assert row["title"] == issue["title"] and row["text_content"] == issue["body"]
    assert row["author"] == issue["user"] and row["status"] == "closed"
    assert row["tags"] == issue["labels"]
    assert row["source_updated_at"].isoformat().startswith(issue["updated_at"][:19])


async def test_relationships_and_collection_header(
    api: FakeAPI, http: HttpClient, tmp_path: Path
) -> None:
    fake = FakeGitHub(files=3, issues=6)
    fake.mount(api)
    ds = tmp_path / "kb.lance"
    await sync(source(api), ds, http)
    rows = by_source_id(ds)
    header = rows[REPO]
    assert header["record_type"] == "collection_header"
    assert header["uuid"] == uid(REPO)
    assert header["text_content"] == fake.repo().description
    for sid, row in rows.items():
        if sid == REPO:
            continue
        rels = {(r["type"], r["id"]) for r in row["relationships"]}
        assert ("member_of", uid(REPO)) in rels, sid
        assert row["collection_id"] == uid(REPO)
    comments = list(fake.repo().comments.values())
    assert comments
    for c in comments:
        row = rows[f"{REPO}:comment:{c['id']}"]
        assert {"type": "parent", "id": uid(f"{REPO}:issue:{c['issue']}")}.items() <= {
            k: v for r in row["relationships"] if r["type"] == "parent" for k, v in r.items()
        }.items()
        parent = rows[f"{REPO}:issue:{c['issue']}"]
        children = {r["id"] for r in parent["relationships"] if r["type"] == "child"}
        assert uid(f"{REPO}:comment:{c['id']}") in children


async def test_incremental_fetches_only_changes_and_equals_full_sync(
    api: FakeAPI, http: HttpClient, tmp_path: Path
) -> None:
    fake = FakeGitHub()
    fake.mount(api)
    ds = tmp_path / "kb.lance"
    await sync(source(api), ds, http)

    repo = fake.repo()
    new_shas = {
        fake.edit_file("docs/testing.md", "# Testing\n\nRewritten.\n"),
        fake.edit_file("README.md", "# Handbook v2\n"),
        fake.add_file("docs/new-page.md", "# New page\n"),
    }
    fake.delete_file("docs/security.md")
    edited = next(c for c, v in repo.comments.items() if v["issue"] == 2)
    fake.edit_comment(edited, "Edited text of a comment")  # before the newer changes below
    fake.edit_issue(7, title="Renamed issue", labels=["question"])
    cid = fake.add_comment(9, "A new comment")
    old_comment = next(c for c, v in repo.comments.items() if v["issue"] == 3)
    fake.delete_comment(old_comment)

    api.clear()
    report = await sync(source(api), ds, http)
    stats = report.sources["github"]
    blobs = {r.path.rsplit("/", 1)[-1] for r in api.requests_for("GET", "*/git/blobs/*")}
    assert blobs == new_shas
    per_issue = {r.path for r in api.requests_for("GET", "*/issues/*/comments")}
    # 9 got a comment, 3 lost one; 7 (edited) has none; 2's edited comment comes from the
    # repo-wide ?since= pass
    assert per_issue == {f"/repos/{REPO}/issues/{n}/comments" for n in (3, 9)}
    assert len(api.requests_for("GET", "*/issues/comments")) == 1
    assert stats.skipped_unchanged >= 20
    assert stats.tombstones >= 2  # the deleted file and the deleted comment

    rows = by_source_id(ds)
    assert f"{REPO}:file:docs/security.md" not in rows
    assert f"{REPO}:comment:{old_comment}" not in rows
    assert rows[f"{REPO}:comment:{cid}"]["text_content"] == "A new comment"
    assert rows[f"{REPO}:comment:{edited}"]["text_content"] == "Edited text of a comment"
    assert rows[f"{REPO}:issue:7"]["title"] == "Renamed issue"
    assert set(rows) == expected_ids(fake)

    fresh = tmp_path / "fresh.lance"
    await sync(source(api), fresh, http)
    assert hashes(ds) == hashes(fresh)

    api.clear()
    again = await sync(source(api), ds, http)
    assert again.sink.inserted == again.sink.updated == again.sink.deleted == 0
    assert again.sources["github"].fetched == 0  # not even the repository header
    assert not api.requests_for("GET", "*/git/blobs/*")
    assert not api.requests_for("GET", "*/issues/*/comments")


async def test_filters_state_labels_and_file_globs(
    api: FakeAPI, http: HttpClient, tmp_path: Path
) -> None:
    fake = FakeGitHub()
    fake.mount(api)
    ds = tmp_path / "kb.lance"
    src = source(
        api,
        content=["files", "issues"],
        state="open",
        labels=["bug"],
        path="docs",
        include=["**/*.md"],
        exclude=["docs/teams/**"],
    )
    await sync(src, ds, http)
    repo = fake.repo()

    def wanted() -> set[str]:
        return {
            f"{REPO}:issue:{n}"
            for n, i in repo.issues.items()
            if i["state"] == "open" and "bug" in i["labels"] and not i["pull_request"]
        }

    rows = by_source_id(ds)
    issues = {s for s in rows if ":issue:" in s}
    assert issues == wanted() and issues
    files = {s.split(":file:")[1] for s in rows if ":file:" in s}
    assert files == {p for p in repo.files if p.startswith("docs/") and "/teams/" not in p}

    # an issue that stops matching (closed) disappears on the incremental sync
    gone = min(int(s.rsplit(":", 1)[1]) for s in issues)
    fake.edit_issue(gone, state="closed")
    await sync(src, ds, http)
    rows = by_source_id(ds)
    assert {s for s in rows if ":issue:" in s} == wanted()
    fresh = tmp_path / "fresh.lance"
    await sync(
        source(
            api,
            content=["files", "issues"],
            state="open",
            labels=["bug"],
            path="docs",
            include=["**/*.md"],
            exclude=["docs/teams/**"],
        ),
        fresh,
        http,
    )
    assert hashes(ds) == hashes(fresh)


async def test_rate_limit_and_server_error_mid_sync(
    api: FakeAPI, http: HttpClient, tmp_path: Path
) -> None:
    fake = FakeGitHub()
    fake.mount(api)
    clean = tmp_path / "clean.lance"
    await sync(source(api), clean, http)

    repo_id = fake.repo().id
    # GitHub's signals: a secondary limit (429 + retry-after), a primary limit (403, remaining 0)
    api.faults.script(
        "GET",
        f"/repositories/{repo_id}/issues",
        [
            Fault.rate_limit(
                20,
                body={"message": "You have exceeded a secondary rate limit."},
                headers={"x-ratelimit-remaining": "4000"},
            ),
        ],
    )
    reset = int(http.clock()) + 30
    api.faults.script(
        "GET",
        "/repos/{o}/{r}/git/blobs/{sha}",
        [
            500,
            Fault.rate_limit(
                None,
                status=403,
                body={"message": "API rate limit exceeded for user."},
                headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)},
            ),
        ],
    )
    api.faults.script("GET", "/repos/{o}/{r}/issues/{n}/comments", [502])
    ds = tmp_path / "kb.lance"
    report = await sync(source(api), ds, http)
    assert report.error is None and report.dead_lettered == 0
    assert api.faults.pending() == 0
    retries = http.metrics.retries
    assert retries.get("rate_limited", 0) >= 2
    assert retries.get("http_500") == 1 and retries.get("http_502") == 1
    assert hashes(ds) == hashes(clean)


async def test_malformed_items_go_to_dead_letters(
    api: FakeAPI, http: HttpClient, tmp_path: Path
) -> None:
    fake = FakeGitHub(files=5, issues=12)
    fake.malform_issue(5, title=None)
    fake.malform_issue(6, updated_at="not a date")
    fake.mount(api)
    ds = tmp_path / "kb.lance"
    report = await sync(source(api), ds, http)
    assert report.error is None
    letters = read_dead_letters(ds / "_cfstream" / "dead-letters.jsonl")
    bad = {d["source_id"] for d in letters}
    assert bad == {f"{REPO}:issue:5", f"{REPO}:issue:6"}
    assert any("title" in d["error"] for d in letters)
    assert report.dead_lettered == 2
    rows = by_source_id(ds)
    assert f"{REPO}:issue:5" not in rows and f"{REPO}:issue:4" in rows
    assert set(rows) == expected_ids(fake) - bad
    assert DEMO_TOKEN not in (ds / "_cfstream" / "dead-letters.jsonl").read_text()


async def test_bad_token_fails_with_a_clear_auth_error(
    api: FakeAPI, http: HttpClient, tmp_path: Path
) -> None:
    fake = FakeGitHub(files=2, issues=2)
    fake.mount(api)
    wrong = "ghp_WRONGtoken1234567890abcdef"
    with pytest.raises(AuthError) as info:
        await sync(source(api, token=wrong), tmp_path / "kb.lance", http)
    message = str(info.value)
    assert "401" in message and "token" in message and "repo" in message
    assert wrong not in message and "Bad credentials" in message
    assert not (tmp_path / "kb.lance" / "data").exists()


async def test_unauthenticated_public_repo_and_private_repo(
    api: FakeAPI, http: HttpClient, tmp_path: Path
) -> None:
    fake = FakeGitHub(files=3, issues=4)
    fake.add_repo("acme", "secret", files=1, issues=1, private=True)
    fake.mount(api)
    ds = tmp_path / "kb.lance"
    report = await sync(source(api, token=None), ds, http)
    assert report.error is None
    assert all("Authorization" not in r.headers for r in api.requests)
    assert set(by_source_id(ds)) == expected_ids(fake)
    with pytest.raises(NotFoundError):
        await sync(source(api, token=None, repo="secret", name="s"), tmp_path / "s.lance", http)


async def test_truncated_tree_is_walked_folder_by_folder(
    api: FakeAPI, http: HttpClient, tmp_path: Path
) -> None:
    fake = FakeGitHub(files=12, issues=0, truncate_tree_over=5)
    fake.mount(api)
    ds = tmp_path / "kb.lance"
    await sync(source(api, content=["files"]), ds, http)
    files = {s.split(":file:")[1] for s in by_source_id(ds) if ":file:" in s}
    assert files == {p for p in fake.repo().files if not p.endswith(".png")}
    assert len(api.requests_for("GET", "*/git/trees/*")) > 1


async def test_done_when_250_issues_then_5_changed_2_deleted_10_updated(
    api: FakeAPI, http: HttpClient, tmp_path: Path
) -> None:
    """Issue 4's GitHub acceptance check."""
    fake = FakeGitHub(files=40, issues=250)
    fake.mount(api)
    repo = fake.repo()
    ds = tmp_path / "kb.lance"
    opts: dict[str, Any] = {"per_page": 100, "checkpoint_every": 12}
    first = await sync(source(api, **opts), ds, http)
    assert first.error is None
    assert len(api.requests_for("GET", "*/issues")) == 3  # 250 issues: 3 Link pages
    assert len(api.requests_for("GET", "*/git/blobs/*")) == 41  # 40 text files + the png
    assert first.sources["github"].checkpoints >= 3 + 4
    prs = [n for n, i in repo.issues.items() if i["pull_request"]]
    assert prs and len(prs) < 250

    texts = sorted(p for p in repo.files if p.endswith((".md", ".py")))
    changed = {fake.edit_file(p, f"# changed {p}\n") for p in texts[:5]}
    for p in texts[5:7]:
        fake.delete_file(p)
    updated = sorted(repo.issues)[100:110]
    for n in updated:
        fake.edit_issue(n, body=f"updated body of #{n}")

    api.clear()
    second = await sync(source(api, **opts), ds, http)
    assert second.error is None
    blobs = {r.path.rsplit("/", 1)[-1] for r in api.requests_for("GET", "*/git/blobs/*")}
    assert blobs == changed
    listed = api.requests_for("GET", "*/issues")
    assert len(listed) == 1 and listed[0].query["since"]
    per_issue = {int(r.path.split("/")[-2]) for r in api.requests_for("GET", "*/issues/*/comments")}
    assert per_issue <= set(updated)
    assert per_issue == {n for n in updated if repo.issues[n]["comments"]}
    assert second.sources["github"].tombstones == 2
    assert second.sink.deleted == 2

    fresh = tmp_path / "fresh.lance"
    await sync(source(api, **opts), fresh, http)
    assert hashes(ds) == hashes(fresh)
    assert len(hashes(ds)) == len(expected_ids(fake))


async def test_real_github_payloads_replay(api: FakeAPI, http: HttpClient, tmp_path: Path) -> None:
    """The recorded api.github.com payloads in ../shared/fixtures go through the connector."""
    gh = FIXTURES / "github"
    if not gh.is_dir():
        pytest.skip("../shared/fixtures/github is not present")
    rec = gh / "recorded"

    def load(name: str) -> Any:
        return json.loads((rec / name).read_text())

    def link(name: str, **swap: str) -> dict[str, str]:
        value = load(name)["headers"]["Link"].replace("https://api.github.com", api.url)
        for old, new in swap.items():
            value = value.replace(old, new)
        return {"Link": value}

    owner, name = "octokit-fixture-org", "tmp-scenario-paginate-issues-20220719043836917-izyoe"
    p1, p2, p5 = (load(f"issues-list.{x}.json") for x in ("page-1", "page-2", "page-5-last"))
    api.route("GET", f"/repos/{owner}/{name}", {"full_name": f"{owner}/{name}"})
    api.route(
        "GET",
        f"/repos/{owner}/{name}/issues",
        Reply(p1, headers=link("issues-list.page-1.headers.json")),
    )

    def later(request: Any) -> Reply:
        if request.query.get("page") == "2":  # pages 3 and 4 were not recorded: skip to 5
            return Reply(
                p2, headers=link("issues-list.page-2.headers.json", **{"page=3": "page=5"})
            )
        return Reply(p5, headers=link("issues-list.page-5-last.headers.json"))

    api.route("GET", "/repositories/515435940/issues", later)
    ds = tmp_path / "kb.lance"
    src = source(api, owner=owner, repo=name, content=["issues"], comments=False)
    report = await sync(src, ds, http)
    assert report.error is None
    rows = by_source_id(ds)
    numbers = sorted(i["number"] for i in p1 + p2 + p5)
    assert sorted(int(s.rsplit(":", 1)[1]) for s in rows if ":issue:" in s) == numbers
    first = rows[f"{owner}/{name}:issue:{p1[0]['number']}"]
    assert first["title"] == p1[0]["title"] and first["author"] == p1[0]["user"]["login"]

    # PRs told apart by the pull_request key; comments point at their issue
    src = GitHubSource(owner="sferik", repo="rails_admin", content=["issues", "pulls"])
    from cfstream.sources.github import _Repo

    mixed = load("issues-list.mixed-prs.json")
    kinds = {i["number"]: meta_of(src.map_issue(_Repo("sferik", "rails_admin"), i)) for i in mixed}
    assert {n for n, k in kinds.items() if k == "pull_request"} == {2741, 2737}
    octo = _Repo("octokit", "octokit.rb")
    for c in load("issues-comments.repo-wide.json"):
        number, doc = src.map_comment(octo, c)
        assert c["issue_url"].endswith(f"/issues/{number}")
        assert doc.relationships and doc.relationships[0].type == "parent"
        assert doc.relationships[0].id == uid(f"octokit/octokit.rb:issue:{number}")

    # the recursive tree and a base64 blob (newline every 60 characters)
    tree = load("git-tree.recursive.json")
    blob = load("contents-file.base64.json")
    api.route(
        "GET",
        "/repos/sferik/rails_admin",
        {
            "full_name": "sferik/rails_admin",
            "default_branch": "master",
            "html_url": "https://github.com/sferik/rails_admin",
        },
    )
    # every file is served the one recorded blob: the tree names that blob's real sha and size,
    # since downloads are checked against them
    for e in tree["tree"]:
        if e["type"] == "blob":
            e.update(sha=blob["sha"], size=blob["size"])
    api.route("GET", "/repos/sferik/rails_admin/git/trees/master", tree)
    api.route(
        "GET",
        "/repos/sferik/rails_admin/git/blobs/{sha}",
        lambda r: {
            "sha": r.match_info["sha"],
            "size": blob["size"],
            "content": blob["content"],
            "encoding": "base64",
        },
    )
    ds2 = tmp_path / "files.lance"
    files_src = source(
        api,
        owner="sferik",
        repo="rails_admin",
        content=["files"],
        include=["app/**/*.rb"],
        name="f",
    )
    await sync(files_src, ds2, http)
    got = {s.split(":file:")[1]: r for s, r in by_source_id(ds2).items() if ":file:" in s}
    lib = {e["path"] for e in tree["tree"] if e["type"] == "blob" and e["path"].endswith(".rb")}
    assert set(got) == lib and lib
    assert all(r["text_content"].startswith("require 'netrc'") for r in got.values())


def meta_of(doc: Any) -> str:
    return str(doc.custom_metadata["github_kind"])


def test_config_errors_name_the_option() -> None:
    with pytest.raises(ConfigError, match="repo"):
        GitHubSource(owner="acme")
    with pytest.raises(ConfigError, match="colour"):
        GitHubSource.from_config({"repo": "acme/x", "colour": "red"})
    with pytest.raises(ConfigError, match="content"):
        GitHubSource(repo="acme/x", content=["wiki"])  # type: ignore[list-item]
    src = GitHubSource.from_config(
        {"owner": "acme", "repos": ["a", "other/b"], "token": "ghp_x1234567890"}, name="gh"
    )
    assert [r.full for r in src.repos] == ["acme/a", "other/b"]
    assert "ghp_x1234567890" not in repr(src.config)


async def test_demo_hooks_sync_then_change(api: FakeAPI, http: HttpClient, tmp_path: Path) -> None:
    fake = fakes_github.mount(api)
    options = fakes_github.demo_config(api.url)
    options.pop("type")
    options["requests_per_second"] = None
    ds = tmp_path / "demo.lance"
    first = await sync(GitHubSource.from_config(options), ds, http)
    assert first.error is None and first.sink.inserted > 50
    second = await sync(GitHubSource.from_config(options), ds, http)
    assert second.sink.inserted == second.sink.updated == 0
    changed = fakes_github.demo_change(fake)
    assert len(changed) >= 5
    third = await sync(GitHubSource.from_config(options), ds, http)
    assert third.sink.inserted >= 2 and third.sink.deleted == 1
    assert third.sink.upserted <= 12


# -- hostile answers: nothing lost, nothing stuck --------------------------------------------------


def _bad_reply(kind: str, good: bytes = b"") -> Reply:
    """A persistent failure: 500, an empty 200, or a blob answer whose content is cut short."""
    if kind == "500":
        return Reply({"message": "Server Error"}, status=500)
    if kind == "empty":
        return Reply(body=b"", content_type="application/json")
    short = good[: len(good) // 2]
    return Reply(
        {
            "sha": git_blob_sha(good),
            "size": len(good),
            "content": base64.b64encode(short).decode(),
            "encoding": "base64",
        }
    )


@pytest.mark.parametrize("kind", ["500", "empty", "short"])
async def test_blob_that_keeps_failing_is_fetched_again_next_run(
    api: FakeAPI, http: HttpClient, tmp_path: Path, kind: str
) -> None:
    """A blob that fails for a transient reason after the retries (5xx, empty 200, a body shorter
    than the blob's size) is neither stored, nor dead-lettered, nor marked done: the run says so
    and the next run fetches it. (``empty`` also holds with the HTTP client retrying empty 200s.)"""
    fake = FakeGitHub(files=8, issues=0)
    fake.mount(api)
    path = "docs/testing.md"
    good = fake.repo().files[path]
    blob_url = f"/repos/{REPO}/git/blobs/{git_blob_sha(good)}"
    api.route("GET", blob_url, _bad_reply(kind, good))
    ds = tmp_path / "kb.lance"
    src = source(api, content=["files"])

    first = await sync(src, ds, http)
    assert first.error is None and first.dead_lettered == 0
    assert first.sources["github"].retry_next_run == 1
    assert not first.ok and exit_code(first) == EXIT_PARTIAL
    rows = by_source_id(ds)
    assert f"{REPO}:file:{path}" not in rows
    others = {f"{REPO}:file:{p}" for p in fake.repo().files if p != path and p.endswith(".md")}
    assert others and others <= set(rows)  # the rest of the tree flowed

    fake.mount(api)  # healthy again
    api.clear()
    second = await sync(src, ds, http)
    assert second.ok, second
    assert [r.path for r in api.requests_for("GET", "*/git/blobs/*")] == [blob_url]
    assert by_source_id(ds)[f"{REPO}:file:{path}"]["text_content"] == good.decode()

    clean = tmp_path / "clean.lance"
    await sync(source(api, content=["files"]), clean, http)
    assert hashes(ds) == hashes(clean)


async def test_short_blob_once_is_retried_not_stored(
    api: FakeAPI, http: HttpClient, tmp_path: Path
) -> None:
    """A blob answer shorter than its stated size (and so with another git sha) is fetched again;
    the good content is stored."""
    fake = FakeGitHub(files=8, issues=0)
    fake.mount(api)
    path = "docs/testing.md"
    good = fake.repo().files[path]
    blob_url = f"/repos/{REPO}/git/blobs/{git_blob_sha(good)}"
    short = _bad_reply("short", good).data
    api.faults.script("GET", blob_url, [Fault.error(200, body=short)])
    ds = tmp_path / "kb.lance"
    report = await sync(source(api, content=["files"]), ds, http)
    assert api.faults.pending() == 0
    assert report.ok, report
    assert by_source_id(ds)[f"{REPO}:file:{path}"]["text_content"] == good.decode()
    assert http.metrics.retries.get("content_mismatch") == 1


@pytest.mark.parametrize("kind", ["500", "empty"])
async def test_failed_comments_page_keeps_the_stored_comments(
    api: FakeAPI, http: HttpClient, tmp_path: Path, kind: str
) -> None:
    """A comments page of one issue that fails (a 5xx after the retries, or an empty 200) is no
    answer: the issue's stored comments are not tombstoned, nothing is dead-lettered, and the next
    healthy run fetches that issue's comments again. (``empty`` also holds with the HTTP client
    retrying empty 200s.)"""
    fake = FakeGitHub(files=0, issues=12)
    fake.mount(api)
    repo = fake.repo()
    number = next(n for n, i in repo.issues.items() if i["comments"] >= 2)
    ds = tmp_path / "kb.lance"
    src = source(api, content=["issues", "pulls"])
    assert (await sync(src, ds, http)).ok
    before = {c for c, v in repo.comments.items() if v["issue"] == number}
    assert {f"{REPO}:comment:{c}" for c in before} <= set(by_source_id(ds))

    new = fake.add_comment(number, "One more thing.")  # the issue's updated_at moves
    api.route("GET", f"/repos/{REPO}/issues/{number}/comments", _bad_reply(kind))
    second = await sync(src, ds, http)
    assert second.error is None and second.dead_lettered == 0
    assert second.sources["github"].tombstones == 0 and second.sink.deleted == 0
    assert second.sources["github"].retry_next_run == 1
    assert not second.ok and exit_code(second) == EXIT_PARTIAL
    assert {f"{REPO}:comment:{c}" for c in before} <= set(by_source_id(ds))

    fake.mount(api)  # healthy again
    third = await sync(src, ds, http)
    assert third.ok, third
    assert f"{REPO}:comment:{new}" in by_source_id(ds)
    clean = tmp_path / "clean.lance"
    await sync(source(api, content=["issues", "pulls"]), clean, http)
    assert hashes(ds) == hashes(clean)


# -- per-file bookkeeping in the item store ----------------------------------------------------

FILES = f"{REPO}:files"


def file_entries(ds: Path) -> dict[str, Any]:
    store = StateStore.for_dataset(str(ds))
    try:
        return dict(store.items.entries("github", FILES))
    finally:
        store.items.close()


async def test_file_shas_live_in_the_item_store_not_in_the_cursor(
    api: FakeAPI, http: HttpClient, tmp_path: Path
) -> None:
    fake = FakeGitHub(files=12, issues=0)
    fake.mount(api)
    ds = tmp_path / "kb.lance"
    await sync(source(api, content=["files"]), ds, http)
    cursor = StateStore.for_dataset(str(ds)).cursor("github", FILES)
    assert cursor is not None
    assert not any(isinstance(v, Mapping | list) for v in cursor.values()), cursor
    entries = file_entries(ds)
    repo = fake.repo()
    assert entries == {
        p: ["b" if p.endswith(".png") else "f", git_blob_sha(data)]
        for p, data in repo.files.items()
    }
    assert cursor["n_files"] == 12 and cursor["n_binary"] == 1
    # named values (`cfstream status` reads a cursor of more than six keys as a map of items)
    assert len(cursor) <= 6

    # nothing changed: no blob fetched, no checkpoint (nothing written to the state)
    api.clear()
    again = await sync(source(api, content=["files"]), ds, http)
    stats = again.sources["github"]
    assert not api.requests_for("GET", "*/git/blobs/*")
    assert stats.checkpoints == 0 and stats.fetched == 0
    assert stats.skipped_unchanged == 12 + 1  # the files and the repository header
    assert file_entries(ds) == entries

    # one edit, one deletion: one blob fetched, two entries changed
    path = next(p for p in sorted(repo.files) if p.endswith(".md"))
    gone = next(p for p in sorted(repo.files, reverse=True) if p.endswith(".md"))
    sha = fake.edit_file(path, "# edited\n")
    fake.delete_file(gone)
    api.clear()
    third = await sync(source(api, content=["files"]), ds, http)
    assert [r.path.rsplit("/", 1)[-1] for r in api.requests_for("GET", "*/git/blobs/*")] == [sha]
    assert third.sources["github"].tombstones == 1
    now = file_entries(ds)
    assert now[path] == ["f", sha] and gone not in now
    assert StateStore.for_dataset(str(ds)).cursor("github", FILES)["n_files"] == 11  # type: ignore[index]


async def test_an_old_files_cursor_with_every_sha_migrates_to_the_item_store(
    api: FakeAPI, http: HttpClient, tmp_path: Path
) -> None:
    fake = FakeGitHub(files=12, issues=0)
    fake.mount(api)
    ds = tmp_path / "kb.lance"
    await sync(source(api, content=["files"]), ds, http)
    entries = file_entries(ds)
    # the state as cfstream wrote it before the item store: the maps in the cursor
    store = StateStore.for_dataset(str(ds))
    data = store.load()
    cursor = data["sources"]["github"]["partitions"][FILES]
    for key in ("n_files", "n_binary"):
        cursor.pop(key)
    cursor["files"] = {p: s for p, (k, s) in entries.items() if k == "f"}
    cursor["binary"] = {p: s for p, (k, s) in entries.items() if k == "b"}
    store.items.close()
    for f in (ds / "_cfstream").glob("state.items.sqlite*"):
        f.unlink()
    (ds / "_cfstream" / "state.json").write_text(json.dumps(data))

    api.clear()
    report = await sync(source(api, content=["files"]), ds, http)
    stats = report.sources["github"]
    assert not api.requests_for("GET", "*/git/blobs/*")  # the tree did not move: nothing read
    assert stats.fetched == 0 and stats.skipped_unchanged == 12 + 1
    assert file_entries(ds) == entries
    cursor = StateStore.for_dataset(str(ds)).cursor("github", FILES)
    assert cursor is not None and "files" not in cursor and cursor["n_files"] == 12

    path = next(p for p in sorted(entries) if p.endswith(".md"))
    sha = fake.edit_file(path, "# edited after the migration\n")
    api.clear()
    await sync(source(api, content=["files"]), ds, http)
    assert [r.path.rsplit("/", 1)[-1] for r in api.requests_for("GET", "*/git/blobs/*")] == [sha]
