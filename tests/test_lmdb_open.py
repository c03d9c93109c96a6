"""Opening the plant metadata (``pyplant/warehouse/lmdb_env.py``): every record is read at
open only when the environment changed since its last clean close, a damaged page found so
is moved aside, openers and writers wait for each other's locks (and say so), and a read-only
view's environment refuses writes (found by mutation testing)."""
from __future__ import annotations

import fcntl
import logging
import os
import re
import struct
import subprocess
import sys
import threading

import lmdb
import pytest

from pyplant import Plant, ReactorFunc
from pyplant.errors import PlantDirError
from pyplant.warehouse import Warehouse, lmdb_env

from conftest import child_env


@ReactorFunc
def make(pipe, config):
    pipe.send("x", config.v)


def run_once(plant_dir, v=1):
    with Plant(str(plant_dir)) as plant:
        plant.add_reactors(make)
        plant.set_config({"v": v})
        plant.run_reactor(make)
        return plant.fetch_ingredient("x")


@pytest.fixture
def full_reads(monkeypatch):
    """The environments read in full at open (``lmdb_env._read_everything``), by path."""
    seen = []
    real = lmdb_env._read_everything

    def spy(env):
        seen.append(os.path.realpath(env.path()))
        return real(env)

    monkeypatch.setattr(lmdb_env, "_read_everything", spy)
    return seen


KILLED_WRITER = '''
import os, sys
from pyplant import Plant, ReactorFunc
from pyplant.errors import PlantDirError

@ReactorFunc
def make(pipe):
    pipe.send("x", 2)

plant = Plant(sys.argv[1])
plant.add_reactors(make)
plant.run_reactor(make)
os._exit(0)  # no shutdown: the environment is not closed cleanly
'''


def kill_after_a_commit(tmp_path, plant_dir):
    script = tmp_path / "killed.py"
    script.write_text(KILLED_WRITER)
    subprocess.run([sys.executable, str(script), str(plant_dir)], check=True, env=child_env(),
                   capture_output=True, timeout=120)


def test_a_cleanly_closed_environment_is_not_read_in_full(plant_dir, full_reads):
    run_once(plant_dir)
    assert os.path.exists(plant_dir / "meta.lmdb" / "closed-cleanly")
    assert run_once(plant_dir) == 1
    assert full_reads == []


@pytest.mark.parametrize("history", ["never closed cleanly", "changed after a clean close"])
def test_an_environment_changed_without_a_clean_close_is_read_in_full(tmp_path, plant_dir, full_reads, history):
    if history == "changed after a clean close":
        run_once(plant_dir)
    kill_after_a_commit(tmp_path, plant_dir)
    assert run_once(plant_dir, v=3) == 3
    assert full_reads == [os.path.realpath(plant_dir / "meta.lmdb")]
    full_reads.clear()
    run_once(plant_dir, v=3)  # closed cleanly since
    assert full_reads == []


def damage_one_leaf_of_the_code_memo(meta_dir):
    """Write many code memo records behind pyplant's back (no clean close), then mark one of
    their leaf pages as a page of another type: LMDB opens the environment and every database,
    and only reading that record raises."""
    env = lmdb.open(str(meta_dir), max_dbs=16)
    db = env.open_db(b"codememo")
    with env.begin(write=True) as txn:
        for i in range(2000):
            txn.put(b"memo-key-%05d" % i, b"v" * 40, db=db)
    env.close()
    data_mdb = os.path.join(meta_dir, "data.mdb")
    with open(data_mdb, "rb") as f:
        data = f.read()
    psize = 4096
    leaves = [pg for pg in range(len(data) // psize)
              if struct.unpack_from("<H", data, pg * psize + 10)[0] == 0x02  # P_LEAF
              and b"memo-key-" in data[pg * psize:(pg + 1) * psize]]
    assert len(leaves) > 4
    with open(data_mdb, "r+b") as f:
        f.seek(leaves[len(leaves) // 2] * psize + 10)
        f.write(struct.pack("<H", 0x10))


def test_a_damaged_page_of_an_environment_not_closed_cleanly_is_found_at_open(plant_dir, caplog):
    """A leaf page of a database no open touches: only reading every record finds it (the
    environment was not closed cleanly since it changed). The environment is moved aside with a
    warning naming it, the damage and where it went, and the plant starts afresh, with its own
    durability."""
    run_once(plant_dir)
    meta = plant_dir / "meta.lmdb"
    damage_one_leaf_of_the_code_memo(meta)
    why = "a page of it is unreadable: .*Located page was wrong type"
    caplog.set_level(logging.WARNING)
    with Plant(str(plant_dir)) as plant:
        assert plant.warehouse.metadata.env.flags()["sync"] is False  # not durable
        assert plant.warehouse.metadata.trace_ids("make") == []
        plant.add_reactors(make)
        plant.set_config({"v": 2})
        plant.run_reactor(make)
        assert plant.fetch_ingredient("x") == 2
    [aside] = [p for p in os.listdir(plant_dir) if p.startswith("meta.lmdb.corrupt-")]
    assert re.fullmatch(r"meta\.lmdb\.corrupt-\d{8}-\d{6}-%d-[0-9a-f]{6}" % os.getpid(), aside)
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert re.fullmatch(re.escape(f"the plant metadata in {meta.resolve()} is damaged (") + why
                        + re.escape(f"); moved it to {(plant_dir / aside).resolve()} and starting "
                                    "afresh: every reactor will run once"), warning), warning
    with Plant(str(plant_dir)) as plant:
        assert plant.warehouse.metadata.trace_ids("make") != []


class Waiting(logging.Handler):
    """Sets ``event`` once a record saying that a writer waits is logged."""

    def __init__(self):
        super().__init__()
        self.event = threading.Event()
        self.messages = []
        self.proceeded = []

    def emit(self, record):
        try:
            record.getMessage()
        except Exception:  # a message that cannot be formatted: do not wait for it
            self.event.set()
            raise
        if record.getMessage().startswith("waiting for another process"):
            self.messages.append(record.getMessage())
            self.event.set()
        elif record.getMessage().startswith("proceeding after waiting"):
            self.proceeded.append(record.getMessage())


@pytest.fixture
def waiting():
    handler = Waiting()
    log = logging.getLogger("pyplant")
    old_level = log.level
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    yield handler
    log.removeHandler(handler)
    log.setLevel(old_level)


@pytest.mark.parametrize("lock", ["meta.lmdb.lock", "meta.lmdb/write.lock"])
def test_opening_waits_for_the_lock_another_process_holds_and_says_so(plant_dir, waiting, lock):
    """``meta.lmdb.lock`` serializes opening (and moving aside) an environment across
    processes, ``write.lock`` every write, opening the databases included: a ``Plant`` cannot
    even be constructed while another process holds either."""
    run_once(plant_dir)
    assert_waits(plant_dir, waiting, lock, lambda: Plant(str(plant_dir)).shutdown())


def test_a_commit_waits_for_the_write_lock_another_process_holds_and_says_so(plant_dir, waiting):
    with Plant(str(plant_dir)) as plant:
        plant.add_reactors(make)
        plant.set_config({"v": 5})
        assert_waits(plant_dir, waiting, "meta.lmdb/write.lock", lambda: plant.run_reactor(make))
        assert plant.fetch_ingredient("x") == 5


def assert_waits(plant_dir, waiting, lock, action):
    fd = os.open(plant_dir / lock, os.O_RDWR)  # another open file: another holder
    fcntl.flock(fd, fcntl.LOCK_EX)
    done = []

    def act():
        try:
            action()
            done.append(True)
        finally:
            waiting.event.set()  # also when it never waited

    thread = threading.Thread(target=act)
    try:
        thread.start()
        assert waiting.event.wait(60)
        assert done == [] and waiting.messages, "went ahead without waiting for " + lock
    finally:
        os.close(fd)  # releases the lock
        thread.join(60)
    assert done == [True]
    meta = (plant_dir / "meta.lmdb").resolve()
    assert waiting.messages == [f"waiting for another process writing to {meta}"]
    [proceeded] = waiting.proceeded
    assert re.fullmatch(r"proceeding after waiting \d+\.\d\d s for the write lock of " + re.escape(str(meta)),
                        proceeded), proceeded


def test_a_read_only_view_environment_refuses_write_transactions(plant_dir):
    run_once(plant_dir)
    with Warehouse.open_readonly(str(plant_dir)) as view:
        env = view.metadata.env
        assert env.flags()["readonly"] is True and env.flags()["lock"] is True
        with pytest.raises(lmdb.ReadonlyError):
            with env.begin(write=True):
                pass


@pytest.mark.parametrize("how", ["plant", "read-only view"])
def test_an_environment_serves_hundreds_of_readers_at_once(plant_dir, how):
    """LMDB's default reader table holds 126 read transactions; a plant's holds 512."""
    run_once(plant_dir)
    if how == "plant":
        plant = Plant(str(plant_dir))
        env, close = plant.warehouse.metadata.env, plant.shutdown
        assert env.flags()["lock"] is True  # readers in other processes are registered
    else:
        view = Warehouse.open_readonly(str(plant_dir))
        env, close = view.metadata.env, view.close
    txns = []
    try:
        for _ in range(500):
            txns.append(env.begin())
        assert all(txn.get(b"reactors") is not None for txn in txns)
    finally:
        for txn in txns:
            txn.abort()
        close()


# --- one environment per directory and process ---------------------------------------------------

def meta_path(plant_dir):
    return os.path.realpath(plant_dir / "meta.lmdb")


def test_a_closed_environment_left_registered_is_replaced_on_the_next_open(plant_dir):
    """An interrupt inside ``release`` can leave a closed environment registered: the next
    plant opens a fresh one instead of reading through the closed one."""
    run_once(plant_dir)
    plant = Plant(str(plant_dir))
    shared = lmdb_env._envs[meta_path(plant_dir)]
    shared.close()  # what an interrupted release leaves
    assert run_once(plant_dir, v=2) == 2
    assert lmdb_env._envs.get(meta_path(plant_dir)) is None


def test_a_plant_opened_while_a_view_is_open_keeps_its_durability_and_closes_cleanly(plant_dir, full_reads):
    run_once(plant_dir)
    view = Warehouse.open_readonly(str(plant_dir))
    plant = Plant(str(plant_dir))  # reopens the view's environment read-write
    assert plant.warehouse.metadata.env.flags()["sync"] is False
    plant.add_reactors(make)
    plant.set_config({"v": 2})
    plant.run_reactor(make)
    second = Plant(str(plant_dir))  # shares it: no second reopening under the first plant
    assert second.warehouse.metadata.env is plant.warehouse.metadata.env
    second.shutdown()
    plant.shutdown()
    view.close()
    assert run_once(plant_dir, v=2) == 2
    assert full_reads == []  # the reopened environment was closed cleanly


def test_a_failed_reopening_for_writing_is_a_plant_dir_error_and_the_next_open_works(plant_dir):
    run_once(plant_dir)
    view = Warehouse.open_readonly(str(plant_dir))
    lock = plant_dir / "meta.lmdb.lock"
    os.unlink(lock)
    os.mkdir(lock)  # cannot be opened as the opening lock
    with pytest.raises(PlantDirError):
        Plant(str(plant_dir))
    os.rmdir(lock)
    assert run_once(plant_dir, v=2) == 2
    view.close()


# --- the cheap check of data.mdb before LMDB maps it ---------------------------------------------

def fake_data_mdb(path, psize=4096, magic=0xBEEFC0DE, metas=((1, 1), (3, 2)), size=None, second=True):
    """A data.mdb of two meta pages ((last page, txnid) each), ``size`` bytes long (by default
    as long as the newest meta page needs)."""
    newest = max(metas, key=lambda m: m[1])
    size = (newest[0] + 1) * psize if size is None else size
    data = bytearray(max(size, 2 * psize))
    for i, (last_pg, txnid) in enumerate(metas[:2 if second else 1]):
        struct.pack_into("<II", data, i * psize + 16, magic, 1)
        struct.pack_into("<I", data, i * psize + 40, psize)
        struct.pack_into("<QQ", data, i * psize + 136, last_pg, txnid)
    path.mkdir(exist_ok=True)
    (path / "data.mdb").write_bytes(bytes(data[:size]))
    return str(path)


@pytest.mark.parametrize("psize", [512, 4096, 1 << 16])
def test_check_file_accepts_two_meta_pages_and_the_pages_the_newest_needs(tmp_path, psize):
    lmdb_env._check_file(fake_data_mdb(tmp_path / "m", psize=psize))
    # the newest meta page (txnid 9) needs 2 pages; the older one's 5 are not needed
    lmdb_env._check_file(fake_data_mdb(tmp_path / "n", psize=psize, metas=((4, 8), (1, 9))))


@pytest.mark.parametrize("kwargs, message", [
    ({"size": 0}, "data.mdb is empty (0 bytes): the metadata is gone"),
    ({"size": 100}, "data.mdb is truncated to 100 bytes"),
    ({"magic": 0x12345678}, "data.mdb does not start with an LMDB meta page"),
    ({"psize": 256}, "data.mdb does not start with an LMDB meta page"),
    ({"psize": 1 << 17}, "data.mdb does not start with an LMDB meta page"),
    ({"psize": 3072}, "data.mdb does not start with an LMDB meta page"),
    ({"second": False}, "the second meta page of data.mdb is damaged or missing (16384 bytes)"),
    ({"size": 4196}, "the second meta page of data.mdb is damaged or missing (4196 bytes)"),
    ({"size": 12288}, "data.mdb is truncated: 12288 bytes, its meta page needs 16384"),
], ids=["empty", "head-short", "magic", "small-page", "large-page", "odd-page", "one-meta",
        "short-second-meta", "one-page-short"])
def test_check_file_names_what_is_wrong(tmp_path, kwargs, message):
    with pytest.raises(lmdb_env.Damaged) as info:
        lmdb_env._check_file(fake_data_mdb(tmp_path / "m", **kwargs))
    assert str(info.value) == message
