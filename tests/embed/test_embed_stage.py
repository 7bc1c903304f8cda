"""``T.embed`` with a small deterministic embedder: the protocol, vectors, batching, bounded
concurrency, item order, what is and is not embedded, and the errors users see."""

from __future__ import annotations

import anyio
import numpy as np
import pytest
from embed_helpers import HashEmbedder, list_source, notes

from cfstream import transforms as T
from cfstream.embed import (
    Embedder,
    EmbedderError,
    FastEmbedEmbedder,
    SentenceTransformerEmbedder,
    embed_query,
    embedder_from_config,
)
from cfstream.errors import ConfigError
from cfstream.records import Checkpoint, Document
from cfstream.sinks import MemorySink


def _run(pipeline):  # type: ignore[no-untyped-def]
    return anyio.run(lambda: pipeline.run(dead_letter_path=False))


def test_a_plain_class_with_name_dim_and_embed_is_an_embedder() -> None:
    emb = HashEmbedder()
    assert isinstance(emb, Embedder)
    q = embed_query(emb, "hello world")
    assert q.shape == (32,) and q.dtype == np.float32
    assert emb.closed == 1  # embed_query releases what the embedder holds


def test_embed_fills_float32_vectors_in_order_with_checkpoints_in_place() -> None:
    docs = notes(23)
    emb = HashEmbedder(delay=0.001)
    sink = MemorySink()
    report = _run(
        list_source(docs, checkpoint_every=5) | T.embed(emb, batch_size=4, concurrency=3) | sink
    )
    got = sink.items
    # order: every item where the source put it, each checkpoint after the documents before it
    kinds = ["C" if isinstance(i, Checkpoint) else "D" for i in got]
    assert kinds == (["D"] * 5 + ["C"]) * 4 + ["D"] * 3
    out_docs = [i for i in got if isinstance(i, Document)]
    assert [d.source_id for d in out_docs] == [d.source_id for d in docs]
    for d in out_docs:
        v = np.asarray(d.vector)
        assert v.dtype == np.float32 and v.shape == (32,)
        assert np.isclose(np.linalg.norm(v), 1.0)
        assert d.custom_metadata is not None and "cfstream.embedding" in d.custom_metadata
    # the vector is the embedder's for that document's text
    direct = anyio.run(HashEmbedder().embed, [docs[7].text_content])
    assert np.allclose(out_docs[7].vector, direct[0])  # type: ignore[arg-type]
    # batches hold at most batch_size texts, never more than `concurrency` calls at once
    assert all(1 <= len(c) <= 4 for c in emb.calls)
    assert sum(len(c) for c in emb.calls) == 23
    assert emb.max_in_flight <= 3
    assert emb.closed == 1
    stage = report.stages[0]
    assert (stage.docs_in, stage.docs_out) == (23, 23)


def test_batches_span_documents() -> None:
    emb = HashEmbedder()
    sink = MemorySink()

    async def main() -> None:
        await (list_source(notes(10)) | T.embed(emb, batch_size=8) | sink).run(
            dead_letter_path=False, chunk_size=100
        )

    anyio.run(main)
    # a chunk of 10 documents: one call of 8 texts and one of 2, not ten calls of one
    assert sorted(len(c) for c in emb.calls) == [2, 8]


def test_chunked_parents_and_empty_documents_get_no_vector() -> None:
    docs = [
        Document(
            source_id="p",
            title="Parent",
            text_content="whole text",
            custom_metadata={"cfstream.chunks": "2"},
        ),
        Document(source_id="e", title="", text_content="   "),
        Document(source_id="t", title="Only a title", text_content=None),
        Document(source_id="x", title="X", text_content="some text"),
    ]
    emb = HashEmbedder()
    sink = MemorySink()
    _run(list_source(docs) | T.embed(emb) | sink)
    by_id = {d.source_id: d for d in sink.documents}
    assert by_id["p"].vector is None and by_id["e"].vector is None
    assert by_id["t"].vector is not None and by_id["x"].vector is not None
    assert sorted(emb.texts) == ["Only a title", "some text"]


def test_unchanged_documents_are_not_embedded_again_with_a_memory_sink() -> None:
    docs = notes(6)
    emb = HashEmbedder()
    sink = MemorySink()
    _run(list_source(docs) | T.embed(emb) | sink)
    assert len(emb.texts) == 6
    docs[2].text_content = "changed text"
    report = _run(list_source(docs) | T.embed(emb) | sink)
    assert emb.texts[6:] == ["changed text"]
    assert report.stages[0].dropped == 5
    assert report.sources["notes"].skipped_unchanged == 5


def test_not_an_embedder_is_refused() -> None:
    with pytest.raises(TypeError, match="not an embedder"):
        T.embed(object())  # type: ignore[arg-type]


def test_wrong_width_from_the_embedder_stops_the_run() -> None:
    class Liar(HashEmbedder):
        async def embed(self, texts):  # type: ignore[no-untyped-def]
            return np.zeros((len(texts), 7), np.float32)

    with pytest.raises(EmbedderError, match=r"shape \(3, 7\), expected \(3, 32\)"):
        _run(list_source(notes(3)) | T.embed(Liar()) | MemorySink())


@pytest.mark.parametrize(
    ("cls", "extra"),
    [(SentenceTransformerEmbedder, "sentence-transformers"), (FastEmbedEmbedder, "fastembed")],
)
def test_optional_adapters_say_what_to_install(cls: type, extra: str) -> None:
    pytest.importorskip("numpy")
    try:
        __import__(extra.replace("-", "_"))
    except ImportError:
        pass
    else:
        pytest.skip(f"{extra} is installed here")
    with pytest.raises(EmbedderError, match=rf"pip install 'cfstream\[{extra}\]'"):
        cls()


def test_embedder_from_config_errors_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown embedding provider 'nope'"):
        embedder_from_config("nope")
    with pytest.raises(ConfigError, match="options of the openai provider"):
        embedder_from_config("local", base_url="http://127.0.0.1:1/v1")
    with pytest.raises(ConfigError, match="dim must be 64, 128 or 256"):
        embedder_from_config("local", dim=100)
    emb = embedder_from_config("openai", model="m", base_url="http://127.0.0.1:9/v1", dim=64)
    assert emb.name == "openai:m@64" and emb.dim == 64


def test_a_record_rebuilds_its_embedder_for_queries() -> None:
    from cfstream.embed import LocalEmbedder, OpenAIEmbedder, embedder_from_record, embedder_record

    local = embedder_from_record(embedder_record(LocalEmbedder(dim=128)))
    assert isinstance(local, LocalEmbedder) and local.name == "local:wordllama/l2_supercat_128"
    remote = OpenAIEmbedder("m", base_url="http://user:pw@127.0.0.1:9/v1", dimensions=64)
    rec = embedder_record(remote)
    assert "pw" not in str(rec["base_url"])  # no credential in the record
    rebuilt = embedder_from_record({**rec, "base_url": "http://127.0.0.1:9/v1"}, api_key="k-1234")
    assert isinstance(rebuilt, OpenAIEmbedder) and rebuilt.name == "openai:m@64"
    assert rebuilt.dim == 64
    with pytest.raises(EmbedderError, match="cannot rebuild"):
        embedder_from_record(embedder_record(HashEmbedder()))
