"""Objects planted by the escape and warehouse tests (tests/test_escapes.py,
tests/test_warehouse_units.py), re-exported by conftest.

A module of its own, not conftest.py: pytest imports conftest.py afresh in every session of a
process, while test modules stay imported; a ``Bomb`` made by a test module of an earlier
session would then no longer pickle (``not the same object as conftest.Bomb._boom``). This
module is imported once per process.
"""
from __future__ import annotations


class Bomb:
    """Unpickling it records the event: a file planted outside (or inside) the plant must never
    be unpickled (tests/test_escapes.py, tests/test_warehouse_units.py)."""
    loaded: list = []

    def __reduce__(self):
        return (Bomb._boom, ())

    @staticmethod
    def _boom():
        Bomb.loaded.append(1)
        return "unpickled"
