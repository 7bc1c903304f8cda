"""``cfstream init``: a commented starter config, its ``.env`` template, and reading ``.env`` files.

Each built-in connector has a starter block that ``cfstream validate`` accepts as written (with the
``.env`` template's placeholder values); a connector without one (a plugin) gets a block made from
its settings model: its required options, with placeholders.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cfstream.errors import ConfigError

__all__ = ("Starter", "read_dotenv", "starter_files")

#: what a placeholder secret in the ``.env`` template holds until the user pastes the real one
PLACEHOLDER = "replace-me"


@dataclass(frozen=True, slots=True)
class _Block:
    yaml: str  # the source's block, indented under `sources:`
    env: Mapping[str, str] = field(default_factory=dict)  # variable -> where to get it
    folders: Sequence[str] = ()  # local folders the block reads (created empty if missing)


_BLOCKS: dict[str, _Block] = {
    "files": _Block(
        """\
  docs:                              # the source's name: its cursor is kept under it
    type: files
    path: ./docs                     # relative to this file
    include: ["**/*.md", "**/*.txt"]
    # exclude: ["drafts/**"]
    # max_file_bytes: 33554432        # larger files are dead-lettered, not read
""",
        folders=("docs",),
    ),
    "obsidian": _Block(
        """\
  notes:
    type: obsidian
    vault_path: ./vault              # the folder holding .obsidian/
    # exclude: ["Templates/**"]
""",
        folders=("vault",),
    ),
    "github": _Block(
        """\
  github:
    type: github
    owner: my-org                    # replace: the user or organisation
    repos: [docs]                    # replace: repository names (or owner/name)
    token: ${GITHUB_TOKEN}
    include: ["**/*.md"]
    content: [files, issues, pulls]
""",
        {
            "GITHUB_TOKEN": "a token with Contents, Issues, Pull requests: read (github.com/settings/tokens)"
        },
    ),
    "slack": _Block(
        """\
  slack:
    type: slack
    token: ${SLACK_TOKEN}
    channels: [general]              # ids (C0123ABCD) or names; or all_channels: true
""",
        {"SLACK_TOKEN": "a bot token (xoxb-...) with channels:history, channels:read, users:read"},
    ),
    "discord": _Block(
        """\
  discord:
    type: discord
    token: ${DISCORD_BOT_TOKEN}
    guild_id: "000000000000000000"   # replace: the server id (Developer Mode > Copy Server ID)
    # channel_ids: ["000000000000000000"]   # default: every channel the bot can read
""",
        {"DISCORD_BOT_TOKEN": "the bot's token (Developer Portal > Bot > Reset Token)"},
    ),
    "linear": _Block(
        """\
  linear:
    type: linear
    api_key: ${LINEAR_API_KEY}
    content: [issues, comments, projects, documents]
""",
        {"LINEAR_API_KEY": "a personal API key (Settings > Security & access > Personal API keys)"},
    ),
    "notion": _Block(
        """\
  notion:
    type: notion
    token: ${NOTION_TOKEN}
    search: true                     # everything shared with the integration
    # database_ids: [...]            # or only these databases / pages
    # page_ids: [...]
""",
        {"NOTION_TOKEN": "an internal integration secret (notion.so/my-integrations)"},
    ),
    "google_drive": _Block(
        """\
  drive:
    type: google_drive
    folder_ids: [replace-with-a-folder-id]   # from the folder's URL; or drive_id: a shared drive
    credentials:
      type: oauth
      client_id: ${GOOGLE_CLIENT_ID}
      client_secret: ${GOOGLE_CLIENT_SECRET}
      refresh_token: ${GOOGLE_REFRESH_TOKEN}
    # credentials: ~/.config/gcloud/application_default_credentials.json   # or a file by path
""",
        {
            "GOOGLE_CLIENT_ID": "an OAuth client id (Cloud console > APIs & Services > Credentials)",
            "GOOGLE_CLIENT_SECRET": "that client's secret",
            "GOOGLE_REFRESH_TOKEN": "a refresh token granted drive.readonly (offline access)",
        },
    ),
}


@dataclass(frozen=True, slots=True)
class Starter:
    """The files ``cfstream init`` writes: the config, the ``.env`` template, folders to create."""

    config: str
    env: str
    folders: tuple[str, ...]


def _generic_block(type_name: str, model: Any) -> _Block:
    """A block for a connector without a starter: its required options with placeholders."""
    from cfstream.config import is_secret_annotation

    name = re.sub(r"[^A-Za-z0-9_-]", "-", type_name.rpartition(":")[2] or type_name).lower()
    lines = [f"  {name}:", f'    type: "{type_name}"']
    env: dict[str, str] = {}
    fields = model.model_fields if model is not None else {}
    for key, info in fields.items():
        if not info.is_required():
            continue
        if is_secret_annotation(info.annotation):
            var = re.sub(r"[^A-Z0-9_]", "_", f"{type_name}_{key}".upper())
            env[var] = info.description or f"the {key} of the {type_name} source"
            lines.append(f"    {key}: ${{{var}}}")
        else:
            lines.append(f"    {key}: replace-me          # {info.description or 'required'}")
    return _Block("\n".join(lines) + "\n", env)


def starter_files(connectors: Sequence[str], dataset: str = "./kb.lance") -> Starter:
    """The starter config (and ``.env`` template) for ``connectors`` (default: ``files``).

    Raises :class:`ConfigError` for a connector name no installed source has.
    """
    from cfstream.sources.registry import available_sources, load_source_class

    names = list(dict.fromkeys(connectors or ["files"]))
    known = available_sources()
    unknown = [n for n in names if n not in known and n not in _BLOCKS and ":" not in n]
    if unknown:
        raise ConfigError(
            f"unknown connector {', '.join(map(repr, unknown))}: use one of "
            f"{', '.join(sorted(known))} (`cfstream sources` lists them with their options)"
        )
    blocks = []
    for n in names:
        block = _BLOCKS.get(n)
        if block is None:  # a plugin, or "package.module:Class"
            block = _generic_block(n, getattr(load_source_class(n), "config_model", None))
        blocks.append(block)
    config = (
        "# cfstream config: `cfstream validate cfstream.yaml`, then `cfstream sync cfstream.yaml`.\n"
        "# ${VAR} comes from the environment or from .env beside this file; local paths are\n"
        "# relative to this file. Every option: `cfstream sources`.\n"
        f"dataset: {dataset}                  # a Lance dataset (a folder), or s3://... etc.\n"
        "# sink:\n"
        "#   mode: upsert                     # or append\n"
        "pipeline:                          # stages applied to every source, in order\n"
        "  - validate: {}\n"
        "  - dedupe: {}\n"
        "sources:\n" + "".join(b.yaml for b in blocks)
    )
    env_lines = [
        "# Secrets for cfstream.yaml: replace each value; keep this file out of version control.",
        "# Variables set in the environment win over this file.",
    ]
    for b in blocks:
        for var, what in b.env.items():
            env_lines += [f"# {what}", f"{var}={PLACEHOLDER}"]
    folders = tuple(f for b in blocks for f in b.folders)
    return Starter(config=config, env="\n".join(env_lines) + "\n", folders=folders)


_DOTENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


def read_dotenv(path: str | Path) -> dict[str, str]:
    """The variables of a ``.env`` file (``NAME=value`` lines, ``#`` comments, optional quotes);
    an empty dict when there is no such file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the .env file: {exc}") from None
    out: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _DOTENV_LINE.match(line)
        if m is None:
            raise ConfigError(f"{path}:{number}: expected NAME=value")
        value = m.group(2)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        out[m.group(1)] = value
    return out
