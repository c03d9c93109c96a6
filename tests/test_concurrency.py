"""Several processes (and several Plant objects) on one plant directory.

* Two processes started at the same moment, running the same reactors or different ones:
  both finish, their results are right, and a third run executes only its target.
* A long reactor (sleeping inside its body) in process A never blocks process B from
  verifying, reading and running other reactors: B finishes while A still sleeps.
* Two ``Plant`` objects on one directory in one process (a notebook cell re-run without
  ``shutdown()``) both work, in either order, the first never shut down.
* A writer that must wait for another process's write lock says so in a log record
  ('waiting', INFO or WARNING, logger 'pyplant' or a child of it), then proceeds.
"""
from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from pyplant import Plant, ReactorFunc, specs

from kill_driver import subprocess_env

SCRIPT = '''
import json, logging, os, sys, time
import numpy as np
from pyplant import Plant, ReactorFunc, specs

PLANT_DIR, TARGET, CONFIG = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
STARTED = []
RECORDS = []


class Collect(logging.Handler):
    def emit(self, record):
        RECORDS.append({"logger": record.name, "level": record.levelname,
                        "message": record.getMessage(), "created": record.created})


logging.getLogger("pyplant").setLevel(logging.INFO)
logging.getLogger("pyplant").addHandler(Collect())


def pause():
    """Widen the windows in which two processes overlap (CONC_PAUSE seconds)."""
    seconds = os.environ.get("CONC_PAUSE")
    if seconds:
        time.sleep(float(seconds))


def hold_after_send():
    """With SEND_MARK set: say so in that file, then wait until the file SEND_GO exists (a
    barrier the test releases), or SEND_SLEEP seconds when no SEND_GO is given."""
    mark = os.environ.get("SEND_MARK")
    if mark:
        with open(mark, "w") as f:
            f.write("sent")
        go = os.environ.get("SEND_GO")
        if go:
            deadline = time.monotonic() + 300
            while not os.path.exists(go) and time.monotonic() < deadline:
                time.sleep(0.005)
        else:
            time.sleep(float(os.environ["SEND_SLEEP"]))


@ReactorFunc
def base(pipe, config):
    pause()
    pipe.send("base", np.arange(config.n, dtype=np.float64) * config.k)
    hold_after_send()


@ReactorFunc
def square(pipe):
    x = yield pipe.receive("base")
    pause()
    pipe.send("square", x * x)


@ReactorFunc
def grid(pipe, config):
    h = pipe.allocate("grid", specs.HdfArraySpec, shape=(64, 32), dtype=np.float32)
    for r in range(64):
        h[r] = r * config.k
    pause()


@ReactorFunc
def summary_a(pipe):
    sq = yield pipe.receive("square")
    g = yield pipe.receive("grid")
    pause()
    pipe.send("summary_a", {"square": float(sq.sum()), "grid": float(np.asarray(g[...]).sum())})


@ReactorFunc
def words(pipe, config):
    pause()
    pipe.send("words", ["w%d" % i for i in range(config.m)])


@ReactorFunc
def summary_b(pipe):
    b = yield pipe.receive("base")
    w = yield pipe.receive("words")
    pause()
    pipe.send("summary_b", {"base": float(b.sum()), "words": len(w)})


@ReactorFunc
def slow(pipe):
    b = yield pipe.receive("base")
    mark = os.environ.get("SLOW_MARK")
    if mark:
        with open(mark, "w") as f:
            f.write("sleeping")
        time.sleep(float(os.environ["SLOW_SLEEP"]))
    pipe.send("slow", float(b.sum()) + 1)


@ReactorFunc
def target_a(pipe):
    a = yield pipe.receive("summary_a")
    pipe.send("out_a", a)


@ReactorFunc
def target_b(pipe):
    b = yield pipe.receive("summary_b")
    pipe.send("out_b", b)


@ReactorFunc
def target_slow(pipe):
    s = yield pipe.receive("slow")
    pipe.send("out_slow", s)


go = os.environ.get("CONC_GO")
if go:  # a barrier: start the plant work at the same moment as the other process
    open(os.environ["CONC_READY"], "w").close()
    while not os.path.exists(go):
        time.sleep(0.001)
began = time.time()
# The reactors read test hooks (CONC_PAUSE, SEND_MARK...) from the environment, which differ
# from run to run on purpose: they must not count as inputs here.
plant = Plant(PLANT_DIR, track_env=False)
plant.add_event_listener(Plant.EventType.reactor_started, lambda e, n, f: STARTED.append(n))
go = os.environ.get("CONC_OPENED_GO")
if go:  # a barrier after the plant is open: the next write is a commit
    open(os.environ["CONC_OPENED_READY"], "w").close()
    while not os.path.exists(go):
        time.sleep(0.001)
plant.set_config(dict(CONFIG))
plant.run_reactor(TARGET)
go = os.environ.get("CONC_RAN_GO")
if go:  # a barrier between run_reactor and fetch_ingredient
    open(os.environ["CONC_RAN_READY"], "w").close()
    while not os.path.exists(go):
        time.sleep(0.001)
if TARGET == "base":  # the producer itself as the target: it sends at once
    out = float(plant.fetch_ingredient("base").sum())
else:
    out = plant.fetch_ingredient("out_" + TARGET[len("target_"):])
plant.shutdown()
print("RESULT " + json.dumps({"started": STARTED, "out": out, "began": began, "ended": time.time(),
                              "records": RECORDS}), flush=True)
'''

HOLD_LOCK = '''
import os, sys, time
from pyplant.warehouse.metadata import MetadataStore

store = MetadataStore(os.path.join(sys.argv[1], "meta.lmdb"))
with store._write() as txn:  # the write lock every pyplant writer takes
    with open(sys.argv[2], "w") as f:
        f.write("holding")
    time.sleep(float(sys.argv[3]))
    released = time.time()
store.close()
print("RELEASED %.6f" % released, flush=True)
'''


def expected(target: str, config: dict):
    base = np.arange(config["n"], dtype=np.float64) * config["k"]
    if target == "target_a":
        grid = sum(r * config["k"] * 32 for r in range(64))
        return {"square": float((base * base).sum()), "grid": float(grid)}
    if target == "target_b":
        return {"base": float(base.sum()), "words": config["m"]}
    if target == "base":
        return float(base.sum())
    return float(base.sum()) + 1


CONFIG = {"n": 200_000, "k": 3, "m": 5}


class Proc:
    """One run of SCRIPT in its own process."""

    def __init__(self, tmp_path: Path, plant_dir: Path, target: str, config: dict, **env: str):
        self.script = tmp_path / "conc_workload.py"
        if not self.script.exists():
            self.script.write_text(textwrap.dedent(SCRIPT))
        self.target, self.config = target, config
        environ = subprocess_env()
        environ.update(env)
        self.popen = subprocess.Popen([sys.executable, str(self.script), str(plant_dir), target,
                                       json.dumps(config)], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env=environ, cwd=str(tmp_path))
        self.out = self.err = None

    def wait(self, timeout: float = 120) -> dict:
        try:
            self.out, self.err = self.popen.communicate(timeout=timeout)
        finally:
            if self.popen.poll() is None:
                self.popen.kill()
                self.popen.communicate()
        assert self.popen.returncode == 0, f"{self.target} failed:\n{self.err}"
        assert "Traceback" not in self.err, self.err
        for line in reversed(self.out.splitlines()):
            if line.startswith("RESULT "):
                result = json.loads(line[len("RESULT "):])
                assert result["out"] == expected(self.target, self.config), (self.target, self.config)
                return result
        raise AssertionError(f"no result:\n{self.out}\n{self.err}")


def run_once(tmp_path, plant_dir, target, config, **env) -> dict:
    return Proc(tmp_path, plant_dir, target, config, **env).wait()


def run_together(tmp_path, plant_dir, jobs: list[tuple[str, dict]], pause: float = 0.02) -> list[dict]:
    """Start one process per (target, config), release them at the same moment, wait for all."""
    go = tmp_path / f"go-{time.monotonic_ns()}"
    procs, readies = [], []
    for i, (target, config) in enumerate(jobs):
        ready = tmp_path / f"{go.name}-ready{i}"
        readies.append(ready)
        procs.append(Proc(tmp_path, plant_dir, target, config, CONC_GO=str(go), CONC_READY=str(ready),
                          CONC_PAUSE=str(pause)))
    deadline = time.monotonic() + 60
    while not all(r.exists() for r in readies) and time.monotonic() < deadline:
        assert all(p.popen.poll() is None for p in procs), [p.popen.communicate() for p in procs]
        time.sleep(0.005)
    go.touch()
    return [p.wait() for p in procs]


# --- two processes at once ---------------------------------------------------------------------

def test_two_processes_same_reactors(tmp_path):
    """Two processes start the same reactors on one directory at the same moment, three
    rounds (a new config, another, the first again): both always finish with the right
    result, and a third run afterwards executes only its target."""
    plant_dir = tmp_path / "plant"
    for k in (3, 4, 3):
        config = dict(CONFIG, k=k)
        run_together(tmp_path, plant_dir, [("target_a", config), ("target_a", config)])
        third = run_once(tmp_path, plant_dir, "target_a", config)
        assert third["started"] == ["target_a"], (k, third["started"])


def test_two_processes_different_reactors(tmp_path):
    """Two processes run different targets sharing the producer 'base' at the same moment:
    both finish right; third runs of each execute only their targets."""
    plant_dir = tmp_path / "plant"
    for k, m in ((3, 5), (4, 5), (4, 6)):
        config = dict(CONFIG, k=k, m=m)
        run_together(tmp_path, plant_dir, [("target_a", config), ("target_b", config)])
        for target in ("target_a", "target_b"):
            third = run_once(tmp_path, plant_dir, target, config)
            assert third["started"] == [target], (k, m, third["started"])


def test_many_rounds_of_two_processes(tmp_path):
    """Twelve rounds, each starting two processes at once with random targets and configs
    (shared producers, HDF allocations, arrays, pickles): nothing fails, nothing is wrong,
    and a final check of every target on every config seen runs only the target."""
    rng = np.random.default_rng(5)
    plant_dir = tmp_path / "plant"
    seen = []
    for _ in range(12):
        jobs = []
        for _ in range(2):
            config = dict(CONFIG, k=int(rng.integers(1, 4)), m=int(rng.integers(1, 4)))
            jobs.append((str(rng.choice(["target_a", "target_b"])), config))
        run_together(tmp_path, plant_dir, jobs, pause=float(rng.choice([0.0, 0.01, 0.03])))
        seen.extend(jobs)
    for target, config in seen[-4:]:
        result = run_once(tmp_path, plant_dir, target, config)
        assert result["started"] == [target], (target, config, result["started"])


def test_fetch_after_run_returns_this_runs_result_while_another_process_runs(tmp_path):
    """Parallel runs of one pipeline with different configs on one directory (a parameter
    sweep): process A runs config k=1; before A fetches its result, process B runs k=2 to the
    end. A's fetch_ingredient must return what A's run produced ("from this session"), not
    the version B committed last."""
    plant_dir = tmp_path / "plant"
    ran, go = tmp_path / "a-ran", tmp_path / "a-go"
    config_a, config_b = dict(CONFIG, k=1, m=1), dict(CONFIG, k=2, m=2)
    a = Proc(tmp_path, plant_dir, "target_b", config_a, CONC_RAN_READY=str(ran), CONC_RAN_GO=str(go))
    try:
        wait_for(ran, a.popen)
        run_once(tmp_path, plant_dir, "target_b", config_b)
    finally:
        go.touch()
    a.wait()  # asserts that A's result is expected("target_b", config_a)


def test_fetch_after_run_returns_this_plants_result_two_plants_one_process(tmp_path):
    """The same with two live Plant objects in one process (configs k=1 and k=2): each
    fetches what its own run produced."""
    reactors = in_process_reactors()
    first, _ = plant_on(tmp_path / "plant", reactors, {"n": 3})
    second, _ = plant_on(tmp_path / "plant", reactors, {"n": 4})
    first.run_reactor("total")
    second.run_reactor("total")
    assert (first.fetch_ingredient("total"), second.fetch_ingredient("total")) == (total_of(3), total_of(4))
    assert first.fetch_ingredient("numbers").tolist() == [0, 1, 2]
    first.shutdown()
    second.shutdown()


def test_long_reactor_does_not_block_other_process(tmp_path):
    """Process A sleeps 8 s inside a reactor; process B, started while A sleeps, verifies the
    cached 'base', reads it, runs the stale 'words' and 'summary_b', and finishes while A is
    still sleeping; then A finishes right too."""
    plant_dir = tmp_path / "plant"
    run_once(tmp_path, plant_dir, "target_b", CONFIG)
    mark = tmp_path / "sleeping"
    a = Proc(tmp_path, plant_dir, "target_slow", CONFIG, SLOW_MARK=str(mark), SLOW_SLEEP="8")
    deadline = time.monotonic() + 60
    while not mark.exists() and a.popen.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert mark.exists(), a.popen.communicate()
    began = time.monotonic()
    b = run_once(tmp_path, plant_dir, "target_b", dict(CONFIG, m=9))
    b_took = time.monotonic() - began
    a_still_running = a.popen.poll() is None
    assert sorted(b["started"]) == ["summary_b", "target_b", "words"]
    assert a_still_running and b_took < 6, f"B took {b_took:.1f} s while A slept 8 s"
    result_a = a.wait()
    assert sorted(result_a["started"]) == ["slow", "target_slow"]
    assert result_a["ended"] > b["ended"]


GC_SCRIPT = '''
import sys
from pyplant import Plant

plant = Plant(sys.argv[1])
print("GC " + str(plant.gc()), flush=True)
plant.shutdown()
'''


def gc_while_reactor_holds_reused_blob(tmp_path, plant_dir, pause: str, target: str = "target_b") -> str | None:
    """One scenario (see the tests below); returns what went wrong, or None.

    B waits at a barrier (a file) after sending, so GC always runs while B's reactor is
    running; every stored file is aged an hour first, so that no mtime protects the reused
    blob: only B's lease may.
    """
    sent0, sent1, go = tmp_path / "sent0", tmp_path / "sent1", tmp_path / "go"
    for path in (sent0, sent1, go):
        path.unlink(missing_ok=True)
    killed = Proc(tmp_path, plant_dir, "target_b", CONFIG, SEND_MARK=str(sent0), SEND_SLEEP="60")
    wait_for(sent0, killed.popen)
    killed.popen.kill()
    killed.popen.communicate()
    b = Proc(tmp_path, plant_dir, target, CONFIG, SEND_MARK=str(sent1), SEND_GO=str(go),
             CONC_PAUSE=pause)
    try:
        wait_for(sent1, b.popen)
        old = time.time() - 3600
        for top in ("blobs", "files", "specs"):
            for path in (Path(plant_dir) / top).rglob("*"):
                if path.is_file():
                    os.utime(path, (old, old))
        gc_script = tmp_path / "gc_plant.py"
        gc_script.write_text(textwrap.dedent(GC_SCRIPT))
        collected = subprocess.run([sys.executable, str(gc_script), str(plant_dir)], capture_output=True,
                                   text=True, env=subprocess_env(), cwd=str(tmp_path), timeout=120)
        assert collected.returncode == 0, collected.stderr
        assert b.popen.poll() is None, "B finished before gc ran: the test proves nothing"
    finally:
        go.touch()
    b.wait()
    later = run_once(tmp_path, plant_dir, "target_slow", CONFIG)  # 'slow' loads 'base'
    warnings = [r["message"] for r in later["records"] if r["level"] in ("WARNING", "ERROR")]
    if "base" not in later["started"] and not warnings:
        return None
    return f"{collected.stdout.strip()}; then: started {later['started']}, warnings {warnings}"


def test_gc_in_another_process_keeps_what_a_running_reactor_sent(tmp_path):
    """Process B's reactor has sent 'base' and is still running when another process runs
    plant.gc(). The blob B sent happens to exist already (a process killed earlier had
    written the same content, then died before its commit: an unreferenced crash leftover).
    After B finishes, its committed version must still be loadable: a later run of a new
    reactor receiving 'base' loads it, does not re-run 'base' and logs no warning."""
    problem = gc_while_reactor_holds_reused_blob(tmp_path, tmp_path / "plant", pause="0.05")
    assert problem is None, problem


def test_gc_spares_blob_reused_right_after_plant_opened(tmp_path):
    """The same, with B running 'base' as its target, so that it sends within a millisecond
    or two of opening the plant; five times: the reused blob must survive every time."""
    problems = [gc_while_reactor_holds_reused_blob(tmp_path, tmp_path / f"plant{i}", pause="0",
                                                   target="base") for i in range(5)]
    assert problems == [None] * 5, problems


# --- the write lock ----------------------------------------------------------------------------

def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert path.exists(), proc.communicate()


@pytest.mark.parametrize("when", ["opening the plant", "committing a reactor"])
def test_writer_that_must_wait_says_so_then_proceeds(tmp_path, when):
    """While another process holds the plant's write lock for 3 s, a process that needs to
    write (to open the plant, or to commit a finished reactor) logs a record containing
    'waiting' (INFO or WARNING, logger 'pyplant' or a child) before the lock is released, then
    proceeds and finishes right."""
    plant_dir = tmp_path / "plant"
    run_once(tmp_path, plant_dir, "target_b", CONFIG)
    holder_script = tmp_path / "hold_lock.py"
    holder_script.write_text(textwrap.dedent(HOLD_LOCK))
    holding, opened, go = tmp_path / "holding", tmp_path / "opened", tmp_path / "go"
    env = {} if when == "opening the plant" else {"CONC_OPENED_READY": str(opened), "CONC_OPENED_GO": str(go)}
    waiter = None
    if env:  # the waiter opens the plant first, then waits at the barrier
        waiter = Proc(tmp_path, plant_dir, "target_b", dict(CONFIG, m=7), **env)
        wait_for(opened, waiter.popen)
    holder = subprocess.Popen([sys.executable, str(holder_script), str(plant_dir), str(holding), "3"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=subprocess_env(), cwd=str(tmp_path))
    try:
        wait_for(holding, holder)
        if waiter is None:
            waiter = Proc(tmp_path, plant_dir, "target_b", dict(CONFIG, m=7))
        else:
            go.touch()
        result = waiter.wait()
        out, err = holder.communicate(timeout=60)
    finally:
        for proc in [holder] + ([waiter.popen] if waiter else []):
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert holder.returncode == 0, err
    released = float(out.split()[-1])
    assert result["ended"] > released  # it did wait
    waiting = [r for r in result["records"]
               if "waiting" in r["message"] and r["level"] in ("INFO", "WARNING")
               and (r["logger"] == "pyplant" or r["logger"].startswith("pyplant."))]
    assert waiting, (f"waited {released - result['began']:.1f} s without a 'waiting' record; "
                     f"records: {json.dumps(result['records'], indent=1)}")
    assert waiting[0]["created"] < released
    assert sorted(result["started"]) == ["summary_b", "target_b", "words"]


# --- two Plant objects in one process ------------------------------------------------------------

def in_process_reactors():
    @ReactorFunc
    def numbers(pipe, config):
        pipe.send("numbers", np.arange(config.n, dtype=np.int64))

    @ReactorFunc
    def table(pipe, config):
        h = pipe.allocate("table", specs.HdfArraySpec, shape=(16, 8), dtype=np.float32)
        h[...] = config.n

    @ReactorFunc
    def total(pipe):
        x = yield pipe.receive("numbers")
        t = yield pipe.receive("table")
        pipe.send("total", int(x.sum()) + int(np.asarray(t[...]).sum()))

    return [numbers, table, total]


def total_of(n):
    return n * (n - 1) // 2 + 16 * 8 * n


def plant_on(directory, reactors, config):
    plant = Plant(str(directory))
    plant.add_reactors(*reactors)
    plant.set_config(dict(config))
    started = []
    plant.add_event_listener(Plant.EventType.reactor_started, lambda e, n, f: started.append(n))
    return plant, started


@pytest.mark.parametrize("order", ["first_runs_first", "second_runs_first"])
def test_two_plants_one_directory_in_one_process(tmp_path, order):
    """A notebook cell re-run without shutdown(): a second Plant on the directory of a live
    first one. Both run, in either order, the first never shut down; each sees what the other
    committed; the first still works after the second is shut down."""
    reactors = in_process_reactors()
    first, started1 = plant_on(tmp_path / "plant", reactors, {"n": 10})
    if order == "first_runs_first":
        first.run_reactor("total")
        assert first.fetch_ingredient("total") == total_of(10)
    second, started2 = plant_on(tmp_path / "plant", reactors, {"n": 10})
    second.run_reactor("total")
    assert second.fetch_ingredient("total") == total_of(10)
    if order == "first_runs_first":
        assert started2 == ["total"]
    first.run_reactor("total")
    assert first.fetch_ingredient("total") == total_of(10)
    if order == "second_runs_first":
        assert started1 == ["total"]
    # new work through each, seen by the other
    first.set_config({"n": 20})
    first.run_reactor("total")
    second.set_config({"n": 20})
    del started2[:]
    second.run_reactor("total")
    assert started2 == ["total"]
    assert second.fetch_ingredient("total") == total_of(20)
    second.shutdown()
    first.set_config({"n": 30})
    del started1[:]
    first.run_reactor("total")
    assert sorted(started1) == ["numbers", "table", "total"]
    assert first.fetch_ingredient("total") == total_of(30)
    first.shutdown()
    third, started3 = plant_on(tmp_path / "plant", reactors, {"n": 30})
    third.run_reactor("total")
    assert started3 == ["total"]
    third.shutdown()


def test_first_plant_shut_down_while_second_in_use(tmp_path):
    """Shutting down the older of two live plants on one directory leaves the newer working
    (the shared metadata environment stays open for it), and a plant opened afterwards too."""
    reactors = in_process_reactors()
    first, _ = plant_on(tmp_path / "plant", reactors, {"n": 8})
    first.run_reactor("total")
    second, started = plant_on(tmp_path / "plant", reactors, {"n": 9})
    first.shutdown()
    second.run_reactor("total")
    assert sorted(started) == ["numbers", "table", "total"]
    assert second.fetch_ingredient("total") == total_of(9)
    assert second.fetch_ingredient("numbers")[-1] == 8
    third, started3 = plant_on(tmp_path / "plant", reactors, {"n": 8})
    third.run_reactor("total")
    assert started3 == ["total"]
    assert third.fetch_ingredient("total") == total_of(8)
    second.shutdown()
    third.shutdown()


def test_plant_dropped_without_shutdown_then_reopened(tmp_path):
    """A cell re-run rebinds ``plant`` without shutdown(): the dropped object is garbage
    collected while the new one is in use, and the new one keeps working."""
    reactors = in_process_reactors()
    plant, _ = plant_on(tmp_path / "plant", reactors, {"n": 5})
    plant.run_reactor("total")
    for n in (5, 6, 7):
        plant, started = plant_on(tmp_path / "plant", reactors, {"n": n})  # the old one is dropped
        gc.collect()
        plant.run_reactor("total")
        assert plant.fetch_ingredient("total") == total_of(n)
        assert (started == ["total"]) == (n == 5)
    plant.shutdown()


def test_two_plants_interleaved_inside_a_reactor(tmp_path):
    """A reactor of one plant reads through a second live Plant on the same directory (a
    helper that opens the plant itself): no deadlock, both results right."""
    reactors = in_process_reactors()
    first, _ = plant_on(tmp_path / "plant", reactors, {"n": 4})
    first.run_reactor("total")
    seen = {}

    @ReactorFunc
    def peek(pipe):
        x = yield pipe.receive("total")
        other = Plant(str(tmp_path / "plant"))
        seen["total"] = other.fetch_ingredient("total")
        other.shutdown()
        pipe.send("peeked", x)

    first.add_reactors(peek)
    first.run_reactor("peek")
    assert seen["total"] == total_of(4)
    assert first.fetch_ingredient("peeked") == total_of(4)
    first.shutdown()


# --- a process killed while another one works on the same directory ----------------------------

def test_kill_one_of_two_processes(tmp_path):
    """Two processes run the kill workload (large arrays, a chain of tiny commits, an HDF fill)
    on one directory at once, and one is SIGKILLed at a random moment, possibly holding the
    write lock: the other always finishes with the from-scratch result, and a third run starts
    only the target. (Reactors pinned with ``version=``: this is about crashes and locks.)"""
    import random
    import threading

    from kill_driver import SMALL, TARGET, Workload

    rng = random.Random(3)
    killer = Workload(tmp_path / "work-a", SMALL, pin_code=True)
    survivor = Workload(tmp_path / "work-b", SMALL, pin_code=True)
    plant_dir = tmp_path / "plant"
    references = {}
    for round_ in range(10):
        config = {"big": round_, "chain": round_, "hdf": round_}
        reference = survivor.run(tmp_path / "scratch", config)
        assert reference.problem() is None, reference.stderr
        references[round_] = reference.result
        outcome = {}
        thread = threading.Thread(target=lambda: outcome.update(run=survivor.run(plant_dir, config)))
        thread.start()
        killed = killer.run(plant_dir, config, kill_after=rng.uniform(0, 2 * reference.work))
        thread.join()
        run = outcome["run"]
        assert run.problem() is None, f"round {round_}: the survivor failed: {run.problem()}\n{run.stderr}"
        assert run.result == reference.result, f"round {round_}"
        if not killed.signalled:
            assert killed.problem() is None, killed.stderr
        third = survivor.run(plant_dir, config)
        assert third.problem() is None, third.stderr
        assert third.started == [TARGET], (round_, third.started, third.reasons)
        assert third.result == reference.result


def test_processes_creating_one_plant_directory_at_once(tmp_path):
    """Three processes open a plant directory that does not exist yet at the same moment
    (twelve times): every one finishes right with no warning (no metadata 'damaged' and moved
    aside while another process creates it), and a fourth run starts only the target."""
    for round_ in range(12):
        plant_dir = tmp_path / f"plant{round_}"
        results = run_together(tmp_path, plant_dir, [("target_b", CONFIG)] * 3, pause=0.0)
        for result in results:
            warnings = [r["message"] for r in result["records"] if r["level"] in ("WARNING", "ERROR")]
            assert not warnings, (round_, warnings)
        assert not list(tmp_path.glob(f"plant{round_}/*corrupt*")), sorted(p.name for p in plant_dir.iterdir())
        fourth = run_once(tmp_path, plant_dir, "target_b", CONFIG)
        assert fourth["started"] == ["target_b"], (round_, fourth["started"])
