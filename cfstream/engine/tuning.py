"""Interpreter tuning while runs are going (opt-out: :func:`set_interpreter_tuning`).

While at least one run is going, cfstream raises the cyclic GC's generation-0 threshold to
:data:`RUN_GC_THRESHOLD` and lowers the thread switch interval to :data:`RUN_SWITCH_INTERVAL`
(both process-wide); the last run to end restores both. The first tuned run also pins glibc's
mmap threshold (:func:`pin_malloc_threshold`), for the process's life.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import platform
import sys
import threading
from collections.abc import Iterator

__all__ = (
    "RUN_GC_THRESHOLD",
    "RUN_MMAP_THRESHOLD",
    "RUN_SWITCH_INTERVAL",
    "interpreter_tuning",
    "pin_malloc_threshold",
    "set_interpreter_tuning",
)

_GC_LOCK = threading.Lock()
_GC_RUNS = 0
_GC_SAVED: tuple[int, ...] = ()
_SWITCH_SAVED = 0.0
#: generation-0 threshold while a run is going (CPython's default is 700)
RUN_GC_THRESHOLD = 50_000
#: the interpreter's thread switch interval while a run is going, seconds (CPython's default is
#: 0.005)
RUN_SWITCH_INTERVAL = 0.0002

#: glibc's mmap threshold from a process's first tuned run on, bytes (glibc starts at 128 KiB
#: and raises it, up to 32 MiB, each time a block it mmapped is freed)
RUN_MMAP_THRESHOLD = 256 * 1024
#: M_TRIM_THRESHOLD and M_MMAP_THRESHOLD of glibc's mallopt
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: the threshold was pinned in this process (once: glibc cannot go back to its dynamic one)
_MALLOC_PINNED = False

#: whether runs tune the interpreter when ``run_pipeline(tune_interpreter=None)``
_TUNING = True


def pin_malloc_threshold() -> bool:
    """Pin glibc's mmap threshold at :data:`RUN_MMAP_THRESHOLD` and its trim threshold at twice
    that (once per process; on other C libraries nothing is done); True when they are pinned.

    glibc serves blocks above its mmap threshold with their own mappings, returned to the system
    when freed, and raises the threshold to the size of each such block freed. After the first
    Arrow and Lance buffers of a few MB come and go, buffers of every size up to theirs are
    carved from the heaps (Lance's worker threads each have their own), where they interleave
    with long-lived blocks and the freed space is kept, not returned: in an import with chunk
    and embed stages that kept space grew with the import (benchmarks/README.md, SEARCH).
    Process-wide and not undone (glibc has no way back to its dynamic threshold): an
    application that manages its allocator itself turns the tuning off
    (:func:`set_interpreter_tuning`).
    """
    global _MALLOC_PINNED
    if _MALLOC_PINNED:
        return True
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # the trim threshold as glibc's dynamic one would set it (twice the mmap threshold): one
    # raised before the pin would otherwise stay, and the heaps keep that much free at their top
    _MALLOC_PINNED = bool(
        mallopt(_M_MMAP_THRESHOLD, RUN_MMAP_THRESHOLD) == 1
        and mallopt(_M_TRIM_THRESHOLD, 2 * RUN_MMAP_THRESHOLD) == 1
    )
    return _MALLOC_PINNED


def set_interpreter_tuning(enabled: bool) -> bool:
    """Whether runs tune the interpreter (default: yes); returns the previous setting.

    While a run is going, cfstream raises the cyclic GC's generation-0 threshold to
    :data:`RUN_GC_THRESHOLD` and lowers the thread switch interval to :data:`RUN_SWITCH_INTERVAL`
    (both process-wide; restored when the last run ends): together worth about a third of the
    engine's throughput. The first tuned run also pins glibc's mmap threshold
    (:func:`pin_malloc_threshold`; kept for the process's life): without it, freed memory held
    by the allocator grows with an import's size. An application that embeds cfstream and wants its own settings kept
    calls ``set_interpreter_tuning(False)`` once (or passes ``tune_interpreter=False`` to one
    run). The ``cfstream`` command keeps the tuning on.
    """
    global _TUNING
    previous, _TUNING = _TUNING, bool(enabled)
    return previous


@contextlib.contextmanager
def interpreter_tuning(enabled: bool | None = None) -> Iterator[None]:
    """Tune the interpreter while runs are going; restore it after the last one ends.

    ``enabled`` None: the process-wide setting (:func:`set_interpreter_tuning`).

    - Collect cycles less often. A run allocates millions of short-lived, acyclic objects
      (documents, chunks, Arrow wrappers); with CPython's default threshold the cyclic collector
      ran every 700 allocations and cost ~20% of the engine benchmark's throughput. Nothing
      cfstream keeps relies on cycle collection.
    - Hand the GIL over sooner. Lance writes in native threads without the GIL but needs it back
      between its steps; with the default 5 ms switch interval the writer waited behind the
      event loop at every step, so commits lagged and the whole pipeline stalled on them
      (measured: +15% engine throughput at 0.2 ms).
    - Pin glibc's mmap threshold (:func:`pin_malloc_threshold`), once per process.
    """
    global _GC_RUNS, _GC_SAVED, _SWITCH_SAVED
    if not (_TUNING if enabled is None else enabled):
        yield
        return
    with _GC_LOCK:
        if _GC_RUNS == 0:
            pin_malloc_threshold()
            _GC_SAVED = gc.get_threshold()
            if _GC_SAVED and 0 < _GC_SAVED[0] < RUN_GC_THRESHOLD:
                gc.set_threshold(RUN_GC_THRESHOLD, *_GC_SAVED[1:])
            _SWITCH_SAVED = sys.getswitchinterval()
            sys.setswitchinterval(min(_SWITCH_SAVED, RUN_SWITCH_INTERVAL))
        _GC_RUNS += 1
    try:
        yield
    finally:
        with _GC_LOCK:
            _GC_RUNS -= 1
            if _GC_RUNS == 0:
                if _GC_SAVED:
                    gc.set_threshold(*_GC_SAVED)
                if _SWITCH_SAVED:
                    sys.setswitchinterval(_SWITCH_SAVED)
