"""Damage to the warehouse is detected, named in a warning, and repaired by re-running producers."""
from __future__ import annotations

import dataclasses
import errno
import glob
import logging
import os
import time

import numpy as np
import pytest

import pyplant.warehouse.store as store_mod
from pyplant import Ingredient, Plant, ReactorFunc, specs
from pyplant.errors import PlantDirError, WarehouseError
from pyplant.warehouse.records import Version

from conftest import Box


def chain(make_data, data_type=None):
    """Reactors: 'producer' sends 'data', 'other' sends 'side', 'target' combines both."""
    seen = Box()

    @ReactorFunc
    def producer(pipe):
        if data_type is None:
            pipe.send("data", make_data())
        else:
            pipe.send("data", make_data(), data_type)

    @ReactorFunc
    def other(pipe):
        pipe.send("side", np.arange(10, dtype=np.int64))

    @ReactorFunc
    def target(pipe):
        data = yield pipe.receive("data")
        side = yield pipe.receive("side")
        seen["data"] = data
        pipe.send("result", int(np.asarray(side).sum()))

    return [target, producer, other], seen


def started_counter(plant):
    names = []
    plant.add_event_listener(Plant.EventType.reactor_started, lambda e, name, *a: names.append(name))
    return names


def pyplant_warnings(caplog, needle):
    return [r for r in caplog.records if r.levelno >= logging.WARNING
            and r.name.startswith("pyplant") and needle in r.getMessage()]


def damage_and_rerun(open_plant, hasher, caplog, reactors, damage):
    """Run once, apply ``damage(plant_dir)``, reopen, force 'target' to re-run; return its events."""
    plant, _ = open_plant(reactors=reactors)
    plant.run_reactor("target")
    plant_dir = plant.plantDir
    plant.shutdown()
    damage(plant_dir)
    hasher.bump("target")
    caplog.clear()
    caplog.set_level(logging.WARNING)
    plant2, events = open_plant(reactors=reactors)
    plant2.run_reactor("target")
    return plant2, events


def blob(plant_dir, suffix):
    found = glob.glob(os.path.join(plant_dir, "blobs", "**", "*" + suffix), recursive=True)
    return found


def truncate_half(path):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)


def flip_middle(path, count=16):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.seek(size // 2)
        chunk = f.read(count)
        f.seek(size // 2)
        f.write(bytes(b ^ 0xFF for b in chunk))
    assert os.path.getsize(path) == size


def small_array():
    return np.arange(1000, dtype=np.float64) * 1.5


def npy_of(plant_dir, expected):
    """The .npy blob holding an array equal to ``expected``."""
    for path in blob(plant_dir, ".npy"):
        arr = np.load(path, mmap_mode="r")
        if arr.shape == expected.shape and arr.dtype == expected.dtype and np.array_equal(arr, expected):
            return path
    raise AssertionError("blob not found")


def assert_repaired(events, seen, expected, caplog, name="data"):
    assert events.started == ["target", "producer"]
    assert "other" not in events.started
    np.testing.assert_array_equal(np.asarray(seen["data"]), expected)
    assert pyplant_warnings(caplog, f"'{name}'"), [r.getMessage() for r in caplog.records]


def test_truncated_small_npy_blob_recomputed(open_plant, hasher, caplog):
    """A small .npy blob truncated to half is detected, warned about, and its producer re-runs."""
    reactors, seen = chain(small_array)
    plant, events = damage_and_rerun(open_plant, hasher, caplog, reactors,
                                     lambda d: truncate_half(npy_of(d, small_array())))
    assert_repaired(events, seen, small_array(), caplog)
    assert plant.fetch_ingredient("result") == 45


def test_truncated_large_npy_blob_recomputed(open_plant, hasher, caplog):
    """A >64 MiB .npy blob truncated to half fails its size check and is recomputed."""
    def big():
        arr = np.zeros(70 * (1 << 20) // 4, dtype=np.float32)
        arr[::4096] = 1.0
        return arr

    expected = big()
    reactors, seen = chain(big)
    plant, events = damage_and_rerun(open_plant, hasher, caplog, reactors,
                                     lambda d: truncate_half(npy_of(d, expected)))
    assert_repaired(events, seen, expected, caplog)
    seen.clear()


def test_flipped_bytes_in_small_npy_blob_recomputed(open_plant, hasher, caplog):
    """Altered bytes (same size) in a small .npy blob fail the hash check; the producer re-runs."""
    reactors, seen = chain(small_array)
    _, events = damage_and_rerun(open_plant, hasher, caplog, reactors,
                                 lambda d: flip_middle(npy_of(d, small_array())))
    assert_repaired(events, seen, small_array(), caplog)


class Bomb:
    """Unpickling this would record it: damaged pickles must never be unpickled."""
    loaded = []

    def __reduce__(self):
        return (Bomb._boom, ())

    @staticmethod
    def _boom():
        Bomb.loaded.append(1)
        return "boom"


def big_object():
    return {"payload": bytes(range(256)) * 400, "n": 7}


def test_flipped_bytes_in_pickle_blob_never_unpickled(open_plant, hasher, caplog, monkeypatch):
    """A damaged >64 KiB pickle blob is rejected by its hash (never unpickled) and recomputed."""
    import pickle
    reactors, seen = chain(big_object, Ingredient.Type.object)
    loads = []
    real_loads = pickle.loads

    def damage(plant_dir):
        (path,) = blob(plant_dir, ".pkl")
        flip_middle(path)
        monkeypatch.setattr(pickle, "loads", lambda data, *a, **k: (loads.append(len(data)),
                                                                    real_loads(data, *a, **k))[1])

    _, events = damage_and_rerun(open_plant, hasher, caplog, reactors, damage)
    assert events.started == ["target", "producer"]
    assert seen["data"] == big_object()
    assert pyplant_warnings(caplog, "'data'")
    assert all(n < 1 << 16 for n in loads)  # the damaged blob never reached pickle.loads


def test_deleted_blob_recomputed(open_plant, hasher, caplog):
    """A deleted .npy blob makes the producer re-run, with a warning naming the ingredient."""
    reactors, seen = chain(small_array)
    _, events = damage_and_rerun(open_plant, hasher, caplog, reactors,
                                 lambda d: os.remove(npy_of(d, small_array())))
    assert_repaired(events, seen, small_array(), caplog)


def test_deleted_hdf_file_recomputed(open_plant, hasher, caplog):
    """A deleted HDF file of an HdfArraySpec ingredient is recomputed by its producer."""
    expected = np.arange(12, dtype=np.float32).reshape(4, 3)
    seen = Box()

    @ReactorFunc
    def producer(pipe):
        ds = pipe.allocate("data", specs.HdfArraySpec, shape=(4, 3), dtype=np.float32)
        ds[...] = np.arange(12, dtype=np.float32).reshape(4, 3)

    @ReactorFunc
    def other(pipe):
        pipe.send("side", np.arange(10, dtype=np.int64))

    @ReactorFunc
    def target(pipe):
        data = yield pipe.receive("data")
        side = yield pipe.receive("side")
        seen["data"] = np.array(data[...])
        pipe.send("result", int(np.asarray(side).sum()))

    def damage(plant_dir):
        files = glob.glob(os.path.join(plant_dir, "specs", "*.hdf"))
        assert len(files) == 1
        os.remove(files[0])

    _, events = damage_and_rerun(open_plant, hasher, caplog, [target, producer, other], damage)
    assert_repaired(events, seen, expected, caplog)


def test_edited_file_ingredient_recomputed(open_plant, hasher, caplog):
    """A file ingredient edited after its run fails verification and its producer re-runs."""
    seen = Box()

    @ReactorFunc
    def producer(pipe):
        path = pipe.allocate("data", Ingredient.Type.file, filename="data.txt")
        with open(path, "w") as f:
            f.write("original content\n")

    @ReactorFunc
    def other(pipe):
        pipe.send("side", np.arange(10, dtype=np.int64))

    @ReactorFunc
    def target(pipe):
        path = yield pipe.receive("data")
        side = yield pipe.receive("side")
        with open(path) as f:
            seen["data"] = f.read()
        pipe.send("result", int(np.asarray(side).sum()))

    def damage(plant_dir):
        files = [p for p in glob.glob(os.path.join(plant_dir, "files", "**", "*"), recursive=True)
                 if os.path.isfile(p)]
        assert len(files) == 1
        with open(files[0], "w") as f:
            f.write("edited content!!\n")  # same length, different bytes

    _, events = damage_and_rerun(open_plant, hasher, caplog, [target, producer, other], damage)
    assert events.started == ["target", "producer"]
    assert seen["data"] == "original content\n"
    assert pyplant_warnings(caplog, "'data'")


def test_garbage_lmdb_moved_aside_and_everything_reruns(open_plant, caplog):
    """Random bytes in meta.lmdb/data.mdb: the plant warns, moves it aside, re-runs all once."""
    reactors, seen = chain(small_array)
    plant, events = open_plant(reactors=reactors)
    plant.run_reactor("target")
    plant_dir = plant.plantDir
    plant.shutdown()
    data_mdb = os.path.join(plant_dir, "meta.lmdb", "data.mdb")
    size = os.path.getsize(data_mdb)
    with open(data_mdb, "wb") as f:
        f.write(np.random.default_rng(0).bytes(size))
    seen.clear()
    caplog.set_level(logging.WARNING)
    plant2, events2 = open_plant(reactors=reactors)
    assert glob.glob(os.path.join(plant_dir, "meta.lmdb.corrupt-*"))
    assert pyplant_warnings(caplog, "meta.lmdb")
    plant2.run_reactor("target")
    assert sorted(events2.started) == ["other", "producer", "target"]
    np.testing.assert_array_equal(seen["data"], small_array())
    assert plant2.fetch_ingredient("result") == 45
    plant2.shutdown()
    plant3, events3 = open_plant(reactors=reactors)
    plant3.run_reactor("target")
    assert events3.started == ["target"]


def test_full_disk_raises_warehouse_error_and_keeps_finished(open_plant, monkeypatch):
    """ENOSPC on the 3rd reactor's array: WarehouseError naming it; earlier reactors stay cached."""
    out = Box()

    @ReactorFunc
    def r1(pipe):
        pipe.send("a1", np.full(100, 1.0))

    @ReactorFunc
    def r2(pipe):
        pipe.send("a2", np.full(100, 2.0))

    @ReactorFunc
    def r3(pipe):
        pipe.send("a3", np.full(100, 3.0))

    @ReactorFunc
    def target(pipe):
        total = 0.0
        for name in ("a1", "a2", "a3"):
            total += float((yield pipe.receive(name)).sum())
        out["total"] = total
        pipe.send("total", total)

    reactors = [target, r1, r2, r3]
    real = store_mod.atomic_write
    calls = []

    def failing(path, write, durable):
        calls.append(path)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, write, durable)

    monkeypatch.setattr(store_mod, "atomic_write", failing)
    plant, _ = open_plant(reactors=reactors)
    with pytest.raises(WarehouseError) as info:
        plant.run_reactor("target")
    assert isinstance(info.value, OSError)
    assert "r3" in str(info.value) and "a3" in str(info.value)
    plant.shutdown()
    monkeypatch.setattr(store_mod, "atomic_write", real)

    plant2, events = open_plant(reactors=reactors)
    plant2.run_reactor("target")
    assert sorted(events.started) == ["r3", "target"]
    assert out["total"] == 600.0


def test_tampered_location_outside_plant_dir_never_read(open_plant, hasher, caplog, tmp_path):
    """A trace whose Version.location leaves the plant dir is refused: recomputed with a warning."""
    reactors, seen = chain(small_array)
    plant, _ = open_plant(reactors=reactors)
    plant.run_reactor("target")
    plant_dir = plant.plantDir
    meta = plant.warehouse.metadata
    (trace,) = meta.traces("producer", limit=1)
    good = trace.outputs["data"]
    evil = Version("data", "array", good.content_hash, "../evil.npy", nbytes=good.nbytes)
    tampered = dataclasses.replace(trace, outputs={"data": evil})
    meta.commit_trace(tampered, {"reactor": "producer", "started": time.time(), "duration": 0.0,
                                 "reason": "tampered"})
    plant.shutdown()
    outside = os.path.join(os.path.dirname(os.path.normpath(plant_dir)), "evil.npy")
    np.save(outside, np.full(1000, -1.0))
    before = os.stat(outside)

    hasher.bump("target")
    caplog.set_level(logging.WARNING)
    plant2, events = open_plant(reactors=reactors)
    plant2.run_reactor("target")
    assert events.started == ["target", "producer"]
    np.testing.assert_array_equal(seen["data"], small_array())
    assert pyplant_warnings(caplog, "'data'")
    after = os.stat(outside)
    assert (after.st_atime_ns, after.st_mtime_ns) == (before.st_atime_ns, before.st_mtime_ns)


def test_plant_dir_that_is_a_file(tmp_path):
    """A plant directory that is a regular file raises PlantDirError naming it."""
    path = tmp_path / "not_a_dir"
    path.write_text("x")
    with pytest.raises(PlantDirError) as info:
        Plant(str(path))
    assert str(path) in str(info.value)
    assert isinstance(info.value, OSError)


def test_plant_dir_not_writable(tmp_path, monkeypatch):
    """A plant directory where no file can be written raises PlantDirError naming it."""
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    path = tmp_path / "ro"
    with pytest.raises(PlantDirError) as info:
        Plant(str(path))
    assert str(path) in str(info.value)


@pytest.mark.parametrize("replacement", [
    pytest.param({"shape": (5, 3), "dtype": np.float32}, id="other-shape"),
    pytest.param({"shape": (4, 3), "dtype": np.int16}, id="other-dtype"),
])
def test_hdf_file_replaced_by_another_shape_or_dtype_is_recomputed(open_plant, hasher, caplog, replacement):
    """An HDF file replaced by a valid HDF file of another shape or dtype fails the shape and
    dtype check on load: its producer re-runs (warning naming the ingredient) and consumers get
    the right array, never the replacement."""
    import h5py
    expected = np.arange(12, dtype=np.float32).reshape(4, 3)
    seen = Box()

    @ReactorFunc
    def producer(pipe):
        ds = pipe.allocate("data", specs.HdfArraySpec, shape=(4, 3), dtype=np.float32)
        ds[...] = np.arange(12, dtype=np.float32).reshape(4, 3)

    @ReactorFunc
    def other(pipe):
        pipe.send("side", np.arange(10, dtype=np.int64))

    @ReactorFunc
    def target(pipe):
        data = yield pipe.receive("data")
        side = yield pipe.receive("side")
        seen["data"] = np.array(data[...])
        pipe.send("result", int(np.asarray(side).sum()))

    def damage(plant_dir):
        (path,) = glob.glob(os.path.join(plant_dir, "specs", "*.hdf"))
        os.remove(path)
        with h5py.File(path, "w") as f:
            f.create_dataset("data", data=np.full(replacement["shape"], 7, dtype=replacement["dtype"]))

    _, events = damage_and_rerun(open_plant, hasher, caplog, [target, producer, other], damage)
    assert_repaired(events, seen, expected, caplog)
    assert seen["data"].dtype == np.float32
