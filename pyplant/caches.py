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
    """{object (by identity, weakly): value}; the object must support weak references.

    An entry is one weak reference that carries its key and value (``_Entry``), dropped by one
    callback shared by the cache: a cache of every code object of a long chain adds one
    object per entry for the cyclic collector to scan, not a closure and its cells.
    """

    def __init__(self) -> None:
        data: dict[int, _Entry] = {}
        self._data = data

        def drop(entry: _Entry) -> None:  # the object died (its id may be reused: check)
            if data.get(entry.key) is entry:
                del data[entry.key]
        self._drop = drop

    def get(self, obj: Any) -> V | None:
        entry = self._data.get(id(obj))
        if entry is not None and entry() is obj:
            return entry.value
        return None

    def put(self, obj: Any, value: V) -> V:
        entry = _Entry(obj, self._drop)
        entry.key = key = id(obj)
        entry.value = value
        self._data[key] = entry
        return value

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        self._data.clear()


class _Entry(weakref.ref):
    """A weak reference to a cached object, with the object's id and its cached value (set
    after creation: a subclass without ``__init__`` of its own is made as fast as a plain one)."""
    __slots__ = ("key", "value")


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
