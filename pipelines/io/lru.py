"""The one bounded least-recently-used map the services' in-process caches use; thread-safe.

Bounded by a count of items (`capacity`), by the bytes of its values (`max_bytes`, each value's
`len`), or both: the key stores' unwrapped keys, the query service's tiles, entries and places.
A value larger than `max_bytes` is not kept at all (nor any older value under its key), and
with `max_bytes` every value must have a length.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sized
from typing import Generic, TypeVar

__all__ = ["LRU"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRU(Generic[K, V]):
    """A map that forgets the entries used least recently once it holds more than its bounds."""

    def __init__(self, capacity: int | None = None, max_bytes: int | None = None) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.held = 0  # bytes of the values kept (counted only with max_bytes)
        self._data: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def __contains__(self, key: object) -> bool:
        """Whether `key` is kept (its recency unchanged)."""
        with self._lock:
            return key in self._data

    def put(self, key: K, value: V) -> None:
        size = self._size(value)
        if (self.capacity is not None and self.capacity <= 0) or (self.max_bytes is not None and size > self.max_bytes):
            self.pop(key)  # a get must never answer an older value than the last put
            return
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self.held -= self._size(old)
            self._data[key] = value
            self.held += size
            while (self.capacity is not None and len(self._data) > self.capacity) or (
                self.max_bytes is not None and self.held > self.max_bytes
            ):
                _, dropped = self._data.popitem(last=False)
                self.held -= self._size(dropped)

    def pop(self, key: K) -> None:
        self.drop((key,))

    def drop(self, keys: Iterable[K]) -> None:
        """Forgets each of `keys` that is kept, under one lock (a pass over many keys)."""
        with self._lock:
            for key in keys:
                old = self._data.pop(key, None)
                if old is not None:
                    self.held -= self._size(old)

    def drop_where(self, doomed: Callable[[K], bool]) -> None:
        """Forgets every key `doomed` says so of."""
        with self._lock:
            for key in [k for k in self._data if doomed(k)]:
                self.held -= self._size(self._data.pop(key))

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.held = 0

    def __len__(self) -> int:
        return len(self._data)

    def _size(self, value: V) -> int:
        if self.max_bytes is None:
            return 0
        if not isinstance(value, Sized):
            raise TypeError(f"an LRU bounded in bytes keeps values with a length, not {type(value).__name__}")
        return len(value)
