"""The :class:`Embedder` protocol, its errors, and the helpers every embedder shares.

An embedder turns texts into vectors. Anything with these three members is one (no base class
needed)::

    class MyEmbedder:
        name = "mine:bag-of-words-v1"   # a stable identity: provider + model (+ anything that
                                        # changes the vectors); recorded with the dataset
        dim = 384                       # the vectors' width (0 while unknown: then it is learned
                                        # from the first answer)

        async def embed(self, texts: Sequence[str]) -> np.ndarray:
            # float32, shape (len(texts), dim), row i the vector of texts[i]
            ...

Optional members cfstream uses when present: ``provider``, ``model`` and ``base_url`` (kept in the
dataset's embedder record so search can rebuild the embedder for queries), ``batch_size`` and
``concurrency`` (the defaults of :func:`cfstream.transforms.embed`), and ``async aclose()``
(called when a run's embed stage ends). Blocking work (a model on the CPU) belongs in a worker
thread (``anyio.to_thread.run_sync``), never on the event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from cfstream.errors import CfStreamError, DatasetError

__all__ = (
    "Embedder",
    "EmbedderChangedError",
    "EmbedderError",
    "as_matrix",
    "check_texts",
    "close_embedder",
)


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into float32 vectors of one width. See the module docstring."""

    name: str
    dim: int

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """The vectors of ``texts``: float32, shape ``(len(texts), dim)``, in the same order."""
        ...


class EmbedderError(CfStreamError):
    """An embedder could not be used: its package is missing, it cannot load its model offline,
    or it returned something other than one vector of its width per text."""


class EmbedderChangedError(DatasetError):
    """The dataset's vectors come from another embedder (model or width) than this pipeline's.

    Vectors of two embedders are never mixed in one column: the run stops before writing. The
    message says how to re-embed (``reembed: true`` on the embed stage, with ``--full``).
    """


def as_matrix(vectors: Any, n: int, dim: int, who: str) -> np.ndarray:
    """``vectors`` as a C-contiguous float32 matrix of ``n`` rows; ``dim`` 0 accepts any width.

    Raises :class:`EmbedderError` (naming ``who``) when the shape is not ``(n, dim)`` or a value
    is not finite: a wrong answer must never reach the dataset.
    """
    try:
        arr = np.ascontiguousarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise EmbedderError(f"{who} returned vectors that are not numbers: {exc}") from None
    if arr.ndim != 2 or arr.shape[0] != n or (dim and arr.shape[1] != dim) or not arr.shape[1]:
        want = f"({n}, {dim})" if dim else f"({n}, width)"
        raise EmbedderError(f"{who} returned an array of shape {arr.shape}, expected {want}")
    if not np.isfinite(arr).all():
        raise EmbedderError(f"{who} returned vectors holding NaN or infinite values")
    return arr


async def close_embedder(embedder: Any) -> None:
    """Call ``embedder.aclose()`` when it has one (releases an HTTP session, say)."""
    aclose = getattr(embedder, "aclose", None)
    if aclose is not None:
        await aclose()


def check_texts(texts: Sequence[str]) -> list[str]:
    """``texts`` as a list of strings (TypeError naming the first that is not one)."""
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is a {type(t).__name__}, not a str")
    return out
