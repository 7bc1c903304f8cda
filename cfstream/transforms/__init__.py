"""Transform stages: ``map``, ``filter``, ``validate``, ``tag``, ``dedupe``, ``chunk``, ``embed`` and
your own.

::

    from cfstream import transforms as T
    pipeline = source | T.map(fn, concurrency=8) | T.validate() | T.tag("kb") | T.dedupe() | sink
    pipeline = source | T.chunk(max_tokens=512) | T.embed(LocalEmbedder()) | sink  # searchable

Any ``async def stage(items)`` generator function over the stream of items is a stage too.
"""

from cfstream.transforms.base import AsyncChunkStage, Chunk, ChunkStage, GeneratorStage, Stage
from cfstream.transforms.basic import Filter, Tag, filter, tag
from cfstream.transforms.chunking import ChunkText, MarkdownSplitter, TextChunk, chunk, count_tokens
from cfstream.transforms.dedupe import Dedupe, dedupe
from cfstream.transforms.embed import Embed, embed
from cfstream.transforms.map import Map, map
from cfstream.transforms.validate import Validate, check_document, validate

__all__ = (
    "AsyncChunkStage",
    "Chunk",
    "ChunkStage",
    "ChunkText",
    "Dedupe",
    "Embed",
    "Filter",
    "GeneratorStage",
    "Map",
    "MarkdownSplitter",
    "Stage",
    "Tag",
    "TextChunk",
    "Validate",
    "check_document",
    "chunk",
    "count_tokens",
    "dedupe",
    "embed",
    "filter",
    "map",
    "tag",
    "validate",
)
