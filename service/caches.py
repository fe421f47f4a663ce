"""Thread-safe LRU caches on :mod:`cachetools` (FastAPI calls the engine from its threadpool)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import cachetools


class _EvictingLRU(cachetools.LRUCache):
    """An LRU cache that hands every value it drops for space to ``on_evict``."""

    def __init__(self, maxsize: int, on_evict: Callable[[Any], None] | None) -> None:
        super().__init__(maxsize)
        self._on_evict = on_evict

    def popitem(self) -> tuple[Any, Any]:
        key, value = super().popitem()
        if self._on_evict is not None:
            self._on_evict(value)
        return key, value


class LockedLRU:
    """``get`` / ``put`` / ``pop`` on a :class:`cachetools.LRUCache` under a lock; size 0 caches nothing.

    ``on_evict`` is called with each value the cache drops to make room (not with values taken out by
    :meth:`pop`, which the caller then owns).
    """

    def __init__(self, maxsize: int, on_evict: Callable[[Any], None] | None = None) -> None:
        self.maxsize = maxsize
        self._cache = _EvictingLRU(maxsize, on_evict) if maxsize > 0 else None
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any | None:
        if self._cache is None:
            return None
        with self._lock:
            return self._cache.get(key)

    def put(self, key: Any, value: Any) -> None:
        if self._cache is None:
            return
        with self._lock:
            self._cache[key] = value

    def pop(self, key: Any) -> Any | None:
        if self._cache is None:
            return None
        with self._lock:
            return self._cache.pop(key, None)

    def pop_if(self, key: Any, value: Any) -> bool:
        """Remove ``key`` only while it still maps to ``value`` (not to a newer value put meanwhile)."""
        if self._cache is None:
            return False
        with self._lock:
            if self._cache.get(key) is value:
                del self._cache[key]
                return True
            return False

    def values(self) -> list[Any]:
        if self._cache is None:
            return []
        with self._lock:
            return list(self._cache.values())

    def clear(self) -> None:
        """Empty the cache (each value goes to ``on_evict``: MutableMapping.clear pops item by item)."""
        if self._cache is not None:
            with self._lock:
                self._cache.clear()

    def __len__(self) -> int:
        return len(self._cache) if self._cache is not None else 0
