"""Interrupt probe: a KeyboardInterrupt delivered at every line of the commit path or of
``shutdown()``, then checks that nothing hangs, nothing is lost and nothing is half-committed.

A ``sys.settrace`` hook counts line events in the traced code (``metadata.py``, ``leases.py``,
and the scheduler's ``_finish`` and the plant's ``run_reactor``/``_after_run``/``shutdown``)
and raises ``KeyboardInterrupt`` at the N-th one, for each N (or a sample). After each
interrupt it checks, under a watchdog that ends the process on a hang:

* the same process can run the plant again, with the right result (same plant object for
  ``commit``, a new ``Plant`` on the directory while the interrupted one is alive for
  ``close``);
* another process can open the plant and commit a reactor (with a timeout);
* every trace listed in the metadata is complete: its record decodes and its versions load.

Usage::

    python -m tests.interrupt_probe PLANT_DIR commit|close [--every K]

runs each position in a new process (a clean state), prints a line per problem, and last
``positions: P, interrupted: I, hangs: H, errors: E``; exits non-zero unless every position
was interrupted and H = E = 0. The default tries every 60th position; ``PYPLANT_THOROUGH=1``
(or ``--every 1``) tries every one.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time

import numpy as np

from pyplant import Plant, ReactorFunc

HANG_SECONDS = 60
# The commit path: these functions of pyplant, and every line of any code they call (the
# standard library's contextlib and json included): an interrupt lands anywhere in them.
ROOTS = {"commit": {("scheduler.py", "_finish"), ("plant.py", "_after_run")},
         "close": {("plant.py", "shutdown")}}


@ReactorFunc(version="1")
def source(pipe, config):
    pipe.send("numbers", np.arange(config.n))


@ReactorFunc(version="1")
def middle(pipe):
    x = yield pipe.receive("numbers")
    pipe.send("total", int(x.sum()))


@ReactorFunc(version="1")
def target(pipe):
    t = yield pipe.receive("total")
    pipe.send("report", f"total={t}")


REACTORS = [target, middle, source]


def expected(n: int) -> str:
    return f"total={n * (n - 1) // 2}"


class Interrupter:
    """Raises KeyboardInterrupt at the ``at``-th line event inside the roots (0: count only)."""

    def __init__(self, at: int, roots: set[tuple[str, str]]):
        self.at = at
        self.roots = roots
        self.count = 0
        self.depth = 0

    def _is_root(self, frame) -> bool:
        code = frame.f_code
        filename = code.co_filename.replace(os.sep, "/")
        return "/pyplant/" in filename and (os.path.basename(filename), code.co_name) in self.roots

    def __call__(self, frame, event, arg):
        if event != "call":
            return None
        if self._is_root(frame):
            self.depth += 1
            return self._root
        return self._local if self.depth else None

    def _root(self, frame, event, arg):
        if event == "return":
            self.depth -= 1
            return None
        return self._local(frame, event, arg)

    def _local(self, frame, event, arg):
        if event == "line":
            self.count += 1
            if self.count == self.at:
                raise KeyboardInterrupt(f"probe at line event {self.at}")
        return self._local

    def run(self, func):
        """Run ``func`` traced; True when the interrupt was delivered."""
        sys.settrace(self)
        try:
            func()
        except KeyboardInterrupt:
            return True
        finally:
            sys.settrace(None)
        return False


def open_plant(plant_dir: str, n: int) -> Plant:
    plant = Plant(plant_dir)
    plant.add_reactors(*REACTORS)
    plant.set_config({"n": n})
    return plant


OTHER_PROCESS = '''
import sys
import numpy as np
from pyplant import Plant, ReactorFunc

@ReactorFunc(version="1")
def other_writer(pipe, config):
    pipe.send("other_" + str(config.tag), np.arange(5))

plant = Plant(sys.argv[1])
plant.add_reactors(other_writer)
plant.set_config({"tag": sys.argv[2]})
plant.run_reactor(other_writer)
assert plant.fetch_ingredient("other_" + sys.argv[2]).tolist() == [0, 1, 2, 3, 4]
plant.shutdown()
print("OTHER OK")
'''


def another_process_writes(plant_dir: str, tag: str) -> str | None:
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in [env.get("PYTHONPATH")] if p])
    try:
        out = subprocess.run([sys.executable, "-c", OTHER_PROCESS, plant_dir, tag],
                             capture_output=True, text=True, timeout=HANG_SECONDS, env=env)
    except subprocess.TimeoutExpired:
        return "another process hung opening or writing the plant"
    if out.returncode != 0 or "OTHER OK" not in out.stdout:
        return f"another process failed: {out.stderr[-2000:]}"
    return None


def complete_traces(plant: Plant) -> str | None:
    """Every trace listed for a reactor decodes and its versions load: nothing half-committed."""
    meta = plant.warehouse.metadata
    for reactor, rec in meta.reactor_records().items():
        for tid in rec.traces:
            trace = meta.trace(reactor, tid)
            if trace is None:
                return f"reactor {reactor} lists trace {tid} that is missing"
            for version in trace.outputs.values():
                plant.warehouse.load(version)
    return None


def with_watchdog(what: str, func):
    timer = threading.Timer(HANG_SECONDS, lambda: (print(f"HANG: {what}", flush=True), os._exit(3)))
    timer.start()
    try:
        return func()
    finally:
        timer.cancel()


def probe_commit(plant_dir: str, at: int) -> tuple[bool, str | None]:
    n = 1000 + at
    plant = open_plant(plant_dir, n)
    interrupted = Interrupter(at, ROOTS["commit"]).run(lambda: plant.run_reactor("target"))

    def again():
        plant.run_reactor("target")
        return plant.fetch_ingredient("report")

    report = with_watchdog(f"re-run after an interrupt at {at}", again)
    problem = None if report == expected(n) else f"re-run gave {report!r}, not {expected(n)!r}"
    problem = problem or with_watchdog("checking traces", lambda: complete_traces(plant))
    problem = problem or another_process_writes(plant_dir, f"c{at}")
    with_watchdog("shutdown", plant.shutdown)
    return interrupted, problem


def probe_close(plant_dir: str, at: int) -> tuple[bool, str | None]:
    n = 5000 + at
    plant = open_plant(plant_dir, n)
    plant.run_reactor("target")
    interrupted = Interrupter(at, ROOTS["close"]).run(plant.shutdown)
    old = plant  # alive while a new plant opens the directory

    def reopen():
        new = open_plant(plant_dir, n)
        new.run_reactor("target")
        report = new.fetch_ingredient("report")
        problem = complete_traces(new)
        new.shutdown()
        return report, problem

    report, problem = with_watchdog(f"reopening after an interrupt at {at}", reopen)
    problem = problem or (None if report == expected(n) else f"reopened plant gave {report!r}")
    problem = problem or another_process_writes(plant_dir, f"s{at}")
    with_watchdog("shutdown again", old.shutdown)
    third = with_watchdog("a third plant", lambda: open_plant(plant_dir, n))
    problem = problem or (None if with_watchdog("third run", lambda: (third.run_reactor("target"),
                                                                     third.fetch_ingredient("report"))[1])
                          == expected(n) else "third plant gave a wrong result")
    third.shutdown()
    del old
    return interrupted, problem


def count_events(plant_dir: str, mode: str) -> int:
    counter = Interrupter(0, ROOTS[mode])
    plant = open_plant(plant_dir, 10_000_000 + os.getpid() % 1000)
    if mode == "commit":
        counter.run(lambda: plant.run_reactor("target"))
        plant.shutdown()
    else:
        plant.run_reactor("target")
        counter.run(plant.shutdown)
    return counter.count


def positions(total: int, every: int) -> list[int]:
    chosen = list(range(1, total + 1, every))
    if total not in chosen:
        chosen.append(total)
    return chosen


def _child(plant_dir: str, mode: str, arg: str) -> subprocess.CompletedProcess:
    """Each position runs in a new process, so that it starts from a clean state."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in [env.get("PYTHONPATH")] if p])
    return subprocess.run([sys.executable, "-m", "tests.interrupt_probe", plant_dir, mode, arg],
                          capture_output=True, text=True, env=env, cwd=root,
                          timeout=4 * HANG_SECONDS)


def run_position(plant_dir: str, mode: str, at: int) -> int:
    """In the child: one interrupt; prints what went wrong; exit code 0, 1 (problem), 3 (hang)."""
    probe = probe_commit if mode == "commit" else probe_close
    hit, problem = probe(plant_dir, at)
    print(f"RESULT {int(hit)} {problem or ''}", flush=True)
    return 1 if problem else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("plant_dir")
    parser.add_argument("mode", choices=["commit", "close"])
    parser.add_argument("how", nargs="?", default="", help="'count' or 'at=N' (internal)")
    parser.add_argument("--every", type=int, default=None)
    args = parser.parse_args(argv)
    if args.how == "count":
        print(f"COUNT {count_events(args.plant_dir, args.mode)}", flush=True)
        return 0
    if args.how.startswith("at="):
        return run_position(args.plant_dir, args.mode, int(args.how[3:]))
    every = args.every or (1 if os.environ.get("PYPLANT_THOROUGH") == "1" else 60)
    counted = _child(args.plant_dir, args.mode, "count")
    assert counted.returncode == 0, counted.stderr
    total = int(counted.stdout.split()[-1])
    tried = interrupted = hangs = errors = 0
    began = time.monotonic()
    for at in positions(total, every):
        tried += 1
        try:
            out = _child(args.plant_dir, args.mode, f"at={at}")
        except subprocess.TimeoutExpired:
            hangs += 1
            print(f"position {at}: HANG (timed out)", flush=True)
            continue
        result = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
        if out.returncode == 3 or "HANG" in out.stdout:
            hangs += 1
            print(f"position {at}: {out.stdout.strip()}", flush=True)
        elif out.returncode != 0 or not result:
            errors += 1
            print(f"position {at}: {out.stdout.strip()} {out.stderr[-3000:]}", flush=True)
        else:
            interrupted += result[0].split()[1] == "1"
    print(f"{args.mode}: {total} line events, every {every}, {time.monotonic() - began:.1f} s", flush=True)
    print(f"positions: {tried}, interrupted: {interrupted}, hangs: {hangs}, errors: {errors}", flush=True)
    return 1 if hangs or errors or interrupted < tried else 0


if __name__ == "__main__":
    sys.exit(main())
