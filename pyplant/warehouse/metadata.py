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
    leases       unused (leases are files now, see leases.py); kept so that older
                 directories open unchanged

A damaged record (an unreadable pickle, a record of the wrong shape) is skipped with a warning
naming its database and key (``decode``): the reactor it describes runs again. A damaged
environment (empty, truncated, garbage, unreadable pages) is detected *before* LMDB maps it
(``_check_file``: meta pages and file size; every record is read when the environment was not
closed cleanly since it last changed) and moved aside (``meta.lmdb.corrupt-*``) with a warning.

One write transaction commits everything a finished reactor leaves, so a reader (another
process too) sees either all of it or nothing. Records are plain dicts, not pickled classes,
so that renaming a class never makes a plant directory unreadable.

LMDB must not be opened twice by one process (it breaks its POSIX locks), so environments are
shared per real path and reference counted: two ``Plant`` objects on one directory in one
process (a notebook cell re-run without ``shutdown()``) share one environment.
"""
from __future__ import annotations

import fcntl
import logging
import os
import pickle
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator

import lmdb

from .. import hashing
from ..errors import PlantClosedError
from .locks import SafeLock

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
    inputs  {slot: content hash} received (own products excluded); a reactor's slots are the
            ingredient names, a step call's its arguments (see ``engine/tasks.py``)
    outputs {slot: Version} sent
    names   {slot: ingredient} the ingredients the slots were sent as, where they differ
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
    names: dict[str, str] = field(default_factory=dict)

    def published(self) -> dict[str, str]:
        """{slot: ingredient name} of every output."""
        return {slot: self.names.get(slot, slot) for slot in self.outputs}

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


# --- the environment, shared per directory within a process ---------------------------------

class _Shared:
    """One LMDB environment and its write lock, shared by the stores of one process.

    The write lock is an ``flock`` on ``write.lock`` taken through one descriptor *per thread*:
    it excludes other threads and other processes alike, and a thread that takes it again on
    its own descriptor (after an interrupt left it held) does not deadlock on itself.
    """

    def __init__(self, path: str, env: lmdb.Environment, dbs: dict[bytes, Any]):
        self.path = path
        self.env = env
        self.dbs = dbs
        self.users = 0
        self._local = threading.local()
        self._fds: list[int] = []
        self._fds_lock = SafeLock()

    def thread_fd(self) -> int:
        fd = getattr(self._local, "fd", None)
        if fd is None:
            fd = os.open(os.path.join(self.path, "write.lock"), os.O_RDWR | os.O_CREAT, 0o644)
            with self._fds_lock:
                self._fds.append(fd)
            self._local.fd = fd
        return fd

    @property
    def open_txn(self) -> lmdb.Transaction | None:
        return getattr(self._local, "txn", None)

    @open_txn.setter
    def open_txn(self, txn: lmdb.Transaction | None) -> None:
        self._local.txn = txn

    def recover(self) -> None:
        """Abort a write transaction and release the write lock left by an interrupted
        ``_WriteTxn`` of this thread (both are no-ops when nothing was left)."""
        txn, self.open_txn = self.open_txn, None
        if txn is not None:
            txn.abort()
        fd = getattr(self._local, "fd", None)
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def alive(self) -> bool:
        try:
            self.env.flags()
            return True
        except lmdb.Error:
            return False

    def close(self) -> None:
        """Close the environment (idempotent) and record a clean close."""
        self.env.close()
        _write_clean_stamp(self.path)
        with self._fds_lock:
            fds, self._fds = self._fds, []
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass


_envs: dict[str, _Shared] = {}
_envs_lock = SafeLock()  # a KeyboardInterrupt never leaves it held (see locks.py)


def _lock(fd: int, path: str) -> None:
    """Take the plant's write lock; a writer that must wait says so in the log."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        logger.info("waiting for another process writing to %s", path)
        began = time.monotonic()
        fcntl.flock(fd, fcntl.LOCK_EX)
        logger.info("proceeding after waiting %.2f s for the write lock of %s",
                    time.monotonic() - began, path)


class _WriteTxn:
    """``with store._write() as txn``: the write lock, then one write transaction.

    A plain class, not a generator: releasing never depends on a suspended generator being
    finalized. ``__exit__`` commits (or aborts), then aborts and unlocks once more in a
    ``finally`` (both idempotent), so a ``KeyboardInterrupt`` landing on any line of it still
    leaves no transaction open and no lock held; one landing before ``__exit__`` runs at all is
    caught up by the next ``__enter__`` or ``MetadataStore.recover`` of the thread.
    """

    def __init__(self, shared: _Shared):
        self.shared = shared
        self.txn: lmdb.Transaction | None = None

    def __enter__(self) -> lmdb.Transaction:
        shared = self.shared
        try:
            shared.recover()
            _lock(shared.thread_fd(), shared.path)
            self.txn = shared.open_txn = shared.env.begin(write=True)
        except BaseException:
            shared.recover()
            raise
        return self.txn

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            try:
                if exc_type is None:
                    self.txn.commit()
            finally:
                self.shared.recover()
        finally:
            self.shared.recover()


# --- opening: validated before LMDB maps the file ---------------------------------------------

_META_MAGIC = 0xBEEFC0DE
_CLEAN_STAMP = "closed-cleanly"


class _Damaged(Exception):
    """The environment on disk is not usable; it is moved aside."""


def _check_file(path: str) -> None:
    """Cheap check of ``data.mdb`` before mapping it: both meta pages readable, and the file
    as long as the newest meta page says (a shorter file would kill the process with SIGBUS
    when LMDB touches a page past its end).

    Raises ``_Damaged`` with what is wrong.
    """
    data_mdb = os.path.join(path, "data.mdb")
    try:
        size = os.path.getsize(data_mdb)
    except FileNotFoundError:
        return  # a new environment
    if size == 0:
        raise _Damaged("data.mdb is empty (0 bytes): the metadata is gone")
    with open(data_mdb, "rb") as f:
        head = f.read(160)
        if len(head) < 160:
            raise _Damaged(f"data.mdb is truncated to {size} bytes")
        magic, _ = struct.unpack_from("<II", head, 16)
        psize = struct.unpack_from("<I", head, 40)[0]
        if magic != _META_MAGIC or psize < 512 or psize > 1 << 16 or psize & (psize - 1):
            raise _Damaged("data.mdb does not start with an LMDB meta page")
        f.seek(psize)
        second = f.read(160)
    if len(second) < 160 or struct.unpack_from("<I", second, 16)[0] != _META_MAGIC:
        raise _Damaged(f"the second meta page of data.mdb is damaged or missing ({size} bytes)")
    metas = [struct.unpack_from("<QQ", page, 136) for page in (head, second)]
    last_pg, _ = max(metas, key=lambda m: m[1])
    needed = (last_pg + 1) * psize
    if size < needed:
        raise _Damaged(f"data.mdb is truncated: {size} bytes, its meta page needs {needed}")


def _stamp(path: str) -> str | None:
    try:
        st = os.stat(os.path.join(path, "data.mdb"))
    except FileNotFoundError:
        return None
    return f"{st.st_size} {st.st_mtime_ns}"


def _write_clean_stamp(path: str) -> None:
    stamp = _stamp(path)
    if stamp is None:
        return
    try:
        with open(os.path.join(path, _CLEAN_STAMP), "w") as f:
            f.write(stamp)
    except OSError:
        pass  # only a hint: without it the next open checks every record


def _closed_cleanly(path: str) -> bool:
    """True when ``data.mdb`` has not changed since a process closed it cleanly."""
    try:
        with open(os.path.join(path, _CLEAN_STAMP)) as f:
            recorded = f.read()
    except OSError:
        return False
    return recorded == _stamp(path)


def _read_everything(env: lmdb.Environment) -> None:
    """Read every record of every database: a damaged page raises ``lmdb.Error`` here, at open,
    instead of later in the middle of a run."""
    with env.begin(buffers=True) as txn:
        names = [bytes(k) for k, _ in txn.cursor()]
        for name in names:
            try:
                db = env.open_db(name, txn=txn, create=False)
            except lmdb.Error:
                raise
            for _, value in txn.cursor(db=db):
                len(bytes(value[:1]))
                len(value)


def _open_env(path: str, durable: bool) -> tuple[lmdb.Environment, dict[bytes, Any]]:
    """Open (or create) the environment and its databases, under ``<path>.lock``: a damaged
    one (empty, truncated, garbage, unreadable pages) is moved aside with a warning, and a
    fresh one takes its place: every reactor runs once, blobs are reused by content hash.

    Validation is cheap on the warm path (two meta pages and the file size); every record is
    read only when the environment was not closed cleanly since it last changed.
    """
    lock_fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _lock(lock_fd, path)
        try:
            return _open_checked(path, durable)
        except _Damaged as exc:
            _move_aside(path, str(exc))
            return _open_checked(path, durable)
    finally:
        os.close(lock_fd)  # closing the descriptor releases the lock


def _open_checked(path: str, durable: bool) -> tuple[lmdb.Environment, dict[bytes, Any]]:
    _check_file(path)
    deep = os.path.exists(os.path.join(path, "data.mdb")) and not _closed_cleanly(path)
    try:
        env = lmdb.open(path, map_size=_MAP_SIZE, max_dbs=len(_DBS) + 2, subdir=True,
                        sync=durable, metasync=durable, max_readers=512, lock=True)
    except (lmdb.InvalidError, lmdb.CorruptedError, lmdb.VersionMismatchError,
            lmdb.BadValsizeError, lmdb.PageNotFoundError, lmdb.InvalidParameterError) as exc:
        raise _Damaged(f"LMDB cannot open it: {exc}") from exc
    try:
        if deep:
            _read_everything(env)
        dbs = _open_dbs(env, path)
    except (lmdb.CorruptedError, lmdb.PageNotFoundError, lmdb.InvalidError, lmdb.BadValsizeError,
            lmdb.IncompatibleError) as exc:
        env.close()
        raise _Damaged(f"a page of it is unreadable: {exc}") from exc
    except BaseException:
        env.close()
        raise
    return env, dbs


def _open_dbs(env: lmdb.Environment, path: str) -> dict[bytes, Any]:
    """Open every database; ``open_db`` takes LMDB's write lock, so take ours first (a writer
    that must wait says so)."""
    fd = os.open(os.path.join(path, "write.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _lock(fd, path)
        return {name: env.open_db(name) for name in _DBS}
    finally:
        os.close(fd)  # releases the lock


def _move_aside(path: str, why: str) -> None:
    aside = f"{path}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    logger.warning("the plant metadata in %s is damaged (%s); moved it to %s and starting "
                   "afresh: every reactor will run once", path, why, aside)
    os.rename(path, aside)


# --- records: one decoder for every kind -------------------------------------------------------

def _is_reactor_record(rec: Any) -> bool:
    return isinstance(rec, dict) and isinstance(rec.get("traces"), list) \
        and all(isinstance(t, str) for t in rec["traces"]) and isinstance(rec.get("used", {}), dict)


_CHECKS = {
    b"reactors": _is_reactor_record,
    b"traces": lambda rec: isinstance(rec, dict),
    b"ingredients": lambda rec: isinstance(rec, dict) and isinstance(rec.get("producer"), str),
    b"history": lambda rec: isinstance(rec, dict) and isinstance(rec.get("reactor"), str),
    b"traceindex": lambda rec: isinstance(rec, list) and all(isinstance(t, str) for t in rec),
    b"filehash": lambda rec: isinstance(rec, tuple) and len(rec) == 6,
}
_warned: set[tuple[str, bytes, bytes]] = set()


def decode(raw: Any, db: bytes, key: bytes | str, path: str = "") -> Any | None:
    """The record ``raw`` of database ``db``, or None when it is damaged: then a warning names
    the database and the key (once per process), and the caller treats the record as absent
    (a reactor without traces runs again; a producer unknown is discovered again)."""
    try:
        rec = pickle.loads(raw)
        if not _CHECKS.get(db, lambda r: True)(rec):
            raise ValueError(f"unexpected record {type(rec).__name__}")
        return rec
    except Exception as exc:
        key_bytes = key.encode(errors="surrogatepass") if isinstance(key, str) else bytes(key)
        if (path, db, key_bytes) not in _warned:
            _warned.add((path, db, key_bytes))
            logger.warning("skipping the damaged %s record %r in %s: %s: %s", db.decode(),
                           key_bytes.decode(errors="replace"), path or "the plant metadata",
                           type(exc).__name__, exc)
        return None


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
    lmdb.Error, OSError
        when the environment cannot be opened (the caller turns it into ``PlantDirError``).
    PlantClosedError
        from every method once ``close`` was called.
    """

    def __init__(self, path: str, durable: bool = False):
        self.path = os.path.realpath(path)
        self._closed = True
        with _envs_lock:
            shared = _envs.get(self.path)
            if shared is not None and not shared.alive():  # closed by an interrupted close()
                _envs.pop(self.path, None)
                shared = None
            if shared is None:
                env, dbs = _open_env(self.path, durable)
                shared = _Shared(self.path, env, dbs)
                _envs[self.path] = shared
            shared.users += 1
            self._shared = shared
            self._closed = False
        self._memo_pending: dict[str, str] = {}
        self._file_hashes_pending: dict[str, tuple] = {}

    @property
    def env(self) -> lmdb.Environment:
        if self._closed:
            raise PlantClosedError(f"the plant metadata in {self.path} was closed (the plant was "
                                   f"shut down)")
        return self._shared.env

    @property
    def closed(self) -> bool:
        return self._closed

    def _db(self, name: bytes) -> Any:
        return self._shared.dbs[name]

    def _decode(self, raw: Any, db: bytes, key: bytes | str) -> Any | None:
        return decode(raw, db, key, self.path)

    # --- reads (each in its own short read transaction) ---

    def _get(self, db: bytes, key: str) -> Any:
        with self.env.begin(db=self._db(db), buffers=True) as txn:
            raw = txn.get(key.encode())
            return None if raw is None else self._decode(raw, db, key)

    def trace_ids(self, reactor: str) -> list[str]:
        rec = self._get(b"reactors", reactor)
        return list(rec["traces"]) if rec else []

    def traces(self, reactor: str, limit: int = 64) -> list[Trace]:
        """The reactor's traces, most recent first (at most ``limit``); damaged ones skipped."""
        with self.env.begin(buffers=True) as txn:
            raw = txn.get(reactor.encode(), db=self._db(b"reactors"))
            rec = None if raw is None else self._decode(raw, b"reactors", reactor)
            if rec is None:
                return []
            result = []
            for tid in rec["traces"][:limit]:
                raw = txn.get(f"{reactor}\0{tid}".encode(), db=self._db(b"traces"))
                trace = self._trace(raw, reactor, tid) if raw is not None else None
                if trace is not None:
                    result.append(trace)
            return result

    def _trace(self, raw: Any, reactor: str, trace_id: str) -> Trace | None:
        rec = self._decode(raw, b"traces", f"{reactor}\0{trace_id}")
        if rec is None:
            return None
        try:
            return Trace.from_record(rec)
        except Exception as exc:  # a record of the wrong shape: the reactor runs again
            decode(b"", b"traces", f"{reactor}\0{trace_id}", self.path)  # warns, once
            logger.debug("trace %s of %s: %s", trace_id, reactor, exc)
            return None

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
                rec = self._decode(raw, b"ingredients", key)
                if rec is not None:  # a damaged record: as if never produced
                    result[bytes(key).decode(errors="surrogateescape")] = rec["producer"]
        return result

    def history(self) -> Iterator[dict]:
        """Every run recorded, oldest first; damaged records are skipped with a warning."""
        with self.env.begin(db=self._db(b"history")) as txn:
            records = [(k, self._decode(v, b"history", k)) for k, v in txn.cursor()]
        for _, rec in records:
            if rec is not None:
                yield rec

    # --- the code memo (hashing.CodeMemo); new entries ride along with the next commit ---

    def get(self, key: str) -> str | None:
        pending = self._memo_pending.get(key)
        if pending is not None:
            return pending
        with self.env.begin(db=self._db(b"codememo")) as txn:
            raw = txn.get(key.encode())
        if raw is None:
            return None
        try:
            return raw.decode()
        except UnicodeDecodeError:
            decode(b"", b"codememo", key, self.path)  # warns once; the code is hashed again
            return None

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
        return self._get(b"filehash", path)  # a damaged entry reads as absent: hashed again

    def put_file_hash(self, path: str, entry: tuple) -> None:
        if len(path.encode()) < 500:  # LMDB keys are at most 511 bytes; longer: not cached
            self._file_hashes_pending[path] = entry

    # --- writes ---

    def commit_trace(self, trace: Trace, history: dict) -> None:
        """Record a finished reactor: its trace (made most recent), producers, history; atomically."""
        key = f"{trace.reactor}\0{trace.trace_id}".encode()
        record = _dump(trace.to_record())
        stamp = f"{history['started']:020.6f}-{os.getpid()}-{time.perf_counter_ns()}".encode()
        with self._write() as txn:
            txn.put(key, record, db=self._db(b"traces"))
            self._promote(txn, trace.reactor, trace.trace_id, trace)
            for name in trace.published().values():
                txn.put(name.encode(), _dump({"producer": trace.reactor}), db=self._db(b"ingredients"))
            txn.put(stamp, _dump(history), db=self._db(b"history"))
            self._flush_memo(txn)

    def promote_trace(self, reactor: str, trace: Trace) -> None:
        """Make an older trace the most recent one (a config switched back: A -> B -> A)."""
        with self._write() as txn:
            self._promote(txn, reactor, trace.trace_id, trace)
            for name in trace.published().values():
                txn.put(name.encode(), _dump({"producer": reactor}), db=self._db(b"ingredients"))

    def forget_trace(self, reactor: str, trace_id: str) -> None:
        """Drop a trace whose versions turned out missing or corrupted."""
        self.drop_traces(reactor, {trace_id})

    def _reactor_record(self, txn: lmdb.Transaction, reactor: str) -> dict | None:
        raw = txn.get(reactor.encode(), db=self._db(b"reactors"))
        return None if raw is None else self._decode(raw, b"reactors", reactor)

    def _promote(self, txn: lmdb.Transaction, reactor: str, trace_id: str, trace: Trace) -> None:
        """Make ``trace`` the most recent of its reactor, in the reactor record and the index."""
        rec = self._reactor_record(txn, reactor) or {"traces": [], "shapes": []}  # a damaged one is replaced
        used = rec.get("used", {})
        used[trace_id] = time.time()
        ids = [trace_id] + [t for t in rec["traces"] if t != trace_id]
        if "shapes" not in rec:  # written before the index existed: index its traces once
            rec["shapes"] = []
            for old in reversed(rec["traces"]):
                raw = txn.get(f"{reactor}\0{old}".encode(), db=self._db(b"traces"))
                old_trace = self._trace(raw, reactor, old) if raw is not None else None
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
        listed = (self._decode(raw, b"traceindex", index_key) if raw is not None else None) or []
        txn.put(index_key, _dump([trace.trace_id] + [t for t in listed if t != trace.trace_id]),
                db=self._db(b"traceindex"))

    def _unindex(self, txn: lmdb.Transaction, reactor: str, trace_ids: set[str]) -> None:
        """Remove forgotten traces from the index (their records must still be readable)."""
        for tid in trace_ids:
            raw = txn.get(f"{reactor}\0{tid}".encode(), db=self._db(b"traces"))
            trace = self._trace(raw, reactor, tid) if raw is not None else None
            if trace is None:
                continue
            index_key = f"{reactor}\0{_index_key_of(trace)}".encode()
            raw = txn.get(index_key, db=self._db(b"traceindex"))
            listed = self._decode(raw, b"traceindex", index_key) if raw is not None else None
            if listed is not None:
                left = [t for t in listed if t != tid]
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
            rec = self._reactor_record(txn, reactor)
            if rec is None:
                return [], None
            latest = rec["traces"][0] if rec["traces"] else None
            if "shapes" not in rec or len(rec["traces"]) <= FEW_TRACES:
                return rec["traces"][:SCAN_TRACES], latest  # few: checking them is cheaper
            found: list[str] = []
            for params in rec["shapes"]:
                key = key_of(tuple(params))
                if key is None:  # check the recent traces one by one
                    return rec["traces"][:SCAN_TRACES], latest
                index_key = f"{reactor}\0{key}".encode()
                raw = txn.get(index_key, db=self._db(b"traceindex"))
                listed = self._decode(raw, b"traceindex", index_key) if raw is not None else None
                found.extend(listed or [])
        used = rec.get("used", {})
        return sorted(set(found), key=lambda t: -used.get(t, 0.0)), latest

    def mark_invalidated(self, reactor: str, reason: str) -> None:
        """Remember why a reactor's traces were forgotten, for 'why it re-ran'."""
        with self._write() as txn:
            rec = self._reactor_record(txn, reactor) or {"traces": []}
            rec["invalidated"] = reason
            txn.put(reactor.encode(), _dump(rec), db=self._db(b"reactors"))

    def invalidated(self, reactor: str) -> str | None:
        """Why the reactor's traces were invalidated, until it commits a new trace."""
        rec = self._get(b"reactors", reactor)
        return rec.get("invalidated") if rec else None

    def reactor_records(self) -> dict[str, dict]:
        """{reactor: {"traces": [...], "used": {...}}} of every reactor ever run (damaged
        records skipped with a warning)."""
        with self.env.begin(db=self._db(b"reactors")) as txn:
            records = {bytes(k).decode(errors="surrogateescape"): self._decode(v, b"reactors", k)
                       for k, v in txn.cursor()}
        return {k: v for k, v in records.items() if v is not None}

    def trace(self, reactor: str, trace_id: str) -> Trace | None:
        with self.env.begin(db=self._db(b"traces")) as txn:
            raw = txn.get(f"{reactor}\0{trace_id}".encode())
        return None if raw is None else self._trace(raw, reactor, trace_id)

    def drop_traces(self, reactor: str, trace_ids: set[str]) -> None:
        """Delete traces of one reactor in one transaction (GC)."""
        with self._write() as txn:
            rec = self._reactor_record(txn, reactor)
            if rec is not None:
                self._unindex(txn, reactor, trace_ids)
                rec["traces"] = [t for t in rec["traces"] if t not in trace_ids]
                rec["used"] = {t: u for t, u in rec.get("used", {}).items() if t not in trace_ids}
                txn.put(reactor.encode(), _dump(rec), db=self._db(b"reactors"))
            for tid in trace_ids:
                txn.delete(f"{reactor}\0{tid}".encode(), db=self._db(b"traces"))

    def _write(self) -> _WriteTxn:
        """A write transaction, serialized across threads and processes (``with``).

        LMDB would block a second writer silently; taking our own lock first lets a writer that
        must wait say so. Write transactions last milliseconds: a long reactor holds none.
        """
        self.env  # raises PlantClosedError once closed
        return _WriteTxn(self._shared)

    def recover(self) -> None:
        """Release what an interrupted write of this thread left (transaction, lock); call it
        where no write of this thread can be in progress."""
        if not self._closed:
            self._shared.recover()

    def close(self) -> None:
        """Flush pending code memo entries and release the environment; idempotent, and safe
        to call again after an interrupt landed inside it."""
        if self._closed:
            return
        try:
            if self._memo_pending or self._file_hashes_pending:
                with self._write() as txn:
                    self._flush_memo(txn)
        except lmdb.Error as exc:  # only a cache of code hashes
            logger.warning("could not save the code memo of %s: %s", self.path, exc)
        finally:
            self._detach()

    def _detach(self) -> None:
        # Ordered so that an interrupt at any point leaves a state the next open handles: a
        # user count one too high (the environment stays open and is reused), or a closed
        # environment still registered (replaced on the next open); never an open environment
        # that is not registered (LMDB would refuse to open it again in this process).
        with _envs_lock:
            if self._closed:
                return
            self._closed = True
            shared = self._shared
            shared.recover()  # what an interrupted write of this thread left
            shared.users -= 1
            if shared.users <= 0:
                shared.close()
                if _envs.get(self.path) is shared:
                    del _envs[self.path]
