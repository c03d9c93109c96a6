"""The warehouse's own rules, one at a time, through ``plant.warehouse`` (found by mutation
testing: each test kills mutants of pyplant/warehouse/ that the scenario tests let survive)."""
from __future__ import annotations

import errno
import glob
import json
import logging
import os
import pickle
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from pyplant import Ingredient, IngredientTypeSpec, Plant, ReactorFunc, specs
from pyplant import hashing
from pyplant.errors import AllocationError, CorruptVersionError, SerializationError
from pyplant.warehouse import INLINE_MAX_BYTES, store as store_module
from pyplant.warehouse.records import Version

from bomb import Bomb
from conftest import Box

TOKEN = "0123456789abcdef"


@pytest.fixture
def warehouse(plant_dir):
    plant = Plant(str(plant_dir))
    yield plant.warehouse
    plant.shutdown()


# --- loading refuses, and names, every kind of bad version ------------------------------------

BAD_VERSIONS = [
    pytest.param(Version("ing", "array", "h", "../outside.npy"), "not a storage location", id="array-escapes"),
    pytest.param(Version("ing", "object", "h", "blobs/zz/../../x.pkl"), "not a storage location", id="blob-escapes"),
    pytest.param(Version("ing", "file", "h", "files/../../etc/passwd"), "not a storage location", id="file-escapes"),
    pytest.param(Version("ing", "file", "h", f"files/ing@{TOKEN}/gone.txt"), "is missing", id="file-missing"),
    pytest.param(Version("ing", "nospec", "h", f"ing@{TOKEN}"), "which is not registered", id="spec-unknown"),
    pytest.param(Version("ing", "hdf_array", "h", f"ing@{TOKEN}"), "found no stored value", id="hdf-missing"),
    pytest.param(Version("ing", "hdf_array", "h", "../ing@0123"), "not a storage location", id="spec-escapes"),
    pytest.param(Version("ing", "simple", "h", None, pickle.dumps(5)), "do not match their content hash",
                 id="inline-damaged"),
]


@pytest.mark.parametrize("version, message", BAD_VERSIONS)
def test_load_refuses_a_bad_version_naming_its_ingredient(warehouse, version, message):
    with pytest.raises(CorruptVersionError, match=message) as info:
        warehouse.load(version)
    assert info.value.ingredient == "ing"
    assert "'ing'" in str(info.value)


# --- allocation errors ---------------------------------------------------------------------------

def test_allocation_errors_name_the_ingredient(warehouse):
    with pytest.raises(AllocationError, match="'plain' of type 'simple' cannot be allocated") as info:
        warehouse.allocate("plain", "simple")
    assert info.value.ingredient == "plain"
    with pytest.raises(AllocationError, match="'f': bad filename") as info:
        warehouse.allocate("f", "file", filename="a/b")
    assert info.value.ingredient == "f"
    with pytest.raises(AllocationError, match="unknown ingredient type 'nope'"):
        warehouse.check_type("nope")
    for kwargs, message in (({"shape": (-1,)}, "shape must be a tuple of non-negative ints"),
                            ({"shape": (2,), "dtype": object}, "h5py cannot store dtype"),
                            ({"shape": (2,), "dtype": "nope"}, "bad dtype"),
                            ({"shape": (2,), "bogus_option": 1}, "cannot allocate HDF array")):
        with pytest.raises(AllocationError, match=message) as info:
            warehouse.allocate("grid", "hdf_array", **kwargs)
        assert info.value.ingredient == "grid"  # the ingredient, not its storage name


def test_hdf_allocation_accepts_empty_int_and_structured_shapes_and_h5py_options(warehouse):
    ds, storage = warehouse.allocate("grid", "hdf_array", shape=3, dtype="int16", compression="gzip")
    assert ds.shape == (3,) and ds.compression == "gzip" and ds[...].tolist() == [0, 0, 0]
    meta = warehouse.ingredientSpecs["hdf_array"].store(warehouse, storage, ds)
    assert meta["shape"] == [3] and meta["dtype"] == np.dtype("int16").str
    empty, _ = warehouse.allocate("empty", "hdf_array", shape=(0, 4), dtype="float32")
    assert empty.shape == (0, 4)
    rec, _ = warehouse.allocate("rec", "hdf_array", shape=(2,), dtype=[("a", "i4"), ("b", "f8")])
    assert rec.dtype.names == ("a", "b") and rec[...]["a"].tolist() == [0, 0]


def test_serialization_error_names_reactor_and_ingredient(warehouse):
    with pytest.raises(SerializationError, match="of type generator can be stored neither") as info:
        warehouse.store("gen", (i for i in range(3)), "object", reactor="maker")
    assert (info.value.reactor, info.value.ingredient) == ("maker", "gen")


# --- what a version records ----------------------------------------------------------------------

def test_pickled_versions_record_codec_size_and_the_inline_limit(warehouse):
    plain = warehouse.store("plain", {"a": 1}, "object").version
    assert plain.meta == {"codec": "pickle"} and plain.nbytes == len(plain.inline)
    assert pickle.loads(plain.inline) == {"a": 1}
    dilled = warehouse.store("fn", lambda x: x + 1, "object").version
    assert dilled.meta == {"codec": "dill"}
    assert warehouse.load(dilled)(1) == 2
    at_limit = warehouse.store("limit", b"x" * 65518, "simple").version
    assert at_limit.nbytes == INLINE_MAX_BYTES and at_limit.inline is not None and at_limit.location is None
    above = warehouse.store("above", b"x" * 65519, "simple").version
    assert above.inline is None and above.location.startswith("blobs/") and above.nbytes == INLINE_MAX_BYTES + 1
    assert above.meta == {"codec": "pickle"} and warehouse.load(above) == b"x" * 65519
    arr = warehouse.store("arr", np.arange(10, dtype=np.int32), "array").version
    assert arr.nbytes == 40 and arr.location.endswith(".npy")


def test_storage_names_are_unique_safe_and_marked_temp(warehouse):
    names = {warehouse.storage_name("a/b c") for _ in range(50)}
    assert len(names) == 50
    assert all(n.startswith("a_b_c@") and len(n) == len("a_b_c@") + 16 for n in names)
    assert warehouse.storage_name("x", temp=True).startswith("temp-x@")
    assert warehouse.storage_name("y" * 200).split("@")[0] == "y" * 80
    _, location = warehouse.allocate("dir/report.csv", "file")
    assert location.startswith("files/dir_report.csv@") and location.endswith("/report.csv")
    _, location = warehouse.allocate("..", "file")
    assert location.endswith("/file")


# --- a spec without content_hash: its storage name stands for the content ------------------------

class NoteSpec(IngredientTypeSpec):
    """A custom spec without content_hash (a text note in specs/<storage>.note)."""

    @classmethod
    def get_name(cls):
        return "note"

    def store(self, warehouse, name, value):
        with open(os.path.join(warehouse.baseDir, name + ".note"), "w") as f:
            f.write(value.text)
        return {"kind": "note"}

    def fetch(self, warehouse, name, meta):
        path = os.path.join(warehouse.baseDir, name + ".note")
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return Note(f.read())

    def is_instance(self, value):
        return isinstance(value, Note)


class Note:
    def __init__(self, text):
        self.text = text


def test_spec_without_content_hash_reruns_consumers_when_its_producer_reruns(open_plant, hasher):
    """Each version of such a spec has its own content hash: a producer that re-runs makes its
    consumers re-run (no early cutoff, never a stale value)."""
    text = Box()
    text["v"] = "first"

    @ReactorFunc
    def write_note(pipe):
        pipe.send("note", Note(text["v"]))

    @ReactorFunc
    def read_note(pipe):
        note = yield pipe.receive("note")
        pipe.send("read", note.text)

    @ReactorFunc
    def shout(pipe):  # the target: read_note is a consumer below it, which early cutoff could skip
        read = yield pipe.receive("read")
        pipe.send("shout", read.upper())

    reactors = [shout, read_note, write_note]
    for expected in ("first", "second"):
        if expected == "second":
            text["v"] = "second"
            hasher.bump("write_note")
        plant, events = open_plant(reactors=reactors)
        plant.warehouse.register_ingredient_specs([NoteSpec()])
        plant.run_reactor(shout)
        assert plant.fetch_ingredient("shout") == expected.upper()
        assert set(events.started) == {"shout", "read_note", "write_note"}
        plant.shutdown()
    plant, events = open_plant(reactors=reactors)
    plant.warehouse.register_ingredient_specs([NoteSpec()])
    plant.run_reactor(shout)
    assert events.started == ["shout"]


class CheckedNoteSpec(NoteSpec):
    @classmethod
    def get_name(cls):
        return "checked_note"

    def content_hash(self, value):
        return hashing.digest("note", value.text)


def test_spec_with_content_hash_detects_an_edited_file(open_plant, hasher, caplog):
    @ReactorFunc
    def write_note(pipe):
        pipe.send("note", Note("original"), CheckedNoteSpec)

    @ReactorFunc
    def read_note(pipe):
        note = yield pipe.receive("note")
        pipe.send("read", note.text)

    plant, _ = open_plant(reactors=[read_note, write_note])
    plant.warehouse.register_ingredient_specs([CheckedNoteSpec()])
    plant.run_reactor(read_note)
    plant.shutdown()
    (path,) = glob.glob(os.path.join(plant.plantDir, "specs", "*.note"))
    Path(path).write_text("tampered")
    hasher.bump("read_note")
    caplog.set_level(logging.WARNING)
    plant, events = open_plant(reactors=[read_note, write_note])
    plant.warehouse.register_ingredient_specs([CheckedNoteSpec()])
    plant.run_reactor(read_note)
    assert events.started == ["read_note", "write_note"]
    assert plant.fetch_ingredient("read") == "original"
    assert any("'note'" in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


# --- freeing what a failed reactor stored -------------------------------------------------------

def test_a_failed_reactor_leaves_no_file_of_its_own_and_takes_nothing_else(open_plant):
    """Sparse, note (non-allocatable specs), file and HDF versions sent by a reactor that then
    raises are removed; the same kinds stored by a reactor that finished stay."""
    @ReactorFunc
    def keeper(pipe):
        pipe.send("kept_sparse", sp.csr_matrix(np.eye(2)))
        pipe.send("kept_note", Note("kept"))

    @ReactorFunc
    def failing(pipe):
        yield pipe.receive("kept_note")
        pipe.send("lost_sparse", sp.csr_matrix(np.eye(3)))
        pipe.send("lost_note", Note("lost"))
        path = pipe.allocate("lost.txt", Ingredient.Type.file)
        Path(path).write_text("lost")
        pipe.send("lost.txt", path)
        ds = pipe.allocate("lost_hdf", specs.HdfArraySpec, shape=(2,), dtype="int8")
        pipe.send("lost_hdf", ds)
        raise RuntimeError("after sending")

    plant, _ = open_plant(reactors=[failing, keeper])
    plant.warehouse.register_ingredient_specs([NoteSpec()])
    plant.run_reactor(keeper)
    before = sorted(p.name for p in Path(plant.plantDir, "specs").iterdir())
    with pytest.raises(RuntimeError):
        plant.run_reactor(failing)
    after = sorted(p.name for p in Path(plant.plantDir, "specs").iterdir())
    assert after == before and len(before) == 2
    assert list(Path(plant.plantDir, "files").iterdir()) == []
    assert plant.fetch_ingredient("kept_note").text == "kept"


def test_freeing_failure_is_logged_naming_the_storage(warehouse, caplog):
    class Stubborn(specs.HdfArraySpec):
        def deallocate(self, warehouse, name):
            raise OSError(errno.EBUSY, "busy")

    warehouse.register_ingredient_specs([Stubborn()])
    caplog.set_level(logging.WARNING)
    warehouse.deallocate("hdf_array", f"grid@{TOKEN}")
    assert [r.getMessage() for r in caplog.records] == [
        f"could not free ingredient storage grid@{TOKEN}: [Errno {errno.EBUSY}] busy"]


# --- sparse content hashes -----------------------------------------------------------------------

def test_sparse_content_hash_covers_every_array_shape_and_type():
    spec = specs.ScipySparseSpec()
    dense = np.array([[0, 1.0, 0], [2.0, 0, 0], [0, 0, 3.0]])
    base = {"csr": sp.csr_matrix(dense), "coo": sp.coo_matrix(dense), "dia": sp.dia_matrix(dense),
            "lil": sp.lil_matrix(dense)}
    variants = {
        "csr": [sp.csr_matrix(dense * 2), sp.csr_matrix(dense.T), sp.csr_array(dense),
                sp.csr_matrix(np.pad(dense, ((0, 1), (0, 0))))],
        "coo": [sp.coo_matrix(dense.T), sp.coo_matrix(dense * 2)],
        "dia": [sp.dia_matrix(np.diag([1.0, 2, 3])), sp.dia_matrix(np.diag([1.0, 2], k=1))],
        "lil": [sp.lil_matrix(dense * 2), sp.lil_matrix(dense.T)],
    }
    for fmt, matrix in base.items():
        h = spec.content_hash(matrix)
        assert h == spec.content_hash(matrix.copy()), fmt
        for other in variants[fmt]:
            assert spec.content_hash(other) != h, (fmt, other)
    coo = sp.coo_matrix(dense)
    swapped = sp.coo_matrix((coo.data, (coo.col, coo.row)), shape=coo.shape)
    assert spec.content_hash(swapped) != spec.content_hash(coo)
    assert spec.content_hash(sp.csr_matrix(dense)) != hashing.digest("sparse")


# --- GC: temp files, leases, the gate ----------------------------------------------------------

def write_old(path, pid=None, age=3600):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"t" * 10)
    old = time.time() - age
    os.utime(path, (old, old))


def test_gc_spares_temp_files_of_live_processes(plant_dir):
    """A temp file (``*.tmp-<pid>-<hex>``) of a live plant's process is kept however old; one
    of a dead process goes; one of a live process without a plant goes when old, stays when
    new (and that process is not disturbed)."""
    plant = Plant(str(plant_dir))
    # echoes its input once: it answers after GC only if GC's liveness probe did not kill it
    other = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdout.write(sys.stdin.read())"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        mine = plant_dir / "blobs" / "ab" / f"cd.npy.tmp-{os.getpid()}-aaaaaaaa"
        dead = plant_dir / "blobs" / "ab" / "ce.npy.tmp-999999999-bbbbbbbb"
        old_other = plant_dir / "blobs" / "ab" / f"cf.npy.tmp-{other.pid}-cccccccc"
        new_other = plant_dir / "specs" / f"x@{TOKEN}.npz.tmp-{other.pid}-dddddddd"
        for path in (mine, dead, old_other):
            write_old(path)
        write_old(new_other, age=0)
        plant.gc()
        assert mine.exists() and new_other.exists()
        assert not dead.exists() and not old_other.exists()
        assert other.communicate(b"alive", timeout=60) == (b"alive", None) and other.returncode == 0
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()
        plant.shutdown()


def test_gc_frees_what_a_live_plant_no_longer_holds(open_plant, plant_dir):
    """A live plant's lease shrinks to what it still holds after each run: a version it moved
    away from (config A, then B) is not kept by its lease."""
    @ReactorFunc
    def produce(pipe, config):
        pipe.send("arr", np.full(1000, float(config.seed)))

    @ReactorFunc
    def target(pipe):
        arr = yield pipe.receive("arr")
        pipe.send("first", float(arr[0]))

    plant, _ = open_plant(config={"seed": 1}, reactors=[target, produce])
    plant.run_reactor(target)
    blob_a = set(Path(plant_dir, "blobs").rglob("*.npy"))
    plant.set_config({"seed": 2})
    plant.run_reactor(target)
    for p in Path(plant_dir, "blobs").rglob("*"):
        if p.is_file():
            os.utime(p, (1, 1))
    other, _ = open_plant()
    other.gc(keep_last=1)
    assert not any(p.exists() for p in blob_a)
    assert plant.fetch_ingredient("first") == 2.0


def test_gc_removes_leftovers_of_dead_leases(plant_dir):
    dead = plant_dir / "leases" / "1-2.lease"
    stale_tmp = plant_dir / "leases" / "1-3.lease.tmp-abcdef12"
    plant = Plant(str(plant_dir))
    for path in (dead, stale_tmp):
        write_old(path)
    dead.write_text(json.dumps({"pid": 1, "started": 0}) + "\n" + json.dumps("blobs/ab/cd.npy") + "\n")
    plant.gc()
    assert not dead.exists() and not stale_tmp.exists()
    assert Path(plant.warehouse.lease.path).exists()
    plant.shutdown()
    assert not Path(plant.warehouse.lease.path).exists()


def test_gc_waits_while_a_plant_records_a_location(plant_dir):
    """GC takes the gate exclusively: while a plant holds it shared (recording a location and
    checking a blob), GC waits, then runs."""
    holder = Plant(str(plant_dir))
    collector = Plant(str(plant_dir))
    done = threading.Event()
    section = holder.warehouse.lease.shared()
    section.__enter__()
    try:
        worker = threading.Thread(target=lambda: (collector.gc(), done.set()), daemon=True)
        worker.start()
        assert not done.wait(0.5)
    finally:
        section.__exit__(None, None, None)
    assert done.wait(60)
    worker.join()
    holder.shutdown()
    collector.shutdown()


# --- blobs ---------------------------------------------------------------------------------------

def test_a_symlink_where_a_blob_goes_is_replaced_not_followed(warehouse, tmp_path):
    arr = np.arange(100, dtype=np.float64)
    location = warehouse.blobs.location(hashing.array_hash(arr), ".npy")
    outside = tmp_path / "outside.npy"
    np.save(outside, arr)
    before = outside.read_bytes()
    path = Path(warehouse.plantDir, location)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(outside, path)
    version = warehouse.store("arr", arr.copy(), "array").version
    assert version.location == location
    assert path.is_file() and not path.is_symlink()
    assert outside.read_bytes() == before
    np.testing.assert_array_equal(warehouse.load(version), arr)


def test_an_object_array_planted_as_a_blob_is_never_unpickled(warehouse):
    arr = np.arange(10.0)
    version = warehouse.store("arr", arr, "array").version
    path = Path(warehouse.plantDir, version.location)
    planted = np.empty(1, dtype=object)
    planted[0] = Bomb()
    path.unlink()
    with open(path, "wb") as f:
        np.lib.format.write_array(f, planted, allow_pickle=True)
    Bomb.loaded.clear()
    with pytest.raises(CorruptVersionError):
        warehouse.load(version)
    assert Bomb.loaded == []


def test_a_failed_blob_write_leaves_no_temp_file(warehouse, monkeypatch):
    def failing(f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        store_module.atomic_write(os.path.join(warehouse.blobs.root, "x.pkl"), failing, False)
    assert [p for p in Path(warehouse.blobs.root).rglob("*") if p.is_file()] == []


def test_verification_above_the_hash_limit_checks_the_size(warehouse, monkeypatch):
    """Arrays up to VERIFY_MAX_BYTES are hashed on load (same-size damage is found); larger
    ones are checked by size (a replacement of another size is found)."""
    import pyplant.warehouse.codecs as warehouse_module
    arr = np.arange(100, dtype=np.float64)  # 800 bytes
    monkeypatch.setattr(warehouse_module, "VERIFY_MAX_BYTES", 800)
    version = warehouse.store("arr", arr, "array").version
    path = Path(warehouse.plantDir, version.location)
    path.unlink()
    np.save(path, arr[::-1].copy())  # same size, other content
    with pytest.raises(CorruptVersionError, match="does not match its content hash"):
        warehouse.load(version)
    monkeypatch.setattr(warehouse_module, "VERIFY_MAX_BYTES", 799)
    np.testing.assert_array_equal(warehouse.load(version), arr[::-1])  # by size only: accepted
    path.unlink()
    np.save(path, np.arange(50, dtype=np.float64))
    with pytest.raises(CorruptVersionError):
        warehouse.load(version)


def test_many_commits_do_not_leak_descriptors(open_plant):
    @ReactorFunc
    def count(pipe, config):
        pipe.send("n", config.i)

    plant, _ = open_plant(reactors=[count])
    fds = []
    for i in range(60):
        plant.set_config({"i": i})
        plant.run_reactor(count)
        fds.append(len(os.listdir("/proc/self/fd")))
    assert fds[-1] <= fds[9] + 2, fds


# --- large arrays: hashed in a thread while written (store._put_array_hashing_aside) ------------

@pytest.fixture
def hashing_aside(monkeypatch):
    """Every C-ordered array goes through the large-array path, in chunks of 256 bytes."""
    monkeypatch.setattr(store_module, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(store_module, "WRITE_CHUNK_BYTES", 256)


def temp_files(plant_dir):
    return [p for p in Path(plant_dir, "blobs").rglob("*") if ".tmp-" in p.name]


def test_a_large_array_stored_twice_is_one_blob_and_leaves_no_temp_file(plant_dir, hashing_aside):
    plant = Plant(str(plant_dir), durable=True)  # the durable path fsyncs the file and its directory
    try:
        arr = np.arange(1000.0)
        first = plant.warehouse.store("a", arr, "array").version
        second = plant.warehouse.store("a", arr.copy(), "array").version
        assert first.location == second.location and first.content_hash == hashing.array_hash(arr)
        assert np.array_equal(plant.warehouse.load(first), arr)
        assert temp_files(plant_dir) == []
    finally:
        plant.shutdown()


def test_a_pending_large_array_is_held_by_the_lease(open_plant, plant_dir, hashing_aside):
    plant, _ = open_plant()
    location = plant.warehouse.store("a", np.arange(1000.0), "array").version.location
    path = Path(plant_dir, location)
    os.utime(path, (1, 1))
    other, _ = open_plant()
    other.gc()
    assert path.exists()


def test_a_large_array_whose_write_fails_leaves_no_temp_file(open_plant, plant_dir, hashing_aside, monkeypatch):
    from pyplant.errors import WarehouseError

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    plant, _ = open_plant()
    monkeypatch.setattr(np.lib.format, "write_array_header_2_0", full)
    with pytest.raises(WarehouseError, match="No space left on device"):
        plant.warehouse.store("a", np.arange(1000.0), "array")
    assert temp_files(plant_dir) == []


# --- the facade --------------------------------------------------------------------------------

def test_a_version_of_a_spec_no_longer_registered_is_freed_by_its_storage_name(warehouse):
    storage = f"gone@{TOKEN}"
    for name in (f"{storage}.dat", f"{storage}.idx", f"gone@{'f' * 16}.dat"):
        Path(warehouse.baseDir, name).write_text("x")
    warehouse.free(Version("gone", "unregistered_spec", "h" * 32, storage))
    assert sorted(os.listdir(warehouse.baseDir)) == [f"gone@{'f' * 16}.dat"]
    Path(warehouse.baseDir, f"again@{TOKEN}.dat").write_text("x")
    warehouse.deallocate("unregistered_spec", f"again@{TOKEN}")
    assert sorted(os.listdir(warehouse.baseDir)) == [f"gone@{'f' * 16}.dat"]


def test_a_codec_registered_under_a_specs_name_replaces_the_spec(warehouse):
    from pyplant.warehouse.codecs import PickleCodec
    assert "hdf_array" in warehouse.ingredientSpecs
    warehouse.register_codecs([PickleCodec("hdf_array")])
    assert "hdf_array" not in warehouse.ingredientSpecs
    assert warehouse.codecs.get("hdf_array").key == "hdf_array"


class NoClose(specs.ScipySparseSpec):
    def close(self):
        raise RuntimeError("cannot close")


def test_a_read_only_view_loads_every_kind_of_version_and_creates_nothing(open_plant, plant_dir, caplog):
    """Blobs, files and spec files, through its own paths; its warnings go to the logger it
    was given, else to 'pyplant'; it creates no storage directory."""
    from pyplant.warehouse import Warehouse

    @ReactorFunc
    def make(pipe, config):
        pipe.send("i", config.i)
        pipe.send("arr", np.arange(3.0))
        pipe.send("big", {"pad": b"x" * (INLINE_MAX_BYTES + 1)})
        pipe.send("m", sp.csr_matrix(np.eye(2)))
        path = pipe.allocate("f.txt", Ingredient.Type.file)
        Path(path).write_text("file")
        pipe.send("f.txt", path)

    for i in range(65):
        plant, _ = open_plant(config={"i": i}, reactors=[make])
        plant.run_reactor(make)
        plant.shutdown()
    caplog.set_level(logging.WARNING)
    logger = logging.getLogger("readonly-test")
    for given in (None, logger):
        with Warehouse.open_readonly(str(plant_dir), logger=given) as ro:
            assert (ro.plantDir, ro.baseDir) == (str(plant_dir), os.path.join(str(plant_dir), "specs"))
            loaded = {name: ro.load(v) for name, v in ro.latest_versions().items()}
            assert len(ro.traces("make")) == 64
            ro.register_ingredient_specs([NoClose()])
        assert np.array_equal(loaded["arr"], np.arange(3.0)) and loaded["big"]["pad"][:1] == b"x"
        assert (loaded["m"] != sp.csr_matrix(np.eye(2))).nnz == 0 and Path(loaded["f.txt"]).read_text() == "file"
        [record] = [r for r in caplog.records if "cannot close" in r.getMessage()]
        assert record.name == ("pyplant" if given is None else "readonly-test")
        caplog.clear()
    for top in ("blobs", "files"):  # a plant whose values are inline: nothing is read there
        shutil.rmtree(plant_dir / top)
    with Warehouse.open_readonly(str(plant_dir)) as ro:
        assert ro.load(ro.latest_versions()["i"]) == 64
    assert not (plant_dir / "blobs").exists() and not (plant_dir / "files").exists()


def test_a_non_contiguous_large_array_is_written_whole(open_plant, hashing_aside):
    plant, _ = open_plant()
    arr = np.arange(2000.0)[::2]
    version = plant.warehouse.store("a", arr, "array").version
    assert np.array_equal(plant.warehouse.load(version), arr)


def test_arrays_are_memory_mapped_from_a_blob_of_exactly_1_mib_on(warehouse):
    header = 128  # the .npy header of a 1-d uint8 array
    small, exact = (np.zeros(store_module.MMAP_MIN_BYTES - header - k, dtype=np.uint8) for k in (1, 0))
    loaded = {}
    for name, arr in (("small", small), ("exact", exact)):
        version = warehouse.store(name, arr, "array").version
        size = os.path.getsize(os.path.join(warehouse.plantDir, version.location))
        assert size == store_module.MMAP_MIN_BYTES - (name == "small")
        loaded[name] = warehouse.load(version)
    assert isinstance(loaded["exact"].base, np.memmap) and not isinstance(loaded["small"].base, np.memmap)
    assert not loaded["small"].flags.writeable and not loaded["exact"].flags.writeable


def test_gc_touches_nothing_outside_the_storage_directories_however_old(open_plant, plant_dir):
    @ReactorFunc
    def make(pipe):
        pipe.send("x", 1)

    plant, _ = open_plant(reactors=[make])
    plant.run_reactor(make)
    stray = plant_dir / "notes.txt"
    stray.write_text("mine")
    before = sorted(p for p in plant_dir.rglob("*") if p.is_file())
    for p in before:
        os.utime(p, (1, 1))
    plant.gc()
    assert all(p.exists() for p in before) and stray.read_text() == "mine"
    assert any(p.name == "data.mdb" for p in before)
    assert plant.fetch_ingredient("x") == 1


def test_gc_skipping_a_symlinked_storage_directory_still_sweeps_the_others(open_plant, plant_dir, tmp_path, caplog):
    plant, _ = open_plant()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "kept").write_text("not the plant's")
    shutil.rmtree(plant_dir / "blobs")
    os.symlink(outside, plant_dir / "blobs")
    strays = [plant_dir / "files" / f"s@{TOKEN}" / "f.txt", plant_dir / "specs" / f"s@{TOKEN}.npz"]
    for stray in strays:
        write_old(stray)
    caplog.set_level(logging.WARNING)
    plant.gc()
    assert not any(s.exists() for s in strays) and (outside / "kept").exists()
    assert any("gc: skipping" in r.getMessage() and "blobs" in r.getMessage() for r in caplog.records)


def test_gc_removes_empty_file_directories_except_those_held(open_plant, plant_dir):
    plant, _ = open_plant()
    path, location = plant.warehouse.allocate("held", "file")
    os.remove(path)  # its directory is empty, and held while its reactor runs
    (plant_dir / "files" / f"a@{TOKEN}").mkdir()
    (plant_dir / "files" / f"b@{TOKEN}").mkdir()
    (plant_dir / "files" / f"b@{TOKEN}" / "kept.txt").write_text("not empty")
    plant.gc()
    assert Path(path).parent.is_dir() and (plant_dir / "files").is_dir()
    assert not (plant_dir / "files" / f"a@{TOKEN}").exists() and (plant_dir / "files" / f"b@{TOKEN}").is_dir()


def configured_producer():
    @ReactorFunc
    def produce(pipe, config):
        pipe.send("arr", np.full(100, float(config.seed)))
    return produce


def test_gc_applies_its_byte_budget_and_keeps_what_another_live_plant_holds(open_plant):
    """max_bytes=0 keeps only the latest trace, except a trace whose version another live
    plant holds (it loaded it)."""
    produce = configured_producer()
    plant, _ = open_plant(config={"seed": 1}, reactors=[produce])
    for seed in (1, 2, 3):
        plant.set_config({"seed": seed})
        plant.run_reactor(produce)
    holder, _ = open_plant(config={"seed": 2}, reactors=[produce])
    holder.run_reactor(produce)
    assert holder.fetch_ingredient("arr")[0] == 2.0  # loaded: held by its lease
    plant.set_config({"seed": 3})
    assert plant.gc(max_bytes=0).traces == 1  # seed 1 goes; 3 is the latest, 2 is held
    assert len(plant.warehouse.metadata.trace_ids("produce")) == 2


def test_a_version_another_plant_loaded_is_held_against_gc(open_plant, plant_dir):
    """Loading records the location in the loader's lease first: a collector's keep_last=1
    keeps an old trace whose version another live plant loaded."""
    produce = configured_producer()
    plant, _ = open_plant(config={"seed": 1}, reactors=[produce])
    for seed in (1, 2):
        plant.set_config({"seed": seed})
        plant.run_reactor(produce)
    holder, _ = open_plant()
    old = holder.warehouse.metadata.traces("produce")[-1].outputs["arr"]
    assert holder.warehouse.load(old)[0] == 1.0
    os.utime(Path(plant_dir, old.location), (1, 1))
    assert plant.gc(keep_last=1).traces == 0
    assert Path(plant_dir, old.location).exists()


def test_spec_classes_are_registered_as_instances(warehouse):
    warehouse.register_ingredient_specs([NoteSpec])
    assert isinstance(warehouse.ingredientSpecs["note"], NoteSpec)
    assert warehouse.load(warehouse.store("n", Note("x"), "note").version).text == "x"
