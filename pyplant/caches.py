"""Per-process caches that shrink: entries keyed by an object's identity live as long as it.

Code hashes, bytecode facts and labels are computed once per code object per process. Keyed
by ``id()`` in a plain dict they would keep every code object ever seen (a notebook redefining
a function a hundred times) and a reused id could answer for a dead object. ``IdentityCache``
holds a weak reference instead and drops the entry when the object dies. ``BoundedCache`` is a
small LRU for values keyed by strings (digests).
"""
from __future__ import annotations

import collections
import threading
import weakref
from typing import Any, Generic, TypeVar

V = TypeVar("V")


class IdentityCache(Generic[V]):
    """{object (by identity, weakly): value}; the object must support weak references."""

    def __init__(self) -> None:
        self._data: dict[int, tuple[weakref.ref, V]] = {}

    def get(self, obj: Any) -> V | None:
        entry = self._data.get(id(obj))
        if entry is not None and entry[0]() is obj:
            return entry[1]
        return None

    def put(self, obj: Any, value: V) -> V:
        key = id(obj)
        data = self._data
        # _drop bound now: the callback may run at interpreter exit, after globals are cleared
        ref = weakref.ref(obj, lambda _, key=key, drop=_drop: drop(data, key, ref))
        data[key] = (ref, value)
        return value

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def clear(self) -> None:
        self._data.clear()


def _drop(data: dict, key: int, ref: weakref.ref) -> None:
    entry = data.get(key)
    if entry is not None and entry[0] is ref:
        del data[key]


class BoundedCache(Generic[V]):
    """{str: value}, the ``size`` most recently used kept."""

    def __init__(self, size: int = 65536) -> None:
        self.size = size
        self._data: collections.OrderedDict[str, V] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> V | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: str, value: V) -> V:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
