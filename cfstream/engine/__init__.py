"""The engine: builds pipelines and runs them.

* :mod:`~cfstream.engine.pipeline`: :class:`Pipeline` (sources ``|`` stages ``|`` a sink);
* :mod:`~cfstream.engine.runner`: :func:`run_pipeline` / :func:`run` (tasks, bounded channels,
  partition concurrency, graceful stop, one clear error) and :class:`RunControl`;
* :mod:`~cfstream.engine.lifecycle`: what both engines (this runner and the Ray driver) do
  around a run: run locks, scope checks, cursors, success records (:class:`RunLifecycle`);
* :mod:`~cfstream.engine.fusion`: consecutive synchronous stages fused into one task;
* :mod:`~cfstream.engine.tuning`: the interpreter tuning while runs go
  (:func:`set_interpreter_tuning`);
* :mod:`~cfstream.engine.signals`: the one SIGINT/SIGTERM installer (:func:`route_signals`; the
  CLI, :func:`run`, the demo and the fake API server use it) and the first-graceful-then-hard
  stopper;
* :mod:`~cfstream.engine.schedule`: ``cfstream watch``'s scheduler (each source on its own
  interval, backoff after failures).

It imports the parts (sources, transforms, sinks), the run contract and the ground floor, never
an entry point (cli, config, demo, frame, connectors, distributed, search).
"""

from cfstream.engine.lifecycle import RunLifecycle, check_source_scope
from cfstream.engine.pipeline import Pipeline
from cfstream.engine.runner import RunControl, http_client_for, run, run_pipeline
from cfstream.engine.schedule import Scheduled, Scheduler, WatchOptions
from cfstream.engine.signals import graceful_stopper, route_signals
from cfstream.engine.tuning import set_interpreter_tuning

__all__ = (
    "Pipeline",
    "RunControl",
    "RunLifecycle",
    "Scheduled",
    "Scheduler",
    "WatchOptions",
    "check_source_scope",
    "graceful_stopper",
    "http_client_for",
    "route_signals",
    "run",
    "run_pipeline",
    "set_interpreter_tuning",
)
