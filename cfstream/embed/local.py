"""``LocalEmbedder``: the offline default, wordllama's static model shipped inside its wheel.

``wordllama`` (a dependency of cfstream) carries the weights of ``l2_supercat`` (256 wide,
Matryoshka: its first 64 or 128 values are a usable smaller vector) and its tokenizer in the wheel
itself: nothing is downloaded, ever. It is loaded from the package folder with downloads turned off
(``WordLlama.load()`` with no arguments would try to fetch the tokenizer), once per process, and
runs on the CPU in a worker thread. It is fast (thousands of texts a second on one core) and
weaker than transformer models: use :class:`~cfstream.embed.OpenAIEmbedder` (any
OpenAI-compatible server) or the sentence-transformers/fastembed adapters for better retrieval.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import anyio
import numpy as np

from cfstream.embed.base import EmbedderError, as_matrix, check_texts

__all__ = ("LocalEmbedder",)

#: the model in wordllama's wheel
DEFAULT_LOCAL_MODEL: Final = "l2_supercat"
_FULL_DIM: Final = 256
_MODELS: dict[tuple[str, int], Any] = {}
_LOAD_LOCK = threading.Lock()


def _load(model: str, dim: int) -> Any:
    """The wordllama model (loaded once per process and width)."""
    key = (model, dim)
    wl = _MODELS.get(key)
    if wl is not None:
        return wl
    with _LOAD_LOCK:
        wl = _MODELS.get(key)
        if wl is None:
            try:
                import wordllama
                from wordllama import WordLlama
            except ImportError as exc:
                raise EmbedderError(
                    f"the local embedder needs wordllama ({exc}): pip install wordllama==0.4.0.post1"
                ) from None
            folder = Path(wordllama.__file__).parent
            try:
                wl = WordLlama.load(
                    config=model,
                    cache_dir=folder,
                    disable_download=True,
                    trunc_dim=None if dim == _FULL_DIM else dim,
                )
            except (FileNotFoundError, ValueError, KeyError, OSError) as exc:
                raise EmbedderError(
                    f"cannot load the local embedding model {model!r} from the wordllama package "
                    f"({folder}) without downloading ({exc}); the wheel ships {DEFAULT_LOCAL_MODEL!r}"
                ) from None
            _MODELS[key] = wl
    return wl


class LocalEmbedder:
    """wordllama's ``l2_supercat`` model, offline, L2-normalised float32 vectors.

    Args:
        model: the wordllama model config (only ``"l2_supercat"`` ships in the wheel).
        dim: 256 (the full width) or a Matryoshka truncation (64 or 128).
        batch_size: texts per call of the stage (the default of ``T.embed``).
    """

    provider = "local"
    base_url: str | None = None

    def __init__(
        self, model: str = DEFAULT_LOCAL_MODEL, *, dim: int = _FULL_DIM, batch_size: int = 256
    ) -> None:
        if dim not in (64, 128, 256):
            raise ValueError(f"dim must be 64, 128 or 256 for wordllama's model, not {dim}")
        self.model = model
        self.dim = dim
        self.batch_size = batch_size
        #: a static model on a 2-core machine: more threads only contend
        self.concurrency = 1
        self.name = f"local:wordllama/{model}_{dim}"

    def __repr__(self) -> str:
        return f"LocalEmbedder(model={self.model!r}, dim={self.dim})"

    def load(self) -> Any:
        """The wordllama model, loaded now if it was not yet (once per process and width; it is
        otherwise loaded by the first :meth:`embed`)."""
        return _load(self.model, self.dim)

    def embed_sync(self, texts: Sequence[str]) -> np.ndarray:
        """The vectors of ``texts``, computed in the calling thread."""
        items = check_texts(texts)
        if not items:
            return np.empty((0, self.dim), dtype=np.float32)
        wl = _load(self.model, self.dim)
        out = wl.embed(items, norm=True, batch_size=max(1, min(len(items), 256)))
        return as_matrix(out, len(items), self.dim, self.name)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """The vectors of ``texts`` (float32, ``(len(texts), dim)``, unit length; an empty text
        gives a zero vector), computed in a worker thread."""
        return await anyio.to_thread.run_sync(self.embed_sync, list(texts))
