"""A complete custom source: a paginated notes API, imported incrementally. See docs/custom-sources.md.

Run it against your API with ``python examples/custom_source.py https://notes.example.com``
(the token is read from ``NOTES_TOKEN``).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from typing import Any

import cfstream as cf
from cfstream.contract.context import SourceContext
from cfstream.http import BearerAuth, BodyCursorPaginator, RateLimit

Item = cf.Document | cf.Tombstone | cf.Checkpoint


@cf.source(source_type="notes_api")
async def notes_api(
    base_url: str, token: cf.Secret, cursor: dict[str, Any] | None = None, *, ctx: SourceContext
) -> AsyncIterator[Item | list[Item]]:
    """Every note on the first run, then only the notes updated since the saved cursor."""
    api = ctx.http.service(
        "notes", base_url=base_url, auth=BearerAuth(token), rate=RateLimit(per_second=5, burst=5)
    )
    since = (cursor or {}).get("updated_since")
    pages = BodyCursorPaginator("next_cursor", "cursor", items_path="notes")
    params = {"updated_since": since, "order": "updated_at", "limit": 100}
    async for page in api.paginate(pages, "/notes", params=params):
        batch: list[Item] = []
        for note in pages.items(page):
            if note.get("deleted"):  # the API reports deletions: the sink deletes the row
                batch.append(cf.Tombstone(str(note["id"])))
            else:
                batch.append(
                    cf.Document(
                        source_id=str(note["id"]),
                        title=note["title"],
                        text_content=note["body"],
                        author=note.get("author"),
                        tags=note.get("tags"),
                        updated_at=note["updated_at"],
                        source_url=f"{base_url}/notes/{note['id']}",
                    )
                )
            since = max(since or "", note["updated_at"])
        # oldest first, so the page's newest timestamp is a safe place to resume from
        batch.append(cf.Checkpoint({"updated_since": since}))
        yield batch


if __name__ == "__main__":
    report = cf.run(notes_api(sys.argv[1], cf.env("NOTES_TOKEN")) | cf.LanceSink("notes.lance"))
    print(report)
