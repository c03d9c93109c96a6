"""Pausing Python's cyclic garbage collector while pyplant does its own bookkeeping.

Verifying thousands of traces makes many small objects; each young-generation collection then
scans them, and every so often a full collection scans the whole heap (10 ms and more in a
process holding a large pipeline): a warm run paid more for collections than for its work.
pyplant's bookkeeping makes no reference cycles worth collecting mid-run, so the collector is
paused around it and resumed, as the user left it, while user code (a reactor's body) runs.
The state is process-wide, like the collector: nested and concurrent pauses are counted.
"""
from __future__ import annotations

import contextlib
import gc
import threading
from typing import Iterator

_lock = threading.Lock()
_depth = 0
_was_enabled = False


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """Disable the collector inside the block (the outermost block restores it)."""
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
        _depth += 1
        gc.disable()
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                gc.enable()


@contextlib.contextmanager
def resumed() -> Iterator[None]:
    """Inside ``paused()``: run the block with the collector as the user had it."""
    with _lock:
        enable = _depth > 0 and _was_enabled
        if enable:
            gc.enable()
    try:
        yield
    finally:
        if enable:
            with _lock:
                if _depth > 0:
                    gc.disable()
