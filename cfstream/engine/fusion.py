"""Stage fusion: consecutive synchronous stages run as one task, with no channel between them.

Stages with a ``sync_apply`` (chunk stages such as validate, tag, dedupe, filter, and ``map`` with
a plain function) are fused, as stream engines chain operators: a chunk is handed over once per
fused run instead of once per stage. Stage statistics and errors stay per stage.
"""

from __future__ import annotations

from anyio.abc import ObjectReceiveStream, ObjectSendStream

from cfstream.contract.context import StageContext
from cfstream.transforms.base import Chunk, ChunkFunction, Stage, run_chunk_functions

__all__ = ("StageGroup", "fuse_stages")


class StageGroup:
    """One task of a run: a stage on its own, or consecutive synchronous stages fused."""

    def __init__(
        self,
        stage: Stage | None,
        ctx: StageContext | None,
        fused: list[tuple[ChunkFunction, StageContext]],
    ) -> None:
        self.stage = stage
        self.ctx = ctx
        self.fused = fused
        self.name = ctx.name if ctx is not None else fused[0][1].name

    async def run(self, receive: ObjectReceiveStream[Chunk], send: ObjectSendStream[Chunk]) -> None:
        if self.stage is not None:
            assert self.ctx is not None
            await self.stage.run(receive, send, self.ctx)
            return
        await run_chunk_functions(self.fused, receive, send)


def fuse_stages(stages: list[Stage], contexts: list[StageContext]) -> list[StageGroup]:
    """Group the stages into tasks: runs of stages with a ``sync_apply`` become one task."""
    groups: list[StageGroup] = []
    run: list[tuple[ChunkFunction, StageContext]] = []
    for stage, sctx in zip(stages, contexts, strict=True):
        fn = stage.sync_apply()
        if fn is not None:
            run.append((fn, sctx))
            continue
        if run:
            groups.append(StageGroup(None, None, run))
            run = []
        groups.append(StageGroup(stage, sctx, []))
    if run:
        groups.append(StageGroup(None, None, run))
    return groups
