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

    @ReactorFunc
    def dynamic(pipe):
        for i in range(2):
            pipe.send(f"part{i}", i)  # names built at run time: it might send anything

    plant, _ = open_plant(reactors=[needy, unrelated])
    with pytest.raises(IngredientNotFoundError) as info:
        plant.run_reactor(needy)
    message = str(info.value)
    assert "needy" in message and "missing_thing" in message
    assert info.value.reactor == "needy" and info.value.ingredient == "missing_thing"
    assert info.value.tried == []  # found before any work: no source sends it
    assert "tried: none;" in message

    plant, _ = open_plant(reactors=[needy, unrelated, dynamic], directory=plant.plantDir + "-2")
    with pytest.raises(IngredientNotFoundError) as info:
        plant.run_reactor(needy)
    assert info.value.tried == ["dynamic"]  # only the reactor that may send it was started
    assert "tried: dynamic;" in str(info.value)


def test_dependency_cycle_names_it_a_to_b_to_a(open_plant):
    """Two reactors each waiting for the other's ingredient raise DependencyCycleError whose
    message shows the cycle as 'ping -> pong -> ping' and whose ``cycle`` lists it."""
    from pyplant.errors import DependencyCycleError

    @ReactorFunc
    def ping(pipe):
        y = yield pipe.receive("pong_value")
        pipe.send("ping_value", y)

    @ReactorFunc
    def pong(pipe):
        x = yield pipe.receive("ping_value")
        pipe.send("pong_value", x)

    plant, _ = open_plant(reactors=[ping, pong])
    with pytest.raises(DependencyCycleError, match=r"dependency cycle: ping -> pong -> ping ") as info:
        plant.run_reactor(ping)
    assert info.value.cycle == ["ping", "pong", "ping"]
    assert info.value.ingredient == "ping_value"
    assert isinstance(info.value, RuntimeError)


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


# --- ingredient names that cannot be stored ---------------------------------------------------

from pyplant import Ingredient  # noqa: E402
from pyplant.errors import (IngredientNameError, IngredientNameTypeError,  # noqa: E402
                            PlantClosedError, ReentrantRunError)

BAD_NAMES = [
    pytest.param("", IngredientNameError, id="empty"),
    pytest.param("x" * 512, IngredientNameError, id="512-bytes"),
    pytest.param("ü" * 256, IngredientNameError, id="512-bytes-utf8"),
    pytest.param("a\0b", IngredientNameError, id="nul"),
    pytest.param("bad\ud800surrogate", IngredientNameError, id="lone-surrogate"),
    pytest.param(b"bytes", IngredientNameTypeError, id="bytes"),
    pytest.param(123, IngredientNameTypeError, id="int"),
    pytest.param(None, IngredientNameTypeError, id="none"),
    pytest.param(("t",), IngredientNameTypeError, id="tuple"),
]

OPERATIONS = ["send", "allocate-file", "allocate-hdf", "allocate_temp", "receive"]


def stored_files(plant_dir):
    import os
    found = []
    for top in ("blobs", "files", "specs"):
        for root, _, names in os.walk(os.path.join(plant_dir, top)):
            found += [os.path.join(root, n) for n in names]
    return sorted(found)


@pytest.mark.parametrize("op", OPERATIONS)
@pytest.mark.parametrize("name, error", BAD_NAMES)
def test_unstorable_ingredient_name_is_refused_at_the_call(open_plant, name, error, op):
    """An ingredient name that cannot be stored (empty, over 511 bytes, NUL, not encodable,
    not a str) raises IngredientNameError (IngredientNameTypeError, also a TypeError, for a
    non-str) naming the reactor and the ingredient at the send/allocate/receive call itself,
    before the rest of the reactor body runs and before any file is created; what finished
    before stays cached."""
    after_call = []

    @ReactorFunc
    def good(pipe):
        pipe.send("good", np.arange(3))

    @ReactorFunc
    def bad(pipe):
        yield pipe.receive("good")
        if op == "send":
            pipe.send(name, 1)
        elif op == "allocate-file":
            pipe.allocate(name, Ingredient.Type.file)
        elif op == "allocate-hdf":
            pipe.allocate(name, specs.HdfArraySpec, shape=(2,), dtype="int8")
        elif op == "allocate_temp":
            pipe.allocate_temp(name, specs.HdfArraySpec, shape=(2,), dtype="int8")
        else:
            yield pipe.receive(name)
        after_call.append(1)

    plant, events = open_plant(reactors=[bad, good])
    files_before = None
    for attempt in range(2):  # a retry leaves no orphan either
        with pytest.raises(error) as info:
            plant.run_reactor(bad)
        files_before = files_before or stored_files(plant.plantDir)
        assert stored_files(plant.plantDir) == files_before
    assert isinstance(info.value, ValueError if error is IngredientNameError else TypeError)
    assert "'bad'" in str(info.value) and info.value.reactor == "bad"
    assert repr(name)[:40] in str(info.value) or str(name)[:40] in str(info.value)
    assert after_call == []
    plant.shutdown()
    plant2, events2 = open_plant(reactors=[bad, good])
    with pytest.raises(error):
        plant2.run_reactor(bad)
    assert events2.started == ["bad"]  # 'good' stayed cached


@pytest.mark.parametrize("name, error", BAD_NAMES)
def test_fetch_ingredient_with_an_unstorable_name(open_plant, name, error):
    """fetch_ingredient of such a name raises the same error, not a raw LMDB error."""
    plant, _ = open_plant()
    with pytest.raises(error):
        plant.fetch_ingredient(name)


def test_longest_storable_name_works(open_plant):
    """A name of exactly 511 bytes in UTF-8 is stored and received (the limit is exact)."""
    name = "n" * 511

    @ReactorFunc
    def producer(pipe):
        pipe.send(name, {"ok": True})

    @ReactorFunc
    def consumer(pipe):
        v = yield pipe.receive(name)
        pipe.send("out", v["ok"])

    plant, _ = open_plant(reactors=[consumer, producer])
    plant.run_reactor(consumer)
    plant.shutdown()
    plant2, events = open_plant(reactors=[consumer, producer])
    plant2.run_reactor(consumer)
    assert events.started == ["consumer"]
    assert plant2.fetch_ingredient("out") is True


# --- a closed plant, and run_reactor from inside a run ------------------------------------------

def every_method_call(plant, reactor):
    return {
        "run_reactor": lambda: plant.run_reactor(reactor),
        "fetch_ingredient": lambda: plant.fetch_ingredient("v"),
        "gc": lambda: plant.gc(),
        "invalidate_ingredient": lambda: plant.invalidate_ingredient("v"),
        "force": lambda: plant.force(reactor),
        "explain": lambda: plant.explain(),
        "set_config": lambda: plant.set_config({"a": 1}),
        "get_config_object": lambda: plant.get_config_object(),
        "mark_params_as_auxiliary": lambda: plant.mark_params_as_auxiliary(["a"]),
        "add_reactors": lambda: plant.add_reactors(reactor),
        "add_reactor": lambda: plant.add_reactor(reactor),
        "add_all_visible_reactors": lambda: plant.add_all_visible_reactors(),
        "get_reactors": lambda: plant.get_reactors(),
        "add_event_listener": lambda: plant.add_event_listener(Plant.EventType.reactor_started, print),
        "remove_event_listener": lambda: plant.remove_event_listener(print),
        "get_execution_history": lambda: plant.get_execution_history(),
        "print_execution_history": lambda: plant.print_execution_history(),
    }


@pytest.mark.parametrize("how", ["shutdown", "with-block"])
def test_every_method_of_a_closed_plant_raises_plant_closed_error(plant_dir, how):
    """After shutdown() or the end of the with block every method raises PlantClosedError
    (a RuntimeError) naming the method; shutdown() again is harmless."""
    ran = []

    @ReactorFunc
    def r(pipe):
        ran.append(1)
        pipe.send("v", 1)

    if how == "shutdown":
        plant = Plant(str(plant_dir))
        plant.add_reactors(r)
        plant.run_reactor(r)
        plant.shutdown()
    else:
        with Plant(str(plant_dir)) as plant:
            plant.add_reactors(r)
            plant.run_reactor(r)
    ran.clear()
    for method, call in every_method_call(plant, r).items():
        with pytest.raises(PlantClosedError, match=method):
            call()
    assert isinstance(PlantClosedError("x"), RuntimeError)
    assert ran == []
    plant.shutdown()


def test_closed_plant_runs_nothing_while_another_plant_is_open(plant_dir):
    """Another Plant on the same directory keeps the metadata open: the closed plant still
    refuses to run (its reactor never starts, nothing is committed)."""
    ran = []

    @ReactorFunc
    def r(pipe, config):
        ran.append(config.k)
        pipe.send("v", config.k)

    first = Plant(str(plant_dir))
    second = Plant(str(plant_dir))
    first.add_reactors(r)
    first.set_config({"k": 1})
    first.shutdown()
    with pytest.raises(PlantClosedError):
        first.run_reactor(r)
    assert ran == []
    second.add_reactors(r)
    second.set_config({"k": 2})
    with pytest.raises(LookupError):
        second.fetch_ingredient("v")
    second.run_reactor(r)
    assert second.fetch_ingredient("v") == 2
    second.shutdown()


def test_reactor_calling_run_reactor_on_its_own_plant(open_plant):
    """A reactor that calls run_reactor on the plant running it gets ReentrantRunError naming
    the reactor (not a RecursionError); reactors finished before stay cached, and the plant
    runs normally afterwards."""
    holder = {}

    @ReactorFunc
    def base(pipe):
        pipe.send("base", 1)

    @ReactorFunc
    def nested(pipe):
        b = yield pipe.receive("base")
        holder["plant"].run_reactor("nested")
        pipe.send("nested", b)

    @ReactorFunc
    def fine(pipe):
        b = yield pipe.receive("base")
        pipe.send("fine", b + 1)

    plant, events = open_plant(reactors=[nested, fine, base])
    holder["plant"] = plant
    with pytest.raises(ReentrantRunError, match="nested") as info:
        plant.run_reactor(nested)
    assert isinstance(info.value, RuntimeError)
    events.log.clear()
    plant.run_reactor(fine)
    assert events.started == ["fine"]
    assert plant.fetch_ingredient("fine") == 2


def test_full_disk_while_a_reactor_raises_shows_the_reactors_error(open_plant, monkeypatch):
    """The disk fills up just as a reactor raises: run_reactor raises the reactor's own
    exception (not a disk error from the cleanup); the plant works again once there is space."""
    import errno
    import os as os_module

    from pyplant.warehouse import metadata as metadata_module
    full = {"on": False}

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    real_write_txn, real_write, real_replace = (metadata_module.MetadataStore._write, os_module.write,
                                                os_module.replace)
    monkeypatch.setattr(metadata_module.MetadataStore, "_write",
                        lambda self: no_space() if full["on"] else real_write_txn(self))
    monkeypatch.setattr(os_module, "write", lambda *a: no_space() if full["on"] else real_write(*a))
    monkeypatch.setattr(os_module, "replace", lambda *a, **k: no_space() if full["on"] else real_replace(*a, **k))

    @ReactorFunc
    def first(pipe):
        pipe.send("first", np.arange(4))

    @ReactorFunc
    def failing(pipe):
        x = yield pipe.receive("first")
        full["on"] = True
        raise BoomError(f"the reactor's own error ({int(x.sum())})")

    plant, _ = open_plant(reactors=[failing, first])
    with pytest.raises(BoomError, match="own error"):
        plant.run_reactor(failing)
    full["on"] = False
    plant.shutdown()
    plant2, events = open_plant(reactors=[failing, first])
    with pytest.raises(BoomError):
        plant2.run_reactor(failing)
    assert events.started == ["failing"]  # 'first' committed before the disk filled up


def test_misnamed_calls_say_what_they_meant(open_plant):
    """explain() of a reactor the last run did not involve, force() of something that is no
    reactor, fetch_ingredient() of a typo: pyplant errors, with the closest name."""
    from pyplant.errors import IngredientNotFoundError, NotExplainedError, UnknownReactorError

    @ReactorFunc
    def load_data(pipe):
        pipe.send("data", 1)

    plant, _ = open_plant(reactors=[load_data])
    plant.run_reactor(load_data)
    with pytest.raises(NotExplainedError, match="'load_dta' was not part of the last run.*did you mean 'load_data'"):
        plant.explain("load_dta")
    with pytest.raises(KeyError):  # as a lookup of explain()'s mapping would
        plant.explain("load_dta")
    with pytest.raises(UnknownReactorError, match="42 is neither a reactor"):
        plant.force(42)
    with pytest.raises(IngredientNotFoundError, match="'dta' is not in the warehouse.*did you mean 'data'"):
        plant.fetch_ingredient("dta")


def test_a_closed_plant_cannot_be_entered_again_nor_its_warehouse_extended(open_plant):
    from pyplant.errors import PlantClosedError

    plant, _ = open_plant()
    warehouse = plant.warehouse
    plant.shutdown()
    with pytest.raises(PlantClosedError):
        with plant:
            pass
    with pytest.raises(PlantClosedError):
        warehouse.register_codecs([])
    with pytest.raises(PlantClosedError):
        warehouse.register_ingredient_specs([])
