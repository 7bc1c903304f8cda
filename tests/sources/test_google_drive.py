"""GoogleDriveSource against the fake Drive v3 API on 127.0.0.1, into real Lance datasets."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import lance
import pytest
from aiohttp import web

from cfstream.contract.deadletter import read_dead_letters
from cfstream.contract.report import RunReport
from cfstream.contract.state import StateStore
from cfstream.errors import AuthError, ClientError, ConfigError, PaginationLoopError
from cfstream.http import HttpClient, RetryPolicy
from cfstream.records import record_uuid
from cfstream.sinks import LanceSink
from cfstream.sources import load_source_class
from cfstream.sources.google_drive import FILE_FIELDS, GoogleDriveSource
from cfstream.testing import FakeAPI, Fault, Reply
from cfstream.testing.fakes.google_drive import (
    DOC,
    FOLDER,
    ROOT_ID,
    SHARED_DRIVE_ID,
    FakeGoogleDrive,
    parse_fields,
)

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "google-drive"
ST = "google_drive"


def uid(file_id: str) -> str:
    return record_uuid(ST, file_id)


@pytest.fixture
async def api() -> AsyncIterator[FakeAPI]:
    async with FakeAPI() as server:
        yield server


@pytest.fixture
def fake(api: FakeAPI) -> FakeGoogleDrive:
    drive = FakeGoogleDrive()
    drive.mount(api)
    return drive


@pytest.fixture
async def http() -> AsyncIterator[HttpClient]:
    retry = RetryPolicy(
        max_tries=4, base=0.01, max_backoff=0.02, rate_limit_floor=0.01, jitter=False
    )
    async with HttpClient(timeout=10, retry=retry) as client:
        yield client


def source(fake: FakeGoogleDrive, api: FakeAPI, **options: Any) -> GoogleDriveSource:
    config = fake.demo_config(api.url)
    config.update(options)
    config.setdefault("page_size", 4)
    config.setdefault("requests_per_second", 1000.0)  # see test_request_budget_is_kept
    return GoogleDriveSource(**config)


async def sync(src: GoogleDriveSource, ds: Path, http: HttpClient) -> RunReport:
    return await (src | LanceSink(str(ds))).run(http=http)


def rows(ds: Path) -> dict[str, dict[str, Any]]:
    table = lance.dataset(str(ds)).to_table()
    return {r["source_id"]: r for r in table.to_pylist()}


def hashes(ds: Path) -> list[tuple[str, str]]:
    t = lance.dataset(str(ds)).to_table(columns=["uuid", "content_hash"])
    return sorted(
        zip(t.column("uuid").to_pylist(), t.column("content_hash").to_pylist(), strict=True)
    )


def meta(row: dict[str, Any]) -> dict[str, str]:
    return {m["key"]: m["value"] for m in row["custom_metadata"]}


def content_requests(api: FakeAPI) -> list[str]:
    """File ids whose content was fetched (exports and alt=media downloads)."""
    out = []
    for r in api.requests:
        parts = r.path.split("/")
        if r.path.endswith("/export") or r.query.get("alt") == "media":
            out.append(parts[4])
    return out


# -- full sync -------------------------------------------------------------------------------------


async def test_full_sync_over_many_pages_imports_the_tree_as_documented(
    api: FakeAPI, fake: FakeGoogleDrive, http: HttpClient, tmp_path: Path
) -> None:
    ds = tmp_path / "kb.lance"
    report = await sync(source(fake, api, page_size=3), ds, http)
    assert report.failed_sources == [] and report.dead_lettered == 0

    got = rows(ds)
    assert set(got) == fake.tree_ids(ROOT_ID)  # nothing outside the folder, nothing missing
    assert fake.find("Personal todo") not in got
    # several pages per folder: files.list was called with page tokens
    lists = api.requests_for("GET", "/drive/v3/files")
    assert sum("pageToken" in r.query for r in lists) >= 5
    # the changes token is taken before anything is listed
    paths = [r.path for r in api.requests if r.path.startswith("/drive/v3/")]
    assert paths[0] == "/drive/v3/changes/startPageToken"

    doc = got[fake.find("Streaming ingestion design")]
    assert doc["text_content"].startswith("# Streaming ingestion design\n\n## Goals")
    assert meta(doc)["google_drive_content_format"] == "text/markdown"
    assert doc["tags"] == ["google-doc"] and doc["record_type"] == "document"
    assert doc["author"] == "Ada Lovelace" and doc["collection"] == "Design Docs"
    assert doc["source_url"].startswith("https://docs.google.com/document/d/")
    f = fake.files[fake.find("Streaming ingestion design")]
    assert doc["created_at"] == f["createdTime"][:10]
    assert doc["source_updated_at"].isoformat().startswith(f["modifiedTime"][:19])

    sheet = got[fake.find("Revenue by quarter")]
    assert sheet["text_content"].splitlines()[0] == "quarter,region,revenue"
    assert meta(sheet)["google_drive_content_format"] == "text/csv"
    slides = got[fake.find("Roadmap 2025")]
    assert "H2: embeddings and search" in slides["text_content"]
    assert meta(slides)["google_drive_content_format"] == "text/plain"
    for name, needle in (
        ("notes.txt", "rotate"),
        ("README.md", "# Data folder"),
        ("metrics.csv", "docs_per_s"),
        ("ingest-config.json", '"batch_rows"'),
        ("status.html", "<h1>Status</h1>"),
    ):
        row = got[fake.find(name)]
        assert needle in row["text_content"] and row["tags"] == ["text"], name
    pdf = got[fake.find("architecture.pdf")]
    assert pdf["text_content"] is None and pdf["tags"] == ["binary"]
    assert meta(pdf)["google_drive_content"] == "metadata_only"
    assert meta(pdf)["google_drive_md5"] == fake.files[fake.find("architecture.pdf")]["md5Checksum"]
    assert meta(pdf)["google_drive_size"] == "19"
    # binaries are never downloaded
    assert fake.find("architecture.pdf") not in content_requests(api)
    assert fake.find("whiteboard.png") not in content_requests(api)


async def test_relationships_and_collection_headers(
    api: FakeAPI, fake: FakeGoogleDrive, http: HttpClient, tmp_path: Path
) -> None:
    ds = tmp_path / "kb.lance"
    await sync(source(fake, api), ds, http)
    got = rows(ds)
    design, archive = fake.find("Design Docs"), fake.find("Archive")

    root = got[ROOT_ID]
    assert root["record_type"] == "collection_header" and root["title"] == "Engineering"
    assert root["collection"] == "Engineering" and root["relationships"] == []
    header = got[archive]
    assert header["record_type"] == "collection_header"
    assert header["collection"] == "Archive" and header["collection_id"] == archive
    assert {(r["type"], r["id"]) for r in header["relationships"]} == {
        ("parent", uid(design)),
        ("member_of", uid(design)),
    }
    old = got[fake.find("Old ingestion design (2022)")]
    assert old["uuid"] == uid(fake.find("Old ingestion design (2022)"))
    assert {(r["type"], r["id"]) for r in old["relationships"]} == {
        ("parent", uid(archive)),
        ("member_of", uid(archive)),
    }
    assert old["collection"] == "Archive" and meta(old)["google_drive_parent_id"] == archive
    # every relationship points at a record of the dataset
    uuids = {r["uuid"] for r in got.values()}
    assert all(rel["id"] in uuids for r in got.values() for rel in r["relationships"])
    headers = {k for k, r in got.items() if r["record_type"] == "collection_header"}
    assert headers == {k for k in fake.tree_ids() if fake.files[k]["mimeType"] == FOLDER}


async def test_shortcuts_reference_their_target(
    api: FakeAPI, fake: FakeGoogleDrive, http: HttpClient, tmp_path: Path
) -> None:
    target = fake.find("On-call runbook")
    shortcut = fake.add_shortcut("Runbook (shortcut)", fake.find("Data"), target)
    ds = tmp_path / "kb.lance"
    await sync(source(fake, api, binaries="skip"), ds, http)
    row = rows(ds)[shortcut]
    assert ("reference", uid(target)) in {(r["type"], r["id"]) for r in row["relationships"]}
    assert meta(row)["google_drive_shortcut_target"] == target and row["tags"] == ["shortcut"]


async def test_binaries_skip_leaves_them_out_and_counts_them(
    api: FakeAPI, fake: FakeGoogleDrive, http: HttpClient, tmp_path: Path
) -> None:
    ds = tmp_path / "kb.lance"
    report = await sync(source(fake, api, binaries="skip"), ds, http)
    got = rows(ds)
    skipped = {fake.find(n) for n in ("architecture.pdf", "whiteboard.png", "Pipeline sketch")}
    assert not skipped & set(got)
    assert report.sources[ST].skipped == 3
    assert set(got) == fake.tree_ids() - skipped


async def test_export_limits_fall_back_and_keep_metadata(
    api: FakeAPI, fake: FakeGoogleDrive, http: HttpClient, tmp_path: Path
) -> None:
    fake.export_limit = 200  # the design doc's markdown is longer: Drive refuses to export it
    plain = fake.add_file("Plain only", DOC, fake.find("Runbooks"), "# Plain\n\nbody\n")
    ds = tmp_path / "kb.lance"

    async def no_markdown(request: Any) -> Any:  # an older Drive without markdown export
        from cfstream.testing import Reply

        if request.match_info["file_id"] == plain and request.query["mimeType"] == "text/markdown":
            return Reply(
                {
                    "error": {
                        "errors": [
                            {
                                "domain": "global",
                                "reason": "badRequest",
                                "message": "The requested conversion is not supported.",
                            }
                        ],
                        "code": 400,
                        "message": "The requested conversion is not supported.",
                    }
                },
                status=400,
            )
        return fake._export(request)

    api.route("GET", "/drive/v3/files/{file_id}/export", no_markdown)
    report = await sync(source(fake, api, max_export_bytes=150), ds, http)
    assert report.failed_sources == []
    got = rows(ds)
    big = got[fake.find("Streaming ingestion design")]
    assert big["text_content"] is None and meta(big)["google_drive_content"] == "export_refused"
    fallback = got[plain]
    assert fallback["text_content"] == "Plain\n\nbody\n"
    assert meta(fallback)["google_drive_content_format"] == "text/plain"
    # a downloaded file over max_export_bytes keeps its metadata only, without a download
    fake.edit_file(fake.find("notes.txt"), "x" * 400)
    api.clear()
    await sync(source(fake, api, max_export_bytes=150), ds, http)
    notes = rows(ds)[fake.find("notes.txt")]
    assert notes["text_content"] is None and meta(notes)["google_drive_content"] == "too_large"
    assert content_requests(api) == []


# -- incremental -----------------------------------------------------------------------------------


async def test_incremental_fetches_only_changes(
    api: FakeAPI, fake: FakeGoogleDrive, http: HttpClient, tmp_path: Path
) -> None:
    ds = tmp_path / "kb.lance"
    await sync(source(fake, api), ds, http)
    runbook, notes = fake.find("On-call runbook"), fake.find("notes.txt")
    fake.edit_file(runbook, "# On-call runbook\n\n1. Breathe.\n")
    added = fake.add_file("todo.md", "text/markdown", fake.find("Data"), "- [ ] ship it\n")
    fake.touch_metadata(notes)  # only `version` moves: content is not fetched again
    fake.add_file("Elsewhere", DOC, None, "# not in the tree\n")  # outside: ignored
    api.clear()

    report = await sync(source(fake, api), ds, http)
    assert sorted(content_requests(api)) == sorted([runbook, added])
    assert api.requests_for("GET", "/drive/v3/files") == []  # no listing: the feed says it all
    assert [r.query["pageToken"] for r in api.requests_for("GET", "/drive/v3/changes")] == ["1001"]
    stats = report.sources[ST]
    assert stats.fetched == 2 and stats.skipped_unchanged == 1
    got = rows(ds)
    assert got[runbook]["text_content"].endswith("1. Breathe.\n")
    assert got[added]["text_content"] == "- [ ] ship it\n"

    api.clear()  # a third sync with nothing new: one changes call, nothing else
    report = await sync(source(fake, api), ds, http)
    assert [r.path for r in api.requests if r.path != "/token"] == ["/drive/v3/changes"]
    assert report.sources[ST].fetched == 0


async def test_deletions_remove_rows(
    api: FakeAPI, fake: FakeGoogleDrive, http: HttpClient, tmp_path: Path
) -> None:
    ds = tmp_path / "kb.lance"
    await sync(source(fake, api), ds, http)
    deleted, trashed = fake.find("notes.txt"), fake.find("Roadmap 2025")
    archive = fake.find("Archive")
    under_archive = fake.descendants(archive)
    moved_out = fake.find("metrics.csv")
    fake.delete(deleted)
    fake.trash(trashed)
    fake.trash(archive)  # a folder: everything below it goes too
    fake.move(moved_out, None)  # to the My Drive root, outside the synced tree
    runbooks = fake.find("Runbooks")
    under_runbooks = fake.descendants(runbooks)
    fake.move(runbooks, None)  # a folder leaves: only it is in the feed, its files go with it

    report = await sync(source(fake, api), ds, http)
    got = rows(ds)
    gone = {deleted, trashed, archive, moved_out, *under_archive, runbooks, *under_runbooks}
    assert under_archive and under_runbooks and not gone & set(got)
    assert set(got) == fake.tree_ids()
    assert report.sources[ST].tombstones >= len(gone)


async def test_incremental_equals_fresh_full_sync(
    api: FakeAPI, fake: FakeGoogleDrive, http: HttpClient, tmp_path: Path
) -> None:
    inc, fresh = tmp_path / "inc.lance", tmp_path / "fresh.lance"
    await sync(source(fake, api), inc, http)
    design, data, runbooks = fake.find("Design Docs"), fake.find("Data"), fake.find("Runbooks")
    # adds
    fake.add_file("New doc", DOC, design, "# New\n\ntext\n")
    new_folder = fake.add_folder("Postmortems", runbooks)
    fake.add_file("2024-03 outage", DOC, new_folder, "# Outage\n\nroot cause: DNS\n")
    outside = fake.add_folder("Imported", None)
    fake.add_file("imported.txt", "text/plain", outside, "came from elsewhere\n")
    fake.move(outside, data)  # a folder moved into the tree brings its files along
    # edits
    fake.edit_file(fake.find("README.md"), "# Data folder\n\nNow with a schema.\n")
    fake.edit_file(fake.find("Weekly sync 2024-02-03"), "# Weekly sync\n\nCancelled.\n")
    fake.rename(data, "Datasets")  # the folder's files change collection
    fake.move(fake.find("notes.txt"), design)
    fake.move(fake.find("Meeting Notes"), design)  # a folder moves inside the tree
    fake.touch_metadata(fake.find("Revenue by quarter"))
    # deletions
    fake.delete(fake.find("Weekly sync 2024-02-04"))
    fake.trash(fake.find("Archive"))
    fake.move(fake.find("status.html"), None)

    report = await sync(source(fake, api), inc, http)
    assert report.failed_sources == [] and report.sources[ST].tombstones > 0
    await sync(source(fake, api), fresh, http)
    assert hashes(inc) == hashes(fresh)
    assert set(rows(inc)) == fake.tree_ids()
    assert rows(inc)[fake.find("imported.txt")]["collection"] == "Imported"
    assert rows(inc)[fake.find("metrics.csv")]["collection"] == "Datasets"


async def test_resume_mid_full_sync_after_a_crash(
    api: FakeAPI, fake: FakeGoogleDrive, http: HttpClient, tmp_path: Path
) -> None:
    ds, fresh = tmp_path / "kb.lance", tmp_path / "fresh.lance"
    # the 6th listing page fails for good: the run stops with some pages committed
    api.faults.script("GET", "/drive/v3/files", ["ok"] * 5 + [400])
    with pytest.raises(ClientError):
        await sync(source(fake, api), ds, http)
    partial = rows(ds)
    assert 0 < len(partial) < len(fake.tree_ids())
    fake.edit_file(fake.find("On-call runbook"), "# changed while we were down\n")
    api.clear()
    await sync(source(fake, api), ds, http)
    # resumed: the pages committed before the failure were not listed again
    assert len(api.requests_for("GET", "/drive/v3/files")) < 12
    await sync(source(fake, api), fresh, http)
    assert hashes(ds) == hashes(fresh)


# -- faults ----------------------------------------------------------------------------------------


async def test_429_403_rate_limit_and_500_mid_sync_recover(
    api: FakeAPI, fake: FakeGoogleDrive, http: HttpClient, tmp_path: Path
) -> None:
    clean, faulty = tmp_path / "clean.lance", tmp_path / "faulty.lance"
    await sync(source(fake, api), clean, http)
    rate_403 = {
        "error": {
            "errors": [
                {
                    "domain": "usageLimits",
                    "reason": "rateLimitExceeded",
                    "message": "Rate Limit Exceeded",
                }
            ],
            "code": 403,
            "message": "Rate Limit Exceeded",
        }
    }
    api.clear()
    api.faults.script(
        "GET",
        "/drive/v3/files",
        [
            "ok",
            "ok",
            Fault.rate_limit(None, body=rate_403, status=403),
            "ok",
            500,
            "ok",
            Fault.rate_limit(None, status=429),
        ],
    )
    api.faults.script("GET", "/drive/v3/files/{id}/export", ["ok", 503, "ok", 500])
    report = await sync(source(fake, api), faulty, http)
    assert report.failed_sources == []
    assert api.faults.pending() == 0
    assert http.metrics.rate_limited >= 2
    assert hashes(faulty) == hashes(clean)


async def test_malformed_items_are_dead_lettered_and_the_rest_imported(
    api: FakeAPI, fake: FakeGoogleDrive, http: HttpClient, tmp_path: Path
) -> None:
    bad_time = fake.add_file("Bad timestamps", DOC, fake.find("Runbooks"), "# x\n")
    fake.files[bad_time]["modifiedTime"] = "last tuesday"
    bad_utf8 = fake.add_file("latin1.txt", "text/plain", fake.find("Data"), b"caf\xe9 au lait\n")
    ds = tmp_path / "kb.lance"
    report = await sync(source(fake, api), ds, http)
    assert report.failed_sources == [] and report.dead_lettered == 2
    letters = {
        d["source_id"]: d for d in read_dead_letters(ds / "_cfstream" / "dead-letters.jsonl")
    }
    assert set(letters) == {bad_time, bad_utf8}
    assert "RFC 3339" in letters[bad_time]["error"]
    assert "UTF-8" in letters[bad_utf8]["error"]
    assert letters[bad_time]["payload"]["name"] == "Bad timestamps"
    assert set(rows(ds)) == fake.tree_ids() - {bad_time, bad_utf8}
    text = (ds / "_cfstream" / "dead-letters.jsonl").read_text()
    assert fake.refresh_token not in text and fake.client_secret not in text
    assert not any(t in text for t in fake.issued_tokens)


# -- auth ------------------------------------------------------------------------------------------


async def test_bad_refresh_token_fails_with_a_clear_message(
    api: FakeAPI, fake: FakeGoogleDrive, http: HttpClient, tmp_path: Path
) -> None:
    wrong = "1//wrong-refresh-token-do-not-print"
    creds = fake.demo_config(api.url)["credentials"] | {"refresh_token": wrong}
    with pytest.raises(AuthError) as info:
        await sync(source(fake, api, credentials=creds), tmp_path / "kb.lance", http)
    msg = str(info.value)
    assert "invalid_grant" in msg and "credentials.refresh_token" in msg
    assert wrong not in msg and fake.client_secret not in msg
    assert api.requests_for("GET", "/drive/v3/*") == []


async def test_rejected_access_token_names_the_credential(
    api: FakeAPI, fake: FakeGoogleDrive, http: HttpClient, tmp_path: Path
) -> None:
    token = "ya29.not-a-token-the-fake-issued"
    ds = tmp_path / "kb.lance"
    pipeline = source(
        fake, api, credentials={"type": "access_token", "access_token": token}
    ) | LanceSink(str(ds))
    with pytest.raises(AuthError) as info:
        await pipeline.run(http=http)
    msg = str(info.value)
    assert "401" in msg and "credentials.access_token" in msg and "drive.readonly" in msg
    assert token not in msg


async def test_expired_access_token_is_refreshed_mid_sync(
    api: FakeAPI, fake: FakeGoogleDrive, http: HttpClient, tmp_path: Path
) -> None:
    calls = 0
    original = fake._list_files

    def revoke_after_two(request: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:
            fake.revoke_access_tokens()
        return original(request)

    api.route("GET", "/drive/v3/files", revoke_after_two)
    report = await sync(source(fake, api), tmp_path / "kb.lance", http)
    assert report.failed_sources == []
    assert fake.token_requests == 2
    assert set(rows(tmp_path / "kb.lance")) == fake.tree_ids()


async def test_service_account_key_signs_a_jwt(
    api: FakeAPI, fake: FakeGoogleDrive, http: HttpClient, tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    email = "ingest@project.iam.gserviceaccount.com"
    key_file = tmp_path / "sa.json"
    key_file.write_text(
        json.dumps(
            {
                "type": "service_account",
                "client_email": email,
                "private_key": pem,
                "private_key_id": "abc",
            }
        )
    )
    fake.accept_service_account(email, public)
    creds = {"type": "service_account", "key_file": str(key_file)}
    report = await sync(source(fake, api, credentials=creds), tmp_path / "kb.lance", http)
    assert report.failed_sources == []
    assert set(rows(tmp_path / "kb.lance")) == fake.tree_ids()
    # a key the token endpoint does not accept: a clear AuthError without the key in it
    fake.service_accounts.clear()
    with pytest.raises(AuthError) as info:
        await sync(source(fake, api, credentials=creds), tmp_path / "kb2.lance", http)
    assert "service account key" in str(info.value) and "PRIVATE KEY" not in str(info.value)


# -- shared drives, partitions, config -------------------------------------------------------------


async def test_shared_drive_partition(
    api: FakeAPI, fake: FakeGoogleDrive, http: HttpClient, tmp_path: Path
) -> None:
    ds, fresh = tmp_path / "kb.lance", tmp_path / "fresh.lance"
    await sync(source(fake, api, folder_ids=None, drive_id=SHARED_DRIVE_ID), ds, http)
    got = rows(ds)
    assert got[SHARED_DRIVE_ID]["title"] == "Team Drive"
    assert got[fake.find("API spec")]["collection"] == "Specs"
    assert set(got) == fake.tree_ids(SHARED_DRIVE_ID) | {SHARED_DRIVE_ID}
    listing = api.requests_for("GET", "/drive/v3/files")
    assert all(
        r.query.get("corpora") == "drive" and r.query.get("driveId") == SHARED_DRIVE_ID
        for r in listing
    )
    fake.edit_file(fake.find("budget.csv"), "item,eur\nservers,1500\n")
    fake.delete(fake.find("Team charter"))
    fake.edit_file(fake.find("On-call runbook"), "# not in the shared drive\n")
    api.clear()
    await sync(source(fake, api, folder_ids=None, drive_id=SHARED_DRIVE_ID), ds, http)
    assert all(
        r.query.get("driveId") == SHARED_DRIVE_ID
        for r in api.requests_for("GET", "/drive/v3/changes")
    )
    assert content_requests(api) == [fake.find("budget.csv")]
    await sync(source(fake, api, folder_ids=None, drive_id=SHARED_DRIVE_ID), fresh, http)
    assert hashes(ds) == hashes(fresh)


async def test_two_folders_are_two_partitions_with_their_own_cursors(
    api: FakeAPI, fake: FakeGoogleDrive, http: HttpClient, tmp_path: Path
) -> None:
    design, runbooks = fake.find("Design Docs"), fake.find("Runbooks")
    ds = tmp_path / "kb.lance"
    report = await sync(source(fake, api, folder_ids=[design, runbooks]), ds, http)
    assert report.sources[ST].partitions == 2
    assert set(rows(ds)) == fake.tree_ids(design) | fake.tree_ids(runbooks)
    state = json.loads((ds / "_cfstream" / "state.json").read_text())
    text = json.dumps(state)
    assert f"folder:{design}" in text and f"folder:{runbooks}" in text


async def test_request_budget_is_kept(api: FakeAPI, http: HttpClient, tmp_path: Path) -> None:
    fake = FakeGoogleDrive(extra_docs=60)
    fake.mount(api)
    report = await sync(source(fake, api, requests_per_second=40.0), tmp_path / "kb.lance", http)
    assert report.failed_sources == [] and api.meter.count > 100
    api.meter.assert_rate_at_most(40 + 40 + 1, per=1.0)  # burst + 1 s of refill (+ the token call)


def test_config_validation_and_registry() -> None:
    creds = {
        "type": "oauth",
        "client_id": "c",
        "client_secret": "s3cret-value",
        "refresh_token": "r-value",
    }
    assert load_source_class("google_drive") is GoogleDriveSource
    src = GoogleDriveSource.from_config({"folder_ids": ["f1"], "credentials": creds}, name="gd")
    assert src.name == "gd" and "s3cret-value" not in repr(src)
    with pytest.raises(ConfigError, match="either folder_ids"):
        GoogleDriveSource.from_config({"credentials": creds})
    with pytest.raises(ConfigError, match="either folder_ids"):
        GoogleDriveSource(folder_ids=["a"], drive_id="d", credentials=creds)
    with pytest.raises(ConfigError, match="binaries"):
        GoogleDriveSource(folder_ids=["a"], credentials=creds, binaries="download")  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as info:
        GoogleDriveSource.from_config({"folder_ids": ["a"], "credentials": creds, "colour": 1})
    assert "colour" in str(info.value) and "s3cret-value" not in str(info.value)


# -- the real payload shapes -----------------------------------------------------------------------


@pytest.fixture
def discovery() -> dict[str, Any]:
    path = FIXTURES / "discovery.drive-v3.subset.json"
    if not path.is_file():
        pytest.skip("../shared/fixtures/google-drive is not present")
    return json.loads(path.read_text())


def _check_shape(value: Any, schema: dict[str, Any], schemas: dict[str, Any], where: str) -> None:
    """``value`` uses only properties the discovery schema defines, with the right JSON types."""
    if "$ref" in schema:
        ref = schema["$ref"]
        if ref not in schemas:  # a schema left out of the subset
            return
        schema = schemas[ref]
    kind = schema.get("type")
    if kind == "object" and "properties" in schema:
        assert isinstance(value, dict), where
        for key, sub in value.items():
            assert key in schema["properties"], f"{where}.{key} is not in the Drive schema"
            _check_shape(sub, schema["properties"][key], schemas, f"{where}.{key}")
    elif kind == "array":
        assert isinstance(value, list), where
        for i, item in enumerate(value):
            _check_shape(item, schema["items"], schemas, f"{where}[{i}]")
    elif kind == "string":
        assert isinstance(value, str), f"{where} should be a string (int64 travels as a string)"
    elif kind == "boolean":
        assert isinstance(value, bool), where


async def test_fake_and_requests_match_the_discovery_document(
    api: FakeAPI, fake: FakeGoogleDrive, http: HttpClient, tmp_path: Path, discovery: dict[str, Any]
) -> None:
    schemas = discovery["schemas"]
    methods = discovery["resources"]
    # every field the connector asks for exists in the File schema
    assert set(parse_fields(FILE_FIELDS)) <= set(schemas["File"]["properties"])
    ds = tmp_path / "kb.lance"
    await sync(source(fake, api), ds, http)
    fake.edit_file(fake.find("notes.txt"), "changed\n")
    fake.delete(fake.find("README.md"))
    await sync(source(fake, api), ds, http)
    # every parameter sent is one the method defines; every body has the schema's shape
    routes = {
        "/drive/v3/files": (methods["files"]["methods"]["list"], "FileList"),
        "/drive/v3/changes": (methods["changes"]["methods"]["list"], "ChangeList"),
        "/drive/v3/changes/startPageToken": (
            methods["changes"]["methods"]["getStartPageToken"],
            "StartPageToken",
        ),
    }
    common = set(discovery.get("parameters", {})) | {"fields", "alt"}
    seen = set()
    for r in api.requests:
        if r.path in routes:
            method, _ = routes[r.path]
            assert set(r.query) <= set(method["parameters"]) | common, (r.path, r.query)
            seen.add(r.path)
        elif r.path.endswith("/export"):
            assert set(r.query) <= set(methods["files"]["methods"]["export"]["parameters"]) | common
        elif r.path.startswith("/drive/v3/files/"):
            assert set(r.query) <= set(methods["files"]["methods"]["get"]["parameters"]) | common
    assert seen == set(routes)
    async with http.session.get(
        f"{api.url}/drive/v3/changes",
        params={
            "pageToken": "1",
            "fields": "*",
            "supportsAllDrives": "true",
            "includeItemsFromAllDrives": "true",
        },
        headers={"Authorization": f"Bearer {next(iter(fake.issued_tokens))}"},
    ) as resp:
        _check_shape(await resp.json(), {"$ref": "ChangeList"}, schemas, "ChangeList")
    for fid, f in fake.files.items():
        _check_shape(f, {"$ref": "File"}, schemas, f"File {fid}")


async def test_real_google_error_bodies_mid_sync(
    api: FakeAPI, fake: FakeGoogleDrive, http: HttpClient, tmp_path: Path, discovery: dict[str, Any]
) -> None:
    bodies = {n: json.loads((FIXTURES / f"error-{n}.json").read_text()) for n in (400, 500, 503)}
    clean, faulty = tmp_path / "clean.lance", tmp_path / "faulty.lance"
    await sync(source(fake, api), clean, http)
    api.faults.script(
        "GET",
        "/drive/v3/files",
        ["ok", Fault.error(500, bodies[500]), "ok", Fault.error(503, bodies[503])],
    )
    await sync(source(fake, api), faulty, http)
    assert hashes(faulty) == hashes(clean)
    # a 400 (keyInvalid) is not retried: the source fails and says what Google said
    api.faults.script("GET", "/drive/v3/changes", [Fault.error(400, bodies[400])])
    with pytest.raises(ClientError, match="Bad Request"):
        await sync(source(fake, api), faulty, http)


# -- downloads that fail or do not match what Drive states ------------------------------------------


def _download_route(
    api: FakeAPI, fake: FakeGoogleDrive, fid: str, kind: str, *, times: int | None = None
) -> None:
    """Serve ``alt=media`` of ``fid`` badly (``short``: half the body, ``500``, ``empty``), the
    first ``times`` requests (None: always); metadata and later downloads as the fake would."""
    served = 0

    def handler(request: web.Request) -> Reply:
        nonlocal served
        if request.query.get("alt") != "media":
            return Reply(fake.files[fid])
        served += 1
        good = fake.contents[fid]
        if times is not None and served > times:
            return Reply(body=good, content_type=fake.files[fid]["mimeType"])
        if kind == "500":
            return Reply({"error": {"code": 500, "message": "Backend Error"}}, status=500)
        body = b"" if kind == "empty" else good[: len(good) // 2]
        return Reply(body=body, content_type=fake.files[fid]["mimeType"])

    api.route("GET", f"/drive/v3/files/{fid}", handler)


async def test_short_download_once_is_retried_and_the_good_body_stored(
    api: FakeAPI, fake: FakeGoogleDrive, http: HttpClient, tmp_path: Path
) -> None:
    fid = fake.find("README.md")
    _download_route(api, fake, fid, "short", times=1)
    ds = tmp_path / "kb.lance"
    report = await sync(source(fake, api), ds, http)
    assert report.ok, report
    assert rows(ds)[fid]["text_content"] == fake.contents[fid].decode()
    assert content_requests(api).count(fid) == 2
    assert http.metrics.retries.get("content_mismatch") == 1


@pytest.mark.parametrize("kind", ["short", "500", "empty"])
async def test_download_that_keeps_failing_is_fetched_again_next_run(
    api: FakeAPI, fake: FakeGoogleDrive, http: HttpClient, tmp_path: Path, kind: str
) -> None:
    """A download that still fails after the retries (a body shorter than Drive's ``size`` or
    with another ``md5Checksum``, a 5xx, an empty body) is not stored, not dead-lettered and not
    marked done: the run reports it and the next run fetches that file again."""
    fid = fake.find("README.md")
    _download_route(api, fake, fid, kind)
    ds = tmp_path / "kb.lance"
    src = source(fake, api)
    first = await sync(src, ds, http)
    assert first.failed_sources == [] and first.dead_lettered == 0
    assert first.sources[ST].retry_next_run == 1 and not first.ok
    got = rows(ds)
    assert fid not in got
    assert set(got) == fake.tree_ids(ROOT_ID) - {fid}  # the rest of the tree flowed

    fake.mount(api)  # healthy again
    api.requests.clear()
    second = await sync(src, ds, http)
    assert second.ok, second
    assert content_requests(api) == [fid]
    assert rows(ds)[fid]["text_content"] == fake.contents[fid].decode()
    clean = tmp_path / "clean.lance"
    await sync(source(fake, api), clean, http)
    assert hashes(ds) == hashes(clean)


async def test_failed_download_of_a_change_keeps_the_old_row_and_is_fetched_again(
    api: FakeAPI, fake: FakeGoogleDrive, http: HttpClient, tmp_path: Path
) -> None:
    """In the changes phase the page token moves on; the file whose download failed is kept in
    the cursor's ``retry`` list and fetched first by the next run. Its old row stays meanwhile."""
    fid = fake.find("notes.txt")
    ds = tmp_path / "kb.lance"
    src = source(fake, api)
    assert (await sync(src, ds, http)).ok
    old = fake.contents[fid].decode()
    fake.edit_file(fid, "new notes\n" * 20)
    _download_route(api, fake, fid, "short")
    second = await sync(src, ds, http)
    assert second.sources[ST].retry_next_run == 1 and second.dead_lettered == 0
    assert second.sink.deleted == 0 and rows(ds)[fid]["text_content"] == old

    fake.mount(api)
    third = await sync(src, ds, http)
    assert third.ok, third
    assert rows(ds)[fid]["text_content"] == "new notes\n" * 20
    clean = tmp_path / "clean.lance"
    await sync(source(fake, api), clean, http)
    assert hashes(ds) == hashes(clean)


async def test_credential_files_written_by_googles_tools_by_path(
    api: FakeAPI, fake: FakeGoogleDrive, http: HttpClient, tmp_path: Path
) -> None:
    # `gcloud auth application-default login` writes an authorized_user file
    oauth = fake.demo_config(api.url)["credentials"]
    adc = tmp_path / "application_default_credentials.json"
    adc.write_text(
        json.dumps(
            {
                "type": "authorized_user",
                "client_id": oauth["client_id"],
                "client_secret": oauth["client_secret"],
                "refresh_token": oauth["refresh_token"],
                "quota_project_id": "my-project",
            }
        )
    )
    for creds in (str(adc), {"type": "file", "path": str(adc)}):
        ds = tmp_path / f"kb-{type(creds).__name__}.lance"
        report = await sync(source(fake, api, credentials=creds), ds, http)
        assert report.failed_sources == []
        assert set(rows(ds)) == fake.tree_ids()

    # a service-account key file by path, as google-auth's load_credentials_from_file reads it
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    email = "reader@project.iam.gserviceaccount.com"
    fake.accept_service_account(
        email,
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    sa = tmp_path / "sa-key.json"
    sa.write_text(
        json.dumps({"type": "service_account", "client_email": email, "private_key": pem})
    )
    report = await sync(source(fake, api, credentials=str(sa)), tmp_path / "sa.lance", http)
    assert report.failed_sources == []

    # anything else is refused at once, saying what file is expected
    other = tmp_path / "other.json"
    other.write_text('{"type": "external_account"}')
    with pytest.raises(ValueError, match="authorized_user"):
        source(fake, api, credentials=str(other))


def test_a_credential_file_in_a_config_is_relative_to_it(tmp_path: Path) -> None:
    from cfstream.config import load_config

    (tmp_path / "adc.json").write_text(
        json.dumps(
            {
                "type": "authorized_user",
                "client_id": "i",
                "client_secret": "s",
                "refresh_token": "r",
            }
        )
    )
    cfg = tmp_path / "cfstream.yaml"
    cfg.write_text(
        "dataset: ./kb.lance\nsources:\n  drive:\n    type: google_drive\n"
        "    folder_ids: [f1]\n    credentials: ./adc.json\n"
    )
    spec = load_config(cfg).sources["drive"]
    assert spec.options["credentials"].path == str(tmp_path / "adc.json")
    cfg.write_text(cfg.read_text().replace("./adc.json", "./missing.json"))
    with pytest.raises(ConfigError, match="sources.drive.credentials.path"):
        load_config(cfg)


async def test_a_page_token_cycle_stops_the_partition_instead_of_looping(
    api: FakeAPI, fake: FakeGoogleDrive, http: HttpClient, tmp_path: Path
) -> None:
    original = fake._list_files
    listings = 0

    def cycling(request: Any) -> Any:  # page tokens a -> b -> a -> ...
        nonlocal listings
        listings += 1
        token = request.query.get("pageToken")
        if token is None:
            answer = original(request)
            return Reply(data={**answer.data, "nextPageToken": "a"}, status=answer.status)
        return Reply(data={"files": [], "nextPageToken": "b" if token == "a" else "a"})

    api.route("GET", "/drive/v3/files", cycling)
    with pytest.raises(PaginationLoopError, match="page token it already gave"):
        await sync(source(fake, api), tmp_path / "kb.lance", http)  # its one partition fails
    assert listings == 3  # none, a, b: stopped before asking for a again


# -- folders and files in the item store -----------------------------------------------------------


def drive_entries(ds: Path, partition: str) -> dict[str, Any]:
    store = StateStore.for_dataset(str(ds))
    try:
        return dict(store.items.entries(ST, partition))
    finally:
        store.items.close()


def store_bytes(ds: Path) -> bytes:
    return (ds / "_cfstream" / "state.items.sqlite").read_bytes()


async def test_the_cursor_keeps_no_map_and_a_quiet_resync_writes_nothing(
    api: FakeAPI, fake: FakeGoogleDrive, http: HttpClient, tmp_path: Path
) -> None:
    ds = tmp_path / "kb.lance"
    await sync(source(fake, api), ds, http)
    part = f"folder:{ROOT_ID}"
    cursor = StateStore.for_dataset(str(ds)).cursor(ST, part)
    assert cursor is not None and cursor["v"] == 2 and cursor["phase"] == "changes"
    assert "files" not in cursor and "folders" not in cursor
    entries = drive_entries(ds, part)
    assert {k[2:] for k in entries} == set(rows(ds))  # one entry per record, folders included
    assert {k[:2] for k in entries} == {"d:", "f:"}

    before = store_bytes(ds)
    api.clear()
    report = await sync(source(fake, api), ds, http)
    assert report.sources[ST].fetched == 0 and content_requests(api) == []
    assert store_bytes(ds) == before, "a sync with nothing new wrote to the item store"

    runbook = fake.find("On-call runbook")
    fake.edit_file(runbook, "# On-call runbook\n\nv2\n")
    await sync(source(fake, api), ds, http)
    now = drive_entries(ds, part)
    changed = {k for k in now if now[k] != entries.get(k)}
    assert changed == {f"f:{runbook}"}


async def test_a_version_1_cursor_with_the_maps_migrates_to_the_item_store(
    api: FakeAPI, fake: FakeGoogleDrive, http: HttpClient, tmp_path: Path
) -> None:
    ds = tmp_path / "kb.lance"
    await sync(source(fake, api), ds, http)
    part = f"folder:{ROOT_ID}"
    entries = drive_entries(ds, part)
    store = StateStore.for_dataset(str(ds))
    data = store.load()
    cursor = data["sources"][ST]["partitions"][part]
    cursor["v"] = 1
    cursor["folders"] = {k[2:]: v for k, v in entries.items() if k.startswith("d:")}
    cursor["files"] = {k[2:]: v for k, v in entries.items() if k.startswith("f:")}
    store.items.close()
    for f in (ds / "_cfstream").glob("state.items.sqlite*"):
        f.unlink()
    (ds / "_cfstream" / "state.json").write_text(json.dumps(data))

    runbook, archive = fake.find("On-call runbook"), fake.find("Archive")
    under_archive = fake.descendants(archive)
    fake.edit_file(runbook, "# On-call runbook\n\nafter the migration\n")
    fake.trash(archive)  # a folder leaves: what is below it is found through the entries
    api.clear()
    report = await sync(source(fake, api), ds, http)
    assert content_requests(api) == [runbook]
    assert report.sources[ST].tombstones == 1 + len(under_archive)
    assert set(rows(ds)) == fake.tree_ids()
    cursor = StateStore.for_dataset(str(ds)).cursor(ST, part)
    assert cursor is not None and cursor["v"] == 2 and "files" not in cursor
    now = drive_entries(ds, part)
    assert {k[2:] for k in now} == set(rows(ds))
    api.clear()
    again = await sync(source(fake, api), ds, http)
    assert again.sources[ST].fetched == 0 and content_requests(api) == []
