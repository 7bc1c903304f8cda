"""The dead-letter file: one JSON line per record that could not be imported.

Each line holds ``time``, ``source``, ``source_id``, ``stage``, ``error`` and ``payload`` (the raw
item, with every registered secret redacted). The run goes on; the report counts the lines.

No value can stop a letter from being written: text with lone surrogates (a file name that is not
valid UTF-8) is written with them escaped (``\\xff``, see
:func:`cfstream.records.escape_surrogates`), dict keys that are not strings as their text, and any
other value JSON cannot hold (an integer past 64 bits, an object) as its ``repr``.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import threading
import time
from pathlib import Path
from typing import IO, Any

import orjson

from cfstream.records import Document, Relationship, escape_surrogates
from cfstream.secrets import redact

__all__ = (
    "DeadLetterWriter",
    "document_from_letter",
    "read_dead_letters",
    "remove_dead_letters",
)

#: payloads larger than this are cut (the error and the ids are what matter)
MAX_PAYLOAD_CHARS = 64_000


def _default(obj: Any) -> Any:
    if isinstance(obj, bytes | bytearray | memoryview):
        raw = bytes(obj)
        if len(raw) > 1024:
            return {"bytes": len(raw)}
        return {"base64": base64.b64encode(raw).decode()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    return repr(obj)


_INT64 = range(-(2**63), 2**64)


def _jsonable(obj: Any, depth: int = 0) -> Any:
    """``obj`` made of what orjson always serialises (the slow path, after orjson refused)."""
    if obj is None or type(obj) in (bool, float):
        return obj
    if isinstance(obj, str):
        return escape_surrogates(str(obj))
    if isinstance(obj, int):
        return int(obj) if obj in _INT64 else str(obj)
    if depth > 50:
        return escape_surrogates(repr(obj))
    if isinstance(obj, dict):
        return {_key(k): _jsonable(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [_jsonable(v, depth + 1) for v in obj]
    if isinstance(obj, bytes | bytearray | memoryview) or (
        dataclasses.is_dataclass(obj) and not isinstance(obj, type)
    ):
        return _jsonable(_default(obj), depth + 1)
    try:
        return orjson.loads(orjson.dumps(obj))  # datetimes, dates, uuids, enums...
    except (TypeError, ValueError):
        return escape_surrogates(repr(obj))


def _key(key: Any) -> str:
    return escape_surrogates(key if isinstance(key, str) else repr(key))


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return escape_surrogates(value if isinstance(value, str) else repr(value))


class DeadLetterWriter:
    """Appends dead letters to a JSONL file, created on the first letter.

    Thread-safe; ``path=None`` keeps the letters in memory only (``letters``).
    """

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path is not None else None
        self.count = 0
        self.letters: list[dict[str, Any]] = []
        self._fh: IO[bytes] | None = None
        self._lock = threading.Lock()

    def write(
        self,
        *,
        source: str | None,
        source_id: str | None,
        stage: str,
        error: BaseException | str,
        payload: Any = None,
    ) -> None:
        """Record one failed item. Never raises for what the item or the error holds."""
        err = _error_text(error)
        try:
            payload_json = orjson.dumps(payload, default=_default).decode()
        except (TypeError, ValueError):  # lone surrogates, a huge int, a non-str key...
            try:
                payload_json = orjson.dumps(_jsonable(payload)).decode()
            except (TypeError, ValueError) as exc:
                payload_json = orjson.dumps(f"<unserialisable payload: {exc}>").decode()
        if len(payload_json) > MAX_PAYLOAD_CHARS:
            payload_json = orjson.dumps(
                {"truncated": True, "head": payload_json[:MAX_PAYLOAD_CHARS]}
            ).decode()
        letter = {
            "time": time.time(),
            "source": source,
            "source_id": source_id,
            "stage": stage,
            "error": redact(err),
            "payload": orjson.Fragment(redact(payload_json)),
        }
        try:
            line = orjson.dumps(letter).decode()
        except (TypeError, ValueError):  # an id or a message with lone surrogates, a non-str id
            for name in ("source", "source_id", "stage", "error"):
                letter[name] = _text(letter[name])
            line = orjson.dumps(letter).decode()
        with self._lock:
            self.count += 1
            if self.path is None:
                self.letters.append(orjson.loads(line))
                return
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = open(self.path, "ab")  # noqa: SIM115 - kept open for the run
            self._fh.write(line.encode() + b"\n")
            self._fh.flush()

    def close(self) -> None:
        """Flush and close the file."""
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


def _error_text(error: BaseException | str) -> str:
    if not isinstance(error, BaseException):
        return str(error)
    try:
        return f"{type(error).__name__}: {error}"
    except Exception:  # an exception whose str() fails still gets its letter
        return f"{type(error).__name__}: <message unavailable>"


def read_dead_letters(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read every dead letter of a JSONL file (skipping a torn last line)."""
    out: list[dict[str, Any]] = []
    p = Path(path)
    if not p.exists():
        return out
    for raw in p.read_bytes().splitlines():
        try:
            out.append(orjson.loads(raw))
        except orjson.JSONDecodeError:
            continue
    return out


def remove_dead_letters(path: str | os.PathLike[str], drop: Any) -> int:
    """Rewrite the file without the letters for which ``drop(letter)`` is true (atomically:
    a temporary file renamed over it). Returns how many were removed."""
    p = Path(path)
    if not p.exists():
        return 0
    kept: list[bytes] = []
    removed = 0
    for raw in p.read_bytes().splitlines():
        try:
            letter = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue  # a torn line: nothing to keep
        if drop(letter):
            removed += 1
        else:
            kept.append(raw)
    if removed:
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        tmp.write_bytes(b"".join(line + b"\n" for line in kept))
        os.replace(tmp, p)
    return removed


_DOC_FIELDS = frozenset(f.name for f in dataclasses.fields(Document))


def document_from_letter(letter: dict[str, Any]) -> Document | None:
    """The document a dead letter holds, when it failed after its source made it (a ``map``,
    ``validate`` or sink failure): it can be replayed through the pipeline. None for an item
    its source could not map (stage ``source``: the source must fetch it again) or a truncated
    payload."""
    payload = letter.get("payload")
    if letter.get("stage") == "source" or not isinstance(payload, dict):
        return None
    if "truncated" in payload or not {"source_id", "title"} <= payload.keys():
        return None
    fields = {k: v for k, v in payload.items() if k in _DOC_FIELDS and k != "vector"}
    raw = fields.get("raw_data")
    if isinstance(raw, dict):  # bytes were written as {"base64": ...} or {"bytes": n}
        fields["raw_data"] = base64.b64decode(raw["base64"]) if "base64" in raw else None
    rels = fields.get("relationships")
    if isinstance(rels, list):
        fields["relationships"] = [
            Relationship(**{k: v for k, v in r.items() if k in Relationship.__slots__})
            for r in rels
            if isinstance(r, dict) and "type" in r
        ]
    try:
        return Document(**fields)
    except TypeError:
        return None
