"""Errors: what pyplant raises, with which type and which names in the message."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from pyplant import Plant, ReactorFunc, specs
from pyplant import errors
from pyplant.errors import (AllocationError, DuplicateProducerError, IngredientNotFoundError,
                            PlantDirError, PyPlantError, ReactorDefinitionError,
                            ReactorProtocolError, SerializationError)


class BoomError(Exception):
    pass


def test_error_hierarchy():
    """Every pyplant error derives from PyPlantError and its documented builtin base."""
    assert issubclass(IngredientNotFoundError, LookupError)
    assert issubclass(errors.ConfigError, AttributeError)
    assert issubclass(errors.ConfigWriteError, errors.ConfigError)
    assert issubclass(PlantDirError, OSError)
    assert issubclass(AllocationError, ValueError)
    for exc in (IngredientNotFoundError, DuplicateProducerError, SerializationError,
                ReactorDefinitionError, ReactorProtocolError, AllocationError, PlantDirError,
                errors.ConfigError, errors.ConfigWriteError):
        assert issubclass(exc, PyPlantError)


def test_ingredient_nobody_produces(open_plant):
    """Receiving an ingredient no reactor sends raises IngredientNotFoundError naming both."""

    @ReactorFunc
    def unrelated(pipe):
        pipe.send("something_else", 1)

    @ReactorFunc
    def needy(pipe):
        v = yield pipe.receive("missing_thing")
        pipe.send("out", v)

    plant, _ = open_plant(reactors=[needy, unrelated])
    with pytest.raises(IngredientNotFoundError) as info:
        plant.run_reactor(needy)
    message = str(info.value)
    assert "needy" in message and "missing_thing" in message
    assert info.value.reactor == "needy" and info.value.ingredient == "missing_thing"


def test_fetch_unknown_ingredient(open_plant):
    """fetch_ingredient of a name never produced raises IngredientNotFoundError naming it."""
    plant, _ = open_plant()
    with pytest.raises(IngredientNotFoundError, match="never_made"):
        plant.fetch_ingredient("never_made")


def test_two_producers_of_one_name(open_plant):
    """Two reactors sending the same ingredient name raise DuplicateProducerError naming it."""

    @ReactorFunc
    def first(pipe):
        pipe.send("shared", 1)

    @ReactorFunc
    def second(pipe):
        pipe.send("shared", 2)
        pipe.send("only_second", 3)

    @ReactorFunc
    def target(pipe):
        a = yield pipe.receive("shared")
        b = yield pipe.receive("only_second")
        pipe.send("out", a + b)

    plant, _ = open_plant(reactors=[target, first, second])
    with pytest.raises(DuplicateProducerError) as info:
        plant.run_reactor(target)
    message = str(info.value)
    assert "shared" in message and "first" in message and "second" in message


def test_sending_twice_from_one_reactor_is_not_a_duplicate_producer(open_plant):
    """A reactor may send the same name twice; the later value wins."""

    @ReactorFunc
    def target(pipe):
        pipe.send("v", 1)
        pipe.send("v", 2)
        yield

    plant, _ = open_plant(reactors=[target])
    plant.run_reactor(target)
    assert plant.fetch_ingredient("v") == 2


def _generator():
    yield 1


@pytest.mark.parametrize("make_value", [
    pytest.param(lambda: _generator(), id="generator"),
    pytest.param(lambda: {"nested": [_generator()]}, id="nested-generator"),
    pytest.param(lambda: threading.local(), id="thread-local"),
])
def test_unpicklable_value_raises_serialization_error(open_plant, make_value):
    """Sending a value that cannot be stored raises SerializationError naming the ingredient."""

    @ReactorFunc
    def target(pipe):
        pipe.send("bad_value", make_value())
        yield

    plant, _ = open_plant(reactors=[target])
    with pytest.raises(SerializationError, match="bad_value") as info:
        plant.run_reactor(target)
    assert isinstance(info.value, TypeError)


def test_three_parameter_reactor_is_rejected():
    """A reactor with three parameters raises ReactorDefinitionError naming it."""
    with pytest.raises(ReactorDefinitionError, match="three"):
        @ReactorFunc
        def three(pipe, config, extra):
            yield


def test_zero_parameter_reactor_is_rejected():
    """A reactor with no parameter raises ReactorDefinitionError."""
    with pytest.raises(ReactorDefinitionError):
        @ReactorFunc
        def none_at_all():
            yield


def test_adding_a_non_reactor_is_rejected(open_plant):
    """add_reactors with a function not decorated with @ReactorFunc raises ReactorDefinitionError."""

    def plain(pipe):
        yield

    plant, _ = open_plant()
    with pytest.raises(ReactorDefinitionError):
        plant.add_reactors(plain)


def test_yielding_something_else_raises_protocol_error(open_plant):
    """A reactor yielding a value other than pipe.receive(...) raises ReactorProtocolError."""

    @ReactorFunc
    def wrong(pipe):
        yield 42

    plant, _ = open_plant(reactors=[wrong])
    with pytest.raises(ReactorProtocolError, match="wrong"):
        plant.run_reactor(wrong)


@pytest.mark.parametrize("kwargs", [
    pytest.param({"shape": (-1, 2), "dtype": "float32"}, id="negative-shape"),
    pytest.param({"shape": (2, 2), "dtype": "nope"}, id="bad-dtype"),
])
def test_hdf_allocation_errors(open_plant, kwargs):
    """HdfArraySpec allocation with a bad shape or dtype raises AllocationError naming the array."""

    @ReactorFunc
    def alloc(pipe):
        pipe.allocate("bad_array", specs.HdfArraySpec, **kwargs)
        yield

    plant, _ = open_plant(reactors=[alloc])
    with pytest.raises(AllocationError, match="bad_array"):
        plant.run_reactor(alloc)


def test_plant_dir_that_is_a_file(tmp_path):
    """A plantDir that is a file raises PlantDirError (an OSError)."""
    path = tmp_path / "not_a_dir"
    path.write_text("x")
    with pytest.raises(PlantDirError) as info:
        Plant(str(path))
    assert isinstance(info.value, OSError)


def test_exception_in_reactor_keeps_original_type_and_finished_reactors(open_plant, hasher):
    """A reactor's exception propagates with its type; reactors finished before stay cached."""
    fail = {"on": True}

    @ReactorFunc
    def ok(pipe):
        pipe.send("ok", np.arange(3))

    @ReactorFunc
    def fragile(pipe):
        v = yield pipe.receive("ok")
        if fail["on"]:
            raise BoomError("kaput")
        pipe.send("fragile", int(v.sum()))

    @ReactorFunc
    def target(pipe):
        v = yield pipe.receive("fragile")
        pipe.send("target", v)

    reactors = [target, fragile, ok]
    plant, events = open_plant(reactors=reactors)
    with pytest.raises(BoomError, match="kaput"):
        plant.run_reactor(target)
    assert events.started == ["target", "fragile", "ok"]
    assert events.finished == ["ok"]
    plant.shutdown()

    fail["on"] = False
    hasher.bump("fragile")
    plant2, events2 = open_plant(reactors=reactors)
    plant2.run_reactor(target)
    assert events2.started == ["target", "fragile"]
    assert plant2.fetch_ingredient("target") == 3


def test_plant_usable_after_reactor_error(open_plant, hasher):
    """After an exception the same plant object can run again once the reactor is fixed."""
    fail = {"on": True}

    @ReactorFunc
    def src(pipe):
        pipe.send("s", 1)

    @ReactorFunc
    def target(pipe):
        v = yield pipe.receive("s")
        if fail["on"]:
            raise KeyError("oops")
        pipe.send("t", v)

    plant, events = open_plant(reactors=[target, src])
    with pytest.raises(KeyError):
        plant.run_reactor(target)
    fail["on"] = False
    events.log.clear()
    plant.run_reactor(target)
    assert events.started == ["target"]
    assert plant.fetch_ingredient("t") == 1


def test_plant_dir_under_a_file(tmp_path):
    """A plantDir whose parent is a file cannot be created: PlantDirError."""
    parent = tmp_path / "file_parent"
    parent.write_text("x")
    with pytest.raises(PlantDirError):
        Plant(str(parent / "plant"))


def test_allocating_a_non_allocatable_type(open_plant):
    """Allocating a type that cannot be allocated (a simple value) raises AllocationError."""
    from pyplant import Ingredient

    @ReactorFunc
    def alloc(pipe):
        pipe.allocate("plain_value", Ingredient.Type.simple)
        yield

    plant, _ = open_plant(reactors=[alloc])
    with pytest.raises(AllocationError, match="plain_value"):
        plant.run_reactor(alloc)


def test_temp_allocations_freed_when_reactor_raises(open_plant):
    """Temp storage allocated by a reactor that raises is freed too."""
    from pyplant import Ingredient
    paths = []

    @ReactorFunc
    def crashing(pipe):
        path = pipe.allocate_temp("scratch", Ingredient.Type.file)
        with open(path, "w") as f:
            f.write("partial")
        paths.append(path)
        raise BoomError("after allocating")
        yield

    plant, _ = open_plant(reactors=[crashing])
    with pytest.raises(BoomError):
        plant.run_reactor(crashing)
    import os
    assert paths and not os.path.exists(paths[0])


def test_crashed_reactor_outputs_are_not_visible(open_plant):
    """Values sent by a reactor that then raised are not stored as its results."""
    from pyplant.errors import IngredientNotFoundError

    @ReactorFunc
    def half_done(pipe):
        pipe.send("partial", 1)
        raise BoomError("midway")
        yield

    plant, _ = open_plant(reactors=[half_done])
    with pytest.raises(BoomError):
        plant.run_reactor(half_done)
    plant.shutdown()
    plant2, _ = open_plant(reactors=[half_done])
    with pytest.raises(IngredientNotFoundError):
        plant2.fetch_ingredient("partial")


def test_producer_removed_from_plant(open_plant):
    """When the only producer of an ingredient is no longer added, receiving it raises
    IngredientNotFoundError naming the consumer and the ingredient (no stale value)."""

    @ReactorFunc
    def producer(pipe):
        pipe.send("gone", 1)

    @ReactorFunc
    def consumer(pipe):
        v = yield pipe.receive("gone")
        pipe.send("out", v)

    plant, _ = open_plant(reactors=[consumer, producer])
    plant.run_reactor(consumer)
    plant.shutdown()
    plant2, _ = open_plant(reactors=[consumer])
    with pytest.raises(IngredientNotFoundError) as info:
        plant2.run_reactor(consumer)
    assert "consumer" in str(info.value) and "gone" in str(info.value)
