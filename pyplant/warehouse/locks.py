"""A thread lock whose release survives a ``KeyboardInterrupt`` landing anywhere.

``with lock:`` on a plain ``threading.Lock`` can leave it held for good: an interrupt that
lands on the ``with`` line as the block exits (after the body, before ``__exit__`` is called)
skips the release, and the next acquisition in any thread waits forever. ``SafeLock`` is
reentrant and releases *everything this thread holds* on exit, with a second attempt in a
``finally``: an acquisition left over by an interrupt is released by the thread's next
``with`` block, and no interrupt inside ``__exit__`` can skip both attempts.
"""
from __future__ import annotations

import os
import threading


class SafeLock:
    """``with SafeLock():`` for short critical sections that must never stay locked."""

    def __init__(self) -> None:
        self._lock = threading.RLock()

    def __enter__(self) -> "SafeLock":
        self._lock.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.release_all()
        finally:
            self.release_all()

    def release_all(self) -> None:
        """Release every acquisition of the calling thread (none: nothing happens)."""
        while self._lock._is_owned():
            self._lock.release()


class ThreadFiles:
    """One descriptor of a lock file per thread (``flock`` locks belong to an open file, so
    threads that must exclude each other each need their own), all closed by ``close``."""

    def __init__(self, path: str):
        self.path = path
        self._local = threading.local()
        self._fds: list[int] = []
        self._fds_lock = SafeLock()

    def fd(self) -> int:
        """This thread's descriptor of ``path`` (opened, and created, on first use)."""
        fd = getattr(self._local, "fd", None)
        if fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            with self._fds_lock:
                self._fds.append(fd)
            self._local.fd = fd
        return fd

    def opened(self) -> int | None:
        """This thread's descriptor if it opened one, else None."""
        return getattr(self._local, "fd", None)

    def close(self) -> None:
        """Close every thread's descriptor (their locks go with them)."""
        with self._fds_lock:
            fds, self._fds = self._fds, []
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass
