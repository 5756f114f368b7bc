"""The bounded cache of unwrapped subject keys that the SQL key stores keep for the per-record path."""

from __future__ import annotations

import threading
from collections import OrderedDict

from transforms.pii import SubjectKeys


class _LruCache:
    """A bounded, thread-safe least-recently-used map of unwrapped keys."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._data: OrderedDict[tuple[str, str], SubjectKeys] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, subject: tuple[str, str]) -> SubjectKeys | None:
        with self._lock:
            keys = self._data.get(subject)
            if keys is not None:
                self._data.move_to_end(subject)
            return keys

    def put(self, subject: tuple[str, str], keys: SubjectKeys) -> None:
        if self.capacity <= 0:
            return
        with self._lock:
            self._data[subject] = keys
            self._data.move_to_end(subject)
            while len(self._data) > self.capacity:
                self._data.popitem(last=False)

    def pop(self, subject: tuple[str, str]) -> None:
        with self._lock:
            self._data.pop(subject, None)

    def __len__(self) -> int:
        return len(self._data)
