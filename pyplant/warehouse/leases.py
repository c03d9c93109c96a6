"""Leases: which plants are alive, and every version each one holds or is producing.

Each open plant owns ``<plantDir>/leases/<pid>-<ns>.lease``, an append-only journal locked
with ``flock(LOCK_EX)`` for the plant's whole life; the kernel drops the lock when the process
dies (even ``kill -9``), so a lease whose lock can be taken belongs to a dead plant. The first
line is a JSON header (``pid``, ``started``); each further line is one JSON-encoded location,
appended with one ``os.write`` (no fsync: a lease only matters while its process lives) *before*
the location is loaded, allocated, written or reused.

GC and the journal meet at ``<plantDir>/gc.lock``: a plant appends a location (and, for a
content-addressed blob, checks that the blob still exists) under a shared lock; GC reads the
journals and deletes under the exclusive lock. So either GC sees the entry and keeps the
location, or it deleted it before, and the plant then writes it afresh.

Locks are released by ``_Gate.__exit__`` with a second attempt in a ``finally``, and any
leftover of an interrupted section is released by ``recover``: a ``KeyboardInterrupt`` can never
leave GC waiting forever.
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import time
import uuid
from typing import Iterable

from .locks import ThreadFiles
from .records import LeaseRecord, RecordError

logger = logging.getLogger(__name__)

LEASES_DIR = "leases"
GATE_FILE = "gc.lock"
_LEASE_NAME = re.compile(r"\d+-\d+\.lease")
_TMP = re.compile(r"\.tmp-(\d+)-[0-9a-f]+$")


class _Gate:
    """A shared (plants) or exclusive (GC) flock on ``gc.lock``, one descriptor per thread,
    released whatever is interrupted: unlocking twice is harmless, so ``__exit__`` tries twice."""

    def __init__(self, path: str):
        self.path = path
        self._files = ThreadFiles(path)

    def lock(self, mode: int) -> None:
        fd = self._files.fd()
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("waiting for a garbage collection of %s to finish", os.path.dirname(self.path))
            fcntl.flock(fd, mode)

    def unlock(self) -> None:
        fd = self._files.opened()
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self._files.close()


class _Section:
    """``with gate.shared():`` / ``with gate.exclusive():``, released even when interrupted."""

    def __init__(self, gate: _Gate, mode: int):
        self.gate, self.mode = gate, mode

    def __enter__(self) -> None:
        try:
            self.gate.lock(self.mode)
        except BaseException:
            self.gate.unlock()
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            self.gate.unlock()
        finally:
            self.gate.unlock()  # again, should the first attempt have been interrupted


class Lease:
    """This plant's lease; see the module docstring.

    Parameters
    ----------
    plant_dir : str
        The plant directory; ``leases/`` and ``gc.lock`` are created in it.
    """

    def __init__(self, plant_dir: str):
        self.dir = os.path.join(plant_dir, LEASES_DIR)
        os.makedirs(self.dir, exist_ok=True)
        self.gate = _Gate(os.path.join(plant_dir, GATE_FILE))
        self.id = f"{os.getpid()}-{time.time_ns()}"
        self.path = os.path.join(self.dir, self.id + ".lease")
        self.held: set[str] = set()
        self._fd = self._create(self.path, [])

    def _create(self, path: str, locations: Iterable[str]) -> int:
        """Write a locked lease under a temporary name, then rename it into place: GC never
        sees a lease file whose lock is not taken yet."""
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            lines = [json.dumps(LeaseRecord(os.getpid(), time.time()).header())]
            lines += [json.dumps(loc) for loc in locations]
            os.write(fd, ("\n".join(lines) + "\n").encode())
            os.replace(tmp, path)
        except BaseException:
            os.close(fd)
            _unlink_quietly(tmp)
            raise
        return fd

    def shared(self) -> _Section:
        """``with lease.shared():`` the plants' side of the gate (GC waits meanwhile)."""
        return _Section(self.gate, fcntl.LOCK_SH)

    def hold(self, location: str | None) -> None:
        """Record ``location`` in the journal before it is loaded, allocated, written or reused.

        Under the shared gate lock: a GC running now either sees the entry, or finished its
        deletions before the entry was made (a blob reused afterwards is then found missing
        and written afresh). A location already held costs a set lookup.
        """
        if location is None or location in self.held or self._fd is None:
            return
        with self.shared():
            self._append(location)

    def _append(self, location: str) -> None:
        if self._fd is None:
            return
        os.write(self._fd, (json.dumps(location) + "\n").encode())
        self.held.add(location)

    def compact(self, locations: Iterable[str]) -> None:
        """Replace the journal by ``locations`` (what the plant still holds after a run)."""
        keep = set(locations)
        if keep == self.held or self._fd is None:
            return
        with self.shared():
            fd = self._create(self.path, sorted(keep))
            old, self._fd = self._fd, fd
            self.held = keep
            os.close(old)

    def recover(self) -> None:
        """Release a gate lock left held by an interrupted section of this thread."""
        self.gate.unlock()

    def release(self) -> None:
        """Drop the lease (plant shutdown); idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            _unlink_quietly(self.path)
            os.close(fd)
        self.gate.close()


class _Exclusive(_Section):
    """GC's section: its own descriptor, closed (which also unlocks) on exit."""

    def __exit__(self, *exc: object) -> None:
        try:
            super().__exit__(*exc)
        finally:
            self.gate.close()


def exclusive(plant_dir: str) -> _Section:
    """GC's side of the gate: no plant records or reuses a location while it is held."""
    return _Exclusive(_Gate(os.path.join(plant_dir, GATE_FILE)), fcntl.LOCK_EX)


def live_leases(plant_dir: str) -> list[LeaseRecord]:
    """The leases of live plants; the lease files of dead ones are deleted."""
    root = os.path.join(plant_dir, LEASES_DIR)
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    leases = []
    for name in names:
        if _LEASE_NAME.fullmatch(name):
            lease = _read_if_live(os.path.join(root, name))
            if lease is not None:
                leases.append(lease)
        elif ".lease.tmp-" in name:
            _drop_if_dead(os.path.join(root, name))
    return leases


def _read_if_live(path: str) -> LeaseRecord | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return _parse(path, fd)
        _unlink_if_same(path, fd)  # nobody holds it: its plant is gone
        return None
    finally:
        os.close(fd)


def _drop_if_dead(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if time.time() - os.fstat(fd).st_mtime > 60:  # a lease being created holds its lock
            _unlink_if_same(path, fd)
    except BlockingIOError:
        pass
    finally:
        os.close(fd)


def _parse(path: str, fd: int) -> LeaseRecord:
    """A live lease; a line it cannot read makes GC keep everything (never guess)."""
    with os.fdopen(os.dup(fd), "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    try:
        return LeaseRecord.from_lines(json.loads(lines[0]), [json.loads(line) for line in lines[1:] if line])
    except (ValueError, RecordError) as exc:  # RecordError is a ValueError, named for the reader
        raise UnreadableLease(path, exc) from exc


class UnreadableLease(Exception):
    """A live plant's lease cannot be read: GC must not delete anything."""

    def __init__(self, path: str, exc: Exception):
        super().__init__(f"the lease {path} of a live plant is unreadable ({exc})")
        self.path = path


def _unlink_if_same(path: str, fd: int) -> None:
    """Unlink ``path`` only if it is still the file open as ``fd`` (a lease being compacted
    is replaced by a new, locked file under the same name)."""
    try:
        if os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
            os.unlink(path)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            logger.warning("could not remove the dead lease %s: %s", path, exc)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def tmp_pid(name: str) -> int | None:
    """The process id in the name of a temporary file (``<name>.tmp-<pid>-<hex>``), or None."""
    match = _TMP.search(name)
    return int(match.group(1)) if match else None
