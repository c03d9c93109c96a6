"""GC: what is referenced, per storage type, and what live plants hold or are producing.

Every test ages the stored files first (an hour old), so that nothing survives by its mtime:
only the latest traces and the leases of live plants may protect it.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from pyplant import Ingredient, IngredientTypeSpec, Plant, ReactorFunc, specs

from conftest import Box, child_env, result_of, run_script, write_script

OLD = time.time() - 3600


def age_files(plant_dir):
    for top in ("blobs", "files", "specs"):
        for p in Path(plant_dir, top).rglob("*"):
            if p.is_file():
                os.utime(p, (OLD, OLD))


def stored(plant_dir) -> set[str]:
    return {str(p.relative_to(plant_dir)) for top in ("blobs", "files", "specs")
            for p in Path(plant_dir, top).rglob("*") if p.is_file()}


# --- 14. referenced, for every storage type ----------------------------------------------------

class Point:
    def __init__(self, x):
        self.x = x


class PointSpec(IngredientTypeSpec):
    """A custom spec writing ``specs/<storage>.point.json``."""

    @classmethod
    def get_name(cls):
        return "point"

    def _path(self, warehouse, name):
        return os.path.join(warehouse.baseDir, name + ".point.json")

    def store(self, warehouse, name, value):
        with open(self._path(warehouse, name), "w") as f:
            json.dump(value.x, f)
        return {}

    def fetch(self, warehouse, name, meta):
        path = self._path(warehouse, name)
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return Point(json.load(f))

    def is_instance(self, value):
        return isinstance(value, Point)


TYPES = ["inline", "pickle_blob", "array", "file", "hdf", "sparse", "custom"]


def typed_reactors(seen):
    @ReactorFunc
    def make(pipe, config):
        v = config.v
        pipe.send("inline", {"v": v})
        pipe.send("pickle_blob", {"v": v, "pad": bytes(100_000)})
        pipe.send("array", np.full(1000, float(v)))
        path = pipe.allocate("file", Ingredient.Type.file)
        with open(path, "w") as f:
            f.write(f"v={v}")
        ds = pipe.allocate("hdf", specs.HdfArraySpec, shape=(3,), dtype="int32")
        ds[...] = v
        pipe.send("sparse", sp.csr_matrix(np.eye(3) * v))
        pipe.send("custom", Point(v))

    @ReactorFunc
    def target(pipe):
        got = {}
        for name in TYPES:
            got[name] = yield pipe.receive(name)
        with open(got["file"]) as f:
            text = f.read()
        seen["values"] = (got["inline"]["v"], got["pickle_blob"]["v"], float(got["array"][0]), text,
                          int(got["hdf"][0]), float(got["sparse"].sum()), got["custom"].x)
        pipe.send("out", 1)

    return [target, make]


def expected_values(v):
    return (v, v, float(v), f"v={v}", v, 3.0 * v, v)


def typed_plant(open_plant, v, seen):
    plant, events = open_plant(config={"v": v}, reactors=typed_reactors(seen))
    plant.warehouse.register_ingredient_specs([PointSpec()])
    return plant, events


STRAYS = ["blobs/ff/0123456789abcdef0123456789abcd.npy", "blobs/ee/0123456789abcdef0123456789abcd.pkl",
          "files/stray@0123456789abcdef/stray.txt", "specs/stray@0123456789abcdef.hdf",
          "specs/stray@0123456789abcdef.npz", "specs/stray@0123456789abcdef.point.json",
          "specs/temp-stray@0123456789abcdef.hdf", "blobs/ab/leftover.npy.tmp-999999999-abcdef01"]


def plant_strays(plant_dir):
    for rel in STRAYS:
        path = Path(plant_dir, rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 100)


@pytest.mark.parametrize("policy", [{}, {"keep_last": 1}], ids=["no-policy", "keep_last=1"])
def test_gc_keeps_the_latest_version_of_every_type_and_sweeps_the_rest(open_plant, caplog, policy):
    """One version of each type (inline pickle, pickle blob, array, file, HDF, sparse, custom
    spec) for v=1, then for v=2: gc() of old files keeps everything the latest traces
    reference (v=2 is a cache hit with no warning), sweeps unreferenced leftovers of every
    kind, and with keep_last=1 frees every file of v=1 (which then re-runs)."""
    seen = Box()
    plant, _ = typed_plant(open_plant, 1, seen)
    plant.run_reactor("target")
    plant_dir = plant.plantDir
    plant.shutdown()
    files_v1 = stored(plant_dir)
    plant, _ = typed_plant(open_plant, 2, seen)
    plant.run_reactor("target")
    plant.shutdown()
    files_v2 = stored(plant_dir) - files_v1
    assert {f.split("/")[0] for f in files_v2} == {"blobs", "files", "specs"}
    assert len([f for f in files_v2 if f.startswith("specs/")]) == 3  # hdf, npz, point.json
    plant_strays(plant_dir)
    age_files(plant_dir)

    plant, _ = typed_plant(open_plant, 2, seen)
    result = plant.gc(**policy)
    plant.shutdown()
    left = stored(plant_dir)
    assert files_v2 <= left, sorted(files_v2 - left)
    assert not set(STRAYS) & left, sorted(set(STRAYS) & left)
    if policy:
        per_version_v1 = {f for f in files_v1 if not f.startswith("blobs/")}
        assert not per_version_v1 & left, sorted(per_version_v1 & left)
        assert result.traces == 2  # v=1's traces of 'make' and 'target'
        plant, _ = typed_plant(open_plant, 1, seen)
        assert [len(plant.warehouse.metadata.trace_ids(r)) for r in ("make", "target")] == [1, 1]
        plant.shutdown()
    else:
        assert files_v1 <= left
        assert result.traces == 0
    assert result.files == len(STRAYS) + (len(files_v1 - left) if policy else 0)

    caplog.set_level(logging.WARNING)
    plant, events = typed_plant(open_plant, 2, seen)
    plant.run_reactor("target")
    assert events.started == ["target"]
    assert seen["values"] == expected_values(2)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    plant.shutdown()
    plant, events = typed_plant(open_plant, 1, seen)
    plant.run_reactor("target")
    assert events.started == (["target", "make"] if policy else ["target"])
    assert seen["values"] == expected_values(1)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # nothing dangling


# --- 3a, 16. what a live plant holds or is producing -------------------------------------------

HOLDER = '''
@ReactorFunc
def produce(pipe, config):
    pipe.send("arr", np.full(131072, float(config.seed)))  # 1 MiB

@ReactorFunc
def target(pipe):
    arr = yield pipe.receive("arr")
    RESULT["first"] = float(arr[0])

@ReactorFunc
def slow_maker(pipe, config):
    pipe.send("made", np.full(131072, 10.0 + config.seed))
    open(os.environ["READY"], "w").close()
    while not os.path.exists(os.environ["GO"]):
        time.sleep(0.01)

@ReactorFunc
def use_made(pipe):
    made = yield pipe.receive("made")
    RESULT["made"] = float(made[0])

import time
mode = ARGS[1] if len(ARGS) > 1 else "run"
plant = open_plant({"seed": {"A": 1, "B": 2, "C": 3}[ARGS[0]]})
plant.add_reactors(target, produce, slow_maker, use_made)
if mode == "fetch":                       # only fetches, never runs a reactor
    RESULT["first"] = float(plant.fetch_ingredient("arr")[0])
    print("READY", flush=True)
    sys.stdin.read()
elif mode == "make":
    plant.run_reactor(slow_maker)
elif mode == "use_made":
    plant.run_reactor(use_made)
else:
    plant.run_reactor(target)
plant.shutdown()
report()
'''

GC = '''
import sys
from pyplant import Plant
plant = Plant(sys.argv[1])
result = plant.gc(keep_last=int(sys.argv[2]) if len(sys.argv) > 2 else None)
print("GC %d %d" % (result.traces, result.files), flush=True)
plant.shutdown()
'''


def env():
    return child_env()


def gc_in_another_process(tmp_path, plant_dir, keep_last=1) -> tuple[int, int]:
    script = tmp_path / "gc_script.py"
    script.write_text(GC)
    out = subprocess.run([sys.executable, str(script), str(plant_dir), str(keep_last)],
                         capture_output=True, text=True, env=env(), timeout=120)
    assert out.returncode == 0, out.stderr
    _, traces, files = out.stdout.split()
    return int(traces), int(files)


def blobs(plant_dir) -> set[Path]:
    return {p for p in Path(plant_dir, "blobs").rglob("*.npy")}


@pytest.fixture
def holder(tmp_path):
    script = write_script(tmp_path / "holder.py", HOLDER)
    plant_dir = tmp_path / "plant"

    def run(which, *mode, **extra_env):
        return result_of(run_script(script, plant_dir, which, *mode, env_extra=extra_env))

    run.script, run.plant_dir = script, plant_dir
    return run


def test_gc_keeps_what_a_plant_that_only_fetched_holds(holder, tmp_path):
    """A live plant in another process that only called fetch_ingredient (it never ran a
    reactor) holds A's array: gc(keep_last=1) after B and C ran keeps A's blob and A's trace
    (A is a cache hit afterwards), and frees B's."""
    assert "produce" in holder("A")["started"]
    blob_a = blobs(holder.plant_dir)
    proc = subprocess.Popen([sys.executable, str(holder.script), str(holder.plant_dir), "A", "fetch"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env(), cwd=str(tmp_path))
    try:
        assert proc.stdout.readline().strip() == "READY", proc.stderr.read()
        holder("B")
        blob_b = blobs(holder.plant_dir) - blob_a
        holder("C")
        age_files(holder.plant_dir)
        traces, files = gc_in_another_process(tmp_path, holder.plant_dir)
        assert files >= 1 and traces >= 1
        assert all(p.exists() for p in blob_a)
        assert not any(p.exists() for p in blob_b)
    finally:
        out, err = proc.communicate(input="", timeout=120)
    assert proc.returncode == 0, err
    fetched = result_of(subprocess.CompletedProcess(proc.args, 0, out, err))
    assert fetched["result"] == {"first": 1.0}
    assert holder("A")["started"] == ["target"]


def test_gc_keeps_what_a_running_reactor_in_another_process_sent(holder, tmp_path):
    """A reactor in another process has sent an array and is still running when GC runs (its
    files aged, so that no mtime protects them): its blob is in flight, GC keeps it, and the
    version it commits loads in a later process without a re-run or a warning."""
    ready, go = tmp_path / "ready", tmp_path / "go"
    proc = subprocess.Popen([sys.executable, str(holder.script), str(holder.plant_dir), "A", "make"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(env(), READY=str(ready), GO=str(go)), cwd=str(tmp_path))
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ready.exists(), proc.communicate()
        age_files(holder.plant_dir)
        gc_in_another_process(tmp_path, holder.plant_dir)
    finally:
        go.touch()
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    # the same READY and GO as above: the maker read them, so they are inputs of its trace
    later = holder("A", "use_made", READY=str(ready), GO=str(go))
    assert later["started"] == ["use_made"]
    assert later["result"]["made"] == 11.0


def test_gc_from_another_plant_object_inside_a_running_reactor(open_plant, plant_dir):
    """The same in one process: a reactor sends a blob that already exists as an old,
    unreferenced leftover (reused: written by a run that never committed), then another Plant
    on the directory runs gc(): the reused blob survives, and the version loads later."""
    payload = np.arange(5000, dtype=np.float64)

    @ReactorFunc
    def leftover(pipe):
        pipe.send("same", payload.copy())
        raise RuntimeError("dies before its commit: the blob is an unreferenced leftover")

    @ReactorFunc
    def maker(pipe):
        pipe.send("same2", payload.copy())
        age_files(plant_dir)
        other = Plant(str(plant_dir))
        other.gc(keep_last=1)
        other.shutdown()

    @ReactorFunc
    def user(pipe):
        x = yield pipe.receive("same2")
        pipe.send("total", float(x.sum()))

    plant, _ = open_plant(reactors=[user, maker, leftover])
    with pytest.raises(RuntimeError):
        plant.run_reactor(leftover)
    plant.shutdown()
    assert len(blobs(plant_dir)) == 1
    plant, _ = open_plant(reactors=[user, maker, leftover])
    plant.run_reactor(maker)
    assert len(blobs(plant_dir)) == 1
    plant.shutdown()
    plant, events = open_plant(reactors=[user, maker, leftover])
    plant.run_reactor(user)
    assert events.started == ["user"]
    assert plant.fetch_ingredient("total") == float(payload.sum())


def test_gc_keeps_what_this_plant_loaded_from_an_older_trace(open_plant, plant_dir):
    """A plant that received config A's version (an older trace, since B ran after it in
    another plant) holds it: gc(keep_last=1) from a second plant keeps A's blob, and the
    holder can still load the version it used (fetch_ingredient after its values are gone)."""
    @ReactorFunc
    def produce(pipe, config):
        pipe.send("arr", np.full(1000, float(config.seed)))

    @ReactorFunc
    def target(pipe):
        arr = yield pipe.receive("arr")
        pipe.send("first", float(arr[0]))

    holder, _ = open_plant(config={"seed": 1}, reactors=[target, produce])
    holder.run_reactor(target)
    other, _ = open_plant(config={"seed": 2}, reactors=[target, produce])
    other.run_reactor(target)
    age_files(plant_dir)
    other.gc(keep_last=1)
    holder._session.values.clear()  # as if the values had left memory: fetch loads from disk again
    np.testing.assert_array_equal(holder.fetch_ingredient("arr"), np.full(1000, 1.0))


def _stray_blob(plant_dir, mtime: float) -> Path:
    """An unreferenced file where a blob would be (as a plant writing it right now leaves one)."""
    path = Path(plant_dir) / "blobs" / "ab" / ("cd" * 15 + ".npy")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * 10)
    os.utime(path, (mtime, mtime))
    return path


def test_gc_sweeps_an_unreferenced_file_only_once_older_than_every_live_lease_by_the_clock_margin(tmp_path):
    """A file newer than (the oldest live lease's start - CLOCK_MARGIN_SECONDS) may be a
    version being written (clocks of processes and file systems differ by that much): kept.
    Older, it is garbage."""
    from pyplant.warehouse import gc as gc_module
    with Plant(tmp_path / "p") as plant:
        started = min(lease.started for lease in gc_module.leases.live_leases(plant.plantDir))
        stray = _stray_blob(plant.plantDir, started - gc_module.CLOCK_MARGIN_SECONDS / 2)
        assert plant.gc().files == 0 and stray.exists()
        os.utime(stray, (started - 10, started - 10))
        result = plant.gc()
        assert (result.files, result.bytes) == (1, 10) and not stray.exists()


def test_gc_deletes_nothing_while_a_live_lease_is_unreadable(tmp_path, caplog):
    """A live plant whose lease cannot be read may hold anything: GC keeps everything, says
    so, and reports nothing freed."""
    import fcntl
    with Plant(tmp_path / "p") as plant:
        stray = _stray_blob(plant.plantDir, time.time() - 3600)
        lease = Path(plant.plantDir) / "leases" / "999999-1.lease"
        lease.write_text("not a lease\n")
        holder = os.open(lease, os.O_RDONLY)
        try:
            fcntl.flock(holder, fcntl.LOCK_SH)  # held: a live plant's lease
            with caplog.at_level(logging.WARNING, logger="pyplant"):
                result = plant.gc(keep_last=1)
        finally:
            os.close(holder)
        assert (result.traces, result.files, result.bytes) == (0, 0, 0) and stray.exists()
        assert "is unreadable" in caplog.text and "nothing deleted" in caplog.text
        assert plant.gc().files == 1 and not stray.exists()  # lease released: swept
