"""Composing sources, stages and a sink into a :class:`Pipeline`.

::

    pipeline = source | T.map(fn) | T.validate() | LanceSink("kb.lance")
    report = await pipeline.run()        # or cf.run(pipeline) from sync code
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from cfstream.contract.report import RunReport
from cfstream.records import Item
from cfstream.sinks.base import Sink
from cfstream.sources.base import MergedSource, Source
from cfstream.transforms.base import GeneratorStage, Stage

__all__ = ("Pipeline",)


class Pipeline:
    """Sources, then stages in order, then one sink. Built with ``|``; immutable."""

    def __init__(
        self,
        sources: Sequence[Source],
        stages: Sequence[Stage] = (),
        sink: Sink | None = None,
    ) -> None:
        self.sources = list(sources)
        self.stages = list(stages)
        self.sink = sink
        self.partition_concurrency: int | None = None
        #: every source known to write into the sink's dataset, name -> source type, whether
        #: this pipeline reads it or not (``build_pipeline`` sets the config's sources); the
        #: one-time rewrite of old record uuids uses it to tell whose old rows are whose
        self.dataset_sources: dict[str, str] = {}
        for s in self.sources:
            if isinstance(s, MergedSource) and s.concurrency:
                self.partition_concurrency = s.concurrency

    @property
    def leaf_sources(self) -> list[Source]:
        """Every source, merges flattened."""
        return [leaf for s in self.sources for leaf in s.sources()]

    def __or__(
        self, other: Stage | Sink | Callable[[AsyncIterator[Item]], AsyncIterator[Item]]
    ) -> Pipeline:
        if self.sink is not None:
            raise TypeError("this pipeline already ends in a sink; nothing can follow it")
        if isinstance(other, Sink):
            p = Pipeline(self.sources, self.stages, other)
        elif isinstance(other, Stage):
            p = Pipeline(self.sources, [*self.stages, other])
        elif inspect.isasyncgenfunction(other):
            p = Pipeline(self.sources, [*self.stages, GeneratorStage(other)])
        else:
            raise TypeError(
                f"cannot pipe into {other!r}: expected a stage (cfstream.transforms), a sink, or "
                "an async generator function over items"
            )
        p.partition_concurrency = self.partition_concurrency
        p.dataset_sources = self.dataset_sources
        return p

    async def run(self, **options: Any) -> RunReport:
        """Run the pipeline to the end and return its report. See :func:`cfstream.engine.runner.run_pipeline`."""
        from cfstream.engine.runner import run_pipeline

        return await run_pipeline(self, **options)

    def __repr__(self) -> str:
        parts = [repr(s) for s in self.sources] + [repr(s) for s in self.stages]
        if self.sink is not None:
            parts.append(repr(self.sink))
        return "Pipeline(" + " | ".join(parts) + ")"
