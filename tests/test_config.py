"""ConfigBase / ConfigValue: reads recorded as dependencies, comparisons, read-only, errors."""
from __future__ import annotations

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
    """Nested dicts/lists/tuples compare by content; one changed leaf re-runs the reader."""
    reactors = reader_reactors("nested")
    run_with(open_plant, {"nested": {"a": [1, (2, 3)], "b": {"c": None}}}, reactors)
    _, events = run_with(open_plant, {"nested": {"b": {"c": None}, "a": [1, (2, 3)]}}, reactors)
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
