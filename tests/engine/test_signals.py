"""The one SIGINT/SIGTERM installer (cfstream.engine.signals) and the stopper the CLI routes
signals to. Whole-process Ctrl-C behaviour is covered in tests/cli and tests/reliability."""

from __future__ import annotations

import os
import signal
import threading

import anyio

import cfstream as cf
from cfstream.engine.signals import graceful_stopper, route_signals
from cfstream.sinks import MemorySink


async def test_route_signals_calls_back_and_removes_its_handlers() -> None:
    got = anyio.Event()
    calls: list[int] = []

    def on_signal() -> None:
        calls.append(1)
        got.set()

    with route_signals(on_signal):
        os.kill(os.getpid(), signal.SIGTERM)
        with anyio.fail_after(5):
            await got.wait()
    assert calls == [1]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # removed again


async def test_route_signals_can_take_only_sigint() -> None:
    with route_signals(lambda: None, (signal.SIGINT,)):
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    with route_signals(lambda: None):
        assert signal.getsignal(signal.SIGTERM) != signal.SIG_DFL


def test_route_signals_installs_nothing_outside_the_main_thread() -> None:
    seen: list[object] = []

    async def main() -> None:
        with route_signals(lambda: None):
            seen.append(signal.getsignal(signal.SIGINT))

    thread = threading.Thread(target=anyio.run, args=(main,))
    thread.start()
    thread.join(10)
    assert seen == [signal.default_int_handler]


class _Control:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def request_stop(self) -> None:
        self.calls.append("graceful")

    def hard_stop(self) -> None:
        self.calls.append("hard")


def test_the_first_signal_stops_gracefully_and_the_second_at_once() -> None:
    controls = [_Control(), _Control()]
    before: list[int] = []
    on_signal = graceful_stopper(lambda: controls, lambda: before.append(1))
    on_signal()
    assert [c.calls for c in controls] == [["graceful"], ["graceful"]]
    on_signal()
    assert [c.calls for c in controls] == [["graceful", "hard"], ["graceful", "hard"]]
    assert before == [1, 1]


def test_ctrl_c_stops_cf_run_gracefully() -> None:
    @cf.source(source_type="sig")
    async def endless():
        i = 0
        while True:
            yield cf.Document(source_id=f"d{i}", title=str(i))
            if i == 3:
                os.kill(os.getpid(), signal.SIGINT)
            i += 1
            await anyio.sleep(0.01)

    sink = MemorySink()
    report = cf.run(endless() | sink, state=None)
    assert report.stopped_early
    assert report.error is None
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_no_other_module_installs_signal_handlers() -> None:
    """cfstream.engine.signals is the one place handlers are installed (route_signals)."""
    import ast
    from pathlib import Path

    package = Path(cf.__file__).parent
    bad = []
    for path in sorted(package.rglob("*.py")):
        if path == package / "engine" / "signals.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in (
                "add_signal_handler",
                "set_wakeup_fd",
            ):
                bad.append(f"{path.relative_to(package)}:{node.lineno} {node.attr}")
            elif (
                isinstance(node, ast.Attribute)
                and node.attr == "signal"
                and isinstance(node.value, ast.Name)
                and node.value.id == "signal"
            ):
                bad.append(f"{path.relative_to(package)}:{node.lineno} signal.signal")
    assert not bad, bad
