"""ObsidianSource against real vaults on disk, written to real Lance datasets."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import lance
import orjson
import pytest

import cfstream as cf
from cfstream.contract.state import StateStore
from cfstream.errors import ConfigError, SourceError
from cfstream.records import record_uuid
from cfstream.sinks import LanceSink
from cfstream.sources import load_source_class
from cfstream.sources._files import compile_glob
from cfstream.sources.obsidian import ObsidianSource, split_frontmatter

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_VAULT = REPO / "cfstream" / "demo_data" / "vault"
SHARED_VAULT = REPO.parent / "shared" / "fixtures" / "obsidian-vault"

NOTES = {
    "Home.md",
    "Baking/Country loaf.md",
    "Baking/Sourdough starter.md",
    "Baking/Techniques/Flour notes.md",
    "Baking/Techniques/Stretch and fold.md",
    "Daily/2024-06-14.md",
    "Projects/Kitchen renovation.md",
    "Projects/Garden/Compost.md",
    "Projects/Garden/Notes.md",
    "Projects/Garden/Tomato trials.md",
    "Reading/Notes.md",
    "Reading/Reading list.md",
    "Reading/Salt Fat Acid Heat.md",
    "Reading/The Art of Fermentation.md",
}
HEADERS = {
    "/",
    "Baking/",
    "Baking/Techniques/",
    "Daily/",
    "Projects/",
    "Projects/Garden/",
    "Reading/",
}


def uid(source_id: str) -> str:
    return record_uuid("obsidian", source_id)


def rows(dataset: Path) -> dict[str, dict[str, Any]]:
    table = lance.dataset(str(dataset)).to_table().to_pylist()
    out = {}
    for row in table:
        row["meta"] = {kv["key"]: kv["value"] for kv in row["custom_metadata"] or []}
        out[row["source_id"]] = row
    return out


def refs(row: dict[str, Any]) -> dict[str, str]:
    """Reference relationships as {target path: target uuid (or '' for a path-only target)}."""
    return {r["path"]: r["id"] or "" for r in row["relationships"] if r["type"] == "reference"}


def fingerprint(dataset: Path) -> list[tuple[str, str]]:
    table = lance.dataset(str(dataset)).to_table(columns=["uuid", "content_hash"])
    return sorted(zip(table["uuid"].to_pylist(), table["content_hash"].to_pylist(), strict=True))


@pytest.fixture
def vault(tmp_path: Path) -> Path:
    dest = tmp_path / "vault"
    shutil.copytree(EXAMPLE_VAULT, dest, symlinks=True)
    return dest


async def sync(vault: Path, dataset: Path, **options: Any) -> cf.RunReport:
    return await (ObsidianSource(vault) | LanceSink(str(dataset))).run(**options)


async def test_full_sync_maps_notes_links_and_folders(vault: Path, tmp_path: Path) -> None:
    ds = tmp_path / "kb.lance"
    report = await sync(vault, ds)
    stats = report.sources["obsidian"]
    assert stats.fetched == len(NOTES) + len(HEADERS)
    assert stats.failed == 0
    assert stats.skipped == 1  # attachments/bread-crumb.png
    got = rows(ds)
    # .obsidian/, .trash/ and the attachment are not records
    assert set(got) == NOTES | HEADERS

    home = got["Home.md"]
    assert home["title"] == "Kitchen and garden notebook"
    assert home["tags"] == ["index", "inbox"]
    assert home["created_at"] == "2024-01-05"
    assert home["updated_at"] == "2024-09-21"
    assert home["collection"] == "vault"
    assert home["source_url"] == "obsidian://open?vault=vault&file=Home.md"
    assert home["meta"]["obsidian_owner"] == "Mara"
    assert orjson.loads(home["meta"]["obsidian_aliases"]) == ["Start here"]
    assert orjson.loads(home["meta"]["obsidian_unresolved_links"]) == ["Weekly review"]
    assert refs(home) == {
        "Baking/Sourdough starter.md": uid("Baking/Sourdough starter.md"),
        "Baking/Country loaf.md": uid("Baking/Country loaf.md"),
        "Baking/Techniques/Stretch and fold.md": uid("Baking/Techniques/Stretch and fold.md"),
        "Projects/Garden/Tomato trials.md": uid("Projects/Garden/Tomato trials.md"),
        "Reading/Reading list.md": uid("Reading/Reading list.md"),
        "attachments/bread-crumb.png": "",  # an attachment: a path, not a record
    }
    by_title = {r["title"]: r for r in home["relationships"]}
    assert by_title["folding"]["id"] == uid("Baking/Techniques/Stretch and fold.md")  # [[x|alias]]
    assert by_title["tomato results"]["description"] == "link to #2024 results"  # [[x#h|alias]]
    assert by_title["bread-crumb.png"]["description"] == "embed"  # ![[attachment]]

    loaf = got["Baking/Country loaf.md"]
    assert loaf["author"] == "Mara" and loaf["contributors"] == ["Jonas"]
    assert loaf["created_at"] == "2024-03-10"
    assert loaf["tags"] == ["baking", "bread", "bread/everyday"]
    embeds = [r for r in loaf["relationships"] if r["description"] == "embed to #Feeding schedule"]
    assert [r["id"] for r in embeds] == [uid("Baking/Sourdough starter.md")]
    assert orjson.loads(loaf["meta"]["obsidian_unresolved_links"]) == ["Baker's percentages"]
    assert loaf["meta"]["obsidian_yield"] == "2 loaves"

    # same basename in two folders: the same folder wins, else the shortest path
    assert "Projects/Garden/Notes.md" in refs(got["Projects/Garden/Tomato trials.md"])
    daily = refs(got["Daily/2024-06-14.md"])
    assert "Reading/Notes.md" in daily and "Projects/Garden/Notes.md" not in daily
    assert "Projects/Garden/Compost.md" in daily  # a markdown link with a relative path
    assert "Baking/Sourdough starter.md" in refs(got["Baking/Techniques/Stretch and fold.md"])
    # code blocks are not parsed
    assert "not-a-tag" not in (got["Daily/2024-06-14.md"]["tags"] or [])
    assert "obsidian_unresolved_links" not in got["Daily/2024-06-14.md"]["meta"]
    # a "[[link]]" as a property value: author text in the column, link kept as unresolved
    katz = got["Reading/The Art of Fermentation.md"]
    assert katz["author"] == "Sandor Katz"
    assert orjson.loads(katz["meta"]["obsidian_unresolved_links"]) == ["Sandor Katz"]
    tomato = got["Projects/Garden/Tomato trials.md"]
    assert orjson.loads(tomato["meta"]["obsidian_varieties"]) == [
        "Sungold",
        "Black Krim",
        "San Marzano",
    ]

    # folders: headers, member_of, parent chain
    for sid in HEADERS:
        assert got[sid]["record_type"] == "collection_header"
    assert got["Baking/Techniques/"]["collection"] == "Baking/Techniques"
    parents = [r for r in got["Baking/Techniques/"]["relationships"] if r["type"] == "parent"]
    assert [r["id"] for r in parents] == [uid("Baking/")]
    for sid in NOTES:
        folder = sid.rpartition("/")[0]
        member = [r["id"] for r in got[sid]["relationships"] if r["type"] == "member_of"]
        assert member == [uid(f"{folder}/" if folder else "/")], sid
        assert got[sid]["collection"] == (folder or "vault")


async def test_symlinks_leaving_the_vault_are_ignored(vault: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.md").write_text("# Secret\n\nnot part of the vault\n")
    (vault / "leak.md").symlink_to(outside / "secret.md")
    (vault / "Leaked folder").symlink_to(outside, target_is_directory=True)
    (vault / "Reading" / "Shortcut.md").symlink_to(vault / "Home.md")  # inside: followed
    (vault / "Baking" / "loop").symlink_to(vault / "Baking", target_is_directory=True)
    ds = tmp_path / "kb.lance"
    await sync(vault, ds)
    got = rows(ds)
    assert "leak.md" not in got and "Leaked folder/secret.md" not in got
    assert not any("secret" in sid for sid in got)
    assert got["Reading/Shortcut.md"]["title"] == "Kitchen and garden notebook"
    assert not any(sid.startswith("Baking/loop") for sid in got)  # a link cycle is not walked


async def test_bad_notes_are_dead_lettered_and_the_sync_goes_on(
    vault: Path, tmp_path: Path
) -> None:
    (vault / "Daily" / "latin1.md").write_bytes("caf\xe9 notes\n".encode("latin-1"))
    (vault / "Daily" / "broken.md").write_text("---\ntags: [a, b\n---\nbody\n")
    (vault / "Daily" / "unclosed.md").write_text("---\ntitle: never closed\nbody\n")
    (vault / "Daily" / "listy.md").write_text("---\n- a\n- b\n---\nbody\n")
    ds = tmp_path / "kb.lance"
    report = await sync(vault, ds)
    assert report.sources["obsidian"].failed == 4
    assert report.dead_lettered == 4
    letters = [
        orjson.loads(line)
        for line in (ds / "_cfstream" / "dead-letters.jsonl").read_bytes().splitlines()
    ]
    reasons = {d["source_id"]: d["error"] for d in letters}
    assert "not valid UTF-8 (byte 0xe9 at offset 3)" in reasons["Daily/latin1.md"]
    assert "YAML frontmatter is broken at line 2" in reasons["Daily/broken.md"]
    assert "never closed" in reasons["Daily/unclosed.md"]
    assert "must be a mapping" in reasons["Daily/listy.md"]
    assert all(d["stage"] == "source" and d["source"] == "obsidian" for d in letters)
    got = rows(ds)
    assert set(got) == NOTES | HEADERS  # the good notes all landed


async def test_incremental_sync_equals_a_fresh_full_sync(vault: Path, tmp_path: Path) -> None:
    first = tmp_path / "inc.lance"
    report = await sync(vault, first)
    assert report.sources["obsidian"].fetched == len(NOTES) + len(HEADERS)

    later = 2_000_000_000  # a fixed mtime (2033) so every change is visible to mtime + size
    edited = [vault / "Projects/Garden/Compost.md", vault / "Reading/Reading list.md"]
    for p in edited:
        p.write_text(p.read_text() + "\nOne more paragraph written later.\n")
    (vault / "Projects/Kitchen renovation.md").unlink()
    renamed = vault / "Baking/Flour guide.md"
    (vault / "Baking/Techniques/Flour notes.md").rename(renamed)  # breaks [[Flour notes]] links
    added = vault / "Projects/Garden/Drip irrigation.md"  # resolves a link of Tomato trials
    added.write_text("# Drip irrigation\n\nA soaker line under the mulch, on a timer.\n")
    for p in [*edited, renamed, added]:
        os.utime(p, ns=(later * 10**9, later * 10**9))

    report = await sync(vault, first)
    stats = report.sources["obsidian"]
    # 2 edited + renamed + added, and 3 notes whose links now resolve differently: Country loaf
    # and Sourdough starter ([[Flour notes]] is gone) and Tomato trials ([[Drip irrigation]] exists)
    assert stats.fetched == 7
    assert stats.tombstones == 2  # the deleted note and the rename's old path
    assert stats.skipped_unchanged == len(NOTES) - 7
    assert stats.failed == 0

    fresh = tmp_path / "fresh.lance"
    await sync(vault, fresh)
    assert fingerprint(first) == fingerprint(fresh)
    got = rows(first)
    assert "Projects/Kitchen renovation.md" not in got
    assert "Baking/Techniques/Flour notes.md" not in got
    assert refs(got["Projects/Garden/Tomato trials.md"])[
        "Projects/Garden/Drip irrigation.md"
    ] == uid("Projects/Garden/Drip irrigation.md")
    loaf = got["Baking/Country loaf.md"]
    assert "Flour notes" in orjson.loads(loaf["meta"]["obsidian_unresolved_links"])

    # nothing changed: nothing is read; a touched file is hashed, found equal and skipped
    os.utime(vault / "Home.md", ns=((later + 5) * 10**9, (later + 5) * 10**9))
    report = await sync(vault, first)
    stats = report.sources["obsidian"]
    assert (stats.fetched, stats.tombstones) == (0, 0)
    assert stats.skipped_unchanged == len(NOTES)


async def test_a_deleted_top_level_folder_is_tombstoned(vault: Path, tmp_path: Path) -> None:
    ds = tmp_path / "kb.lance"
    await sync(vault, ds)
    shutil.rmtree(vault / "Reading")
    report = await sync(vault, ds)
    assert report.sources["obsidian"].tombstones == 5  # 4 notes and the folder's header
    got = rows(ds)
    assert not any(sid.startswith("Reading/") for sid in got)
    fresh = tmp_path / "fresh.lance"
    await sync(vault, fresh)
    # The Reading list's links from Home are now unresolved in both datasets.
    assert fingerprint(ds) == fingerprint(fresh)


async def test_include_exclude_and_checkpoints(vault: Path, tmp_path: Path) -> None:
    src = ObsidianSource(
        vault, include=["Baking/**/*.md", "*.md"], exclude=["**/Flour*"], checkpoint_every=1
    )
    src.batch_files = 1
    ds = tmp_path / "kb.lance"
    report = await (src | LanceSink(str(ds))).run()
    got = rows(ds)
    assert {sid for sid in got if not sid.endswith("/")} == {
        "Home.md",
        "Baking/Country loaf.md",
        "Baking/Sourdough starter.md",
        "Baking/Techniques/Stretch and fold.md",
    }
    # an excluded note that exists is a path-only reference, not an unresolved link
    assert refs(got["Baking/Country loaf.md"])["Baking/Techniques/Flour notes.md"] == ""
    # partitions "", attachments, Baking, Daily, Projects, Reading each end with a checkpoint;
    # Baking reads 3 files one per batch, so 2 more checkpoints come between them
    assert report.sources["obsidian"].checkpoints == 6 + 2
    state = orjson.loads((ds / "_cfstream" / "state.json").read_bytes())
    # a constant marker and the digest of the vault listing its links were checked against
    assert set(state["sources"]["obsidian"]["partitions"]["Baking"]) == {"v", "deps"}
    # what is known per file lives in the item store, not in the cursor
    cursor = dict(StateStore.for_dataset(str(ds)).items.entries("obsidian", "Baking"))
    assert set(cursor) == {
        "Baking/",
        "Baking/Techniques/",
        "Baking/Country loaf.md",
        "Baking/Sourdough starter.md",
        "Baking/Techniques/Stretch and fold.md",
    }
    mtime_ns, size, digest, deps = cursor["Baking/Country loaf.md"]
    assert size == (vault / "Baking/Country loaf.md").stat().st_size and len(digest) == 32
    assert deps["Sourdough starter"] == "Baking/Sourdough starter.md"
    assert deps["Baker's percentages"] is None


async def test_shared_fixture_vault(tmp_path: Path) -> None:
    if not SHARED_VAULT.is_dir():
        pytest.skip("../shared/fixtures/obsidian-vault is not present")
    ds = tmp_path / "kb.lance"
    report = await sync(SHARED_VAULT, ds)
    stats = report.sources["obsidian"]
    # the three templates with `created: {{date}}` are not valid YAML
    assert stats.failed == 3
    got = rows(ds)
    assert not any(sid.startswith(".obsidian") for sid in got)
    trip = got["Notes/2023 Japan Trip.md"]
    assert refs(trip) == {
        "Categories/Trips.md": uid("Categories/Trips.md"),
        "References/Kyoto.md": uid("References/Kyoto.md"),
    }
    assert orjson.loads(trip["meta"]["obsidian_unresolved_links"]) == ["Japan"]
    checklist = got["dataview-test-vault/tasks/checklist.md"]
    assert checklist["tags"] == ["tag", "tell", "page-tag"]
    blog = got["dataview-test-vault/blog/2020-08-08-an-earlier-post.md"]
    assert blog["meta"]["obsidian_draft"] == "true"
    assert blog["meta"]["obsidian_fourth_date"] == "2021-11-01T01:00:00[Europe/Paris]"
    report = await sync(SHARED_VAULT, ds)
    assert report.sources["obsidian"].fetched == 0


def test_frontmatter_and_globs() -> None:
    assert split_frontmatter("no frontmatter") == ({}, "no frontmatter")
    assert split_frontmatter("---\n---\nbody") == ({}, "body")
    assert split_frontmatter("---\ncreated: 2024-01-02\n---\nx")[0] == {
        "created": __import__("datetime").date(2024, 1, 2)
    }
    assert compile_glob("**/*.md").match("a.md")
    assert compile_glob("**/*.md").match("a/b/c.md")
    assert not compile_glob("*.md").match("a/b.md")
    assert compile_glob("Baking/**").match("Baking/x/y.md")
    assert not compile_glob("**/*.md").match("a.mdx")


def test_config_and_registry(tmp_path: Path) -> None:
    assert load_source_class("obsidian") is ObsidianSource
    src = ObsidianSource.from_config({"vault_path": str(tmp_path), "exclude": ["x/**"]}, name="v")
    assert isinstance(src, ObsidianSource) and src.name == "v" and src.exclude == ("x/**",)
    with pytest.raises(ConfigError, match="vault_pth"):
        ObsidianSource.from_config({"vault_pth": str(tmp_path)})


async def test_missing_vault_fails_with_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="is not a folder; check the path"):
        await sync(tmp_path / "nope", tmp_path / "kb.lance")


class SwapAfterScan(ObsidianSource):
    """Runs ``swap`` right after the scan (and the link index), before any note is read."""

    swap: Any = None

    def prepare(self, scan: Any) -> None:
        super().prepare(scan)
        if self.swap is not None:
            self.swap()
            self.swap = None


async def test_a_note_swapped_for_a_symlink_after_the_scan_is_not_followed(
    vault: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    for name in ("secret.md", "Notes.md", "Reading list.md"):
        (outside / name).write_text("# SECRET\n\nnot part of the vault\n")
    (vault / ".stash" / "Ideas").mkdir(parents=True)  # hidden: reached only through the link
    (vault / ".stash" / "Ideas" / "Idea.md").write_text("# An idea\n")
    (vault / "Ideas").symlink_to(vault / ".stash" / "Ideas", target_is_directory=True)
    (vault / "Daily" / "Loaf.md").symlink_to(vault / "Baking" / "Country loaf.md")

    def swap() -> None:
        (vault / "Home.md").unlink()
        (vault / "Home.md").symlink_to(outside / "secret.md")
        (vault / "Reading").rename(tmp_path / "Reading-moved")
        (vault / "Reading").symlink_to(outside, target_is_directory=True)

    src = SwapAfterScan(vault)
    src.swap = swap
    ds = tmp_path / "kb.lance"
    report = await (src | LanceSink(str(ds))).run()
    got = rows(ds)
    assert not any("SECRET" in (r["text_content"] or "") for r in got.values())
    assert "Home.md" not in got
    assert not any(sid.startswith("Reading/") for sid in got if sid != "Reading/")
    # symlinks inside the vault are still followed
    assert got["Ideas/Idea.md"]["text_content"] == "# An idea\n"
    assert got["Daily/Loaf.md"]["text_content"] == got["Baking/Country loaf.md"]["text_content"]
    assert report.sources["obsidian"].failed == 0 and report.dead_lettered == 0
    assert report.sources["obsidian"].skipped >= 1 + 4  # Home.md and the 4 notes of Reading/
    assert "skipped 'Home.md'" in caplog.text


async def test_max_file_bytes_for_notes(vault: Path, tmp_path: Path) -> None:
    (vault / "Daily" / "huge.md").write_text("# Huge\n" + "x" * 5000)
    src = ObsidianSource.from_config({"vault_path": str(vault), "max_file_bytes": 4096})
    ds = tmp_path / "kb.lance"
    report = await (src | LanceSink(str(ds))).run()
    assert report.sources["obsidian"].failed == 1
    letter = orjson.loads((ds / "_cfstream" / "dead-letters.jsonl").read_bytes().splitlines()[0])
    assert letter["source_id"] == "Daily/huge.md"
    assert "is 5,007 bytes, over the limit of 4,096 bytes" in letter["error"]
    assert "max_file_bytes" in letter["error"]
    assert set(rows(ds)) >= NOTES
    with pytest.raises(ConfigError, match="max_file_bytes"):
        ObsidianSource.from_config({"vault_path": str(vault), "max_file_bytes": -1})


async def test_a_frontmatter_alias_bomb_is_a_dead_letter(vault: Path, tmp_path: Path) -> None:
    bomb = "".join(
        f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9) if i else 'lol'}]\n" for i in range(10)
    )
    (vault / "Daily" / "bomb.md").write_text(f"---\n{bomb}---\nbody\n")
    (vault / "Daily" / "loop.md").write_text("---\na: &a [*a]\n---\nbody\n")
    ds = tmp_path / "kb.lance"
    report = await sync(vault, ds)
    assert report.sources["obsidian"].failed == 2
    reasons = {
        d["source_id"]: d["error"]
        for d in map(
            orjson.loads, (ds / "_cfstream" / "dead-letters.jsonl").read_bytes().splitlines()
        )
    }
    assert "alias bomb" in reasons["Daily/bomb.md"]
    assert "recursive alias" in reasons["Daily/loop.md"]
    assert set(rows(ds)) >= NOTES
