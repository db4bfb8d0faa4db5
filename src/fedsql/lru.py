"""A thread-safe LRU map bounded in entries and in the characters its values hold:
the connector's kept fragment checks (``connectors/checked.py``) and the
coordinator's plans (``client.py``).

>>> lru = Lru(max_entries=2, max_chars=100)
>>> lru.put(("a",), "A", 10)
>>> lru.put(("b",), "B", 10)
>>> lru.get(("a",))
'A'
>>> lru.put(("c",), "C", 10)
>>> lru.get(("b",)) is None  # the least recently used went
True
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

_V = TypeVar("_V")


class Lru(Generic[_V]):
    """A thread-safe LRU map bounded in entries and in the characters they hold."""

    def __init__(self, max_entries: int, max_chars: int) -> None:
        self.max_entries = max_entries
        self.max_chars = max_chars
        self._items: OrderedDict[Hashable, tuple[_V, int]] = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> _V | None:
        with self._lock:
            got = self._items.get(key)
            if got is None:
                return None
            self._items.move_to_end(key)
            return got[0]

    def put(self, key: Hashable, value: _V, chars: int) -> None:
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._chars -= old[1]
            self._items[key] = (value, chars)
            self._chars += chars
            while self._items and (
                len(self._items) > self.max_entries or self._chars > self.max_chars
            ):
                _, (_, gone) = self._items.popitem(last=False)
                self._chars -= gone

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._chars = 0

    def __len__(self) -> int:
        return len(self._items)
