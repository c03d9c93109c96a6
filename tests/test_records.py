"""Damaged metadata: a record that cannot be read is skipped with a warning naming it; a
damaged LMDB environment (empty, truncated, overwritten pages) is moved aside with a warning.
Nothing crashes, nothing stale is served: what the damage hid runs again.
"""
from __future__ import annotations

import glob
import logging
import os
import pickle

import lmdb
import numpy as np
import pytest

from pyplant import ReactorFunc

from conftest import result_of, run_script, write_script


def chain():
    @ReactorFunc
    def source(pipe, config):
        pipe.send("numbers", np.arange(config.n))

    @ReactorFunc
    def middle(pipe):
        x = yield pipe.receive("numbers")
        pipe.send("total", int(x.sum()))

    @ReactorFunc
    def target(pipe):
        t = yield pipe.receive("total")
        pipe.send("report", f"total={t}")

    return [target, middle, source]


def warnings_about(caplog, *needles):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
            and all(n in r.getMessage() for n in needles)]


def tamper(plant_dir, db, key, value):
    env = lmdb.open(os.path.join(plant_dir, "meta.lmdb"), max_dbs=16)
    try:
        handle = env.open_db(db)
        with env.begin(write=True) as txn:
            if key is None:  # every record of the database
                keys = [bytes(k) for k, _ in txn.cursor(db=handle)]
            else:
                keys = [key]
            assert keys, f"no record in {db}"
            for k in keys:
                txn.put(k, value, db=handle)
    finally:
        env.close()


GARBAGE = {
    "future-pickle-protocol": b"\x80\x09garbage that no pickle reads",
    "wrong-shape": pickle.dumps(12345, protocol=5),
    "random": bytes(range(7, 250, 3)),
}


@pytest.mark.parametrize("garbage", list(GARBAGE), ids=list(GARBAGE))
@pytest.mark.parametrize("db, key, reruns", [
    (b"reactors", b"middle", ["target", "middle"]),
    (b"ingredients", b"total", ["target"]),
    (b"traces", None, ["target", "middle", "source"]),
])
def test_damaged_record_is_skipped_with_a_warning(open_plant, caplog, db, key, reruns, garbage):
    """An unreadable 'reactors', 'ingredients' or 'traces' record (a pickle of a future
    protocol, a record of the wrong shape, random bytes): the run warns naming the database
    and the record, runs again what the record described, gives the right result, and the
    run after it is fully cached (the record was rewritten)."""
    plant, _ = open_plant(config={"n": 10}, reactors=chain())
    plant.run_reactor("target")
    plant_dir = plant.plantDir
    plant.shutdown()
    tamper(plant_dir, db, key, GARBAGE[garbage])
    caplog.set_level(logging.WARNING)
    plant, events = open_plant(config={"n": 10}, reactors=chain())
    plant.run_reactor("target")
    assert sorted(events.started) == sorted(reruns)
    assert plant.fetch_ingredient("report") == "total=45"
    assert warnings_about(caplog, db.decode()), [r.getMessage() for r in caplog.records]
    if key is not None:
        assert warnings_about(caplog, db.decode(), key.decode())
    plant.shutdown()
    plant, events = open_plant(config={"n": 10}, reactors=chain())
    plant.run_reactor("target")
    assert events.started == ["target"]


@pytest.mark.parametrize("db", [b"leases", b"history", b"codememo"])
def test_damaged_lease_history_or_memo_record_breaks_nothing(plant_dir, caplog, db):
    """Garbage in a 'leases', 'history' or 'codememo' record: gc(), the history and the next
    runs work; a damaged history record is skipped with a warning naming it."""
    from pyplant import Plant, hashing
    reactors = chain()
    hashing._text_cache.clear()  # hash from source, so that the code memo gets records
    hashing._code_cache.clear()
    with Plant(str(plant_dir)) as plant:  # real code hashing: the code memo gets records
        plant.set_config({"n": 10})
        plant.add_reactors(*reactors)
        plant.run_reactor("target")
    key = {b"leases": b"123-456", b"history": None, b"codememo": None}[db]
    tamper(plant_dir, db, key, GARBAGE["future-pickle-protocol"] + b"\xff\xfe")
    caplog.set_level(logging.WARNING)
    hashing._text_cache.clear()  # read the (damaged) code memo
    hashing._code_cache.clear()
    with Plant(str(plant_dir)) as plant:
        plant.set_config({"n": 11})
        plant.add_reactors(*reactors)
        started = []
        plant.add_event_listener(plant.EventType.reactor_started, lambda e, n, f: started.append(n))
        plant.run_reactor("target")
        assert sorted(started) == ["middle", "source", "target"]
        assert plant.fetch_ingredient("report") == "total=55"
        result = plant.gc(keep_last=1)
        assert result.traces == 3
        history = list(plant.warehouse.metadata.history())
        assert {h.reactor for h in history} == {"source", "middle", "target"}
        if db == b"history":
            assert len(history) == 3  # the three damaged records of the first run are skipped
            assert warnings_about(caplog, "history")


# --- a damaged environment ----------------------------------------------------------------------

ENV_SCRIPT = '''
import logging
logging.basicConfig(level=logging.WARNING, format="LOG %(levelname)s %(name)s %(message)s")

@ReactorFunc
def source(pipe):
    pipe.send("numbers", np.arange(100))

@ReactorFunc
def target(pipe):
    x = yield pipe.receive("numbers")
    RESULT["total"] = int(x.sum())

plant = open_plant()
plant.add_reactors(target, source)
plant.run_reactor(target)
plant.shutdown()
report()
'''


def damage_truncate(path):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 3)


def damage_zero(path):
    with open(path, "r+b") as f:
        f.truncate(0)


def damage_overwrite_pages(path):
    """Random bytes over every page but the two meta pages (the file keeps its size)."""
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.seek(2 * 4096)
        f.write(np.random.default_rng(1).bytes(size - 2 * 4096))


@pytest.mark.parametrize("damage", [damage_zero, damage_truncate, damage_overwrite_pages],
                         ids=["zero-length", "truncated", "overwritten-pages"])
def test_damaged_environment_is_moved_aside_with_a_warning(tmp_path, damage):
    """data.mdb emptied, truncated (used to kill the process with SIGBUS) or with overwritten
    pages (used to raise PlantDirError on every open): the next process warns, moves the
    environment aside (meta.lmdb.corrupt-*), runs everything once with the right result, and
    the process after it runs only the target."""
    script = write_script(tmp_path / "env.py", ENV_SCRIPT)
    plant_dir = tmp_path / "plant"
    first = result_of(run_script(script, plant_dir))
    assert first["started"] == ["target", "source"]
    damage(str(plant_dir / "meta.lmdb" / "data.mdb"))
    proc = run_script(script, plant_dir)
    second = result_of(proc)
    assert second["started"] == ["target", "source"]
    assert second["result"]["total"] == 4950
    assert "LOG WARNING" in proc.stderr and "moved it to" in proc.stderr, proc.stderr
    assert glob.glob(str(plant_dir / "meta.lmdb.corrupt-*"))
    third = result_of(run_script(script, plant_dir))
    assert third["started"] == ["target"]


def damage_last_page(path):
    """Random bytes over the last page: after a clean close no open check reads it (a page of
    LMDB's free list), and only a commit that reuses it finds it damaged."""
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.seek((size // 4096 - 1) * 4096)
        f.write(np.random.default_rng(7).bytes(4096))


def test_damage_met_in_use_is_moved_aside_at_the_next_open(tmp_path):
    """A damaged page that no open check reads fails the commit that meets it with a
    WarehouseError saying what will happen; it no longer fails the same way on every run:
    the next process moves the environment aside, runs everything once with the right
    result, and the process after it runs only the target."""
    script = write_script(tmp_path / "env.py", ENV_SCRIPT.replace("np.arange(100)", "np.arange(300_000)"))
    plant_dir = tmp_path / "plant"
    assert result_of(run_script(script, plant_dir))["started"] == ["target", "source"]
    damage_last_page(str(plant_dir / "meta.lmdb" / "data.mdb"))
    failed = run_script(script, plant_dir, expect_ok=False)
    assert failed.returncode != 0
    assert "WarehouseError" in failed.stderr and "moved aside when the plant is opened next" in failed.stderr
    proc = run_script(script, plant_dir)
    second = result_of(proc)
    assert second["started"] == ["target", "source"]
    assert second["result"]["total"] == sum(range(300_000))
    assert "moved it to" in proc.stderr, proc.stderr
    assert glob.glob(str(plant_dir / "meta.lmdb.corrupt-*"))
    assert result_of(run_script(script, plant_dir))["started"] == ["target"]


# --- record decoding (records.py), unit by unit ---------------------------------------------------

from pyplant.warehouse.records import (HistoryRecord, LeaseRecord, ReactorRecord,  # noqa: E402
                                       RecordError, Trace, Version, code_digest, trace_index_key)

_VERSION_REC = {"name": "x", "type": "simple", "content_hash": "h" * 32}
_TRACE_REC = {"reactor": "r", "trace_id": "t" * 32, "code": {"reactor": "c"}, "config": {},
              "inputs": {}, "outputs": {"x": dict(_VERSION_REC)}}


def test_records_of_an_older_layout_decode_with_their_defaults():
    """Fields added after a record was written take their defaults, a fresh container for each
    record (two traces never share one ``files`` dict)."""
    version = Version.from_record(dict(_VERSION_REC))
    assert (version.location, version.inline, version.meta, version.nbytes, version.files) == (None, None, None, 0, None)
    first, second = Trace.from_record(dict(_TRACE_REC)), Trace.from_record(dict(_TRACE_REC))
    for field in ("files", "dirs", "env", "names"):
        assert getattr(first, field) == {} and type(getattr(first, field)) is dict
        assert getattr(first, field) is not getattr(second, field)
    assert (first.finished, first.duration) == (0.0, 0.0) and first.outputs["x"] == version
    reactor = ReactorRecord.from_record({"traces": ["a"]})
    assert (reactor.used, reactor.shapes, reactor.invalidated) == ({}, None, None)
    history = HistoryRecord.from_record({"reactor": "r", "started": 1.0})
    assert (history.duration, history.ran, history.reason) == (0.0, True, None)


@pytest.mark.parametrize("decode, rec, message", [
    (Version.from_record, ["x"], "a version record must be a dict, got list"),
    (Trace.from_record, {**_TRACE_REC, "code": None}, "trace record: field 'code' has type NoneType"),
    (Trace.from_record, {k: v for k, v in _TRACE_REC.items() if k != "inputs"}, "trace record: field 'inputs' is missing"),
    (Trace.from_record, {**_TRACE_REC, "outputs": {"x": {"name": "x"}}}, "version record: field 'type' is missing"),
    (HistoryRecord.from_record, {"reactor": "r", "started": "noon"}, "history record: field 'started' has type str"),
    (ReactorRecord.from_record, {"traces": "abc"}, "reactor record: field 'traces' has type str"),
    (ReactorRecord.from_record, {"traces": ["a", 3]}, "reactor record: a trace id that is not a str"),
])
def test_a_record_of_the_wrong_shape_is_refused_naming_the_record_and_the_field(decode, rec, message):
    """The warning that skips a damaged record quotes this message: it names the kind of
    record and the field at fault."""
    with pytest.raises(RecordError) as info:
        decode(rec)
    assert str(info.value) == message


@pytest.mark.parametrize("header", [{"pid": 1, "started": "noon"}, {"pid": "1", "started": 1.0},
                                    {"started": 1.0}, [1, 1.0]])
def test_a_lease_header_needs_an_int_pid_and_a_start_time(header):
    with pytest.raises(RecordError, match="a lease header must hold an int pid and a start time"):
        LeaseRecord.from_lines(header, [])
    lease = LeaseRecord.from_lines({"pid": 7, "started": 2}, ["blobs/a", 3, "files/b"])
    assert lease == LeaseRecord(7, 2.0, frozenset({"blobs/a", "files/b"}))


def test_the_trace_index_key_is_stable_and_leaves_subreactors_out():
    """The index key is stored on disk: it must not change between versions of pyplant (every
    stored trace would be found only by the scan of the 64 most recent), and it leaves out
    ``sub:`` labels, which are known only after a run."""
    code = {"reactor": "h1", "fn:helpers.f": "h2"}
    assert code_digest(code) == "e56567ecef57c5165b8b1b7f915baa42"
    assert code_digest({**code, "sub:module.halve": "h3"}) == code_digest(code)
    assert code_digest({**code, "fn:sub.f": "h3"}) != code_digest(code)
    assert trace_index_key(code_digest(code), {"C": "tok1", "max_iter": "tok2"}) == "98dcc945376f4e8bf5434dafce47f932"
