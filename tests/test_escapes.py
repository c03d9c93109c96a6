"""Nothing escapes a version's own storage: odd names, ``filename=``, and symlinks.

Every storage location is derived from the ingredient and the version (``locations.py``);
anything else is refused with an error naming the reactor and the ingredient, freeing removes
only what that rule names, and no path is trusted before its symlinks are resolved.
"""
from __future__ import annotations

import glob
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from pyplant import Ingredient, ReactorFunc, specs
from pyplant.errors import AllocationError

from bomb import Bomb
from conftest import Box, result_of, run_script, write_script


def keeper_reactors(extra):
    """'keep' stores a file ingredient and an array; 'extra' is the reactor under test."""

    @ReactorFunc
    def keep(pipe):
        path = pipe.allocate("kept.txt", Ingredient.Type.file)
        with open(path, "w") as f:
            f.write("precious")
        pipe.send("kept_array", np.arange(50.0))

    @ReactorFunc
    def target(pipe):
        path = yield pipe.receive("kept.txt")
        arr = yield pipe.receive("kept_array")
        with open(path) as f:
            pipe.send("summary", (f.read(), float(arr.sum())))

    return [target, keep, extra]


def stored_files(plant_dir):
    return sorted(p for p in glob.glob(os.path.join(plant_dir, "**", "*"), recursive=True)
                  if os.path.isfile(p) and "meta.lmdb" not in p and "leases" not in p
                  and not p.endswith(".lock"))


def assert_keeper_cached(open_plant):
    """A new plant gets 'target' and 'keep' from the cache, with their original content."""
    plant, events = open_plant()
    plant.add_reactors(*keeper_reactors(nothing())[:2])
    plant.run_reactor("target")
    assert events.started == ["target"]
    assert plant.fetch_ingredient("summary") == ("precious", float(np.arange(50.0).sum()))
    plant.shutdown()


def nothing():
    @ReactorFunc
    def idle(pipe):
        pipe.send("idle", 0)

    return idle


class Boom(Exception):
    pass


# --- 1. file ingredients named '.', 'sub/.', '..' ---------------------------------------------

ODD_NAMES = [".", "sub/.", "..", "sub/..", "./", "a/b/", "...", "sub/./.."]


@pytest.mark.parametrize("name", ODD_NAMES)
@pytest.mark.parametrize("how", ["allocate-then-raise", "allocate_temp"])
def test_freeing_an_odd_file_name_frees_only_its_own_directory(open_plant, name, how):
    """A file ingredient named like a directory ('.', 'sub/.', '..') is stored in its own
    version directory; freeing it (its reactor raises after allocate, or any allocate_temp)
    removes that directory only: every other file ingredient stays, and stays cached."""
    @ReactorFunc
    def odd(pipe):
        if how == "allocate_temp":
            path = pipe.allocate_temp(name, Ingredient.Type.file)
        else:
            path = pipe.allocate(name, Ingredient.Type.file)
        with open(path, "w") as f:
            f.write("scratch")
        if how != "allocate_temp":
            raise Boom("after allocating")
        pipe.send("odd_done", 1)

    plant, _ = open_plant(reactors=keeper_reactors(odd))
    plant.run_reactor("target")
    before = stored_files(plant.plantDir)
    if how == "allocate_temp":
        plant.run_reactor("odd")
    else:
        with pytest.raises(Boom):
            plant.run_reactor("odd")
    after = stored_files(plant.plantDir)
    assert set(before) <= set(after), sorted(set(before) - set(after))
    plant.shutdown()
    assert_keeper_cached(open_plant)


@pytest.mark.parametrize("name", ODD_NAMES)
def test_odd_file_name_round_trips(open_plant, name):
    """Such a file ingredient, sent normally, is received with its content from a new plant."""
    @ReactorFunc
    def odd(pipe):
        path = pipe.allocate(name, Ingredient.Type.file)
        with open(path, "w") as f:
            f.write("odd content")

    @ReactorFunc
    def reader(pipe):
        path = yield pipe.receive(name)
        with open(path) as f:
            pipe.send("read", f.read())

    plant, _ = open_plant(reactors=[reader, odd])
    plant.run_reactor(reader)
    plant.shutdown()
    plant2, events = open_plant(reactors=[reader, odd])
    plant2.run_reactor(reader)
    assert events.started == ["reader"]
    assert plant2.fetch_ingredient("read") == "odd content"


# --- 2. filename= confined to the version's own directory ---------------------------------------

BAD_FILENAMES = ["../../x", "../../blobs/x", "../y", "../../files", "sub/x.txt", "/etc/passwd",
                 ".", "..", "", "a\0b"]


@pytest.mark.parametrize("filename", BAD_FILENAMES)
@pytest.mark.parametrize("temp", [False, True], ids=["allocate", "allocate_temp"])
def test_filename_that_leaves_its_directory_is_refused(open_plant, filename, temp):
    """allocate(..., filename=) with a path (up or down) instead of one plain file name raises
    AllocationError naming the reactor and the ingredient, before anything is created; nothing
    of the plant is deleted and what finished stays cached."""
    @ReactorFunc
    def sneaky(pipe):
        allocate = pipe.allocate_temp if temp else pipe.allocate
        allocate("escape", Ingredient.Type.file, filename=filename)
        pipe.send("never", 1)

    plant, _ = open_plant(reactors=keeper_reactors(sneaky))
    plant.run_reactor("target")
    before = stored_files(plant.plantDir)
    with pytest.raises(AllocationError, match="sneaky") as info:
        plant.run_reactor("sneaky")
    assert "escape" in str(info.value) and info.value.ingredient == "escape"
    assert info.value.reactor == "sneaky"
    assert stored_files(plant.plantDir) == before
    plant.shutdown()
    assert_keeper_cached(open_plant)


FILENAME_INTO_LMDB = '''
@ReactorFunc
def keep(pipe):
    pipe.send("kept", list(range(100)))

@ReactorFunc
def use(pipe):
    kept = yield pipe.receive("kept")
    RESULT["sum"] = sum(kept)

@ReactorFunc
def sneaky(pipe):
    path = pipe.allocate("escape", Ingredient.Type.file, filename=ARGS[0])
    with open(path, "w") as f:
        f.write("x")
    raise RuntimeError("after allocating")

plant = open_plant()
plant.add_reactors(use, keep, sneaky)
plant.run_reactor(use)
try:
    plant.run_reactor(sneaky)
except Exception as exc:
    RESULT["error"] = type(exc).__name__
plant.run_reactor(use)
report()
'''


@pytest.mark.parametrize("filename", ["../../meta.lmdb/data.mdb", "../../meta.lmdb"])
def test_filename_into_the_metadata_is_refused(tmp_path, filename):
    """filename='../../meta.lmdb/data.mdb' used to truncate the open LMDB (SIGBUS, then an
    empty plant): it raises AllocationError, and the next process finds everything cached."""
    script = write_script(tmp_path / "into_lmdb.py", FILENAME_INTO_LMDB)
    out = result_of(run_script(script, tmp_path / "plant", filename))
    assert out["result"]["error"] == "AllocationError"
    assert out["started"] == ["use", "keep", "sneaky", "use"]
    again = result_of(run_script(script, tmp_path / "plant", filename))
    assert again["started"] == ["use", "sneaky", "use"], again  # 'keep' stays cached
    assert again["result"] == {"error": "AllocationError", "sum": 4950}


def test_copy2_into_allocated_path_with_old_mtime_survives_gc_in_another_process(tmp_path):
    """A reactor fills its allocated file with shutil.copy2 (which keeps the source's old
    mtime) while GC runs in another process: the file is in flight (recorded in the lease),
    so GC keeps it, and the version commits and loads."""
    source = tmp_path / "old_source.txt"
    source.write_text("from an old file")
    old = time.time() - 3600
    os.utime(source, (old, old))
    script = write_script(tmp_path / "copy2.py", COPY2_SCRIPT)
    out = result_of(run_script(script, tmp_path / "plant", str(source)))
    assert out["result"]["gc_files"] == 0
    assert out["result"]["read"] == "from an old file"
    again = result_of(run_script(script, tmp_path / "plant", str(source)))
    assert again["started"] == ["reader"]
    assert again["result"]["read"] == "from an old file"


COPY2_SCRIPT = '''
import shutil, subprocess

GC = "import sys; from pyplant import Plant; p = Plant(sys.argv[1]); print(p.gc().files); p.shutdown()"

@ReactorFunc
def copier(pipe):
    path = pipe.allocate("copied.txt", Ingredient.Type.file)
    shutil.copy2(ARGS[0], path)
    out = subprocess.run([sys.executable, "-c", GC, PLANT_DIR], capture_output=True, text=True,
                         timeout=120, env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    RESULT["gc_files"] = int(out.stdout.split()[-1])

@ReactorFunc
def reader(pipe):
    path = yield pipe.receive("copied.txt")
    with open(path) as f:
        RESULT["read"] = f.read()
    pipe.send("read", RESULT["read"])

plant = open_plant()
plant.add_reactors(reader, copier)
plant.run_reactor(reader)
RESULT.setdefault("gc_files", 0)
plant.shutdown()
report()
'''


# --- 3. GC and repair never follow a symlink out of the plant -----------------------------------

def outside_files(tmp_path) -> Path:
    """A directory outside the plant with old files that look like plant files."""
    outside = tmp_path / "outside"
    (outside / "ab").mkdir(parents=True)
    old = time.time() - 3600
    for rel in ("ab/cdef0123.npy", "x@0123456789abcdef.hdf", "precious.txt",
                "x@0123456789abcdef/file"):
        path = outside / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("outside the plant")
        os.utime(path, (old, old))
    return outside


def all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("top", ["blobs", "files", "specs"])
def test_gc_never_follows_a_symlinked_store_directory(open_plant, tmp_path, top, caplog):
    """blobs/, files/ or specs/ replaced by a symlink to a directory outside the plant: gc()
    deletes nothing out there (it warns and skips it), and the plant keeps working."""
    plant, _ = open_plant(reactors=keeper_reactors(nothing()))
    plant.run_reactor("target")
    plant_dir = Path(plant.plantDir)
    plant.shutdown()
    outside = outside_files(tmp_path)
    before = all_files(outside)
    shutil.rmtree(plant_dir / top)
    os.symlink(outside, plant_dir / top)
    caplog.set_level(logging.WARNING)
    plant2, _ = open_plant()
    plant2.gc(keep_last=1)
    assert all_files(outside) == before
    assert any(top in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


def test_gc_removes_a_planted_symlink_but_never_its_target(open_plant, tmp_path):
    """A symlink inside blobs/ (to a file and to a directory outside) is garbage: gc()
    removes the links, never what they point to."""
    plant, _ = open_plant(reactors=keeper_reactors(nothing()))
    plant.run_reactor("target")
    plant_dir = Path(plant.plantDir)
    outside = outside_files(tmp_path)
    before = all_files(outside)
    os.symlink(outside / "precious.txt", plant_dir / "blobs" / "ab_link.npy")
    os.symlink(outside / "ab", plant_dir / "blobs" / "zz")
    os.symlink(outside, plant_dir / "files" / "y@0123456789abcdef")
    for link in ("blobs/ab_link.npy", "blobs/zz", "files/y@0123456789abcdef"):
        os.utime(plant_dir / link, (1, 1), follow_symlinks=False)
    plant.gc()
    assert all_files(outside) == before
    assert not (plant_dir / "blobs" / "ab_link.npy").is_symlink()
    assert not (plant_dir / "blobs" / "zz").is_symlink()
    plant.shutdown()
    assert_keeper_cached(open_plant)


def blob_reactors(kind):
    seen = Box()

    @ReactorFunc
    def producer(pipe):
        if kind == "pickle":
            pipe.send("data", {"bomb": Bomb(), "pad": bytes(200_000)})
        else:
            pipe.send("data", np.arange(20_000, dtype=np.float64))

    @ReactorFunc
    def target(pipe):
        seen["data"] = yield pipe.receive("data")
        pipe.send("out", 1)

    return [target, producer], seen


@pytest.mark.parametrize("kind", ["pickle", "array"])
def test_symlinked_blob_to_a_file_outside_is_never_read(open_plant, hasher, tmp_path, caplog, kind):
    """A blob replaced by a symlink to an identical copy outside the plant is not read (let
    alone unpickled): the producer re-runs with a warning naming the ingredient, the link is
    replaced by a real blob, and the file outside is left alone."""
    reactors, seen = blob_reactors(kind)
    plant, _ = open_plant(reactors=reactors)
    plant.run_reactor("target")
    plant_dir = Path(plant.plantDir)
    plant.shutdown()
    (blob,) = [p for p in (plant_dir / "blobs").rglob("*") if p.is_file() and p.suffix in (".pkl", ".npy")]
    outside = tmp_path / ("copy" + blob.suffix)
    shutil.copyfile(blob, outside)
    blob.unlink()
    os.symlink(outside, blob)
    outside_bytes = outside.read_bytes()
    Bomb.loaded.clear()
    hasher.bump("target")
    caplog.set_level(logging.WARNING)
    plant2, events = open_plant(reactors=reactors)
    plant2.run_reactor("target")
    assert events.started == ["target", "producer"]
    assert Bomb.loaded == []
    assert any("'data'" in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert not blob.is_symlink() and blob.is_file()
    assert outside.read_bytes() == outside_bytes
    if kind == "array":
        np.testing.assert_array_equal(seen["data"], np.arange(20_000, dtype=np.float64))


def test_symlinked_specs_directory_refuses_to_store_with_a_clear_error(open_plant, tmp_path):
    """specs/ pointing outside the plant: allocating an HDF array raises WarehouseError naming
    the reactor and the ingredient, and writes nothing outside."""
    from pyplant.errors import WarehouseError
    plant, _ = open_plant()
    plant_dir = Path(plant.plantDir)
    plant.shutdown()
    outside = tmp_path / "outside_specs"
    outside.mkdir()
    shutil.rmtree(plant_dir / "specs")
    os.symlink(outside, plant_dir / "specs")

    @ReactorFunc
    def hdf(pipe):
        pipe.allocate("grid", specs.HdfArraySpec, shape=(4,), dtype="float32")

    plant2, _ = open_plant(reactors=[hdf])
    with pytest.raises(WarehouseError, match="grid") as info:
        plant2.run_reactor(hdf)
    assert "hdf" in str(info.value)
    assert list(outside.iterdir()) == []
