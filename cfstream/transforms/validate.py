"""``validate``: check every document against the FrameRecord schema before it is written.

Invalid documents go to the dead-letter file with the field and the reason; the run goes on.
The built-in checks are plain Python type checks (about 1 µs a document: the FrameRecord schema is
simple and fixed); pass a pydantic ``model`` to validate ``custom_metadata`` (or any part you
choose through ``model_input``) with your own rules as well.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError

from cfstream.checks import check_document
from cfstream.contract.context import StageContext
from cfstream.errors import RecordError
from cfstream.records import Document
from cfstream.transforms.base import Chunk, ChunkStage

__all__ = ("Validate", "check_document", "validate")


class Validate(ChunkStage):
    """Dead-letter invalid documents; see :func:`validate`."""

    def __init__(
        self,
        *,
        model: type[BaseModel] | None = None,
        model_input: Callable[[Document], Any] | None = None,
        max_text_bytes: int | None = None,
        name: str = "validate",
    ) -> None:
        self.model = model
        self.model_input = model_input or (lambda d: d.custom_metadata or {})
        self.max_text_bytes = max_text_bytes
        self.name = name

    def apply(self, chunk: Chunk, ctx: StageContext) -> Chunk:
        """Keep valid documents, dead-letter the rest."""
        out: Chunk = []
        limit = self.max_text_bytes
        model = self.model
        for it in chunk:
            if type(it) is Document:
                try:
                    check_document(it, max_text_bytes=limit)
                    if model is not None:
                        model.model_validate(self.model_input(it))
                except (RecordError, ValidationError) as exc:
                    ctx.dead_letter(exc, it, source=it.source_name, source_id=_sid(it))
                    continue
            out.append(it)
        return out


def _sid(doc: Document) -> str | None:
    return doc.source_id if isinstance(doc.source_id, str) else repr(doc.source_id)


def validate(
    *,
    model: type[BaseModel] | None = None,
    model_input: Callable[[Document], Any] | None = None,
    max_text_bytes: int | None = None,
) -> Validate:
    """Check documents against the FrameRecord schema; invalid ones go to the dead-letter file.

    Checks required fields (``source_id``, ``title``), types of every column, valid UTF-8, ISO 8601
    dates, relationship types and record types, and optionally a size limit on ``text_content``.
    With ``model``, also validates ``model_input(doc)`` (default: ``doc.custom_metadata``) with
    that pydantic model.
    """
    return Validate(model=model, model_input=model_input, max_text_bytes=max_text_bytes)
