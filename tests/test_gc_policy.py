"""GC policy, as a pure function over records: no disk, no plant.

``gc.plan`` decides which traces stay from reactor records and traces alone; ``gc.garbage``
decides which stored files go. The sweep through the file store is in ``test_gc.py``.
"""
from __future__ import annotations

import os

import pytest

from pyplant.warehouse import gc
from pyplant.warehouse.backend import StoredFile
from pyplant.warehouse.records import ReactorRecord, Trace, Version

TOKEN = "0123456789abcdef"


def blob(n: int) -> str:
    return f"blobs/{n:02x}/{n:030x}.npy"


def make(reactor: str, tid: str, nbytes: int = 100, location: str | None = None,
         finished: float = 0.0) -> Trace:
    out = Version(f"{reactor}.out", "array", "h" * 32, location, nbytes=nbytes)
    return Trace(reactor, tid, {}, {}, {}, {out.name: out}, finished=finished)


def records(*chains: tuple[str, list[Trace], dict[str, float]]):
    """({reactor: ReactorRecord}, {(reactor, id): Trace}) from (reactor, traces newest first, used)."""
    reactors = {r: ReactorRecord([t.trace_id for t in ts], used) for r, ts, used in chains}
    traces = {(t.reactor, t.trace_id): t for _, ts, _ in chains for t in ts}
    return reactors, traces


def kept(plan: gc.Plan) -> set[str]:
    return {t.trace_id for t in plan.keep}


def five(reactor: str = "r") -> list[Trace]:
    return [make(reactor, f"{reactor}{i}", location=blob(10 * (reactor == "s") + i)) for i in range(5)]


def test_no_policy_keeps_every_trace():
    reactors, traces = records(("r", five(), {}))
    plan = gc.plan(reactors, traces)
    assert kept(plan) == {"r0", "r1", "r2", "r3", "r4"} and plan.drop == {} and plan.dropped == 0


@pytest.mark.parametrize("keep_last, expected", [(1, {"r0"}), (2, {"r0", "r1"}), (5, {"r0", "r1", "r2", "r3", "r4"}),
                                                 (9, {"r0", "r1", "r2", "r3", "r4"}), (0, {"r0"})])
def test_keep_last_keeps_the_most_recent_traces_per_reactor(keep_last, expected):
    reactors, traces = records(("r", five("r"), {}), ("s", five("s"), {}))
    plan = gc.plan(reactors, traces, keep_last=keep_last)
    assert kept(plan) == expected | {t.replace("r", "s") for t in expected}
    assert plan.drop.get("r", set()) == {f"r{i}" for i in range(5)} - expected
    assert plan.dropped == 2 * (5 - len(expected))


def test_the_latest_trace_is_kept_whatever_the_budget():
    reactors, traces = records(("r", [make("r", "big", nbytes=10**9)], {}))
    assert kept(gc.plan(reactors, traces, keep_last=1, max_bytes=0)) == {"big"}


def test_a_trace_holding_a_protected_location_is_kept():
    trs = five()
    reactors, traces = records(("r", trs, {}))
    plan = gc.plan(reactors, traces, keep_last=1, protected=gc.owners([trs[3].outputs["r.out"].location]))
    assert kept(plan) == {"r0", "r3"} and plan.drop == {"r": {"r1", "r2", "r4"}}


def test_protection_is_by_owner_so_a_file_inside_a_kept_directory_counts():
    old = make("r", "old", location=f"files/f@{TOKEN}/data.csv")
    reactors, traces = records(("r", [make("r", "new"), old], {}))
    plan = gc.plan(reactors, traces, keep_last=1, protected={f"files/f@{TOKEN}"})
    assert kept(plan) == {"new", "old"}


def test_max_bytes_keeps_the_most_recently_used_traces_within_the_budget():
    trs = [make("r", f"r{i}", nbytes=100) for i in range(5)]
    used = {"r1": 10.0, "r2": 40.0, "r3": 30.0, "r4": 20.0}
    reactors, traces = records(("r", trs, used))
    assert kept(gc.plan(reactors, traces, max_bytes=200)) == {"r0", "r2", "r3"}
    assert kept(gc.plan(reactors, traces, max_bytes=199)) == {"r0", "r2"}
    assert kept(gc.plan(reactors, traces, max_bytes=0)) == {"r0"}
    assert gc.plan(reactors, traces, max_bytes=0).drop == {"r": {"r1", "r2", "r3", "r4"}}


def test_max_bytes_skips_a_trace_too_big_and_takes_a_smaller_one_after_it():
    trs = [make("r", "r0"), make("r", "big", nbytes=500), make("r", "small", nbytes=50)]
    reactors, traces = records(("r", trs, {"big": 30.0, "small": 20.0}))
    assert kept(gc.plan(reactors, traces, max_bytes=100)) == {"r0", "small"}


def test_max_bytes_falls_back_on_the_finish_time_when_a_trace_was_never_used():
    trs = [make("r", "r0"), make("r", "early", finished=1.0), make("r", "late", finished=5.0)]
    reactors, traces = records(("r", trs, {}))
    assert kept(gc.plan(reactors, traces, max_bytes=100)) == {"r0", "late"}


def test_keep_last_and_max_bytes_together():
    trs = [make("r", f"r{i}", nbytes=100) for i in range(5)]
    reactors, traces = records(("r", trs, {f"r{i}": float(10 - i) for i in range(5)}))
    plan = gc.plan(reactors, traces, keep_last=3, max_bytes=100)
    assert kept(plan) == {"r0", "r1"} and plan.drop == {"r": {"r2", "r3", "r4"}}


def test_a_trace_that_cannot_be_read_is_neither_kept_nor_dropped():
    trs = five()
    reactors, traces = records(("r", trs, {}))
    del traces[("r", "r2")]
    plan = gc.plan(reactors, traces, keep_last=1)
    assert "r2" not in kept(plan) and plan.drop == {"r": {"r1", "r3", "r4"}}


def test_referenced_is_the_owners_of_the_kept_versions():
    inline = make("r", "inline")  # no location: nothing on disk
    spec = make("s", "spec", location=f"grid@{TOKEN}")
    file = make("f", "file", location=f"files/f@{TOKEN}/out.txt")
    arr = make("a", "arr", location=blob(7))
    reactors, traces = records(("r", [inline], {}), ("s", [spec], {}), ("f", [file], {}), ("a", [arr], {}))
    assert gc.plan(reactors, traces).referenced() == {f"specs/grid@{TOKEN}", f"files/f@{TOKEN}", blob(7)}
    assert list(gc.trace_locations(inline)) == []
    assert gc.owners(["../etc/passwd", blob(7)]) == {blob(7)}


# --- which stored files are garbage ------------------------------------------------------------

NOW = 1_000_000.0


def entry(location: str, mtime: float) -> StoredFile:
    return StoredFile(location, 10, mtime)


def test_a_referenced_file_is_never_garbage_however_old():
    assert not gc.garbage(entry(blob(1), 0.0), {blob(1)}, NOW, set())
    assert not gc.garbage(entry(f"specs/grid@{TOKEN}.hdf", 0.0), {f"specs/grid@{TOKEN}"}, NOW, set())


def test_an_unreferenced_file_is_garbage_once_older_than_the_horizon():
    assert gc.garbage(entry(blob(1), NOW - 1), set(), NOW, set())
    assert not gc.garbage(entry(blob(1), NOW), set(), NOW, set())
    assert gc.garbage(entry("blobs/zz/stray", NOW - 1), set(), NOW, set())  # no owner: not referenced


def test_temp_files_of_live_plants_stay_and_of_dead_processes_go():
    live, dead = os.getpid(), 999_999_999
    assert not gc.garbage(entry(f"{blob(1)}.tmp-{live}-abcdef01", 0.0), set(), NOW, {live})
    assert gc.garbage(entry(f"{blob(1)}.tmp-{dead}-abcdef01", NOW + 10), set(), NOW, set())
    # a live process that is not a plant: its temp file stays while newer than the horizon
    assert not gc.garbage(entry(f"{blob(1)}.tmp-{live}-abcdef01", NOW), set(), NOW, set())
    assert gc.garbage(entry(f"{blob(1)}.tmp-{live}-abcdef01", NOW - 1), set(), NOW, set())


def test_the_latest_trace_of_every_ingredient_is_kept():
    """The calls ``scale`` and ``scale_1`` of one step share its traces: the latest trace that
    sent each ingredient stays, not only the step's latest."""
    def sent(tid: str, slot_name: str) -> Trace:
        out = Version(slot_name, "array", "h" * 32, None, nbytes=10)
        return Trace("step:scale", tid, {}, {}, {}, {"return": out}, names={"return": slot_name})

    traces_newest_first = [sent("a3", "scale_1"), sent("a2", "scale"), sent("a1", "scale_1"),
                           sent("a0", "scale")]
    reactors, traces = records(("step:scale", traces_newest_first, {}))
    plan = gc.plan(reactors, traces, keep_last=1)
    assert kept(plan) == {"a3", "a2"}
    assert plan.drop == {"step:scale": {"a1", "a0"}}


def test_a_gc_result_reads_as_what_was_freed():
    assert str(gc.GCResult(traces=2, files=3, bytes=1_050_000)) == "freed 1.1 MB in 3 files (2 old versions)"
