"""One connector convention: options declared once (the config model), one redacting error path.

For every built-in connector: ``cfstream sources --json`` lists exactly its model's fields, the
constructor takes exactly those (plus ``name``), and every option error (wrong type, unknown option,
missing required, a rule across options) names the option without any secret value given.
"""

from __future__ import annotations

import inspect
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from cfstream.cli import main
from cfstream.config import build_source, parse_config
from cfstream.errors import ConfigError
from cfstream.sources import BUILTIN_SOURCES, load_source_class
from cfstream.sources.base import Source
from cfstream.sources.options import is_secret_annotation

CONNECTORS = sorted(BUILTIN_SOURCES)
_count = itertools.count()


def _secret() -> str:
    """A fresh value never registered for redaction (a registered one would be hidden anyway)."""
    return f"zq{next(_count)}-opt1on-s3cr3t-value"


def _cls(type_name: str) -> type[Source]:
    cls = load_source_class(type_name)
    assert isinstance(cls, type) and issubclass(cls, Source)
    return cls


def _fields(type_name: str) -> dict[str, Any]:
    model = _cls(type_name).config_model
    assert model is not None, f"{type_name} declares no config model"
    return dict(model.model_fields)


def test_sources_json_lists_exactly_each_models_fields(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sources", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    for type_name in CONNECTORS:
        entry = listed[type_name]
        assert entry["installed"], entry
        fields = _fields(type_name)
        assert list(entry["options"]) == list(fields), type_name
        for name, f in fields.items():
            option = entry["options"][name]
            assert option["required"] is f.is_required(), (type_name, name)
            assert option["secret"] is is_secret_annotation(f.annotation), (type_name, name)
            assert option["description"], f"{type_name}.{name} has no description"
            if f.annotation is bool:
                assert option["type"] == "true/false", (type_name, name, option)


@pytest.mark.parametrize("type_name", CONNECTORS)
def test_the_constructor_takes_exactly_the_models_fields(type_name: str) -> None:
    cls = _cls(type_name)
    params = inspect.signature(cls).parameters
    assert set(params) == set(_fields(type_name)) | {"name"}
    with pytest.raises(ConfigError, match="unknown key 'colour'"):
        cls(colour="blue")


def _required(type_name: str) -> list[str]:
    return [n for n, f in _fields(type_name).items() if f.is_required()]


def _secret_field(type_name: str) -> str | None:
    for name, f in _fields(type_name).items():
        if is_secret_annotation(f.annotation):
            return name
    return None


def _bad_option_sets(type_name: str, secret: str) -> list[dict[str, Any]]:
    """Options that cannot validate, each holding ``secret`` somewhere."""
    field = _secret_field(type_name) or "credentials"
    fields = _fields(type_name)
    numeric = next(n for n, f in fields.items() if f.annotation in (int, float, int | None))
    cases: list[dict[str, Any]] = [
        {"tokn": secret},  # unknown option holding a token (and everything required missing)
        {"api_token": secret, "colour": secret},  # unknown, named like a credential
        {field: [secret, {"nested": secret}]},  # wrong type for the secret option
        {field: secret, numeric: "many"},  # wrong type next to a secret
        # every secret option set: the rest missing, or a rule across options broken
        {n: secret for n, f in fields.items() if is_secret_annotation(f.annotation)}
        or {field: secret},
        {field: {"type": "oauth", "client_secret": secret, "refresh_token": 5}},  # nested
    ]
    if field in fields and _required(type_name) == [field]:
        cases.pop()  # a nested mapping is the wrong type, already covered
    return cases


@pytest.mark.parametrize("type_name", CONNECTORS)
def test_every_option_error_is_redacted(type_name: str) -> None:
    cls = _cls(type_name)
    for case in range(len(_bad_option_sets(type_name, "-"))):
        secret = _secret()
        options = _bad_option_sets(type_name, secret)[case]
        for build in (lambda o: cls(**o), lambda o: cls.from_config(o, name="src")):
            with pytest.raises(ConfigError) as info:
                build(options)
            message = str(info.value)
            assert secret not in message, f"case {case} {options!r}: {message}"
            # pydantic's own error repeats every input: it is not chained, not even as context
            assert secret not in repr(info.value.__context__), f"case {case}"
            assert f"'{type_name}'" in message, message  # says which source


@pytest.mark.parametrize("type_name", CONNECTORS)
def test_a_configs_option_errors_are_redacted_too(type_name: str, tmp_path: Path) -> None:
    """The YAML path (``cfstream validate``/``run``) reports through the same messages."""
    for case in range(len(_bad_option_sets(type_name, "-"))):
        secret = _secret()
        options = _bad_option_sets(type_name, secret)[case]
        data = {"dataset": str(tmp_path / "kb.lance"), "sources": {"src": {"type": type_name}}}
        data["sources"]["src"].update(options)
        with pytest.raises(ConfigError) as info:
            build_source(parse_config(data, base_dir=tmp_path).sources["src"])
        assert secret not in str(info.value), f"case {case} {options!r}: {info.value}"
        assert "sources.src" in str(info.value)
