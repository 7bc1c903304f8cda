"""Sinks: where a pipeline's documents end up. ``LanceSink`` is the real one."""

from cfstream.sinks.base import Sink
from cfstream.sinks.lance import LanceSink
from cfstream.sinks.memory import MemorySink

__all__ = ("LanceSink", "MemorySink", "Sink")
