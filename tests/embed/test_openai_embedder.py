"""``OpenAIEmbedder`` against a fake OpenAI-compatible server on 127.0.0.1: answers ordered by
``index``, batching through ``T.embed``, a 429 with Retry-After, a 500, a refused text
dead-lettered, Azure's header and api-version, and the key never in an error."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from embed_helpers import list_source, notes

from cfstream import transforms as T
from cfstream.embed import EmbedderError, OpenAIEmbedder, embedder_from_config
from cfstream.errors import AuthError, RateLimitWaitTooLong
from cfstream.http import HttpClient, RetryPolicy
from cfstream.sinks import MemorySink
from cfstream.testing import FakeAPI, FakeClock, Fault, Reply

KEY = "sk-test-3mb3dd1ng-k3y-0123456789"
DIM = 6


def _vector(text: str) -> list[float]:
    words = text.split()
    return [float(len(text)), float(sum(map(ord, text)) % 97), 1.0, 0.0, 2.0, float(len(words))]


def _handler(request_log: list[dict[str, Any]], *, reverse: bool = True) -> Any:
    async def handle(request: web.Request) -> Any:
        body = await request.json()
        request_log.append(body)
        inputs = body["input"]
        if any("TOO LONG" in t for t in inputs):
            return web.json_response(
                {
                    "error": {
                        "message": "maximum context length exceeded",
                        "type": "invalid_request_error",
                    }
                },
                status=400,
            )
        data = [
            {"object": "embedding", "index": i, "embedding": _vector(t)}
            for i, t in enumerate(inputs)
        ]
        if reverse:
            data.reverse()  # servers may answer out of order: `index` decides
        return {
            "object": "list",
            "data": data,
            "model": body["model"],
            "usage": {"prompt_tokens": 1},
        }

    return handle


@pytest.fixture
async def api() -> AsyncIterator[FakeAPI]:
    async with FakeAPI() as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[tuple[HttpClient, FakeClock]]:
    clock = FakeClock()
    retry = RetryPolicy(max_tries=4, base=0.01, factor=2.0, max_backoff=0.05, jitter=False)
    async with HttpClient(timeout=5, retry=retry, clock=clock.time, sleep=clock.sleep) as client:
        yield client, clock


async def test_embeds_in_index_order_and_learns_the_width(api: FakeAPI) -> None:
    seen: list[dict[str, Any]] = []
    api.route("POST", "/v1/embeddings", _handler(seen))
    emb = OpenAIEmbedder("nomic-embed-text", base_url=f"{api.url}/v1", api_key=KEY)
    assert emb.dim == 0 and emb.name == "openai:nomic-embed-text"
    out = await emb.embed(["alpha", "beta gamma", "d"])
    await emb.aclose()
    assert out.dtype == np.float32 and out.shape == (3, DIM) and emb.dim == DIM
    assert np.allclose(out[1], _vector("beta gamma"))
    assert seen == [{"model": "nomic-embed-text", "input": ["alpha", "beta gamma", "d"]}]
    req = api.requests[0]
    assert req.method == "POST" and req.path == "/v1/embeddings"
    assert req.headers["Authorization"] == f"Bearer {KEY}"


async def test_429_retry_after_and_500_are_retried(
    api: FakeAPI, http: tuple[HttpClient, FakeClock]
) -> None:
    client, clock = http
    api.route("POST", "/v1/embeddings", _handler([]))
    api.faults.script("POST", "/v1/embeddings", [Fault.rate_limit(7), 500])
    emb = OpenAIEmbedder("m", base_url=f"{api.url}/v1", api_key=KEY, http=client)
    out = await emb.embed(["one", "two"])
    assert out.shape == (2, DIM)
    assert len(api.requests) == 3
    assert 7 in clock.sleeps  # the wait the 429 asked for was honoured
    assert client.metrics.retries == {"rate_limited": 1, "http_500": 1}


async def test_a_wait_too_long_is_an_error_without_the_key(
    api: FakeAPI, http: tuple[HttpClient, FakeClock]
) -> None:
    client, _ = http
    api.route("POST", "/v1/embeddings", Fault.rate_limit(10_000))
    api.faults.script("POST", "/v1/embeddings", [Fault.rate_limit(10_000)])
    emb = OpenAIEmbedder("m", base_url=f"{api.url}/v1", api_key=KEY, http=client)
    with pytest.raises(RateLimitWaitTooLong) as caught:
        await emb.embed(["x"])
    assert KEY not in str(caught.value) and KEY not in repr(caught.value)


async def test_the_key_never_appears_in_errors_or_repr(api: FakeAPI) -> None:
    async def echo_key(request: web.Request) -> Any:
        # a hostile or careless server echoing the credential in its error body
        return web.json_response(
            {
                "error": {
                    "message": f"Incorrect API key provided: {request.headers['Authorization']}"
                }
            },
            status=401,
        )

    api.route("POST", "/v1/embeddings", echo_key)
    emb = OpenAIEmbedder("m", base_url=f"{api.url}/v1", api_key=KEY)
    with pytest.raises(AuthError) as caught:
        await emb.embed(["x"])
    await emb.aclose()
    assert KEY not in str(caught.value)
    assert KEY not in repr(emb) and "**********" in repr(emb)


async def test_batches_through_the_stage_and_a_refused_text_is_dead_lettered(api: FakeAPI) -> None:
    seen: list[dict[str, Any]] = []
    api.route("POST", "/v1/embeddings", _handler(seen))
    docs = notes(10)
    docs[4].text_content = "TOO LONG " * 3
    emb = OpenAIEmbedder("m", base_url=f"{api.url}/v1", api_key=KEY, batch_size=4)
    sink = MemorySink()
    report = await (list_source(docs) | T.embed(emb, concurrency=2) | sink).run(
        dead_letter_path=False, chunk_size=100
    )
    got = [d.source_id for d in sink.documents]
    assert got == [d.source_id for d in docs if d.source_id != "note-4"]
    assert all(np.asarray(d.vector).shape == (DIM,) for d in sink.documents)
    assert report.dead_lettered == 1 and report.stages[0].failed == 1
    sizes = [len(b["input"]) for b in seen]
    # batches of 4 (the one holding the refused text is split and its texts sent alone)
    assert sizes.count(4) == 2 and sizes.count(1) == 4 and sum(sizes) == 14
    assert emb._own is None  # the stage closed the embedder's session at its end


async def test_azure_style_key_header_and_api_version(api: FakeAPI) -> None:
    api.route("POST", "/openai/deployments/emb/embeddings", _handler([]))
    emb = embedder_from_config(
        "openai",
        model="text-embedding-3-small",
        base_url=f"{api.url}/openai/deployments/emb",
        api_key=KEY,
        dim=DIM,
        options={"api_version": "2024-02-01"},
    )
    try:
        await emb.embed(["x"])
    finally:
        await emb.aclose()  # type: ignore[attr-defined]
    req = api.requests[0]
    assert req.query["api-version"] == "2024-02-01"
    assert req.headers["api-key"] == KEY and "Authorization" not in req.headers
    assert req.json()["dimensions"] == DIM


async def test_answers_of_the_wrong_shape_are_refused(api: FakeAPI) -> None:
    api.route("POST", "/v1/embeddings", {"data": [{"index": 0, "embedding": [1.0, 2.0]}]})
    emb = OpenAIEmbedder(
        "m", base_url=f"{api.url}/v1", dim=3, retry=RetryPolicy(max_tries=1, jitter=False)
    )
    try:
        with pytest.raises(EmbedderError, match="returned 2-wide vectors, expected 3"):
            await emb.embed(["x"])
        with pytest.raises(Exception, match="1 embeddings for 2 inputs"):
            await emb.embed(["x", "y"])
    finally:
        await emb.aclose()


def test_no_key_is_sent_to_another_server_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    assert OpenAIEmbedder("m")._key is not None  # OpenAI's own API: the usual variable
    assert OpenAIEmbedder("m", base_url="http://127.0.0.1:11434/v1")._key is None


async def test_a_server_that_keeps_failing_stops_the_run_before_anything_is_written(
    api: FakeAPI, tmp_path: Any
) -> None:
    from cfstream.errors import TransientError
    from cfstream.sinks import LanceSink

    api.route("POST", "/v1/embeddings", Reply({"error": {"message": "overloaded"}}, status=503))
    emb = OpenAIEmbedder(
        "m",
        base_url=f"{api.url}/v1",
        api_key=KEY,
        retry=RetryPolicy(max_tries=2, base=0.01, jitter=False),
    )
    uri = str(tmp_path / "kb.lance")
    with pytest.raises(TransientError) as caught:
        await (list_source(notes(3), checkpoint_every=1) | T.embed(emb) | LanceSink(uri)).run()
    assert KEY not in str(caught.value)
    assert not (tmp_path / "kb.lance" / "_versions").exists()
