"""The Ray engine: one commit for a new dataset, upserts on re-sync, retried tasks never duplicate.

Uses a local Ray (num_cpus=2) and a fake API on 127.0.0.1 with 8 partitions of 2,500 documents.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import lance
import pytest

import cfstream as cf
from cfstream import transforms as T
from cfstream.contract.context import SourceContext
from cfstream.contract.deadletter import read_dead_letters
from cfstream.engine.lifecycle import SCOPE_CHANGED, success_summary
from cfstream.errors import DatasetBusyError
from cfstream.http import BodyCursorPaginator
from cfstream.secrets import Secret
from cfstream.sinks import LanceSink
from cfstream.sources.base import Source, SourceOutput
from cfstream.testing import FakeAPI

ray = pytest.importorskip("ray")
from cfstream.distributed.ray import run_ray  # noqa: E402

pytestmark = [
    pytest.mark.ray,
    pytest.mark.timeout(300),
    # Ray starts its worker processes with fork(); lance warns about that in the parent
    pytest.mark.filterwarnings("ignore:lance is not fork-safe:UserWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

PARTS = 8
PER_PART = 2_500


class ChannelSource(Source):
    """8 channels of a fake API, cursor-paged, with an optional one-time crash in one channel."""

    source_type = "chan"
    uses_http = True

    def __init__(self, base_url: str, crash_marker: str | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.base_url = base_url
        self.crash_marker = crash_marker

    async def partitions(self, ctx: SourceContext) -> Sequence[str]:
        return [f"c{i}" for i in range(PARTS)]

    async def read(
        self, partition: str, cursor: Mapping[str, Any] | None, ctx: SourceContext
    ) -> AsyncIterator[SourceOutput]:
        svc = ctx.http.service("chan", base_url=self.base_url)
        pages = 0
        async for page in svc.paginate(
            BodyCursorPaginator.notion(), f"/channels/{partition}/docs", params={"page_size": 100}
        ):
            yield [
                cf.Document(
                    source_id=item["id"],
                    title=item["title"],
                    text_content=item["body"],
                    updated_at=item["updated"],
                    collection=partition,
                )
                for item in page.data["results"]
            ]
            pages += 1
            if self.crash_marker and partition == "c3" and pages == 12:
                marker = anyio.Path(self.crash_marker)
                if not await marker.exists():
                    await marker.write_text("crashed once")
                    raise RuntimeError("injected worker crash in c3")
            yield cf.Checkpoint({"pages": pages})


def serve(api: FakeAPI, version: dict[str, int]) -> None:
    for i in range(PARTS):
        items = [
            {
                "id": f"c{i}-{k:05d}",
                "title": f"Message {k} in channel {i}",
                "body": f"body {k} of channel {i} v{version.get(f'c{i}-{k:05d}', 0)} " * 10,
                "updated": "2024-02-02T00:00:00Z",
            }
            for k in range(PER_PART)
        ]
        api.paginate_cursor(f"/channels/c{i}/docs", items, style="notion", page_size=100)


def snapshot(path: Path) -> list[tuple[str, str]]:
    t = lance.dataset(str(path)).to_table(columns=["uuid", "content_hash"])
    rows = list(
        zip(t.column("uuid").to_pylist(), t.column("content_hash").to_pylist(), strict=True)
    )
    assert len({u for u, _ in rows}) == len(rows), "duplicate uuids"
    return sorted(rows)


@pytest.fixture(scope="module")
def local_ray() -> Any:
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield ray
    ray.shutdown()


async def test_ray_import_equals_local_and_survives_a_crash(local_ray: Any, tmp_path: Path) -> None:
    version: dict[str, int] = {}
    async with FakeAPI() as api:
        serve(api, version)
        ray_ds = tmp_path / "ray.lance"
        local_ds = tmp_path / "local.lance"
        marker = tmp_path / "crashed"

        def sink(p: Path) -> LanceSink:
            return LanceSink(str(p), batch_rows=1_000)

        report = await anyio.to_thread.run_sync(
            lambda: run_ray(
                ChannelSource(api.url, crash_marker=str(marker)) | T.validate() | sink(ray_ds)
            )
        )
        assert marker.exists(), "the injected crash did not happen"
        assert report.sink.inserted == PARTS * PER_PART
        ds = lance.dataset(str(ray_ds))
        assert ds.version == 1, "a new dataset is written in one commit"
        await (ChannelSource(api.url) | T.validate() | sink(local_ds)).run()
        assert snapshot(ray_ds) == snapshot(local_ds)
        assert len(snapshot(ray_ds)) == PARTS * PER_PART

        # change 2% of documents and re-sync both ways
        for i in range(PARTS):
            for k in range(0, PER_PART, 50):
                version[f"c{i}-{k:05d}"] = 1
        api.clear()
        serve(api, version)
        report2 = await anyio.to_thread.run_sync(
            lambda: run_ray(ChannelSource(api.url) | T.validate() | sink(ray_ds), full_refresh=True)
        )
        assert report2.sink.updated == PARTS * (PER_PART // 50)
        assert report2.sink.inserted == 0
        await (ChannelSource(api.url) | T.validate() | sink(local_ds)).run(full_refresh=True)
        assert snapshot(ray_ds) == snapshot(local_ds)
        state = cf.StateStore.for_dataset(str(ray_ds))
        assert state.cursors("chan")["c0"] == {"pages": PER_PART // 100}


TOKEN = "tok-RAYWORKER-3e8b1f6a9c0d4e27"
LEAKY_DOCS = 40


class LeakySource(Source):
    """Partitions whose worker-side log, dead letters and error would all hold the token.

    ``p0`` and ``p1`` yield documents of which every 10th is invalid (no title; its text holds
    the token) and dead-letter one raw item themselves (the token in the error and payload);
    ``p1`` then crashes once after them; ``bad`` always fails with the token in its error.
    """

    source_type = "leaky"

    def __init__(self, token: Secret, crash_marker: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.token = token
        self.crash_marker = crash_marker

    async def partitions(self, ctx: SourceContext) -> Sequence[str]:
        return ["p0", "p1", "bad"]

    async def read(
        self, partition: str, cursor: Mapping[str, Any] | None, ctx: SourceContext
    ) -> AsyncIterator[SourceOutput]:
        value = self.token.get_secret_value()
        ctx.logger.warning("partition %s: the service saw %s", partition, value)
        if partition == "bad":
            raise RuntimeError(f"the service refused {value}")
        yield [
            cf.Document(source_id=f"{partition}-{k}", title=f"doc {k}", text_content="fine")
            if k % 10
            else cf.Document(source_id=f"{partition}-{k}", title="", text_content=f"sent {value}")
            for k in range(LEAKY_DOCS)
        ]
        ctx.dead_letter(
            f"an item signed with {value} could not be mapped",
            {"signature": value},
            source_id=f"{partition}-raw",
        )
        marker = anyio.Path(self.crash_marker)
        if partition == "p1" and not await marker.exists():
            await marker.write_text("crashed once")
            raise RuntimeError("injected crash after the dead letters")


def _files_containing(root: Path, needle: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_ray_dead_letters_are_written_once_and_worker_secrets_redacted(
    local_ray: Any, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Each dead letter of a finished task reaches the run's file once (a crashed attempt's
    are dropped; its retry writes them again), counted as in the report; the token the workers
    unpickled with the source shows in no dead letter, report, error or worker log."""
    ds = tmp_path / "leaky.lance"
    source = LeakySource(Secret(TOKEN), str(tmp_path / "crashed"))
    report = run_ray(source | T.validate() | LanceSink(str(ds)), max_retries=1)

    assert (tmp_path / "crashed").exists(), "the injected crash did not happen"
    letters = read_dead_letters(ds / "_cfstream" / "dead-letters.jsonl")
    expected = sorted(
        [f"{p}-{k}" for p in ("p0", "p1") for k in range(0, LEAKY_DOCS, 10)] + ["p0-raw", "p1-raw"]
    )
    assert sorted(letter["source_id"] for letter in letters) == expected
    assert report.dead_lettered == len(letters)
    assert report.dead_letter_path == str(ds / "_cfstream" / "dead-letters.jsonl")
    assert {letter["stage"] for letter in letters} == {"validate", "source"}
    assert all("***" in letter["error"] for letter in letters if letter["stage"] == "source")
    assert lance.dataset(str(ds)).count_rows() == 2 * (LEAKY_DOCS - LEAKY_DOCS // 10)
    assert report.error is not None and "the service refused ***" in report.error

    assert TOKEN not in json.dumps(report.to_dict()) + str(report)
    out, err = capfd.readouterr()  # Ray prints the retried tasks' tracebacks in the driver
    assert TOKEN not in out + err
    assert _files_containing(ds, TOKEN.encode()) == []
    # the workers' stderr (their log lines, Ray's record of the failed tasks) is in Ray's logs
    session = Path(ray.init(ignore_reinit_error=True).address_info["session_dir"])
    logs = session / "logs"
    worker_logs = "".join(p.read_text(errors="replace") for p in logs.glob("worker-*"))
    assert "partition bad: the service saw ***" in worker_logs
    assert _files_containing(logs, TOKEN.encode()) == []


async def test_ray_saves_every_item_change_of_a_folder_source(
    local_ray: Any, tmp_path: Path
) -> None:
    """A partition's checkpoints reach the driver as one, carrying every item change of the task;
    workers read the item store read-only, so a second Ray run of an unchanged folder reads
    nothing, and the local runner agrees."""
    root = tmp_path / "docs"
    for top in ("a", "b"):
        for i in range(150):  # read 64 files a batch: checkpoints after batches 1 and 2
            p = root / top / f"s{i // 50}" / f"n{i}.md"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(f"# {top} {i}\n")
    ds = tmp_path / "kb.lance"

    def run(**kw: Any) -> cf.RunReport:
        src = cf.sources.FilesSource(root, checkpoint_every=50)
        return run_ray(src | LanceSink(str(ds)), **kw)

    first = await anyio.to_thread.run_sync(run)
    assert first.sources["files"].fetched == 300 + 9  # files, "/", a/, b/ and 3 subfolders each
    assert first.sources["files"].checkpoints == 2 * 3 + 1
    store = cf.StateStore.for_dataset(str(ds))
    assert store.items.count("files") == 309
    (root / "a" / "s0" / "n1.md").write_text("# changed\n")
    (root / "b" / "s2" / "n125.md").unlink()
    second = await anyio.to_thread.run_sync(run)
    assert second.sources["files"].fetched == 1
    assert second.sources["files"].tombstones == 1
    local = await (cf.sources.FilesSource(root) | LanceSink(str(ds))).run()
    assert local.sources["files"].fetched == 0 and local.sources["files"].tombstones == 0
    assert store.items.count("files") == 308


class PagedSource(Source):
    """Two partitions of 6 pages of 10 documents (100 characters each); one document a partition
    has a wrong-typed field (``tags`` a string), and no validate stage runs before the sink."""

    source_type = "paged"

    async def partitions(self, ctx: SourceContext) -> Sequence[str]:
        return ["p0", "p1"]

    async def read(
        self, partition: str, cursor: Mapping[str, Any] | None, ctx: SourceContext
    ) -> AsyncIterator[SourceOutput]:
        for page in range(6):
            yield [
                cf.Document(
                    source_id=f"{partition}-{page}-{i}",
                    title="t",
                    text_content="x" * 100,
                    tags="wrong" if (page, i) == (2, 3) else ["ok"],  # type: ignore[arg-type]
                )
                for i in range(10)
            ]


def test_ray_tasks_batch_like_the_lance_sink_and_dead_letter_what_they_cannot_store(
    local_ray: Any, tmp_path: Path
) -> None:
    """The workers cut batches at the sink's batch_bytes (not only batch_rows): 2,000 bytes is
    two pages, so each partition writes three fragments; the document that cannot be converted
    is dead-lettered, with the field at fault, and its batch's other documents are stored."""
    ds = tmp_path / "paged.lance"
    sink = LanceSink(str(ds), batch_rows=10_000, batch_bytes=2_000, max_latency=60)
    report = run_ray(PagedSource() | sink)
    assert report.error is None
    dataset = lance.dataset(str(ds))
    assert dataset.count_rows() == 2 * 60 - 2
    assert len(dataset.get_fragments()) == 2 * 3
    letters = read_dead_letters(ds / "_cfstream" / "dead-letters.jsonl")
    assert sorted(letter["source_id"] for letter in letters) == ["p0-2-3", "p1-2-3"]
    assert all("tags" in letter["error"] for letter in letters)
    assert report.dead_lettered == 2


class Tracked(Source):
    """Two partitions of five documents, a tombstone and a checkpoint each; ``p1`` warns once.
    ``folder`` is the option its cursors belong to (its scope)."""

    source_type = "tracked"

    def __init__(self, folder: str = "a", **kw: Any) -> None:
        super().__init__(**kw)
        self.folder = folder

    def cursor_scope(self) -> Mapping[str, Any]:
        return {"folder": self.folder}

    async def partitions(self, ctx: SourceContext) -> Sequence[str]:
        return ["p0", "p1"]

    async def read(
        self, partition: str, cursor: Mapping[str, Any] | None, ctx: SourceContext
    ) -> AsyncIterator[SourceOutput]:
        start = int((cursor or {}).get("next", 0))
        yield [
            cf.Document(source_id=f"{partition}-{i}", title=f"doc {i}", text_content=self.folder)
            for i in range(start, start + 5)
        ]
        yield cf.Tombstone(f"{partition}-gone", "tracked", "tracked")
        if partition == "p1":
            ctx.warn("channel p1: one attachment skipped")
        yield cf.Checkpoint({"next": start + 5})


def _comparable(report: cf.RunReport) -> dict[str, Any]:
    """The report's per-source and per-stage counts, without times."""
    out = report.to_dict()
    for stats in out["sources"].values():
        stats.pop("last_fetch")
    return {"sources": out["sources"], "stages": out["stages"]}


def _saved(ds: Path, name: str) -> dict[str, Any]:
    info = dict(cf.StateStore.for_dataset(str(ds)).source_info(name))
    assert info.pop("last_success") is not None
    assert info.pop("last_checkpoint") is not None
    return info


def test_ray_and_the_local_runner_refuse_a_busy_source_alike(
    local_ray: Any, tmp_path: Path
) -> None:
    """Another process syncing a source: both engines stop with the same error before they open
    the dataset, and leave the lock to its holder."""
    errors = []
    for engine, ds in (("local", tmp_path / "local.lance"), ("ray", tmp_path / "ray.lance")):
        holder = cf.StateStore.for_dataset(str(ds))
        holder.acquire_source("tracked")
        pipeline = Tracked() | LanceSink(str(ds))
        with pytest.raises(DatasetBusyError) as caught:
            cf.run(pipeline) if engine == "local" else run_ray(pipeline)
        errors.append(str(caught.value))
        assert not (ds / "_versions").exists(), engine
        assert "last_success" not in holder.source_info("tracked"), engine
        holder.release_all()
    assert errors[0] == errors[1]
    assert "'tracked'" in errors[0]


def test_ray_and_the_local_runner_keep_the_same_state_and_counts(
    local_ray: Any, tmp_path: Path
) -> None:
    """The same source through both engines: the same per-source and per-stage counts (the
    driver adds its tasks' stats), the same cursors, scope and success record in the state
    (Ray's summary says ``engine: ray``), and after a change of scope the same warning and a
    read from the start."""
    local_ds, ray_ds = tmp_path / "local.lance", tmp_path / "ray.lance"

    def both(folder: str) -> tuple[cf.RunReport, cf.RunReport]:
        local = cf.run(Tracked(folder) | T.validate() | LanceSink(str(local_ds)))
        on_ray = run_ray(Tracked(folder) | T.validate() | LanceSink(str(ray_ds)))
        return local, on_ray

    for folder, first in (("a", 0), ("a", 5), ("b", 0)):
        local, on_ray = both(folder)
        assert local.error is None and on_ray.error is None
        assert _comparable(on_ray) == _comparable(local)
        stats = local.sources["tracked"]
        assert (stats.fetched, stats.tombstones, stats.checkpoints) == (10, 2, 2)
        assert (stats.partitions, stats.partitions_done) == (2, 2)
        assert "channel p1: one attachment skipped" in stats.warnings
        assert (SCOPE_CHANGED in stats.warnings) == (folder == "b")
        mine, theirs = _saved(local_ds, "tracked"), _saved(ray_ds, "tracked")
        assert theirs["last_summary"].pop("engine") == "ray"
        assert theirs == mine
        assert mine["last_summary"] == success_summary(stats)
        assert mine["partitions"] == {"p0": {"next": first + 5}, "p1": {"next": first + 5}}
        assert lance.dataset(str(ray_ds)).count_rows() == lance.dataset(str(local_ds)).count_rows()
