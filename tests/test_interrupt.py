"""Ctrl-C: a KeyboardInterrupt inside a reactor (raised in-process, or a real SIGINT sent to a
process while a reactor sleeps) propagates out of ``run_reactor``; everything that finished
before it stays saved, and a re-run starts only the interrupted reactor and the target.
"""
from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from pyplant import Plant, ReactorFunc, SubreactorFunc, specs
from pyplant.errors import IngredientNotFoundError

from kill_driver import SMALL, KillDriver, final_exception, subprocess_env

FLAG = "PYPLANT_TEST_INTERRUPT"  # read through os.environ, so the reactors' code never changes


def chain(interrupt_in: str = "p3"):
    """p1 -> p2 -> p3 -> target; the reactor ``interrupt_in`` raises KeyboardInterrupt while
    the environment variable FLAG is set (after receiving its input, before sending)."""

    def maybe_interrupt(name):
        if os.environ.get(FLAG) == name:
            raise KeyboardInterrupt

    @ReactorFunc
    def p1(pipe):
        maybe_interrupt("p1")
        pipe.send("x1", 1)

    @ReactorFunc
    def p2(pipe):
        x = yield pipe.receive("x1")
        maybe_interrupt("p2")
        pipe.send("x2", x + 1)

    @ReactorFunc
    def p3(pipe):
        x = yield pipe.receive("x2")
        pipe.send("x3_early", x * 100)  # sent before the interrupt: must not become visible
        maybe_interrupt("p3")
        pipe.send("x3", x + 1)

    @ReactorFunc
    def target(pipe):
        x = yield pipe.receive("x3")
        maybe_interrupt("target")
        pipe.send("out", x * 10)

    return [p1, p2, p3, target]


def open_plant(plant_dir, reactors):
    # FLAG, the test's switch, is an environment variable read in the reactors: not an input.
    plant = Plant(str(plant_dir), track_env=False)
    plant.add_reactors(*reactors)
    started, finished = [], []
    plant.add_event_listener(Plant.EventType.reactor_started, lambda e, n, f: started.append(n))
    plant.add_event_listener(Plant.EventType.reactor_finished, lambda e, n: finished.append(n))
    return plant, started, finished


@pytest.mark.parametrize("where", ["p1", "p2", "p3", "target"])
def test_keyboard_interrupt_in_reactor_saves_finished_and_reraises(tmp_path, monkeypatch, where):
    """KeyboardInterrupt raised in a reactor propagates as KeyboardInterrupt; the reactors that
    finished before it are saved; a new plant starts only the interrupted reactor, those that
    never ran (downstream of it) and the target: for p3, only p3 and the target."""
    reactors = chain()
    plant, started, finished = open_plant(tmp_path / "plant", reactors)
    monkeypatch.setenv(FLAG, where)
    with pytest.raises(KeyboardInterrupt):
        plant.run_reactor("target")
    order = ["p1", "p2", "p3", "target"]
    assert finished == order[:order.index(where)]
    plant.shutdown()
    monkeypatch.delenv(FLAG)

    plant, started, finished = open_plant(tmp_path / "plant", reactors)
    plant.run_reactor("target")
    assert sorted(started) == sorted(order[order.index(where):])
    assert plant.fetch_ingredient("out") == 30
    assert plant.fetch_ingredient("x3_early") == 200
    plant.shutdown()


def test_interrupted_outputs_are_not_visible(tmp_path, monkeypatch):
    """What the interrupted reactor sent before the interrupt is not visible to a new plant."""
    reactors = chain()
    plant, _, _ = open_plant(tmp_path / "plant", reactors)
    monkeypatch.setenv(FLAG, "p3")
    with pytest.raises(KeyboardInterrupt):
        plant.run_reactor("target")
    plant.shutdown()
    plant, _, _ = open_plant(tmp_path / "plant", reactors)
    assert plant.fetch_ingredient("x2") == 2
    with pytest.raises(IngredientNotFoundError):
        plant.fetch_ingredient("x3_early")
    plant.shutdown()


def test_same_plant_object_usable_after_interrupt(tmp_path, monkeypatch):
    """The plant object that saw the KeyboardInterrupt (a notebook cell interrupted) runs
    again: only the interrupted reactor and the target start."""
    reactors = chain()
    plant, started, finished = open_plant(tmp_path / "plant", reactors)
    monkeypatch.setenv(FLAG, "p3")
    with pytest.raises(KeyboardInterrupt):
        plant.run_reactor("target")
    monkeypatch.delenv(FLAG)
    del started[:], finished[:]
    plant.run_reactor("target")
    assert sorted(started) == ["p3", "target"]
    assert plant.fetch_ingredient("out") == 30
    plant.shutdown()


@pytest.mark.parametrize("event", ["reactor_finished", "reactor_started"])
def test_interrupt_in_event_listener(tmp_path, event):
    """Ctrl-C landing in a listener: after 'reactor_finished' of p2, p2 is saved (the event
    fires after the commit); in 'reactor_started' of p2, p2 has not run, nor has p1 (producers
    start on demand: p2 starts before its producer p1). Either way the re-run starts only what
    had not finished, and the result is right."""
    reactors = chain()
    plant, _, finished = open_plant(tmp_path / "plant", reactors)

    def listener(event_type, name, *rest):
        if name == "p2":
            raise KeyboardInterrupt

    plant.add_event_listener(Plant.EventType[event], listener)
    with pytest.raises(KeyboardInterrupt):
        plant.run_reactor("target")
    plant.shutdown()
    plant, started, _ = open_plant(tmp_path / "plant", reactors)
    plant.run_reactor("target")
    expected = ["p3", "target"] if event == "reactor_finished" else ["p1", "p2", "p3", "target"]
    assert sorted(started) == expected
    assert plant.fetch_ingredient("out") == 30
    plant.shutdown()


def test_interrupt_while_hdf_array_is_filled(tmp_path, monkeypatch):
    """Interrupted half-way through filling an HDF array: the partial file is freed, nothing
    of it is visible, the re-run fills it again and starts only that reactor and the target."""

    @ReactorFunc
    def rows(pipe):
        pipe.send("n", 64)

    @ReactorFunc
    def fill(pipe):
        n = yield pipe.receive("n")
        h = pipe.allocate("grid", specs.HdfArraySpec, shape=(n, 32), dtype=np.float32)
        for r in range(n):
            if r == n // 2 and os.environ.get(FLAG) == "fill":
                raise KeyboardInterrupt
            h[r] = np.arange(32, dtype=np.float32) + r

    @ReactorFunc
    def total(pipe):
        grid = yield pipe.receive("grid")
        pipe.send("sum", float(np.asarray(grid[...]).sum(dtype=np.float64)))

    reactors = [rows, fill, total]
    plant_dir = tmp_path / "plant"
    plant, _, finished = open_plant(plant_dir, reactors)
    monkeypatch.setenv(FLAG, "fill")
    with pytest.raises(KeyboardInterrupt):
        plant.run_reactor("total")
    assert finished == ["rows"]
    assert glob.glob(str(plant_dir / "specs" / "*.hdf")) == []  # the partial array was freed
    plant.shutdown()
    monkeypatch.delenv(FLAG)
    plant, started, _ = open_plant(plant_dir, reactors)
    with pytest.raises(IngredientNotFoundError):
        plant.fetch_ingredient("grid")
    plant.run_reactor("total")
    assert sorted(started) == ["fill", "total"]
    expected = float((np.arange(32)[None, :] + np.arange(64)[:, None]).sum())
    assert plant.fetch_ingredient("sum") == expected
    with h5py.File(glob.glob(str(plant_dir / "specs" / "*.hdf"))[0], "r") as f:
        assert f["data"][63, 31] == 63 + 31
    plant.shutdown()


def test_keyboard_interrupt_in_subreactor(tmp_path, monkeypatch):
    """Raised inside a subreactor, the KeyboardInterrupt propagates the same way: the calling
    reactor is the interrupted one; the re-run starts only it and the target."""

    @SubreactorFunc
    def doubled(pipe, x):
        y = yield pipe.receive("x1")
        if os.environ.get(FLAG) == "sub":
            raise KeyboardInterrupt
        return 2 * (x + y)

    @ReactorFunc
    def p1(pipe):
        pipe.send("x1", 1)

    @ReactorFunc
    def p2(pipe):
        x = yield pipe.receive("x1")
        z = yield from doubled(pipe, x)
        pipe.send("x2", z)

    @ReactorFunc
    def target(pipe):
        x = yield pipe.receive("x2")
        pipe.send("out", x + 1)

    reactors = [p1, p2, target]
    plant, _, finished = open_plant(tmp_path / "plant", reactors)
    monkeypatch.setenv(FLAG, "sub")
    with pytest.raises(KeyboardInterrupt):
        plant.run_reactor("target")
    assert finished == ["p1"]
    plant.shutdown()
    monkeypatch.delenv(FLAG)
    plant, started, _ = open_plant(tmp_path / "plant", reactors)
    plant.run_reactor("target")
    assert sorted(started) == ["p2", "target"]
    assert plant.fetch_ingredient("out") == 5
    plant.shutdown()


# --- a real SIGINT -----------------------------------------------------------------------------

SIGINT_SCRIPT = '''
import json, os, sys, time
from pyplant import Plant, ReactorFunc

PLANT_DIR = sys.argv[1]
STARTED = []


@ReactorFunc
def load(pipe):
    pipe.send("data", list(range(10)))


@ReactorFunc
def scale(pipe):
    data = yield pipe.receive("data")
    pipe.send("scaled", [2 * x for x in data])


@ReactorFunc
def slow(pipe):
    scaled = yield pipe.receive("scaled")
    pipe.send("partial", len(scaled))
    if os.environ.get("SLOW_MARK"):
        with open(os.environ["SLOW_MARK"], "w") as f:
            f.write("sleeping")
        time.sleep(120)
    pipe.send("total", sum(scaled))


@ReactorFunc
def target(pipe):
    total = yield pipe.receive("total")
    pipe.send("out", total + 1)


plant = Plant(PLANT_DIR)
plant.add_event_listener(Plant.EventType.reactor_started, lambda e, n, f: STARTED.append(n))
try:
    plant.run_reactor(target)
except KeyboardInterrupt:
    print("STARTED " + json.dumps(STARTED), flush=True)
    print("INTERRUPTED", flush=True)
    raise
print("STARTED " + json.dumps(STARTED), flush=True)
print("OUT " + json.dumps(plant.fetch_ingredient("out")), flush=True)
plant.shutdown()
'''


def _started(stdout: str) -> list[str]:
    for line in stdout.splitlines():
        if line.startswith("STARTED "):
            return json.loads(line[len("STARTED "):])
    raise AssertionError(f"no STARTED line in:\n{stdout}")


def test_sigint_while_reactor_sleeps(tmp_path):
    """A real SIGINT while 'slow' sleeps: the process stops at once with KeyboardInterrupt;
    load and scale stay saved; the re-run (a new process) starts only slow and the target."""
    script = tmp_path / "sigint_workload.py"
    script.write_text(textwrap.dedent(SIGINT_SCRIPT))
    plant_dir, mark = tmp_path / "plant", tmp_path / "sleeping"
    env = subprocess_env()
    env["SLOW_MARK"] = str(mark)
    proc = subprocess.Popen([sys.executable, str(script), str(plant_dir)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=str(tmp_path))
    try:
        deadline = time.monotonic() + 60
        while not mark.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert mark.exists(), f"the reactor never slept: {proc.communicate(timeout=10)}"
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        stopped_after = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0
    assert "INTERRUPTED" in out
    assert final_exception(err) == "KeyboardInterrupt", err
    assert err.count("Traceback") == 1, err
    assert stopped_after < 10, f"took {stopped_after:.1f} s to stop"
    assert sorted(_started(out)) == ["load", "scale", "slow", "target"]

    env.pop("SLOW_MARK")
    rerun = subprocess.run([sys.executable, str(script), str(plant_dir)], capture_output=True, text=True,
                           env=env, cwd=str(tmp_path), timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert "Traceback" not in rerun.stderr
    assert sorted(_started(rerun.stdout)) == ["slow", "target"]
    assert f"OUT {sum(2 * x for x in range(10)) + 1}" in rerun.stdout


def test_sigint_at_random_moments(tmp_path):
    """SIGINT at random moments of the kill workload (large array writes, LMDB commits of a
    chain, an HDF fill): each interrupted process ends with KeyboardInterrupt and nothing else,
    leaves no temp blob behind, and the re-run is complete, right, and re-runs nothing that
    had finished. Reactors are pinned with ``version=`` so that only interrupts are tested
    here (test_kill.py covers the same workload with code hashing)."""
    driver = KillDriver(tmp_path, SMALL, seed=7, sig=signal.SIGINT, reset_every=(4, 10), pin_code=True)
    leftovers = []

    def no_temp_blobs(run, plant_dir):
        temps = glob.glob(str(Path(plant_dir) / "blobs" / "**" / "*.tmp-*"), recursive=True)
        if temps:
            leftovers.append((sorted(run.started), sorted(run.finished), temps))

    driver.after_signal = no_temp_blobs
    counters = driver.run(kills=15, max_cycles=50, progress_every=0)
    assert counters.kills >= 10, counters.line()
    assert (counters.corrupt, counters.stale, counters.lost) == (0, 0, 0), \
        counters.line() + f" (landed in {counters.phases})\n\n" + "\n\n".join(counters.details)
    assert leftovers == []


# --- an interrupt at every line of the commit path and of shutdown() -------------------------------

@pytest.mark.parametrize("mode, every", [("commit", 50), ("close", 8)])
def test_interrupt_at_sampled_lines_of_commit_and_close(tmp_path, mode, every):
    """KeyboardInterrupt delivered (by a sys.settrace hook) at sampled line events of the
    commit path (the scheduler's _finish and everything it calls, LMDB write lock included)
    and of Plant.shutdown(): each time the same process runs the plant again, another process
    opens it and commits, nothing hangs (watchdog), and every trace listed is complete.
    ``PYPLANT_THOROUGH=1 python -m tests.interrupt_probe DIR commit|close`` tries every line."""
    env = subprocess_env()
    env.pop("PYPLANT_THOROUGH", None)
    proc = subprocess.run([sys.executable, "-m", "tests.interrupt_probe", str(tmp_path / "plant"), mode,
                           "--every", str(every)], capture_output=True, text=True, env=env,
                          cwd=str(Path(__file__).resolve().parents[1]), timeout=900)
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert last.startswith("positions: ") and "hangs: 0, errors: 0" in last, last
    assert int(last.split()[1].rstrip(",")) >= 10, last
