"""cfstream: stream documents from anywhere into a ContextFrame (Lance) dataset.

::

    import cfstream as cf
    from cfstream import transforms as T
    from cfstream.sinks import LanceSink

    @cf.source(source_type="notes")
    async def notes(cursor=None):
        yield cf.Document(source_id="n1", title="Hello", text_content="...")
        yield cf.Checkpoint({"page": 1})

    report = cf.run(notes() | T.validate() | T.dedupe() | LanceSink("kb.lance"))
"""

from cfstream.contract.report import RunReport
from cfstream.contract.state import ItemStore, StateStore
from cfstream.engine.pipeline import Pipeline
from cfstream.engine.runner import RunControl, run, run_pipeline
from cfstream.errors import (
    AuthError,
    CfStreamError,
    ConfigError,
    DatasetError,
    HTTPError,
    PipelineError,
    RateLimitError,
    RecordError,
    SearchError,
    SinkError,
    SourceError,
    StateError,
)
from cfstream.frame import FrameDataset, FrameRecord
from cfstream.records import (
    Checkpoint,
    Document,
    ItemChanges,
    Relationship,
    Tombstone,
    record_uuid,
)
from cfstream.search import SearchHit, search
from cfstream.secrets import Secret, env
from cfstream.sinks import LanceSink, MemorySink
from cfstream.sources import Source, merge, source
from cfstream.storage import frame_schema

__version__ = "0.1.0"

__all__ = (
    "AuthError",
    "CfStreamError",
    "Checkpoint",
    "ConfigError",
    "DatasetError",
    "Document",
    "FrameDataset",
    "FrameRecord",
    "HTTPError",
    "ItemChanges",
    "ItemStore",
    "LanceSink",
    "MemorySink",
    "Pipeline",
    "PipelineError",
    "RateLimitError",
    "RecordError",
    "Relationship",
    "RunControl",
    "RunReport",
    "SearchError",
    "SearchHit",
    "Secret",
    "SinkError",
    "Source",
    "SourceError",
    "StateError",
    "StateStore",
    "Tombstone",
    "env",
    "frame_schema",
    "merge",
    "record_uuid",
    "run",
    "run_pipeline",
    "search",
    "source",
)
