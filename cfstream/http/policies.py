"""Response policies: what a response from a given service family means.

Services signal errors and rate limits differently (Slack answers HTTP 200 with ``ok: false``,
Linear puts ``RATELIMITED`` in GraphQL ``errors``, Google says 403 ``rateLimitExceeded``). A
:class:`ResponsePolicy` turns a raw response into a :class:`Verdict`: the decoded data, or a
:class:`Problem` (which error class, whether and how long to wait), plus the rate-limit gates the
headers ask for. The retry loop in :class:`cfstream.http.Service` acts on verdicts and knows nothing
about any service.

This module knows no service: it holds the mechanism and :class:`GenericPolicy`. Each connector
defines its service family's policy next to itself (``cfstream.sources.slack.SlackPolicy``, ...) and
registers it with :func:`register_policy` when its module is imported. Pass an instance
(``policy=SlackPolicy(auth_hint="...")``) or a registered family name (``policy="slack"``); with
``policy=None`` the service name picks a registered family of that name, else ``generic``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import orjson
from multidict import CIMultiDictProxy
from yarl import URL

from cfstream.errors import (
    AuthError,
    ClientError,
    HTTPError,
    NotFoundError,
    RateLimitError,
    ResponseFormatError,
    TransientError,
)
from cfstream.http.ratelimit import Gate
from cfstream.http.retry import parse_retry_after
from cfstream.logs import get_logger
from cfstream.secrets import redact, redact_url

__all__ = (
    "RETRY_STATUSES",
    "GenericPolicy",
    "Problem",
    "RawResponse",
    "ResponsePolicy",
    "Verdict",
    "join_message",
    "policy_for",
    "register_policy",
    "repair_json",
)

#: statuses retried with backoff (529 is Notion's "service_overload")
RETRY_STATUSES = frozenset({500, 502, 503, 504, 529})
#: 2xx statuses that carry no body by definition
_NO_BODY = frozenset({204, 205})

Scope = Literal["service", "bucket", "request"]

log = get_logger("cfstream.http")


@dataclass(frozen=True)
class RawResponse:
    """A response as read off the wire, before any interpretation.

    ``url`` is the real URL (it may carry secrets in the query: redact before showing it);
    ``route`` is ``"METHOD /path"``, the key for per-route rate-limit buckets.
    """

    method: str
    url: str
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def route(self) -> str:
        """``"METHOD /path"`` without the query string."""
        return f"{self.method} {URL(self.url, encoded=True).path}"

    def header(self, name: str) -> str | None:
        """A header value (case-insensitive), or None."""
        return self.headers.get(name)


@dataclass(frozen=True)
class Problem:
    """Why a response is not usable data.

    Attributes:
        kind: the error class to raise if the problem is final.
        message: what happened and what to do (no secrets; redacted before use anyway).
        cause: the metrics key for a retry (``"rate_limited"``, ``"http_503"``, ``"invalid_json"``).
        retry_after: the wait the service asked for, in seconds, when it named one.
        scope: who waits: the whole ``"service"``, one rate-limit ``"bucket"``, or only this
            ``"request"`` (backoff, when no wait was named).
        bucket: the bucket key when ``scope == "bucket"``.
    """

    kind: type[HTTPError]
    message: str
    cause: str
    retry_after: float | None = None
    scope: Scope = "service"
    bucket: str | None = None

    @property
    def retryable(self) -> bool:
        """Whether the retry loop should try again."""
        return bool(self.kind.retryable)

    @property
    def is_rate_limit(self) -> bool:
        """True for rate-limit signals (429 and the services' own ones)."""
        return issubclass(self.kind, RateLimitError)


@dataclass
class Verdict:
    """What a policy concluded: ``data`` (when ``problem`` is None), gates to close, bucket learned."""

    data: Any = None
    problem: Problem | None = None
    gates: list[Gate] = field(default_factory=list)
    learned_bucket: tuple[str, str] | None = None


_UNDECODED: Any = object()
_EMPTY: Any = object()

#: one JSON escape: a valid surrogate pair (1), a lone surrogate (2), or any other escape (kept)
_ESCAPE = re.compile(
    rb"\\(?:(u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2})|(u[dD][89a-fA-F][0-9a-fA-F]{2})|.)",
    re.DOTALL,
)


def _escape_fix(match: re.Match[bytes]) -> bytes:
    return b"\\ufffd" if match.group(2) is not None else match.group(0)


def repair_json(body: bytes) -> Any:
    """Decode a JSON body that orjson rejected, repairing what real APIs send broken.

    Lone surrogate escapes (``"\\ud83d"``, half of a cut emoji) become U+FFFD; valid surrogate
    pairs and escaped backslashes (``"\\\\ud83d"`` is literal text) are kept; raw bytes that
    are not UTF-8 become U+FFFD. Only the failing body pays for this; normal pages take
    ``orjson.loads`` directly.

    :raises orjson.JSONDecodeError: the body is still not JSON (truncated, HTML, ...).
    """
    fixed = _ESCAPE.sub(_escape_fix, body) if b"\\u" in body else body
    try:
        return orjson.loads(fixed)
    except orjson.JSONDecodeError:
        text = fixed.decode("utf-8", errors="replace")
        return orjson.loads(text)


def _get(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _looks_html(raw: RawResponse) -> bool:
    ctype = (raw.header("Content-Type") or "").lower()
    if "html" in ctype:
        return True
    head = raw.body[:200].lstrip().lower()
    return head.startswith((b"<!doctype", b"<html", b"<head", b"<body"))


class ResponsePolicy:
    """The generic policy; service families subclass it and override the hooks.

    Hooks, in the order :meth:`judge` calls them:

    * :meth:`gates` - proactive waits announced by headers on any response;
    * :meth:`inspect` - service-specific meaning of a decoded response (any status); return a
      :class:`Problem`, or None to fall through;
    * the generic status mapping: 2xx data, 429 rate limit (``Retry-After``), 401/403
      :class:`~cfstream.errors.AuthError` with :meth:`auth_hint`, 404
      :class:`~cfstream.errors.NotFoundError`, 500/502/503/504/529
      :class:`~cfstream.errors.TransientError`, other 4xx :class:`~cfstream.errors.ClientError`.

    :param auth_hint: what to tell the user on 401/403, replacing the family's default (say which
        credential and which scope to check).
    """

    name = "generic"
    default_auth_hint = "check the {service} credential and that it grants access to this resource"

    def __init__(self, *, auth_hint: str | None = None) -> None:
        self._auth_hint = auth_hint

    @property
    def custom_hint(self) -> str | None:
        """The ``auth_hint`` given to the constructor (None: the family's default applies)."""
        return self._auth_hint

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    # -- hooks ---------------------------------------------------------------------------------

    def auth_hint(self, service: str, raw: RawResponse, data: Any) -> str:
        """What to check after a 401/403 (the credential and its scopes)."""
        return (self._auth_hint or self.default_auth_hint).format(service=service)

    def gates(self, raw: RawResponse, now: float) -> list[Gate]:
        """Gates to close because of this response's headers (none by default)."""
        return []

    def learned_bucket(self, raw: RawResponse) -> tuple[str, str] | None:
        """``(route, bucket)`` when the response names its rate-limit bucket."""
        return None

    def inspect(self, raw: RawResponse, data: Any, service: str, now: float) -> Problem | None:
        """Service-specific meaning of a response, or None to use the generic status mapping."""
        return None

    def error_message(self, data: Any) -> str:
        """The human message inside an error body, in any of the common envelopes."""
        if isinstance(data, Mapping):
            for candidate in (
                data.get("message"),
                _get(data, "error", "message"),
                data.get("error_description"),
                data.get("error") if isinstance(data.get("error"), str) else None,
            ):
                if isinstance(candidate, str) and candidate:
                    return _short(candidate)
            errors = data.get("errors")
            if isinstance(errors, list):
                msgs = [e.get("message") for e in errors if isinstance(e, Mapping)]
                joined = "; ".join(m for m in msgs if isinstance(m, str))
                if joined:
                    return _short(joined)
        return ""

    # -- the driver ----------------------------------------------------------------------------

    def judge(
        self, raw: RawResponse, *, service: str, now: float, expect_json: bool = True
    ) -> Verdict:
        """Interpret ``raw``: decode the body and decide whether it is data or a problem."""
        verdict = Verdict(gates=self.gates(raw, now), learned_bucket=self.learned_bucket(raw))
        data = self._decode(raw) if expect_json or raw.status >= 300 else None
        empty = data is _EMPTY
        decoded = data is not _UNDECODED
        if empty or not decoded:
            data = None
        problem = self.inspect(raw, data, service, now)
        if problem is None:
            problem = self._by_status(raw, data, decoded, service, now, expect_json, empty)
        verdict.problem = problem
        if problem is None:
            verdict.data = data
        return verdict

    @staticmethod
    def _decode(raw: RawResponse) -> Any:
        body = raw.body
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
        if not body or body.isspace():
            return _EMPTY
        try:
            data = repair_json(body)
        except orjson.JSONDecodeError:
            return _UNDECODED
        log.warning(
            "%s %s: the body held broken text (a lone surrogate escape or bytes that are not "
            "UTF-8); decoded it with U+FFFD in their place",
            raw.method,
            redact_url(raw.url),
        )
        return data

    def _by_status(
        self,
        raw: RawResponse,
        data: Any,
        decoded: bool,
        service: str,
        now: float,
        expect_json: bool,
        empty: bool = False,
    ) -> Problem | None:
        status = raw.status
        detail = self.error_message(data)
        if 200 <= status < 300:
            if expect_json and empty and status not in _NO_BODY and raw.method != "HEAD":
                return Problem(
                    ResponseFormatError,
                    "the body is empty where JSON was expected (a faulty or cut-off answer; "
                    "an empty answer is never taken as 'nothing there')",
                    "empty_body",
                    scope="request",
                )
            if expect_json and not decoded:
                if _looks_html(raw):
                    return Problem(
                        ResponseFormatError,
                        "got an HTML page instead of JSON (a proxy or gateway error page?)",
                        "html",
                        scope="request",
                    )
                return Problem(
                    ResponseFormatError,
                    f"the body is not valid JSON ({len(raw.body)} bytes; truncated or wrong endpoint?)",
                    "invalid_json",
                    scope="request",
                )
            return None
        if status == 429:
            return self.rate_limited(raw, now, detail or "429 Too Many Requests")
        if status in (401, 403):
            hint = self.auth_hint(service, raw, data)
            what = "unauthorized" if status == 401 else "forbidden"
            return Problem(AuthError, join_message(f"{what}", detail, hint), f"http_{status}")
        if status == 404:
            return Problem(
                NotFoundError,
                join_message(
                    "not found", detail, "check the name or ID and that the credential can see it"
                ),
                "http_404",
            )
        if status in RETRY_STATUSES:
            html = " (an HTML error page: a proxy or gateway failed)" if _looks_html(raw) else ""
            return Problem(
                TransientError,
                join_message(f"server error{html}", detail),
                f"http_{status}",
                scope="request",
            )
        if 300 <= status < 400:
            return Problem(
                ClientError,
                join_message("unexpected redirect or too many redirects", detail),
                f"http_{status}",
            )
        if 400 <= status < 500:
            return Problem(ClientError, join_message("request rejected", detail), f"http_{status}")
        return Problem(
            HTTPError,
            join_message("unexpected server status; not retried", detail),
            f"http_{status}",
        )

    def rate_limited(
        self,
        raw: RawResponse,
        now: float,
        detail: str,
        *,
        retry_after: float | None = None,
        scope: Scope = "service",
        bucket: str | None = None,
    ) -> Problem:
        """A rate-limit problem; the wait defaults to the ``Retry-After`` header."""
        if retry_after is None:
            retry_after = parse_retry_after(raw.header("Retry-After"), now=now)
        if retry_after is None and scope != "bucket":
            scope = "request"
        return Problem(
            RateLimitError,
            join_message("rate limited", detail),
            "rate_limited",
            retry_after=retry_after,
            scope=scope,
            bucket=bucket,
        )


def join_message(*parts: str) -> str:
    """The non-empty ``parts`` joined with ``"; "``, redacted: a :class:`Problem` message."""
    return redact("; ".join(p for p in parts if p))


class GenericPolicy(ResponsePolicy):
    """Status codes and ``Retry-After`` only: for services without a family of their own."""


#: the registered families: name -> policy class (see :func:`register_policy`)
_FAMILIES: dict[str, type[ResponsePolicy]] = {GenericPolicy.name: GenericPolicy}
#: other names of a registered family: alias -> family name
_ALIASES: dict[str, str] = {}

P = TypeVar("P", bound=type[ResponsePolicy])


def register_policy(cls: P, *aliases: str) -> P:
    """Register ``cls`` as the family ``cls.name`` (and each alias) for :func:`policy_for`.

    A connector calls it for its service's policy when its module is imported, so
    ``http.service("<name>", ...)`` and ``policy="<name>"`` pick that policy. Registering a name
    again replaces the earlier class. Returns ``cls`` (usable as a class decorator).
    """
    _FAMILIES[cls.name.lower()] = cls
    for alias in aliases:
        _ALIASES[alias.lower()] = cls.name.lower()
    return cls


def policy_for(policy: str | ResponsePolicy | None, service: str = "") -> ResponsePolicy:
    """Resolve ``policy``: an instance is used as is, a registered family name builds that
    family's policy, None picks the registered family named like ``service`` or ``generic``
    (see :func:`register_policy`).

    :raises ValueError: for an unknown family name (the message lists the known ones).
    """
    if isinstance(policy, ResponsePolicy):
        return policy
    if policy is None:
        name = service.lower()
        return _FAMILIES.get(_ALIASES.get(name, name), GenericPolicy)()
    try:
        return _FAMILIES[_ALIASES.get(policy.lower(), policy.lower())]()
    except KeyError:
        known = ", ".join(sorted(_FAMILIES))
        raise ValueError(
            f"unknown response policy {policy!r}; use one of {known} (a connector's family is "
            "registered when its module is imported) or pass a ResponsePolicy instance"
        ) from None
