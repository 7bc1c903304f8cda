"""Render Notion block trees and rich text to Markdown (private to the Notion connector).

The input is what ``GET /v1/blocks/{id}/children`` returns (Notion-Version 2022-06-28), with each
block's own children attached under the key :data:`CHILDREN` by the fetcher. Rendering is pure:
no I/O, no clock, so the same blocks always give the same text (the connector hashes it).

Supported: paragraphs, headings 1-3 (toggleable ones too), bulleted/numbered lists (nested),
to-dos, toggles, quotes, callouts, code (with language), dividers, tables, equations (block and
inline), images/videos/files/PDFs/audio, bookmarks, embeds, link previews, links to pages, child
pages and databases (as links), columns, synced blocks and templates (their content). Mentions and
links render as text (``@Name``, ``[title](url)``, dates as written). Blocks with no text
(``table_of_contents``, ``breadcrumb``, ``unsupported``) are left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

__all__ = (
    "CHILDREN",
    "child_links",
    "notion_url",
    "plain_text",
    "render_blocks",
    "render_rich_text",
    "strip_signature",
)

#: the key under which the fetcher attaches a block's children
CHILDREN: Final = "_children"

_CODE_LANG: Final = {"plain text": "", "c++": "cpp", "c#": "csharp", "f#": "fsharp"}
_LIST_TYPES: Final = frozenset({"bulleted_list_item", "numbered_list_item", "to_do"})


def notion_url(object_id: str) -> str:
    """The ``https://www.notion.so/<id>`` address of a page, database or block."""
    return f"https://www.notion.so/{object_id.replace('-', '')}"


def strip_signature(url: str) -> str:
    """Drop the query of a Notion-hosted file URL (its signature changes on every request)."""
    return url.split("?", 1)[0]


def plain_text(rich: Any) -> str:
    """The text of a rich text array, without any formatting."""
    if not isinstance(rich, list):
        return ""
    return "".join(str(r.get("plain_text") or "") for r in rich if isinstance(r, Mapping))


def _wrap(text: str, mark: str) -> str:
    """Put ``mark`` around ``text``, keeping surrounding whitespace outside the marks."""
    stripped = text.strip()
    if not stripped:
        return text
    lead = text[: len(text) - len(text.lstrip())]
    trail = text[len(text.rstrip()) :]
    return f"{lead}{mark}{stripped}{mark}{trail}"


def _rich_item(item: Mapping[str, Any]) -> str:
    kind = item.get("type")
    text = str(item.get("plain_text") or "")
    href = item.get("href")
    if kind == "equation":
        expr = (item.get("equation") or {}).get("expression") or text
        return f"${expr}$"
    if kind == "mention":
        mention = item.get("mention") or {}
        mtype = mention.get("type")
        if mtype == "link_preview":
            url = (mention.get("link_preview") or {}).get("url") or href or text
            return f"<{url}>"
        if mtype in ("page", "database") and href:
            return f"[{text}]({href})"
        return text
    ann = item.get("annotations") or {}
    if ann.get("code"):
        out = f"`{text.replace('`', '')}`" if text.strip() else text
    else:
        out = text
        if ann.get("bold"):
            out = _wrap(out, "**")
        if ann.get("italic"):
            out = _wrap(out, "*")
        if ann.get("strikethrough"):
            out = _wrap(out, "~~")
    if href and text.strip():
        out = f"[{out}]({href})"
    return out


def render_rich_text(rich: Any) -> str:
    """A rich text array as inline Markdown (bold, italic, strikethrough, code, links, mentions)."""
    if not isinstance(rich, list):
        return ""
    return "".join(_rich_item(r) for r in rich if isinstance(r, Mapping))


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line if line else line for line in text.split("\n"))


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in text.split("\n"))


def _children(block: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    kids = block.get(CHILDREN)
    return [k for k in kids if isinstance(k, Mapping)] if isinstance(kids, list) else []


def _caption(body: Mapping[str, Any]) -> str:
    return render_rich_text(body.get("caption"))


def _file_url(body: Mapping[str, Any]) -> str:
    kind = body.get("type")
    inner = body.get(kind) if isinstance(kind, str) else None
    url = str((inner or {}).get("url") or "") if isinstance(inner, Mapping) else ""
    return strip_signature(url) if kind == "file" else url


def _table(block: Mapping[str, Any]) -> str:
    body = block.get("table") or {}
    rows: list[list[str]] = []
    for row in _children(block):
        if row.get("type") != "table_row":
            continue
        cells = (row.get("table_row") or {}).get("cells") or []
        rows.append([render_rich_text(c).replace("\n", " ") for c in cells])
    width = max([int(body.get("table_width") or 0), *(len(r) for r in rows)])
    if width == 0:
        return ""
    rows = [r + [""] * (width - len(r)) for r in rows]
    if body.get("has_column_header") and rows:
        header, rest = rows[0], rows[1:]
    else:
        header, rest = [""] * width, rows

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    return "\n".join([line(header), line(["---"] * width), *(line(r) for r in rest)])


def _render_block(block: Mapping[str, Any], number: int) -> str:
    """One block (with its children) as Markdown; ``number`` is its place in a numbered list."""
    kind = str(block.get("type") or "")
    body: Mapping[str, Any] = block.get(kind) or {} if kind else {}
    if not isinstance(body, Mapping):
        body = {}
    text = render_rich_text(body.get("rich_text"))
    kids = render_blocks(_children(block))

    if kind == "paragraph":
        return text + (f"\n\n{kids}" if kids else "")
    if kind in ("heading_1", "heading_2", "heading_3"):
        head = "#" * int(kind[-1]) + " " + text
        return head + (f"\n\n{kids}" if kids else "")
    if kind in _LIST_TYPES:
        if kind == "bulleted_list_item":
            marker = "- "
        elif kind == "numbered_list_item":
            marker = f"{number}. "
        else:
            marker = "- [x] " if body.get("checked") else "- [ ] "
        head = marker + text
        if kids:
            head += "\n" + _indent(kids, " " * (3 if kind == "numbered_list_item" else 2))
        return head
    if kind == "toggle":
        inner = f"\n\n{kids}\n\n" if kids else "\n\n"
        return f"<details>\n<summary>{text}</summary>{inner}</details>"
    if kind == "quote":
        return _quote(text + (f"\n\n{kids}" if kids else ""))
    if kind == "callout":
        icon = body.get("icon") or {}
        emoji = icon.get("emoji") if isinstance(icon, Mapping) else None
        head = f"{emoji} {text}" if emoji else text
        return _quote(head + (f"\n\n{kids}" if kids else ""))
    if kind == "code":
        lang = str(body.get("language") or "")
        lang = _CODE_LANG.get(lang, lang).replace(" ", "_")
        code = plain_text(body.get("rich_text"))
        caption = _caption(body)
        out = f"```{lang}\n{code}\n```"
        return out + (f"\n\n{caption}" if caption else "")
    if kind == "divider":
        return "---"
    if kind == "equation":
        return f"$$\n{body.get('expression') or ''}\n$$"
    if kind == "table":
        return _table(block)
    if kind in ("image", "video", "file", "pdf", "audio"):
        url = _file_url(body)
        caption = _caption(body)
        if kind == "image":
            return f"![{caption}]({url})" if url else caption
        label = caption or str(body.get("name") or "") or url.rsplit("/", 1)[-1] or kind
        return f"[{label}]({url})" if url else label
    if kind in ("bookmark", "embed", "link_preview"):
        url = str(body.get("url") or "")
        caption = _caption(body)
        return f"[{caption or url}]({url})" if url else caption
    if kind == "child_page":
        title = str(body.get("title") or "Untitled")
        return f"[{title}]({notion_url(str(block.get('id') or ''))})"
    if kind == "child_database":
        title = str(body.get("title") or "Untitled database")
        return f"[{title}]({notion_url(str(block.get('id') or ''))})"
    if kind == "link_to_page":
        target = body.get(str(body.get("type") or "")) or ""
        return f"[Link to page]({notion_url(str(target))})" if target else ""
    if kind in ("column_list", "column", "synced_block", "template"):
        return (text + "\n\n" + kids).strip() if text else kids
    if kind in ("table_of_contents", "breadcrumb", "unsupported", "table_row"):
        return ""
    # a block type this renderer does not know: keep its text and its children's
    return (text + "\n\n" + kids).strip() if text else kids


def render_blocks(blocks: Iterable[Mapping[str, Any]]) -> str:
    """Blocks (and their attached children) as Markdown: blocks separated by blank lines,
    consecutive items of one list kind by single newlines, numbered lists counted from 1."""
    parts: list[str] = []
    prev_list: str | None = None
    number = 0
    for block in blocks:
        kind = str(block.get("type") or "")
        number = number + 1 if kind == "numbered_list_item" and prev_list == kind else 1
        out = _render_block(block, number)
        if not out:
            prev_list = None
            continue
        if parts and kind in _LIST_TYPES and prev_list == kind:
            parts[-1] += "\n" + out
        else:
            parts.append(out)
        prev_list = kind if kind in _LIST_TYPES else None
    return "\n".join(line.rstrip() for line in "\n\n".join(parts).split("\n"))


def child_links(
    blocks: Iterable[Mapping[str, Any]],
) -> tuple[list[tuple[str, str, str]], list[str]]:
    """What a block tree points at.

    Returns ``(children, references)``: ``children`` are ``(kind, id, title)`` of the child pages
    (``"page"``) and child databases (``"database"``) in the tree, in order; ``references`` are the
    ids of pages named by ``link_to_page`` blocks and page mentions.
    """
    children: list[tuple[str, str, str]] = []
    refs: list[str] = []

    def rich_refs(rich: Any) -> None:
        if not isinstance(rich, list):
            return
        for r in rich:
            if isinstance(r, Mapping) and r.get("type") == "mention":
                mention = r.get("mention") or {}
                if mention.get("type") in ("page", "database"):
                    target = (mention.get(mention["type"]) or {}).get("id")
                    if isinstance(target, str) and target:
                        refs.append(target)

    def walk(items: Iterable[Mapping[str, Any]]) -> None:
        for block in items:
            kind = str(block.get("type") or "")
            body = block.get(kind) if kind else None
            bid = block.get("id")
            if kind == "child_page" and isinstance(bid, str):
                children.append(("page", bid, str((body or {}).get("title") or "")))
            elif kind == "child_database" and isinstance(bid, str):
                children.append(("database", bid, str((body or {}).get("title") or "")))
            elif kind == "link_to_page" and isinstance(body, Mapping):
                target = body.get(str(body.get("type") or ""))
                if isinstance(target, str) and target:
                    refs.append(target)
            if isinstance(body, Mapping):
                rich_refs(body.get("rich_text"))
                if kind == "table_row":
                    for cell in body.get("cells") or []:
                        rich_refs(cell)
            walk(_children(block))

    walk(blocks)
    return children, refs
