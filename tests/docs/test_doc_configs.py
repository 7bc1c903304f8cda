"""Every YAML config block in README.md and docs/ is a config the CLI accepts as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from cfstream.config import build_source, parse_config

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
_BLOCK = re.compile(r"^```ya?ml\n(.*?)^```", re.M | re.S)
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")  # a variable without a default


def _blocks() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for i, m in enumerate(_BLOCK.finditer(doc.read_text(encoding="utf-8"))):
            found.append((f"{doc.relative_to(REPO)}#{i + 1}", m.group(1)))
    return found


BLOCKS = _blocks()


def test_the_docs_have_config_blocks() -> None:
    assert len(BLOCKS) >= 9  # README + one per connector page


@pytest.mark.parametrize(("where", "text"), BLOCKS, ids=[w for w, _ in BLOCKS])
def test_config_block_is_valid(where: str, text: str) -> None:
    data = yaml.safe_load(text)
    # every ${VAR} without a default is set, as for a user following the docs
    env = dict.fromkeys(_VAR.findall(text), "placeholder-value")
    config = parse_config(data, filename=where, env=env)
    assert config.sources, where
    for spec in config.sources.values():
        build_source(spec)  # the connector accepts the options as written


_LINK = re.compile(r"\]\(([^)\s]+)\)")
_CODE = re.compile(r"^```.*?^```|`[^`\n]*`", re.M | re.S)


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(REPO)) for d in DOCS])
def test_relative_links_stay_in_the_repository(doc: Path) -> None:
    text = _CODE.sub("", doc.read_text(encoding="utf-8"))  # examples in code are not links
    for target in _LINK.findall(text):
        if re.match(r"^[a-z]+:|^#", target):
            continue
        path = (doc.parent / target.split("#")[0]).resolve()
        assert path.is_relative_to(REPO), f"{doc.name} links outside the repository: {target}"
        assert path.exists(), f"{doc.name} links to a missing file: {target}"
