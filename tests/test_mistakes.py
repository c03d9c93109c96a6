"""Mistakes fail before work starts, and renames cost no more than the renamed reactor.

* a typo in ``pipe.receive('dta')`` raises before any reactor runs, with "did you mean";
* a reactor that cannot send what is needed is never started;
* two producers of one name are refused before any reactor runs, or as soon as a trace shows
  another producer that still sends it;
* a forgotten ``yield`` or ``yield from`` is named;
* a producer renamed or split in two, with byte-identical output, re-runs only itself: its
  consumers verify by content hash (early cutoff).
"""
from __future__ import annotations

import pytest

from pyplant import ReactorFunc, SubreactorFunc
from pyplant.errors import DuplicateProducerError, IngredientNotFoundError, ReactorProtocolError

from conftest import Box, result_of, run_script, write_script


def test_receive_typo_fails_before_any_reactor_runs(open_plant):
    ran = Box()

    @ReactorFunc
    def slow(pipe):
        ran["slow"] = True  # hours of work in real life
        pipe.send("data", 1)

    @ReactorFunc
    def target(pipe):
        ran["target"] = True
        x = yield pipe.receive("dta")
        pipe.send("out", x)

    plant, events = open_plant(reactors=[slow, target])
    with pytest.raises(IngredientNotFoundError, match=r"'dta'.*did you mean 'data'\?") as info:
        plant.run_reactor(target)
    assert info.value.reactor == "target" and info.value.ingredient == "dta"
    assert events.started == [] and "slow" not in ran and "target" not in ran


def test_typo_upstream_of_the_target_fails_before_work_too(open_plant):
    ran = Box()

    @ReactorFunc
    def load(pipe):
        ran["load"] = True
        pipe.send("raw", 1)

    @ReactorFunc
    def clean(pipe):
        x = yield pipe.receive("rwa")
        pipe.send("clean", x)

    @ReactorFunc
    def target(pipe):
        ran["target"] = True
        pipe.send("out", (yield pipe.receive("clean")))

    plant, events = open_plant(reactors=[load, clean, target])
    with pytest.raises(IngredientNotFoundError, match=r"reactor 'clean'.*'rwa'.*did you mean 'raw'\?"):
        plant.run_reactor(target)
    assert events.started == [] and not ran.data


def test_a_reactor_with_names_built_at_run_time_is_still_tried(open_plant):
    """A send whose name is not a literal might send anything: discovery tries it."""

    @ReactorFunc
    def dynamic(pipe):
        for i in range(2):
            pipe.send(f"part{i}", i)

    @ReactorFunc
    def unrelated(pipe):
        pipe.send("z", 0)

    @ReactorFunc
    def target(pipe):
        pipe.send("out", (yield pipe.receive("part1")))

    plant, events = open_plant(reactors=[unrelated, dynamic, target])
    plant.run_reactor(target)
    assert plant.fetch_ingredient("out") == 1
    assert events.started == ["target", "dynamic"]


def test_two_literal_producers_are_refused_before_any_work(open_plant):
    ran = Box()

    @ReactorFunc
    def first(pipe):
        ran["first"] = True
        pipe.send("x", 1)

    @ReactorFunc
    def second(pipe):
        ran["second"] = True
        pipe.send("x", 2)

    @ReactorFunc
    def target(pipe):
        pipe.send("out", (yield pipe.receive("x")))

    plant, events = open_plant(reactors=[first, second, target])
    with pytest.raises(DuplicateProducerError, match=r"'first' and 'second' both send ingredient 'x'") as info:
        plant.run_reactor(target)
    assert info.value.ingredient == "x"
    assert events.started == [] and not ran.data


def test_a_trace_naming_another_producer_that_still_sends_it_is_refused(open_plant):
    """Sessions apart: 'x' was produced by `first`, which still sends it; `second` sends 'x'
    under a name built at run time. The last writer must not silently win."""

    @ReactorFunc
    def first(pipe):
        pipe.send("x", 1)

    @ReactorFunc
    def use_first(pipe):
        pipe.send("a", (yield pipe.receive("x")))

    @ReactorFunc
    def second(pipe):
        pipe.send("".join(["x"]), 2)
        pipe.send("b", 0)

    @ReactorFunc
    def use_second(pipe):
        pipe.send("c", (yield pipe.receive("b")))

    plant, _ = open_plant(reactors=[first, use_first])
    plant.run_reactor(use_first)
    plant.shutdown()
    plant2, _ = open_plant(reactors=[second, use_second, first, use_first])
    with pytest.raises(DuplicateProducerError, match=r"'first' and 'second' both send ingredient 'x'"):
        plant2.run_reactor(use_second)
    assert plant2.fetch_ingredient("x") == 1  # nothing overwritten


def test_receive_without_yield_is_named(open_plant):
    @ReactorFunc
    def producer(pipe):
        pipe.send("x", 1)

    @ReactorFunc
    def forgot(pipe):
        data = pipe.receive("x")
        print(data)
        yield

    plant, _ = open_plant(reactors=[producer, forgot])
    with pytest.raises(ReactorProtocolError, match=r"pipe.receive\('x'\) without yield"):
        plant.run_reactor(forgot)


def test_sending_a_receive_request_is_refused(open_plant):
    @ReactorFunc
    def producer(pipe):
        pipe.send("x", 1)

    @ReactorFunc
    def forgot(pipe):
        data = pipe.receive("x")
        pipe.send("y", data)
        yield

    plant, _ = open_plant(reactors=[producer, forgot])
    with pytest.raises(ReactorProtocolError, match=r"sent ingredient 'y'.*yield is missing") as info:
        plant.run_reactor(forgot)
    assert info.value.reactor == "forgot" and info.value.ingredient == "y"
    with pytest.raises(IngredientNotFoundError):
        plant.fetch_ingredient("y")


def test_subreactor_called_without_yield_from_is_named(open_plant):
    @SubreactorFunc
    def normalize(pipe, x):
        return x / 2

    @ReactorFunc
    def target(pipe):
        z = normalize(pipe, 4.0)  # a generator that never runs
        RESULT = z  # noqa: F841
        yield

    plant, _ = open_plant(reactors=[target])
    with pytest.raises(ReactorProtocolError, match=r"subreactor 'normalize' without 'yield from'"):
        plant.run_reactor(target)


@pytest.mark.parametrize("use", ["sum", "arithmetic", "attribute", "subreactor"])
def test_a_value_used_without_its_yield_fails_with_the_fix_in_a_note(open_plant, use):
    """Using ``pipe.receive('x')`` (or a subreactor call) as if it were the value fails inside
    the body with Python's own error, which keeps its type; a note says the yield (or
    ``yield from``) is missing and how to write it."""
    @SubreactorFunc
    def halve(pipe, x):
        return x / 2

    @ReactorFunc
    def producer(pipe):
        pipe.send("x", [1, 2])

    @ReactorFunc
    def forgot(pipe):
        if use == "subreactor":
            value = halve(pipe, 4.0) + 1
        else:
            data = pipe.receive("x")
            value = {"sum": lambda: sum(data), "arithmetic": lambda: data + 1,
                     "attribute": lambda: data.shape}[use]()
        pipe.send("out", value)
        yield

    plant, _ = open_plant(reactors=[producer, forgot])
    with pytest.raises((TypeError, AttributeError)) as info:
        plant.run_reactor(forgot)
    notes = "\n".join(info.value.__notes__)
    if use == "subreactor":
        assert "subreactor 'halve' was called without 'yield from'" in notes
        assert "result = yield from halve(...)" in notes
    else:
        assert "pipe.receive('x') was called but not yielded" in notes
        assert "x = yield pipe.receive('x')" in notes


RENAME_V1 = '''
@ReactorFunc
def fit_coef(pipe):
    pipe.send("coef", np.arange(4.0) * 2)

@ReactorFunc
def evaluate(pipe):
    coef = yield pipe.receive("coef")
    pipe.send("score", float(coef.sum()))

@ReactorFunc
def show(pipe):
    RESULT["score"] = yield pipe.receive("score")

with open_plant() as plant:
    plant.run_reactor(show)
    report(explain=plant.explain())
'''

RENAME_V2 = RENAME_V1.replace("def fit_coef(pipe)", "def fit(pipe)")

SPLIT_V3 = '''
@ReactorFunc
def prepare(pipe):
    pipe.send("base", np.arange(4.0))

@ReactorFunc
def fit(pipe):
    base = yield pipe.receive("base")
    pipe.send("coef", base + base)
''' + RENAME_V1[RENAME_V1.index("@ReactorFunc\ndef evaluate"):]


def test_renamed_then_split_producer_with_identical_output_stops_the_wave(tmp_path):
    script = tmp_path / "pipeline.py"
    write_script(script, RENAME_V1)
    first = result_of(run_script(script, tmp_path / "p"))
    assert first["result"]["score"] == 12.0

    write_script(script, RENAME_V2)  # fit_coef renamed to fit, same body
    renamed = result_of(run_script(script, tmp_path / "p"))
    assert renamed["started"] == ["show", "fit"]
    assert renamed["explain"]["evaluate"] == "up to date"
    assert renamed["result"]["score"] == 12.0

    write_script(script, SPLIT_V3)  # fit split into prepare + fit, same coef
    split = result_of(run_script(script, tmp_path / "p"))
    assert sorted(split["started"]) == ["fit", "prepare", "show"]
    assert split["explain"]["evaluate"] == "up to date"
    scratch = result_of(run_script(script, tmp_path / "fresh"))
    assert scratch["result"] == split["result"]


STATIC_V1 = '''
@ReactorFunc
def load(pipe):
    pipe.send("raw", 3)

@ReactorFunc
def other(pipe):
    pipe.send("unrelated", 1)

@ReactorFunc
def double(pipe):
    x = yield pipe.receive("{received}")
    pipe.send("doubled", 2 * x)

@ReactorFunc
def show(pipe):
    RESULT["doubled"] = yield pipe.receive("doubled")

plant = open_plant()
plant.add_reactors(load, other, double, show)
try:
    plant.run_reactor(show)
except errors.IngredientNotFoundError as exc:
    RESULT["error"] = str(exc)
report()
'''


def test_an_edited_reactors_sends_are_read_again_and_the_others_reused(tmp_path):
    """The sends and receives found in source are memoized per reactor by its code map: after
    an edit in a new process, the edited reactors' new names are what the checks see (a
    receive of the renamed ingredient is found, one of the old name fails before work), and
    the unchanged reactors keep theirs."""
    script = tmp_path / "pipeline.py"
    write_script(script, STATIC_V1.format(received="raw"))
    assert result_of(run_script(script, tmp_path / "p"))["result"] == {"doubled": 6}

    renamed = STATIC_V1.format(received="raw_v2").replace('pipe.send("raw", 3)', 'pipe.send("raw_v2", 4)')
    write_script(script, renamed)  # load now sends raw_v2, double receives it
    second = result_of(run_script(script, tmp_path / "p"))
    assert second["result"] == {"doubled": 8}
    assert second["started"] == ["show", "double", "load"]

    typo = STATIC_V1.format(received="raw").replace('pipe.send("raw", 3)', 'pipe.send("raw_v2", 4)')
    write_script(script, typo)  # double receives raw again, which nobody sends any more
    third = result_of(run_script(script, tmp_path / "p"))
    assert third["started"] == []
    assert "receives ingredient 'raw'" in third["result"]["error"]
    assert "did you mean 'raw_v2'?" in third["result"]["error"]


def test_a_reactor_running_another_plant_is_not_taken_for_a_producer(open_plant, tmp_path):
    """A reactor that runs a second plant (on another directory) with a reactor of this one
    does not send what that reactor sends: no DuplicateProducerError, and each plant's
    ingredient comes from its own run."""
    from pyplant import Plant

    @ReactorFunc
    def make_x(pipe):
        pipe.send("x", 1)

    @ReactorFunc
    def nested(pipe):
        with Plant(str(tmp_path / "inner")) as inner:
            inner.add_reactors(make_x)
            inner.run_reactor(make_x)
            value = inner.fetch_ingredient("x")
        x = yield pipe.receive("x")
        pipe.send("z", value + 10 * x)

    plant, events = open_plant(reactors=[make_x, nested])
    plant.run_reactor(nested)
    assert plant.fetch_ingredient("z") == 11
    assert sorted(events.started) == ["make_x", "nested"]


@pytest.mark.parametrize("receive_first", ["other", "data"])
@pytest.mark.parametrize("how", ["constant", "loop"])
def test_a_name_built_at_run_time_that_another_reactor_sends_literally_is_refused(open_plant, how, receive_first):
    """``pipe.send(OUT, ...)`` with ``OUT = 'data'`` (or names from a loop) while another
    reactor sends 'data' literally: refused at the send, whatever the order of receives (it
    used to depend on it: receiving 'other' first served the second producer's 'data')."""
    out = "data"

    @ReactorFunc
    def literal(pipe):
        pipe.send("data", 1)

    if how == "constant":
        @ReactorFunc
        def built(pipe):
            pipe.send(out, 2)
            pipe.send("other", 5)
    else:
        @ReactorFunc
        def built(pipe):
            for name in [out, "other"]:
                pipe.send(name, 2)

    @ReactorFunc
    def final(pipe):
        first = yield pipe.receive(receive_first)
        second = yield pipe.receive("data" if receive_first == "other" else "other")
        pipe.send("result", (first, second))

    plant, _ = open_plant(reactors=[literal, built, final])
    with pytest.raises(DuplicateProducerError, match="'literal' and 'built' both send ingredient 'data'") as info:
        plant.run_reactor(final)
    assert info.value.reactor == "built" and info.value.ingredient == "data"


def test_names_held_in_module_constants_are_checked_before_work(tmp_path):
    """``pipe.receive(NAME)`` with ``NAME = 'dta'`` at module level fails before the slow
    producer of another input runs, with "did you mean"; ``pipe.send(OUT, ...)`` with
    ``OUT = 'data'`` beside a literal sender of 'data' is refused before any work."""
    script = write_script(tmp_path / "typo.py", '''
NAME = "dta"
OUT = "data"

@ReactorFunc
def slow(pipe):
    pipe.send("x", 1)

@ReactorFunc
def load(pipe):
    pipe.send("data", 2)

@ReactorFunc
def other_load(pipe):
    pipe.send(OUT, 3)

@ReactorFunc
def final(pipe):
    x = yield pipe.receive("x")
    d = yield pipe.receive(NAME)
    pipe.send("result", x + d)

plant = open_plant()
plant.add_reactors(slow, load, final, *([other_load] if ARGS[0] == "two senders" else []))
try:
    plant.run_reactor(final)
except (errors.IngredientNotFoundError, errors.DuplicateProducerError) as exc:
    RESULT["error"] = [type(exc).__name__, str(exc)]
report()
''')
    typo = result_of(run_script(script, tmp_path / "p", "typo"))
    assert typo["started"] == []
    kind, message = typo["result"]["error"]
    assert kind == "IngredientNotFoundError" and "'dta'" in message and "did you mean 'data'?" in message
    two = result_of(run_script(script, tmp_path / "q", "two senders"))
    assert two["started"] == []
    kind, message = two["result"]["error"]
    assert kind == "DuplicateProducerError" and "'load' and 'other_load' both send ingredient 'data'" in message
