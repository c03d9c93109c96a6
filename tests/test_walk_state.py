"""State is not a constant: values that the reachable code mutates at run time (a list the
reactors append to, a cache filled while running, a counter assigned with ``global``) never
re-run anything, in a fresh process or in the same one; constants still do."""
from __future__ import annotations

from conftest import result_of, run_script, write_script
from edit_scenario import Scenario

# Several reactors that all reach one helper module; `final` is the target.
STATEFUL_PIPELINE = '''
import helpers

@ReactorFunc
def first(pipe):
    pipe.send("a", helpers.step(1))

@ReactorFunc
def second(pipe):
    a = yield pipe.receive("a")
    pipe.send("b", helpers.step(a + 1))

@ReactorFunc
def third(pipe):
    b = yield pipe.receive("b")
    pipe.send("c", helpers.read(b))

@ReactorFunc
def target(pipe):
    c = yield pipe.receive("c")
    RESULT["c"] = c

plant = open_plant()
plant.add_reactors(target, third, second, first)
plant.run_reactor(target)
runs = [list(STARTED)]
STARTED.clear()
plant.run_reactor(target)  # the same process again: the state has grown
runs.append(list(STARTED))
explain = plant.explain()
plant.shutdown()
report(explain=explain, runs=runs)
'''


def _check_state_never_reruns(tmp_path, helpers_src, constant_edit):
    scenario = Scenario(tmp_path, helpers_src, STATEFUL_PIPELINE)
    cold = scenario.run()
    assert sorted(cold["runs"][0]) == ["first", "second", "target", "third"]
    assert cold["runs"][1] == ["target"], cold["explain"]        # same process, state grown
    warm = scenario.run()
    assert warm["runs"] == [["target"], ["target"]], warm["explain"]   # fresh process
    scenario.edit(*constant_edit)                                # a constant still counts
    edited = scenario.run()
    assert "first" in edited["runs"][0] and edited["result"] == scenario.from_scratch()["result"]
    assert edited["result"] != cold["result"]


def test_module_list_appended_by_reactors_never_reruns(tmp_path):
    """RESULTS.append(...) in reactors: RESULTS is state; SCALE is a constant."""
    _check_state_never_reruns(tmp_path, '''
    RESULTS = []
    SCALE = 2

    def step(v):
        RESULTS.append(v)
        return v * SCALE

    def read(v):
        return v + len(RESULTS) * 0
    ''', ("SCALE = 2", "SCALE = 3"))


def test_dict_cache_filled_at_run_time_never_reruns(tmp_path):
    """_CACHE[k] = v while running: state; PARAMS (never mutated) is a constant."""
    _check_state_never_reruns(tmp_path, '''
    _CACHE = {}
    PARAMS = {"offset": 1}

    def step(v):
        if v not in _CACHE:
            _CACHE[v] = v + PARAMS["offset"]
        return _CACHE[v]

    def read(v):
        return v
    ''', ('PARAMS = {"offset": 1}', 'PARAMS = {"offset": 5}'))


def test_counter_assigned_by_one_helper_read_by_another_never_reruns(tmp_path):
    """`global n; n += 1` in `step` makes `n` state for `read` too, though `third` (which
    reads it) never reaches `step`: state is shared by all reactors of a session."""
    _check_state_never_reruns(tmp_path, '''
    n = 0
    LIMIT = 100

    def step(v):
        global n
        n += 1
        return v + 1

    def read(v):
        return v + min(n, LIMIT) * 0
    ''', ("def step(v):\n    global n", "def step(v):\n    v = v * 2\n    global n"))


def test_nested_mutation_marks_only_the_inner_object(tmp_path):
    """`TABLE['seen'].append(v)` makes only TABLE['seen'] state: TABLE['scale'] still counts."""
    _check_state_never_reruns(tmp_path, '''
    TABLE = {"seen": [], "scale": 2}

    def step(v):
        TABLE["seen"].append(v)
        return v * TABLE["scale"]

    def read(v):
        return v
    ''', ('"scale": 2', '"scale": 7'))


CHAIN_HEADER = '''
import sys, time
RESULTS = []

'''


def _chain_source(n: int) -> str:
    lines = [CHAIN_HEADER, "@ReactorFunc", "def r0(pipe):", "    RESULTS.append(0)", "    pipe.send('d0', 0)", ""]
    for i in range(1, n):
        lines += ["@ReactorFunc", f"def r{i}(pipe):", f"    RESULTS.append({i})",
                  f"    x = yield pipe.receive('d{i - 1}')", f"    pipe.send('d{i}', x + 1)", ""]
    lines += ["@ReactorFunc", "def target(pipe):", f"    x = yield pipe.receive('d{n - 1}')",
              "    RESULT['x'] = x", "",
              "plant = open_plant()",
              "plant.add_all_visible_reactors()",
              "began = time.perf_counter()",
              "plant.run_reactor(target)",
              "seconds = time.perf_counter() - began",
              "first = list(STARTED)",
              "STARTED.clear()",
              "began = time.perf_counter()",
              "plant.run_reactor(target)  # the same process: RESULTS holds n items now",
              "again = time.perf_counter() - began",
              "plant.shutdown()",
              "report(seconds=seconds, first=first, again=again)"]
    return "\n".join(lines) + "\n"


def test_chain_of_3000_reactors_appending_to_one_list(tmp_path):
    """3,000 reactors that each append to one list (before waiting for their input, so the list
    grows while the chain is being started): the cold run maps every reactor once (the list is
    state, never tokenized again and again), and the warm run starts only the target.
    The seconds (and those of a 300-reactor chain, for linearity) are printed for the record,
    never asserted."""
    seconds = {}
    for n in (300, 3000):
        script = write_script(tmp_path / f"chain{n}.py", _chain_source(n))
        cold = result_of(run_script(script, tmp_path / f"plant{n}", timeout=600))
        assert len(cold["first"]) == n + 1 and cold["result"]["x"] == n - 1
        assert cold["started"] == ["target"]  # run again in the same process
        warm = result_of(run_script(script, tmp_path / f"plant{n}", timeout=600))
        assert warm["first"] == ["target"] and warm["result"]["x"] == n - 1
        seconds[n] = (cold["seconds"], cold["again"], warm["seconds"])
    print("\nchains appending to one list, run_reactor seconds (cold, again in-process, warm): "
          + "; ".join(f"{n}: {c:.2f}, {a:.2f}, {w:.2f}" for n, (c, a, w) in seconds.items()))


def test_unrelated_function_mutating_a_constant_does_not_make_it_state(tmp_path):
    """Only code the reactors reach decides: a function nobody calls that clears PARAMS does
    not make PARAMS state, so editing PARAMS still re-runs its reader."""
    scenario = Scenario(tmp_path, '''
    PARAMS = {"k": 2}

    def reset():
        PARAMS.clear()

    def compute(v):
        return v * PARAMS["k"]
    ''')
    scenario.check('PARAMS = {"k": 2}', 'PARAMS = {"k": 4}', {"produce"})


def test_instance_fitted_at_import_tracks_what_fitting_set(tmp_path):
    """A model fitted at module level (``MODEL = Model().fit(data)``) sets ``self.w`` in a
    method no reactor calls: that is its import-time value, not state, so editing the data it
    was fitted on re-runs the reactor that predicts with it."""
    scenario = Scenario(tmp_path, '''
    class Model:
        def __init__(self):
            self.w = 0

        def fit(self, xs):
            self.w = sum(xs)
            return self

        def pred(self, x):
            return x * self.w

    MODEL = Model().fit([1, 2])

    def compute(v):
        return MODEL.pred(v)
    ''')
    scenario.check("MODEL = Model().fit([1, 2])", "MODEL = Model().fit([1, 5])", {"produce"})


def test_method_a_reactor_calls_still_makes_what_it_sets_state(tmp_path):
    """The same class, but a reactor calls ``MODEL.update()``: what it sets changes while
    reactors run, so it is state and a re-run in the same process or a new one re-runs nothing."""
    _check_state_never_reruns(tmp_path, '''
    class Counter:
        def __init__(self):
            self.calls = 0
            self.items = []

        def update(self, v):
            self.calls += 1
            self.items.append(v)
            return v

    COUNTER = Counter()
    SCALE = 2

    def step(v):
        return COUNTER.update(v) * SCALE

    def read(v):
        return v + COUNTER.calls * 0 + len(COUNTER.items) * 0
    ''', ("SCALE = 2", "SCALE = 3"))


def test_registry_filled_as_classes_are_created_follows_the_classes(tmp_path):
    """A plugin registry filled by ``__init_subclass__`` (run as each class statement executes,
    at import) is an import-time value: the classes in it are followed, so editing a plugin's
    method re-runs the reactor that runs the plugins."""
    scenario = Scenario(tmp_path, '''
    class Base:
        registry = []

        def __init_subclass__(cls, **kw):
            super().__init_subclass__(**kw)
            Base.registry.append(cls)

    class A(Base):
        def run(self, x):
            return x + 1

    class B(Base):
        def run(self, x):
            return x * 10

    def compute(v):
        return sum(c().run(v) for c in Base.registry)
    ''')
    scenario.check("return x + 1", "return x + 9", {"produce"})
