"""What the walk reaches is followed, never dropped: wrapped helpers, registries, partials,
instances, paths, class attributes. Each case edits a source file between two runs in fresh
processes and checks that exactly the reactor reaching the edit re-runs (edit_scenario.py)."""
from __future__ import annotations

import logging

import pytest

from edit_scenario import Scenario
from pyplant.dependencies import CodeMapper, CodeScope
from pyplant.hashing import code_hash

# --- 1. functools.lru_cache / functools.cache -----------------------------------------------


@pytest.mark.parametrize("decorator", ["functools.lru_cache(maxsize=None)", "functools.cache"])
def test_helper_with_lru_cache_body_edit_reruns(tmp_path, decorator):
    """A helper decorated with functools.lru_cache (not a FunctionType) is followed into the
    function it wraps: editing its body re-runs its caller."""
    scenario = Scenario(tmp_path, f'''
    import functools

    @{decorator}
    def scale(v):
        return v * 2

    def compute(v):
        return scale(v)
    ''')
    edited = scenario.check("return v * 2", "return v * 3", {"produce"})
    assert edited["result"]["x"] == 9
    assert "helpers.scale" in edited["explain"]["produce"]


# --- 2. a user decorator with functools.wraps -----------------------------------------------

CLAMPED = '''
import functools

def clamp(lo, hi):
    def decorate(f):
        @functools.wraps(f)
        def wrapper(v):
            return min(max(f(v), lo), hi)
        return wrapper
    return decorate

@clamp(0.0, 2.0)
def scale(v):
    return v * 0.5

def compute(v):
    return scale(v)
'''


@pytest.mark.parametrize("old, new, expected", [
    ("@clamp(0.0, 2.0)", "@clamp(0.0, 1.0)", 1.0),                                  # its arguments
    ("return min(max(f(v), lo), hi)", "return min(max(f(v), lo), hi) + 10", 11.5),  # the wrapper
    ("return v * 0.5", "return v * 0.25", 0.75),                                    # the wrapped
])
def test_wraps_decorator_arguments_and_wrapper_body_edits_rerun(tmp_path, old, new, expected):
    """The wrapper of a functools.wraps decorator, its closure (the decorator's arguments) and
    the function it wraps all count."""
    edited = Scenario(tmp_path, CLAMPED).check(old, new, {"produce"})
    assert edited["result"]["x"] == expected


def test_wrapper_and_wrapped_have_different_labels():
    """functools.wraps copies __qualname__; labels come from the code, so the wrapper and the
    function it wraps are two entries."""
    namespace: dict = {"__name__": "tests_wraps_labels"}
    exec(compile(CLAMPED + "\ndef reactor(pipe):\n    return compute(1)\n", "<wraps>", "exec"), namespace)
    labels = CodeMapper(code_hash, CodeScope.of()).code_map(namespace["reactor"])
    assert "fn:tests_wraps_labels.scale" in labels
    assert "fn:tests_wraps_labels.clamp.<locals>.decorate.<locals>.wrapper" in labels


# --- 3. registries and partials -------------------------------------------------------------


def test_function_in_module_level_dict_edit_reruns(tmp_path):
    """AGGREGATORS = {'mean': agg_mean}: the functions in the dict are followed."""
    scenario = Scenario(tmp_path, '''
    def agg_mean(v):
        return v / 2

    def agg_max(v):
        return v

    AGGREGATORS = {"mean": agg_mean, "max": agg_max}

    def compute(v):
        return AGGREGATORS["mean"](v)
    ''')
    edited = scenario.check("return v / 2", "return v / 4", {"produce"})
    assert edited["result"]["x"] == 0.75


@pytest.mark.parametrize("old, new", [('"k": 1.5', '"k": 2.5'),                     # the data
                                      ('"center": np.median', '"center": np.max')])  # the function
def test_dict_mixing_data_and_functions_edit_reruns(tmp_path, old, new):
    """ROBUST = {'center': np.median, 'k': 1.5}: neither part is dropped."""
    scenario = Scenario(tmp_path, '''
    import numpy as np

    ROBUST = {"center": np.median, "k": 1.5}

    def compute(v):
        return float(ROBUST["center"]([v, 2 * v, 10 * v]) * ROBUST["k"])
    ''')
    scenario.check(old, new, {"produce"})


@pytest.mark.parametrize("old, new", [("window=5", "window=7"),                  # its keywords
                                      ("(window_sum, 2,", "(window_sum, 4,"),    # its arguments
                                      ("return (v + start) * window", "return (v - start) * window")])
def test_module_level_partial_arguments_edit_reruns(tmp_path, old, new):
    """A module-level functools.partial counts by its function, arguments and keywords."""
    scenario = Scenario(tmp_path, '''
    import functools

    def window_sum(start, v, window):
        return (v + start) * window

    SMOOTH = functools.partial(window_sum, 2, window=5)

    def compute(v):
        return SMOOTH(v)
    ''')
    scenario.check(old, new, {"produce"})


# --- 4. instances of user classes -----------------------------------------------------------

SETTINGS = '''
from dataclasses import dataclass

@dataclass
class Settings:
    threshold: float
    scale: int = 2

    def apply(self, v):
        return v * self.scale + self.threshold

DEFAULTS = Settings(threshold=0.5)

def compute(v):
    return DEFAULTS.apply(v)
'''


@pytest.mark.parametrize("old, new", [("Settings(threshold=0.5)", "Settings(threshold=0.75)"),  # attribute
                                      ("scale: int = 2", "scale: int = 3"),                     # default
                                      ("return v * self.scale + self.threshold",
                                       "return v * self.scale - self.threshold")])              # method
def test_module_level_dataclass_instance_edit_reruns(tmp_path, old, new):
    """DEFAULTS = Settings(threshold=0.5): its attributes and its class's code count."""
    edited = Scenario(tmp_path, SETTINGS).check(old, new, {"produce"})
    if "threshold=0.75" in new:
        assert "helpers.DEFAULTS" in edited["explain"]["produce"]


@pytest.mark.parametrize("old, new", [("Smoother(span=3)", "Smoother(span=4)"),
                                      ("return v * self.span", "return v * self.span + 1")])
def test_module_level_instance_attribute_and_method_edit_reruns(tmp_path, old, new):
    """SMOOTHER = Smoother(span=3); an attribute edit or a method edit re-runs its user."""
    Scenario(tmp_path, '''
    class Smoother:
        def __init__(self, span):
            self.span = span

        def apply(self, v):
            return v * self.span

    SMOOTHER = Smoother(span=3)

    def compute(v):
        return SMOOTHER.apply(v)
    ''').check(old, new, {"produce"})


def test_instance_attribute_set_by_its_methods_is_state(tmp_path):
    """An attribute that the class's own methods set outside __init__ (a call counter) is
    state: it changes on every call and never re-runs anything; the other attributes count."""
    scenario = Scenario(tmp_path, '''
    class Counter:
        def __init__(self, step):
            self.step = step
            self.calls = 0

        def apply(self, v):
            self.calls += 1
            return v * self.step

    COUNTER = Counter(step=2)
    COUNTER.calls = 41  # at import: a different value in every version below

    def compute(v):
        return COUNTER.apply(v)
    ''')
    first = scenario.run()
    scenario.edit("COUNTER.calls = 41", "COUNTER.calls = 7")
    assert scenario.run()["started"] == ["target"]
    scenario.edit("Counter(step=2)", "Counter(step=5)")
    edited = scenario.run()
    assert sorted(edited["started"]) == ["produce", "target"]
    assert edited["result"] != first["result"] and edited["result"] == scenario.from_scratch()["result"]


# --- 5. paths and class attributes ----------------------------------------------------------


def test_pathlib_path_constant_edit_reruns(tmp_path):
    """LOOKUP = Path(__file__).with_name('a.csv') -> 'b.csv' re-runs the reader."""
    (tmp_path / "a.csv").write_text("1")
    (tmp_path / "b.csv").write_text("5")
    scenario = Scenario(tmp_path, '''
    from pathlib import Path

    LOOKUP = Path(__file__).with_name("a.csv")

    def compute(v):
        return v * int(LOOKUP.read_text())
    ''')
    edited = scenario.check('with_name("a.csv")', 'with_name("b.csv")', {"produce"})
    assert edited["result"]["x"] == 15


def test_mutable_class_attribute_edit_reruns(tmp_path):
    """A list in a class body (LEVELS = [0.25, 0.5]) counts unless code mutates it."""
    scenario = Scenario(tmp_path, '''
    class Grid:
        LEVELS = [0.25, 0.5]
        CACHE = {}

        def levels(self, v):
            self.CACHE[v] = v  # mutated through self: state, never re-runs anything
            return [v * level for level in self.LEVELS]

    def compute(v):
        return sum(Grid().levels(v))
    ''')
    edited = scenario.check("LEVELS = [0.25, 0.5]", "LEVELS = [0.25, 0.75]", {"produce"})
    assert edited["result"]["x"] == 3.0


def test_class_attribute_mutated_through_class_is_state(tmp_path):
    """A class-level registry filled at run time (Class.SEEN.append) is state."""
    scenario = Scenario(tmp_path, '''
    class Registry:
        SEEN = ["seeded at import"]
        FACTOR = 2

    def compute(v):
        Registry.SEEN.append(v)
        return v * Registry.FACTOR
    ''')
    scenario.run()
    scenario.edit('SEEN = ["seeded at import"]', 'SEEN = ["seeded differently"]')
    assert scenario.run()["started"] == ["target"]
    scenario.edit("FACTOR = 2", "FACTOR = 3")
    assert sorted(scenario.run()["started"]) == ["produce", "target"]


# --- what cannot be tokenized: a warning, once ----------------------------------------------


def _module(tmp_path, monkeypatch, name, source):
    import importlib
    import sys

    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(name, None)
    module = importlib.import_module(name)
    monkeypatch.setitem(sys.modules, name, module)
    return module


def test_untrackable_value_logs_one_warning_naming_it_and_the_reactor(tmp_path, monkeypatch, caplog):
    """A value with no stable representation (a generator) is reported once per process:
    "changes to <name> (type T) reached from reactor 'r' are not tracked"."""
    module = _module(tmp_path, monkeypatch, "walk_untracked", '''
STREAM = (i for i in range(3))

def produce(pipe):
    return next(STREAM)
''')
    caplog.set_level(logging.WARNING, logger="pyplant")
    mapper = CodeMapper(code_hash, CodeScope.of())
    first = mapper.code_maps({"produce": module.produce})["produce"]
    again = mapper.code_maps({"produce": module.produce})["produce"]
    warnings = [r for r in caplog.records if "not tracked" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].name.startswith("pyplant")
    message = warnings[0].getMessage()
    assert "walk_untracked.STREAM" in message and "generator" in message and "'produce'" in message
    assert first == again  # the placeholder is stable: it never re-runs anything by itself


def test_resources_are_not_tracked_and_not_warned_about(tmp_path, monkeypatch, caplog):
    """Locks, loggers, files and executors hold no result-relevant state: no warning."""
    module = _module(tmp_path, monkeypatch, "walk_resources", '''
import concurrent.futures, logging, threading

LOCK = threading.Lock()
LOG = logging.getLogger("walk_resources")
POOL = concurrent.futures.ThreadPoolExecutor(1)
SCALE = 3

def produce(pipe):
    with LOCK:
        LOG.debug("x")
    return POOL, SCALE
''')
    caplog.set_level(logging.WARNING, logger="pyplant")
    try:
        labels = CodeMapper(code_hash, CodeScope.of()).code_map(module.produce)
    finally:
        module.POOL.shutdown()
    assert not [r for r in caplog.records if "not tracked" in r.getMessage()]
    assert "const:walk_resources.SCALE" in labels


def test_memory_mapped_array_constant_counts_by_its_file(tmp_path):
    """W = np.load('w.npy', mmap_mode='r'): known by the file's identity, size and time (not
    read to be hashed); rewriting the file re-runs its reader."""
    import numpy as np

    np.save(tmp_path / "w.npy", np.arange(4.0))
    scenario = Scenario(tmp_path, '''
    from pathlib import Path
    import numpy as np

    W = np.load(Path(__file__).with_name("w.npy"), mmap_mode="r")

    def compute(v):
        return float(W.sum() * v)
    ''')
    first = scenario.run()
    assert scenario.run()["started"] == ["target"]
    np.save(tmp_path / "w.npy", np.arange(5.0))
    edited = scenario.run()
    assert sorted(edited["started"]) == ["produce", "target"]
    assert edited["result"] != first["result"] and edited["result"] == scenario.from_scratch()["result"]
