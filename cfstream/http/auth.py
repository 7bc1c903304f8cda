"""Credentials for a service, and the origin check that keeps them on the service's own host.

An auth object only knows how to build its header. :class:`~cfstream.http.Service` asks for it only
when the request's origin (scheme, host, port) equals the origin of the service's ``base_url``: a
pagination link or redirect that points anywhere else is sent without it.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Mapping

from pydantic import SecretStr
from yarl import URL

from cfstream.secrets import Secret

__all__ = ("Auth", "BearerAuth", "HeaderAuth", "NoAuth", "origin_of", "same_origin")

_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str | URL) -> tuple[str, str, int | None]:
    """The origin ``(scheme, host, port)`` of ``url``; default ports are made explicit."""
    u = url if isinstance(url, URL) else URL(url, encoded=True)
    scheme = (u.scheme or "").lower()
    port = u.explicit_port if u.explicit_port is not None else _DEFAULT_PORTS.get(scheme)
    return scheme, (u.host or "").lower(), port


def same_origin(a: str | URL, b: str | URL) -> bool:
    """True when ``a`` and ``b`` have the same scheme, host and port."""
    return origin_of(a) == origin_of(b)


def _as_secret(value: str | SecretStr) -> Secret:
    if isinstance(value, Secret):
        return value
    if isinstance(value, SecretStr):
        return Secret(value.get_secret_value())
    return Secret(value)


class Auth(ABC):
    """How a service authenticates: the headers to add to requests sent to its own origin."""

    @abstractmethod
    def headers(self) -> Mapping[str, str]:
        """The headers to attach (they contain the secret: never log them)."""

    @abstractmethod
    def fingerprint(self) -> str:
        """A one-way digest that identifies the credential (rate limits are kept per credential)."""


class NoAuth(Auth):
    """No credential: nothing is attached."""

    def headers(self) -> Mapping[str, str]:
        """No headers."""
        return {}

    def fingerprint(self) -> str:
        """The same digest for every anonymous client."""
        return "anonymous"

    def __repr__(self) -> str:
        return "NoAuth()"


class HeaderAuth(Auth):
    """A secret sent verbatim in a header of your choice.

    Example: Linear personal API keys go as ``Authorization: <key>`` (no scheme), so use
    ``HeaderAuth("Authorization", key)``; an API gateway might want ``HeaderAuth("X-Api-Key", key)``.
    """

    def __init__(self, name: str, value: str | SecretStr) -> None:
        self.name = name
        self._value = _as_secret(value)

    def headers(self) -> Mapping[str, str]:
        """``{name: value}``."""
        return {self.name: self._value.get_secret_value()}

    def fingerprint(self) -> str:
        """SHA-256 of the header name and value."""
        raw = f"{self.name.lower()}\0{self._value.get_secret_value()}"
        return hashlib.sha256(raw.encode()).hexdigest()

    def __repr__(self) -> str:
        return f"HeaderAuth({self.name!r}, '**********')"


class BearerAuth(HeaderAuth):
    """``Authorization: <scheme> <token>``; the scheme is ``Bearer`` unless you say otherwise.

    GitHub, Notion, Slack, Google and Linear OAuth use ``Bearer``; Discord bots use
    ``BearerAuth(token, scheme="Bot")``.
    """

    def __init__(self, token: str | SecretStr, *, scheme: str = "Bearer") -> None:
        secret = _as_secret(token)
        super().__init__("Authorization", Secret(f"{scheme} {secret.get_secret_value()}"))
        self.scheme = scheme

    def __repr__(self) -> str:
        return f"BearerAuth(scheme={self.scheme!r}, token='**********')"
