"""``OpenAIEmbedder``: any server speaking OpenAI's ``POST /v1/embeddings``.

OpenAI itself, Azure OpenAI, Ollama, vLLM, Hugging Face TEI and LM Studio all answer
``POST {base_url}/embeddings`` with ``{"model": ..., "input": [texts]}`` by
``{"data": [{"index": i, "embedding": [...]}, ...]}``. Requests go through cfstream's HTTP layer
(:class:`~cfstream.http.HttpClient`): a token bucket (``rate``), a cap on requests in flight,
retries with backoff for 5xx answers, timeouts and dropped connections, and the wait a 429's
``Retry-After`` asks for. The API key is a :class:`~cfstream.secrets.Secret`: it is sent only to
``base_url``'s origin and never appears in errors or logs.

=============  ====================================================================
server         ``base_url`` (and options)
=============  ====================================================================
OpenAI         ``https://api.openai.com/v1`` (the default; key from ``api_key`` or
               ``$OPENAI_API_KEY``)
Azure OpenAI   ``https://<resource>.openai.azure.com/openai/deployments/<deployment>``
               with ``api_version="2024-02-01"`` (the key goes in an ``api-key`` header)
Ollama         ``http://localhost:11434/v1``
vLLM           ``http://localhost:8000/v1``
TEI            ``http://localhost:8080/v1``
LM Studio      ``http://localhost:1234/v1``
=============  ====================================================================
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
from pydantic import SecretStr

from cfstream.embed.base import EmbedderError, as_matrix, check_texts
from cfstream.http import BearerAuth, HeaderAuth, HttpClient, NoAuth, RateLimit, RetryPolicy
from cfstream.http.auth import Auth
from cfstream.http.client import Service
from cfstream.secrets import Secret, redact_url

__all__ = ("OPENAI_BASE_URL", "OpenAIEmbedder")

#: OpenAI's own API
OPENAI_BASE_URL: Final = "https://api.openai.com/v1"
DEFAULT_OPENAI_MODEL: Final = "text-embedding-3-small"


def _check_answer(n: int) -> Any:
    """The shape an embeddings answer must have for ``n`` inputs (a ``Service`` ``check``)."""

    def check(body: Any) -> str | None:
        if not isinstance(body, dict):
            return "the body is not a JSON object"
        data = body.get("data")
        if not isinstance(data, list):
            return "it has no 'data' list"
        if len(data) != n:
            return f"'data' holds {len(data)} embeddings for {n} inputs"
        for item in data:
            if not isinstance(item, dict) or not isinstance(item.get("embedding"), list):
                return "an item of 'data' has no 'embedding' list"
        return None

    return check


class OpenAIEmbedder:
    """Embeddings from an OpenAI-compatible ``/embeddings`` endpoint (see the module docstring).

    Args:
        model: the model name the server knows (``text-embedding-3-small``, ``nomic-embed-text``,
            ``BAAI/bge-small-en-v1.5``, an Azure deployment's model...).
        base_url: the API root; requests go to ``{base_url}/embeddings``.
        api_key: the key (str or Secret); None sends no key, except to OpenAI's own
            ``base_url``, where ``$OPENAI_API_KEY`` is used when set.
        dim: the vectors' width when known; otherwise learned from the first answer.
        dimensions: ask the server for vectors of this width (OpenAI's ``text-embedding-3-*``
            truncate); it is also ``dim``.
        api_version: Azure's ``api-version`` query parameter; with it the key is sent in an
            ``api-key`` header instead of ``Authorization: Bearer``.
        batch_size: texts per request (the default of ``T.embed``).
        concurrency: requests in flight at once.
        rate: a proactive budget of requests (e.g. ``RateLimit(per_second=50, burst=50)``).
        timeout: seconds for one attempt.
        retry: retry settings (default: cfstream's, 5 tries with jittered backoff).
        headers: extra headers (never put the key here: use ``api_key``).
        http: an open :class:`~cfstream.http.HttpClient` to use instead of the embedder's own.
    """

    provider = "openai"

    def __init__(
        self,
        model: str = DEFAULT_OPENAI_MODEL,
        *,
        base_url: str = OPENAI_BASE_URL,
        api_key: str | SecretStr | None = None,
        dim: int | None = None,
        dimensions: int | None = None,
        api_version: str | None = None,
        batch_size: int = 64,
        concurrency: int = 4,
        rate: RateLimit | None = None,
        timeout: float = 120.0,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        http: HttpClient | None = None,
    ) -> None:
        if not model:
            raise ValueError("model is required: the name of the embedding model on the server")
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, not {base_url!r}")
        if dimensions is not None and dim is not None and dim != dimensions:
            raise ValueError(f"dim {dim} and dimensions {dimensions} disagree; give one")
        if batch_size < 1 or concurrency < 1:
            raise ValueError("batch_size and concurrency must be at least 1")
        self.model = model
        self.base_url = base_url.rstrip("/")
        if api_key is None and self.base_url == OPENAI_BASE_URL:
            api_key = os.environ.get("OPENAI_API_KEY") or None
        self._key: Secret | None = None
        if api_key is not None:
            raw = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
            self._key = Secret(raw)
        self.dimensions = dimensions
        self.dim = dimensions or dim or 0
        self.api_version = api_version
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.rate = rate
        self.timeout = timeout
        self.retry = retry
        self.headers = dict(headers or {})
        self._http = http
        self._own: HttpClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        suffix = f"@{dimensions}" if dimensions else ""
        self.name = f"openai:{self.model}{suffix}"

    def __repr__(self) -> str:
        return (
            f"OpenAIEmbedder(model={self.model!r}, base_url={redact_url(self.base_url)!r}, "
            f"dim={self.dim}, api_key={'**********' if self._key else None})"
        )

    def _auth(self) -> Auth:
        if self._key is None:
            return NoAuth()
        if self.api_version is not None:
            return HeaderAuth("api-key", self._key)
        return BearerAuth(self._key)

    async def _service(self) -> Service:
        client = self._http
        if client is None:
            loop = asyncio.get_running_loop()
            if self._own is None or self._loop is not loop:
                # one session per event loop: a session cannot outlive the loop it was made in
                self._own = HttpClient(
                    timeout=self.timeout,
                    read_timeout=None,
                    limit_per_host=max(10, self.concurrency),
                    retry=self.retry,
                )
                self._loop = loop
                await self._own.open()
            client = self._own
        return client.service(
            "embeddings",
            base_url=self.base_url,
            auth=self._auth(),
            rate=self.rate,
            headers=self.headers,
            concurrency=self.concurrency,
            policy="generic",
        )

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """The vectors of ``texts`` in one request (float32, ``(len(texts), dim)``), ordered by
        each item's ``index``. The first answer sets ``dim`` when it was not given.

        :raises ~cfstream.errors.HTTPError: the request failed after cfstream's retries (the
            message names the server, never the key).
        :raises EmbedderError: the answer holds vectors of the wrong width.
        """
        items = check_texts(texts)
        if not items:
            return np.empty((0, self.dim), dtype=np.float32)
        body: dict[str, Any] = {"model": self.model, "input": items}
        if self.dimensions is not None:
            body["dimensions"] = self.dimensions
        params = {"api-version": self.api_version} if self.api_version else None
        svc = await self._service()
        resp = await svc.post(
            "embeddings", json=body, params=params, check=_check_answer(len(items))
        )
        data = resp.data["data"]
        if all(isinstance(d.get("index"), int) for d in data):
            data = sorted(data, key=lambda d: d["index"])
            if [d["index"] for d in data] != list(range(len(items))):
                raise EmbedderError(
                    f"{self.name} at {redact_url(self.base_url)}: the answer's indexes are not "
                    f"0..{len(items) - 1}"
                )
        rows = [d["embedding"] for d in data]
        widths = {len(r) for r in rows}
        if len(widths) != 1:
            raise EmbedderError(
                f"{self.name} returned vectors of different widths {sorted(widths)}"
            )
        width = widths.pop()
        if self.dim and width != self.dim:
            raise EmbedderError(
                f"{self.name} at {redact_url(self.base_url)} returned {width}-wide vectors, "
                f"expected {self.dim}: check the model and its dimensions"
            )
        out = as_matrix(rows, len(items), self.dim, self.name)
        if not self.dim:
            self.dim = width
        return out

    async def aclose(self) -> None:
        """Close the embedder's own HTTP session (a later :meth:`embed` opens a new one)."""
        own, self._own = self._own, None
        self._loop = None
        if own is not None:
            await own.aclose()
