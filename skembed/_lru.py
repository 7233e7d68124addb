"""A mapping bounded by the bytes of its entries, least recently used out: the one eviction
rule of the word cache (:class:`skembed._hf.words.WordCache`) and the state cache
(:class:`skembed._caches.StateCache`)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from typing import Any


class ByteLRU:
    """``key -> value``, each entry counted with the bytes its owner gives for it; once the
    entries pass ``max_bytes``, the least recently used go first. Thread-safe.

    Parameters
    ----------
    max_bytes : int
        The budget. An entry larger than the whole budget is not kept (it would push out
        everything else and go next).

    Examples
    --------
    >>> lru = ByteLRU(max_bytes=10)
    >>> lru.put("a", "A", nbytes=4), lru.put("b", "B", nbytes=4)
    (True, True)
    >>> lru.get_many(["a", "z"])  # "a" becomes the most recent
    ['A', None]
    >>> lru.put("c", "C", nbytes=4)  # over the budget: "b", the least recent, goes
    True
    >>> sorted(lru.keys()), lru.nbytes
    (['a', 'c'], 8)
    >>> lru.put("big", "!", nbytes=11)
    False
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        # key -> (value, bytes counted for it), least recently used first
        self._entries: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get_many(self, keys: Iterable[Hashable]) -> list:
        """The values of ``keys`` (None for each one missing), looked up under one lock; the
        ones found become the most recently used."""
        with self._lock:
            found = list(map(self._entries.get, keys))
            move = self._entries.move_to_end
            for key, entry in zip(keys, found):
                if entry is not None:
                    move(key)
        return [None if entry is None else entry[0] for entry in found]

    def get(self, key: Hashable):
        """The value of ``key``, or None; it becomes the most recently used."""
        return self.get_many([key])[0]

    def put(self, key: Hashable, value, nbytes: int) -> bool:
        """Keep ``value`` under ``key`` as the most recently used, counted as ``nbytes``, then
        evict beyond the budget; False (nothing kept, nothing evicted) when ``nbytes`` alone
        is over the budget."""
        return self.put_many([(key, value, nbytes)]) == 1

    def put_many(self, entries: Iterable[tuple[Hashable, Any, int]]) -> int:
        """:meth:`put` each ``(key, value, nbytes)`` under one lock, then evict beyond the
        budget once. Returns the number kept."""
        kept = 0
        with self._lock:
            for key, value, nbytes in entries:
                if nbytes > self.max_bytes:
                    continue
                old = self._entries.pop(key, None)
                if old is not None:
                    self._bytes -= old[1]
                self._entries[key] = (value, nbytes)
                self._bytes += nbytes
                kept += 1
            self._evict()
        return kept

    def pop_where(self, drop) -> int:
        """Remove the entries whose value ``drop(value)`` is true; return how many."""
        with self._lock:
            gone = [key for key, (value, _) in self._entries.items() if drop(value)]
            for key in gone:
                self._bytes -= self._entries.pop(key)[1]
        return len(gone)

    def _evict(self) -> None:
        while self._bytes > self.max_bytes and self._entries:
            _, (_, nbytes) = self._entries.popitem(last=False)
            self._bytes -= nbytes

    def resize(self, max_bytes: int) -> None:
        """A new budget; the least recently used go until the entries fit."""
        with self._lock:
            self.max_bytes = int(max_bytes)
            self._evict()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def keys(self) -> list:
        """The keys, least recently used first."""
        with self._lock:
            return list(self._entries)

    @property
    def nbytes(self) -> int:
        """The bytes counted for the entries kept."""
        return self._bytes

    def __getitem__(self, key: Hashable):
        """The value of ``key``, its recency unchanged; KeyError when it is not kept."""
        return self._entries[key][0]

    def __contains__(self, key) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)
