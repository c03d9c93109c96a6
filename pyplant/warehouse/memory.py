"""``MetadataBackend`` in memory: plain dicts, for tests, engine unit tests and tools.

It keeps the same records as the LMDB store (``records.py``) and passes the same conformance
suite (``tests/test_backends.py``), but forgets everything when it is dropped and is not
shared between processes. Records are stored as their ``to_record()`` dicts and decoded on
every read, as the LMDB store does, so a caller never mutates a stored record through an
object it was given. Thread-safe (one lock around every method).
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Iterator

from ..errors import PlantClosedError
from .backend import MetadataBackend
from .records import HistoryRecord, ReactorRecord, Trace, index_key_of, params_of

__all__ = ["InMemoryMetadata"]


class InMemoryMetadata(MetadataBackend):
    """A ``MetadataBackend`` held in dicts; see the module docstring.

    Raises
    ------
    PlantClosedError
        from every method once ``close`` was called.
    """

    def __init__(self) -> None:
        self._reactors: dict[str, dict] = {}
        self._traces: dict[tuple[str, str], dict] = {}
        self._producers: dict[str, str] = {}
        self._history: list[tuple[float, int, dict]] = []
        self._memo: dict[str, str] = {}
        self._file_hashes: dict[str, tuple] = {}
        self._memo_pending: dict[str, str] = {}
        self._file_hashes_pending: dict[str, tuple] = {}
        self._lock = threading.RLock()
        self._closed = False

    def _open(self) -> None:
        if self._closed:
            raise PlantClosedError("the in-memory plant metadata was closed")

    def _reactor(self, reactor: str) -> ReactorRecord | None:
        rec = self._reactors.get(reactor)
        return None if rec is None else ReactorRecord.from_record(rec)

    def _trace(self, reactor: str, trace_id: str) -> Trace | None:
        rec = self._traces.get((reactor, trace_id))
        return None if rec is None else Trace.from_record(rec)

    # --- reads ---

    def trace_ids(self, reactor: str) -> list[str]:
        with self._lock:
            self._open()
            rec = self._reactor(reactor)
            return list(rec.traces) if rec else []

    def traces(self, reactor: str, limit: int = 64) -> list[Trace]:
        with self._lock:
            found = (self._trace(reactor, tid) for tid in self.trace_ids(reactor)[:limit])
            return [t for t in found if t is not None]

    def trace(self, reactor: str, trace_id: str) -> Trace | None:
        with self._lock:
            self._open()
            return self._trace(reactor, trace_id)

    def candidate_traces(self, reactor: str,
                         key_of: Callable[[tuple[str, ...]], str | None]) -> tuple[list[str], str | None]:
        """Every trace whose index key matches ``key_of`` (or, when ``key_of`` cannot say, every
        trace), most recently used first: no index is kept, the traces are few."""
        with self._lock:
            self._open()
            rec = self._reactor(reactor)
            if rec is None:
                return [], None
            keys: dict[tuple[str, ...], str | None] = {}
            found = []
            for tid in rec.traces:
                trace = self._trace(reactor, tid)
                if trace is None:
                    continue
                if trace.params not in keys:
                    keys[trace.params] = key_of(trace.params)
                wanted = keys[trace.params]
                if wanted is None or wanted == index_key_of(trace):
                    found.append(tid)
            found.sort(key=lambda t: -rec.used.get(t, 0.0))
            return found, (rec.traces[0] if rec.traces else None)

    def reactor_records(self) -> dict[str, ReactorRecord]:
        with self._lock:
            self._open()
            return {name: ReactorRecord.from_record(rec) for name, rec in self._reactors.items()}

    def invalidated(self, reactor: str) -> str | None:
        with self._lock:
            self._open()
            rec = self._reactor(reactor)
            return rec.invalidated if rec else None

    def producer(self, ingredient: str) -> str | None:
        with self._lock:
            self._open()
            return self._producers.get(ingredient)

    def producers(self) -> dict[str, str]:
        with self._lock:
            self._open()
            return dict(self._producers)

    def history(self) -> Iterator[HistoryRecord]:
        with self._lock:
            self._open()
            return iter([HistoryRecord.from_record(rec) for _, _, rec in sorted(self._history)])

    # --- writes ---

    def commit_trace(self, trace: Trace, history: HistoryRecord | dict) -> None:
        record = HistoryRecord.from_record(history)
        with self._lock:
            self._open()
            self._traces[(trace.reactor, trace.trace_id)] = trace.to_record()
            self._promote(trace.reactor, trace)
            self._history.append((record.started, len(self._history), record.to_record()))
            self._flush()

    def promote_trace(self, reactor: str, trace: Trace) -> None:
        with self._lock:
            self._open()
            self._promote(reactor, trace)

    def _promote(self, reactor: str, trace: Trace) -> None:
        rec = self._reactor(reactor) or ReactorRecord([], shapes=[])
        used = dict(rec.used)
        used[trace.trace_id] = time.time()
        ids = [trace.trace_id] + [t for t in rec.traces if t != trace.trace_id]
        shapes = list(rec.shapes or [])
        if list(params_of(trace)) not in shapes:
            shapes.append(list(params_of(trace)))
        self._reactors[reactor] = ReactorRecord(ids, used, shapes).to_record()
        for name in trace.published().values():
            self._producers[name] = reactor

    def drop_traces(self, reactor: str, trace_ids: set[str]) -> None:
        with self._lock:
            self._open()
            rec = self._reactor(reactor)
            if rec is not None:
                left = ReactorRecord([t for t in rec.traces if t not in trace_ids],
                                     {t: u for t, u in rec.used.items() if t not in trace_ids},
                                     rec.shapes, rec.invalidated)
                self._reactors[reactor] = left.to_record()
            for tid in trace_ids:
                self._traces.pop((reactor, tid), None)

    def mark_invalidated(self, reactor: str, reason: str) -> None:
        with self._lock:
            self._open()
            rec = self._reactor(reactor) or ReactorRecord([])
            self._reactors[reactor] = ReactorRecord(rec.traces, rec.used, rec.shapes, reason).to_record()

    # --- the code memo and input-file hashes: buffered until the next write, as on disk ---

    def get(self, key: str) -> str | None:
        with self._lock:
            self._open()
            return self._memo_pending.get(key, self._memo.get(key))

    def put(self, key: str, value: str) -> None:
        with self._lock:
            self._memo_pending[key] = value

    def get_many(self, keys: list[str]) -> dict[str, str]:
        with self._lock:
            self._open()
            found = {k: self.get(k) for k in keys}
            return {k: v for k, v in found.items() if v is not None}

    def get_file_hash(self, path: str) -> tuple | None:
        with self._lock:
            self._open()
            return self._file_hashes_pending.get(path, self._file_hashes.get(path))

    def put_file_hash(self, path: str, entry: tuple) -> None:
        if len(path.encode(errors="surrogatepass")) < 500:
            with self._lock:
                self._file_hashes_pending[path] = entry

    def _flush(self) -> None:
        self._memo.update(self._memo_pending)
        self._memo_pending.clear()
        self._file_hashes.update(self._file_hashes_pending)
        self._file_hashes_pending.clear()

    # --- lifecycle ---

    @property
    def closed(self) -> bool:
        return self._closed

    def recover(self) -> None:
        """Nothing to release: no transaction outlives a method."""

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._flush()
                self._closed = True
