"""A Bomb: an object whose unpickling is recorded (tests/test_escapes.py,
tests/test_warehouse_units.py).

Not in conftest.py: pytest drops a rootdir conftest from ``sys.modules`` and imports it afresh
in every session of one process (mutmut runs several), while the test modules that imported
``Bomb`` keep the first one; pickle then refuses ``conftest.Bomb._boom`` as "not the same
object". A plain helper module is imported once.
"""


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
