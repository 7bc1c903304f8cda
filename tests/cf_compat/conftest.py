"""Fixtures for the ContextFrame-guide tests: the fake services on one FakeAPI, the recipes."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import pytest
from cf_support import Services

from cfstream.testing import FakeAPI
from cfstream.testing.fakes.github import FakeGitHub
from cfstream.testing.fakes.linear import FakeLinear
from cfstream.testing.fakes.notion import FakeNotion
from cfstream.testing.fakes.slack import FakeSlack

SEED = Path(__file__).resolve().parents[2] / "examples" / "seed"


@pytest.fixture
async def services(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Services]:
    """GitHub, Linear, Notion and Slack fakes; env vars point the recipes at them; cwd is tmp."""
    monkeypatch.chdir(tmp_path)
    async with FakeAPI() as api:
        github = FakeGitHub(files=8, issues=4)
        github.mount(api)
        linear = FakeLinear(issues=8, teams=1)
        linear.mount(api)
        notion = FakeNotion(rows=3)
        notion.mount(api)
        slack = FakeSlack(messages_per_channel=4)
        slack.mount(api)
        repo = github.repo()
        env = {
            "GITHUB_TOKEN": str(github.token),
            "GITHUB_OWNER": repo.owner,
            "GITHUB_REPO": repo.name,
            "GITHUB_BASE_URL": api.url,
            "GITHUB_DOCS_PATH": "docs",
            "LINEAR_API_KEY": linear.api_key,
            "LINEAR_BASE_URL": api.url,
            "LINEAR_TEAM_ID": linear.team_ids()[0],
            "NOTION_API_KEY": notion.token,
            "NOTION_BASE_URL": api.url,
            "NOTION_DATABASE_ID": notion.tasks_id,
            "SLACK_TOKEN": slack.token,
            "SLACK_BASE_URL": f"{api.url}{slack.prefix}",
        }
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        yield Services(api, github, linear, notion, slack, str(tmp_path / "kb.lance"))


@pytest.fixture
def recipe(monkeypatch: pytest.MonkeyPatch) -> object:
    """``recipe("full_sync")``: the example module ``examples/seed/full_sync.py``, freshly loaded."""
    monkeypatch.syspath_prepend(str(SEED))

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(f"seed_recipe_{name}", SEED / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module

    return load
