"""Building embedders from settings (the YAML ``embed:`` stage, a dataset's record) and embedding
one query."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Final

import anyio
import numpy as np
from pydantic import SecretStr

from cfstream.embed.base import Embedder, EmbedderError, close_embedder
from cfstream.errors import ConfigError

__all__ = (
    "PROVIDERS",
    "aembed_query",
    "embed_query",
    "embedder_from_config",
    "embedder_from_record",
)

#: the ``provider`` values :func:`embedder_from_config` knows
PROVIDERS: Final = ("local", "openai", "sentence-transformers", "fastembed")


def embedder_from_config(
    provider: str = "local",
    *,
    model: str | None = None,
    base_url: str | None = None,
    api_key: str | SecretStr | None = None,
    dim: int | None = None,
    batch_size: int | None = None,
    concurrency: int | None = None,
    options: Mapping[str, Any] | None = None,
) -> Embedder:
    """An embedder from plain settings (what the YAML ``embed:`` stage holds).

    ``provider`` is ``local`` (wordllama, offline; ``dim`` 64/128/256), ``openai`` (any
    OpenAI-compatible server at ``base_url``; ``dim`` asks for that width), ``sentence-transformers``
    or ``fastembed`` (their packages installed). ``options`` are passed to the embedder's class as
    keyword arguments. Nothing is downloaded or sent here.

    :raises ConfigError: unknown provider, or an option the provider does not take.
    :raises EmbedderError: the provider's package is not installed (the message says what to
        install).
    """
    extra = dict(options or {})
    kind = provider.strip().lower().replace("_", "-")
    if kind in ("sentence-transformer", "sentencetransformers", "st"):
        kind = "sentence-transformers"
    if kind not in PROVIDERS:
        raise ConfigError(
            f"unknown embedding provider {provider!r}; use one of {', '.join(PROVIDERS)}"
        )
    if kind != "openai" and (base_url is not None or api_key is not None):
        raise ConfigError(
            f"base_url and api_key are options of the openai provider, not of {kind!r}"
        )
    if batch_size is not None:
        extra["batch_size"] = batch_size
    if model is not None:
        extra["model"] = model
    try:
        if kind == "local":
            from cfstream.embed.local import LocalEmbedder

            if dim is not None:
                extra["dim"] = dim
            emb: Any = LocalEmbedder(**extra)
        elif kind == "openai":
            from cfstream.embed.openai import OpenAIEmbedder

            if base_url is not None:
                extra["base_url"] = base_url
            if dim is not None:
                extra.setdefault("dimensions", dim)
            if concurrency is not None:
                extra["concurrency"] = concurrency
            emb = OpenAIEmbedder(api_key=api_key, **extra)
        elif kind == "sentence-transformers":
            from cfstream.embed.adapters import SentenceTransformerEmbedder

            emb = SentenceTransformerEmbedder(**extra)
        else:
            from cfstream.embed.adapters import FastEmbedEmbedder

            emb = FastEmbedEmbedder(**extra)
    except EmbedderError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"embedding provider {kind!r}: {exc}") from None
    if concurrency is not None and kind != "openai":
        emb.concurrency = concurrency
    return emb  # type: ignore[no-any-return]


def embedder_from_record(
    record: Mapping[str, Any], *, api_key: str | SecretStr | None = None
) -> Embedder:
    """The embedder a dataset's record (:func:`~cfstream.embed.dataset_embedder`) names, to embed
    queries the way its rows were embedded. The record holds no key: pass ``api_key`` for a server
    that needs one (OpenAI's own reads ``$OPENAI_API_KEY``).

    :raises EmbedderError: the record is of a custom embedder cfstream cannot rebuild (build it
        yourself and pass it to search), or its rebuilt embedder has another name.
    """
    provider = str(record.get("provider") or "custom")
    name = str(record.get("name"))
    if provider not in PROVIDERS:
        raise EmbedderError(
            f"the dataset's vectors come from {name!r} (provider {provider!r}), which cfstream "
            "cannot rebuild: pass that embedder yourself"
        )
    model = record.get("model")
    dim = int(record.get("dim") or 0) or None
    if provider == "openai":
        dimensions = dim if "@" in name else None
        emb = embedder_from_config(
            "openai",
            model=model,
            base_url=record.get("base_url"),
            api_key=api_key,
            options={"dim": dim, "dimensions": dimensions},
        )
    else:
        emb = embedder_from_config(provider, model=model, dim=dim if provider == "local" else None)
    if emb.name != name:
        raise EmbedderError(
            f"the dataset's record names embedder {name!r} but its settings rebuild {emb.name!r}"
        )
    return emb


async def aembed_query(embedder: Embedder, text: str) -> np.ndarray:
    """The vector of one query text (float32, shape ``(dim,)``)."""
    return np.asarray((await embedder.embed([text]))[0], dtype=np.float32)


def embed_query(embedder: Embedder, text: str) -> np.ndarray:
    """:func:`aembed_query` from synchronous code (closes the embedder's HTTP session after).

    :raises RuntimeError: called inside a running event loop: await :func:`aembed_query` there.
    """

    async def one() -> np.ndarray:
        try:
            return await aembed_query(embedder, text)
        finally:
            await close_embedder(embedder)

    try:
        asyncio.get_running_loop()
    except RuntimeError:  # no event loop running here: fine
        return anyio.run(one)
    raise RuntimeError("embed_query is for synchronous code; await aembed_query(...) here")
