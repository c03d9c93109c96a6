"""Threads: each thread's reactor is its own (subreactor calls are credited to the right
reactor), and one Plant shared by threads serializes their ``run_reactor`` calls."""
from __future__ import annotations

import sys
import threading
import time

from pyplant import Plant, ReactorFunc, SubreactorFunc


def test_subreactor_calls_are_credited_to_the_reactor_of_their_own_thread(tmp_path):
    """Two threads, two plants, both inside a reactor at once: each subreactor call lands in
    the trace of the reactor that made it (a process-global 'active reactor' mixed them up)."""
    barrier = threading.Barrier(2, timeout=30)

    @SubreactorFunc
    def sub_a(pipe):
        return 1

    @SubreactorFunc
    def sub_b(pipe):
        return 1000

    def make(sub, name):
        def body(pipe):
            barrier.wait()          # both reactors are running now
            value = yield from sub(pipe)
            barrier.wait()
            pipe.send("out", value)
        body.__name__ = body.__qualname__ = name
        return ReactorFunc(body)

    reactor_a, reactor_b = make(sub_a, "reactor_a"), make(sub_b, "reactor_b")
    errors = []

    def work(directory, reactor):
        try:
            with Plant(str(directory)) as plant:
                plant.add_reactors(reactor)
                plant.run_reactor(reactor)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(tmp_path / "a", reactor_a)),
               threading.Thread(target=work, args=(tmp_path / "b", reactor_b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    with Plant(str(tmp_path / "a")) as a, Plant(str(tmp_path / "b")) as b:
        subs_a = {k for k in a.warehouse.metadata.traces("reactor_a")[0].code if k.startswith("sub:")}
        subs_b = {k for k in b.warehouse.metadata.traces("reactor_b")[0].code if k.startswith("sub:")}
    assert [s.rsplit(".", 1)[-1] for s in subs_a] == ["sub_a"]
    assert [s.rsplit(".", 1)[-1] for s in subs_b] == ["sub_b"]


def test_one_plant_shared_by_three_threads(tmp_path):
    """Concurrent run_reactor calls on one Plant are serialized: no raw KeyError, and every
    thread gets the right result."""
    calls = []

    @ReactorFunc
    def slow(pipe, config):
        time.sleep(0.005)
        calls.append(config.k)
        for i in range(100):  # many versions in the plant's value cache
            pipe.send(f"extra{i}", [config.k, i])
        pipe.send("x", config.k * 10)

    @ReactorFunc
    def target(pipe):
        pipe.send("y", (yield pipe.receive("x")) + 1)

    plant = Plant(str(tmp_path / "p"))
    plant.add_reactors(slow, target)
    results, errors = {}, []
    lock = threading.Lock()

    def work(k):
        try:
            for _ in range(3):
                with lock:  # set_config then run, as one unit per thread
                    plant.set_config({"k": k})
                    plant.run_reactor(target)
                    results.setdefault(k, []).append(plant.fetch_ingredient("y"))
        except BaseException as exc:
            errors.append(exc)

    def run_only():
        try:
            for _ in range(15):
                plant.run_reactor(target)  # races the others: must not corrupt the session
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in (1, 2)]
    threads += [threading.Thread(target=run_only) for _ in range(3)]
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show up
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        sys.setswitchinterval(switch)
    plant.shutdown()
    assert not errors, errors
    assert results == {1: [11, 11, 11], 2: [21, 21, 21]}
