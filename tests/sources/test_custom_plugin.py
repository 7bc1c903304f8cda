"""Custom sources: the documented @cf.source example and a third-party plugin found by entry point."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import lance
import pytest
from aiohttp import web

import cfstream as cf
from cfstream.errors import ConfigError
from cfstream.sinks import LanceSink
from cfstream.sources import available_sources, load_source_class
from cfstream.testing.server import FakeAPI

REPO = Path(__file__).resolve().parents[2]


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "cfstream_example_custom_source", REPO / "examples" / "custom_source.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class NotesAPI:
    """A notes API: ``updated_since`` filter (inclusive), oldest first, 10 per page at most."""

    def __init__(self) -> None:
        self.notes = {
            i: {
                "id": i,
                "title": f"Note {i}",
                "body": f"Body of note {i}.",
                "author": "ada",
                "tags": ["demo"],
                "updated_at": f"2025-01-{i:02d}T00:00:00Z",
            }
            for i in range(1, 26)
        }
        self.auth: list[str | None] = []

    def __call__(self, request: web.Request) -> Any:
        self.auth.append(request.headers.get("Authorization"))
        since = request.query.get("updated_since")
        offset = int(request.query.get("cursor", "0"))
        limit = min(int(request.query.get("limit", "10")), 10)
        items = sorted(
            (n for n in self.notes.values() if since is None or n["updated_at"] >= since),
            key=lambda n: n["updated_at"],
        )
        page = items[offset : offset + limit]
        more = offset + limit < len(items)
        return {"notes": page, "next_cursor": str(offset + limit) if more else None}


async def test_custom_source_example_syncs_and_resumes(tmp_path: Path) -> None:
    example = load_example()
    api = NotesAPI()
    ds = tmp_path / "notes.lance"
    async with FakeAPI() as fake:
        fake.route("GET", "/notes", api)
        report = await (example.notes_api(fake.url, cf.Secret("s3cret")) | LanceSink(str(ds))).run()
        assert report.sources["notes_api"].fetched == 25
        assert report.sources["notes_api"].checkpoints == 3  # one per page of 10
        assert set(api.auth) == {"Bearer s3cret"}
        assert lance.dataset(str(ds)).count_rows() == 25

        api.notes[3].update(title="Note 3, edited", updated_at="2025-02-01T00:00:00Z")
        api.notes[5].update(deleted=True, updated_at="2025-02-02T00:00:00Z")
        requests_before = len(api.auth)
        report = await (example.notes_api(fake.url, cf.Secret("s3cret")) | LanceSink(str(ds))).run()
    stats = report.sources["notes_api"]
    assert len(api.auth) - requests_before == 1  # one page: only what changed since the cursor
    assert stats.fetched == 2  # note 25 (the inclusive boundary) and the edited note 3
    assert stats.tombstones == 1
    table = lance.dataset(str(ds)).to_table(columns=["source_id", "title"]).to_pylist()
    titles = {r["source_id"]: r["title"] for r in table}
    assert len(titles) == 24 and "5" not in titles
    assert titles["3"] == "Note 3, edited"


PLUGIN = textwrap.dedent(
    '''
    """A third-party cfstream connector, packaged on its own."""
    from collections.abc import AsyncIterator, Mapping
    from typing import Any, ClassVar

    import cfstream as cf
    from cfstream.sources.base import SourceConfig


    class MyConfig(SourceConfig):
        count: int = 3


    class MySource(cf.Source):
        source_type: ClassVar[str] = "myplug"
        config_model: ClassVar[type[SourceConfig] | None] = MyConfig

        def __init__(self, count: int = 3, *, name: str | None = None) -> None:
            super().__init__(name=name)
            self.count = count

        @classmethod
        def from_config(cls, options: Mapping[str, Any], *, name: str | None = None) -> cf.Source:
            return cls(name=name, **MyConfig.model_validate(dict(options)).model_dump())

        async def read(self, partition, cursor, ctx) -> AsyncIterator[Any]:
            start = (cursor or {}).get("next", 0)
            yield [cf.Document(source_id=f"p{i}", title=f"Plugin doc {i}") for i in range(start, self.count)]
            yield cf.Checkpoint({"next": self.count})
    '''
)


@pytest.fixture
def installed_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Install ``myplug`` the way pip lays it out: the module plus a .dist-info with entry points."""
    site = tmp_path / "site-packages"
    site.mkdir()
    (site / "myplug.py").write_text(PLUGIN)
    dist = site / "myplug-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myplug\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text("[cfstream.sources]\nmyplug = myplug:MySource\n")
    monkeypatch.syspath_prepend(str(site))  # also invalidates the import caches
    yield site
    sys.modules.pop("myplug", None)


def test_plugin_is_found_by_type_name_and_runs(installed_plugin: Path, tmp_path: Path) -> None:
    assert available_sources()["myplug"] == "myplug:MySource"
    cls = load_source_class("myplug")
    assert cls.__module__ == "myplug" and cls.source_type == "myplug"
    ds = tmp_path / "kb.lance"
    report = cf.run(cls.from_config({"count": 4}, name="plug") | LanceSink(str(ds)))
    assert report.sources["plug"].fetched == 4
    table = lance.dataset(str(ds)).to_table(columns=["source_id", "source_type"]).to_pylist()
    assert sorted(r["source_id"] for r in table) == ["p0", "p1", "p2", "p3"]
    assert {r["source_type"] for r in table} == {"myplug"}
    report = cf.run(cls.from_config({"count": 6}, name="plug") | LanceSink(str(ds)))
    assert report.sources["plug"].fetched == 2  # resumed from the saved cursor


def test_unknown_type_lists_the_known_ones() -> None:
    assert "myplug" not in available_sources()  # the plugin fixture cleaned up after itself
    with pytest.raises(ConfigError, match="unknown source type 'nope'.*obsidian"):
        load_source_class("nope")
