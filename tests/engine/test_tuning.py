"""Interpreter tuning while runs go (cfstream.engine.tuning): on by default, restored after the
last run, and an application that embeds cfstream can turn it off."""

from __future__ import annotations

import pytest

import cfstream as cf
from cfstream.records import Document
from cfstream.sinks import MemorySink


async def run(pipeline: cf.Pipeline, **options: object) -> cf.RunReport:
    return await pipeline.run(state=None, **options)


async def test_run_tunes_gc_and_switch_interval_and_restores_them() -> None:
    import gc
    import sys

    from cfstream.engine.tuning import RUN_GC_THRESHOLD, RUN_SWITCH_INTERVAL

    before = gc.get_threshold()
    before_switch = sys.getswitchinterval()
    seen: list[tuple[int, float]] = []

    @cf.source(source_type="gc")
    async def probe():
        seen.append((gc.get_threshold()[0], sys.getswitchinterval()))
        yield Document(source_id="a", title="A")

    await run(probe() | MemorySink())
    assert seen == [
        (max(before[0], RUN_GC_THRESHOLD), pytest.approx(min(before_switch, RUN_SWITCH_INTERVAL)))
    ]
    assert gc.get_threshold() == before
    assert sys.getswitchinterval() == before_switch


async def test_an_embedding_application_can_keep_its_interpreter_settings() -> None:
    import gc
    import sys

    from cfstream.engine.tuning import set_interpreter_tuning

    before = gc.get_threshold()
    before_switch = sys.getswitchinterval()
    seen: list[tuple[tuple[int, ...], float]] = []

    @cf.source(source_type="gc")
    async def probe():
        seen.append((gc.get_threshold(), sys.getswitchinterval()))
        yield Document(source_id="a", title="A")

    await run(probe() | MemorySink(), tune_interpreter=False)
    previous = set_interpreter_tuning(False)
    try:
        await run(probe() | MemorySink())
    finally:
        set_interpreter_tuning(previous)
    assert previous is True
    assert seen == [(before, before_switch)] * 2
    await run(probe() | MemorySink())  # on again: tuned
    assert seen[2] != (before, before_switch)
