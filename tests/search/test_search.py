"""``cfstream.search``: full text, vector and hybrid search over a synced dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import lance
import pytest
from search_support import HashEmbedder, chunked, doc, sync, with_vectors

import cfstream as cf
from cfstream.errors import SearchError
from cfstream.records import record_uuid
from cfstream.search import SearchHit, run_search
from cfstream.sinks import LanceSink

NOTES = [
    ("pasta", "Weeknight pasta", "Boil the spaghetti, fry garlic in olive oil, toss with chili."),
    ("bread", "Sourdough loaf", "Feed the starter the night before; bake the loaf in a hot oven."),
    ("bikes", "Fixing a flat tyre", "Remove the wheel, find the puncture, patch the inner tube."),
    ("tax", "Filing taxes", "Gather receipts and invoices before the filing deadline in April."),
    ("garden", "Tomato garden", "Water tomatoes at the root; stake them when they grow tall."),
]


def _notes() -> list[cf.Document]:
    return [doc(sid, title, text) for sid, title, text in NOTES]


@pytest.fixture
def plain(tmp_path: Path) -> str:
    """A default dataset (no vector column), no indexes."""
    uri = str(tmp_path / "plain.lance")
    sync(uri, _notes(), index=False)
    return uri


@pytest.fixture
def embedded(tmp_path: Path) -> tuple[str, HashEmbedder]:
    """A dataset whose rows carry HashEmbedder vectors, with the sink's default indexes."""
    emb = HashEmbedder()
    uri = str(tmp_path / "vec.lance")
    sync(uri, with_vectors(_notes(), emb), embed_dim=emb.dim)
    return uri, emb


def test_fts_works_without_any_index_and_fills_every_field(plain: str) -> None:
    hits = cf.search(plain, "puncture tube", mode="fts")
    assert [h.source_id for h in hits] == ["bikes"]
    hit = hits[0]
    assert isinstance(hit, SearchHit)
    assert hit.uuid == record_uuid("notes", "bikes") == hit.parent_uuid
    assert hit.title == "Fixing a flat tyre"
    assert hit.source_type == "notes"
    assert hit.source_url == "https://notes.example/bikes"
    assert hit.text is not None and "inner tube" in hit.text
    assert hit.score > 0


def test_fts_searches_titles_too(embedded: tuple[str, HashEmbedder]) -> None:
    uri, _ = embedded
    assert [h.source_id for h in cf.search(uri, "sourdough", mode="fts")] == ["bread"]


def test_without_an_index_words_match_exactly_and_a_note_says_so(plain: str) -> None:
    res = run_search(plain, "sourdough", mode="fts")
    assert res.hits == []  # Lance's flat scan is case-sensitive: the title says "Sourdough"
    assert "no full-text index on text_content, title" in res.notes[0]
    assert [h.source_id for h in cf.search(plain, "Sourdough", mode="fts")] == ["bread"]


def test_hybrid_without_vectors_falls_back_to_fts_with_a_note(plain: str) -> None:
    res = run_search(plain, "garlic spaghetti")
    assert res.mode == "fts"
    assert [h.source_id for h in res.hits] == ["pasta"]
    assert res.notes and "no vectors" in res.notes[0]
    assert [h.source_id for h in cf.search(plain, "garlic spaghetti")] == ["pasta"]


def test_vector_mode_without_vectors_says_what_to_do(plain: str) -> None:
    with pytest.raises(SearchError, match="no vectors .*embed stage.*'fts'"):
        cf.search(plain, "garlic", mode="vector", embedder=HashEmbedder())


def test_vector_and_hybrid_rank_the_closest_document_first(
    embedded: tuple[str, HashEmbedder],
) -> None:
    uri, emb = embedded
    # no word of the query in the text: only the vector finds it ("tomatoes stake grow")
    vec = cf.search(uri, "stake the tomatoes as they grow", mode="vector", embedder=emb)
    assert vec[0].source_id == "garden"
    assert vec[0].score > vec[-1].score
    hybrid = cf.search(uri, "receipts deadline", embedder=emb, k=3)
    assert hybrid[0].source_id == "tax"
    assert len(hybrid) == 3 and len({h.parent_uuid for h in hybrid}) == 3
    # fused scores: a document first in both lists scores 2/61
    assert hybrid[0].score == pytest.approx(2 / 61)


def test_hybrid_fuses_the_two_rankings(embedded: tuple[str, HashEmbedder]) -> None:
    uri, emb = embedded
    fts = [h.parent_uuid for h in cf.search(uri, "loaf oven wheel", mode="fts", embedder=emb)]
    vec = [h.parent_uuid for h in cf.search(uri, "loaf oven wheel", mode="vector", embedder=emb)]
    hybrid = cf.search(uri, "loaf oven wheel", embedder=emb)
    expected: dict[str, float] = {}
    for ranked in (fts, vec):
        for i, p in enumerate(ranked):
            expected[p] = expected.get(p, 0.0) + 1 / (61 + i)
    assert {h.parent_uuid: h.score for h in hybrid} == pytest.approx(expected)
    assert [h.score for h in hybrid] == sorted((h.score for h in hybrid), reverse=True)


def test_one_hit_per_document_with_the_matching_chunk(tmp_path: Path) -> None:
    uri = str(tmp_path / "chunks.lance")
    emb = HashEmbedder()
    parent = doc(
        "guide",
        "Travel guide",
        "Trains in Japan run on time. Ramen shops open late. Trains need reservations.",
    )
    rows = chunked(
        parent,
        ["Trains in Japan run on time.", "Ramen shops open late.", "Trains need reservations."],
    )
    for row in rows[:-1]:  # chunks carry vectors, the parent does not (the contract)
        with_vectors([row], emb)
    other = with_vectors([doc("misc", "Misc", "Buses and trains and ferries.")], emb)
    sync(uri, [*rows, *other], embed_dim=emb.dim)
    for mode in ("fts", "vector", "hybrid"):
        hits = cf.search(uri, "trains", mode=mode, embedder=emb)  # type: ignore[arg-type]
        guide = [h for h in hits if h.parent_uuid == parent.uuid]
        assert len(guide) == 1, mode
        assert len(hits) == len({h.parent_uuid for h in hits}) == 2, mode
        assert guide[0].source_id.startswith("guide#chunk-"), mode
        assert guide[0].text is not None and "rains" in guide[0].text, mode
    ramen = cf.search(uri, "ramen", mode="fts")
    assert [(h.source_id, h.text) for h in ramen] == [("guide#chunk-1", "Ramen shops open late.")]


def test_where_filters_before_ranking_and_a_bad_filter_is_explained(plain: str) -> None:
    hits = cf.search(plain, "the", mode="fts", where="source_id IN ('bread', 'tax')", k=10)
    assert {h.source_id for h in hits} <= {"bread", "tax"}
    with pytest.raises(SearchError, match="Check the filter 'no_such_column = 1'"):
        cf.search(plain, "bread", mode="fts", where="no_such_column = 1")


def test_k_caps_the_hits_and_bad_arguments_are_refused(plain: str) -> None:
    assert len(cf.search(plain, "the", mode="fts", k=2)) == 2
    with pytest.raises(SearchError, match="empty"):
        cf.search(plain, "  ")
    with pytest.raises(SearchError, match="mode must be"):
        cf.search(plain, "bread", mode="semantic")  # type: ignore[arg-type]
    with pytest.raises(SearchError, match="k must be"):
        cf.search(plain, "bread", k=0)


def test_a_missing_dataset_says_to_sync_first(tmp_path: Path) -> None:
    with pytest.raises(SearchError, match="cfstream sync"):
        cf.search(str(tmp_path / "nothing.lance"), "x")


def test_an_embedder_of_another_width_is_refused(embedded: tuple[str, HashEmbedder]) -> None:
    uri, _ = embedded
    with pytest.raises(SearchError, match="8-wide vectors but .* stores 64-wide"):
        cf.search(uri, "bread", mode="vector", embedder=HashEmbedder(8))


def test_without_an_embedder_vector_mode_asks_for_one(
    embedded: tuple[str, HashEmbedder],
) -> None:
    uri, _ = embedded
    with pytest.raises(SearchError, match="embedder="):
        cf.search(uri, "bread", mode="vector")
    res = run_search(uri, "sourdough")  # hybrid: full text, with the reason
    assert res.mode == "fts" and "embedder=" in res.notes[0]
    assert [h.source_id for h in res.hits] == ["bread"]


async def test_search_from_inside_an_event_loop(embedded: tuple[str, HashEmbedder]) -> None:
    uri, emb = embedded
    hits = cf.search(uri, "patch the puncture", mode="vector", embedder=emb)
    assert hits[0].source_id == "bikes" and emb.calls == 1


def test_zero_vectors_are_never_vector_hits(tmp_path: Path) -> None:
    uri = str(tmp_path / "compat.lance")
    emb = HashEmbedder()
    docs = [*with_vectors(_notes()[:2], emb), *_notes()[2:]]  # the rest get zero vectors
    sync(uri, docs, embed_dim=emb.dim, contextframe_compat=True)
    hits = cf.search(uri, "tyre puncture", mode="vector", embedder=emb, k=10)
    assert {h.source_id for h in hits} == {"pasta", "bread"}


def test_source_keeps_only_that_sources_rows(tmp_path: Path) -> None:
    uri = str(tmp_path / "two.lance")
    for name in ("work", "home"):
        sync(
            uri,
            [cf.Document(source_id="todo", title=f"{name} todo", text_content="buy milk")],
            name=name,
            source_type="files",
        )
    both = cf.search(uri, "milk", mode="fts")
    assert len(both) == 2
    only = run_search(uri, "milk", mode="fts", source=("files", "home")).hits
    assert [h.title for h in only] == ["home todo"]
    assert only[0].uuid == record_uuid("files", "todo", source_name="home")


HOSTILE = [
    '"unclosed',
    "AND OR NOT (",
    "title:apples",
    "*",
    "pasta\udcff",
    "🍝 pasta",
    "x" * 20_000,
    "'; DROP TABLE notes; --",
    "pasta\x00garlic",
    "+pasta -garlic",
]


@pytest.mark.parametrize("query", HOSTILE)
def test_hostile_queries_never_raise(embedded: tuple[str, HashEmbedder], query: str) -> None:
    uri, emb = embedded
    for mode in ("fts", "vector", "hybrid"):
        res = run_search(uri, query, mode=mode, embedder=emb, k=3)  # type: ignore[arg-type]
        assert len(res.hits) <= 3
        assert all(isinstance(h, SearchHit) for h in res.hits)
    assert lance.dataset(uri).count_rows() == len(NOTES)  # a query never writes


def test_a_query_the_embedder_cannot_embed_has_no_vector_hits(
    embedded: tuple[str, HashEmbedder],
) -> None:
    uri, emb = embedded
    res = run_search(uri, "*", mode="vector", embedder=emb)  # no word: a zero vector
    assert res.hits == [] and "nothing to embed" in res.notes[0]
    res = run_search(uri, "* sourdough", mode="hybrid", embedder=HashEmbedder(64))
    assert [h.source_id for h in res.hits][:1] == ["bread"]
    res = run_search(uri, "*", embedder=emb)
    assert res.mode == "fts" and res.hits == []


def test_the_embedder_the_dataset_records_embeds_the_query(tmp_path: Path) -> None:
    """A dataset embedded by the embed stage records its embedder: vector search rebuilds it (the
    offline local one here) to embed the query; a custom embedder's record cannot be rebuilt."""
    from cfstream import transforms as T
    from cfstream.embed import LocalEmbedder

    @cf.source(source_type="notes")
    async def notes() -> Any:
        for d in _notes():
            yield d

    uri = str(tmp_path / "local.lance")
    anyio.run(lambda: (notes(name="notes") | T.embed(LocalEmbedder()) | LanceSink(uri)).run())
    hits = cf.search(uri, "fix a flat bicycle tyre", mode="vector")
    assert hits[0].source_id == "bikes"

    custom = str(tmp_path / "custom.lance")
    anyio.run(lambda: (notes(name="notes") | T.embed(HashEmbedder()) | LanceSink(custom)).run())
    with pytest.raises(SearchError, match="pass embedder="):
        cf.search(custom, "bread", mode="vector")
    assert cf.search(custom, "patch the puncture", mode="vector", embedder=HashEmbedder())
