"""The YAML ``embed:`` stage: validated (secrets redacted), built, and run into a dataset with no
``embed_dim`` given; a full re-sync embeds nothing again."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import anyio
import lance
import pytest

from cfstream.config import build_pipeline, load_config
from cfstream.embed import LocalEmbedder, OpenAIEmbedder, dataset_embedder
from cfstream.errors import ConfigError
from cfstream.transforms import Embed

KEY = "sk-yaml-s3cr3t-0123456789abcdef"


def _config(tmp_path: Path, stage: str) -> Path:
    notes = tmp_path / "notes"
    notes.mkdir(exist_ok=True)
    for i in range(3):
        (notes / f"n{i}.md").write_text(f"# Note {i}\n\nnote {i} about apples and pears\n")
    path = tmp_path / "cfstream.yaml"
    path.write_text(
        "dataset: ./kb.lance\n"
        "pipeline:\n"
        f"  - embed: {stage}\n"
        "sources:\n"
        "  notes:\n"
        "    type: files\n"
        "    path: ./notes\n"
        "    folder_headers: false\n"
    )
    return path


def test_embed_stage_builds_runs_and_skips_unchanged(tmp_path: Path) -> None:
    cfg = load_config(_config(tmp_path, "{provider: local, batch_size: 2}"), env={})
    assert [s.kind for s in cfg.stages] == ["embed"]
    pipeline = build_pipeline(cfg)
    stage = pipeline.stages[0]
    assert isinstance(stage, Embed) and isinstance(stage.embedder, LocalEmbedder)
    assert stage.batch_size == 2
    anyio.run(lambda: pipeline.run())
    ds = lance.dataset(cfg.dataset)
    assert ds.count_rows() == 3 and ds.count_rows(filter="vector IS NULL") == 0
    assert ds.schema.field("vector").type.list_size == 256
    assert dataset_embedder(cfg.dataset)["name"] == "local:wordllama/l2_supercat_256"  # type: ignore[index]
    # a full re-sync reads every file again; none is embedded or written again
    report = anyio.run(lambda: build_pipeline(cfg).run(full_refresh=True))
    embed_stats = report.stages[0]
    assert embed_stats.docs_in == 3 and embed_stats.dropped == 3 and embed_stats.docs_out == 0
    assert report.sink.rows_in == 0


def test_openai_stage_takes_its_key_from_the_environment(tmp_path: Path) -> None:
    stage = "{provider: openai, model: nomic-embed-text, base_url: 'http://127.0.0.1:11434/v1', api_key: '${EMBED_KEY}', concurrency: 3}"
    cfg = load_config(_config(tmp_path, stage), env={"EMBED_KEY": KEY})
    built = build_pipeline(cfg).stages[0]
    assert isinstance(built, Embed) and isinstance(built.embedder, OpenAIEmbedder)
    assert built.concurrency == 3 and built.embedder.base_url == "http://127.0.0.1:11434/v1"
    assert KEY not in repr(built.embedder) and KEY not in repr(cfg.stages)


@pytest.mark.parametrize(
    ("stage", "message"),
    [
        ("{provider: local, api_key: " + KEY + "}", "api_key: options of provider openai"),
        (
            "{provider: openai, api_key: " + KEY + ", batch_size: 0}",
            "batch_size: expected greater than or equal to 1",
        ),
        ("{provider: local, colour: blue}", "unknown key 'colour'"),
        ("{provider: nope}", "provider: expected 'local', 'openai'"),
        ("{provider: openai, base_url: 'ftp://x'}", "base_url: expected"),
        ("{provider: local, dim: 100}", "dim is 64, 128 or 256"),
        ("local", "expected a mapping such as {provider: local}"),
    ],
)
def test_bad_embed_options_are_named_and_the_key_never_shown(
    tmp_path: Path, stage: str, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(_config(tmp_path, stage), env={})
    text = str(caught.value)
    assert message in text and "pipeline[0].embed" in text
    assert KEY not in text


@pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is not None,
    reason="sentence-transformers is installed here",
)
def test_a_provider_whose_package_is_missing_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"pip install 'cfstream\[sentence-transformers\]'"):
        load_config(_config(tmp_path, "{provider: sentence-transformers}"), env={})
