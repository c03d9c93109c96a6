"""Garbage collection of versions: what to keep (``plan``, a pure function over records), and
sweeping the rest off the disk (``sweep``, through the blob backend).

Always kept: the versions that the latest trace of each reactor references, and everything a
live plant (any process) recorded in its lease: what it loaded, allocated or is writing (see
``leases.py``). On top of that a policy keeps:

- ``keep_last=K``: the K most recent traces per reactor (1 = only the latest; 0 counts as 1);
- ``max_bytes=B``: older traces, most recently used first, while the total size of their
  versions stays within B bytes.

With no policy every trace is kept and only unreferenced files (a crash's leftovers) are swept.
"Referenced" is decided per *owner* (``locations.owner``: a blob, a file ingredient's
directory, every ``specs/`` file of one storage name), the one definition the warehouse also
writes and frees by. A content-addressed blob shared by several versions goes only when none
of them is kept. Temporary files (``*.tmp-<pid>-*``) of a live plant's process are spared.
Files newer than the oldest live plant are spared too, as a second line of defence.

GC runs under the exclusive side of ``gc.lock``: no plant records a new location meanwhile.
It never follows a symlink: a symlinked ``blobs/``, ``files/`` or ``specs/`` is skipped with a
warning, and a symlink found inside is removed itself, never its target.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Iterator, Mapping

from . import leases, locations
from .backend import BlobBackend, StoredFile
from .records import ReactorRecord, Trace

if TYPE_CHECKING:
    from . import Warehouse

logger = logging.getLogger(__name__)

# File times come from the kernel's coarse clock, a tick behind time.time().
CLOCK_MARGIN_SECONDS = 2.0


@dataclass(frozen=True)
class GCResult:
    """What a collection freed: ``traces`` forgotten, ``files`` deleted, ``bytes`` freed."""
    traces: int
    files: int
    bytes: int

    def __str__(self) -> str:
        return f"freed {self.bytes / 1e6:.1f} MB in {self.files} files ({self.traces} old versions)"


@dataclass(frozen=True)
class Plan:
    """What a policy keeps and drops.

    Attributes
    ----------
    keep : list of Trace
        The traces kept (their versions' owners are referenced).
    drop : dict
        ``{reactor: set of trace ids}`` to forget.
    """
    keep: list[Trace] = field(default_factory=list)
    drop: dict[str, set[str]] = field(default_factory=dict)

    @property
    def dropped(self) -> int:
        """The number of traces to forget."""
        return sum(len(ids) for ids in self.drop.values())

    def referenced(self) -> set[str]:
        """The owners (``locations.owner``) of every location the kept traces reference."""
        return owners(loc for trace in self.keep for loc in trace_locations(trace))


def plan(reactors: Mapping[str, ReactorRecord], traces: Mapping[tuple[str, str], Trace],
         keep_last: int | None = None, max_bytes: int | None = None,
         protected: Iterable[str] = ()) -> Plan:
    """Decide which traces to keep: no I/O, from records alone.

    Parameters
    ----------
    reactors : mapping
        ``{reactor: ReactorRecord}`` (trace ids most recent first, their last use).
    traces : mapping
        ``{(reactor, trace id): Trace}``; a trace missing here (unreadable) is neither kept
        nor dropped.
    keep_last : int, optional
        Traces kept per reactor, most recent first (at least 1).
    max_bytes : int, optional
        Budget in bytes (``Version.nbytes`` summed per trace) for traces other than the ones
        kept anyway, filled most recently used first (last use: ``ReactorRecord.used``, else
        the trace's ``finished`` time).
    protected : iterable of str
        Owners (``locations.owner``) held by live plants: a trace referencing one is kept.

    Returns
    -------
    Plan
        Always keeps the latest trace of every reactor, and the latest that sent each
        ingredient (the calls ``scale`` and ``scale_1`` of one step share its traces).
    """
    protected = set(protected)
    result = Plan()
    optional: list[tuple[float, Trace]] = []
    for reactor, rec in reactors.items():
        published: set[str] = set()  # ingredients whose latest trace is kept already
        for rank, tid in enumerate(rec.traces):
            trace = traces.get((reactor, tid))
            if trace is None:
                continue
            names = set(trace.published().values())
            latest_of_some = not names <= published  # steps called twice share a reactor key
            published |= names
            if rank == 0 or latest_of_some or owners(trace_locations(trace)) & protected:
                result.keep.append(trace)
            elif keep_last is not None and rank >= max(1, keep_last):
                result.drop.setdefault(reactor, set()).add(tid)
            else:
                optional.append((rec.used.get(tid, trace.finished), trace))
    budget = max_bytes
    for _, trace in sorted(optional, key=lambda item: item[0], reverse=True):
        size = sum(v.nbytes for v in trace.outputs.values())
        if budget is None or size <= budget:
            result.keep.append(trace)
            budget = None if budget is None else budget - size
        else:
            result.drop.setdefault(trace.reactor, set()).add(trace.trace_id)
    return result


def owners(locs: Iterable[str]) -> set[str]:
    """The owners (``locations.owner``) of ``locs``; locations no rule derives are left out."""
    return {own for own in map(locations.owner, locs) if own is not None}


def trace_locations(trace: Trace) -> Iterator[str]:
    """The stored locations of a trace's outputs (inline values have none)."""
    for version in trace.outputs.values():
        if version.location:
            yield version.location


def garbage(entry: StoredFile, referenced: set[str], horizon: float, live_pids: set[int]) -> bool:
    """True when a stored file may be deleted: its owner is not referenced, and it is older
    than ``horizon`` (Unix time, seconds) or a temp file of a dead process; a temp file of a
    live plant's process, or of a live process and newer than ``horizon``, is never garbage."""
    own = locations.owner(entry.location)
    if own is not None and own in referenced:
        return False
    pid = leases.tmp_pid(os.path.basename(entry.location))
    if pid is not None and (pid in live_pids or (_pid_alive(pid) and entry.mtime >= horizon)):
        return False  # being written by a live plant
    return pid is not None or entry.mtime < horizon


def sweep(blobs: BlobBackend, referenced: set[str], horizon: float,
          live_pids: set[int]) -> tuple[int, int]:
    """Delete every stored file that is ``garbage``; returns (files, bytes) deleted."""
    files = freed = 0
    for entry in blobs.stored():
        if not garbage(entry, referenced, horizon, live_pids):
            continue
        try:
            blobs.remove(entry.location)
        except (OSError, ValueError):
            continue
        files += 1
        freed += entry.size
    blobs.prune_empty(referenced)
    return files, freed


def collect(warehouse: "Warehouse", keep_last: int | None = None, max_bytes: int | None = None,
            held: Iterable[str] = ()) -> GCResult:
    """Apply the policy, forget the traces it drops, then sweep unreferenced files.

    Parameters
    ----------
    keep_last : int, optional
        Traces kept per reactor, most recent first; at least 1.
    max_bytes : int, optional
        Budget in bytes for the versions of traces other than the latest ones.
    held : iterable of str
        Locations this process holds, never deleted (in addition to every live lease).

    Returns
    -------
    GCResult
        What was freed; nothing when a live plant's lease cannot be read (logged).

    Raises
    ------
    WarehouseError
        when the metadata cannot be read or written.
    """
    meta = warehouse.metadata
    with leases.exclusive(warehouse.plantDir):
        try:
            live = leases.live_leases(warehouse.plantDir)
        except leases.UnreadableLease as exc:
            logger.warning("gc: %s; nothing deleted", exc)
            return GCResult(0, 0, 0)
        protected = owners(set(held).union(*(lease.held for lease in live)))
        reactors = meta.reactor_records()
        traces = {(r, tid): t for r, rec in reactors.items() for tid in rec.traces
                  if (t := meta.trace(r, tid)) is not None}
        decided = plan(reactors, traces, keep_last, max_bytes, protected)
        for reactor, trace_ids in decided.drop.items():
            meta.drop_traces(reactor, trace_ids)
        horizon = min([lease.started for lease in live] + [time.time()]) - CLOCK_MARGIN_SECONDS
        files, freed = sweep(warehouse.blobs, protected | decided.referenced(), horizon,
                             {lease.pid for lease in live})
    return GCResult(decided.dropped, files, freed)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
