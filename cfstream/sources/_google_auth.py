"""Google OAuth 2.0 access tokens for the Drive connector, fetched through cfstream's HTTP layer.

Three kinds of credential, all ending in a short-lived access token sent as
``Authorization: Bearer <token>``:

* :class:`OAuthCredentials`: an installed/web app's client id and secret plus a user's refresh
  token; exchanged at the token URL (``grant_type=refresh_token``).
* :class:`ServiceAccountCredentials`: a service-account key (a JSON key file, or its content); a JWT
  signed with the key's private key (RS256, by ``google-auth``, in a worker thread) is exchanged at
  the token URL (``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer``). ``subject`` impersonates
  a Workspace user (domain-wide delegation).
* :class:`AccessTokenCredentials`: an access token obtained elsewhere (no refresh; for short jobs).

:class:`GoogleTokenAuth` is the :class:`~cfstream.http.Auth` the Drive service uses; call
:meth:`GoogleTokenAuth.ensure` before requests: it refreshes the token when it is missing or expires
within :data:`REFRESH_MARGIN` seconds. Every token is registered as a secret, so it is redacted from
logs, errors and reports.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import anyio
import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from cfstream.errors import AuthError, ClientError, HTTPError, RateLimitError, TransientError
from cfstream.http import Auth, HttpClient, NoAuth, Problem, RawResponse, ResponsePolicy, Service
from cfstream.secrets import Secret, redact_url, register_secret
from cfstream.sources.base import path_option

__all__ = (
    "DRIVE_READONLY_SCOPE",
    "REFRESH_MARGIN",
    "AccessTokenCredentials",
    "CredentialsFile",
    "GoogleCredentials",
    "GoogleTokenAuth",
    "OAuthCredentials",
    "ServiceAccountCredentials",
    "credentials_from_file",
)

#: the read-only Drive scope the connector asks for
DRIVE_READONLY_SCOPE = "https://www.googleapis.com/auth/drive.readonly"
#: refresh an access token this many seconds before it expires
REFRESH_MARGIN = 60.0
_JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


class _Cred(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class OAuthCredentials(_Cred):
    """An OAuth client (id and secret) and a user's refresh token (``type: oauth``)."""

    type: Literal["oauth"] = "oauth"
    client_id: str = Field(description="the OAuth client id (…apps.googleusercontent.com)")
    client_secret: Secret = Field(description="the OAuth client secret")
    refresh_token: Secret = Field(
        description="a refresh token granted for scope drive.readonly (offline access)"
    )


class ServiceAccountCredentials(_Cred):
    """A service-account key (``type: service_account``): ``key_file`` or ``key_json``."""

    type: Literal["service_account"] = "service_account"
    key_file: str | None = path_option(
        "path of the service account's JSON key file", kind="file", default=None
    )
    key_json: Secret | None = Field(
        default=None, description="the JSON key itself (e.g. from ${GOOGLE_SA_KEY})"
    )
    subject: str | None = Field(
        default=None,
        description="a Workspace user to impersonate (needs domain-wide delegation)",
    )
    scopes: tuple[str, ...] = Field(default=(DRIVE_READONLY_SCOPE,), min_length=1)


class AccessTokenCredentials(_Cred):
    """A ready access token (``type: access_token``); it is not refreshed."""

    type: Literal["access_token"] = "access_token"
    access_token: Secret = Field(description="an OAuth 2.0 access token")


class CredentialsFile(_Cred):
    """A credential file written by Google's own tools (``type: file``), by path: the
    ``authorized_user`` JSON of ``gcloud auth application-default login`` or a service account's
    JSON key. In YAML, ``credentials: path/to/file.json`` is short for this."""

    type: Literal["file"] = "file"
    path: str = path_option("path of the JSON credential file", kind="file")
    subject: str | None = Field(
        default=None, description="service accounts: a Workspace user to impersonate"
    )


def _file_shorthand(value: Any) -> Any:
    return {"type": "file", "path": value} if isinstance(value, str) else value


GoogleCredentials = Annotated[
    OAuthCredentials | ServiceAccountCredentials | AccessTokenCredentials | CredentialsFile,
    Field(discriminator="type"),
    BeforeValidator(_file_shorthand),
]


def credentials_from_file(
    c: CredentialsFile,
) -> OAuthCredentials | ServiceAccountCredentials:
    """The credential a Google credential file holds, by its ``type`` (as google-auth reads it).

    Raises ValueError, saying what to do, for a file that is not such a credential.
    """
    path = Path(c.path).expanduser()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the credential file {path}: {exc.strerror}") from None
    try:
        info = orjson.loads(raw)
    except orjson.JSONDecodeError:
        info = None
    kind = info.get("type") if isinstance(info, dict) else None
    if kind == "service_account":
        return ServiceAccountCredentials(key_file=str(path), subject=c.subject)
    if kind == "authorized_user":
        assert isinstance(info, dict)
        missing = [k for k in ("client_id", "client_secret", "refresh_token") if not info.get(k)]
        if missing:
            raise ValueError(
                f"the authorized_user file {path} lacks {', '.join(missing)}: run "
                "`gcloud auth application-default login --scopes="
                f"{DRIVE_READONLY_SCOPE},https://www.googleapis.com/auth/cloud-platform` again"
            )
        return OAuthCredentials(
            client_id=str(info["client_id"]),
            client_secret=Secret(str(info["client_secret"])),
            refresh_token=Secret(str(info["refresh_token"])),
        )
    raise ValueError(
        f'{path} is not a Google credential file (expected JSON with "type": '
        '"authorized_user" from `gcloud auth application-default login`, or '
        '"service_account", a key from the Cloud console)'
    )


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


class GoogleTokenAuth(Auth):
    """Bearer auth with a Google access token that refreshes itself (see :meth:`ensure`).

    :param credentials: one of the credential models.
    :param token_url: the OAuth 2.0 token endpoint (``https://oauth2.googleapis.com/token``).
    :param clock: wall-clock seconds (inject a fake one in tests).
    """

    def __init__(
        self,
        credentials: OAuthCredentials
        | ServiceAccountCredentials
        | AccessTokenCredentials
        | CredentialsFile,
        *,
        token_url: str,
        clock: Any = time.time,
    ) -> None:
        if isinstance(credentials, CredentialsFile):
            credentials = credentials_from_file(credentials)
        self.credentials: OAuthCredentials | ServiceAccountCredentials | AccessTokenCredentials = (
            credentials
        )
        self.token_url = token_url
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock: anyio.Lock | None = None
        self._sa_info: dict[str, Any] | None = None
        if isinstance(credentials, AccessTokenCredentials):
            self._token = credentials.access_token.get_secret_value()
            self._expires_at = float("inf")

    def __repr__(self) -> str:
        return f"GoogleTokenAuth(type={self.credentials.type!r}, token='**********')"

    @property
    def what_to_check(self) -> str:
        """Which credential settings to check when authentication fails."""
        c = self.credentials
        if isinstance(c, OAuthCredentials):
            return (
                "check credentials.refresh_token (expired or revoked?), credentials.client_id and "
                f"credentials.client_secret, and that the token was granted scope {DRIVE_READONLY_SCOPE}"
            )
        if isinstance(c, ServiceAccountCredentials):
            who = f" and that it may impersonate {c.subject}" if c.subject else ""
            return (
                "check the service account key (credentials.key_file / key_json) is valid and "
                f"not deleted{who}, that it was granted scopes {', '.join(c.scopes)}, and that the "
                "folders or shared drive are shared with the service account's email"
            )
        return (
            "check credentials.access_token (it may have expired; prefer type: oauth with a refresh "
            f"token) and that it has scope {DRIVE_READONLY_SCOPE}"
        )

    # -- Auth ----------------------------------------------------------------------------------

    def headers(self) -> Mapping[str, str]:
        """``Authorization: Bearer <access token>`` (nothing before the first :meth:`ensure`)."""
        if self._token is None:
            return {}
        return {"Authorization": f"Bearer {self._token}"}

    def fingerprint(self) -> str:
        """A digest of the credential's identity (stable across token refreshes)."""
        c = self.credentials
        if isinstance(c, OAuthCredentials):
            return _digest("oauth", c.client_id, c.refresh_token.get_secret_value())
        if isinstance(c, ServiceAccountCredentials):
            key = c.key_json.get_secret_value() if c.key_json is not None else (c.key_file or "")
            return _digest("service_account", key, c.subject or "")
        return _digest("access_token", c.access_token.get_secret_value())

    # -- tokens --------------------------------------------------------------------------------

    @property
    def can_refresh(self) -> bool:
        """False for a fixed access token."""
        return not isinstance(self.credentials, AccessTokenCredentials)

    def expired(self) -> bool:
        """True when there is no token or it expires within :data:`REFRESH_MARGIN` seconds."""
        return self._token is None or self._clock() >= self._expires_at - REFRESH_MARGIN

    async def ensure(self, http: HttpClient) -> None:
        """Fetch a token if there is none or it is about to expire (one refresh at a time)."""
        if not self.expired():
            return
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            if self.expired():
                await self._fetch(http)

    async def refresh(self, http: HttpClient, *, rejected: str | None = None) -> bool:
        """Get a new token after the API rejected ``rejected`` (the token it was sent).

        Returns False when the credential cannot be refreshed (a fixed access token). When another
        task already replaced the rejected token, nothing is fetched.
        """
        if not self.can_refresh:
            return False
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            if rejected is None or self._token == rejected:
                await self._fetch(http)
        return True

    @property
    def current_token(self) -> str | None:
        """The access token in use (a secret: never log it)."""
        return self._token

    def reset(self) -> None:
        """Forget the token and the lock (a new run starts from scratch)."""
        if self.can_refresh:
            self._token = None
            self._expires_at = 0.0
        self._lock = None

    async def _fetch(self, http: HttpClient) -> None:
        c = self.credentials
        if isinstance(c, OAuthCredentials):
            form = {
                "grant_type": "refresh_token",
                "client_id": c.client_id,
                "client_secret": c.client_secret.get_secret_value(),
                "refresh_token": c.refresh_token.get_secret_value(),
            }
        elif isinstance(c, ServiceAccountCredentials):
            form = {"grant_type": _JWT_BEARER, "assertion": await self._signed_jwt(c)}
        else:  # pragma: no cover - guarded by can_refresh
            return
        svc = self._token_service(http)
        try:
            resp = await svc.post(
                self.token_url,
                data=urlencode(form).encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        except (RateLimitError, TransientError):
            raise
        except HTTPError as exc:
            # (no "token <word>" phrasing: the redactor takes it for a credential)
            raise AuthError(
                f"getting an access token failed ({exc.message}); {self.what_to_check}",
                service="google_drive",
                status=exc.status,
                url=exc.url,
                method="POST",
            ) from None
        data = resp.data if isinstance(resp.data, Mapping) else {}
        token = data.get("access_token")
        if not isinstance(token, str) or not token:
            raise AuthError(
                "the token endpoint answered without an access_token; check token_url",
                service="google_drive",
                status=resp.status,
                url=redact_url(self.token_url),
                method="POST",
            )
        register_secret(token)
        try:
            lifetime = float(data.get("expires_in", 3600))
        except (TypeError, ValueError):
            lifetime = 3600.0
        self._token = token
        self._expires_at = self._clock() + lifetime

    def _token_service(self, http: HttpClient) -> Service:
        return http.service(
            "google_oauth",
            base_url=self.token_url,
            auth=NoAuth(),
            policy=_TokenEndpointPolicy(),
            concurrency=2,
        )

    async def _signed_jwt(self, c: ServiceAccountCredentials) -> str:
        info = self._sa_info
        if info is None:
            info = self._sa_info = await anyio.to_thread.run_sync(_load_key, c)
        now = int(self._clock())
        claims: dict[str, Any] = {
            "iss": info["client_email"],
            "scope": " ".join(c.scopes),
            "aud": self.token_url,
            "iat": now,
            "exp": now + 3600,
        }
        if c.subject:
            claims["sub"] = c.subject
        return await anyio.to_thread.run_sync(_sign, info, claims)


class _TokenEndpointPolicy(ResponsePolicy):
    """RFC 6749 token errors (``{"error": "invalid_grant", "error_description": ...}``)."""

    name = "google_oauth"

    def inspect(self, raw: RawResponse, data: Any, service: str, now: float) -> Problem | None:
        """400/401 with an OAuth error code: a ClientError naming the code and its description."""
        if raw.status not in (400, 401) or not isinstance(data, Mapping):
            return None
        code = data.get("error")
        if not isinstance(code, str):
            return None
        desc = data.get("error_description")
        text = f"{code}: {desc}" if isinstance(desc, str) and desc else code
        return Problem(ClientError, text, f"http_{raw.status}")


def _load_key(c: ServiceAccountCredentials) -> dict[str, Any]:
    """Read and check a service-account key (blocking: runs in a worker thread)."""
    if c.key_json is not None:
        raw: bytes | str = c.key_json.get_secret_value()
        where = "credentials.key_json"
    elif c.key_file:
        path = Path(c.key_file).expanduser()
        where = f"credentials.key_file ({path})"
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise AuthError(
                f"cannot read the service account key {where}: {exc.strerror}",
                service="google_drive",
            ) from None
    else:
        raise AuthError(
            "a service_account credential needs key_file or key_json", service="google_drive"
        )
    try:
        info = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise AuthError(
            f"the service account key in {where} is not JSON; download a JSON key from the "
            "Google Cloud console (IAM > Service accounts > Keys)",
            service="google_drive",
        ) from None
    missing = [
        k
        for k in ("client_email", "private_key")
        if not isinstance(info, dict) or not isinstance(info.get(k), str)
    ]
    if missing:
        raise AuthError(
            f"the service account key in {where} lacks {', '.join(missing)}; is it a service "
            "account key (type: service_account)?",
            service="google_drive",
        )
    register_secret(info["private_key"])
    return dict(info)


def _sign(info: Mapping[str, Any], claims: Mapping[str, Any]) -> str:
    """Sign ``claims`` as an RS256 JWT with the key's private key (blocking: worker thread)."""
    try:
        from google.auth import crypt, jwt
    except ImportError:  # pragma: no cover - depends on the environment
        raise AuthError(
            "service account keys need google-auth: pip install 'cfstream[gdrive]'",
            service="google_drive",
        ) from None
    try:
        signer = crypt.RSASigner.from_service_account_info(dict(info))
        token = jwt.encode(signer, dict(claims))
    except (ValueError, TypeError) as exc:
        raise AuthError(
            f"cannot sign with the service account key ({type(exc).__name__}); check that "
            "private_key is the PEM key of a service account",
            service="google_drive",
        ) from None
    return token.decode() if isinstance(token, bytes) else str(token)
