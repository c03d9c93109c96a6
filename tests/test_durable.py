"""``Plant(dir, durable=True)``: every stored file, its directory and every commit are synced."""
from __future__ import annotations

import os
import re

import numpy as np
import scipy.sparse as sp

from pyplant import Ingredient, Plant, ReactorFunc, specs


def durable_reactors():
    @ReactorFunc
    def make(pipe):
        pipe.send("small", 3)                                  # inline: no file
        pipe.send("big_pickle", {"pad": bytes(100_000)})       # a .pkl blob
        pipe.send("array", np.arange(1000.0))                  # a .npy blob
        path = pipe.allocate("notes.txt", Ingredient.Type.file)
        with open(path, "w") as f:
            f.write("durable")
        ds = pipe.allocate("grid", specs.HdfArraySpec, shape=(8, 8), dtype="float32")
        ds[...] = 1.5
        pipe.send("sparse", sp.csr_matrix(np.eye(4)))

    @ReactorFunc
    def target(pipe):
        total = 0.0
        total += (yield pipe.receive("small"))
        total += len((yield pipe.receive("big_pickle"))["pad"])
        total += float((yield pipe.receive("array")).sum())
        with open((yield pipe.receive("notes.txt"))) as f:
            total += len(f.read())
        total += float((yield pipe.receive("grid"))[...].sum())
        total += float((yield pipe.receive("sparse")).sum())
        pipe.send("total", total)

    return [target, make]


EXPECTED = 3 + 100_000 + float(np.arange(1000.0).sum()) + len("durable") + 64 * 1.5 + 4


def test_durable_plant_fsyncs_every_file_and_directory(tmp_path, monkeypatch):
    """With durable=True a run fsyncs the .pkl and .npy blobs, the file ingredient, the HDF
    file, the sparse .npz, and the directories holding them; LMDB commits are synchronous
    (sync and metasync on); a new plant reads everything back."""
    synced = []
    real_fsync = os.fsync

    def counting_fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    plant_dir = tmp_path / "plant"
    plant = Plant(str(plant_dir), durable=True)
    plant.add_reactors(*durable_reactors())
    assert plant.warehouse.metadata.env.flags()["sync"] is True
    assert plant.warehouse.metadata.env.flags()["metasync"] is True
    plant.run_reactor("target")
    assert plant.fetch_ingredient("total") == EXPECTED
    plant.shutdown()
    # a blob is synced under its temporary name, before the rename that makes it visible
    rel = [re.sub(r"\.tmp-\d+-[0-9a-f]+$", "", os.path.relpath(p, plant_dir))
           for p in synced if p.startswith(str(plant_dir))]
    files = [p for p in rel if os.path.isfile(plant_dir / p)]
    assert any(p.startswith("blobs/") and p.endswith(".pkl") for p in files), rel
    assert any(p.startswith("blobs/") and p.endswith(".npy") for p in files), rel
    assert any(p.startswith("files/") and p.endswith("notes.txt") for p in files), rel
    assert any(p.startswith("specs/") and p.endswith(".hdf") for p in files), rel
    assert any(p.startswith("specs/") and p.endswith(".npz") for p in files), rel
    dirs = {p for p in rel if os.path.isdir(plant_dir / p)}
    assert "specs" in dirs and any(d.startswith("blobs/") for d in dirs), rel
    assert any(d.startswith("files/") for d in dirs), rel

    plant2 = Plant(str(plant_dir), durable=True)
    plant2.add_reactors(*durable_reactors())
    started = []
    plant2.add_event_listener(Plant.EventType.reactor_started, lambda e, n, f: started.append(n))
    plant2.run_reactor("target")
    assert started == ["target"]
    assert plant2.fetch_ingredient("total") == EXPECTED
    plant2.shutdown()


def test_default_plant_does_not_fsync(tmp_path, monkeypatch):
    """Without durable=True nothing is fsynced (a killed process loses nothing anyway)."""
    synced = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd))
    plant = Plant(str(tmp_path / "plant"))
    plant.add_reactors(*durable_reactors())
    plant.run_reactor("target")
    assert plant.warehouse.metadata.env.flags()["sync"] is False
    plant.shutdown()
    assert synced == []
