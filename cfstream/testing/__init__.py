"""Test kit for connectors: a fake HTTP API on 127.0.0.1 and a virtual clock.

Importable without pytest. See ``docs/testing.md``.
"""

from __future__ import annotations

from cfstream.testing.server import FakeAPI as FakeAPI
from cfstream.testing.server import FakeClock as FakeClock
from cfstream.testing.server import Fault as Fault
from cfstream.testing.server import FaultInjector as FaultInjector
from cfstream.testing.server import LoggedRequest as LoggedRequest
from cfstream.testing.server import RateMeter as RateMeter
from cfstream.testing.server import Reply as Reply

__all__ = (
    "FakeAPI",
    "FakeClock",
    "Fault",
    "FaultInjector",
    "LoggedRequest",
    "RateMeter",
    "Reply",
)
