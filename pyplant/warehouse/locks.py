"""A thread lock whose release survives a ``KeyboardInterrupt`` landing anywhere.

``with lock:`` on a plain ``threading.Lock`` can leave it held for good: an interrupt that
lands on the ``with`` line as the block exits (after the body, before ``__exit__`` is called)
skips the release, and the next acquisition in any thread waits forever. ``SafeLock`` is
reentrant and releases *everything this thread holds* on exit, with a second attempt in a
``finally``: an acquisition left over by an interrupt is released by the thread's next
``with`` block, and no interrupt inside ``__exit__`` can skip both attempts.
"""
from __future__ import annotations

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
