"""Config loading: expansion, validation, and errors naming file, key path and line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import MEMOS, NOTES, run_cli

from cfstream.config import (
    build_pipeline,
    build_pipelines,
    expand_env,
    load_config,
    parse_duration,
    select_sources,
)
from cfstream.errors import ConfigError
from cfstream.sinks import LanceSink
from cfstream.transforms import Dedupe, Filter, Map, Tag, Validate

GOOD = f"""
dataset: ./kb.lance
sink:
  mode: upsert
  batch_rows: ${{ROWS:-500}}
  contextframe_compat: false
pipeline:
  - tag: ["kb", "team:docs"]
  - validate: {{}}
  - map: cli_sources_maps:shout
    concurrency: 4
  - filter: {{min_text_chars: 1}}
  - dedupe: {{max_keys: 1000}}
sources:
  docs:
    type: {NOTES}
    token: ${{NOTES_TOKEN}}
    repos: [documentation, api-specs]
    schedule: 1h
  chat:
    type: {MEMOS}
    enabled: false
    schedule: 15m
"""


def test_a_full_config_loads_and_builds(write_config: Callable[..., Path], tmp_path: Path) -> None:
    (tmp_path / "cli_sources_maps.py").write_text(
        "def shout(doc):\n    doc.title = doc.title.upper()\n    return doc\n"
    )
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        cfg = load_config(write_config(GOOD), env={"NOTES_TOKEN": "tok-123456"})
    finally:
        sys.path.remove(str(tmp_path))
    assert cfg.dataset == str(tmp_path / "kb.lance")  # relative to the config file
    assert cfg.sink.batch_rows == 500
    assert [s.kind for s in cfg.stages] == ["tag", "validate", "map", "filter", "dedupe"]
    docs = cfg.sources["docs"]
    assert docs.schedule == 3600 and cfg.sources["chat"].schedule == 900
    assert docs.options["repos"] == ["documentation", "api-specs"]
    assert docs.describe_options()["token"] == "**********"
    assert "tok-123456" not in repr(docs.describe_options())
    assert cfg.enabled_sources == ["docs"]
    pipeline = build_pipeline(cfg)
    assert [s.name for s in pipeline.leaf_sources] == ["docs"]
    assert [type(s) for s in pipeline.stages] == [Tag, Validate, Map, Filter, Dedupe]
    assert pipeline.stages[2].concurrency == 4  # type: ignore[attr-defined]
    assert isinstance(pipeline.sink, LanceSink) and pipeline.sink.batch_rows == 500
    per_source = build_pipelines(cfg, only=["docs", "chat"])
    assert sorted(per_source) == ["chat", "docs"]
    # each pipeline has its own stage instances (dedupe keeps state)
    assert per_source["docs"].stages[4] is not per_source["chat"].stages[4]


def _error(write_config: Callable[..., Path], text: str, env: dict[str, str] | None = None) -> str:
    path = write_config(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env or {})
    message = str(info.value)
    assert str(path) in message, message
    return message


def test_unknown_source_option_names_key_line_and_choices(
    write_config: Callable[..., Path],
) -> None:
    msg = _error(
        write_config,
        f"""
        dataset: kb.lance
        sources:
          docs:
            type: {NOTES}
            count: 2
            colour: blue
        """,
    )
    assert ":6: sources.docs.colour: unknown key 'colour'" in msg
    assert "expected one of:" in msg and "count" in msg and "repos" in msg


def test_wrong_type_names_the_list_item_and_its_line(write_config: Callable[..., Path]) -> None:
    msg = _error(
        write_config,
        f"""
        dataset: kb.lance
        sources:
          docs:
            type: {NOTES}
            repos:
              - documentation
              - [not, a, string]
        """,
    )
    assert ":7: sources.docs.repos[1]: expected a valid string" in msg
    assert "got ['not', 'a', 'string'] (list)" in msg


def test_wrong_type_in_sink(write_config: Callable[..., Path]) -> None:
    msg = _error(
        write_config,
        f"""
        dataset: kb.lance
        sink:
          batch_rows: lots
        sources:
          docs: {{type: {NOTES}}}
        """,
    )
    assert ":3: sink.batch_rows: expected a valid integer" in msg and "'lots'" in msg


def test_unknown_top_level_key(write_config: Callable[..., Path]) -> None:
    msg = _error(
        write_config,
        f"""
        dataset: kb.lance
        sorces: {{}}
        sources:
          docs: {{type: {NOTES}}}
        """,
    )
    assert (
        ":2: sorces: unknown key 'sorces'; expected one of: dataset, pipeline, sink, sources" in msg
    )


def test_missing_variable_is_an_error_naming_it(write_config: Callable[..., Path]) -> None:
    msg = _error(
        write_config,
        f"""
        dataset: kb.lance
        sources:
          docs:
            type: {NOTES}
            token: ${{NOTES_TOKEN}}
        """,
    )
    assert ":5: sources.docs.token: environment variable NOTES_TOKEN is not set" in msg


def test_variables_defaults_and_escapes() -> None:
    env = {"A": "1", "EMPTY": ""}
    data = {"x": "${A}-${B:-two}-${EMPTY:-three}-$${A}", "n": [5, "${A}"]}
    assert expand_env(data, env) == {"x": "1-two-three-${A}", "n": [5, "1"]}
    with pytest.raises(ConfigError, match="malformed variable reference"):
        expand_env({"x": "${1BAD}"}, env)


def test_secret_value_never_appears_in_errors(write_config: Callable[..., Path]) -> None:
    msg = _error(
        write_config,
        f"""
        dataset: kb.lance
        sources:
          docs:
            type: {NOTES}
            token: ${{NOTES_TOKEN}}
            count: many
        """,
        env={"NOTES_TOKEN": "zz-very-secret-zz"},
    )
    assert "sources.docs.count" in msg
    assert "zz-very-secret-zz" not in msg


def test_python_yaml_tags_are_rejected(write_config: Callable[..., Path], tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    msg = _error(
        write_config,
        f"""
        dataset: !!python/object/apply:os.system ["touch {marker}"]
        sources: {{}}
        """,
    )
    assert ":1:" in msg and "not allowed" in msg and "python/object" in msg
    assert not marker.exists()


def test_yaml_syntax_error_has_a_line(write_config: Callable[..., Path]) -> None:
    msg = _error(write_config, "dataset: kb.lance\nsources:\n  docs: [unclosed\n")
    assert "not valid YAML" in msg


_BOMB = "dataset: ./kb.lance\nl0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 9)
)


def test_an_alias_bomb_is_refused_fast_with_one_line(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    # ~600 bytes standing for 9**9 strings: it used to take a minute and a gigabyte, or die of
    # MemoryError with a traceback
    cfg = write_config(_BOMB + f"sources: {{docs: {{type: {NOTES}, repos: *l8}}}}\n")
    assert cfg.stat().st_size < 1000
    proc = run_cli("validate", str(cfg), cwd=tmp_path, timeout=30)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(cfg) in lines[0] and "alias" in lines[0] and "100,000 values" in lines[0]
    assert "Traceback" not in proc.stderr


def test_the_contextframe_layout_loader_refuses_an_alias_bomb_and_a_huge_file_too(
    write_config: Callable[..., Path],
) -> None:
    from cfstream.connectors.config import load_connector_config

    path = write_config(_BOMB + "connectors: {docs: {type: github, repos: *l8}}\n")
    with pytest.raises(ConfigError, match="alias bomb"):
        load_connector_config(path, env={})
    path = write_config("connectors: {}\n" + "# padding\n" * 110_000)
    with pytest.raises(ConfigError, match="larger than 1,048,576 bytes"):
        load_connector_config(path, env={})


def test_recursive_aliases_and_deep_nesting_are_refused(
    write_config: Callable[..., Path],
) -> None:
    msg = _error(
        write_config, f"dataset: kb.lance\nsources: {{docs: &d {{type: {NOTES}, x: *d}}}}\n"
    )
    assert "recursive alias" in msg
    deep = "[" * 150 + "]" * 150
    msg = _error(
        write_config, f"dataset: kb.lance\nsources: {{docs: {{type: {NOTES}, x: {deep}}}}}\n"
    )
    assert "more than 100 levels deep" in msg


def test_a_huge_config_file_is_refused_unread(write_config: Callable[..., Path]) -> None:
    msg = _error(write_config, "dataset: kb.lance\n" + "# padding\n" * 110_000)
    assert "larger than 1,048,576 bytes" in msg


def test_anchors_aliases_and_merge_keys_still_work(write_config: Callable[..., Path]) -> None:
    cfg = load_config(
        write_config(
            f"""
            dataset: kb.lance
            sources:
              docs: &base
                type: {NOTES}
                repos: &repos [a, b]
                schedule: 1h
              more:
                <<: *base
                enabled: false
                repos: *repos
            """
        )
    )
    assert cfg.sources["more"].options == cfg.sources["docs"].options
    assert cfg.sources["more"].enabled is False and cfg.sources["more"].schedule == 3600


def test_duplicate_keys_are_rejected(write_config: Callable[..., Path]) -> None:
    msg = _error(
        write_config,
        f"""
        dataset: kb.lance
        sources:
          docs: {{type: {NOTES}}}
          docs: {{type: {MEMOS}}}
        """,
    )
    assert "sources.docs: duplicate key 'docs'" in msg


def test_unknown_source_type(write_config: Callable[..., Path]) -> None:
    msg = _error(
        write_config,
        """
        dataset: kb.lance
        sources:
          docs:
            type: gitlab
        """,
    )
    assert ":4: sources.docs.type: unknown source type 'gitlab'" in msg and "obsidian" in msg


def test_bad_schedule_and_stage(write_config: Callable[..., Path]) -> None:
    msg = _error(
        write_config,
        f"""
        dataset: kb.lance
        sources:
          docs: {{type: {NOTES}, schedule: often}}
        """,
    )
    assert "sources.docs.schedule: 'often' is not a duration" in msg
    msg = _error(
        write_config,
        f"""
        dataset: kb.lance
        pipeline:
          - upcase: {{}}
        sources:
          docs: {{type: {NOTES}}}
        """,
    )
    assert ":3: pipeline[0]: expected exactly one stage key" in msg
    msg = _error(
        write_config,
        f"""
        dataset: kb.lance
        pipeline:
          - map: no_such_module_xyz:fn
        sources:
          docs: {{type: {NOTES}}}
        """,
    )
    assert "pipeline[0].map: cannot import 'no_such_module_xyz'" in msg


def test_missing_required_keys(write_config: Callable[..., Path]) -> None:
    msg = _error(write_config, "sink: {}\n")
    assert "missing required key 'dataset'" in msg and "missing required key 'sources'" in msg
    msg = _error(write_config, "dataset: kb.lance\nsources:\n  docs: {count: 1}\n")
    assert ":3: sources.docs: missing required key 'type'" in msg


def test_durations() -> None:
    assert parse_duration("30s") == 30
    assert parse_duration("15m") == 900
    assert parse_duration("1h30m") == 5400
    assert parse_duration("1d") == 86400
    assert parse_duration(2) == 2
    for bad in ("", "0s", "soon", "5 parsecs"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_select_sources(write_config: Callable[..., Path]) -> None:
    cfg = load_config(
        write_config(
            f"""
            dataset: kb.lance
            sources:
              a: {{type: {NOTES}}}
              b: {{type: {NOTES}, enabled: false}}
            """
        )
    )
    assert [s.name for s in select_sources(cfg)] == ["a"]
    assert [s.name for s in select_sources(cfg, ["b"])] == ["b"]
    with pytest.raises(ConfigError, match="unknown source 'c': the config defines a, b"):
        select_sources(cfg, ["c"])
