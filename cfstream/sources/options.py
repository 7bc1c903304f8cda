"""Connector options, declared once: each connector's pydantic config model.

A connector's ``config_model`` (a :class:`~cfstream.sources.base.SourceConfig`) is the one place its
options are written down. Everything else derives from it:

* the constructor: ``GitHubSource(owner=..., repo=...)`` takes the model's fields as keyword
  arguments (plus ``name``) and validates them with :func:`validate_options`; its signature
  (``help()``, ``inspect.signature``) is :func:`options_signature` of the model;
* ``Source.from_config`` (a YAML config's options) calls that constructor;
* ``cfstream sources`` lists the model's fields (type, default, whether secret, description).

One validation path reports every option error: :func:`option_errors` turns pydantic's errors into
messages naming each option, and no value given in the options for a secret option (a ``Secret``
field, a key named like a credential, or an unknown key) ever appears in them.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, SecretStr, ValidationError

from cfstream.errors import ConfigError
from cfstream.secrets import redact

__all__ = (
    "SECRET_NAMES",
    "hide_values",
    "is_secret_annotation",
    "option_errors",
    "options_signature",
    "secret_fields",
    "secret_values",
    "validate_options",
)

M = TypeVar("M", bound=BaseModel)

#: option names that hold credentials whatever their type
SECRET_NAMES = re.compile(r"(?i)(token|secret|password|passwd|api_?key|credential|private)")
#: shortest value hidden from messages (shorter ones would blank out ordinary words)
_MIN_HIDDEN = 4


def is_secret_annotation(annotation: Any) -> bool:
    """True when a field annotation is (or contains) ``Secret``/``SecretStr``."""
    if isinstance(annotation, type) and issubclass(annotation, SecretStr):
        return True
    return any(is_secret_annotation(a) for a in typing.get_args(annotation))


def secret_fields(model: type[BaseModel] | None) -> frozenset[str]:
    """The fields of ``model`` typed as secrets or named like credentials."""
    if model is None:
        return frozenset()
    return frozenset(
        name
        for name, f in model.model_fields.items()
        if is_secret_annotation(f.annotation) or SECRET_NAMES.search(name)
    )


def _leaves(value: Any) -> list[str]:
    if isinstance(value, SecretStr):
        return [value.get_secret_value()]
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return [str(value)]
    if isinstance(value, Mapping):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, Sequence | set | frozenset) and not isinstance(value, bytes):
        return [leaf for v in value for leaf in _leaves(v)]
    return []


def secret_values(model: type[BaseModel] | None, options: Mapping[str, Any]) -> list[str]:
    """The values in ``options`` that must never be shown: those of secret fields, of keys named
    like credentials, of keys the model does not have (a misspelt ``tokn`` holds a token), and
    any :class:`~pydantic.SecretStr` anywhere."""
    known = set(model.model_fields) if model is not None else set()
    secrets = secret_fields(model)
    out: list[str] = []
    for key, value in options.items():
        name = str(key)
        if (
            name in secrets
            or SECRET_NAMES.search(name)
            or (model is not None and name not in known)
        ):
            out += _leaves(value)
        else:
            out += _leaves_of_secrets(value)
    return sorted({v for v in out if len(v) >= _MIN_HIDDEN}, key=len, reverse=True)


def _leaves_of_secrets(value: Any) -> list[str]:
    if isinstance(value, SecretStr):
        return [value.get_secret_value()]
    if isinstance(value, Mapping):
        out: list[str] = []
        for k, v in value.items():
            out += _leaves(v) if SECRET_NAMES.search(str(k)) else _leaves_of_secrets(v)
        return out
    if isinstance(value, list | tuple | set | frozenset):
        return [leaf for v in value for leaf in _leaves_of_secrets(v)]
    return []


def hide_values(text: str, values: Sequence[str]) -> str:
    """``text`` with each of ``values`` (longest first) and every registered secret as ``***``."""
    for value in values:
        text = text.replace(value, "***")
    return redact(text)


def _describe_input(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"got {text} ({type(value).__name__})"


def option_errors(
    exc: ValidationError,
    model: type[BaseModel] | None = None,
    options: Mapping[str, Any] | None = None,
) -> list[tuple[list[str | int], str]]:
    """One ``(key path, message)`` per problem in ``exc``, saying what to do.

    Unknown keys list the model's fields; a wrong value says what was expected and, unless the
    option is secret, what was given. ``options`` (what was validated) names the values to hide:
    see :func:`secret_values`; the messages never contain one.
    """
    secrets = secret_fields(model)
    hidden = secret_values(model, options or {})
    out: list[tuple[list[str | int], str]] = []
    for err in exc.errors(include_url=False):
        loc = [p for p in err["loc"] if isinstance(p, str | int)]
        kind = err["type"]
        last = loc[-1] if loc else None
        secret = bool(loc) and (
            (isinstance(loc[0], str) and loc[0] in secrets)
            or any(isinstance(p, str) and SECRET_NAMES.search(p) for p in loc)
        )
        if kind == "extra_forbidden":
            msg = f"unknown key {last!r}"
            if model is not None and len(loc) == 1:
                msg += f"; expected one of: {', '.join(sorted(model.model_fields))}"
        elif kind == "missing":
            msg = f"missing required key {last!r}"
        elif kind == "value_error" and not loc:  # a rule across several options: say the rule
            msg = str(err["msg"]).removeprefix("Value error, ")
        else:
            msg = f"expected {err['msg'][0].lower()}{err['msg'][1:]}"
            msg = msg.replace("expected input should be", "expected")
            msg = msg.replace("expected value error, ", "")
            if not secret:
                msg += f", {_describe_input(err.get('input'))}"
        out.append((loc, hide_values(msg, hidden)))
    return out


def validate_options(model: type[M], source_type: str, options: Mapping[str, Any]) -> M:
    """Validate a connector's options with its ``model``.

    :raises ~cfstream.errors.ConfigError: naming each bad option (see :func:`option_errors`);
        it carries no secret value, and pydantic's own error (which repeats every input) is not
        chained.
    """
    try:
        return model.model_validate(dict(options))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in loc) or '(options)'}: {msg}"
            for loc, msg in option_errors(exc, model, options)
        )
    raise ConfigError(f"invalid options for the {source_type!r} source: {problems}")


def options_signature(
    model: type[BaseModel], *, positional: str | None = None
) -> inspect.Signature:
    """The constructor signature a connector derives from its ``model``: ``name`` and every field
    as keyword-only parameters (``positional`` may also be given first, by position)."""
    params: list[inspect.Parameter] = []
    for field_name, f in model.model_fields.items():
        default = (
            inspect.Parameter.empty if f.is_required() else f.get_default(call_default_factory=True)
        )
        kind = (
            inspect.Parameter.POSITIONAL_OR_KEYWORD
            if field_name == positional
            else inspect.Parameter.KEYWORD_ONLY
        )
        params.append(inspect.Parameter(field_name, kind, default=default, annotation=f.annotation))
    params.sort(key=lambda p: p.kind)  # the positional one first
    params.append(
        inspect.Parameter(
            "name", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=str | None
        )
    )
    return inspect.Signature(params)
