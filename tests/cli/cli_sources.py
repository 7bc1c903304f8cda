"""Small offline sources for the CLI tests, loaded by the ``cli_sources:NotesSource`` type path."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

import anyio

from cfstream import Checkpoint, Document, Secret, Source, SourceError
from cfstream.contract.context import SourceContext
from cfstream.sources.base import SourceConfig, SourceOutput


class NotesConfig(SourceConfig):
    """Options of the test source."""

    count: int = 3
    prefix: str = "note"
    version: int = 1
    token: Secret | None = None
    repos: list[str] = []
    fail: bool = False
    bad: int = 0
    delay: float = 0.0


class NotesSource(Source):
    """Yields ``count`` notes; incremental: nothing new while ``version`` is unchanged."""

    source_type: ClassVar[str] = "notes"
    config_model: ClassVar[type[SourceConfig] | None] = NotesConfig
    required_scopes: ClassVar[tuple[str, ...]] = ("notes:read",)

    def __init__(self, *, name: str | None = None, **options: Any) -> None:
        super().__init__(name=name)
        self.cfg = NotesConfig.model_validate(options)

    @classmethod
    def from_config(cls, options: Mapping[str, Any], *, name: str | None = None) -> Source:
        return cls(name=name, **dict(options))

    async def read(
        self, partition: str, cursor: Mapping[str, Any] | None, ctx: SourceContext
    ) -> AsyncIterator[SourceOutput]:
        cfg = self.cfg
        if cfg.fail:
            token = cfg.token.get_secret_value() if cfg.token else "-"
            raise SourceError(f"the notes service refused the token {token}")
        if cursor is not None and cursor.get("version") == cfg.version:
            return
        for i in range(cfg.count):
            if cfg.delay:
                await anyio.sleep(cfg.delay)
            yield Document(
                source_id=f"{cfg.prefix}-{i}",
                title=f"{cfg.prefix} {i}",
                text_content=f"version {cfg.version} of {cfg.prefix} {i}",
            )
        for j in range(cfg.bad):
            yield Document(source_id=f"{cfg.prefix}-bad-{j}", title="  ")
        yield Checkpoint({"version": cfg.version})


class MemosSource(NotesSource):
    """The same, stored with another source_type."""

    source_type: ClassVar[str] = "memos"


async def hang(doc: Document) -> Document:
    """A map function that never finishes: for the grace-period test (it touches the file named by
    ``CFSTREAM_TEST_HANGING`` when it starts, so the test knows the run is stuck)."""
    marker = os.environ.get("CFSTREAM_TEST_HANGING")
    if marker:
        await anyio.Path(marker).touch()
    await anyio.sleep(3600)
    return doc


def flaky(doc: Document) -> Document:
    """A map function that fails for the ids listed in ``CFSTREAM_TEST_BREAK`` (a bug the user
    fixes later): for the dead-letter retry test."""
    if doc.source_id in os.environ.get("CFSTREAM_TEST_BREAK", "").split(","):
        raise ValueError(f"cannot map {doc.source_id}")
    return doc
