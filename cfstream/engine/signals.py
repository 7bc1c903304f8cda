"""Signals: the one place cfstream installs SIGINT/SIGTERM handlers.

:func:`route_signals` routes signals to a callback inside the running asyncio event loop for the
length of a block (only the main thread can install handlers; elsewhere nothing is installed);
:func:`graceful_stopper` is the callback the ``cfstream`` command routes them to: the first
signal stops the runs gracefully (sources stop, in-flight work drains, the sink commits, state is
saved), a second stops them at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from cfstream.logs import get_logger

__all__ = ("STOP_SIGNALS", "Stoppable", "graceful_stopper", "route_signals")

#: the stop messages are the ``cfstream`` command's lines: the logger keeps the name it had there
log = get_logger("cfstream.cli")

#: the signals that stop a run: Ctrl-C and a polite kill
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)


class Stoppable(Protocol):
    """What a signal can stop (:class:`~cfstream.engine.runner.RunControl`)."""

    def request_stop(self) -> None:
        """Stop gracefully (a second call stops at once)."""

    def hard_stop(self) -> None:
        """Stop now."""


@contextlib.contextmanager
def route_signals(
    on_signal: Callable[[], None], signals: Iterable[signal.Signals] = STOP_SIGNALS
) -> Iterator[None]:
    """Route ``signals`` to ``on_signal`` inside the running event loop while the block runs.

    Handlers are installed only from the main thread, and only where the loop supports them;
    they are removed when the block ends.
    """
    import asyncio

    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    if threading.current_thread() is threading.main_thread():
        for sig in signals:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, on_signal)
                installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def graceful_stopper(
    controls: Callable[[], Iterable[Stoppable]], before: Callable[[], None] | None = None
) -> Callable[[], None]:
    """A signal callback: the first call stops every run of ``controls()`` gracefully (and says
    so), a second stops them at once; ``before`` is called first, every time."""
    count = 0

    def on_signal() -> None:
        nonlocal count
        count += 1
        if before is not None:
            before()
        if count == 1:
            log.warning(
                "stopping: finishing in-flight work and saving state (Ctrl-C again to stop at once)"
            )
            for c in controls():
                c.request_stop()
        else:
            log.warning("stopping now")
            for c in controls():
                c.hard_stop()

    return on_signal
