"""A read-only view of a plant directory (``Warehouse.open_readonly``): reads traces, history
and versions while other processes run the plant; takes no lease, no lock, writes nothing."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import lmdb
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
    if what == "empty directory":
        assert "holds no plant metadata" in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if what == "missing" else ["p"])
    if what == "empty directory":
        assert list(path.iterdir()) == []  # nothing created in it


def test_a_metadata_directory_without_data_is_no_plant(tmp_path):
    (tmp_path / "plant" / "meta.lmdb").mkdir(parents=True)
    with pytest.raises(PlantDirError, match="holds no plant metadata"):
        Warehouse.open_readonly(str(tmp_path / "plant"))
    assert list((tmp_path / "plant" / "meta.lmdb").iterdir()) == []


@ReactorFunc
def make_one(pipe):
    pipe.send("x", 1)


def overwrite_every_page_but_the_meta_pages(data):
    size = data.stat().st_size
    with open(data, "r+b") as f:
        f.seek(2 * 4096)
        f.write(np.random.default_rng(1).bytes(size - 2 * 4096))


@pytest.mark.parametrize("damage, message", [
    (lambda data: os.truncate(data, 100), "truncated"),
    (overwrite_every_page_but_the_meta_pages, "a page of it is unreadable"),
], ids=["truncated", "overwritten-pages"])
def test_a_damaged_environment_is_refused_not_moved_aside(tmp_path, damage, message):
    plant_dir = tmp_path / "plant"
    with Plant(str(plant_dir)) as plant:
        plant.add_reactors(make_one)
        plant.run_reactor(make_one)
    data = plant_dir / "meta.lmdb" / "data.mdb"
    damage(data)
    before = data.read_bytes()
    with pytest.raises(PlantDirError, match=message):
        Warehouse.open_readonly(str(plant_dir))
    assert data.read_bytes() == before and not list(tmp_path.glob("plant/meta.lmdb.corrupt-*"))


def test_a_directory_of_an_older_version_without_every_database_is_readable(tmp_path):
    """An environment written before the trace index and the file hashes existed: the view
    reads its traces, and finds the missing databases empty."""
    plant_dir = tmp_path / "plant"

    @ReactorFunc
    def make(pipe):
        pipe.send("x", [1, 2])

    with Plant(str(plant_dir)) as plant:
        plant.add_reactors(make)
        plant.run_reactor(make)
    env = lmdb.open(str(plant_dir / "meta.lmdb"), max_dbs=16)
    with env.begin(write=True) as txn:
        for name in (b"traceindex", b"filehash"):
            txn.drop(env.open_db(name, txn=txn), delete=True)
    env.close()
    with Warehouse.open_readonly(str(plant_dir)) as view:
        assert view.load(view.latest_versions()["x"]) == [1, 2]
        assert view.metadata.get_file_hash("/nowhere") is None


READ_ONLY_MOUNT = """
import logging, sys
logging.basicConfig(level=logging.WARNING, format="LOG %(message)s")
from pyplant.warehouse import Warehouse
with Warehouse.open_readonly(sys.argv[1]) as view:
    print("READ", view.load(view.latest_versions()["x"]))
"""


def test_a_plant_whose_reader_table_cannot_be_written_is_read_without_it(tmp_path):
    """A plant directory nobody may write (a read-only mount, another user's files): LMDB
    cannot register the reader in lock.mdb; the view says so and reads without it."""
    plant_dir = tmp_path / "plant"

    @ReactorFunc
    def make(pipe):
        pipe.send("x", 7)

    with Plant(str(plant_dir)) as plant:
        plant.add_reactors(make)
        plant.run_reactor(make)
    command = [sys.executable, "-c", READ_ONLY_MOUNT, str(plant_dir)]
    if os.geteuid() == 0:  # root writes everything: drop the capabilities that let it
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv")
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search",
                   "--inh-caps=-dac_override,-dac_read_search"] + command
    meta = plant_dir / "meta.lmdb"
    modes = {p: p.stat().st_mode for p in [meta, *meta.iterdir()]}
    try:
        for p in modes:
            p.chmod(modes[p] & ~0o222)
        proc = subprocess.run(command, capture_output=True, text=True, env=child_env(), timeout=120)
    finally:
        for p, mode in modes.items():
            p.chmod(mode)
    assert proc.returncode == 0, proc.stderr
    assert "READ 7" in proc.stdout
    [warning] = [line for line in proc.stderr.splitlines() if line.startswith("LOG ")]
    assert re.fullmatch(re.escape(f"LOG {meta.resolve()}: cannot register as an LMDB reader (")
                        + ".*Permission denied.*"
                        + re.escape("); reading without the reader table"), warning), warning


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

