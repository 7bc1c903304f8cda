"""cfstream.safe_yaml: safe_load's results, with alias bombs, recursive aliases and deep nesting refused."""

from __future__ import annotations

import pytest
import yaml

from cfstream import safe_yaml


def test_plain_documents_load_like_safe_load() -> None:
    text = "a: &x {k: [1, 2.5, true, null, '2024-01-02']}\nb: *x\nc:\n  <<: *x\n  extra: 3\nd: 2024-01-02\n"
    assert safe_yaml.load(text) == yaml.safe_load(text)
    assert safe_yaml.load("") is None
    with pytest.raises(yaml.YAMLError, match="could not determine a constructor"):
        safe_yaml.load("!!python/object/apply:os.system [echo]")


def test_values_are_counted_with_aliases_expanded() -> None:
    # 10 values stand for 1 + 3 * (1 + 3) = 13 once expanded
    text = "[&a [x, y, z], *a, *a]"
    safe_yaml.load(text, max_nodes=13)
    with pytest.raises(safe_yaml.YAMLLimitError, match="more than 12 values"):
        safe_yaml.load(text, max_nodes=12)


def test_depth_counts_through_aliases() -> None:
    inner = "[" * 60 + "]" * 60
    outer = "[" * 50 + "*a" + "]" * 50
    text = f"a: &a {inner}\nb: {outer}\n"
    with pytest.raises(safe_yaml.YAMLLimitError, match="more than 100 levels deep"):
        safe_yaml.load(text)
    safe_yaml.load(f"a: &a {inner}\nb: *a\n")


def test_recursive_aliases_are_refused() -> None:
    for text in ("a: &a [*a]", "a: &a {b: [1, {c: *a}]}"):
        with pytest.raises(safe_yaml.YAMLLimitError, match="recursive alias"):
            safe_yaml.load(text)


def test_nesting_too_deep_to_parse_is_a_yaml_error() -> None:
    with pytest.raises(yaml.YAMLError):
        safe_yaml.load("[" * 5000 + "]" * 5000)
