"""The search indexes the LanceSink keeps (``cfstream.sinks.indexes``)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import anyio
import lance
import pytest
from search_support import HashEmbedder, doc, sync, with_vectors

import cfstream as cf
from cfstream import transforms as T
from cfstream.config import build_sink, load_config
from cfstream.errors import ConfigError
from cfstream.sinks import LanceSink
from cfstream.sinks import indexes as idx
from cfstream.sinks.indexes import IndexKeeper, IndexSettings, index_settings


def _indexes(uri: str) -> dict[str, str]:
    return {i.name: i.index_type for i in lance.dataset(uri).describe_indices()}


def _unindexed(uri: str, name: str) -> int:
    return int(lance.dataset(uri).stats.index_stats(name)["num_unindexed_rows"])


def test_fts_indexes_are_kept_up_to_date_across_syncs(tmp_path: Path) -> None:
    uri = str(tmp_path / "kb.lance")
    sync(uri, [doc("a", "Alpha", "apples and oranges"), doc("b", "Beta", "bananas")])
    assert _indexes(uri) == {"text_content_fts": "Inverted", "title_fts": "Inverted"}
    # second sync: a new row, an edited row, a deleted row
    sync(
        uri,
        [
            doc("c", "Gamma", "Cherries ripen in June"),
            doc("a", "Alpha", "pears now"),
            cf.Tombstone(source_id="b", source_type="notes", source_name="notes"),
        ],
    )
    assert _unindexed(uri, "text_content_fts") == 0
    assert _unindexed(uri, "title_fts") == 0
    assert [h.source_id for h in cf.search(uri, "cherry", mode="fts")] == ["c"]  # stemmed
    assert [h.source_id for h in cf.search(uri, "gamma", mode="fts")] == ["c"]  # title
    assert cf.search(uri, "apples", mode="fts") == []  # the edit replaced the old text
    assert cf.search(uri, "bananas", mode="fts") == []  # deleted
    assert [h.source_id for h in cf.search(uri, "pears", mode="fts")] == ["a"]


def test_index_false_keeps_no_index(tmp_path: Path) -> None:
    uri = str(tmp_path / "kb.lance")
    sync(uri, [doc("a", "Alpha", "apples")], index=False)
    assert _indexes(uri) == {}


@pytest.mark.parametrize("kind", ["IVF_HNSW_SQ", "IVF_PQ"])
def test_vector_index_waits_for_its_threshold(tmp_path: Path, kind: str) -> None:
    uri = str(tmp_path / "kb.lance")
    emb = HashEmbedder(32)
    words = ["red", "green", "blue", "cyan", "teal", "pink", "gold", "gray", "navy", "lime"]

    def batch(lo: int, hi: int) -> list[cf.Document]:
        return with_vectors(
            [
                doc(f"d{i}", f"note {i}", f"{words[i % 10]} {words[i // 10 % 10]} {i}")
                for i in range(lo, hi)
            ],
            emb,
        )

    options: dict[str, Any] = {
        "fts": False,
        "vector": "auto",
        "vector_min_rows": 300,
        "vector_index_type": kind,
    }
    sync(uri, batch(0, 200), embed_dim=32, index=options)
    assert _indexes(uri) == {}  # 200 < 300: exact flat search
    sync(uri, batch(200, 400), embed_dim=32, index=options)
    assert _indexes(uri) == {"vector_idx": kind}
    # the exact words of d321 (green blue): distance 0, found through the index
    hits = cf.search(uri, "note 321 green blue 321", mode="vector", embedder=emb, k=3)
    assert hits[0].source_id == "d321"


def test_a_dataset_without_embeddings_gets_no_vector_index(tmp_path: Path) -> None:
    uri = str(tmp_path / "kb.lance")
    sync(uri, [doc(f"d{i}", "t", "x") for i in range(300)], index={"vector": True, "fts": False})
    assert _indexes(uri) == {}  # only the 1-wide placeholder: nothing to index


def test_after_commit_returns_at_once_and_runs_one_refresh_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    started: list[int] = []

    def slow_refresh(ds: Any, settings: IndexSettings, **kw: Any) -> idx.RefreshResult:
        started.append(1)
        release.wait(30)
        return idx.RefreshResult(created=["x"])

    monkeypatch.setattr(idx, "refresh_indexes", slow_refresh)
    monkeypatch.setattr(idx.lance, "dataset", lambda uri, **kw: object())
    keeper = IndexKeeper(str(tmp_path / "kb.lance"), IndexSettings(fts=True, refresh_seconds=0))
    keeper.after_commit()  # starts the refresh, which blocks until released
    keeper.after_commit()  # returns at once: one is running, no second one starts
    keeper.after_commit()
    assert started == [1] or started == []  # the thread may not have begun yet
    assert keeper.refreshes == 0
    release.set()
    keeper.finish()  # waits for it, then one more for the commits that came meanwhile
    assert len(started) == 2
    assert keeper.refreshes == 2 and keeper.created == ["x", "x"]


def test_a_failed_refresh_is_retried_at_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = idx.refresh_indexes

    def flaky(ds: Any, settings: IndexSettings, **kw: Any) -> idx.RefreshResult:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("Retryable commit conflict for version 3")
        return real(ds, settings, **kw)

    monkeypatch.setattr(idx, "refresh_indexes", flaky)
    uri = str(tmp_path / "kb.lance")
    sink = sync(uri, [doc("a", "Alpha", "apples")], index={"refresh_seconds": 0})
    assert sink.indexes.failures == 1 and sink.indexes.refreshes == 1
    assert set(_indexes(uri)) == {"text_content_fts", "title_fts"}


def test_index_settings_from_python_values() -> None:
    assert index_settings(None) == IndexSettings()
    assert index_settings(False) == IndexSettings(fts=False, vector=False)
    assert index_settings({"vector": True}).vector_rows_needed() == 256
    assert IndexSettings(vector_min_rows=10).vector_rows_needed() == 256
    assert IndexSettings(vector=False).vector_rows_needed() is None
    with pytest.raises(ValueError, match="unknown index option"):
        index_settings({"vectors": True})
    with pytest.raises(ValueError, match="true, false or 'auto'"):
        IndexSettings(vector="sometimes")  # type: ignore[arg-type]


def test_yaml_index_options_reach_the_sink(tmp_path: Path) -> None:
    cfg = tmp_path / "cfstream.yaml"
    cfg.write_text(
        "dataset: ./kb.lance\n"
        "sink:\n"
        "  index: {fts: true, vector: auto, vector_min_rows: 5000, metric: l2}\n"
        "sources:\n"
        "  notes: {type: files, path: ./notes}\n"
    )
    (tmp_path / "notes").mkdir()
    settings = build_sink(load_config(cfg, env={})).indexes.settings
    assert settings == IndexSettings(fts=True, vector="auto", vector_min_rows=5000, metric="l2")
    cfg.write_text(
        cfg.read_text().replace(
            "index: {fts: true, vector: auto, vector_min_rows: 5000, metric: l2}", "index: false"
        )
    )
    assert not build_sink(load_config(cfg, env={})).indexes.settings.enabled
    cfg.write_text(cfg.read_text().replace("index: false", "index: {vector: sometimes}"))
    with pytest.raises(ConfigError, match="sink.index"):
        load_config(cfg, env={})


def test_the_writer_folds_new_rows_into_the_uuid_index_only(tmp_path: Path) -> None:
    """The search indexes are the keeper's: the writer's own maintenance never stalls on them."""
    uri = str(tmp_path / "kb.lance")
    sync(uri, [doc(f"a{i}", "t", "apples") for i in range(20)])  # builds the FTS indexes
    merging: dict[str, Any] = {"index_threshold": 1, "optimize_every": 1, "batch_rows": 5}
    sync(uri, [doc(f"b{i}", "t", "bananas") for i in range(4)], index=False, **merging)
    assert "uuid_idx" in _indexes(uri)  # the first merging run built it
    sync(uri, [doc(f"c{i}", "t", "cherries") for i in range(12)], index=False, **merging)
    assert _unindexed(uri, "uuid_idx") == 0
    assert _unindexed(uri, "text_content_fts") == 16  # left alone (index=False: no keeper)
    assert len(cf.search(uri, "cherries", mode="fts", k=20)) == 12  # still found


def test_another_index_on_a_column_does_not_hide_the_fts_index(tmp_path: Path) -> None:
    uri = str(tmp_path / "kb.lance")
    sync(uri, [doc("a", "Alpha", "apples")])
    lance.dataset(uri).create_scalar_index("title", index_type="BTREE", name="title_zz_btree")
    done = idx.refresh_indexes(lance.dataset(uri), IndexSettings())
    assert done.created == [] and done.optimized
    assert idx.unindexed_fts_columns(lance.dataset(uri)) == []


def test_zero_vectors_never_train_a_vector_index(tmp_path: Path) -> None:
    uri = str(tmp_path / "kb.lance")
    sink = sync(
        uri,
        [doc(f"d{i}", "t", "x") for i in range(300)],  # no vectors: stored as zeros
        embed_dim=8,
        index={"vector": True, "fts": False},
    )
    assert _indexes(uri) == {} and sink.indexes.failures == 0


def test_a_fresh_load_compacting_indexed_fragments_keeps_appending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pylance 14.0.2 cannot read back a compaction that rewrote an index (``read_transaction``
    raises ``TypeError: RewrittenIndex.__init__() missing 3 required positional arguments``):
    with the FTS index in place, a fresh load's check of the versions between its appends met one
    and the sink failed. A compaction never adds rows: the load goes on appending."""
    # refresh inline, after each commit: the index exists before the first compaction
    monkeypatch.setattr(IndexKeeper, "after_commit", lambda self: self._refresh_logged())
    uri = str(tmp_path / "kb.lance")

    @cf.source(source_type="notes")
    async def pages() -> Any:
        for page in range(10):  # small batches (cut by max_latency): small fragments
            yield [doc(f"d{i}", f"t{i}", f"word{i} apples") for i in range(page * 4, page * 4 + 4)]
            await anyio.sleep(0.05)

    async def main() -> None:
        sink = LanceSink(uri, batch_rows=100, max_latency=0.01, maintenance_every=2)
        await (pages(name="notes") | sink).run()

    anyio.run(main)
    ds = lance.dataset(uri)
    assert ds.count_rows() == 40
    kinds = []
    for version in range(1, ds.version + 1):
        try:
            kinds.append(type(ds.read_transaction(version).operation).__name__)
        except TypeError:
            kinds.append("Rewrite")  # the unreadable compaction
    assert "Rewrite" in kinds  # the case happened
    assert "Update" not in kinds  # every batch was appended: no fall back to merging
    assert [h.source_id for h in cf.search(uri, "word37", mode="fts")] == ["d37"]


def test_new_rows_become_a_segment_and_small_segments_are_merged(tmp_path: Path) -> None:
    """A refresh indexes only the new rows (never re-merging the whole index); the newest
    segments are merged while they hold at most ``merge_rows`` rows together."""
    uri = str(tmp_path / "kb.lance")
    options: dict[str, Any] = {"merge_rows": 5, "vector": False}

    def sizes() -> list[int]:
        stats = lance.dataset(uri).stats.index_stats("text_content_fts")
        return [int(n) for n in stats["num_indexed_rows_per_delta"]]

    sync(uri, [doc(f"a{i}", "t", f"alpha{i}") for i in range(10)], index=options)
    assert sizes() == [10]
    seen = []
    for n in range(3):
        sync(uri, [doc(f"b{n}", "t", f"beta{n}")], index=options)
        seen.append(sizes())
    assert seen == [[10, 1], [10, 2], [10, 3]]  # the 10-row segment is never rewritten
    sync(uri, [doc(f"c{i}", "t", f"gamma{i}") for i in range(8)], index=options)
    assert sizes() == [10, 3, 8]  # 8 > merge_rows: a segment of its own
    for word, sid in (("alpha3", "a3"), ("beta2", "b2"), ("gamma7", "c7")):
        assert [h.source_id for h in cf.search(uri, word, mode="fts")] == [sid]


def test_fts_auto_indexes_only_datasets_meant_for_search(tmp_path: Path) -> None:
    """``fts: auto`` (the default): a plain sync builds no full-text index (a bulk import would
    pay ~3x for it); a run that chunks builds it; once built it is kept by plain syncs too."""
    plain = str(tmp_path / "plain.lance")
    sync(plain, [doc("a", "Alpha", "apples")], index={"fts": "auto"})
    assert _indexes(plain) == {}

    @cf.source(source_type="notes")
    async def notes() -> Any:
        yield doc("b", "Beta", "bananas and cherries")

    searchable = str(tmp_path / "kb.lance")
    sink = LanceSink(searchable, index={"fts": "auto", "refresh_seconds": 0})
    anyio.run(lambda: (notes(name="notes") | T.chunk(max_tokens=64, overlap=8) | sink).run())
    assert {"text_content_fts", "title_fts"} <= set(_indexes(searchable))
    # a later plain sync (no chunk stage) keeps the index it finds
    sync(searchable, [doc("c", "Gamma", "grapes")], index={"fts": "auto", "refresh_seconds": 0})
    assert _unindexed(searchable, "text_content_fts") == 0


def test_a_plain_sync_with_the_defaults_runs_no_index_upkeep(tmp_path: Path) -> None:
    """``"auto"`` on a dataset not meant for search: no refresh thread, no index work at all."""
    uri = str(tmp_path / "plain.lance")
    sink = LanceSink(uri, batch_rows=1)
    anyio.run(lambda: (_notes_source() | sink).run())
    assert not sink.indexes.active and sink.indexes.refreshes == 0
    # a dataset that holds search indexes keeps them up to date on a plain sync
    sync(uri, [doc("x", "X", "xylophone")], index={"fts": True, "refresh_seconds": 0})
    again = LanceSink(uri)
    anyio.run(lambda: (_notes_source() | again).run())
    assert again.indexes.active and again.indexes.refreshes >= 1


def _notes_source() -> Any:
    @cf.source(source_type="notes")
    async def notes() -> Any:
        yield doc("a", "Alpha", "apples")
        yield doc("b", "Beta", "bananas")

    return notes(name="notes")
