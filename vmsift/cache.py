"""`LruCache`: a bounded, thread-safe cache of decoded metadata.

Volumes and disk extents keep what they decoded (inodes, folders, pointer blocks, grain
tables) in these caches. Readers in worker threads (backup hashing, FUSE) share them: every
method takes the cache's lock, and a value is made outside it (two threads may both decode
the same block; the first stored wins, both are equal).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

# folder entries a volume keeps decoded (about 200 bytes each): bounds memory however many
# big folders a (hostile) image has; one folder larger than this is still kept alone
CACHED_DIR_ENTRIES = 200_000
_MISSING = object()


class LruCache:
    """At most ``limit`` values, or with ``weight`` (folders: their entry count) values
    weighing at most ``limit`` together; the newest value stays even when it alone weighs
    more. ``None`` is a value like any other."""

    def __init__(self, limit: int, weight: Callable[[Any], int] | None = None):
        self.limit = limit
        self.weight = weight
        self.total = 0
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def for_folders(cls) -> LruCache:
        """A cache of decoded folders (entry lists or name indexes), `CACHED_DIR_ENTRIES`
        entries in all (each folder counts one more, so empty ones are bounded too)."""
        return cls(CACHED_DIR_ENTRIES, lambda entries: len(entries) + 1)

    def _weigh(self, value) -> int:
        return self.weight(value) if self.weight else 1

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key) -> bool:
        return key in self._items

    def __iter__(self):
        """The keys, oldest first (a copy: safe while other threads use the cache)."""
        with self._lock:
            return iter(list(self._items))

    def get(self, key, default=None):
        """The cached value of ``key`` (now the newest), or ``default``."""
        with self._lock:
            value = self._items.get(key, _MISSING)
            if value is _MISSING:
                return default
            self._items.move_to_end(key)
            return value

    def put(self, key, value):
        """Store ``value`` under ``key``, dropping the oldest values over the limit."""
        with self._lock:
            if key in self._items:
                self.total -= self._weigh(self._items[key])
            self._items[key] = value
            self.total += self._weigh(value)
            self._items.move_to_end(key)
            while self.total > self.limit and len(self._items) > 1:
                self.total -= self._weigh(self._items.popitem(last=False)[1])
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.total = 0

    def get_or(self, key, make):
        """The cached value of ``key``, or ``make()`` stored under it."""
        value = self.get(key, _MISSING)
        if value is _MISSING:
            value = self.put(key, make())
        return value
