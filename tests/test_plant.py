"""Running, scheduling, events and execution history of a Plant (in one process)."""
from __future__ import annotations

import re

import importlib.util
import time

import pytest

from pyplant import Plant, ReactorFunc, SubreactorFunc
from pyplant.errors import UnknownReactorError

from conftest import Events


def chain_abc():
    """a -> b -> c: a sends 'a'=1, b sends 'b'=a+1, c sends 'c'=b*10."""

    @ReactorFunc
    def a(pipe):
        pipe.send("a", 1)
        yield

    @ReactorFunc
    def b(pipe):
        x = yield pipe.receive("a")
        pipe.send("b", x + 1)

    @ReactorFunc
    def c(pipe):
        x = yield pipe.receive("b")
        pipe.send("c", x * 10)

    return a, b, c


# --- running ---------------------------------------------------------------------------------

def test_cold_run_computes_and_target_starts_first(open_plant):
    """On a cold run the target starts first and producers start on demand, in receive order."""
    a, b, c = chain_abc()
    plant, events = open_plant(reactors=[c, b, a])
    plant.run_reactor(c)
    assert plant.fetch_ingredient("c") == 20
    assert events.started == ["c", "b", "a"]
    assert events.finished == ["a", "b", "c"]


def test_discovery_order_follows_registration_when_producers_unknown(open_plant):
    """Unknown producers are found by starting not-yet-run reactors; each starts at most once."""
    a, b, c = chain_abc()
    plant, events = open_plant(reactors=[a, b, c])
    plant.run_reactor("c")
    assert plant.fetch_ingredient("c") == 20
    assert events.started[0] == "c"
    assert sorted(events.started) == ["a", "b", "c"]


def test_warm_run_only_target_runs(open_plant):
    """A second plant on the same directory runs only the target; producers are verified."""
    a, b, c = chain_abc()
    plant, _ = open_plant(reactors=[a, b, c])
    plant.run_reactor(c)
    plant.shutdown()
    plant2, events = open_plant(reactors=[a, b, c])
    plant2.run_reactor(c)
    assert events.started == ["c"]
    assert plant2.fetch_ingredient("c") == 20
    history = plant2.get_execution_history()
    assert history["c"].wasRun is True
    assert history["a"].wasRun is False and history["b"].wasRun is False


def test_target_always_runs_even_when_up_to_date(open_plant):
    """run_reactor executes the target body again even when nothing changed (same process)."""
    a, b, c = chain_abc()
    plant, events = open_plant(reactors=[a, b, c])
    plant.run_reactor(c)
    plant.set_config({})  # a new session
    plant.run_reactor(c)
    assert events.started == ["c", "b", "a", "c"]  # producers start on demand, found in source


def test_run_reactor_by_name_and_by_function(open_plant):
    """run_reactor accepts a reactor's name as well as the function."""
    a, b, c = chain_abc()
    plant, events = open_plant(reactors=[a, b, c])
    plant.run_reactor("b")
    assert plant.fetch_ingredient("b") == 2
    assert events.started == ["b", "a"]


def test_run_reactor_without_add_registers_every_defined_reactor(open_plant):
    """With no reactors added, run_reactor registers every @ReactorFunc defined so far."""
    a, b, c = chain_abc()
    plant, events = open_plant()
    plant.run_reactor(c)
    assert plant.fetch_ingredient("c") == 20
    assert {f.__name__ for f in plant.get_reactors()} == {"a", "b", "c"}


def test_get_reactors_can_be_passed_back_to_add_reactors(open_plant, tmp_path):
    """get_reactors() returns the functions, usable with add_reactors on another plant."""
    a, b, c = chain_abc()
    plant, _ = open_plant(reactors=[a, b, c])
    funcs = plant.get_reactors()
    assert set(funcs) == {a, b, c}
    other, events = open_plant(reactors=funcs, directory=tmp_path / "other")
    other.run_reactor("c")
    assert other.fetch_ingredient("c") == 20
    assert sorted(events.started) == ["a", "b", "c"]


def test_unknown_reactor_name_raises(open_plant):
    """run_reactor with a name that was never added raises UnknownReactorError."""
    a, b, c = chain_abc()
    plant, _ = open_plant(reactors=[a, b, c])
    with pytest.raises(UnknownReactorError, match="nope"):
        plant.run_reactor("nope")


def test_context_manager_shuts_down_and_results_persist(plant_dir, hasher):
    """Plant is a context manager; what ran inside is cached for the next plant."""
    a, b, c = chain_abc()
    with Plant(str(plant_dir), functionHash=hasher) as plant:
        assert isinstance(plant, Plant)
        plant.add_reactors(a, b, c)
        plant.run_reactor(c)
    with Plant(str(plant_dir), functionHash=hasher) as plant:
        events = Events(plant)
        plant.add_reactors(a, b, c)
        plant.run_reactor(c)
        assert events.started == ["c"]
        assert plant.fetch_ingredient("c") == 20


def test_shutdown_is_idempotent_and_warehouse_close(plant_dir):
    """shutdown() may be called twice, and after warehouse.close() a new plant opens the dir."""
    a, b, c = chain_abc()
    plant = Plant(str(plant_dir))
    plant.add_reactors(a, b, c)
    plant.run_reactor(c)
    plant.warehouse.close()
    plant.shutdown()
    plant.shutdown()
    plant2 = Plant(str(plant_dir))
    try:
        assert plant2.fetch_ingredient("b") == 2
    finally:
        plant2.shutdown()


def test_fetch_ingredient_from_new_plant_reads_latest_stored_version(open_plant):
    """fetch_ingredient works without running anything, from the stored versions."""
    a, b, c = chain_abc()
    plant, _ = open_plant(reactors=[a, b, c])
    plant.run_reactor(c)
    plant.shutdown()
    plant2, events = open_plant(reactors=[a, b, c])
    assert plant2.fetch_ingredient("a") == 1
    assert plant2.fetch_ingredient("c") == 20
    assert events.started == []


def test_plain_function_reactors_with_and_without_config(open_plant):
    """Reactors may be plain functions, taking (pipe) or (pipe, config)."""

    @ReactorFunc
    def produce(pipe, config):
        pipe.send("base", config.base)

    @ReactorFunc
    def consume(pipe):
        base = yield pipe.receive("base")
        pipe.send("out", base * 3)

    @ReactorFunc
    def plain(pipe):
        pipe.send("plain", "no-yield")

    plant, _ = open_plant(config={"base": 7}, reactors=[produce, consume, plain])
    plant.run_reactor(consume)
    plant.run_reactor(plain)
    assert plant.fetch_ingredient("out") == 21
    assert plant.fetch_ingredient("plain") == "no-yield"


def test_bare_yield_and_receive_own_product(open_plant):
    """A bare yield is answered with None, and a reactor can receive what it sent earlier."""
    seen = {}

    @ReactorFunc
    def selfish(pipe):
        seen["bare"] = yield
        pipe.send("mine", [1, 2, 3])
        seen["own"] = yield pipe.receive("mine")
        pipe.send("total", sum(seen["own"]))

    plant, _ = open_plant(reactors=[selfish])
    plant.run_reactor(selfish)
    assert seen == {"bare": None, "own": [1, 2, 3]}
    assert plant.fetch_ingredient("total") == 6


def test_reactor_receives_several_ingredients_from_several_producers(open_plant):
    """A consumer receiving from two producers gets both values; each producer runs once."""

    @ReactorFunc
    def left(pipe):
        pipe.send("l", "L")

    @ReactorFunc
    def right(pipe):
        pipe.send("r", "R")
        pipe.send("r2", "R2")

    @ReactorFunc
    def join(pipe):
        l_ = yield pipe.receive("l")
        r = yield pipe.receive("r")
        r2 = yield pipe.receive("r2")
        pipe.send("joined", l_ + r + r2)

    plant, events = open_plant(reactors=[join, right, left])
    plant.run_reactor(join)
    assert plant.fetch_ingredient("joined") == "LRR2"
    assert sorted(events.started) == ["join", "left", "right"]


# --- subreactors -----------------------------------------------------------------------------

def test_subreactor_returns_values_sends_and_receives_for_caller(open_plant):
    """Subreactors (generator or plain) return values and send/receive through the caller's pipe."""

    @SubreactorFunc
    def load(pipe, name):
        value = yield pipe.receive(name)
        return value * 2

    @SubreactorFunc
    def publish(pipe, name, value=None):
        pipe.send(name, value)
        return "sent"

    @ReactorFunc
    def source(pipe):
        pipe.send("raw", 5)

    @ReactorFunc
    def user(pipe):
        doubled = yield from load(pipe, "raw")
        status = yield from publish(pipe, "doubled", value=doubled)
        pipe.send("status", status)

    @ReactorFunc
    def final(pipe):
        d = yield pipe.receive("doubled")
        pipe.send("final", d + 1)

    plant, events = open_plant(reactors=[final, user, source])
    plant.run_reactor(final)
    assert plant.fetch_ingredient("doubled") == 10
    assert plant.fetch_ingredient("status") == "sent"
    assert plant.fetch_ingredient("final") == 11
    assert events.started == ["final", "user", "source"]
    assert events.of("subreactor_started") == ["load", "publish"]


def test_subreactor_started_fires_on_every_call_nested_too(open_plant):
    """subreactor_started fires for each call, nested subreactors included, with (type, name)."""

    @SubreactorFunc
    def inner(pipe, x):
        yield
        return x + 1

    @SubreactorFunc
    def outer(pipe, x):
        y = yield from inner(pipe, x)
        return y * 2

    @ReactorFunc
    def caller(pipe):
        first = yield from outer(pipe, 1)
        second = yield from outer(pipe, first)
        third = yield from inner(pipe, second)
        pipe.send("v", third)

    plant, events = open_plant(reactors=[caller])
    plant.run_reactor(caller)
    assert plant.fetch_ingredient("v") == 11
    assert events.of("subreactor_started") == ["outer", "inner", "outer", "inner", "inner"]
    sub_events = [e for e in events.raw if e[0] is Plant.EventType.subreactor_started]
    assert all(len(e) == 2 for e in sub_events)


def test_subreactor_code_change_reruns_caller(open_plant, hasher):
    """Editing a (nested) subreactor re-runs the reactor that called it, not the others."""

    @SubreactorFunc
    def helper_inner(pipe):
        return 1
        yield

    @SubreactorFunc
    def helper(pipe):
        v = yield from helper_inner(pipe)
        return v

    @ReactorFunc
    def uses_helper(pipe):
        v = yield from helper(pipe)
        pipe.send("h", v)

    @ReactorFunc
    def bystander(pipe):
        pipe.send("other", 0)

    @ReactorFunc
    def top(pipe):
        h = yield pipe.receive("h")
        o = yield pipe.receive("other")
        pipe.send("top", h + o)

    reactors = [top, uses_helper, bystander]
    plant, events = open_plant(reactors=reactors)
    plant.run_reactor(top)
    hasher.bump("helper_inner")
    plant2, events2 = open_plant(reactors=reactors)
    plant2.run_reactor(top)
    assert events2.started == ["top", "uses_helper"]
    hasher.bump("helper")
    plant3, events3 = open_plant(reactors=reactors)
    plant3.run_reactor(top)
    assert events3.started == ["top", "uses_helper"]
    plant4, events4 = open_plant(reactors=reactors)
    plant4.run_reactor(top)
    assert events4.started == ["top"]


# --- events ----------------------------------------------------------------------------------

def test_event_callback_arguments(open_plant):
    """reactor_started gets (type, name, func); finished and step get (type, name)."""
    a, b, c = chain_abc()
    plant, events = open_plant(reactors=[a, b, c])
    plant.run_reactor(b)
    started = [e for e in events.raw if e[0] is Plant.EventType.reactor_started]
    assert started == [(Plant.EventType.reactor_started, "b", b), (Plant.EventType.reactor_started, "a", a)]
    for kind in (Plant.EventType.reactor_finished, Plant.EventType.reactor_step):
        fired = [e for e in events.raw if e[0] is kind]
        assert fired and all(len(e) == 2 and isinstance(e[1], str) for e in fired)


def test_events_are_synchronous_and_in_real_order(open_plant):
    """Events fire synchronously, interleaved with reactor bodies in the real order."""
    log = []

    @ReactorFunc
    def up(pipe):
        log.append("body:up")
        pipe.send("u", 1)
        yield

    @ReactorFunc
    def down(pipe):
        log.append("body:down:before")
        x = yield pipe.receive("u")
        log.append("body:down:after")
        pipe.send("d", x)

    plant, _ = open_plant(reactors=[down, up])
    for event_type in (Plant.EventType.reactor_started, Plant.EventType.reactor_finished):
        plant.add_event_listener(event_type, lambda et, name, *rest: log.append(f"{et.name}:{name}"))
    plant.run_reactor(down)
    assert log == ["reactor_started:down", "body:down:before", "reactor_started:up", "body:up",
                   "reactor_finished:up", "body:down:after", "reactor_finished:down"]


def test_reactor_step_fires_for_each_yield(open_plant):
    """reactor_step fires each time a reactor yields (receives or bare yields)."""

    @ReactorFunc
    def stepper(pipe):
        yield
        yield
        pipe.send("s", 1)
        yield pipe.receive("s")

    plant, events = open_plant(reactors=[stepper])
    plant.run_reactor(stepper)
    assert events.of("reactor_step").count("stepper") == 3


def test_remove_event_listener(open_plant):
    """A removed listener is not called any more; the others still are."""
    a, b, c = chain_abc()
    plant, events = open_plant(reactors=[a, b, c])
    removed = []
    cb = lambda et, name, *rest: removed.append(name)  # noqa: E731
    plant.add_event_listener(Plant.EventType.reactor_started, cb)
    plant.add_event_listener(Plant.EventType.reactor_finished, cb)
    plant.remove_event_listener(cb)
    plant.run_reactor(c)
    assert removed == []
    assert events.started == ["c", "b", "a"]


def test_event_types_exist():
    """Plant.EventType has the four documented members."""
    names = {e.name for e in Plant.EventType}
    assert {"reactor_started", "subreactor_started", "reactor_finished", "reactor_step"} <= names


# --- history ---------------------------------------------------------------------------------

def test_execution_history_records(open_plant):
    """get_execution_history has one record per reactor with times, wasRun and reason."""

    @ReactorFunc
    def slow(pipe):
        time.sleep(0.05)
        pipe.send("s", 1)

    @ReactorFunc
    def fast(pipe):
        x = yield pipe.receive("s")
        pipe.send("f", x)

    before = time.time()
    plant, _ = open_plant(reactors=[fast, slow])
    plant.run_reactor(fast)
    after = time.time()
    history = plant.get_execution_history()
    assert set(history) == {"slow", "fast"}
    rec = history["slow"]
    assert rec.reactorName == "slow"
    assert rec.wasRun is True
    assert rec.reason == "no trace yet"
    assert history["fast"].reason == "target of run_reactor"
    assert before <= rec.startTime <= rec.finishTime <= after
    assert 0.04 <= rec.totalRuntime <= after - before
    # the time 'fast' spent waiting for 'slow' is not its own runtime
    assert history["fast"].totalRuntime < 0.04


def test_execution_history_marks_cached_reactors(open_plant):
    """A reactor verified up to date appears in the history with wasRun False."""
    a, b, c = chain_abc()
    plant, _ = open_plant(reactors=[a, b, c])
    plant.run_reactor(c)
    plant.shutdown()
    plant2, _ = open_plant(reactors=[a, b, c])
    plant2.run_reactor(c)
    history = plant2.get_execution_history()
    assert {n: r.wasRun for n, r in history.items()} == {"a": False, "b": False, "c": True}
    assert history["a"].totalRuntime == 0


def test_print_execution_history(open_plant, hasher):
    """print_execution_history prints a header, one row per reactor (name, ran or cached,
    seconds, why it ran) and a summary line through printFn."""
    a, b, c = chain_abc()
    plant, _ = open_plant(reactors=[a, b, c])
    plant.run_reactor(c)
    plant.shutdown()
    hasher.bump("b")
    plant, _ = open_plant(reactors=[a, b, c])
    plant.run_reactor(c)
    lines = []
    plant.print_execution_history(lines.append)
    text = "\n".join(lines)
    assert lines[0].split() == ["reactor", "status", "seconds", "reason"], text
    rows = {line.split()[0]: line for line in lines[1:-1]}
    assert set(rows) == {"a", "b", "c"}, text
    assert rows["a"].split()[1] == "cached" and rows["a"].rstrip().endswith("0.000"), text
    assert rows["b"].split()[1] == "ran" and rows["b"].endswith("code changed: reactor 'b'"), text
    assert rows["c"].split()[1] == "ran" and rows["c"].endswith("target of run_reactor"), text
    assert re.match(r"^2 ran, 1 cached, \d+\.\d{3} s in reactors \(\d\d:\d\d:\d\d\)$", lines[-1]), text


def test_print_execution_history_default_prints(open_plant, capsys):
    """print_execution_history prints to stdout by default."""
    a, b, c = chain_abc()
    plant, _ = open_plant(reactors=[a, b, c])
    plant.run_reactor(b)
    plant.print_execution_history()
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in out[1:3]] == [["b", "ran"], ["a", "ran"]], out
    assert out[-1].startswith("2 ran, 0 cached"), out


# --- scheduling ------------------------------------------------------------------------------

def test_code_change_reruns_reactor_and_consumers_whose_input_changed(open_plant, hasher):
    """A reactor re-runs when its code hash changes; consumers re-run when its output changed."""
    state = {"a": 1}

    @ReactorFunc
    def a(pipe):
        pipe.send("a", state["a"])

    @ReactorFunc
    def b(pipe):
        x = yield pipe.receive("a")
        pipe.send("b", x + 1)

    @ReactorFunc
    def c(pipe):
        x = yield pipe.receive("b")
        pipe.send("c", x * 10)

    plant, _ = open_plant(reactors=[a, b, c])
    plant.run_reactor(c)
    state["a"] = 5
    hasher.bump("a")
    plant2, events = open_plant(reactors=[a, b, c])
    plant2.run_reactor(c)
    assert events.started == ["c", "a", "b"]
    assert plant2.fetch_ingredient("c") == 60
    assert plant2.get_execution_history()["a"].reason == "code changed: reactor 'a'"
    assert plant2.get_execution_history()["b"].reason == "input 'a' changed"


def test_early_cutoff_on_identical_output(open_plant, hasher):
    """An upstream reactor re-run by a code change that sends identical bytes stops the wave."""
    a, b, c = chain_abc()

    @ReactorFunc
    def d(pipe):
        x = yield pipe.receive("c")
        pipe.send("d", x)

    plant, _ = open_plant(reactors=[a, b, c, d])
    plant.run_reactor(d)
    hasher.bump("a")
    plant2, events = open_plant(reactors=[a, b, c, d])
    plant2.run_reactor(d)
    assert events.started == ["d", "a"]
    assert plant2.fetch_ingredient("d") == 20


def test_unchanged_producers_are_not_started(open_plant, hasher):
    """Only the modified reactor and the target run; verified producers never start."""
    a, b, c = chain_abc()
    plant, _ = open_plant(reactors=[a, b, c])
    plant.run_reactor(c)
    hasher.bump("b")
    plant2, events = open_plant(reactors=[a, b, c])
    plant2.run_reactor(c)
    assert events.started == ["c", "b"]


def test_unrelated_reactor_never_started_when_sources_name_the_producer(open_plant):
    """A reactor whose source does not send a needed name is never started, even on a first
    run with no recorded producers (its sends are all literals)."""

    @ReactorFunc
    def unrelated(pipe):
        pipe.send("z", 0)

    @ReactorFunc
    def producer(pipe):
        pipe.send("p", 3)

    @ReactorFunc
    def target(pipe):
        p = yield pipe.receive("p")
        pipe.send("t", p)

    reactors = [target, unrelated, producer]
    plant, events = open_plant(reactors=reactors)
    plant.run_reactor(target)
    assert events.started == ["target", "producer"]
    plant.shutdown()
    plant2, events2 = open_plant(reactors=reactors)
    plant2.run_reactor(target)
    assert events2.started == ["target"]


def test_added_reactor_with_same_name_replaces_previous(open_plant, hasher):
    """add_reactors with a new function of an existing name replaces it; the new code runs."""
    def make(value):
        @ReactorFunc
        def src(pipe):
            pipe.send("v", value)
        return src

    @ReactorFunc
    def sink(pipe):
        v = yield pipe.receive("v")
        pipe.send("out", v)

    plant, _ = open_plant(reactors=[make(1), sink])
    plant.run_reactor(sink)
    assert plant.fetch_ingredient("out") == 1
    hasher.overrides["src"] = "v2"
    plant.add_reactors(make(2))
    plant.run_reactor(sink)
    assert plant.fetch_ingredient("out") == 2


def test_same_source_from_another_module_object_does_not_rerun(tmp_path, open_plant):
    """Reactors loaded from the same file as two different modules are the same code: cached."""
    source = tmp_path / "pipeline_src.py"
    source.write_text(
        "from pyplant import ReactorFunc\n\n"
        "@ReactorFunc\n"
        "def prod(pipe):\n"
        "    pipe.send('x', 41)\n\n"
        "@ReactorFunc\n"
        "def cons(pipe):\n"
        "    x = yield pipe.receive('x')\n"
        "    pipe.send('y', x + 1)\n"
    )

    def load(module_name):
        spec = importlib.util.spec_from_file_location(module_name, source)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    first = load("pipeline_first")
    plant, _ = open_plant(reactors=[first.prod, first.cons])
    plant.run_reactor("cons")
    plant.shutdown()
    Plant._clear_global_state()
    second = load("pipeline_second")
    assert second.prod is not first.prod
    plant2, events = open_plant(reactors=[second.prod, second.cons])
    plant2.run_reactor("cons")
    assert events.started == ["cons"]
    assert plant2.fetch_ingredient("y") == 42


def test_run_reactor_twice_runs_target_again_not_its_producers(open_plant):
    """Running the same target twice on one plant runs the target again, producers stay cached."""
    a, b, c = chain_abc()
    plant, events = open_plant(reactors=[a, b, c])
    plant.run_reactor(c)
    plant.run_reactor(c)
    assert events.started == ["c", "b", "a", "c"]
    assert plant.fetch_ingredient("c") == 20


def test_two_targets_in_one_session_share_producers(open_plant):
    """A second run_reactor in the same session reuses producers settled by the first."""
    a, b, c = chain_abc()

    @ReactorFunc
    def c2(pipe):
        x = yield pipe.receive("b")
        pipe.send("c2", -x)

    plant, events = open_plant(reactors=[a, b, c, c2])
    plant.run_reactor(c)
    plant.run_reactor(c2)
    assert events.started == ["c", "b", "a", "c2"]
    assert plant.fetch_ingredient("c2") == -2


# --- scale -----------------------------------------------------------------------------------

def test_chain_of_2000_reactors_cold_then_warm(tmp_path, open_plant):
    """A generated chain of 2,000 reactors runs cold, then warm with only the target executed."""
    n = 2000
    lines = ["from pyplant import ReactorFunc\n",
             "@ReactorFunc\ndef r0(pipe):\n    pipe.send('x0', 0)\n"]
    for i in range(1, n):
        lines.append(f"@ReactorFunc\ndef r{i}(pipe):\n    v = yield pipe.receive('x{i - 1}')\n"
                     f"    pipe.send('x{i}', v + 1)\n")
    path = tmp_path / "big_chain.py"
    path.write_text("\n".join(lines))
    spec = importlib.util.spec_from_file_location("big_chain", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    reactors = [getattr(module, f"r{i}") for i in range(n)]

    plant, events = open_plant(reactors=reactors)
    plant.run_reactor(f"r{n - 1}")
    assert plant.fetch_ingredient(f"x{n - 1}") == n - 1
    assert len(events.started) == n
    plant.shutdown()

    plant2, events2 = open_plant(reactors=reactors)
    plant2.run_reactor(f"r{n - 1}")
    assert events2.started == [f"r{n - 1}"]
    assert plant2.fetch_ingredient(f"x{n - 1}") == n - 1
    assert sum(r.wasRun for r in plant2.get_execution_history().values()) == 1


# --- constructor arguments and globals -------------------------------------------------------

def test_logger_and_log_level(plant_dir):
    """The given logger receives pyplant's messages, at the level set by logLevel: INFO gets
    why each reactor runs; WARNING gets none of those INFO records."""
    import logging

    class Collect(logging.Handler):
        def __init__(self):
            super().__init__()
            self.records = []

        def emit(self, record):
            self.records.append((record.levelno, record.getMessage()))

    logger = logging.getLogger("pyplant-test-logger")
    handler = Collect()
    logger.addHandler(handler)
    logger.propagate = False
    try:
        a, b, c = chain_abc()
        with Plant(str(plant_dir), logger=logger, logLevel=logging.INFO) as plant:
            assert logger.level == logging.INFO
            plant.add_reactors(a, b, c)
            plant.run_reactor(c)
        assert (logging.INFO, "running reactor 'b': no trace yet") in handler.records, handler.records
        assert all(level >= logging.INFO for level, _ in handler.records), handler.records
        handler.records.clear()
        with Plant(str(plant_dir), logger=logger, logLevel=logging.WARNING) as plant:
            assert logger.level == logging.WARNING
            plant.add_reactors(a, b, c)
            plant.run_reactor(c)
        assert handler.records == []
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)


def test_function_hash_is_used_for_reactors(plant_dir):
    """functionHash is called with the reactor functions and decides what counts as modified."""
    calls = []
    version = {"b": "1"}

    def my_hash(func):
        calls.append(func.__name__)
        return f"{func.__name__}-{version.get(func.__name__, '0')}"

    a, b, c = chain_abc()
    with Plant(str(plant_dir), functionHash=my_hash) as plant:
        plant.add_reactors(a, b, c)
        plant.run_reactor(c)
    assert {"a", "b", "c"} <= set(calls)
    version["b"] = "2"
    with Plant(str(plant_dir), functionHash=my_hash) as plant:
        events = Events(plant)
        plant.add_reactors(a, b, c)
        plant.run_reactor(c)
    assert events.started == ["c", "b"]


def test_pipe_is_a_pipework(open_plant):
    """The pipe passed to a reactor is a pyplant.Pipework."""
    from pyplant import Pipework
    kinds = []

    @ReactorFunc
    def target(pipe):
        kinds.append(isinstance(pipe, Pipework))
        pipe.send("x", 1)

    plant, _ = open_plant(reactors=[target])
    plant.run_reactor(target)
    assert kinds == [True]


def test_clear_global_state_forgets_defined_reactors(open_plant):
    """After Plant._clear_global_state(), reactors defined before are not auto-registered."""
    a, b, c = chain_abc()
    Plant._clear_global_state()

    @ReactorFunc
    def fresh(pipe):
        pipe.send("fresh", 1)

    plant, _ = open_plant()
    plant.run_reactor(fresh)
    assert [f.__name__ for f in plant.get_reactors()] == ["fresh"]
    with pytest.raises(UnknownReactorError):
        plant.run_reactor("a")


def test_exception_in_subreactor_propagates_with_original_type(open_plant):
    """An exception raised in a subreactor propagates out of run_reactor unchanged in type."""

    class SubError(Exception):
        pass

    @SubreactorFunc
    def broken(pipe):
        yield
        raise SubError("inside subreactor")

    @ReactorFunc
    def target(pipe):
        yield from broken(pipe)
        pipe.send("never", 1)

    plant, _ = open_plant(reactors=[target])
    with pytest.raises(SubError, match="inside subreactor"):
        plant.run_reactor(target)


def test_early_cutoff_after_config_change_with_identical_array(open_plant):
    """A producer re-run by a config change that sends an identical array does not re-run consumers."""
    import numpy as np

    @ReactorFunc
    def producer(pipe, config):
        pipe.send("arr", np.zeros(3) if config.n < 100 else np.ones(3))

    @ReactorFunc
    def middle(pipe):
        arr = yield pipe.receive("arr")
        pipe.send("mid", float(arr.sum()))

    @ReactorFunc
    def target(pipe):
        m = yield pipe.receive("mid")
        pipe.send("out", m)

    reactors = [target, middle, producer]
    plant, _ = open_plant(config={"n": 1}, reactors=reactors)
    plant.run_reactor(target)
    plant2, events = open_plant(config={"n": 2}, reactors=reactors)
    plant2.run_reactor(target)
    assert events.started == ["target", "producer"]
    plant3, events = open_plant(config={"n": 500}, reactors=reactors)
    plant3.run_reactor(target)
    assert events.started == ["target", "producer", "middle"]
    assert plant3.fetch_ingredient("out") == 3.0


# --- scheduling edge cases -------------------------------------------------------------------

def test_cutoff_in_the_middle_of_a_chain(open_plant):
    """A consumer re-run by a changed input that produces the same output stops the wave there."""

    @ReactorFunc
    def a(pipe, config):
        pipe.send("a", config.value)

    @ReactorFunc
    def b(pipe):
        x = yield pipe.receive("a")
        pipe.send("positive", x > 0)

    @ReactorFunc
    def c(pipe):
        p = yield pipe.receive("positive")
        pipe.send("label", "pos" if p else "neg")

    @ReactorFunc
    def d(pipe):
        label = yield pipe.receive("label")
        pipe.send("d", label.upper())

    reactors = [d, c, b, a]
    plant, _ = open_plant(config={"value": 1}, reactors=reactors)
    plant.run_reactor(d)
    plant2, events = open_plant(config={"value": 2}, reactors=reactors)
    plant2.run_reactor(d)
    assert events.started == ["d", "a", "b"]
    plant3, events = open_plant(config={"value": -2}, reactors=reactors)
    plant3.run_reactor(d)
    assert events.started == ["d", "a", "b", "c"]
    assert plant3.fetch_ingredient("d") == "NEG"


def test_dynamic_dependencies_follow_the_new_run(open_plant):
    """A reactor that stops receiving an ingredient after a config change no longer starts its producer."""

    @ReactorFunc
    def expensive(pipe):
        pipe.send("expensive", 100)

    @ReactorFunc
    def chooser(pipe, config):
        if config.use_expensive:
            v = yield pipe.receive("expensive")
        else:
            v = 1
        pipe.send("chosen", v)

    @ReactorFunc
    def target(pipe):
        v = yield pipe.receive("chosen")
        pipe.send("out", v)

    reactors = [target, chooser, expensive]
    plant, events = open_plant(config={"use_expensive": True}, reactors=reactors)
    plant.run_reactor(target)
    assert events.started == ["target", "chooser", "expensive"]
    plant2, events = open_plant(config={"use_expensive": False}, reactors=reactors)
    plant2.run_reactor(target)
    assert events.started == ["target", "chooser"]
    assert plant2.fetch_ingredient("out") == 1


def test_renamed_producer_is_discovered(open_plant):
    """When the recorded producer of an ingredient is not in the plant any more, a new one is found."""

    @ReactorFunc
    def old_producer(pipe):
        pipe.send("x", 1)

    @ReactorFunc
    def new_producer(pipe):
        pipe.send("x", 2)

    @ReactorFunc
    def target(pipe):
        x = yield pipe.receive("x")
        pipe.send("out", x)

    plant, _ = open_plant(reactors=[target, old_producer])
    plant.run_reactor(target)
    plant2, events = open_plant(reactors=[target, new_producer])
    plant2.run_reactor(target)
    assert events.started == ["target", "new_producer"]
    assert plant2.fetch_ingredient("out") == 2


def test_ingredient_no_longer_produced_is_not_served_stale(open_plant, hasher):
    """If a producer stops sending an ingredient, its consumers do not get the old stored value."""
    from pyplant.errors import IngredientNotFoundError
    sends_x = {"on": True}

    @ReactorFunc
    def producer(pipe):
        if sends_x["on"]:
            pipe.send("x", 1)
        pipe.send("z", 0)

    @ReactorFunc
    def consumer(pipe):
        x = yield pipe.receive("x")
        pipe.send("y", x)

    @ReactorFunc
    def target(pipe):
        y = yield pipe.receive("y")
        pipe.send("out", y)

    reactors = [target, consumer, producer]
    plant, _ = open_plant(reactors=reactors)
    plant.run_reactor(target)
    sends_x["on"] = False
    hasher.bump("producer")
    plant2, _ = open_plant(reactors=reactors)
    with pytest.raises(IngredientNotFoundError) as info:
        plant2.run_reactor(target)
    assert info.value.ingredient == "x" and info.value.reactor == "consumer"


def test_ingredient_moved_to_another_producer(open_plant):
    """An ingredient whose send moves from one producer to another (an edit) is produced by
    the new one."""

    def before():
        @ReactorFunc
        def first(pipe):
            pipe.send("a", 1)
            pipe.send("b", 10)

        @ReactorFunc
        def second(pipe):
            pipe.send("c", 0)
        return first, second

    def after():
        @ReactorFunc
        def first(pipe):
            pipe.send("a", 1)

        @ReactorFunc
        def second(pipe):
            pipe.send("c", 0)
            pipe.send("b", 20)
        return first, second

    @ReactorFunc
    def target(pipe):
        b = yield pipe.receive("b")
        c = yield pipe.receive("c")
        pipe.send("out", b + c)

    plant, _ = open_plant(reactors=[target, *before()])
    plant.run_reactor(target)
    assert plant.fetch_ingredient("out") == 10
    plant2, _ = open_plant(reactors=[target, *after()])
    plant2.run_reactor(target)
    assert plant2.fetch_ingredient("out") == 20
    assert plant2.fetch_ingredient("b") == 20


def test_plain_function_producer_event_order(open_plant):
    """A plain-function producer's body runs after its reactor_started event, on demand."""
    log = []

    @ReactorFunc
    def plain_up(pipe):
        log.append("body:plain_up")
        pipe.send("u", 1)

    @ReactorFunc
    def down(pipe):
        log.append("body:down")
        x = yield pipe.receive("u")
        pipe.send("d", x)

    plant, _ = open_plant(reactors=[down, plain_up])
    plant.add_event_listener(Plant.EventType.reactor_started, lambda et, name, func: log.append(f"start:{name}"))
    plant.run_reactor(down)
    assert log == ["start:down", "body:down", "start:plain_up", "body:plain_up"]


def test_plant_dir_as_pathlib_path(tmp_path):
    """plantDir may be a pathlib.Path; a missing directory is created."""
    a, b, c = chain_abc()
    target_dir = tmp_path / "nested" / "plant"
    with Plant(target_dir) as plant:
        plant.add_reactors(a, b, c)
        plant.run_reactor(c)
        assert plant.fetch_ingredient("c") == 20
    assert target_dir.is_dir()
