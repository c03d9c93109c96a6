"""The LMDB metadata store: ``MetadataBackend`` on the plant's environment ``meta.lmdb``.

Databases (values are pickled plain dicts or lists, protocol 5; records in ``records.py``)::

    reactors     {reactor name: ReactorRecord}
    traces       {reactor name + "\\0" + trace_id: Trace}
    ingredients  {ingredient name: {"producer": reactor name}}
    history      {"%020.6f-pid-n" start time: HistoryRecord}
    codememo     {raw source digest: code hash}     so a warm process parses no unchanged code
    filehash     {real path: (dev, inode, size, mtime_ns, hashed_at, hash)}  input files (tracking.py)
    traceindex   {reactor + "\\0" + index key: [trace_id, ...]}  traces by what they are checked on
                 (code map and config tokens, ``records.trace_index_key``); the reactor record
                 lists the sets of parameters its traces read (``shapes``), so a lookup needs no scan
    leases       unused (leases are files, see leases.py); kept so that older directories open
                 unchanged

A damaged record (an unreadable pickle, a record of the wrong shape) is skipped with a warning
naming its database and key (``decode``): the reactor it describes runs again. One write
transaction commits everything a finished reactor leaves, so a reader (another process too)
sees either all of it or nothing. Every ``lmdb.Error`` becomes a ``WarehouseError`` (or a
``PlantClosedError`` once closed); the environment itself is opened and validated by
``lmdb_env.py``.
"""
from __future__ import annotations

import functools
import logging
import os
import pickle
import time
from typing import Any, Callable, Iterator, TypeVar

import lmdb

from ..errors import PlantClosedError, PlantDirError, PyPlantError, WarehouseError
from . import lmdb_env
from .backend import FEW_TRACES, SCAN_TRACES, MetadataBackend
from .records import HistoryRecord, ReactorRecord, RecordError, Trace, index_key_of, params_of

logger = logging.getLogger(__name__)

__all__ = ["LmdbMetadata", "decode"]

_F = TypeVar("_F", bound=Callable[..., Any])


def _translated(method: _F) -> _F:
    """Turn an ``lmdb.Error`` or ``OSError`` raised by ``method`` into ``PlantClosedError``
    (the store was closed) or ``WarehouseError`` (the environment cannot be read or written)."""
    @functools.wraps(method)
    def guarded(self: "LmdbMetadata", *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except PyPlantError:
            raise
        except (lmdb.Error, OSError) as exc:
            raise self._error(method.__name__, exc) from exc
    return guarded  # type: ignore[return-value]


def _is_producer_record(rec: Any) -> str:
    if not isinstance(rec, dict) or not isinstance(rec.get("producer"), str):
        raise RecordError("an ingredient record names no producer")
    return rec["producer"]


def _is_id_list(rec: Any) -> list[str]:
    if not isinstance(rec, list) or not all(isinstance(t, str) for t in rec):
        raise RecordError("an index record is not a list of trace ids")
    return rec


def _is_file_hash(rec: Any) -> tuple:
    if not isinstance(rec, tuple) or len(rec) != 6:
        raise RecordError("a file hash record is not a 6-tuple")
    return rec


# What each database's records decode to; a record they refuse is damaged.
_DECODERS: dict[bytes, Callable[[Any], Any]] = {
    b"reactors": ReactorRecord.from_record,
    b"traces": Trace.from_record,
    b"ingredients": _is_producer_record,
    b"history": HistoryRecord.from_record,
    b"traceindex": _is_id_list,
    b"filehash": _is_file_hash,
}
_warned: set[tuple[str, bytes, bytes]] = set()


def decode(raw: Any, db: bytes, key: bytes | str, path: str = "") -> Any | None:
    """The record ``raw`` of database ``db``, typed (``records.py``), or None when it is
    damaged: then a warning names the database and the key (once per process), and the caller
    treats the record as absent (a reactor without traces runs again; a producer unknown is
    discovered again)."""
    try:
        rec = pickle.loads(raw)
        decoder = _DECODERS.get(db)
        return rec if decoder is None else decoder(rec)
    except Exception as exc:  # any unpickling failure is damage: the record is skipped
        key_bytes = key.encode(errors="surrogatepass") if isinstance(key, str) else bytes(key)
        if (path, db, key_bytes) not in _warned:
            _warned.add((path, db, key_bytes))
            logger.warning("skipping the damaged %s record %r in %s: %s: %s", db.decode(),
                           key_bytes.decode(errors="replace"), path or "the plant metadata",
                           type(exc).__name__, exc)
        return None


def _dump(obj: Any) -> bytes:
    return pickle.dumps(obj, protocol=5)


def _trace_key(reactor: str, trace_id: str) -> bytes:
    return f"{reactor}\0{trace_id}".encode()


class LmdbMetadata(MetadataBackend):
    """The plant's LMDB environment, shared per directory within a process.

    Parameters
    ----------
    path : str
        Directory of the LMDB environment (created when missing, unless ``readonly``).
    durable : bool
        fsync every commit (survives power loss). Without it, a commit survives a killed
        process but the last commits may be lost on an operating-system crash.
    readonly : bool
        Never write: no lock of ours, no buffered entries, a damaged environment is refused
        instead of moved aside; every write method raises ``WarehouseError``.

    Raises
    ------
    PlantDirError
        when the environment cannot be opened (read-only: also when it is missing or damaged).
    PlantClosedError
        from every method once ``close`` was called.
    WarehouseError
        from every method when the environment cannot be read or written.
    """

    def __init__(self, path: str, durable: bool = False, readonly: bool = False):
        self.path = os.path.realpath(path)
        self.readonly = readonly
        self._closed = True
        self._memo_pending: dict[str, str] = {}
        self._file_hashes_pending: dict[str, tuple] = {}
        try:
            self._shared = lmdb_env.acquire(self.path, durable, readonly)
        except (lmdb.Error, OSError, lmdb_env.Damaged) as exc:
            raise PlantDirError(f"cannot open the plant metadata in {self.path}: {exc}",
                                path=self.path) from exc
        self._closed = False

    def _error(self, what: str, exc: Exception) -> PlantClosedError | WarehouseError:
        self._note_damage(exc)
        if self._closed:
            return PlantClosedError(f"the plant metadata in {self.path} was closed (the plant was "
                                    f"shut down)", path=self.path)
        return WarehouseError(f"the plant metadata in {self.path} failed ({what}): "
                              f"{type(exc).__name__}: {exc}", path=self.path)

    @property
    def env(self) -> lmdb.Environment:
        """The LMDB environment; ``PlantClosedError`` once closed."""
        if self._closed:
            raise PlantClosedError(f"the plant metadata in {self.path} was closed (the plant was "
                                   f"shut down)", path=self.path)
        return self._shared.env

    @property
    def closed(self) -> bool:
        return self._closed

    def _db(self, name: bytes) -> Any:
        return self._shared.dbs[name]

    def _read(self, txn: lmdb.Transaction, db: bytes, key: bytes | str) -> Any:
        """The decoded record under ``key`` in ``db`` within ``txn``, or None (absent, damaged,
        or a database an older directory does not have)."""
        handle = self._db(db)
        if handle is None:
            return None
        raw_key = key.encode(errors="surrogatepass") if isinstance(key, str) else key
        raw = txn.get(raw_key, db=handle)
        return None if raw is None else decode(raw, db, raw_key, self.path)

    def _items(self, txn: lmdb.Transaction, db: bytes) -> Iterator[tuple[str, Any]]:
        """(key, decoded record) of every readable record of ``db``."""
        handle = self._db(db)
        if handle is None:
            return
        for key, raw in txn.cursor(db=handle):
            rec = decode(raw, db, key, self.path)
            if rec is not None:
                yield bytes(key).decode(errors="surrogateescape"), rec

    # --- reads (each in its own short read transaction) ---

    @_translated
    def trace_ids(self, reactor: str) -> list[str]:
        with self.env.begin(buffers=True) as txn:
            rec = self._read(txn, b"reactors", reactor)
        return list(rec.traces) if rec else []

    @_translated
    def traces(self, reactor: str, limit: int = 64) -> list[Trace]:
        with self.env.begin(buffers=True) as txn:
            rec = self._read(txn, b"reactors", reactor)
            if rec is None:
                return []
            found = (self._read(txn, b"traces", _trace_key(reactor, tid)) for tid in rec.traces[:limit])
            return [trace for trace in found if trace is not None]

    @_translated
    def trace(self, reactor: str, trace_id: str) -> Trace | None:
        with self.env.begin(buffers=True) as txn:
            return self._read(txn, b"traces", _trace_key(reactor, trace_id))

    @_translated
    def producer(self, ingredient: str) -> str | None:
        with self.env.begin(buffers=True) as txn:
            return self._read(txn, b"ingredients", ingredient)

    @_translated
    def producers(self) -> dict[str, str]:
        with self.env.begin() as txn:
            return dict(self._items(txn, b"ingredients"))

    @_translated
    def history(self) -> Iterator[HistoryRecord]:
        with self.env.begin() as txn:
            records = [rec for _, rec in self._items(txn, b"history")]
        return iter(records)

    @_translated
    def reactor_records(self) -> dict[str, ReactorRecord]:
        with self.env.begin() as txn:
            return dict(self._items(txn, b"reactors"))

    @_translated
    def invalidated(self, reactor: str) -> str | None:
        with self.env.begin(buffers=True) as txn:
            rec = self._read(txn, b"reactors", reactor)
        return rec.invalidated if rec else None

    @_translated
    def candidate_traces(self, reactor: str, key_of: Callable) -> tuple[list[str], str | None]:
        with self.env.begin(buffers=True) as txn:
            return self._candidates(txn, reactor, key_of)

    @_translated
    def candidate_traces_first(self, reactor: str, key_of: Callable) -> tuple[list[str], str | None, Trace | None]:
        with self.env.begin(buffers=True) as txn:  # one read transaction for both
            found, latest = self._candidates(txn, reactor, key_of)
            first = self._read(txn, b"traces", _trace_key(reactor, found[0])) if found else None
        return found, latest, first

    def _candidates(self, txn: lmdb.Transaction, reactor: str, key_of: Callable) -> tuple[list[str], str | None]:
        rec = self._read(txn, b"reactors", reactor)
        if rec is None:
            return [], None
        latest = rec.traces[0] if rec.traces else None
        if rec.shapes is None or len(rec.traces) <= FEW_TRACES:
            return rec.traces[:SCAN_TRACES], latest  # few: checking them is cheaper
        found: list[str] = []
        for params in rec.shapes:
            key = key_of(tuple(params))
            if key is None:  # check the recent traces one by one
                return rec.traces[:SCAN_TRACES], latest
            found.extend(self._read(txn, b"traceindex", f"{reactor}\0{key}") or [])
        used = rec.used
        return sorted(set(found), key=lambda t: -used.get(t, 0.0)), latest

    # --- the code memo and input-file hashes; new entries ride along with the next commit ---

    @_translated
    def get(self, key: str) -> str | None:
        pending = self._memo_pending.get(key)
        if pending is not None:
            return pending
        handle = self._db(b"codememo")
        if handle is None:
            return None
        with self.env.begin(db=handle) as txn:
            raw = txn.get(key.encode())
        if raw is None:
            return None
        try:
            return raw.decode()
        except UnicodeDecodeError:
            decode(b"", b"codememo", key, self.path)  # warns once; the code is hashed again
            return None

    def put(self, key: str, value: str) -> None:
        if not self.readonly:
            self._memo_pending[key] = value

    @_translated
    def get_many(self, keys: list[str]) -> dict[str, str]:
        found = {k: self._memo_pending[k] for k in keys if k in self._memo_pending}
        handle = self._db(b"codememo")
        if handle is None:
            return found
        with self.env.begin(db=handle) as txn:
            for key in keys:
                if key not in found:
                    raw = txn.get(key.encode())
                    if raw is not None:
                        try:
                            found[key] = bytes(raw).decode()
                        except UnicodeDecodeError:
                            decode(b"", b"codememo", key, self.path)
        return found

    @_translated
    def get_file_hash(self, path: str) -> tuple | None:
        pending = self._file_hashes_pending.get(path)
        if pending is not None:
            return pending
        with self.env.begin(buffers=True) as txn:
            return self._read(txn, b"filehash", path)  # a damaged entry reads as absent: hashed again

    def put_file_hash(self, path: str, entry: tuple) -> None:
        if len(path.encode(errors="surrogatepass")) < 500 and not self.readonly:  # LMDB keys: 511 bytes
            self._file_hashes_pending[path] = entry

    def _flush_memo(self, txn: lmdb.Transaction) -> None:
        for key, value in self._memo_pending.items():
            txn.put(key.encode(), value.encode(), db=self._db(b"codememo"))
        self._memo_pending.clear()
        for path, entry in self._file_hashes_pending.items():
            txn.put(path.encode(errors="surrogatepass"), _dump(entry), db=self._db(b"filehash"))
        self._file_hashes_pending.clear()

    # --- writes ---

    def commit_trace(self, trace: Trace, history: HistoryRecord | dict) -> None:
        try:
            self._commit(trace, HistoryRecord.from_record(history))
        except PyPlantError:
            raise
        except (lmdb.Error, OSError) as exc:  # a full disk, a read-only mount: what finished before stays
            if self._closed:
                raise self._error("commit_trace", exc) from exc
            damaged = self._note_damage(exc)
            raise WarehouseError(f"cannot record the trace of reactor '{trace.reactor}': "
                                 f"{type(exc).__name__}: {exc}" + (
                                     "; the metadata is damaged: it will be moved aside when the "
                                     "plant is opened next, and every reactor will run once"
                                     if damaged else ""),
                                 reactor=trace.reactor, path=self.path) from exc

    def _note_damage(self, exc: BaseException) -> bool:
        """Mark the environment for moving aside when LMDB reports a damaged page."""
        if isinstance(exc, lmdb_env.DAMAGE_ERRORS) and not self.readonly:
            lmdb_env.mark_damaged(self.path, exc)
            return True
        return False

    def _commit(self, trace: Trace, history: HistoryRecord) -> None:
        record = _dump(trace.to_record())
        stamp = f"{history.started:020.6f}-{os.getpid()}-{time.perf_counter_ns()}".encode()
        with self._write() as txn:
            txn.put(_trace_key(trace.reactor, trace.trace_id), record, db=self._db(b"traces"))
            self._promote(txn, trace.reactor, trace)
            for name in trace.published().values():
                txn.put(name.encode(), _dump({"producer": trace.reactor}), db=self._db(b"ingredients"))
            txn.put(stamp, _dump(history.to_record()), db=self._db(b"history"))
            self._flush_memo(txn)

    @_translated
    def promote_trace(self, reactor: str, trace: Trace) -> None:
        with self._write() as txn:
            self._promote(txn, reactor, trace)
            for name in trace.published().values():
                txn.put(name.encode(), _dump({"producer": reactor}), db=self._db(b"ingredients"))

    def _promote(self, txn: lmdb.Transaction, reactor: str, trace: Trace) -> None:
        """Make ``trace`` the most recent of its reactor, in the reactor record and the index;
        a new latest trace clears an earlier invalidation (it no longer explains anything)."""
        rec = self._read(txn, b"reactors", reactor) or ReactorRecord([], shapes=[])  # a damaged one is replaced
        used = dict(rec.used)
        used[trace.trace_id] = time.time()
        ids = [trace.trace_id] + [t for t in rec.traces if t != trace.trace_id]
        shapes = rec.shapes
        if shapes is None:  # written before the index existed: index its traces once
            shapes = []
            for old in reversed(rec.traces):
                old_trace = self._read(txn, b"traces", _trace_key(reactor, old))
                if old_trace is not None:
                    self._index(txn, old_trace, shapes)
        self._index(txn, trace, shapes)
        txn.put(reactor.encode(), _dump(ReactorRecord(ids, used, shapes).to_record()),
                db=self._db(b"reactors"))

    def _index(self, txn: lmdb.Transaction, trace: Trace, shapes: list[list[str]]) -> None:
        """Put ``trace`` first under its index key; note its set of parameters in ``shapes``."""
        if list(params_of(trace)) not in shapes:
            shapes.append(list(params_of(trace)))
        index_key = f"{trace.reactor}\0{index_key_of(trace)}"
        listed = self._read(txn, b"traceindex", index_key) or []
        txn.put(index_key.encode(), _dump([trace.trace_id] + [t for t in listed if t != trace.trace_id]),
                db=self._db(b"traceindex"))

    def _unindex(self, txn: lmdb.Transaction, reactor: str, trace_ids: set[str]) -> None:
        """Remove forgotten traces from the index (their records must still be readable)."""
        for tid in trace_ids:
            trace = self._read(txn, b"traces", _trace_key(reactor, tid))
            if trace is None:
                continue
            index_key = f"{reactor}\0{index_key_of(trace)}".encode()
            listed = self._read(txn, b"traceindex", index_key)
            if listed is not None:
                left = [t for t in listed if t != tid]
                if left:
                    txn.put(index_key, _dump(left), db=self._db(b"traceindex"))
                else:
                    txn.delete(index_key, db=self._db(b"traceindex"))

    @_translated
    def mark_invalidated(self, reactor: str, reason: str) -> None:
        with self._write() as txn:
            rec = self._read(txn, b"reactors", reactor) or ReactorRecord([])
            marked = ReactorRecord(rec.traces, rec.used, rec.shapes, reason)
            txn.put(reactor.encode(), _dump(marked.to_record()), db=self._db(b"reactors"))

    @_translated
    def drop_traces(self, reactor: str, trace_ids: set[str]) -> None:
        with self._write() as txn:
            rec = self._read(txn, b"reactors", reactor)
            if rec is not None:
                self._unindex(txn, reactor, trace_ids)
                left = ReactorRecord([t for t in rec.traces if t not in trace_ids],
                                     {t: u for t, u in rec.used.items() if t not in trace_ids},
                                     rec.shapes, rec.invalidated)
                txn.put(reactor.encode(), _dump(left.to_record()), db=self._db(b"reactors"))
            for tid in trace_ids:
                txn.delete(_trace_key(reactor, tid), db=self._db(b"traces"))

    def _write(self) -> lmdb_env.WriteTxn:
        """A write transaction, serialized across threads and processes (``with``).

        LMDB would block a second writer silently; taking our own lock first lets a writer that
        must wait say so. Write transactions last milliseconds: a long reactor holds none.
        """
        self.env  # raises PlantClosedError once closed
        if self.readonly:
            raise WarehouseError(f"the plant metadata in {self.path} is open read-only",
                                 path=self.path)
        return lmdb_env.WriteTxn(self._shared)

    def recover(self) -> None:
        if not self._closed:
            self._shared.recover()

    def close(self) -> None:
        if self._closed:
            return
        try:
            if self._memo_pending or self._file_hashes_pending:
                with self._write() as txn:
                    self._flush_memo(txn)
        except (lmdb.Error, OSError) as exc:  # only caches of code and file hashes
            logger.warning("could not save the code memo of %s: %s", self.path, exc)
        finally:
            self._detach()

    def _detach(self) -> None:
        # Marked closed first, under the registry lock: see lmdb_env.release.
        with lmdb_env.registry_lock:
            if self._closed:
                return
            self._closed = True
            lmdb_env.release(self._shared)

