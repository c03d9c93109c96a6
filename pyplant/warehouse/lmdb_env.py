"""The LMDB environment of a plant: opened once per directory and process, validated before
it is mapped, written under a lock that survives interrupts.

``<plantDir>/meta.lmdb`` holds the databases listed in ``DBS`` (see ``lmdb_store.py`` for what
each one keeps). LMDB must not be opened twice by one process (it breaks its POSIX locks), so
environments are shared per real path and reference counted (``acquire``/``release``): two
``Plant`` objects on one directory in one process (a notebook cell re-run without
``shutdown()``) share one environment, and a read-only view opened in a process that has the
plant open reads through the same one.

A damaged environment (empty, truncated, garbage, unreadable pages) is detected *before* LMDB
maps it (``_check_file``: meta pages and file size; every record is read when the environment
was not closed cleanly since it last changed) and moved aside (``meta.lmdb.corrupt-*``) with a
warning; a read-only open refuses it instead (``Damaged``), since it never writes.

Writers serialize on an ``flock`` of ``write.lock`` (``WriteTxn``), taken through one
descriptor per thread, so that a writer that must wait says so in the log and an interrupt
never leaves it held.
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import struct
import threading
import time
import uuid
from typing import Any

import lmdb

from .locks import SafeLock, ThreadFiles

logger = logging.getLogger(__name__)

MAP_SIZE = 1 << 40  # address space only; the file grows with the data
DBS = (b"reactors", b"traces", b"ingredients", b"history", b"codememo", b"leases", b"filehash",
       b"traceindex")


# --- the environment, shared per directory within a process ---------------------------------

class Shared:
    """One LMDB environment and its write lock, shared by the stores of one process.

    The write lock is an ``flock`` on ``write.lock`` taken through one descriptor *per thread*:
    it excludes other threads and other processes alike, and a thread that takes it again on
    its own descriptor (after an interrupt left it held) does not deadlock on itself.
    """

    def __init__(self, path: str, env: lmdb.Environment, dbs: dict[bytes, Any], readonly: bool = False):
        self.path = path
        self.env = env
        self.dbs = dbs  # {name: handle}; a database missing from a read-only environment: None
        self.readonly = readonly
        self.users = 0
        self._local = threading.local()
        self._lock_files = ThreadFiles(os.path.join(path, "write.lock"))

    def thread_fd(self) -> int:
        """This thread's descriptor of ``write.lock`` (opened on first use)."""
        return self._lock_files.fd()

    @property
    def open_txn(self) -> lmdb.Transaction | None:
        """The write transaction this thread has open, or None."""
        return getattr(self._local, "txn", None)

    @open_txn.setter
    def open_txn(self, txn: lmdb.Transaction | None) -> None:
        self._local.txn = txn

    def recover(self) -> None:
        """Abort a write transaction and release the write lock left by an interrupted
        ``WriteTxn`` of this thread (both are no-ops when nothing was left)."""
        txn, self.open_txn = self.open_txn, None
        if txn is not None:
            txn.abort()
        fd = self._lock_files.opened()
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def alive(self) -> bool:
        """False when the environment was closed (by an interrupted ``close``)."""
        try:
            self.env.flags()
            return True
        except lmdb.Error:
            return False

    def close(self) -> None:
        """Close the environment (idempotent) and record a clean close (not when read-only:
        a read-only view never writes)."""
        self.env.close()
        if not self.readonly:
            _write_clean_stamp(self.path)
        self._lock_files.close()


_envs: dict[str, Shared] = {}
registry_lock = SafeLock()  # a KeyboardInterrupt never leaves it held (see locks.py)


def lock_writes(fd: int, path: str) -> None:
    """Take the plant's write lock; a writer that must wait says so in the log."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        logger.info("waiting for another process writing to %s", path)
        began = time.monotonic()
        fcntl.flock(fd, fcntl.LOCK_EX)
        logger.info("proceeding after waiting %.2f s for the write lock of %s",
                    time.monotonic() - began, path)


class WriteTxn:
    """``with store._write() as txn``: the write lock, then one write transaction.

    A plain class, not a generator: releasing never depends on a suspended generator being
    finalized. ``__exit__`` commits (or aborts), then aborts and unlocks once more in a
    ``finally`` (both idempotent), so a ``KeyboardInterrupt`` landing on any line of it still
    leaves no transaction open and no lock held; one landing before ``__exit__`` runs at all is
    caught up by the next ``__enter__`` or ``LmdbMetadata.recover`` of the thread.
    """

    def __init__(self, shared: Shared):
        self.shared = shared
        self.txn: lmdb.Transaction | None = None

    def __enter__(self) -> lmdb.Transaction:
        shared = self.shared
        try:
            shared.recover()
            lock_writes(shared.thread_fd(), shared.path)
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
_DAMAGED = "damaged"  # written when LMDB reports a damaged page in use: moved aside at next open
DAMAGE_ERRORS = (lmdb.CorruptedError, lmdb.PageNotFoundError)


def mark_damaged(path: str, exc: BaseException) -> None:
    """Record that LMDB met a damaged page while the environment was in use (a page no open
    check reads, such as one of the free list, fails only when a commit reuses it): the next
    open moves the environment aside instead of failing the same way on every run."""
    try:
        with open(os.path.join(path, _DAMAGED), "w") as f:
            f.write(f"{type(exc).__name__}: {exc}")
    except OSError:
        return
    logger.warning("the plant metadata in %s is damaged (%s: %s); it will be moved aside when "
                   "the plant is opened next", path, type(exc).__name__, exc)


def _marked_damaged(path: str) -> str | None:
    try:
        with open(os.path.join(path, _DAMAGED)) as f:
            return f.read() or "no reason recorded"
    except OSError:
        return None


class Damaged(Exception):
    """The environment on disk is not usable; it is moved aside."""


def _check_file(path: str) -> None:
    """Cheap check of ``data.mdb`` before mapping it: both meta pages readable, and the file
    as long as the newest meta page says (a shorter file would kill the process with SIGBUS
    when LMDB touches a page past its end).

    Raises ``Damaged`` with what is wrong.
    """
    data_mdb = os.path.join(path, "data.mdb")
    try:
        size = os.path.getsize(data_mdb)
    except FileNotFoundError:
        return  # a new environment
    if size == 0:
        raise Damaged("data.mdb is empty (0 bytes): the metadata is gone")
    with open(data_mdb, "rb") as f:
        head = f.read(160)
        if len(head) < 160:
            raise Damaged(f"data.mdb is truncated to {size} bytes")
        magic, _ = struct.unpack_from("<II", head, 16)
        psize = struct.unpack_from("<I", head, 40)[0]
        if magic != _META_MAGIC or psize < 512 or psize > 1 << 16 or psize & (psize - 1):
            raise Damaged("data.mdb does not start with an LMDB meta page")
        f.seek(psize)
        second = f.read(160)
    if len(second) < 160 or struct.unpack_from("<I", second, 16)[0] != _META_MAGIC:
        raise Damaged(f"the second meta page of data.mdb is damaged or missing ({size} bytes)")
    metas = [struct.unpack_from("<QQ", page, 136) for page in (head, second)]
    last_pg, _ = max(metas, key=lambda m: m[1])
    needed = (last_pg + 1) * psize
    if size < needed:
        raise Damaged(f"data.mdb is truncated: {size} bytes, its meta page needs {needed}")


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
        lock_writes(lock_fd, path)
        try:
            return _open_checked(path, durable)
        except Damaged as exc:
            _move_aside(path, str(exc))
            return _open_checked(path, durable)
    finally:
        os.close(lock_fd)  # closing the descriptor releases the lock


def _open_checked(path: str, durable: bool) -> tuple[lmdb.Environment, dict[bytes, Any]]:
    marked = _marked_damaged(path)
    if marked is not None:
        raise Damaged(f"a damaged page was met while it was in use ({marked})")
    _check_file(path)
    deep = os.path.exists(os.path.join(path, "data.mdb")) and not _closed_cleanly(path)
    try:
        env = lmdb.open(path, map_size=MAP_SIZE, max_dbs=len(DBS) + 2, subdir=True,
                        sync=durable, metasync=durable, max_readers=512, lock=True)
    except (lmdb.InvalidError, lmdb.CorruptedError, lmdb.VersionMismatchError,
            lmdb.BadValsizeError, lmdb.PageNotFoundError, lmdb.InvalidParameterError) as exc:
        raise Damaged(f"LMDB cannot open it: {exc}") from exc
    try:
        if deep:
            _read_everything(env)
        dbs = _open_dbs(env, path)
    except (lmdb.CorruptedError, lmdb.PageNotFoundError, lmdb.InvalidError, lmdb.BadValsizeError,
            lmdb.IncompatibleError) as exc:
        env.close()
        raise Damaged(f"a page of it is unreadable: {exc}") from exc
    except BaseException:
        env.close()
        raise
    return env, dbs


def _open_dbs(env: lmdb.Environment, path: str) -> dict[bytes, Any]:
    """Open every database; ``open_db`` takes LMDB's write lock, so take ours first (a writer
    that must wait says so)."""
    fd = os.open(os.path.join(path, "write.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        lock_writes(fd, path)
        return {name: env.open_db(name) for name in DBS}
    finally:
        os.close(fd)  # releases the lock


def _move_aside(path: str, why: str) -> None:
    aside = f"{path}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    logger.warning("the plant metadata in %s is damaged (%s); moved it to %s and starting "
                   "afresh: every reactor will run once", path, why, aside)
    os.rename(path, aside)




def _open_readonly(path: str) -> tuple[lmdb.Environment, dict[bytes, Any]]:
    """Open an existing environment without writing: no moving aside, no lock of ours, no
    database created. LMDB registers the reader in its reader table (``lock.mdb``) so that a
    writer in another process never reuses the pages being read; on a mount where that table
    cannot be written, nobody writes, and the environment is read without it.

    Raises ``Damaged`` for a missing or damaged environment.
    """
    if not os.path.exists(os.path.join(path, "data.mdb")):
        raise Damaged(f"{path} holds no plant metadata (no data.mdb)")
    marked = _marked_damaged(path)
    if marked is not None:
        raise Damaged(f"a damaged page was met while it was in use ({marked})")
    _check_file(path)
    options = dict(map_size=MAP_SIZE, max_dbs=len(DBS) + 2, subdir=True, readonly=True,
                   create=False, max_readers=512)
    try:
        try:
            env = lmdb.open(path, lock=True, **options)
        except lmdb.Error as exc:
            if not _cannot_write(exc):
                raise
            logger.warning("%s: cannot register as an LMDB reader (%s); reading without the "
                           "reader table", path, exc)
            env = lmdb.open(path, lock=False, **options)
    except lmdb.Error as exc:
        raise Damaged(f"LMDB cannot open it read-only: {exc}") from exc
    try:
        with env.begin() as txn:  # a database an older version did not have yet stays None
            present = [name for name in DBS if txn.get(name) is not None]
        dbs = {name: env.open_db(name, create=False) if name in present else None for name in DBS}
    except lmdb.Error as exc:
        env.close()
        raise Damaged(f"a page of it is unreadable: {exc}") from exc
    return env, dbs


def _cannot_write(exc: lmdb.Error) -> bool:
    return isinstance(exc, lmdb.ReadonlyError) or "Permission denied" in str(exc) \
        or "Read-only file system" in str(exc) or getattr(exc, "errno", None) in (errno.EACCES, errno.EROFS)


def acquire(path: str, durable: bool, readonly: bool = False) -> Shared:
    """The process's environment of ``path`` (a real path), opened when it is not yet, with
    one more user. A read-only request uses an environment already open read-write; a
    read-write request reopens one that is open read-only (see ``_reopen_writable``).

    Raises
    ------
    Damaged
        (read-only) when the environment is missing or damaged.
    lmdb.Error, OSError
        when it cannot be opened (the store translates them).
    """
    with registry_lock:
        shared = _envs.get(path)
        if shared is not None and not shared.alive():  # closed by an interrupted close()
            _envs.pop(path, None)
            shared = None
        if shared is None:
            env, dbs = _open_readonly(path) if readonly else _open_env(path, durable)
            shared = Shared(path, env, dbs, readonly)
            _envs[path] = shared
        elif shared.readonly and not readonly:
            _reopen_writable(shared, durable)
        shared.users += 1
        return shared


def _reopen_writable(shared: Shared, durable: bool) -> None:
    """Replace a read-only environment by a read-write one, in place: the read-only views
    sharing it read through the new one (they never write). The old one is closed first:
    LMDB must never have two environments of one path open in a process."""
    shared.env.close()
    try:
        shared.env, shared.dbs = _open_env(shared.path, durable)
    except BaseException:
        _envs.pop(shared.path, None)  # closed: the next acquire opens afresh
        raise
    shared.readonly = False


def release(shared: Shared) -> None:
    """One user less; the last one closes the environment. Call it under ``registry_lock``,
    after marking the caller closed: an interrupt then leaves a user count one too high (the
    environment stays open and is reused), or a closed environment still registered
    (replaced on the next ``acquire``); never an open environment that is not registered
    (LMDB would refuse to open it again in this process). Not locked here: ``SafeLock``
    releases every acquisition of the thread on exit, so a nested ``with`` would end the
    caller's."""
    shared.recover()  # what an interrupted write of this thread left
    shared.users -= 1
    if shared.users <= 0:
        shared.close()
        if _envs.get(shared.path) is shared:
            del _envs[shared.path]
