"""Garbage collection of versions: what to keep, and sweeping the rest off the disk.

Always kept: the versions that the latest trace of each reactor references, and everything a
live plant (any process) recorded in its lease: what it loaded, allocated or is writing (see
``leases.py``). On top of that a policy keeps:

- ``keep_last=K``: the K most recent traces per reactor (1 = only the latest);
- ``max_bytes=B``: older traces, most recently used first, while the total stays within B bytes.

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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Iterator

from . import leases, locations
from .metadata import Trace

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
    """
    plant_dir = warehouse.plantDir
    meta = warehouse.metadata
    with leases.exclusive(plant_dir):
        try:
            live = leases.live_leases(plant_dir)
        except leases.UnreadableLease as exc:
            logger.warning("gc: %s; nothing deleted", exc)
            return GCResult(0, 0, 0)
        protected = _owners(set(held).union(*(lease.held for lease in live)))
        keep, drop = _choose(meta, keep_last, max_bytes, protected)
        for reactor, trace_ids in drop.items():
            meta.drop_traces(reactor, trace_ids)
        referenced = protected | _owners(loc for t in keep for loc in _locations(t))
        horizon = min([lease.started for lease in live] + [time.time()]) - CLOCK_MARGIN_SECONDS
        files, freed = _sweep(warehouse.paths, referenced, horizon, {lease.pid for lease in live})
    return GCResult(sum(len(v) for v in drop.values()), files, freed)


def _owners(locs: Iterable[str]) -> set[str]:
    return {own for own in map(locations.owner, locs) if own is not None}


def _choose(meta, keep_last: int | None, max_bytes: int | None,
            protected: set[str]) -> tuple[list[Trace], dict[str, set[str]]]:
    keep: list[Trace] = []
    optional: list[tuple[float, Trace]] = []
    drop: dict[str, set[str]] = {}
    for reactor, rec in meta.reactor_records().items():
        for rank, tid in enumerate(rec["traces"]):
            trace = meta.trace(reactor, tid)
            if trace is None:
                continue
            holds = bool(_owners(_locations(trace)) & protected)
            if rank == 0 or holds:
                keep.append(trace)
            elif keep_last is not None and rank >= max(1, keep_last):
                drop.setdefault(reactor, set()).add(tid)
            else:
                optional.append((rec.get("used", {}).get(tid, trace.finished), trace))
    budget = max_bytes
    for _, trace in sorted(optional, key=lambda item: item[0], reverse=True):
        size = sum(v.nbytes for v in trace.outputs.values())
        if budget is None or size <= budget:
            keep.append(trace)
            budget = None if budget is None else budget - size
        else:
            drop.setdefault(trace.reactor, set()).add(trace.trace_id)
    return keep, drop


def _locations(trace: Trace) -> Iterator[str]:
    for version in trace.outputs.values():
        if version.location:
            yield version.location


def _sweep(paths: locations.Root, referenced: set[str], horizon: float,
           live_pids: set[int]) -> tuple[int, int]:
    """Delete files no kept version references: older than ``horizon``, and not a temp file
    of a live plant's process."""
    files = freed = 0
    for location, path in _stored_files(paths):
        own = locations.owner(location)
        if own is not None and own in referenced:
            continue
        try:
            stat = os.lstat(path)
            if not _garbage(os.path.basename(path), stat, horizon, live_pids):
                continue
            os.unlink(path)  # a symlink goes itself; its target is never touched
        except OSError:
            continue
        files += 1
        freed += stat.st_size
    _remove_empty_dirs(paths, referenced)
    return files, freed


def _garbage(name: str, stat: os.stat_result, horizon: float, live_pids: set[int]) -> bool:
    pid = leases.tmp_pid(name)
    if pid is not None and (pid in live_pids or (_pid_alive(pid) and stat.st_mtime >= horizon)):
        return False  # being written by a live plant
    return pid is not None or stat.st_mtime < horizon


def _stored_files(paths: locations.Root) -> Iterator[tuple[str, str]]:
    """(location, path) of every file and symlink under blobs/, files/ and specs/, without
    following any symlink."""
    for top in locations.TOPS:
        root = os.path.join(paths.path, top)
        if os.path.islink(root) or not paths.is_inside(os.path.join(root, "x")):
            logger.warning("gc: skipping %s: it leads out of the plant directory (%s)", root,
                           os.path.realpath(root))
            continue
        for dirpath, dirnames, filenames in os.walk(root):  # never descends into a symlink
            links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
            for name in filenames + links:
                path = os.path.join(dirpath, name)
                yield os.path.relpath(path, paths.path).replace(os.sep, "/"), path


def _remove_empty_dirs(paths: locations.Root, referenced: set[str]) -> None:
    root = os.path.join(paths.path, "files")
    if os.path.islink(root):
        return
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        location = os.path.relpath(dirpath, paths.path).replace(os.sep, "/")
        if dirpath != root and not dirnames and not filenames and location not in referenced:
            try:
                os.rmdir(dirpath)
            except OSError:
                pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
