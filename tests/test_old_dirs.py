"""Plant directories written by earlier versions keep opening: their records are read into
the typed records, their versions load, nothing re-runs that was up to date.

``fixtures/old_plant.tar.gz`` was written by the code before typed records and codecs (see
``fixtures/old_plant.py``): every kind of version (inline and blob pickles, an array, a masked
array, a file, an HDF array, a sparse matrix), two configs, A -> B -> A.
"""
from __future__ import annotations

import json
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import lmdb

from pyplant.warehouse.backend import FEW_TRACES
from pyplant.warehouse.lmdb_store import LmdbMetadata
from pyplant.warehouse.records import Trace, code_digest, trace_index_key

from conftest import child_env

FIXTURES = Path(__file__).parent / "fixtures"

EXPECTED = {
    "numbers": [float(i) for i in range(10)], "count": 10, "items": [1, "two", 3.0],
    "small": "{'a': (1, 2), 'b': np.float32(1.5)}", "big_n": 10, "masked": ["MaskedArray", [False, True, False]],
    "report": "n=10\n", "grid": [[float(3 * r + c) for c in range(3)] for r in range(4)],
    "sparse": [[10.0 if r == c else 0.0 for c in range(3)] for r in range(3)], "summary": "10:45.0",
}


def unpack(tmp_path: Path) -> Path:
    plant_dir = tmp_path / "old"
    with tarfile.open(FIXTURES / "old_plant.tar.gz") as tar:
        tar.extractall(plant_dir, filter="data")
    return plant_dir


def check(plant_dir: Path) -> dict:
    proc = subprocess.run([sys.executable, str(FIXTURES / "old_plant.py"), "check", str(plant_dir)],
                          capture_output=True, text=True, env=child_env(), timeout=120, cwd=str(FIXTURES))
    assert proc.returncode == 0, proc.stderr
    assert "WARNING" not in proc.stderr and "damaged" not in proc.stderr, proc.stderr
    line = [l for l in proc.stdout.splitlines() if l.startswith("OLD-PLANT ")][-1]
    return json.loads(line[len("OLD-PLANT "):])


def test_a_directory_written_by_the_previous_code_opens_cached(tmp_path):
    """A new process opens the old directory: only the target runs, every kind of version
    loads with its value, traces and history read, explain() says up to date, and gc frees
    the other config's traces."""
    out = check(unpack(tmp_path))
    assert out["started"] == ["target"]
    assert out["values"] == EXPECTED
    assert out["traces"] == {"source": 2, "middle": 2, "target": 2}
    assert out["history"] >= 6
    assert out["explain"]["source"] == out["explain"]["middle"] == "up to date"
    assert out["gc"] == 3 and out["after_gc"] == EXPECTED


def old_env(path: Path, records: dict[bytes, dict[bytes, object]]) -> None:
    """Write an environment the way the first LMDB layout did: plain pickled dicts, no trace
    index, reactor records without 'used' or 'shapes', traces without files, dirs or env."""
    env = lmdb.open(str(path), max_dbs=16, map_size=1 << 24)
    for db, entries in records.items():
        handle = env.open_db(db)
        with env.begin(write=True) as txn:
            for key, value in entries.items():
                txn.put(key, pickle.dumps(value, protocol=5), db=handle)
    env.close()


def old_trace(reactor: str, tid: str, p: int) -> dict:
    return {"reactor": reactor, "trace_id": tid, "code": {"reactor": "c"},
            "config": {"p": (f"tok{p}", repr(p))}, "inputs": {},
            "outputs": {"out": {"name": "out", "type": "simple", "content_hash": f"{p:032x}",
                                "location": None, "inline": pickle.dumps(p), "meta": {"codec": "pickle"},
                                "nbytes": 5}},
            "finished": 1000.0 + p, "duration": 0.1}


def test_records_of_the_first_layout_read_and_get_indexed(tmp_path):
    n = FEW_TRACES + 2
    ids = [f"t{p}" for p in reversed(range(n))]
    old_env(tmp_path / "meta.lmdb", {
        b"reactors": {b"r": {"traces": ids}},
        b"traces": {f"r\0t{p}".encode(): old_trace("r", f"t{p}", p) for p in range(n)},
        b"ingredients": {b"out": {"producer": "r"}},
        b"history": {b"0000000001000.000000-1-1": {"reactor": "r", "started": 1000.0, "duration": 0.1}},
    })
    store = LmdbMetadata(str(tmp_path / "meta.lmdb"))
    try:
        traces = store.traces("r")
        assert [t.trace_id for t in traces] == ids
        assert traces[0].files == {} and traces[0].outputs["out"].inline == pickle.dumps(n - 1)
        assert traces[0].outputs["out"].files is None
        [record] = store.history()
        assert (record.reactor, record.ran, record.reason) == ("r", True, None)
        assert store.reactor_records()["r"].shapes is None and store.producer("out") == "r"

        def key_of(params):
            return trace_index_key(code_digest({"reactor": "c"}), {"p": "tok2"})
        found, latest = store.candidate_traces("r", key_of)
        assert latest == f"t{n - 1}" and "t2" in found  # no index yet: the recent ones
        newest = Trace("r", "new", {"reactor": "c"}, {"p": ("tokN", "N")}, {}, {})
        store.commit_trace(newest, {"reactor": "r", "started": 2000.0, "duration": 0.0})
        found, latest = store.candidate_traces("r", key_of)
        assert found == ["t2"] and latest == "new"  # indexed on the first commit
    finally:
        store.close()

