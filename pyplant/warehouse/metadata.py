"""LMDB metadata: reactors, traces, ingredient producers and run history.

Layout of the environment ``<plantDir>/meta.lmdb`` (values are pickled dicts, protocol 5)::

    reactors     {reactor name: {"traces": [trace_id, ...], "used": {trace_id: unix time}}}
                 traces most recent first; "used" is when a trace last ran or matched again
    traces       {reactor name + "\\0" + trace_id: Trace record}
    ingredients  {ingredient name: {"producer": reactor name}}
    history      {"%020.6f-pid-n" start time: {"reactor", "started", "duration", "reason"}}
    codememo     {raw source digest: code hash}     so a warm process parses no unchanged code
    filehash     {real path: (dev, inode, size, mtime_ns, hashed_at, hash)}  input files (tracking.py)
    traceindex   {reactor + "\\0" + index key: [trace_id, ...]}  traces by what they are checked on
                 (code map and config tokens, ``trace_index_key``); the reactor record lists the
                 sets of parameters its traces read ("shapes"), so a lookup needs no scan
    leases       {lease id: {"pid", "started", "held": [location, ...]}}   live plants, for GC

One write transaction commits everything a finished reactor leaves, so a reader (another
process too) sees either all of it or nothing. Records are plain dicts, not pickled classes,
so that renaming a class never makes a plant directory unreadable.

LMDB must not be opened twice by one process (it breaks its POSIX locks), so environments are
shared per real path and reference counted: two ``Plant`` objects on one directory in one
process (a notebook cell re-run without ``shutdown()``) share one environment.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import pickle
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import lmdb

from .. import hashing

logger = logging.getLogger(__name__)

# Traces tried one by one when the index cannot answer (older directories, auxiliary params),
# and the number below which trying them all is cheaper than computing index keys.
SCAN_TRACES = 64
FEW_TRACES = 4
_MAP_SIZE = 1 << 40  # address space only; the file grows with the data
_DBS = (b"reactors", b"traces", b"ingredients", b"history", b"codememo", b"leases", b"filehash",
        b"traceindex")


@dataclass(frozen=True)
class Version:
    """One stored value of an ingredient.

    ``location`` is a path relative to the plant directory (a blob, a file, a spec's storage
    name), or None when the pickled value is ``inline`` in the record.
    """
    name: str
    type: str
    content_hash: str
    location: str | None = None
    inline: bytes | None = None
    meta: dict | None = None
    nbytes: int = 0

    def to_record(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_record(cls, rec: dict) -> "Version":
        return cls(**rec)


@dataclass(frozen=True)
class Trace:
    """What a finished reactor leaves: enough to decide later whether it is up to date.

    code    {label: code hash}: 'reactor' and 'sub:<name>' for each subreactor called
    config  {param: (stable token, short repr)} of non-auxiliary parameters read
    inputs  {ingredient: content hash} received (own products excluded)
    outputs {ingredient: Version} sent
    files   {real path: content hash} external files read (tracking.py)
    dirs    {real path: listing hash} directories listed
    env     {variable: value, None when unset} environment variables read
    finished  Unix time (seconds) when the reactor finished
    duration  seconds spent inside the reactor's body
    """
    reactor: str
    trace_id: str
    code: dict[str, str]
    config: dict[str, tuple[str, str]]
    inputs: dict[str, str]
    outputs: dict[str, Version]
    finished: float = 0.0
    duration: float = 0.0
    files: dict[str, str] = field(default_factory=dict)
    dirs: dict[str, str] = field(default_factory=dict)
    env: dict[str, str | None] = field(default_factory=dict)

    def to_record(self) -> dict:
        rec = dict(self.__dict__)
        rec["outputs"] = {k: v.to_record() for k, v in self.outputs.items()}
        return rec

    @classmethod
    def from_record(cls, rec: dict) -> "Trace":
        rec = dict(rec)
        rec["outputs"] = {k: Version.from_record(v) for k, v in rec["outputs"].items()}
        return cls(**rec)


def code_digest(code: dict[str, str]) -> str:
    """One hash of a code map, without subreactor labels (known only after a run)."""
    return hashing.combine("code-map", [(k, v) for k, v in code.items() if not k.startswith("sub:")])


def trace_index_key(code_map_digest: str, config_tokens: dict[str, str]) -> str:
    """What a trace is looked up by: the digest of its code map (``code_digest``) and the
    tokens of the config parameters it read. Equal keys: code and config verify."""
    return hashing.combine("trace-index", [("code", code_map_digest)]
                           + [("config", p, t) for p, t in config_tokens.items()])


def _index_key_of(trace: Trace) -> str:
    return trace_index_key(code_digest(trace.code), {p: t for p, (t, _) in trace.config.items()})


def _shape_of(trace: Trace) -> tuple[str, ...]:
    return tuple(sorted(trace.config))


@dataclass
class _Shared:
    env: lmdb.Environment
    lock_fd: int
    users: int = 0
    dbs: dict[bytes, Any] = field(default_factory=dict)
    thread_lock: threading.Lock = field(default_factory=threading.Lock)


_envs: dict[str, _Shared] = {}
_envs_lock = threading.Lock()


@contextlib.contextmanager
def _flock(fd: int, path: str) -> Iterator[None]:
    """Hold the plant's write lock; a writer that must wait says so in the log."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        logger.info("waiting for another process writing to %s", path)
        began = time.monotonic()
        fcntl.flock(fd, fcntl.LOCK_EX)
        logger.info("proceeding after waiting %.2f s for the write lock of %s",
                    time.monotonic() - began, path)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _open_env(path: str, durable: bool) -> lmdb.Environment:
    """Open the environment; garbage in its place is moved aside (every reactor will re-run,
    the blobs stay and are reused by content hash) with a warning."""
    def open_() -> lmdb.Environment:
        return lmdb.open(path, map_size=_MAP_SIZE, max_dbs=len(_DBS), subdir=True,
                         sync=durable, metasync=durable, max_readers=512, lock=True)
    try:
        return open_()
    except (lmdb.InvalidError, lmdb.CorruptedError, lmdb.VersionMismatchError, lmdb.BadValsizeError) as exc:
        aside = f"{path}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        logger.warning("the plant metadata in %s is damaged (%s); moved it to %s and starting "
                       "afresh: every reactor will run once", path, exc, aside)
        os.rename(path, aside)
        return open_()


def _decode_trace(raw: bytes, reactor: str) -> Trace | None:
    try:
        return Trace.from_record(pickle.loads(raw))
    except Exception as exc:  # a damaged record: the reactor runs again, nothing crashes
        logger.warning("skipping an unreadable trace of reactor '%s': %s", reactor, exc)
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _dump(obj: Any) -> bytes:
    return pickle.dumps(obj, protocol=5)


class MetadataStore:
    """The plant's LMDB environment, shared per directory within a process.

    Parameters
    ----------
    path : str
        Directory of the LMDB environment (created when missing).
    durable : bool
        fsync every commit (survives power loss). Without it, a commit survives a killed
        process but the last commits may be lost on an operating-system crash.

    Raises
    ------
    lmdb.Error
        when the environment cannot be opened (the caller turns it into ``PlantDirError``).
    """

    def __init__(self, path: str, durable: bool = False):
        self.path = os.path.realpath(path)
        with _envs_lock:
            shared = _envs.get(self.path)
            if shared is None:
                env = _open_env(self.path, durable)
                lock_fd = os.open(os.path.join(self.path, "write.lock"), os.O_RDWR | os.O_CREAT, 0o644)
                with _flock(lock_fd, self.path):  # open_db takes LMDB's write lock
                    dbs = {name: env.open_db(name) for name in _DBS}
                shared = _Shared(env, lock_fd, dbs=dbs)
                _envs[self.path] = shared
            shared.users += 1
        self._shared = shared
        self._closed = False
        self._memo_pending: dict[str, str] = {}
        self._file_hashes_pending: dict[str, tuple] = {}

    @property
    def env(self) -> lmdb.Environment:
        return self._shared.env

    def _db(self, name: bytes) -> Any:
        return self._shared.dbs[name]

    # --- reads (each in its own short read transaction) ---

    def _get(self, db: bytes, key: str) -> Any:
        with self.env.begin(db=self._db(db), buffers=True) as txn:
            raw = txn.get(key.encode())
            return None if raw is None else pickle.loads(raw)

    def trace_ids(self, reactor: str) -> list[str]:
        rec = self._get(b"reactors", reactor)
        return list(rec["traces"]) if rec else []

    def traces(self, reactor: str, limit: int = 64) -> list[Trace]:
        """The reactor's traces, most recent first (at most ``limit``)."""
        with self.env.begin(buffers=True) as txn:
            raw = txn.get(reactor.encode(), db=self._db(b"reactors"))
            if raw is None:
                return []
            result = []
            for tid in pickle.loads(raw)["traces"][:limit]:
                rec = txn.get(f"{reactor}\0{tid}".encode(), db=self._db(b"traces"))
                trace = _decode_trace(rec, reactor) if rec is not None else None
                if trace is not None:
                    result.append(trace)
            return result

    def producer(self, ingredient: str) -> str | None:
        rec = self._get(b"ingredients", ingredient)
        return rec["producer"] if rec else None

    def ingredient_names(self) -> list[str]:
        """Every ingredient ever produced in this plant directory."""
        return list(self.producers())

    def producers(self) -> dict[str, str]:
        """{ingredient: producing reactor} of every ingredient ever produced (one read)."""
        result = {}
        with self.env.begin(db=self._db(b"ingredients")) as txn:
            for key, raw in txn.cursor():
                try:
                    result[bytes(key).decode()] = pickle.loads(raw)["producer"]
                except Exception:  # a damaged record: as if never produced
                    continue
        return result

    def history(self) -> Iterator[dict]:
        with self.env.begin(db=self._db(b"history")) as txn:
            for _, raw in txn.cursor():
                yield pickle.loads(raw)

    # --- the code memo (hashing.CodeMemo); new entries ride along with the next commit ---

    def get(self, key: str) -> str | None:
        pending = self._memo_pending.get(key)
        if pending is not None:
            return pending
        with self.env.begin(db=self._db(b"codememo")) as txn:
            raw = txn.get(key.encode())
            return None if raw is None else raw.decode()

    def put(self, key: str, value: str) -> None:
        self._memo_pending[key] = value

    def get_many(self, keys: list[str]) -> dict[str, str]:
        """{key: value} of the memo entries found, read in one transaction."""
        found = {k: self._memo_pending[k] for k in keys if k in self._memo_pending}
        with self.env.begin(db=self._db(b"codememo")) as txn:
            for key in keys:
                if key not in found:
                    raw = txn.get(key.encode())
                    if raw is not None:
                        found[key] = bytes(raw).decode()
        return found

    def _flush_memo(self, txn: lmdb.Transaction) -> None:
        for key, value in self._memo_pending.items():
            txn.put(key.encode(), value.encode(), db=self._db(b"codememo"))
        self._memo_pending.clear()
        for path, entry in self._file_hashes_pending.items():
            txn.put(path.encode(), _dump(entry), db=self._db(b"filehash"))
        self._file_hashes_pending.clear()

    # --- input file hashes (tracking.HashStore); new entries ride along with the next commit ---

    def get_file_hash(self, path: str) -> tuple | None:
        pending = self._file_hashes_pending.get(path)
        if pending is not None:
            return pending
        try:
            return self._get(b"filehash", path)
        except Exception:  # a damaged entry: hash the file again
            return None

    def put_file_hash(self, path: str, entry: tuple) -> None:
        if len(path.encode()) < 500:  # LMDB keys are at most 511 bytes; longer: not cached
            self._file_hashes_pending[path] = entry

    # --- writes ---

    def commit_trace(self, trace: Trace, history: dict) -> None:
        """Record a finished reactor: its trace (made most recent), producers, history; atomically."""
        key = f"{trace.reactor}\0{trace.trace_id}".encode()
        with self._write() as txn:
            txn.put(key, _dump(trace.to_record()), db=self._db(b"traces"))
            self._promote(txn, trace.reactor, trace.trace_id, trace)
            for name in trace.outputs:
                txn.put(name.encode(), _dump({"producer": trace.reactor}), db=self._db(b"ingredients"))
            stamp = f"{history['started']:020.6f}-{os.getpid()}-{time.perf_counter_ns()}"
            txn.put(stamp.encode(), _dump(history), db=self._db(b"history"))
            self._flush_memo(txn)

    def promote_trace(self, reactor: str, trace: Trace) -> None:
        """Make an older trace the most recent one (a config switched back: A -> B -> A)."""
        with self._write() as txn:
            self._promote(txn, reactor, trace.trace_id, trace)
            for name in trace.outputs:
                txn.put(name.encode(), _dump({"producer": reactor}), db=self._db(b"ingredients"))

    def forget_trace(self, reactor: str, trace_id: str) -> None:
        """Drop a trace whose versions turned out missing or corrupted."""
        with self._write() as txn:
            self._unindex(txn, reactor, {trace_id})
            rec = txn.get(reactor.encode(), db=self._db(b"reactors"))
            if rec is not None:
                rec = pickle.loads(rec)
                rec["traces"] = [t for t in rec["traces"] if t != trace_id]
                rec.get("used", {}).pop(trace_id, None)
                txn.put(reactor.encode(), _dump(rec), db=self._db(b"reactors"))
            txn.delete(f"{reactor}\0{trace_id}".encode(), db=self._db(b"traces"))

    def _promote(self, txn: lmdb.Transaction, reactor: str, trace_id: str, trace: Trace) -> None:
        """Make ``trace`` the most recent of its reactor, in the reactor record and the index."""
        raw = txn.get(reactor.encode(), db=self._db(b"reactors"))
        rec = pickle.loads(raw) if raw is not None else {"traces": [], "shapes": []}
        used = rec.get("used", {})
        used[trace_id] = time.time()
        ids = [trace_id] + [t for t in rec["traces"] if t != trace_id]
        if "shapes" not in rec:  # written before the index existed: index its traces once
            rec["shapes"] = []
            for old in reversed(rec["traces"]):
                raw = txn.get(f"{reactor}\0{old}".encode(), db=self._db(b"traces"))
                old_trace = _decode_trace(raw, reactor) if raw is not None else None
                if old_trace is not None:
                    self._index(txn, old_trace, rec["shapes"])
        self._index(txn, trace, rec["shapes"])
        # a new latest trace: an earlier invalidation no longer explains anything
        txn.put(reactor.encode(), _dump({"traces": ids, "used": used, "shapes": rec["shapes"]}),
                db=self._db(b"reactors"))

    def _index(self, txn: lmdb.Transaction, trace: Trace, shapes: list[list[str]]) -> None:
        """Put ``trace`` first under its index key; note its set of parameters in ``shapes``."""
        if list(_shape_of(trace)) not in shapes:
            shapes.append(list(_shape_of(trace)))
        index_key = f"{trace.reactor}\0{_index_key_of(trace)}".encode()
        raw = txn.get(index_key, db=self._db(b"traceindex"))
        listed = pickle.loads(raw) if raw is not None else []
        txn.put(index_key, _dump([trace.trace_id] + [t for t in listed if t != trace.trace_id]),
                db=self._db(b"traceindex"))

    def _unindex(self, txn: lmdb.Transaction, reactor: str, trace_ids: set[str]) -> None:
        """Remove forgotten traces from the index (their records must still be readable)."""
        for tid in trace_ids:
            raw = txn.get(f"{reactor}\0{tid}".encode(), db=self._db(b"traces"))
            trace = _decode_trace(raw, reactor) if raw is not None else None
            if trace is None:
                continue
            index_key = f"{reactor}\0{_index_key_of(trace)}".encode()
            raw = txn.get(index_key, db=self._db(b"traceindex"))
            if raw is not None:
                left = [t for t in pickle.loads(raw) if t != tid]
                if left:
                    txn.put(index_key, _dump(left), db=self._db(b"traceindex"))
                else:
                    txn.delete(index_key, db=self._db(b"traceindex"))

    def candidate_traces(self, reactor: str, key_of: Any) -> tuple[list[str], str | None]:
        """``(trace ids, latest trace id)``: the ids found in the index, most recently used
        first, or the most recent ids (at most ``scan``) for a reactor whose traces predate the
        index. ``key_of(params) -> str | None`` gives the index key for one set of parameters
        (None: it cannot be looked up now, e.g. a parameter became auxiliary)."""
        with self.env.begin(buffers=True) as txn:
            raw = txn.get(reactor.encode(), db=self._db(b"reactors"))
            if raw is None:
                return [], None
            rec = pickle.loads(raw)
            latest = rec["traces"][0] if rec["traces"] else None
            if "shapes" not in rec or len(rec["traces"]) <= FEW_TRACES:
                return rec["traces"][:SCAN_TRACES], latest  # few: checking them is cheaper
            found: list[str] = []
            for params in rec["shapes"]:
                key = key_of(tuple(params))
                if key is None:  # check the recent traces one by one
                    return rec["traces"][:SCAN_TRACES], latest
                listed = txn.get(f"{reactor}\0{key}".encode(), db=self._db(b"traceindex"))
                if listed is not None:
                    found.extend(pickle.loads(listed))
        used = rec.get("used", {})
        return sorted(set(found), key=lambda t: -used.get(t, 0.0)), latest

    def mark_invalidated(self, reactor: str, reason: str) -> None:
        """Remember why a reactor's traces were forgotten, for 'why it re-ran'."""
        with self._write() as txn:
            raw = txn.get(reactor.encode(), db=self._db(b"reactors"))
            rec = pickle.loads(raw) if raw is not None else {"traces": []}
            rec["invalidated"] = reason
            txn.put(reactor.encode(), _dump(rec), db=self._db(b"reactors"))

    def invalidated(self, reactor: str) -> str | None:
        """Why the reactor's traces were invalidated, until it commits a new trace."""
        rec = self._get(b"reactors", reactor)
        return rec.get("invalidated") if rec else None

    def reactor_records(self) -> dict[str, dict]:
        """{reactor: {"traces": [...], "used": {...}}} of every reactor ever run."""
        with self.env.begin(db=self._db(b"reactors")) as txn:
            return {k.decode(): pickle.loads(v) for k, v in txn.cursor()}

    def trace(self, reactor: str, trace_id: str) -> Trace | None:
        with self.env.begin(db=self._db(b"traces")) as txn:
            raw = txn.get(f"{reactor}\0{trace_id}".encode())
        return None if raw is None else _decode_trace(raw, reactor)

    def drop_traces(self, reactor: str, trace_ids: set[str]) -> None:
        """Delete traces of one reactor in one transaction (GC)."""
        with self._write() as txn:
            raw = txn.get(reactor.encode(), db=self._db(b"reactors"))
            if raw is None:
                return
            self._unindex(txn, reactor, trace_ids)
            rec = pickle.loads(raw)
            rec["traces"] = [t for t in rec["traces"] if t not in trace_ids]
            rec["used"] = {t: u for t, u in rec.get("used", {}).items() if t not in trace_ids}
            txn.put(reactor.encode(), _dump(rec), db=self._db(b"reactors"))
            for tid in trace_ids:
                txn.delete(f"{reactor}\0{tid}".encode(), db=self._db(b"traces"))

    # --- leases: which plants are alive and what they hold (GC never deletes it) ---

    def take_lease(self) -> str:
        lease = f"{os.getpid()}-{time.time_ns()}"
        self.update_lease(lease, [])
        return lease

    def update_lease(self, lease: str, held: list[str]) -> None:
        pid, started_ns = lease.split("-")
        with self._write() as txn:
            txn.put(lease.encode(), _dump({"pid": int(pid), "started": int(started_ns) / 1e9,
                                           "held": held}), db=self._db(b"leases"))

    def release_lease(self, lease: str) -> None:
        with self._write() as txn:
            txn.delete(lease.encode(), db=self._db(b"leases"))

    def live_leases(self) -> list[dict]:
        """Leases of processes that are still alive; leases of dead processes are dropped."""
        with self.env.begin(db=self._db(b"leases")) as txn:
            leases = {k.decode(): pickle.loads(v) for k, v in txn.cursor()}
        dead = [k for k, v in leases.items() if not _pid_alive(v["pid"])]
        if dead:
            with self._write() as txn:
                for key in dead:
                    txn.delete(key.encode(), db=self._db(b"leases"))
        return [v for k, v in leases.items() if k not in dead]

    @contextlib.contextmanager
    def _write(self) -> Iterator[lmdb.Transaction]:
        """A write transaction, serialized across threads and processes.

        LMDB would block a second writer silently; taking our own lock first lets a writer that
        must wait say so. Write transactions last milliseconds: a long reactor holds none.
        """
        with self._shared.thread_lock, _flock(self._shared.lock_fd, self.path):
            with self.env.begin(write=True) as txn:
                yield txn

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._memo_pending or self._file_hashes_pending:
            with self._write() as txn:
                self._flush_memo(txn)
        with _envs_lock:
            self._shared.users -= 1
            if self._shared.users == 0:
                _envs.pop(self.path, None)
                self._shared.env.close()
                os.close(self._shared.lock_fd)
