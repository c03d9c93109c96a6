"""What a plant keeps between ``run_reactor`` calls, and what the engine needs from it.

``PlantSession`` is the plant's memory (owned by ``Plant``, read and written by the engine):

    values     ``ValueCache`` {VersionKey: value}: loaded and sent values (versions are
               immutable, so a value is loaded once per plant); after each run, what the run
               used is kept, and of the rest the most recently used within ``VALUE_CACHE_BYTES``
    last_run   {ingredient: Version}: what the last run used or made (``fetch_ingredient``)
    forced     {task name}: to run on the next run even when its traces verify
    decisions  {task name: reason}: why each task of the last run ran, or "up to date"
    history    {task name: ExecutionRecord}: every task this plant ran or verified

``EngineContext`` is what the engine uses of its plant: the warehouse, the config, how code is
hashed, the input recorder, the logger and the event sink. The engine never imports the plant.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..config import ConfigBase
from ..dependencies import CodeMapper, CodeScope
from ..tracking import FileHashes, InputRecorder
from ..warehouse import Version, Warehouse
from .state import VersionKey


@dataclass
class ExecutionRecord:
    """One reactor in a plant's session history.

    ``totalRuntime`` is the time spent inside the reactor's body, in seconds (0 when cached);
    ``startTime`` and ``finishTime`` are Unix times (seconds); ``wasRun`` is False when the
    reactor was verified up to date instead of run; ``reason`` says why it ran.
    """
    reactorName: str
    startTime: float
    totalRuntime: float
    finishTime: float
    wasRun: bool
    reason: str | None = None

    @property
    def status(self) -> str:
        """'ran' or 'cached'."""
        return "ran" if self.wasRun else "cached"


# Values a run did not use stay in memory up to this many bytes (most recently used first):
# a notebook trying 100 configs keeps a bounded working set, and going back finds it loaded.
VALUE_CACHE_BYTES = 256 << 20


class ValueCache:
    """{VersionKey: value} with the size of each (``Version.nbytes``; 0 for file paths and
    HDF handles, which hold no data in memory); see ``PlantSession``."""

    def __init__(self, budget: int = VALUE_CACHE_BYTES):
        self.budget = budget
        self._values: dict[VersionKey, Any] = {}
        self._sizes: dict[VersionKey, int] = {}
        self.used: set[VersionKey] = set()  # what the last run used

    def __contains__(self, key: VersionKey) -> bool:
        return key in self._values

    def __getitem__(self, key: VersionKey) -> Any:
        value = self._values.pop(key)  # most recently used last
        self._values[key] = value
        return value

    def put(self, key: VersionKey, value: Any, nbytes: int) -> Any:
        self._values.pop(key, None)
        self._values[key] = value
        self._sizes[key] = nbytes
        return value

    def pop(self, key: VersionKey) -> None:
        self._values.pop(key, None)
        self._sizes.pop(key, None)

    def keys(self) -> list[VersionKey]:
        return list(self._values)

    def clear(self) -> None:
        self._values.clear()
        self._sizes.clear()

    def keep(self, used: set[VersionKey]) -> None:
        """After a run: keep what it ``used``, and the most recently used others within budget."""
        self.used = set(used)
        left = self.budget
        for key in reversed(list(self._values)):
            if key in used:
                continue
            size = self._sizes.get(key, 0)
            if size <= left:
                left -= size
            else:
                self.pop(key)


def resident_bytes(version: Version) -> int:
    """Memory a loaded version takes: none for files (a path) and HDF arrays (a handle)."""
    return 0 if version.type in ("file", "hdf_array") else version.nbytes


@dataclass
class PlantSession:
    """A plant's memory between runs; see the module docstring."""
    values: ValueCache = field(default_factory=ValueCache)
    last_run: dict[str, Version] = field(default_factory=dict)
    forced: set[str] = field(default_factory=set)
    decisions: dict[str, str] = field(default_factory=dict)
    history: dict[str, ExecutionRecord] = field(default_factory=dict)
    call_started: float = 0.0  # Unix time the user's call began (one pipeline: several sessions)

    def begin_call(self) -> None:
        """A new ``run_reactor`` or ``Plant.run``: decisions start empty."""
        self.call_started, self.decisions = time.time(), {}

    def record(self, name: str, ran: bool, started: float, duration: float, reason: str | None) -> ExecutionRecord:
        """Note one task of this run in the history and return it (``stored`` gives what the
        metadata keeps of a run).

        ``started`` is a Unix time, ``duration`` seconds inside the body.
        """
        record = ExecutionRecord(name, started, duration, time.time(), ran, reason if ran else "up to date")
        earlier = self.history.get(name)
        if ran or earlier is None or not earlier.wasRun or earlier.startTime < self.call_started:
            self.history[name] = record  # a task that ran earlier in this call stays 'ran'
            self.decisions[name] = record.reason
        return record

    @staticmethod
    def stored(record: ExecutionRecord) -> dict:
        """The history record the metadata keeps of ``record``."""
        return {"reactor": record.reactorName, "started": record.startTime, "duration": record.totalRuntime,
                "ran": record.wasRun, "reason": record.reason}

    def held(self) -> list[str]:
        """Locations of the versions this plant uses (GC must keep them): what the last run used
        or made. Other cached values need no file any more; when GC takes one, the value in
        memory stays valid."""
        used = {key for key in self.values.keys() if key in self.values.used}
        return [location for _, _, location in used if location]


@dataclass
class EngineContext:
    """The services of a plant the engine uses (see the module docstring).

    ``own_hash(func) -> str`` is the hash of one function's own code (``functionHash``, a
    pinned version, or its source); ``source_derived`` is False when ``functionHash`` replaces
    source hashing (then nothing read from source is memoized by code maps). ``emit(event,
    name, *args)`` calls the plant's event listeners.
    """
    warehouse: Warehouse
    config: ConfigBase
    mapper: CodeMapper
    scope: CodeScope
    own_hash: Callable[[Callable], str]
    source_derived: bool
    file_hashes: FileHashes
    recorder: Callable[[], InputRecorder | None]
    emit: Callable[..., None]
    logger: logging.Logger
