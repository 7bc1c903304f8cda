"""The connector faces: each of the seven over its Source, options, auth, streams, config, secrets."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cfstream.connectors import (
    DiscordConnector,
    ExternalDocument,
    GitHubConnector,
    GoogleDriveConnector,
    LinearConnector,
    NotionConnector,
    ObsidianConnector,
    SecretManager,
    SlackConnector,
    create_connector,
    load_connectors_config,
)
from cfstream.errors import AuthError, ConfigError
from cfstream.secrets import Secret
from cfstream.testing import FakeAPI
from cfstream.testing.fakes.discord import FakeDiscord
from cfstream.testing.fakes.github import FakeGitHub
from cfstream.testing.fakes.google_drive import ROOT_ID, FakeGoogleDrive
from cfstream.testing.fakes.linear import FakeLinear
from cfstream.testing.fakes.notion import FakeNotion
from cfstream.testing.fakes.slack import FakeSlack

VAULT = Path(__file__).resolve().parents[2] / "cfstream" / "demo_data" / "vault"


@pytest.fixture
async def api() -> AsyncIterator[FakeAPI]:
    async with FakeAPI() as server:
        yield server


async def test_github_await_and_async_for_agree(api: FakeAPI) -> None:
    gh = FakeGitHub(files=6, issues=3)
    gh.mount(api)
    c = GitHubConnector(token=gh.token, owner="acme", repo="handbook", base_url=api.url)
    assert not c.authenticated
    await c.authenticate()
    assert c.authenticated
    listed = await c.sync_documents(filter_type="issues", state="open")
    streamed = [d async for d in c.sync_documents(filter_type="issues", state="open")]
    assert [d.id for d in listed] == [d.id for d in streamed]
    assert listed and all(
        d.metadata["github_state"] == "open"
        for d in listed
        if d.metadata.get("github_kind") in ("issue", "pull_request")
    )
    doc = listed[-1]
    assert isinstance(doc, ExternalDocument)
    assert json.loads(json.dumps(doc))["id"] == doc.id  # a plain dict for JSON logs
    record = c.map_to_frame_record(doc)
    assert record.uuid == doc.uuid and record.metadata["source_type"] == "github"


async def test_bad_credentials_raise_auth_error(api: FakeAPI) -> None:
    gh = FakeGitHub(files=1, issues=0)
    gh.mount(api)
    c = GitHubConnector(token="ghp_wrong", owner="acme", repo="handbook", base_url=api.url)
    with pytest.raises(AuthError):
        await c.authenticate()
    assert not c.authenticated
    with pytest.raises(AuthError):
        await c.sync_documents()
    anonymous = GitHubConnector(token="ghp_wrong", base_url=api.url)  # no repo: /rate_limit
    with pytest.raises(AuthError):
        await anonymous.authenticate()


async def test_linear_states_and_labels_filter_issues(api: FakeAPI) -> None:
    fake = FakeLinear(issues=12, teams=2)
    fake.mount(api)
    team = fake.team_ids()[0]
    c = LinearConnector(api_key=fake.api_key, base_url=api.url)
    docs = await c.sync_documents(team_id=team, states=["Done"])
    issues = [d for d in docs if d.metadata.get("linear_type") == "issue"]
    others = [d for d in docs if d.metadata.get("linear_type") != "issue"]
    assert issues and {d.metadata["linear_state"] for d in issues} == {"Done"}
    assert {d.metadata.get("linear_type") for d in others} <= {"team"}
    everything = await c.sync_documents(team_id=team)
    assert len(everything) > len(docs)


async def test_notion_database_and_search(api: FakeAPI) -> None:
    fake = FakeNotion(rows=3)
    fake.mount(api)
    c = NotionConnector(api_key=fake.token, base_url=api.url, requests_per_second=100.0, burst=100)
    rows = await c.sync_documents(database_id=fake.tasks_id)
    everything = await c.sync_documents()  # search: everything shared with the integration
    assert 3 <= len(rows) < len(everything)
    assert {d.uuid for d in rows} <= {d.uuid for d in everything}


async def test_slack_incremental_returns_only_new_messages(api: FakeAPI) -> None:
    fake = FakeSlack(messages_per_channel=4)
    fake.mount(api)
    c = SlackConnector(token=fake.token, base_url=f"{api.url}{fake.prefix}")
    general = next(cid for cid, info in fake.channels.items() if info["name"] == "general")
    first = await c.sync_documents(channel_ids=[general], modified_only=True)
    assert first
    assert await c.sync_documents(channel_ids=[general], modified_only=True) == []
    fake.add_message(general, "a brand new message")
    new = await c.sync_documents(channel_ids=[general], modified_only=True)
    assert [d.content for d in new if "brand new" in d.content] == ["a brand new message"]
    assert len(new) < len(first)


async def test_discord_and_drive_and_obsidian(api: FakeAPI, tmp_path: Path) -> None:
    discord = FakeDiscord(messages_per_channel=5)
    discord.mount(api)
    channel = discord.text_channels()[0]
    d = DiscordConnector(
        token=discord.token, guild_id=discord.guild_id, base_url=f"{api.url}{discord.prefix}"
    )
    await d.authenticate()
    msgs = await d.sync_documents(channel_ids=[channel], include_threads=False)
    assert msgs and {m.document.source_type for m in msgs} == {"discord"}

    drive = FakeGoogleDrive()
    drive.mount(api)
    g = GoogleDriveConnector(
        client_id=drive.client_id,
        client_secret=drive.client_secret,
        refresh_token=drive.refresh_token,
        folder_id=ROOT_ID,
        base_url=api.url,
        token_url=f"{api.url}/token",
    )
    await g.authenticate()
    files = await g.sync_documents(folder_id=drive.find("Design Docs"))
    everything = await g.sync_documents()
    assert 0 < len(files) < len(everything)

    vault = tmp_path / "vault"
    shutil.copytree(VAULT, vault)
    o = ObsidianConnector(vault_path=str(vault))
    await o.authenticate()
    notes = await o.sync_documents(path="Projects")
    paths = [n.document.local_path or n.id for n in notes if n.document.record_type == "document"]
    assert paths and all("Projects" in p for p in paths)
    with pytest.raises(ConfigError, match="vault_path"):
        await ObsidianConnector(vault_path=str(tmp_path / "missing")).authenticate()


async def test_stream_can_stop_early(api: FakeAPI) -> None:
    gh = FakeGitHub(files=6, issues=3)
    gh.mount(api)
    c = GitHubConnector(token=gh.token, owner="acme", repo="handbook", base_url=api.url)
    async with c.sync_documents() as docs:
        first = await docs.__anext__()
    assert first.id
    assert [d async for d in docs] == []  # closed: nothing more, and cursors did not advance
    assert not c.state.cursors(c.selection_name({}))


def test_option_and_type_errors_say_what_is_accepted() -> None:
    c = GitHubConnector(token="t", owner="o", repo="r")
    with pytest.raises(ConfigError, match="file_pattern"):
        c.sync_documents(folder_id="x")
    with pytest.raises(ConfigError, match="ISO 8601"):
        c.sync_documents(since="yesterday")
    with pytest.raises(ConfigError, match="filter_type"):
        c.build_source({"filter_type": "wikis"})
    with pytest.raises(ValueError, match="Unknown connector type"):
        create_connector("jira", {})
    with pytest.raises(ConfigError, match="unknown setting"):
        GitHubConnector(token="t", owner="o", repo="r", colour="blue")
    made = create_connector(
        "github",
        {
            "enabled": True,
            "token": "ghp_made_secret",
            "owner": "o",
            "repo": "r",
            "sync_options": {"path": "docs"},
        },
    )
    assert made.enabled and made.sync_options == {"path": "docs"}
    assert "ghp_made_secret" not in repr(made.config) + repr(made)
    with pytest.raises(ConfigError, match="credentials"):
        GoogleDriveConnector(client_id="only-an-id")


def test_secret_manager_reads_env_and_files(tmp_path: Path) -> None:
    (tmp_path / "s.json").write_text(json.dumps({"github": {"token": "ghp_from_json_file"}}))
    (tmp_path / "s.yaml").write_text("linear:\n  api_key: lin_from_yaml_file\n")
    (tmp_path / ".env").write_text("# comment\nexport SLACK_TOKEN='xoxb-from-dotenv'\n")
    env = {"NOTION_API_KEY": "secret_from_environment"}
    assert SecretManager(tmp_path / "s.json", env=env).get("github.token").get_secret_value() == (
        "ghp_from_json_file"
    )
    assert SecretManager(tmp_path / "s.yaml", env={}).get("linear.api_key").get_secret_value() == (
        "lin_from_yaml_file"
    )
    dotenv = SecretManager(tmp_path / ".env", env=env)
    token = dotenv.get("slack.token")
    assert isinstance(token, Secret) and str(token) == "**********"
    assert token.get_secret_value() == "xoxb-from-dotenv"
    assert dotenv.get("notion.api_key").get_secret_value() == "secret_from_environment"
    assert "slack.token" in dotenv and "discord.token" not in dotenv
    with pytest.raises(ConfigError, match="DISCORD_TOKEN") as err:
        dotenv.get("discord.token")
    assert "xoxb" not in str(err.value) and "xoxb" not in repr(dotenv)
    (tmp_path / "bad.json").write_text('{"token": "ghp_leaky_value"')
    with pytest.raises(ConfigError) as bad:
        SecretManager(tmp_path / "bad.json", env={})
    assert "ghp_leaky_value" not in str(bad.value)
    connector = GitHubConnector(token=dotenv.get("slack.token"), owner="o", repo="r")
    assert "xoxb" not in repr(connector.config)


def test_load_connectors_config_errors_and_filters(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "connectors:\n  linear:\n    api_key: ${LINEAR_KEY}\n    team_id: T1\n"
        "    sync_options: {states: [Done]}\n"
    )
    with pytest.raises(ConfigError, match="no dataset"):
        load_connectors_config(cfg, env={"LINEAR_KEY": "k"})
    with pytest.raises(ConfigError, match="LINEAR_KEY"):
        load_connectors_config(cfg, dataset="kb.lance", env={})
    config = load_connectors_config(
        cfg, dataset=str(tmp_path / "kb.lance"), env={"LINEAR_KEY": "k"}
    )
    spec = config.sources["linear"]
    assert spec.type == "linear" and spec.options["team_ids"] == ["T1"]
    assert spec.describe_options()["api_key"] == "**********"
    assert config.sink.contextframe_compat
    assert [s.kind for s in config.stages] == ["filter"]
    cfg.write_text("connectors:\n  jira: {enabled: true}\n")
    with pytest.raises(ConfigError, match="unknown connector type"):
        load_connectors_config(cfg, dataset="kb.lance", env={})
    cfg.write_text(
        "connectors:\n  github: {token: t, owner: o, repo: r, sync_options: {colour: x}}\n"
    )
    with pytest.raises(ConfigError, match="colour"):
        load_connectors_config(cfg, dataset="kb.lance", env={})


@pytest.mark.parametrize(
    "module",
    [
        "cfstream.connectors",
        "cfstream.connectors.base",
        "cfstream.connectors.config",
        "cfstream.connectors.services",
        "cfstream.frame",
    ],
)
def test_public_names_are_sorted_and_exist(module: str) -> None:
    import importlib
    import inspect

    mod = importlib.import_module(module)
    assert isinstance(mod.__all__, tuple)
    assert list(mod.__all__) == sorted(mod.__all__)
    for name in mod.__all__:
        obj = getattr(mod, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__doc__, f"{module}.{name} has no docstring"
