"""The run contract: what a run hands its parts, what it reports, what it keeps between runs.

* :mod:`~cfstream.contract.context`: :class:`RunContext`, :class:`SourceContext`,
  :class:`StageContext` (what sources, stages and sinks receive);
* :mod:`~cfstream.contract.report`: :class:`RunReport` and its per-source, per-stage and sink
  statistics;
* :mod:`~cfstream.contract.deadletter`: the dead-letter file;
* :mod:`~cfstream.contract.state`: the sync state (cursors in ``state.json``, per-item entries in
  the SQLite :class:`ItemStore`, run locks);
* :mod:`~cfstream.contract.uris`: where a dataset is and where its run files live.

It imports only the ground floor (records, errors, secrets, logs).
"""

from cfstream.contract.context import RunContext, SourceContext, StageContext
from cfstream.contract.deadletter import DeadLetterWriter, read_dead_letters
from cfstream.contract.report import RunReport, SinkStats, SourceStats, StageStats
from cfstream.contract.state import ItemStore, StateStore
from cfstream.contract.uris import local_path, state_dir_for

__all__ = (
    "DeadLetterWriter",
    "ItemStore",
    "RunContext",
    "RunReport",
    "SinkStats",
    "SourceContext",
    "SourceStats",
    "StageContext",
    "StageStats",
    "StateStore",
    "local_path",
    "read_dead_letters",
    "state_dir_for",
)
