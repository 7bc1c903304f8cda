"""What a source remembers per item during one partition's read, kept in the state's item store.

:class:`ItemLedger` lets a connector that keeps one entry per item (a blob's sha, a Drive file's
fingerprint, a Notion page's edit time) read and change those entries as if they were a dict,
while they live in the item store (:class:`~cfstream.contract.state.ItemStore`) rather than in its JSON
cursor: reads go to the store a key at a time (or stream a partition), this run's own changes are
overlaid on them, and :meth:`ItemLedger.changes` hands the changes since the previous checkpoint
to put into the next :class:`~cfstream.records.Checkpoint` (saved after the commit that holds the
records before it, like the cursor). A sync therefore writes what changed, whatever the number of
items, and its cursor stays small.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from cfstream.contract.context import SourceContext
from cfstream.records import ItemChanges

__all__ = ("ItemLedger",)

#: entries read from the store kept for the rest of the read (dropped all at once past this)
_CACHE_LIMIT = 10_000


class _Gone:
    """Marks a key deleted in this run."""


_GONE = _Gone()


class ItemLedger:
    """A partition's per-item entries as one read sees them (see the module docstring).

    Args:
        ctx: the source's context (the item store is ``ctx.item_values`` / ``ctx.item_entries``).
        partition: the partition read.
        legacy: the entries of a cursor saved before the item store (a per-item map), or None.
            They are read from memory for this run, and the first checkpoint replaces the
            partition's entries in the store with them (and this run's changes): the migration.

        fresh: the partition is read from scratch (it has no cursor): as on a full refresh, the
            store's entries are not read, and the first checkpoint replaces them.
    The values are JSON values (lists, strings, numbers); the ledger never mutates them.
    """

    def __init__(
        self,
        ctx: SourceContext,
        partition: str,
        *,
        legacy: Mapping[str, Any] | None = None,
        fresh: bool = False,
    ) -> None:
        self._ctx = ctx
        self._partition = partition
        self._base = dict(legacy) if legacy is not None else None
        self._cleared = fresh and legacy is None
        #: every change of this run (reads see them before the store does)
        self._run: dict[str, Any] = {}
        #: changes since the previous checkpoint
        self._put: dict[str, Any] = {}
        self._delete: dict[str, None] = {}
        self._reset = legacy is not None or fresh or ctx.full_refresh
        self._migrate = legacy is not None
        self._cache: dict[str, Any] = {}

    @property
    def migrating(self) -> bool:
        """True when the entries came from an old cursor and are not in the store yet."""
        return self._migrate

    # -- reading ------------------------------------------------------------------------------
    def get(self, key: str) -> Any | None:
        """The entry of ``key`` (this run's change if any, else the saved one), or None."""
        value = self._run.get(key)
        if value is not None:
            return None if value is _GONE else value
        return self.saved(key)

    def saved(self, key: str) -> Any | None:
        """The entry of ``key`` as the run found it (this run's changes left out), or None."""
        if self._cleared:
            return None
        if self._base is not None:
            return self._base.get(key)
        if key in self._cache:
            return self._cache[key]
        found = self._ctx.item_values(self._partition, [key]).get(key)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = found
        return found

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The entries of ``keys`` that exist (one store query per few hundred keys)."""
        out: dict[str, Any] = {}
        ask: list[str] = []
        for key in keys:
            value = self._run.get(key)
            if value is _GONE:
                continue
            if value is not None:
                out[key] = value
            elif not self._cleared:
                ask.append(key)
        if ask:
            if self._base is not None:
                out.update((k, self._base[k]) for k in ask if k in self._base)
            else:
                out.update(self._ctx.item_values(self._partition, ask))
        return out

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def items(self, prefix: str = "", *, saved: bool = False) -> Iterator[tuple[str, Any]]:
        """Every entry whose key starts with ``prefix``, this run's changes applied (with
        ``saved``: as the run found them), streamed from the store (saved entries in key order,
        then the ones this run added)."""
        if not self._cleared:
            stored: Iterable[tuple[str, Any]] = (
                self._base.items()
                if self._base is not None
                else self._ctx.item_entries(self._partition)
            )
            for key, value in stored:
                if key.startswith(prefix) and (saved or key not in self._run):
                    yield key, value
        if saved:
            return
        for key, value in list(self._run.items()):
            if value is not _GONE and key.startswith(prefix):
                yield key, value

    # -- changing -----------------------------------------------------------------------------
    def put(self, key: str, value: Any) -> None:
        """Set the entry of ``key`` (saved with the next checkpoint)."""
        self._run[key] = value
        self._put[key] = value
        self._delete.pop(key, None)

    def delete(self, key: str) -> None:
        """Forget the entry of ``key`` (saved with the next checkpoint)."""
        self._run[key] = _GONE
        self._put.pop(key, None)
        if not self._reset:
            self._delete[key] = None

    def clear(self) -> None:
        """Forget every entry of the partition (the next checkpoint empties it in the store)."""
        self._cleared = True
        self._base = None
        self._migrate = False
        self._run = {}
        self._put = {}
        self._delete = {}
        self._cache = {}
        self._reset = True

    def changes(self) -> ItemChanges | None:
        """The changes since the previous call (None when there are none), for a checkpoint."""
        put = self._put
        if self._migrate and self._base is not None:
            # the first checkpoint moves the old cursor's entries into the store
            put = {k: v for k, v in self._base.items() if k not in self._run}
            put.update(self._put)
            self._migrate = False
        changes = ItemChanges(put=put, delete=list(self._delete), reset=self._reset)
        self._put, self._delete, self._reset = {}, {}, False
        return changes if changes else None
