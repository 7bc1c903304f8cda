"""Embeddings: the :class:`Embedder` protocol, the embedders cfstream ships, and the record of
which embedder made a dataset's vectors.

::

    from cfstream import transforms as T
    from cfstream.embed import LocalEmbedder, OpenAIEmbedder

    pipeline = source | T.embed(LocalEmbedder()) | LanceSink("kb.lance")
    pipeline = source | T.embed(OpenAIEmbedder("nomic-embed-text",
                                               base_url="http://localhost:11434/v1")) | sink

- :class:`LocalEmbedder`: the offline default (wordllama's 256-wide static model, inside its wheel).
- :class:`OpenAIEmbedder`: any OpenAI-compatible ``/embeddings`` server (OpenAI, Azure, Ollama,
  vLLM, TEI, LM Studio) through cfstream's HTTP layer.
- :class:`SentenceTransformerEmbedder`, :class:`FastEmbedEmbedder`: when their packages are
  installed (``cfstream[sentence-transformers]``, ``cfstream[fastembed]``).
- Your own: any object with ``name``, ``dim`` and ``async embed(texts)`` (see :class:`Embedder`).

:func:`dataset_embedder` reads the record a dataset keeps of its embedder;
:func:`embedder_from_record` rebuilds that embedder and :func:`embed_query` embeds a query with it.
"""

from cfstream.embed.adapters import FastEmbedEmbedder, SentenceTransformerEmbedder
from cfstream.embed.base import Embedder, EmbedderChangedError, EmbedderError
from cfstream.embed.factory import (
    PROVIDERS,
    aembed_query,
    embed_query,
    embedder_from_config,
    embedder_from_record,
)
from cfstream.embed.local import LocalEmbedder
from cfstream.embed.openai import OpenAIEmbedder
from cfstream.embed.record import dataset_embedder, embedder_record

__all__ = (
    "PROVIDERS",
    "Embedder",
    "EmbedderChangedError",
    "EmbedderError",
    "FastEmbedEmbedder",
    "LocalEmbedder",
    "OpenAIEmbedder",
    "SentenceTransformerEmbedder",
    "aembed_query",
    "dataset_embedder",
    "embed_query",
    "embedder_from_config",
    "embedder_from_record",
    "embedder_record",
)
