"""One conformance suite for every ``MetadataBackend``: the LMDB store and the in-memory one.

Each test runs against both (``backend`` is parametrized); a behaviour that only one of them
has is a bug in the other. LMDB-only behaviour (persistence across processes, damaged records,
error translation) follows at the end.
"""
from __future__ import annotations

import os
import pickle

import lmdb
import numpy as np
import pytest

from pyplant import Plant, ReactorFunc
from pyplant.errors import PlantClosedError, PlantDirError, WarehouseError
from pyplant.warehouse import lmdb_env
from pyplant.warehouse.backend import FEW_TRACES, SCAN_TRACES, MetadataBackend
from pyplant.warehouse.lmdb_store import LmdbMetadata
from pyplant.warehouse.memory import InMemoryMetadata
from pyplant.warehouse.records import (HistoryRecord, ReactorRecord, Trace, Version, code_digest,
                                       trace_index_key)


@pytest.fixture(params=["lmdb", "memory"])
def backend(request, tmp_path) -> MetadataBackend:
    store = LmdbMetadata(str(tmp_path / "meta.lmdb")) if request.param == "lmdb" else InMemoryMetadata()
    yield store
    store.close()


def version(name: str, n: int = 0) -> Version:
    return Version(name, "array", f"{n:032x}", f"blobs/ab/{n:030x}.npy", nbytes=8 * n)


def trace(reactor: str, tid: str, config: dict | None = None, outputs=("out",), code="c1",
          finished: float = 0.0) -> Trace:
    config = {"p": 1} if config is None else config
    return Trace(reactor, tid, {"reactor": code}, {p: (f"tok{v}", repr(v)) for p, v in config.items()},
                 {"in": "h" * 32}, {name: version(name, i + 1) for i, name in enumerate(outputs)},
                 finished=finished, duration=0.5)


def history(reactor: str, started: float = 100.0) -> HistoryRecord:
    return HistoryRecord(reactor, started, 0.5, True, "no trace yet")


def key_of_for(code: str, config: dict):
    """The ``key_of`` a scheduler passes: the index key the current code and config give."""
    tokens = {p: f"tok{v}" for p, v in config.items()}

    def key_of(params):
        if any(p not in tokens for p in params):
            return None
        return trace_index_key(code_digest({"reactor": code}), {p: tokens[p] for p in params})
    return key_of


# --- an empty store ------------------------------------------------------------------------------

def test_an_empty_store_knows_nothing(backend):
    assert backend.trace_ids("r") == [] and backend.traces("r") == [] and backend.trace("r", "t") is None
    assert backend.candidate_traces("r", key_of_for("c1", {})) == ([], None)
    assert backend.producer("x") is None and backend.producers() == {} and backend.ingredient_names() == []
    assert list(backend.history()) == [] and backend.reactor_records() == {}
    assert backend.invalidated("r") is None and not backend.closed


# --- committing and reading traces ---------------------------------------------------------------

def test_a_committed_trace_is_read_back_whole(backend):
    t = trace("make", "t1", outputs=("a", "b"))
    backend.commit_trace(t, history("make"))
    assert backend.trace("make", "t1") == t
    assert backend.trace_ids("make") == ["t1"] and backend.traces("make") == [t]
    assert backend.producer("a") == backend.producer("b") == "make"
    assert backend.producers() == {"a": "make", "b": "make"}
    assert sorted(backend.ingredient_names()) == ["a", "b"]
    rec = backend.reactor_records()["make"]
    assert isinstance(rec, ReactorRecord) and rec.traces == ["t1"] and "t1" in rec.used
    assert list(backend.history()) == [history("make")]


def test_history_is_accepted_as_a_dict_and_read_oldest_first(backend):
    backend.commit_trace(trace("b", "t2"), {"reactor": "b", "started": 200.0, "duration": 1.0,
                                            "ran": True, "reason": "forced"})
    backend.commit_trace(trace("a", "t1"), history("a", started=100.0))
    records = list(backend.history())
    assert [r.reactor for r in records] == ["a", "b"]
    assert records[1] == HistoryRecord("b", 200.0, 1.0, True, "forced")


def test_traces_are_most_recent_first_and_limited(backend):
    for i in range(5):
        backend.commit_trace(trace("r", f"t{i}", {"p": i}), history("r", 100.0 + i))
    assert backend.trace_ids("r") == ["t4", "t3", "t2", "t1", "t0"]
    assert [t.trace_id for t in backend.traces("r", limit=2)] == ["t4", "t3"]
    assert backend.trace("r", "t0").config == {"p": ("tok0", "0")}


def test_traces_are_limited_to_64_by_default(backend):
    for i in range(65):
        backend.commit_trace(trace("r", f"t{i}", {"p": i}), history("r", 100.0 + i))
    found = backend.traces("r")
    assert len(found) == 64 and found[0].trace_id == "t64" and found[-1].trace_id == "t1"


def test_latest_version_looks_only_at_the_most_recent_traces(backend):
    """``latest_version`` scans the ``SCAN_TRACES`` most recent traces: an ingredient sent only
    by an older one is not found (the calls of one step share its traces)."""
    backend.commit_trace(trace("r", "t0", {"p": 0}, outputs=("old", "out")), history("r", 100.0))
    for i in range(1, SCAN_TRACES):
        backend.commit_trace(trace("r", f"t{i}", {"p": i}, outputs=("out",)), history("r", 100.0 + i))
    assert backend.latest_version("r", "old") == backend.trace("r", "t0").outputs["old"]
    backend.commit_trace(trace("r", "tnew", {"p": -1}, outputs=("out",)), history("r", 200.0))
    assert backend.latest_version("r", "old") is None
    assert backend.latest_version("r", "out") == backend.trace("r", "tnew").outputs["out"]


def test_committing_a_trace_again_moves_it_first_without_duplicating_it(backend):
    backend.commit_trace(trace("r", "t1", {"p": 1}), history("r"))
    backend.commit_trace(trace("r", "t2", {"p": 2}), history("r"))
    backend.commit_trace(trace("r", "t1", {"p": 1}), history("r"))
    assert backend.trace_ids("r") == ["t1", "t2"]


def test_promote_makes_an_older_trace_the_latest_and_its_reactor_the_producer(backend):
    old = trace("r", "t1", {"p": 1}, outputs=("x",))
    backend.commit_trace(old, history("r"))
    backend.commit_trace(trace("other", "o1", outputs=("x",)), history("other"))
    backend.commit_trace(trace("r", "t2", {"p": 2}, outputs=("x",)), history("r"))
    backend.commit_trace(trace("other", "o2", outputs=("x",)), history("other"))
    assert backend.producer("x") == "other"
    backend.promote_trace("r", old)
    assert backend.trace_ids("r") == ["t1", "t2"] and backend.producer("x") == "r"
    used = backend.reactor_records()["r"].used
    assert used["t1"] >= used["t2"]


# --- the trace index -----------------------------------------------------------------------------

def test_candidates_are_the_traces_whose_code_and_config_match(backend):
    n = FEW_TRACES + 3
    for i in range(n):
        backend.commit_trace(trace("r", f"t{i}", {"p": i}), history("r"))
    for i in (0, n // 2, n - 1):
        found, latest = backend.candidate_traces("r", key_of_for("c1", {"p": i}))
        assert found[0] == f"t{i}" and latest == f"t{n - 1}"
        assert not {f"t{j}" for j in range(n) if j != i} & set(found), found  # the index answers
    found, _ = backend.candidate_traces("r", key_of_for("c2", {"p": 1}))  # other code: nothing
    assert "t1" not in found


def test_candidates_are_the_recent_traces_when_the_index_cannot_answer(backend):
    n = FEW_TRACES + 2
    for i in range(n):
        backend.commit_trace(trace("r", f"t{i}", {"p": i}), history("r"))
    found, latest = backend.candidate_traces("r", lambda params: None)
    assert set(found) == {f"t{i}" for i in range(n)} and latest == f"t{n - 1}"


def test_candidates_come_most_recently_used_first(backend):
    n = FEW_TRACES + 2
    traces = [trace("r", f"t{i}", {"p": 7}, code="same", finished=float(i)) for i in range(n)]
    for t in traces:  # one index key for all: their use decides the order
        backend.commit_trace(t, history("r"))
    backend.promote_trace("r", traces[1])
    found, latest = backend.candidate_traces("r", key_of_for("same", {"p": 7}))
    assert found[0] == "t1" and latest == "t1" and set(found) == {t.trace_id for t in traces}


def test_candidates_with_different_parameter_sets(backend):
    n = FEW_TRACES + 1
    for i in range(n):
        backend.commit_trace(trace("r", f"a{i}", {"p": i}), history("r"))
    backend.commit_trace(trace("r", "q", {"p": 1, "q": 2}), history("r"))
    found, _ = backend.candidate_traces("r", key_of_for("c1", {"p": 1, "q": 2}))
    assert set(found) == {"a1", "q"}


def test_candidates_come_with_the_first_candidate_read_in_the_same_call(backend):
    assert backend.candidate_traces_first("r", key_of_for("c1", {"p": 1})) == ([], None, None)
    for i in range(FEW_TRACES + 2):
        backend.commit_trace(trace("r", f"t{i}", {"p": i}), history("r"))
    for key_of in (key_of_for("c1", {"p": 2}), lambda params: None):
        found, latest, first = backend.candidate_traces_first("r", key_of)
        assert (found, latest) == backend.candidate_traces("r", key_of)
        assert first == backend.trace("r", found[0])
    assert backend.candidate_traces_first("r", key_of_for("c2", {"p": 1}))[2] is None  # no candidate


# --- forgetting ----------------------------------------------------------------------------------

def test_dropped_traces_are_gone_everywhere(backend):
    n = FEW_TRACES + 2
    for i in range(n):
        backend.commit_trace(trace("r", f"t{i}", {"p": i}), history("r"))
    backend.drop_traces("r", {"t1", "t2", "unknown"})
    assert backend.trace_ids("r") == [f"t{i}" for i in reversed(range(n)) if i not in (1, 2)]
    assert backend.trace("r", "t1") is None and backend.trace("r", "t2") is None
    assert "t1" not in backend.reactor_records()["r"].used
    found, _ = backend.candidate_traces("r", key_of_for("c1", {"p": 1}))
    assert "t1" not in found
    backend.forget_trace("r", "t0")
    assert "t0" not in backend.trace_ids("r")
    backend.drop_traces("never-ran", {"x"})  # no record: nothing happens
    assert "never-ran" not in backend.reactor_records()


def test_invalidation_is_remembered_until_a_new_trace(backend):
    backend.mark_invalidated("fresh", "ingredient 'x' was invalidated")  # no record yet
    assert backend.invalidated("fresh") == "ingredient 'x' was invalidated"
    backend.commit_trace(trace("r", "t1"), history("r"))
    backend.mark_invalidated("r", "forced")
    assert backend.invalidated("r") == "forced" and backend.trace_ids("r") == ["t1"]
    backend.commit_trace(trace("r", "t2", {"p": 2}), history("r"))
    assert backend.invalidated("r") is None


def test_a_reactor_record_keeps_its_parameter_sets_and_invalidation_through_every_write(backend):
    backend.commit_trace(trace("r", "t1", {"p": 1}), history("r"))
    backend.commit_trace(trace("r", "t2", {"p": 2, "q": 3}), history("r"))
    backend.commit_trace(trace("r", "t3", {"p": 4}), history("r"))  # a parameter set seen already
    shapes = [["p"], ["p", "q"]]
    assert backend.reactor_records()["r"].shapes == shapes
    backend.mark_invalidated("r", "forced")
    assert backend.reactor_records()["r"].shapes == shapes
    backend.drop_traces("r", {"t1"})
    assert backend.invalidated("r") == "forced" and backend.reactor_records()["r"].shapes == shapes
    assert backend.trace_ids("r") == ["t3", "t2"]


def test_an_invalidated_reactor_without_traces_has_no_candidates(backend):
    backend.mark_invalidated("fresh", "forced")
    assert backend.candidate_traces("fresh", key_of_for("c1", {"p": 1})) == ([], None)


# --- the code memo and file hashes ---------------------------------------------------------------

def test_memo_entries_are_visible_at_once_and_kept_by_the_next_commit(backend):
    backend.put("k1", "v1")
    assert backend.get("k1") == "v1" and backend.get("nope") is None
    assert backend.get_many(["k1", "nope"]) == {"k1": "v1"}
    backend.commit_trace(trace("r", "t1"), history("r"))
    backend.put("k2", "v2")
    assert backend.get_many(["k1", "k2"]) == {"k1": "v1", "k2": "v2"}


def test_file_hashes_are_kept_and_long_paths_are_not(backend):
    entry = (1, 2, 3, 4, 5.0, "h" * 32)
    backend.put_file_hash("/data/in.csv", entry)
    backend.put_file_hash("/" + "x" * 600, entry)
    backend.commit_trace(trace("r", "t1"), history("r"))
    assert backend.get_file_hash("/data/in.csv") == entry
    assert backend.get_file_hash("/" + "x" * 600) is None and backend.get_file_hash("/other") is None


def test_file_hashes_are_visible_at_once_and_kept_below_500_bytes_of_path(backend):
    """LMDB keys hold at most 511 bytes: paths of 500 bytes and more are not remembered."""
    entry = (1, 2, 3, 4, 5.0, "h" * 32)
    backend.put_file_hash("/data/new.csv", entry)
    assert backend.get_file_hash("/data/new.csv") == entry  # before any commit
    short, limit = "/" + "é" * 249, "/" + "é" * 249 + "x"  # 499 and 500 bytes
    backend.put_file_hash(short, entry)
    backend.put_file_hash(limit, entry)
    backend.commit_trace(trace("r", "t1"), history("r"))
    assert backend.get_file_hash(short) == entry and backend.get_file_hash(limit) is None


# --- closing -------------------------------------------------------------------------------------

READS = [("trace_ids", ("r",)), ("traces", ("r",)), ("trace", ("r", "t")), ("producer", ("x",)),
         ("producers", ()), ("reactor_records", ()), ("invalidated", ("r",)), ("get", ("k",)),
         ("get_many", (["k"],)), ("get_file_hash", ("/p",)), ("history", ())]
WRITES = [("commit_trace", (trace("r", "t"), history("r"))), ("promote_trace", ("r", trace("r", "t"))),
          ("drop_traces", ("r", {"t"})), ("mark_invalidated", ("r", "why"))]


@pytest.mark.parametrize("method, args", READS + WRITES, ids=[m for m, _ in READS + WRITES])
def test_every_method_raises_plant_closed_error_once_closed(backend, method, args):
    backend.close()
    backend.close()  # idempotent
    backend.recover()  # a no-op once closed
    assert backend.closed
    with pytest.raises(PlantClosedError):
        getattr(backend, method)(*args)


def test_memo_entries_survive_close(tmp_path):
    store = LmdbMetadata(str(tmp_path / "meta.lmdb"))
    store.put("k", "v")
    store.put_file_hash("/p", (1, 2, 3, 4, 5.0, "h"))
    store.close()
    again = LmdbMetadata(str(tmp_path / "meta.lmdb"))
    assert again.get("k") == "v" and again.get_file_hash("/p") == (1, 2, 3, 4, 5.0, "h")
    again.close()


# --- LMDB only: records on disk, errors translated -----------------------------------------------

def test_lmdb_records_are_plain_dicts_that_old_readers_understand(tmp_path):
    store = LmdbMetadata(str(tmp_path / "meta.lmdb"))
    store.commit_trace(trace("r", "t1"), history("r"))
    store.close()
    env = lmdb.open(str(tmp_path / "meta.lmdb"), max_dbs=16, readonly=True)
    with env.begin() as txn:
        rec = pickle.loads(txn.get(b"r\0t1", db=env.open_db(b"traces", txn=txn, create=False)))
        hist = [pickle.loads(v) for _, v in txn.cursor(db=env.open_db(b"history", txn=txn, create=False))]
    env.close()
    assert type(rec) is dict and type(rec["outputs"]["out"]) is dict and "files" not in rec["outputs"]["out"]
    assert rec["outputs"]["out"]["content_hash"] == f"{1:032x}"
    assert hist == [{"reactor": "r", "started": 100.0, "duration": 0.5, "ran": True, "reason": "no trace yet"}]


def test_a_full_map_is_a_warehouse_error_naming_the_reactor(tmp_path, monkeypatch):
    monkeypatch.setattr(lmdb_env, "MAP_SIZE", 1 << 17)
    store = LmdbMetadata(str(tmp_path / "meta.lmdb"))
    big = Trace("big", "t", {"reactor": "c"}, {}, {}, {}, env={"X": "x" * (1 << 18)})
    with pytest.raises(WarehouseError, match="cannot record the trace of reactor 'big'") as info:
        store.commit_trace(big, history("big"))
    assert info.value.reactor == "big" and isinstance(info.value.__cause__, lmdb.Error)
    assert store.trace_ids("big") == []  # nothing of it is visible
    store.close()


def test_run_reactor_raises_warehouse_error_not_lmdb_error_and_keeps_what_finished(tmp_path, monkeypatch):
    """A commit the metadata cannot take (its map is full: the trace records a 512 KiB
    environment variable): run_reactor raises WarehouseError naming the reactor, not an LMDB
    error; the reactor that finished before it stays cached."""
    monkeypatch.setattr(lmdb_env, "MAP_SIZE", 1 << 18)
    monkeypatch.setenv("PYPLANT_TEST_HUGE", "x" * (1 << 19))

    @ReactorFunc
    def small(pipe):
        pipe.send("small", 1)

    @ReactorFunc
    def huge(pipe):
        yield pipe.receive("small")
        pipe.send("huge", len(os.environ["PYPLANT_TEST_HUGE"]))

    @ReactorFunc
    def target(pipe):
        yield pipe.receive("huge")

    started = []
    with Plant(str(tmp_path / "plant"), functionHash=lambda f: f.__name__) as plant:
        plant.add_reactors(target, huge, small)
        plant.add_event_listener(Plant.EventType.reactor_started, lambda e, n, f: started.append(n))
        with pytest.raises(WarehouseError, match="cannot record the trace of reactor 'huge'") as info:
            plant.run_reactor(target)
        assert info.value.reactor == "huge" and isinstance(info.value.__cause__, lmdb.MapFullError)
        started.clear()
        monkeypatch.setenv("PYPLANT_TEST_HUGE", "short")
        plant.run_reactor(target)
        assert sorted(started) == ["huge", "target"]  # 'small' stayed cached


def test_a_missing_directory_cannot_be_opened_read_only(tmp_path):
    with pytest.raises(PlantDirError, match="no plant metadata") as info:
        LmdbMetadata(str(tmp_path / "nothing"), readonly=True)
    assert info.value.path.endswith("nothing")
    assert not (tmp_path / "nothing").exists()


def test_a_read_only_store_refuses_to_write(tmp_path):
    LmdbMetadata(str(tmp_path / "meta.lmdb")).close()
    store = LmdbMetadata(str(tmp_path / "meta.lmdb"), readonly=True)
    with pytest.raises(WarehouseError, match="read-only"):
        store.commit_trace(trace("r", "t"), history("r"))
    store.put("k", "v")  # a cache entry: dropped, never written
    assert store.get("k") is None
    store.close()


def test_arrays_in_traces_round_trip_typed(backend):
    """Version fields keep their types through the store (a numpy scalar never sneaks in)."""
    t = trace("r", "t1")
    backend.commit_trace(t, history("r"))
    got = backend.trace("r", "t1").outputs["out"]
    assert got == t.outputs["out"] and type(got.nbytes) is int


def test_a_warehouse_on_the_in_memory_backend_stores_loads_and_collects(tmp_path):
    """The warehouse takes any MetadataBackend: versions are stored on disk, their records in
    memory, and GC decides from those records."""
    from pyplant.warehouse import Warehouse, gc
    warehouse = Warehouse(str(tmp_path / "plant"), metadata=InMemoryMetadata())
    try:
        old = warehouse.store("arr", np.arange(10.0), "array", reactor="r").version
        new = warehouse.store("arr", np.arange(20.0), "array", reactor="r").version
        warehouse.metadata.commit_trace(Trace("r", "t1", {}, {}, {}, {"arr": old}), history("r"))
        warehouse.metadata.commit_trace(Trace("r", "t2", {}, {}, {}, {"arr": new}), history("r"))
        np.testing.assert_array_equal(warehouse.load(old), np.arange(10.0))
        warehouse.lease.compact([])  # this plant holds nothing any more
        for path in (tmp_path / "plant" / "blobs").rglob("*.npy"):
            os.utime(path, (1, 1))  # older than every live plant: only the records protect it
        result = gc.collect(warehouse, keep_last=1)
        assert (result.traces, result.files) == (1, 1)
        assert warehouse.metadata.trace_ids("r") == ["t2"]
        np.testing.assert_array_equal(warehouse.load(new), np.arange(20.0))
    finally:
        warehouse.close()
