"""Each recipe of ContextFrame's connector guide, run against the fake services."""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio
import lance
import pytest
from cf_support import Services, assert_no_duplicates

from cfstream.connectors import GitHubConnector
from cfstream.errors import AuthError
from cfstream.frame import FrameDataset
from cfstream.testing import Fault


def _rows(dataset: str) -> list[dict[str, Any]]:
    return lance.dataset(dataset).to_table().to_pylist()


def _meta(row: dict[str, Any]) -> dict[str, str]:
    return {kv["key"]: kv["value"] for kv in row["custom_metadata"] or []}


async def test_basic_import_imports_the_markdown_under_docs(
    services: Services, recipe: Any
) -> None:
    count = await recipe("basic_import").main(["--dataset", services.dataset])
    repo = services.github.repo()
    expected = sorted(p for p in repo.files if p.startswith("docs/") and p.endswith(".md"))
    rows = _rows(services.dataset)
    files = [r for r in rows if r["record_type"] == "document"]
    headers = [r for r in rows if r["record_type"] == "collection_header"]
    assert count == len(rows) == len(expected) + 1  # the files and the repository's header
    assert sorted(_meta(r)["github_path"] for r in files) == expected
    assert [h["title"] for h in headers] == [repo.full_name]
    assert {r["source_type"] for r in rows} == {"github"}


async def test_full_sync_twice_keeps_one_row_per_document(services: Services, recipe: Any) -> None:
    module = recipe("full_sync")
    first = await module.main(["--dataset", services.dataset])
    second = await module.main(["--dataset", services.dataset])
    rows = assert_no_duplicates(services.dataset)
    assert first == second == rows
    kinds = {_meta(r).get("github_kind") or r["record_type"] for r in _rows(services.dataset)}
    assert len(kinds) > 1  # files and issues (and the repository header)


async def test_incremental_sync_updates_changed_and_adds_new(
    services: Services, recipe: Any
) -> None:
    module = recipe("incremental_sync")
    connector = GitHubConnector(
        token=services.github.token,
        owner=services.github.repo().owner,
        repo=services.github.repo().name,
        base_url=services.api.url,
    )
    dataset = FrameDataset.create(services.dataset)
    records = [connector.map_to_frame_record(d) async for d in connector.sync_documents()]
    await dataset.add_many(records)
    before = assert_no_duplicates(services.dataset)

    changes = services.github.demo_change()  # 2 files edited, 1 added, 1 deleted, issues edited
    assert "file docs/changelog.md added" in changes
    new, updated = await module.incremental_sync(connector, dataset, "2024-01-01T00:00:00Z")

    assert new >= 1 and updated >= 4
    rows = {r["source_id"]: r for r in _rows(services.dataset)}
    assert len(rows) == before + new == assert_no_duplicates(services.dataset)
    changelog = rows["acme/handbook:file:docs/changelog.md"]
    assert "Added by `cfstream demo --change`" in changelog["text_content"]
    edited = [
        r
        for r in rows.values()
        if "Edited by `cfstream demo --change`" in (r["text_content"] or "")
    ]
    assert len(edited) == 2
    # nothing changed since: a second incremental sync finds nothing new
    assert await module.incremental_sync(connector, dataset, None) == (0, 0)


async def test_incremental_main_resumes_across_runs(services: Services, recipe: Any) -> None:
    module = recipe("incremental_sync")
    new, updated = await module.main(["--dataset", services.dataset])
    assert (new, updated) == (0, 0)  # the first run imported everything
    services.github.add_file("docs/new-page.md", "# New page\n")
    new, updated = await module.main(["--dataset", services.dataset])
    assert new == 1
    assert_no_duplicates(services.dataset)


async def test_selective_sync_keeps_only_the_selection(services: Services, recipe: Any) -> None:
    module = recipe("selective_sync")
    services.github.add_file("docs/teams/search/README.md", "# Search team\n")
    count = await module.main(["--dataset", services.dataset, "--filter", "file_pattern=docs/*.md"])
    rows = _rows(services.dataset)
    paths = sorted(_meta(r)["github_path"] for r in rows if r["record_type"] == "document")
    files = services.github.repo().files
    expected = sorted(p for p in files if p.startswith("docs/") and p.count("/") == 1)
    assert any(p.count("/") > 1 for p in files)  # nested files exist and are left out
    assert count == len(rows) and paths == expected and expected  # "*" stays in one folder

    n = await module.main(
        ["--dataset", services.dataset, "--filter", "filter_type=issues", "--filter", "state=open"]
    )
    issues = [r for r in _rows(services.dataset) if _meta(r).get("github_kind") == "issue"]
    assert n > 0 and issues and all(_meta(r).get("github_state") == "open" for r in issues)
    assert_no_duplicates(services.dataset)


async def test_multi_source_tags_each_source_and_survives_a_failing_one(
    services: Services, recipe: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    module = recipe("multi_source")
    total = await module.main(["--dataset", services.dataset])
    rows = _rows(services.dataset)
    assert total == len(rows) == assert_no_duplicates(services.dataset)
    by_tag: dict[str, set[str]] = {}
    for r in rows:
        for tag in r["tags"]:
            by_tag.setdefault(tag, set()).add(r["source_type"])
    assert by_tag["source:github docs"] == {"github"}
    assert by_tag["source:linear issues"] == {"linear"}
    assert by_tag["source:notion kb"] == {"notion"}
    linear_states = {
        _meta(r).get("linear_state") for r in rows if _meta(r).get("linear_type") == "issue"
    }
    assert linear_states and linear_states <= {"In Progress", "Done"}

    # a bad Notion key: Notion reports an error, the other two still import (as upserts)
    monkeypatch.setenv("NOTION_API_KEY", "secret_wrong-key")
    again = await module.main(["--dataset", services.dataset])
    out = capsys.readouterr().out
    assert "Error:" in out and "secret_wrong-key" not in out
    notion_rows = sum(1 for r in rows if r["source_type"] == "notion")
    assert notion_rows > 0 and again == total - notion_rows
    assert assert_no_duplicates(services.dataset) == len(rows)


async def test_scheduled_sync_picks_up_changes_with_short_intervals(
    services: Services, recipe: Any
) -> None:
    module = recipe("scheduled_sync")
    channel = next(c for c, info in services.slack.channels.items() if info["name"] == "general")

    async def change_later() -> None:
        await anyio.sleep(1.0)
        services.slack.add_message(channel, "posted between two scheduled syncs", user="ada")

    async with anyio.create_task_group() as tg:
        tg.start_soon(change_later)
        sync = await module.main(
            [
                "--dataset", services.dataset, "--slack-every", "0.3", "--github-every", "0.6",
                "--all-every", "5", "--tick", "0.05", "--run-for", "2.5",
            ]
        )  # fmt: skip
    assert set(sync.last_sync) == {"Slack", "GitHub"}
    rows = _rows(services.dataset)
    assert any("posted between two scheduled syncs" in (r["text_content"] or "") for r in rows)
    assert {r["source_type"] for r in rows} == {"slack", "github"}
    assert_no_duplicates(services.dataset)


async def test_retry_recovers_from_a_failed_first_attempt(
    services: Services, recipe: Any, capsys: Any
) -> None:
    repo = services.github.repo()
    services.api.faults.script("GET", f"/repos/{repo.full_name}", [Fault.error(401)])
    documents = await recipe("retry_sync").main([])
    assert "Retrying in 1s" in capsys.readouterr().out
    assert len(documents) > 0
    assert services.github.token not in capsys.readouterr().out


async def test_retry_gives_up_after_max_retries(services: Services, recipe: Any) -> None:
    module = recipe("retry_sync")
    connector = GitHubConnector(
        token="ghp_wrong_token_000000", owner="acme", repo="handbook", base_url=services.api.url
    )
    with pytest.raises(AuthError):
        await module.sync_with_retry(connector, max_retries=2, backoff_factor=0.01)


async def test_partial_success_logs_failures_and_imports_the_rest(
    services: Services, recipe: Any
) -> None:
    module = recipe("partial_success")
    connector = GitHubConnector(
        token=services.github.token, owner="acme", repo="handbook", base_url=services.api.url
    )
    original = connector.map_to_frame_record

    def flaky(doc: Any) -> Any:
        if doc.id.endswith(":issue:2"):
            raise ValueError("cannot map this one")
        return original(doc)

    connector.map_to_frame_record = flaky  # type: ignore[method-assign]
    dataset = FrameDataset.create(services.dataset)
    succeeded, failed = await module.sync_with_partial_success(connector, dataset)
    assert [f["document_id"] for f in failed] == ["acme/handbook:issue:2"]
    assert len(succeeded) == dataset.count_rows() == assert_no_duplicates(services.dataset)
    logged = json.loads(await anyio.Path("sync_failures.json").read_text())
    assert logged[0]["error"] == "cannot map this one"
    assert logged[0]["document"]["id"] == "acme/handbook:issue:2"
    # run it again: same rows, no duplicates
    again, _ = await module.sync_with_partial_success(connector, dataset)
    assert len(again) == len(succeeded) == assert_no_duplicates(services.dataset)


async def test_rate_limited_connector_waits_when_the_budget_is_spent(
    services: Services, recipe: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = recipe("rate_limited")
    clock = [1000.0]
    slept: list[float] = []
    monkeypatch.setattr(module.time, "time", lambda: clock[0])
    monkeypatch.setattr(module.time, "sleep", slept.append)
    counts = await module.main(["--syncs", "3", "--rate-limit", "2"])
    assert len(counts) == 3 and len(set(counts)) == 1 and counts[0] > 0
    assert slept == [61.0]  # the third sync waited for the oldest to leave the 60 s window


async def test_logging_connector_logs_size_and_duration_without_secrets(
    services: Services, recipe: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    connector = await recipe("logging_sync").main([])
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("connector.")]
    assert messages[0].startswith("Starting sync with options: {'file_pattern': '**/*.md'}")
    assert messages[1].startswith("Sync completed: ")
    assert connector.metrics[0]["documents_synced"] == int(messages[1].split()[2]) > 0
    assert services.github.token not in caplog.text


async def test_validation_rejects_invalid_records(services: Services, recipe: Any) -> None:
    services.github.add_file("docs/empty.md", "")
    imported, rejected = await recipe("validation").main(["--dataset", services.dataset])
    assert any("docs/empty.md" in r and "Missing content" in r for r in rejected)
    rows = _rows(services.dataset)
    assert imported == len(rows) > 0
    assert all(r["text_content"] and r["source_url"] for r in rows)


async def test_config_loading_expands_env_and_runs_as_a_pipeline(
    services: Services, recipe: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = recipe("config_loading")
    config, report = await module.main(["--dataset", services.dataset, "--run"])
    assert config["connectors"]["github"]["token"] == services.github.token
    assert report is not None and report.ok
    rows = _rows(services.dataset)
    kinds = {r["source_type"] for r in rows}
    assert kinds == {"github", "linear"}  # notion is disabled
    paths = {_meta(r).get("github_path") for r in rows if r["source_type"] == "github"}
    assert paths and all(p.endswith(".md") for p in paths if p)
    states = {_meta(r).get("linear_state") for r in rows if _meta(r).get("linear_type") == "issue"}
    assert states and states <= {"In Progress", "Done"}
    count = assert_no_duplicates(services.dataset)
    _, again = await module.main(["--dataset", services.dataset, "--run"])
    assert again is not None and again.sink.inserted == 0
    assert assert_no_duplicates(services.dataset) == count
    # ContextFrame reads what the pipeline wrote
    contextframe = pytest.importorskip("contextframe")
    frame = contextframe.FrameDataset.open(services.dataset)
    assert frame.get_by_uuid(rows[0]["uuid"]).metadata["title"] == rows[0]["title"]

    monkeypatch.delenv("LINEAR_API_KEY")
    from cfstream.errors import ConfigError

    with pytest.raises(ConfigError, match="LINEAR_API_KEY"):
        await module.main([])


async def test_dynamic_loading_creates_the_enabled_connectors(
    services: Services, recipe: Any
) -> None:
    module = recipe("dynamic_loading")
    active = await module.main(["--dataset", services.dataset])
    assert [a["name"] for a in active] == ["github", "linear"]
    assert active[0]["options"]["file_patterns"] == ["**/*.md", "**/*.mdx"]
    count = assert_no_duplicates(services.dataset)
    await module.main(["--dataset", services.dataset])
    assert assert_no_duplicates(services.dataset) == count
