"""Garbage collection of versions: what to keep, and sweeping the rest off the disk.

Always kept: the versions that the latest trace of each reactor references, and every file a
live plant holds (its lease lists the versions it loaded or made) or may be writing (files
newer than the oldest live plant's start). On top of that a policy keeps:

- ``keep_last=K``: the K most recent traces per reactor (1 = only the latest);
- ``max_bytes=B``: older traces, most recently used first, while the total stays within B bytes.

With no policy every trace is kept and only unreferenced files (a crash's leftovers) are swept.
A content-addressed blob shared by several versions goes only when none of them is kept.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Iterator

from .metadata import Trace

if TYPE_CHECKING:
    from . import Warehouse

_STORAGE = re.compile(r"^(.*@[0-9a-f]{16})")
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
        Locations this process holds (loaded values), never deleted.
    """
    meta = warehouse.metadata
    leases = meta.live_leases()
    protected = set(held).union(*(lease["held"] for lease in leases))
    keep, drop = _choose(meta, keep_last, max_bytes, protected)
    for reactor, trace_ids in drop.items():
        meta.drop_traces(reactor, trace_ids)
    referenced = protected | {loc for t in keep for loc in _locations(t)}
    # File times come from the kernel's coarse clock, a tick behind time.time(): a margin keeps
    # a blob reused right after a plant opened on the safe side.
    horizon = min([lease["started"] for lease in leases] + [time.time()]) - CLOCK_MARGIN_SECONDS
    files, freed = _sweep(warehouse.plantDir, referenced, horizon)
    return GCResult(sum(len(v) for v in drop.values()), files, freed)


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
            holds = any(loc in protected for loc in _locations(trace))
            if rank == 0 or holds:
                keep.append(trace)
            elif keep_last is not None and rank >= max(1, keep_last):
                drop.setdefault(reactor, set()).add(tid)
            else:
                optional.append((rec.get("used", {}).get(tid, trace.finished), trace))
    budget = None if max_bytes is None else max_bytes
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


def _sweep(plant_dir: str, referenced: set[str], horizon: float) -> tuple[int, int]:
    """Delete files no kept version references and that are older than ``horizon``."""
    storages = {_storage_of(loc) for loc in referenced} - {None}
    files = freed = 0
    for location, path in _stored_files(plant_dir):
        if location in referenced or _storage_of(location) in storages:
            continue
        try:
            stat = os.stat(path)
            if stat.st_mtime >= horizon:
                continue  # a live plant may be writing it
            os.remove(path)
        except OSError:
            continue
        files += 1
        freed += stat.st_size
    _remove_empty_dirs(os.path.join(plant_dir, "files"))
    return files, freed


def _storage_of(location: str) -> str | None:
    """The per-version storage name of a spec or file location, None for blobs."""
    parts = location.split(os.sep)
    if parts[0] == "files" and len(parts) > 1:
        return parts[1]
    if parts[0] == "specs":
        match = _STORAGE.match(parts[-1])
        return match.group(1) if match else None
    if "@" in location and os.sep not in location:  # a spec's storage name itself
        return location
    return None


def _stored_files(plant_dir: str) -> Iterator[tuple[str, str]]:
    for top in ("blobs", "files", "specs"):
        root = os.path.join(plant_dir, top)
        for dirpath, _, filenames in os.walk(root):
            for filename in filenames:
                path = os.path.join(dirpath, filename)
                yield os.path.relpath(path, plant_dir), path


def _remove_empty_dirs(root: str) -> None:
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        if dirpath != root and not dirnames and not filenames:
            try:
                os.rmdir(dirpath)
            except OSError:
                pass
