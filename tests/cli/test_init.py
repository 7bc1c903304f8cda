"""``cfstream init`` writes a starter config (and a .env template) that ``validate`` accepts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import NOTES, cli_env, json_out, run_cli

from cfstream.starter import read_dotenv

CONNECTORS = ["files", "obsidian", "github", "slack", "discord", "linear", "notion", "google_drive"]


def _clean_env() -> dict[str, str]:
    """The CLI's environment without any variable a starter config uses."""
    env = cli_env()
    for var in list(env):
        if var.endswith(("_TOKEN", "_KEY", "_SECRET", "_ID")):
            del env[var]
    return env


@pytest.mark.parametrize("connectors", [[], CONNECTORS, [NOTES]], ids=["default", "all", "plugin"])
def test_init_writes_a_config_that_validate_accepts(tmp_path: Path, connectors: list[str]) -> None:
    made = run_cli("init", *connectors, "--dir", "kb", cwd=tmp_path, env=_clean_env())
    assert made.returncode == 0, made.stderr
    config = (tmp_path / "kb" / "cfstream.yaml").read_text()
    assert config.startswith("# cfstream config")
    checked = run_cli("validate", "kb/cfstream.yaml", "--json", cwd=tmp_path, env=_clean_env())
    assert checked.returncode == 0, checked.stderr
    env_file = tmp_path / "kb" / ".env"
    if connectors == CONNECTORS:
        secrets = read_dotenv(env_file)
        assert {"GITHUB_TOKEN", "SLACK_TOKEN", "NOTION_TOKEN", "LINEAR_API_KEY"} <= set(secrets)
        assert set(secrets.values()) == {"replace-me"}
    if not connectors:
        assert (tmp_path / "kb" / "docs").is_dir() and not env_file.exists()


def test_init_refuses_to_overwrite_and_names_unknown_connectors(tmp_path: Path) -> None:
    assert run_cli("init", cwd=tmp_path).returncode == 0
    again = run_cli("init", cwd=tmp_path)
    assert again.returncode == 2 and "--force" in again.stderr
    assert run_cli("init", "--force", cwd=tmp_path).returncode == 0
    unknown = run_cli("init", "jira", "--dir", "x", cwd=tmp_path)
    assert unknown.returncode == 2 and "unknown connector 'jira'" in unknown.stderr
    assert "Traceback" not in again.stderr + unknown.stderr


def test_dotenv_beside_the_config_fills_variables_and_the_environment_wins(
    tmp_path: Path,
) -> None:
    assert run_cli("init", "github", cwd=tmp_path, env=_clean_env()).returncode == 0
    (tmp_path / ".env").write_text(
        '# comment\nGITHUB_TOKEN="ghp_from_dotenv_1234567890"  \nexport OTHER=1 # note\n'
    )
    assert read_dotenv(tmp_path / ".env") == {
        "GITHUB_TOKEN": "ghp_from_dotenv_1234567890",
        "OTHER": "1",
    }
    shown = run_cli("validate", "cfstream.yaml", "--json", cwd=tmp_path, env=_clean_env())
    assert shown.returncode == 0 and "ghp_from_dotenv" not in shown.stdout  # redacted
    (tmp_path / ".env").write_text("NOT A LINE\n")
    bad = run_cli("validate", "cfstream.yaml", cwd=tmp_path, env=_clean_env())
    assert bad.returncode == 2 and ".env:1: expected NAME=value" in bad.stderr
    # a variable set in the environment wins over .env
    cfg = tmp_path / "cfstream.yaml"
    cfg.write_text(cfg.read_text().replace("owner: my-org", "owner: ${GH_OWNER}"))
    (tmp_path / ".env").write_text("GITHUB_TOKEN=ghp_x1234567890\nGH_OWNER=from-dotenv\n")
    for env, owner in (
        (_clean_env(), "from-dotenv"),
        (_clean_env() | {"GH_OWNER": "from-env"}, "from-env"),
    ):
        shown = run_cli("validate", "cfstream.yaml", "--json", cwd=tmp_path, env=env)
        assert shown.returncode == 0, shown.stderr
        assert json_out(shown)["sources"]["github"]["options"]["owner"] == owner
    os.remove(tmp_path / ".env")
    missing = run_cli("validate", "cfstream.yaml", cwd=tmp_path, env=_clean_env())
    assert missing.returncode == 2 and "is not set" in missing.stderr
