"""ConfigBase / ConfigValue: reads recorded as dependencies, comparisons, read-only, errors."""
from __future__ import annotations

import functools

import numpy as np
import pytest

from pyplant import ConfigBase, ConfigValue, ReactorFunc, SubreactorFunc
from pyplant.errors import ConfigError, ConfigWriteError, PyPlantError


def reader_reactors(param="x"):
    """'reader' reads config[param] and sends it; 'target' receives it; 'other' reads nothing."""

    @ReactorFunc
    def reader(pipe, config):
        pipe.send("read", getattr(config, param))

    @ReactorFunc
    def other(pipe):
        pipe.send("other", "constant")

    @ReactorFunc
    def target(pipe):
        r = yield pipe.receive("read")
        o = yield pipe.receive("other")
        pipe.send("result", (r, o))

    return [target, reader, other]


def run_with(open_plant, config, reactors):
    plant, events = open_plant(config=config, reactors=reactors)
    plant.run_reactor("target")
    return plant, events


# --- dependencies ----------------------------------------------------------------------------

def test_changing_a_read_param_reruns_only_its_reader(open_plant):
    """A changed parameter re-runs the reactors that read it (and their consumers), nothing else."""
    reactors = reader_reactors()
    run_with(open_plant, {"x": 1, "y": "a"}, reactors)
    plant, events = run_with(open_plant, {"x": 2, "y": "a"}, reactors)
    assert events.started == ["target", "reader"]
    assert plant.fetch_ingredient("result") == (2, "constant")
    assert plant.get_execution_history()["reader"].reason == "config parameter 'x' changed from 1 to 2"


def test_changing_an_unread_param_reruns_nothing(open_plant):
    """A parameter that no reactor read can change without re-running anything but the target."""
    reactors = reader_reactors()
    run_with(open_plant, {"x": 1, "y": "a"}, reactors)
    plant, events = run_with(open_plant, {"x": 1, "y": "b", "new_param": 3}, reactors)
    assert events.started == ["target"]


def test_config_edited_in_place_between_runs_is_seen(open_plant):
    """Changing an attribute of the plant's config object between run_reactor calls is seen."""
    reactors = reader_reactors()
    config = ConfigBase({"x": 1})
    plant, events = run_with(open_plant, config, reactors)
    config.x = 5
    plant.run_reactor("target")
    assert plant.fetch_ingredient("result") == (5, "constant")
    assert events.started == ["target", "reader", "other", "target", "reader"]


def test_subclass_config_attributes_set_after_init(open_plant):
    """A ConfigBase subclass setting attributes after super().__init__() works like a dict."""

    class MyConfig(ConfigBase):
        def __init__(self, x):
            super().__init__()
            self.x = x
            self.unused = "u"

    reactors = reader_reactors()
    plant, _ = run_with(open_plant, MyConfig(3), reactors)
    assert plant.fetch_ingredient("result") == (3, "constant")
    _, events = run_with(open_plant, MyConfig(3), reactors)
    assert events.started == ["target"]
    plant3, events3 = run_with(open_plant, MyConfig(4), reactors)
    assert events3.started == ["target", "reader"]
    assert plant3.fetch_ingredient("result") == (4, "constant")


def test_subclass_class_attribute_params(open_plant):
    """Plain class attributes of a ConfigBase subclass are parameters too."""

    class Defaults(ConfigBase):
        x = 10

    reactors = reader_reactors()
    plant, _ = run_with(open_plant, Defaults(), reactors)
    assert plant.fetch_ingredient("result") == (10, "constant")


def test_read_config_records_and_unregistered_does_not(open_plant):
    """pipe.read_config records a dependency; pipe.read_config_unregistered does not."""

    @ReactorFunc
    def registered(pipe):
        pipe.send("reg", pipe.read_config("a"))

    @ReactorFunc
    def unregistered(pipe):
        pipe.send("unreg", pipe.read_config_unregistered("b"))

    @ReactorFunc
    def target(pipe):
        r = yield pipe.receive("reg")
        u = yield pipe.receive("unreg")
        pipe.send("result", (r, u))

    reactors = [target, registered, unregistered]
    run_with(open_plant, {"a": 1, "b": 1}, reactors)
    plant, events = run_with(open_plant, {"a": 1, "b": 2}, reactors)
    assert events.started == ["target"]
    plant, events = run_with(open_plant, {"a": 2, "b": 2}, reactors)
    assert events.started == ["target", "registered"]
    assert plant.fetch_ingredient("result") == (2, 1)


def test_auxiliary_params_never_rerun(open_plant):
    """A parameter marked auxiliary can change without re-running its readers."""
    reactors = reader_reactors()
    plant, _ = open_plant(config={"x": "debug"}, reactors=reactors)
    plant.mark_params_as_auxiliary(["x"])
    plant.run_reactor("target")
    plant2, events = open_plant(config={"x": "info"}, reactors=reactors)
    plant2.mark_params_as_auxiliary(["x"])
    plant2.run_reactor("target")
    assert events.started == ["target"]


def test_config_read_in_subreactor_counts_for_caller(open_plant):
    """A config parameter read inside a subreactor re-runs the calling reactor when it changes."""

    @SubreactorFunc
    def scaled(pipe, config, value):
        return value * config.factor
        yield

    @ReactorFunc
    def caller(pipe, config):
        v = yield from scaled(pipe, config, 2)
        pipe.send("scaled", v)

    @ReactorFunc
    def target(pipe):
        v = yield pipe.receive("scaled")
        pipe.send("result", v)

    reactors = [target, caller]
    run_with(open_plant, {"factor": 3}, reactors)
    plant, events = run_with(open_plant, {"factor": 5}, reactors)
    assert events.started == ["target", "caller"]
    assert plant.fetch_ingredient("result") == 10


# --- value comparisons -----------------------------------------------------------------------

class Hyper(ConfigValue):
    def __init__(self, lr, layers):
        self.lr = lr
        self.layers = layers


def test_config_value_equality_by_content():
    """ConfigValue objects compare equal by their attributes, not identity."""
    assert Hyper(0.1, [1, 2]) == Hyper(0.1, [1, 2])
    assert Hyper(0.1, [1, 2]) != Hyper(0.2, [1, 2])
    assert "0.1" in repr(Hyper(0.1, [1]))


def test_config_value_param_compared_by_content(open_plant):
    """An equal ConfigValue (new object) does not re-run its reader; a different one does."""
    reactors = reader_reactors("hyper")
    run_with(open_plant, {"hyper": Hyper(0.1, [4, 4])}, reactors)
    _, events = run_with(open_plant, {"hyper": Hyper(0.1, [4, 4])}, reactors)
    assert events.started == ["target"]
    plant, events = run_with(open_plant, {"hyper": Hyper(0.1, [4, 8])}, reactors)
    assert events.started == ["target", "reader"]
    assert plant.fetch_ingredient("read") == Hyper(0.1, [4, 8])


def test_slices_are_distinguished(open_plant):
    """slice(0, 2) and slice(0, 3) are different values; the same slice again is not."""
    reactors = reader_reactors("sl")
    run_with(open_plant, {"sl": slice(0, 2)}, reactors)
    _, events = run_with(open_plant, {"sl": slice(0, 2)}, reactors)
    assert events.started == ["target"]
    plant, events = run_with(open_plant, {"sl": slice(0, 3)}, reactors)
    assert events.started == ["target", "reader"]
    assert plant.fetch_ingredient("read") == slice(0, 3)
    _, events = run_with(open_plant, {"sl": slice(0, 3, 2)}, reactors)
    assert events.started == ["target", "reader"]


def test_array_param_compared_by_content(open_plant):
    """A NumPy array parameter re-runs its reader only when its content changes."""
    reactors = reader_reactors("arr")
    run_with(open_plant, {"arr": np.arange(5)}, reactors)
    _, events = run_with(open_plant, {"arr": np.arange(5)}, reactors)
    assert events.started == ["target"]
    _, events = run_with(open_plant, {"arr": np.arange(5) * 2}, reactors)
    assert events.started == ["target", "reader"]


def test_nested_container_params(open_plant):
    """Nested dicts/lists/tuples compare by content (a new but equal object verifies); one
    changed leaf re-runs the reader."""
    reactors = reader_reactors("nested")
    run_with(open_plant, {"nested": {"a": [1, (2, 3)], "b": {"c": None}}}, reactors)
    _, events = run_with(open_plant, {"nested": {"a": [1, (2, 3)], "b": {"c": None}}}, reactors)
    assert events.started == ["target"]
    _, events = run_with(open_plant, {"nested": {"a": [1, (2, 4)], "b": {"c": None}}}, reactors)
    assert events.started == ["target", "reader"]


def test_type_changes_are_distinguished(open_plant):
    """1, 1.0 and True are different parameter values (exact types count)."""
    reactors = reader_reactors()
    run_with(open_plant, {"x": 1}, reactors)
    _, events = run_with(open_plant, {"x": 1.0}, reactors)
    assert events.started == ["target", "reader"]
    plant, events = run_with(open_plant, {"x": True}, reactors)
    assert events.started == ["target", "reader"]
    assert plant.fetch_ingredient("read") is True


def make_callable(offset):
    def transform(v):
        return v + offset
    return transform


def double(v):
    return v * 2


def triple(v):
    return v * 3


def test_callable_params_compared_by_code(open_plant):
    """Callables in the config compare by code: another object with the same code is equal."""

    @ReactorFunc
    def reader(pipe, config):
        pipe.send("read", config.fn(10))

    @ReactorFunc
    def target(pipe):
        r = yield pipe.receive("read")
        pipe.send("result", r)

    reactors = [target, reader]
    run_with(open_plant, {"fn": double}, reactors)
    _, events = run_with(open_plant, {"fn": double}, reactors)
    assert events.started == ["target"]
    plant, events = run_with(open_plant, {"fn": triple}, reactors)
    assert events.started == ["target", "reader"]
    assert plant.fetch_ingredient("result") == 30


def test_callable_params_from_same_code_object(open_plant):
    """Two closures made by one factory (same code, same values) do not re-run the reader."""

    @ReactorFunc
    def reader(pipe, config):
        pipe.send("read", config.fn(1))

    @ReactorFunc
    def target(pipe):
        r = yield pipe.receive("read")
        pipe.send("result", r)

    reactors = [target, reader]
    run_with(open_plant, {"fn": make_callable(1)}, reactors)
    _, events = run_with(open_plant, {"fn": make_callable(1)}, reactors)
    assert events.started == ["target"]


# --- read-only and errors --------------------------------------------------------------------

def test_writing_config_in_reactor_raises_config_write_error(open_plant):
    """A reactor assigning to its config raises ConfigWriteError naming the parameter."""

    @ReactorFunc
    def target(pipe, config):
        config.x = 2
        pipe.send("never", 0)

    plant, _ = open_plant(config={"x": 1}, reactors=[target])
    with pytest.raises(ConfigWriteError, match="'x'") as info:
        plant.run_reactor(target)
    assert isinstance(info.value, ConfigError) and isinstance(info.value, PyPlantError)
    assert plant.get_config_object().x == 1


def test_writing_new_config_attribute_in_reactor_raises(open_plant):
    """Adding a new parameter from inside a reactor is a write too."""

    @ReactorFunc
    def target(pipe, config):
        config.brand_new = 2
        yield

    plant, _ = open_plant(config={"x": 1}, reactors=[target])
    with pytest.raises(ConfigWriteError, match="brand_new"):
        plant.run_reactor(target)


def test_reading_missing_param_raises_config_error(open_plant):
    """Reading a parameter that does not exist raises ConfigError (an AttributeError) naming it."""

    @ReactorFunc
    def target(pipe, config):
        pipe.send("v", config.no_such_param)

    plant, _ = open_plant(config={"x": 1}, reactors=[target])
    with pytest.raises(ConfigError, match="no_such_param") as info:
        plant.run_reactor(target)
    assert isinstance(info.value, AttributeError)


def test_read_config_missing_param_raises_config_error(open_plant):
    """pipe.read_config of a missing parameter raises ConfigError naming it."""

    @ReactorFunc
    def target(pipe):
        pipe.send("v", pipe.read_config("ghost"))

    plant, _ = open_plant(config={"x": 1}, reactors=[target])
    with pytest.raises(ConfigError, match="ghost"):
        plant.run_reactor(target)


def test_hasattr_on_config_in_reactor(open_plant):
    """hasattr() works on a config inside a reactor (missing parameter -> AttributeError)."""

    @ReactorFunc
    def target(pipe, config):
        pipe.send("v", (hasattr(config, "x"), hasattr(config, "missing")))

    plant, _ = open_plant(config={"x": 1}, reactors=[target])
    plant.run_reactor(target)
    assert plant.fetch_ingredient("v") == (True, False)


def test_config_outside_reactor_is_writable_and_missing_raises():
    """Outside a reactor a config can be written; reading a missing name raises ConfigError."""
    config = ConfigBase({"a": 1})
    config.a = 2
    config.b = 3
    assert (config.a, config.b) == (2, 3)
    with pytest.raises(ConfigError, match="zzz"):
        config.zzz


def test_callable_params_with_different_closures(open_plant):
    """Two closures of one factory capturing different values are different config values."""

    @ReactorFunc
    def reader(pipe, config):
        pipe.send("read", config.fn(10))

    @ReactorFunc
    def target(pipe):
        r = yield pipe.receive("read")
        pipe.send("result", r)

    reactors = [target, reader]
    run_with(open_plant, {"fn": make_callable(1)}, reactors)
    plant, events = run_with(open_plant, {"fn": make_callable(2)}, reactors)
    assert plant.fetch_ingredient("result") == 12
    assert events.started == ["target", "reader"]


def test_partial_params_compared_by_arguments(open_plant):
    """functools.partial config values differ when their bound arguments differ."""
    import functools

    @ReactorFunc
    def reader(pipe, config):
        pipe.send("read", config.fn(10))

    @ReactorFunc
    def target(pipe):
        r = yield pipe.receive("read")
        pipe.send("result", r)

    def add(a, b):
        return a + b

    reactors = [target, reader]
    run_with(open_plant, {"fn": functools.partial(add, 1)}, reactors)
    _, events = run_with(open_plant, {"fn": functools.partial(add, 1)}, reactors)
    assert events.started == ["target"]
    plant, events = run_with(open_plant, {"fn": functools.partial(add, 5)}, reactors)
    assert plant.fetch_ingredient("result") == 15
    assert events.started == ["target", "reader"]


# --- values that carry code (fresh processes, edit_scenario.py) -----------------------------

CONFIG_CODE = '''
import helpers

@ReactorFunc
def produce(pipe, config):
    model = config.model_cls(2)
    pipe.send("x", model.predict(3) + config.settings.apply(1))

@ReactorFunc
def other(pipe):
    pipe.send("y", 1)

@ReactorFunc
def target(pipe):
    x = yield pipe.receive("x")
    y = yield pipe.receive("y")
    RESULT["x"] = x

plant = open_plant({"model_cls": helpers.Baseline, "settings": helpers.Settings(threshold=0.5)})
plant.add_reactors(target, produce, other)
plant.run_reactor(target)
explain = plant.explain()
plant.shutdown()
report(explain=explain)
'''

CONFIG_HELPERS = '''
from dataclasses import dataclass

class Baseline:
    def __init__(self, k):
        self.k = k

    def predict(self, v):
        return v * self.k

@dataclass
class Settings:
    threshold: float

    def apply(self, v):
        return v + self.threshold
'''


@pytest.mark.parametrize("old, new", [
    ("return v * self.k", "return v * self.k + 1"),           # a class stored in the config
    ("return v + self.threshold", "return v - self.threshold"),  # a dataclass instance's method
])
def test_config_values_carrying_code_rerun_when_the_code_changes(tmp_path, old, new):
    """`config.model_cls = Baseline` and a dataclass instance count by the code of their class
    (deeply: what the class reaches), not by their name."""
    from edit_scenario import Scenario

    edited = Scenario(tmp_path, CONFIG_HELPERS, CONFIG_CODE).check(old, new, {"produce"})
    assert "config parameter" in edited["explain"]["produce"]


# --- values that are hard to tokenize ---------------------------------------------------------


def test_huge_int_and_recursive_list_params_are_compared(open_plant):
    """10**5000 (beyond repr's digit limit) and a list that contains itself are ordinary
    values: equal ones do not re-run, different ones do."""
    def cyclic(tail):
        value = [1, tail]
        value.append(value)
        return value

    reactors = reader_reactors("v")
    run_with(open_plant, {"v": (10 ** 5000, cyclic(2))}, reactors)
    _, events = run_with(open_plant, {"v": (10 ** 5000, cyclic(2))}, reactors)
    assert events.started == ["target"]
    _, events = run_with(open_plant, {"v": (10 ** 5000 + 1, cyclic(2))}, reactors)
    assert events.started == ["target", "reader"]
    _, events = run_with(open_plant, {"v": (10 ** 5000 + 1, cyclic(3))}, reactors)
    assert events.started == ["target", "reader"]


class Guarded:
    """A config value holding a lock: the lock is a resource, the rest counts."""

    def __init__(self, n):
        import threading

        self.n = n
        self.lock = threading.Lock()


def test_object_holding_a_lock_is_compared_by_its_other_attributes(open_plant):
    reactors = reader_reactors("g")

    @ReactorFunc
    def reader(pipe, config):
        pipe.send("read", config.g.n)

    reactors[1] = reader
    run_with(open_plant, {"g": Guarded(1)}, reactors)
    _, events = run_with(open_plant, {"g": Guarded(1)}, reactors)
    assert events.started == ["target"]
    plant, events = run_with(open_plant, {"g": Guarded(2)}, reactors)
    assert events.started == ["target", "reader"] and plant.fetch_ingredient("read") == 2


def test_untokenizable_param_raises_config_error_naming_it_and_the_reactor(open_plant):
    """A generator has no stable representation: ConfigError names the parameter and the reactor
    (not a raw TokenizationError from deep inside), and what finished before stays cached."""
    @ReactorFunc
    def reader(pipe, config):
        pipe.send("read", next(config.stream))

    @ReactorFunc
    def other(pipe):
        pipe.send("other", "constant")

    @ReactorFunc
    def target(pipe):
        o = yield pipe.receive("other")
        r = yield pipe.receive("read")
        pipe.send("result", (r, o))

    plant, events = open_plant(config={"stream": (i for i in range(3))}, reactors=[target, reader, other])
    with pytest.raises(ConfigError, match=r"config parameter 'stream' \(read by reactor 'reader'\)"):
        plant.run_reactor(target)
    assert "other" in events.finished
    assert plant.fetch_ingredient("other") == "constant"


def test_tokenization_error_lives_in_errors_and_hashing_keeps_the_name():
    from pyplant import errors, hashing
    from pyplant.tokens import stable_token

    assert hashing.TokenizationError is errors.TokenizationError
    assert issubclass(errors.TokenizationError, errors.PyPlantError)
    assert issubclass(errors.TokenizationError, TypeError)
    with pytest.raises(errors.TokenizationError, match="generator"):
        stable_token(x for x in ())


# --- pandas and datetimes -------------------------------------------------------------------


def test_pandas_params_compared_by_content():
    """DataFrame, Series and Index: equal content (a new object) gives an equal token; a value,
    a column name, a dtype or an index change gives another."""
    pd = pytest.importorskip("pandas")
    from pyplant.tokens import stable_token

    def frame(**changes):
        data = {"a": [1, 2, 3], "b": [0.5, 1.5, 2.5]}
        data.update(changes.get("data", {}))
        return pd.DataFrame(data, index=changes.get("index", [10, 20, 30]))

    base = stable_token(frame())
    assert stable_token(frame()) == base
    assert stable_token(frame(data={"b": [0.5, 1.5, 9.5]})) != base
    assert stable_token(frame().rename(columns={"b": "c"})) != base
    assert stable_token(frame().astype({"a": "int32"})) != base
    assert stable_token(frame(index=[10, 20, 31])) != base
    assert stable_token(frame()["a"]) == stable_token(frame()["a"].copy())
    assert stable_token(frame()["a"]) != stable_token(frame()["a"].rename("z"))
    assert stable_token(pd.Index([1, 2])) != stable_token(pd.Index([1, 3]))


def test_pandas_frame_param_reruns_only_when_its_content_changes(open_plant):
    pd = pytest.importorskip("pandas")
    reactors = reader_reactors("df")
    run_with(open_plant, {"df": pd.DataFrame({"a": [1, 2]})}, reactors)
    _, events = run_with(open_plant, {"df": pd.DataFrame({"a": [1, 2]})}, reactors)
    assert events.started == ["target"]
    _, events = run_with(open_plant, {"df": pd.DataFrame({"a": [1, 5]})}, reactors)
    assert events.started == ["target", "reader"]


def test_datetime64_array_param(open_plant):
    """datetime64 and timedelta64 arrays are hashed by their bytes (no buffer-protocol crash)."""
    reactors = reader_reactors("t")
    days = np.array(["2024-01-01", "2024-01-02"], dtype="datetime64[D]")
    run_with(open_plant, {"t": days}, reactors)
    _, events = run_with(open_plant, {"t": days.copy()}, reactors)
    assert events.started == ["target"]
    plant, events = run_with(open_plant, {"t": days + np.timedelta64(1, "D")}, reactors)
    assert events.started == ["target", "reader"]
    assert (plant.fetch_ingredient("read") == days + np.timedelta64(1, "D")).all()
    _, events = run_with(open_plant, {"t": np.array([1, 2], dtype="timedelta64[s]")}, reactors)
    assert events.started == ["target", "reader"]


# --- cached properties ----------------------------------------------------------------------


class Cached(ConfigBase):
    def __init__(self, base):
        super().__init__()
        self.base = base

    @functools.cached_property
    def derived(self):
        return self.base * 10


def test_cached_property_is_not_a_param_and_records_what_it_reads(open_plant):
    """A functools.cached_property is computed, not a parameter: a second run in the same
    process re-runs nothing, and a reactor reading it depends on the parameter it reads."""
    @ReactorFunc
    def reader(pipe, config):
        pipe.send("read", config.derived)

    @ReactorFunc
    def target(pipe):
        r = yield pipe.receive("read")
        pipe.send("result", r)

    config = Cached(2)
    assert "derived" not in config.get_param_names() and not config.has("derived")
    plant, events = open_plant(config=config, reactors=[target, reader])
    plant.run_reactor(target)
    assert config.derived == 20  # cached on the plant's config object now
    plant.run_reactor(target)
    assert events.started == ["target", "reader", "target"]
    assert plant.fetch_ingredient("result") == 20
    plant2, events2 = open_plant(config=Cached(3), reactors=[target, reader])
    plant2.run_reactor(target)
    assert events2.started == ["target", "reader"]
    assert "'base'" in plant2.explain("reader") and plant2.fetch_ingredient("result") == 30


def test_rerun_reason_shows_functions_by_name_not_address(open_plant):
    """'why it re-ran' names a function or class, never a memory address."""
    @ReactorFunc
    def reader(pipe, config):
        pipe.send("read", config.fn(10))

    @ReactorFunc
    def target(pipe):
        r = yield pipe.receive("read")
        pipe.send("result", r)

    run_with(open_plant, {"fn": double}, [target, reader])
    plant, _ = run_with(open_plant, {"fn": triple}, [target, reader])
    reason = plant.explain("reader")
    assert "test_config.double" in reason and "test_config.triple" in reason and "0x" not in reason


class Window:
    """A config value (not a ConfigBase) with a cached property."""

    def __init__(self, size):
        self.size = size

    @functools.cached_property
    def half(self):
        return self.size // 2


def test_cached_property_of_a_config_value_is_not_part_of_its_token():
    from pyplant.tokens import stable_token

    fresh, used = Window(4), Window(4)
    assert used.half == 2  # now cached in used.__dict__
    assert stable_token(fresh) == stable_token(used) != stable_token(Window(6))


def _reruns_on_change(open_plant, first, second):
    """Whether the config going from ``first`` to ``second`` (for parameter x) re-runs its reader."""
    reactors = reader_reactors()
    run_with(open_plant, {"x": first}, reactors)
    _, events = run_with(open_plant, {"x": second}, reactors)
    return events.started == ["target", "reader"]


@pytest.mark.parametrize("kind", ["structured field renamed", "categories reordered", "dict reordered"])
def test_values_that_differ_only_in_what_code_reads_of_them_rerun(open_plant, kind):
    """What a reactor can read off a value counts: the field names of a structured array, the
    order of a categorical's categories (``sort_values`` follows it), the order of a dict's
    keys (``list(d)`` follows it). Values equal in content and order still verify."""
    import pandas as pd
    make = {
        "structured field renamed": lambda name: np.zeros(2, dtype=[(name, "f8")]),
        "categories reordered": lambda first: pd.Series(pd.Categorical(
            ["a", "b"], categories=["a", "b"] if first == "a" else ["b", "a"])),
        "dict reordered": lambda first: {"a": 1, "b": 2} if first == "a" else {"b": 2, "a": 1},
    }[kind]
    first, second = ("x", "y") if kind == "structured field renamed" else ("a", "b")
    assert _reruns_on_change(open_plant, make(first), make(second))
    assert not _reruns_on_change(open_plant, make(second), make(second))


def test_writable_memmap_param_is_compared_by_content(open_plant, tmp_path):
    """A memmap opened for writing (``mode='w+'``) holds its values in its pages, not in the
    file: the same values written again into a new file verify (a new mtime is no change);
    other values re-run the reader, though the file's size and name are the same."""
    path = str(tmp_path / "values.dat")

    def mapped(values):
        m = np.memmap(path, mode="w+", dtype="f8", shape=(3,))
        m[:] = values
        return m

    reactors = reader_reactors()
    run_with(open_plant, {"x": mapped([1.0, 2.0, 3.0])}, reactors)
    _, same = run_with(open_plant, {"x": mapped([1.0, 2.0, 3.0])}, reactors)
    assert same.started == ["target"]
    plant, changed = run_with(open_plant, {"x": mapped([1.0, 2.0, 4.0])}, reactors)
    assert changed.started == ["target", "reader"]
    np.testing.assert_array_equal(plant.fetch_ingredient("result")[0], [1.0, 2.0, 4.0])
