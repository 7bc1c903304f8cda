"""Transform stages: ``map``, ``filter``, ``validate``, ``tag``, ``dedupe``, ``embed`` and your own.

::

    from cfstream import transforms as T
    pipeline = source | T.map(fn, concurrency=8) | T.validate() | T.tag("kb") | T.dedupe() | sink
    pipeline = source | T.embed(LocalEmbedder()) | sink    # vectors (cfstream.embed)

Any ``async def stage(items)`` generator function over the stream of items is a stage too.
"""

from cfstream.transforms.base import Chunk, ChunkStage, GeneratorStage, Stage
from cfstream.transforms.basic import Filter, Tag, filter, tag
from cfstream.transforms.dedupe import Dedupe, dedupe
from cfstream.transforms.embed import Embed, embed
from cfstream.transforms.map import Map, map
from cfstream.transforms.validate import Validate, check_document, validate

__all__ = (
    "Chunk",
    "ChunkStage",
    "Dedupe",
    "Embed",
    "Filter",
    "GeneratorStage",
    "Map",
    "Stage",
    "Tag",
    "Validate",
    "check_document",
    "dedupe",
    "embed",
    "filter",
    "map",
    "tag",
    "validate",
)
