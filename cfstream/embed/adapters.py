"""Adapters for embedding libraries the user installs: sentence-transformers and fastembed.

Neither is a dependency of cfstream: install one with its extra (``pip install
'cfstream[sentence-transformers]'`` or ``'cfstream[fastembed]'``). The library is imported when the
adapter is built; when it is missing, the error says what to install. Both run the model on the CPU
(or the GPU sentence-transformers finds) in a worker thread, and may download the model on first
use (into the library's own cache), unlike :class:`~cfstream.embed.LocalEmbedder`.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Sequence
from typing import Any

import anyio
import numpy as np

from cfstream.embed.base import EmbedderError, as_matrix, check_texts

__all__ = ("FastEmbedEmbedder", "SentenceTransformerEmbedder")


def _require(module: str, extra: str, package: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise EmbedderError(
            f"this embedder needs the {package!r} package, which is not installed ({exc}): "
            f"pip install 'cfstream[{extra}]' (or pip install {package})"
        ) from None


class _ThreadedModel:
    """A model loaded once, on first use, and called in a worker thread (one call at a time)."""

    provider = "custom"
    base_url: str | None = None
    model: str
    name: str
    dim: int

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.concurrency = 1
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:  # pragma: no cover - needs the optional package
        raise NotImplementedError

    def _run(self, model: Any, texts: list[str]) -> Any:  # pragma: no cover - idem
        raise NotImplementedError

    def embed_sync(self, texts: Sequence[str]) -> np.ndarray:
        """The vectors of ``texts``, computed in the calling thread."""
        items = check_texts(texts)
        if not items:
            return np.empty((0, self.dim), dtype=np.float32)
        with self._lock:
            if self._model is None:
                self._model = self._load()
            out = self._run(self._model, items)
        return as_matrix(out, len(items), self.dim, self.name)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """The vectors of ``texts``, computed in a worker thread."""
        return await anyio.to_thread.run_sync(self.embed_sync, list(texts))


class SentenceTransformerEmbedder(_ThreadedModel):
    """A `sentence-transformers <https://sbert.net>`_ model (e.g. ``all-MiniLM-L6-v2``).

    Args:
        model: the model name or path.
        device: ``"cpu"``, ``"cuda"``... (None: the library's choice).
        normalize: L2-normalise the vectors (cosine search).
        batch_size: texts per call.
    """

    provider = "sentence-transformers"

    def __init__(
        self,
        model: str = "sentence-transformers/all-MiniLM-L6-v2",
        *,
        device: str | None = None,
        normalize: bool = True,
        batch_size: int = 64,
    ) -> None:
        super().__init__(batch_size)
        self._lib = _require(
            "sentence_transformers", "sentence-transformers", "sentence-transformers"
        )
        self.model = model
        self.device = device
        self.normalize = normalize
        self.name = f"sentence-transformers:{model}"
        self._model = self._load()
        getter = getattr(self._model, "get_sentence_embedding_dimension", None)
        self.dim = int(getter() or 0) if getter is not None else 0

    def _load(self) -> Any:
        return self._lib.SentenceTransformer(self.model, device=self.device)

    def _run(self, model: Any, texts: list[str]) -> Any:
        out = model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=self.normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        if not self.dim:
            self.dim = int(np.asarray(out).shape[1])
        return out


class FastEmbedEmbedder(_ThreadedModel):
    """A `fastembed <https://qdrant.github.io/fastembed/>`_ ONNX model (e.g. ``BAAI/bge-small-en-v1.5``).

    Args:
        model: the fastembed model name.
        batch_size: texts per call.
        cache_dir: where fastembed keeps its models (None: its default).
    """

    provider = "fastembed"

    def __init__(
        self,
        model: str = "BAAI/bge-small-en-v1.5",
        *,
        batch_size: int = 64,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__(batch_size)
        self._lib = _require("fastembed", "fastembed", "fastembed")
        self.model = model
        self.cache_dir = cache_dir
        self.name = f"fastembed:{model}"
        self.dim = 0
        try:
            for info in self._lib.TextEmbedding.list_supported_models():
                if info.get("model") == model:
                    self.dim = int(info.get("dim") or 0)
        except Exception:  # the model list is a convenience: the first answer sets dim anyway
            self.dim = 0

    def _load(self) -> Any:
        return self._lib.TextEmbedding(model_name=self.model, cache_dir=self.cache_dir)

    def _run(self, model: Any, texts: list[str]) -> Any:
        out = np.stack(list(model.embed(texts, batch_size=self.batch_size)))
        if not self.dim:
            self.dim = int(out.shape[1])
        return out
