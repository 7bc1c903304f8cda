"""Secrets: a string type that never shows its value, and redaction of known secrets from text.

Every :class:`Secret` registers its value with a process-wide redactor. Log records emitted under the
``cfstream`` logger, error messages built by the HTTP layer, dead letters and reports pass through
:func:`redact`, so a token that leaks into a message by accident still prints as ``***``.

The registry belongs to one process. A :class:`Secret` pickled into another process (a Ray worker,
a subprocess) registers itself again when it is unpickled there, and :class:`Redactions` carries
every value registered in this process (including those registered with :func:`register_secret`
alone) to another process the same way.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from typing import Any

from pydantic import SecretStr

__all__ = (
    "Redactions",
    "Secret",
    "SecretRedactingFilter",
    "env",
    "redact",
    "redact_url",
    "register_secret",
)

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None

#: query parameters whose values are always hidden in URLs
_SENSITIVE_PARAMS = re.compile(
    r"(?i)([?&](?:access_token|token|key|api_key|apikey|client_secret|refresh_token|code|signature|sig)=)[^&#\s]*"
)
# a credential after an auth scheme word; it must hold a digit, so prose ("token exchange") stays
_AUTH_HEADERLIKE = re.compile(
    r"(?i)\b(bearer|bot|token|basic)\s+(?=[A-Za-z._~+/=-]*\d)[A-Za-z0-9._~+/=-]{8,}"
)


def register_secret(value: str) -> None:
    """Remember ``value`` so that :func:`redact` hides it wherever it appears."""
    global _pattern
    if not value or len(value) < 4:
        return
    with _lock:
        if value in _secrets:
            return
        _secrets.add(value)
        ordered = sorted(_secrets, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(s) for s in ordered))


def redact(text: str) -> str:
    """Replace every registered secret, and anything shaped like an auth header value, by ``***``."""
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub("***", text)
    text = _AUTH_HEADERLIKE.sub(lambda m: f"{m.group(1)} ***", text)
    return text


def redact_url(url: str) -> str:
    """Hide user info and sensitive query parameters of ``url`` (and any registered secret)."""
    url = re.sub(r"//[^/@\s]+@", "//***@", url)
    url = _SENSITIVE_PARAMS.sub(r"\1***", url)
    return redact(url)


class Secret(SecretStr):
    """A secret string: ``str()``/``repr()``/logging show ``**********``; ``get_secret_value()`` reveals it.

    Works as a pydantic field type and registers its value for redaction on creation.
    """

    def __init__(self, secret_value: str) -> None:
        super().__init__(secret_value)
        register_secret(secret_value)

    def __reduce__(self) -> tuple[Any, ...]:
        # unpickling calls __init__, so the value is registered in the receiving process too
        # (pickle's default would restore the attribute and skip the registration)
        return (type(self), (self.get_secret_value(),))

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        def _make(value: Any) -> Secret:
            if isinstance(value, Secret):
                return value
            if isinstance(value, SecretStr):
                return cls(value.get_secret_value())
            if not isinstance(value, str):
                raise ValueError(f"a secret must be a string, not {type(value).__name__}")
            return cls(value)

        return core_schema.no_info_plain_validator_function(
            _make,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda v: str(v), when_used="always"
            ),
        )


def env(name: str, default: str | None = None) -> Secret:
    """Read a secret from the environment variable ``name``; raise ConfigError naming it if unset."""
    value = os.environ.get(name, default)
    if value is None:
        from cfstream.errors import ConfigError

        raise ConfigError(f"environment variable {name} is not set (it should hold a secret)")
    return Secret(value)


class Redactions:
    """The values registered for redaction in this process when it was made.

    Pickled into another process (e.g. as a Ray task argument), it registers every one of them
    there on unpickling; ``str()``/``repr()`` show only how many there are.
    """

    __slots__ = ("_values",)

    def __init__(self) -> None:
        with _lock:
            self._values = tuple(sorted(_secrets))

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Redactions({len(self._values)} value(s))"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_registered, (self._values,))


def _registered(values: tuple[str, ...]) -> Redactions:
    """Unpickle :class:`Redactions`: register ``values`` in this process."""
    for value in values:
        register_secret(value)
    return Redactions()


class SecretRedactingFilter(logging.Filter):
    """A logging filter that redacts registered secrets from the message, its arguments, and the
    traceback and stack it carries."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is the caller's bug; let logging report it
            return True
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            # handlers format the traceback later (its message may hold a secret) and reuse
            # exc_text when it is set: set it now, redacted
            record.exc_text = _TRACEBACKS.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_TRACEBACKS = logging.Formatter()
