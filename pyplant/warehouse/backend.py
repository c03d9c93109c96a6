"""The two storage interfaces behind the warehouse.

``MetadataBackend``: small records (traces, the trace index, producers, run history, the code
memo, input-file hashes, invalidation marks); implemented by the LMDB store (``lmdb_store.py``)
and, in memory, by ``memory.py`` (tests, engine unit tests, tools). Both pass one conformance
suite (``tests/test_backends.py``).

``BlobBackend``: bytes and arrays addressed by content hash, and the listing and removal of
stored files that GC needs; implemented by the file store (``store.py``).

Implementations translate their own library's errors: every method raises ``WarehouseError``
when the store cannot be read or written (a full disk, a read-only mount, a damaged page),
``PlantClosedError`` once closed, and nothing from LMDB or the OS, so no caller outside the
warehouse depends on how a backend is built. A damaged record is never an error: it is skipped
with a warning naming it, and treated as absent (what it described runs again).

Leases are not part of either interface: they are files locked by live processes (``leases.py``),
a property of the plant directory rather than of a store.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from .records import HistoryRecord, ReactorRecord, Trace, Version

__all__ = ["MetadataBackend", "BlobBackend", "StoredFile", "SCAN_TRACES", "FEW_TRACES"]

# Traces tried one by one when the index cannot answer (older directories, auxiliary params),
# and the number below which trying them all is cheaper than computing index keys.
SCAN_TRACES = 64
FEW_TRACES = 4


class MetadataBackend(abc.ABC):
    """Where a plant keeps its records; see the module docstring.

    Writes are atomic per method: a reader (another process too) sees all of a commit or none.
    Code memo and file-hash entries are buffered and ride along with the next write (or
    ``close``). Every method raises ``PlantClosedError`` once ``close`` was called, and
    ``WarehouseError`` when the store cannot be read or written.
    """

    readonly: bool = False

    # --- traces ---

    @abc.abstractmethod
    def trace_ids(self, reactor: str) -> list[str]:
        """The ids of the reactor's traces.

        Parameters
        ----------
        reactor : str
            The reactor's name.

        Returns
        -------
        list of str
            Trace ids, most recent first; empty for an unknown reactor.
        """

    @abc.abstractmethod
    def traces(self, reactor: str, limit: int = 64) -> list[Trace]:
        """The reactor's traces.

        Parameters
        ----------
        reactor : str
            The reactor's name.
        limit : int
            At most this many, the most recent.

        Returns
        -------
        list of Trace
            Most recent first; damaged records are skipped (with a warning).
        """

    @abc.abstractmethod
    def trace(self, reactor: str, trace_id: str) -> Trace | None:
        """One trace.

        Parameters
        ----------
        reactor, trace_id : str
            The reactor's name and the trace's id.

        Returns
        -------
        Trace or None
            None when it does not exist or its record is damaged.
        """

    @abc.abstractmethod
    def candidate_traces(self, reactor: str,
                         key_of: Callable[[tuple[str, ...]], str | None]) -> tuple[list[str], str | None]:
        """The traces that may verify now, found in the trace index.

        Parameters
        ----------
        reactor : str
            The reactor's name.
        key_of : callable
            ``key_of(params) -> str or None``: the index key (``records.trace_index_key``) that
            a trace reading the sorted parameter names ``params`` has now; None when it cannot be
            computed now (a parameter became auxiliary): then recent traces are returned.

        Returns
        -------
        (list of str, str or None)
            Candidate trace ids, most recently used first: every trace whose index key equals
            ``key_of(trace.params)`` (a superset is allowed: at most ``SCAN_TRACES`` recent
            ones when the index cannot answer), and the id of the latest trace (None when the
            reactor has none).
        """

    def candidate_traces_first(self, reactor: str, key_of: Callable[[tuple[str, ...]], str | None]
                               ) -> tuple[list[str], str | None, Trace | None]:
        """``candidate_traces`` and the first candidate's ``trace``, read together (a backend
        may read both in one transaction: every warm check starts with them).

        Returns
        -------
        (list of str, str or None, Trace or None)
            What ``candidate_traces`` returns, and the trace of the first candidate id (None
            without candidates, or when its record is missing or damaged).
        """
        found, latest = self.candidate_traces(reactor, key_of)
        return found, latest, (self.trace(reactor, found[0]) if found else None)

    @abc.abstractmethod
    def commit_trace(self, trace: Trace, history: HistoryRecord | dict) -> None:
        """Record a finished reactor, atomically: its trace (made the latest and indexed), the
        producer of each output, a history record, and the buffered memo entries.

        Parameters
        ----------
        trace : Trace
            What the reactor left.
        history : HistoryRecord or dict
            Its run (a dict is read with ``HistoryRecord.from_record``).

        Raises
        ------
        WarehouseError
            when it cannot be written (nothing of it is then visible); ``reactor`` is set.
        """

    @abc.abstractmethod
    def promote_trace(self, reactor: str, trace: Trace) -> None:
        """Make an existing trace the latest of its reactor (a config switched back: A -> B -> A),
        mark it used now, and record the reactor as the producer of its outputs.

        Parameters
        ----------
        reactor : str
            The reactor's name.
        trace : Trace
            One of its traces.
        """

    @abc.abstractmethod
    def drop_traces(self, reactor: str, trace_ids: set[str]) -> None:
        """Delete traces of one reactor (from its record, the index and the traces), atomically.

        Parameters
        ----------
        reactor : str
            The reactor's name.
        trace_ids : set of str
            Ids to delete; unknown ids are ignored.
        """

    def forget_trace(self, reactor: str, trace_id: str) -> None:
        """Drop one trace (its versions turned out missing or corrupted); see ``drop_traces``."""
        self.drop_traces(reactor, {trace_id})

    def latest_version(self, reactor: str, ingredient: str) -> Version | None:
        """The version of ``ingredient`` in the most recent trace of ``reactor`` that sent it,
        among the ``SCAN_TRACES`` most recent (the calls ``scale`` and ``scale_1`` of one step
        share its traces), or None."""
        for trace in self.traces(reactor, limit=SCAN_TRACES):
            for slot, name in trace.published().items():
                if name == ingredient:
                    return trace.outputs[slot]
        return None

    # --- reactors ---

    @abc.abstractmethod
    def reactor_records(self) -> dict[str, ReactorRecord]:
        """Every reactor ever recorded.

        Returns
        -------
        dict
            ``{reactor name: ReactorRecord}``; damaged records are skipped (with a warning).
        """

    @abc.abstractmethod
    def mark_invalidated(self, reactor: str, reason: str) -> None:
        """Remember why a reactor's traces were forgotten, until it commits a new trace.

        Parameters
        ----------
        reactor : str
            The reactor's name (a record is created when it has none).
        reason : str
            Shown by ``Plant.explain`` ("ingredient 'x' was invalidated").
        """

    @abc.abstractmethod
    def invalidated(self, reactor: str) -> str | None:
        """The reason given to ``mark_invalidated``, or None (never marked, or a trace was
        committed since)."""

    # --- ingredients and history ---

    @abc.abstractmethod
    def producer(self, ingredient: str) -> str | None:
        """The reactor that last produced ``ingredient`` here, or None."""

    @abc.abstractmethod
    def producers(self) -> dict[str, str]:
        """``{ingredient: producing reactor}`` of every ingredient ever produced (one read)."""

    def ingredient_names(self) -> list[str]:
        """Every ingredient ever produced in this plant directory."""
        return list(self.producers())

    @abc.abstractmethod
    def history(self) -> Iterator[HistoryRecord]:
        """Every run recorded, oldest first (by start time); damaged records are skipped.

        Returns
        -------
        iterator of HistoryRecord
        """

    # --- the code memo (``hashing.CodeMemo``) and input-file hashes (``tracking.HashStore``) ---

    @abc.abstractmethod
    def get(self, key: str) -> str | None:
        """The code memo entry under ``key`` (buffered ones included), or None."""

    @abc.abstractmethod
    def put(self, key: str, value: str) -> None:
        """Buffer a code memo entry; it is written with the next commit (or ``close``).

        Parameters
        ----------
        key, value : str
            Any strings; ``key`` at most 511 bytes of UTF-8.
        """

    @abc.abstractmethod
    def get_many(self, keys: list[str]) -> dict[str, str]:
        """``{key: value}`` of the code memo entries found among ``keys`` (one read)."""

    @abc.abstractmethod
    def get_file_hash(self, path: str) -> tuple | None:
        """The cached hash entry of an input file, ``(device, inode, size in bytes, mtime in ns,
        hashed at (Unix time, seconds), content hash)``, or None."""

    @abc.abstractmethod
    def put_file_hash(self, path: str, entry: tuple) -> None:
        """Buffer an input-file hash entry (see ``get_file_hash``); paths over 499 bytes of
        UTF-8 are not cached."""

    # --- lifecycle ---

    @property
    @abc.abstractmethod
    def closed(self) -> bool:
        """True once ``close`` was called."""

    @abc.abstractmethod
    def recover(self) -> None:
        """Release what an interrupted write of this thread left (a transaction, a lock); call
        it where no write of this thread can be in progress. No-op when nothing was left."""

    @abc.abstractmethod
    def close(self) -> None:
        """Write the buffered entries and release the store; idempotent, and safe to call again
        after an interrupt landed inside it. A failure to write the buffered entries is
        logged, not raised (they are caches)."""


@dataclass(frozen=True)
class StoredFile:
    """A file (or symlink) found in the plant's storage directories by ``BlobBackend.stored``.

    Attributes
    ----------
    location : str
        Relative to the plant directory, ``/``-separated.
    size : int
        Bytes (of the link itself for a symlink).
    mtime : float
        Modification time, Unix time in seconds.
    """
    location: str
    size: int
    mtime: float


class BlobBackend(abc.ABC):
    """Content-addressed bytes and arrays, and the stored files GC sweeps.

    A blob's location is derived from its content hash (``locations.blob_location``); identical
    content is stored once, and a blob whose location exists is complete. Every method raises
    ``OSError`` (``WarehouseError`` from the warehouse facade) when the disk refuses, and
    ``locations.LocationError`` for a location that leads out of the plant directory.
    """

    @abc.abstractmethod
    def put_bytes(self, content_hash: str, data: bytes, suffix: str = ".pkl") -> str:
        """Store ``data`` under its content hash.

        Parameters
        ----------
        content_hash : str
            Hex digest of ``data`` (computed by the caller, with its own domain).
        data : bytes
            The content.
        suffix : str
            File suffix, ``.`` and lowercase letters (``.pkl``).

        Returns
        -------
        str
            The blob's location.
        """

    @abc.abstractmethod
    def put_array(self, arr: np.ndarray) -> tuple[str, str]:
        """Store an array (any shape, a dtype without objects) as ``.npy``.

        Returns
        -------
        (str, str)
            Its content hash (``hashing.array_hash``) and its location.
        """

    @abc.abstractmethod
    def get_bytes(self, location: str) -> bytes:
        """The content of a blob.

        Raises
        ------
        FileNotFoundError
            when it is missing.
        """

    @abc.abstractmethod
    def get_array(self, location: str) -> np.ndarray:
        """An ``.npy`` blob as a read-only ``np.ndarray`` (memory-mapped from 1 MiB on).

        Raises
        ------
        FileNotFoundError
            when it is missing.
        ValueError
            when it is not a valid ``.npy`` file without objects (never unpickled).
        """

    @abc.abstractmethod
    def stored(self) -> Iterator[StoredFile]:
        """Every file and symlink under ``blobs/``, ``files/`` and ``specs/``, never following
        a symlink; a storage directory that leads out of the plant directory is skipped with a
        warning."""

    @abc.abstractmethod
    def remove(self, location: str) -> None:
        """Remove one stored file (a symlink itself, never its target).

        Raises
        ------
        OSError
            when it cannot be removed (also when it is already gone).
        """

    @abc.abstractmethod
    def prune_empty(self, keep: set[str]) -> None:
        """Remove empty per-version directories (``files/<storage>``) whose location is not in
        ``keep``; never raises."""
