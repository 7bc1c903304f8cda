"""Response policies: what a response from a given service family means.

Services signal errors and rate limits differently (Slack answers HTTP 200 with ``ok: false``,
Linear puts ``RATELIMITED`` in GraphQL ``errors``, Google says 403 ``rateLimitExceeded``). A
:class:`ResponsePolicy` turns a raw response into a :class:`Verdict`: the decoded data, or a
:class:`Problem` (which error class, whether and how long to wait), plus the rate-limit gates the
headers ask for. The retry loop in :class:`cfstream.http.Service` acts on verdicts and knows nothing
about any service.

One policy per family, each written once: ``generic``, ``github``, ``discord``, ``linear``,
``slack``, ``notion``, ``google``. Pick one with ``http.service(..., policy="slack")`` or pass an
instance (``policy=SlackPolicy(auth_hint="...")``); with ``policy=None`` the service name picks the
family when it is one of these names, else ``generic``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

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
from cfstream.http.retry import parse_reset, parse_retry_after
from cfstream.secrets import get_logger, redact, redact_url

__all__ = (
    "DiscordPolicy",
    "GenericPolicy",
    "GitHubPolicy",
    "GooglePolicy",
    "LinearPolicy",
    "NotionPolicy",
    "Problem",
    "RawResponse",
    "ResponsePolicy",
    "SlackPolicy",
    "Verdict",
    "policy_for",
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
            return Problem(AuthError, _join(f"{what}", detail, hint), f"http_{status}")
        if status == 404:
            return Problem(
                NotFoundError,
                _join(
                    "not found", detail, "check the name or ID and that the credential can see it"
                ),
                "http_404",
            )
        if status in RETRY_STATUSES:
            html = " (an HTML error page: a proxy or gateway failed)" if _looks_html(raw) else ""
            return Problem(
                TransientError,
                _join(f"server error{html}", detail),
                f"http_{status}",
                scope="request",
            )
        if 300 <= status < 400:
            return Problem(
                ClientError,
                _join("unexpected redirect or too many redirects", detail),
                f"http_{status}",
            )
        if 400 <= status < 500:
            return Problem(ClientError, _join("request rejected", detail), f"http_{status}")
        return Problem(
            HTTPError, _join("unexpected server status; not retried", detail), f"http_{status}"
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
            _join("rate limited", detail),
            "rate_limited",
            retry_after=retry_after,
            scope=scope,
            bucket=bucket,
        )


def _join(*parts: str) -> str:
    return redact("; ".join(p for p in parts if p))


class GenericPolicy(ResponsePolicy):
    """Status codes and ``Retry-After`` only: for services without a family of their own."""


class GitHubPolicy(ResponsePolicy):
    """GitHub REST: primary limit via ``x-ratelimit-remaining``/``-reset``, secondary via ``retry-after``.

    ``x-ratelimit-remaining: 0`` closes the service until ``x-ratelimit-reset`` (epoch seconds). A
    403/429 with ``retry-after`` is a secondary limit; one with remaining 0 waits for the reset; a
    403 whose message mentions a rate limit but gives neither waits 60 s as GitHub's docs ask.
    """

    name = "github"
    default_auth_hint = (
        "check the {service} token and that it has scope repo (or read access to this repository)"
    )

    def auth_hint(self, service: str, raw: RawResponse, data: Any) -> str:
        """Names the scopes GitHub says the endpoint accepts (``X-Accepted-OAuth-Scopes``)."""
        accepted = raw.header("X-Accepted-OAuth-Scopes")
        if accepted and not self._auth_hint:
            return f"check the {service} token and that it has scope {accepted}"
        return super().auth_hint(service, raw, data)

    def gates(self, raw: RawResponse, now: float) -> list[Gate]:
        """Close the service until the reset when the primary budget is spent."""
        if raw.header("x-ratelimit-remaining") == "0":
            wait = parse_reset(raw.header("x-ratelimit-reset"), now=now)
            if wait:
                return [
                    Gate(
                        now + wait,
                        None,
                        "x-ratelimit-remaining is 0; waiting for x-ratelimit-reset",
                    )
                ]
        return []

    def inspect(self, raw: RawResponse, data: Any, service: str, now: float) -> Problem | None:
        """403/429 rate limits (primary and secondary)."""
        if raw.status not in (403, 429):
            return None
        detail = self.error_message(data)
        retry_after = parse_retry_after(raw.header("retry-after"), now=now)
        if retry_after is not None:
            return self.rate_limited(
                raw, now, _join("secondary rate limit", detail), retry_after=retry_after
            )
        if raw.header("x-ratelimit-remaining") == "0":
            wait = parse_reset(raw.header("x-ratelimit-reset"), now=now)
            return self.rate_limited(
                raw, now, _join("primary rate limit", detail), retry_after=wait or 60.0
            )
        if "rate limit" in detail.lower():
            return self.rate_limited(
                raw, now, _join("secondary rate limit", detail), retry_after=60.0
            )
        return None


class DiscordPolicy(ResponsePolicy):
    """Discord: per-bucket limits (``X-RateLimit-Bucket``/``-Remaining``/``-Reset-After``) and 429 bodies.

    A response with remaining 0 closes its bucket for ``Reset-After`` seconds. A 429 waits for the
    body's ``retry_after`` (float seconds); ``global: true`` (or ``X-RateLimit-Global``) closes the
    whole service, otherwise only the bucket.
    """

    name = "discord"
    default_auth_hint = (
        "check the {service} bot token (sent as 'Authorization: Bot <token>') and that the bot can "
        "view the channel and read its message history"
    )

    def learned_bucket(self, raw: RawResponse) -> tuple[str, str] | None:
        """Discord names the bucket of every route in ``X-RateLimit-Bucket``."""
        bucket = raw.header("X-RateLimit-Bucket")
        return (raw.route, bucket) if bucket else None

    def _bucket(self, raw: RawResponse) -> str:
        return raw.header("X-RateLimit-Bucket") or raw.route

    def gates(self, raw: RawResponse, now: float) -> list[Gate]:
        """Close the bucket when its remaining budget is 0."""
        if raw.status != 429 and raw.header("X-RateLimit-Remaining") == "0":
            wait = parse_reset(raw.header("X-RateLimit-Reset-After"), now=now)
            if wait:
                return [Gate(now + wait, self._bucket(raw), "X-RateLimit-Remaining is 0")]
        return []

    def inspect(self, raw: RawResponse, data: Any, service: str, now: float) -> Problem | None:
        """429 with ``retry_after``/``global`` in the body."""
        if raw.status != 429:
            return None
        body_wait = data.get("retry_after") if isinstance(data, Mapping) else None
        retry_after = float(body_wait) if isinstance(body_wait, int | float) else None
        is_global = (isinstance(data, Mapping) and data.get("global") is True) or (
            (raw.header("X-RateLimit-Global") or "").lower() == "true"
        )
        scope_hdr = raw.header("X-RateLimit-Scope") or ("global" if is_global else "")
        detail = _join(self.error_message(data), f"scope {scope_hdr}" if scope_hdr else "")
        if is_global:
            return self.rate_limited(raw, now, detail, retry_after=retry_after, scope="service")
        return self.rate_limited(
            raw, now, detail, retry_after=retry_after, scope="bucket", bucket=self._bucket(raw)
        )


class LinearPolicy(ResponsePolicy):
    """Linear GraphQL: ``errors[].extensions.code == "RATELIMITED"`` is a rate limit at any status.

    Any other GraphQL error becomes a typed error (never data): authentication codes an
    :class:`~cfstream.errors.AuthError`, the rest a :class:`~cfstream.errors.ClientError`.
    ``X-RateLimit-Requests-Remaining: 0`` closes the service until ``X-RateLimit-Requests-Reset``.
    """

    name = "linear"
    default_auth_hint = (
        "check the {service} API key (personal keys are sent without 'Bearer') and that it can "
        "read the team"
    )

    def gates(self, raw: RawResponse, now: float) -> list[Gate]:
        """Close the service when the request or complexity budget is spent."""
        out: list[Gate] = []
        for kind in ("Requests", "Complexity"):
            if raw.header(f"X-RateLimit-{kind}-Remaining") == "0":
                wait = parse_reset(raw.header(f"X-RateLimit-{kind}-Reset"), now=now)
                if wait:
                    out.append(Gate(now + wait, None, f"X-RateLimit-{kind}-Remaining is 0"))
        return out

    def inspect(self, raw: RawResponse, data: Any, service: str, now: float) -> Problem | None:
        """GraphQL ``errors`` in the body, whatever the HTTP status."""
        errors = data.get("errors") if isinstance(data, Mapping) else None
        if not isinstance(errors, list) or not errors:
            if raw.status == 429:
                return self._rate_limit(raw, now, "429 Too Many Requests")
            return None
        codes: list[str] = []
        for err in errors:
            ext = err.get("extensions") if isinstance(err, Mapping) else None
            if isinstance(ext, Mapping):
                codes += [str(ext.get("code") or "").upper(), str(ext.get("type") or "").upper()]
        message = self.error_message(data)
        if raw.status == 429 or "RATELIMITED" in codes:
            return self._rate_limit(raw, now, message)
        if {"AUTHENTICATION_ERROR", "AUTHENTICATION ERROR", "FORBIDDEN"} & set(
            codes
        ) or raw.status in (401, 403):
            return Problem(
                AuthError,
                _join("GraphQL error", message, self.auth_hint(service, raw, data)),
                "graphql_auth",
            )
        if raw.status in RETRY_STATUSES:
            return Problem(
                TransientError,
                _join("server error", message),
                f"http_{raw.status}",
                scope="request",
            )
        return Problem(ClientError, _join("GraphQL error", message), "graphql_error")

    def _rate_limit(self, raw: RawResponse, now: float, detail: str) -> Problem:
        wait = parse_retry_after(raw.header("Retry-After"), now=now)
        if wait is None:
            wait = parse_reset(raw.header("X-RateLimit-Requests-Reset"), now=now)
        return self.rate_limited(raw, now, _join("RATELIMITED", detail), retry_after=wait)


_SLACK_AUTH = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "no_permission",
        "ekm_access_denied",
    }
)
_SLACK_TRANSIENT = frozenset(
    {"internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
_SLACK_NOT_FOUND = {
    "not_in_channel": "invite the app to the channel (/invite @your-app) or use a token of a member",
    "channel_not_found": (
        "check the channel ID and that the token can see it (invite the app to private channels)"
    ),
    "thread_not_found": "the thread's parent message is gone or the ts is wrong",
    "user_not_found": "check the user ID",
    "message_not_found": "the message was deleted or the ts is wrong",
}


class SlackPolicy(ResponsePolicy):
    """Slack Web API: HTTP 200 with ``{"ok": false, "error": ...}`` is an error.

    ``ratelimited`` (at 200 or 429) is a rate limit honouring ``Retry-After``, kept per method;
    ``invalid_auth``/``not_authed``/``account_inactive``/``token_revoked`` are auth errors;
    ``missing_scope`` names the scope needed; ``not_in_channel``/``channel_not_found`` are
    not-found errors that say what to do; other codes are client errors.
    """

    name = "slack"
    default_auth_hint = (
        "check the {service} token (xoxb-/xoxp-) and that it has scopes channels:read and "
        "channels:history (groups:/im:/mpim: for private conversations)"
    )

    def inspect(self, raw: RawResponse, data: Any, service: str, now: float) -> Problem | None:
        """Slack's ``ok: false`` envelope."""
        if not isinstance(data, Mapping) or data.get("ok") is not False:
            if raw.status == 429:
                return self.rate_limited(
                    raw, now, "429 Too Many Requests", scope="bucket", bucket=raw.route
                )
            return None
        code = str(data.get("error") or "unknown_error")
        if code == "ratelimited" or raw.status == 429:
            return self.rate_limited(
                raw, now, f"slack error {code!r}", scope="bucket", bucket=raw.route
            )
        if code == "missing_scope":
            needed = data.get("needed")
            hint = (
                f"the {service} token lacks scope {needed}; add it to the app and reinstall"
                if needed
                else self.auth_hint(service, raw, data)
            )
            return Problem(
                AuthError, _join("slack error 'missing_scope'", hint), "slack_missing_scope"
            )
        if code in _SLACK_AUTH:
            return Problem(
                AuthError,
                _join(f"slack error {code!r}", self.auth_hint(service, raw, data)),
                f"slack_{code}",
            )
        if code in _SLACK_NOT_FOUND:
            return Problem(
                NotFoundError,
                _join(f"slack error {code!r}", _SLACK_NOT_FOUND[code]),
                f"slack_{code}",
            )
        if code in _SLACK_TRANSIENT:
            return Problem(
                TransientError, f"slack error {code!r}", f"slack_{code}", scope="request"
            )
        return Problem(ClientError, f"slack error {code!r}", f"slack_{code}")


class NotionPolicy(ResponsePolicy):
    """Notion: the ``{"object": "error", "status", "code", "message"}`` envelope.

    ``rate_limited`` (429) honours ``Retry-After``; ``object_not_found`` says to share the page with
    the integration; ``conflict_error`` and 529 ``service_overload`` are retried.
    """

    name = "notion"
    default_auth_hint = (
        "check the {service} integration token and that the page or database is shared with the "
        "integration (page menu -> Connections)"
    )

    def inspect(self, raw: RawResponse, data: Any, service: str, now: float) -> Problem | None:
        """Notion error codes."""
        if not isinstance(data, Mapping) or data.get("object") != "error":
            return None
        code = str(data.get("code") or "")
        message = self.error_message(data)
        if code == "rate_limited" or raw.status == 429:
            return self.rate_limited(raw, now, _join(code, message))
        if code == "object_not_found":
            return Problem(
                NotFoundError,
                _join(message, "share the page or database with the integration, or check the ID"),
                "http_404",
            )
        if code in (
            "conflict_error",
            "service_overload",
            "internal_server_error",
            "service_unavailable",
        ):
            return Problem(TransientError, _join(code, message), f"notion_{code}", scope="request")
        return None


_GOOGLE_RATE = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
#: 403 reasons about one file, not the credential: retrying or re-authenticating will not help
_GOOGLE_PER_FILE = frozenset(
    {
        "exportSizeLimitExceeded",
        "fileNotDownloadable",
        "fileNotExportable",
        "cannotDownloadAbusiveFile",
        "downloadQuotaExceeded",
    }
)


class GooglePolicy(ResponsePolicy):
    """Google APIs: 403 ``rateLimitExceeded``/``userRateLimitExceeded`` and 429 are rate limits.

    Google sends no ``Retry-After``, so those waits use exponential backoff with jitter.
    """

    name = "google"
    default_auth_hint = (
        "check the {service} access token (it may have expired) and that it has scope "
        "https://www.googleapis.com/auth/drive.readonly, and that the file is shared with the account"
    )

    def inspect(self, raw: RawResponse, data: Any, service: str, now: float) -> Problem | None:
        """Rate-limit reasons in the ``error.errors[].reason`` envelope."""
        if raw.status not in (403, 429):
            return None
        errors = _get(data, "error", "errors")
        reasons = (
            {e.get("reason") for e in errors if isinstance(e, Mapping)}
            if isinstance(errors, list)
            else set()
        )
        if raw.status == 429 or reasons & _GOOGLE_RATE:
            why = ", ".join(sorted(r for r in reasons if isinstance(r, str))) or "429"
            return self.rate_limited(
                raw, now, _join(why, self.error_message(data)), scope="request"
            )
        per_file = sorted(r for r in reasons & _GOOGLE_PER_FILE if isinstance(r, str))
        if per_file:
            return Problem(
                ClientError,
                _join(", ".join(per_file), self.error_message(data), "this file cannot be read"),
                f"google_{per_file[0]}",
            )
        return None


_FAMILIES: dict[str, type[ResponsePolicy]] = {
    cls.name: cls
    for cls in (
        GenericPolicy,
        GitHubPolicy,
        DiscordPolicy,
        LinearPolicy,
        SlackPolicy,
        NotionPolicy,
        GooglePolicy,
    )
}


_ALIASES = {
    "gdrive": "google",
    "google-drive": "google",
    "google_drive": "google",
    "drive": "google",
}


def policy_for(policy: str | ResponsePolicy | None, service: str = "") -> ResponsePolicy:
    """Resolve ``policy``: an instance is used as is, a family name builds that family's policy,
    None picks the family named like ``service`` (``"github"``, ``"slack"``, ...) or ``generic``.

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
            f"unknown response policy {policy!r}; use one of {known} or a ResponsePolicy"
        ) from None
