"""A read-only view of a plant directory (``Warehouse.open_readonly``): reads traces, history
and versions while other processes run the plant; takes no lease, no lock, writes nothing."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pyplant import Plant, ReactorFunc
from pyplant.errors import PlantDirError, WarehouseError
from pyplant.warehouse import Warehouse
from pyplant.warehouse.records import HistoryRecord, Trace

from conftest import child_env, write_script

HOLDER = '''
import time

@ReactorFunc
def make(pipe, config):
    pipe.send("numbers", np.arange(config.n, dtype=np.float64))
    pipe.send("label", "n=%d" % config.n)

@ReactorFunc
def total(pipe):
    x = yield pipe.receive("numbers")
    pipe.send("total", float(x.sum()))

plant = open_plant({"n": 10})
plant.add_reactors(total, make)
plant.run_reactor(total)
print("READY", flush=True)
sys.stdin.readline()            # hold the plant open (lease, environment) until told
plant.set_config({"n": 20})
plant.run_reactor(total)        # and write while the reader is still open
print("WROTE", flush=True)
sys.stdin.readline()
plant.shutdown()
'''


def snapshot(plant_dir: Path) -> dict[str, tuple[int, int]]:
    """{path: (size, mtime_ns)} of every file; LMDB's reader table (lock.mdb) is left out:
    every LMDB reader registers there, it holds no data."""
    found = {}
    for path in plant_dir.rglob("*"):
        if path.is_file() and path.name != "lock.mdb":
            st = path.stat()
            found[str(path.relative_to(plant_dir))] = (st.st_size, st.st_mtime_ns)
    return found


@pytest.fixture
def holder(tmp_path):
    """A process holding the plant open; ``send()`` lets it go on one step."""
    script = write_script(tmp_path / "holder.py", HOLDER)
    plant_dir = tmp_path / "plant"
    proc = subprocess.Popen([sys.executable, str(script), str(plant_dir)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())

    def step(expect: str) -> None:
        line = proc.stdout.readline()
        assert line.strip() == expect, (line, proc.stderr.read() if proc.poll() is not None else "")

    def send() -> None:
        proc.stdin.write("go\n")
        proc.stdin.flush()

    step("READY")
    yield plant_dir, step, send
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


def test_reads_traces_history_and_versions_while_another_process_holds_the_plant(holder):
    plant_dir, step, send = holder
    before = snapshot(plant_dir)
    leases = sorted(os.listdir(plant_dir / "leases"))
    with Warehouse.open_readonly(str(plant_dir)) as view:
        [trace] = view.traces("total")
        assert isinstance(trace, Trace) and set(trace.outputs) == {"total"}
        assert {h.reactor for h in view.history()} == {"make", "total"}
        assert all(isinstance(h, HistoryRecord) for h in view.history())
        assert set(view.reactor_records()) == {"make", "total"}
        latest = view.latest_versions()
        assert view.load(latest["total"]) == 45.0 and view.load(latest["label"]) == "n=10"
        numbers = view.load(latest["numbers"])
        np.testing.assert_array_equal(numbers, np.arange(10.0))
        assert not numbers.flags.writeable
        send()  # the holder writes a new trace meanwhile: the view sees it, nothing blocks
        step("WROTE")
        assert view.load(view.latest_versions()["total"]) == 190.0
        assert len(view.traces("total")) == 2
        with pytest.raises(WarehouseError, match="read-only"):
            view.metadata.mark_invalidated("total", "no")
    assert sorted(os.listdir(plant_dir / "leases")) == leases  # no lease of its own
    after = snapshot(plant_dir)
    changed = {p for p in before if after.get(p) != before[p]}
    assert changed <= {"meta.lmdb/data.mdb", "leases/" + leases[0]}  # what the holder wrote
    assert set(after) - set(before) <= {p for p in after if p.startswith(("blobs/", "files/", "specs/"))}


def test_never_writes_to_a_plant_nobody_holds(tmp_path):
    plant_dir = tmp_path / "plant"

    @ReactorFunc
    def make(pipe):
        pipe.send("x", [1, 2, 3])

    with Plant(str(plant_dir)) as plant:
        plant.add_reactors(make)
        plant.run_reactor(make)
    before = snapshot(plant_dir)
    view = Warehouse.open_readonly(plant_dir)
    assert view.load(view.latest_versions()["x"]) == [1, 2, 3]
    view.close()
    view.close()
    assert view.closed and snapshot(plant_dir) == before


@pytest.mark.parametrize("what", ["missing", "a file", "empty directory"])
def test_a_directory_that_is_no_plant_is_a_plant_dir_error(tmp_path, what):
    path = tmp_path / "p"
    if what == "a file":
        path.write_text("x")
    elif what == "empty directory":
        path.mkdir()
    with pytest.raises(PlantDirError) as info:
        Warehouse.open_readonly(str(path))
    assert str(path) in str(info.value) and info.value.path is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if what == "missing" else ["p"])
    if what == "empty directory":
        assert list(path.iterdir()) == []  # nothing created in it


def test_a_damaged_environment_is_refused_not_moved_aside(tmp_path):
    plant_dir = tmp_path / "plant"
    Plant(str(plant_dir)).shutdown()
    data = plant_dir / "meta.lmdb" / "data.mdb"
    with open(data, "r+b") as f:
        f.truncate(100)
    with pytest.raises(PlantDirError, match="truncated"):
        Warehouse.open_readonly(str(plant_dir))
    assert data.stat().st_size == 100 and not list(tmp_path.glob("plant/meta.lmdb.corrupt-*"))


def test_a_view_and_a_plant_in_one_process_share_the_environment(tmp_path):
    """In either order: a plant opened while a view is open writes normally, and the view
    keeps reading through the same environment."""
    plant_dir = tmp_path / "plant"

    @ReactorFunc
    def make(pipe, config):
        pipe.send("x", config.v)

    with Plant(str(plant_dir)) as plant:
        plant.add_reactors(make)
        plant.set_config({"v": 1})
        plant.run_reactor(make)
    view = Warehouse.open_readonly(str(plant_dir))
    with Plant(str(plant_dir)) as plant:
        plant.add_reactors(make)
        plant.set_config({"v": 2})
        plant.run_reactor(make)
        assert view.load(view.latest_versions()["x"]) == 2
        second = Warehouse.open_readonly(str(plant_dir))
        assert len(second.traces("make")) == 2
        second.close()
    assert view.load(view.latest_versions()["x"]) == 2
    view.close()
    with Plant(str(plant_dir)) as plant:  # everything closed: opens afresh
        assert len(plant.warehouse.metadata.trace_ids("make")) == 2
