"""The dead-letter file: one JSON line per record that could not be imported.

Each line holds ``time``, ``source``, ``source_id``, ``stage``, ``error`` and ``payload`` (the raw
item, with every registered secret redacted). The run goes on; the report counts the lines.
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

from cfstream.secrets import redact

__all__ = ("DeadLetterWriter", "read_dead_letters")

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
        """Record one failed item. Never raises for an unserialisable payload."""
        err = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else error
        try:
            payload_json = orjson.dumps(payload, default=_default).decode()
        except (TypeError, ValueError) as exc:
            payload_json = orjson.dumps(f"<unserialisable payload: {exc}>").decode()
        if len(payload_json) > MAX_PAYLOAD_CHARS:
            payload_json = orjson.dumps(
                {"truncated": True, "head": payload_json[:MAX_PAYLOAD_CHARS]}
            ).decode()
        line = orjson.dumps(
            {
                "time": time.time(),
                "source": source,
                "source_id": source_id,
                "stage": stage,
                "error": redact(err),
                "payload": orjson.Fragment(redact(payload_json)),
            }
        ).decode()
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
