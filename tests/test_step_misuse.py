"""Steps used in ways that cannot work raise ``StepUsageError`` naming the step; the plant's
own tools (force, explain, history, GC, errors) work for steps as for reactors."""
from __future__ import annotations

import numpy as np
import pytest

from pyplant import InputPath, OutputPath, Plant, ReactorFunc, get_step, pipeline, step
from pyplant.errors import StepUsageError


@step
def numbers(n):
    return np.arange(n)


@step(returns=("lo", "hi"))
def halves(x):
    return x[: len(x) // 2], x[len(x) // 2:]


@step
def plain(x):
    return x


@pytest.mark.parametrize("use, words", [
    (bool, "tested for truth"),
    (len, "measured with len()"),
    (np.asarray, "converted to an array"),
    (np.sum, "asked for attribute 'sum'"),
    (lambda r: r + 1, "used in arithmetic"),
    (lambda r: r.shape, "asked for attribute 'shape'"),
    (lambda r: r == 1, "compared"),
    (lambda r: list(r), "unpacked or iterated"),
    (lambda r: float(r), "converted to float"),
])
def test_a_lazy_result_used_as_a_value_says_what_to_do(use, words):
    result = numbers(3)
    with pytest.raises(StepUsageError) as info:
        use(result)
    assert words in str(info.value)
    assert ".result()" in str(info.value) or "returns=" in str(info.value)
    assert info.value.step == "numbers"


def test_arguments_that_do_not_fit_name_the_step():
    with pytest.raises(StepUsageError, match=r"step 'numbers' called with arguments that do not fit"):
        numbers(1, 2)
    with pytest.raises(StepUsageError, match=r"step 'halves' returns \['lo', 'hi'\]; 5 is not one of them"):
        halves(numbers(3))[5]


def test_output_paths_are_given_by_the_plant():
    @step
    def write(n, out_path: OutputPath()):
        open(out_path, "w").write(str(n))

    with pytest.raises(StepUsageError, match="parameter 'out_path' is an OutputPath"):
        write(1, out_path="/tmp/x")


def test_a_result_needs_a_plant():
    with pytest.raises(StepUsageError, match="needs a plant to run on"):
        numbers(2).result()

    @pipeline
    def flow():
        return numbers(2)

    with pytest.raises(StepUsageError, match="needs a plant to run on"):
        flow()


def test_generators_and_bad_returns_are_refused_at_definition():
    def gen(pipe):
        yield pipe

    with pytest.raises(StepUsageError, match="generator or async function"):
        step(gen)
    with pytest.raises(StepUsageError, match="distinct non-empty names"):
        step(returns=("a", "a"))(lambda: (1, 1))
    with pytest.raises(StepUsageError, match="get_step needs a step result"):
        get_step(3)
    with pytest.raises(StepUsageError, match="add_depends_on takes step results"):
        get_step(numbers(1)).add_depends_on([3])


def test_input_path_needs_an_existing_file(tmp_path):
    @step
    def read(data: InputPath()):
        return open(data).read()

    with Plant(tmp_path / "p") as plant, pytest.raises(StepUsageError) as info:
        plant.run(read(str(tmp_path / "missing.csv")))
    assert info.value.step.endswith("read") and "InputPath" in str(info.value)


def test_a_step_named_like_a_reactor_is_refused(tmp_path):
    @ReactorFunc
    def clash(pipe):
        pipe.send("clash_r", 1)
        yield from ()

    with Plant(tmp_path / "p") as plant:
        plant.add_reactors(clash)
        with pytest.raises(StepUsageError, match="step 'clash' has the name of a reactor"):
            plant.run(step(name="clash")(lambda n: n)(2))


def test_a_step_that_raises_keeps_what_finished_before(tmp_path):
    ran = []

    @step
    def first(n):
        ran.append("first")
        return n + 1

    @step
    def broken(x, fail):
        ran.append("broken")
        if fail:
            raise ValueError("bad input")
        return x * 2

    with Plant(tmp_path / "p") as plant:
        with pytest.raises(ValueError, match="bad input") as info:
            plant.run(broken(first(1), True))
        assert "broken" in "".join(getattr(info.value, "__notes__", []))
        assert plant.run(broken(first(1), False)) == 4
    assert ran == ["first", "broken", "broken"]  # first stayed cached


def test_force_explain_history_and_gc_work_for_steps(tmp_path):
    ran = []

    @step
    def scale(x, k=2):
        ran.append(int(x.sum()))
        return x * k

    with Plant(tmp_path / "p") as plant:
        a, b = halves(numbers(6))
        out = plant.run([scale(a), scale(b)])
        assert [o.tolist() for o in out] == [[0, 2, 4], [6, 8, 10]]
        history = plant.get_execution_history()
        assert {"numbers", "halves", "scale", "scale_1"} <= set(history)
        assert plant.explain("scale_1") == "no trace yet"  # not 'changed' from scale's trace
        assert history["scale_1"].wasRun

        plant.force("scale")
        ran.clear()
        plant.run([scale(a), scale(b)])
        assert ran == [3]  # only the forced instance
        assert plant.explain("scale") == "forced"
        assert plant.explain("scale_1") == "up to date"

        assert plant.gc(keep_last=1).traces >= 0
        ran.clear()
        out = plant.run([scale(a), scale(b)])
        assert ran == [] and out[1].tolist() == [6, 8, 10]  # GC kept both calls' results
        assert plant.fetch_ingredient("scale_1").tolist() == [6, 8, 10]
        assert plant.fetch_ingredient("hi").tolist() == [3, 4, 5]


def test_a_new_process_finds_both_calls_after_gc(tmp_path):
    """GC keeps the latest trace of each ingredient, not only the latest of the step (the GC
    runs on a plant that holds nothing, so no lease protects them)."""
    with Plant(tmp_path / "p") as plant:
        a, b = halves(numbers(6))
        plant.run([plain(a), plain(b)])
    with Plant(tmp_path / "p") as plant:
        plant.gc(keep_last=1)
    ran = []
    with Plant(tmp_path / "p") as plant:
        plant.add_event_listener(Plant.EventType.reactor_started, lambda e, n, f: ran.append(n))
        a, b = halves(numbers(6))
        assert [v.tolist() for v in plant.run([plain(a), plain(b)])] == [[0, 1, 2], [3, 4, 5]]
        assert ran == []
    with Plant(tmp_path / "p") as plant:
        assert plant.fetch_ingredient("plain").tolist() == [0, 1, 2]
        assert plant.fetch_ingredient("plain_1").tolist() == [3, 4, 5]


def test_a_reactor_run_after_steps_receives_their_outputs(tmp_path):
    @step
    def base(n):
        return n + 1

    @ReactorFunc
    def doubled(pipe):
        x = yield pipe.receive("base")
        pipe.send("doubled", x * 2)

    with Plant(tmp_path / "p") as plant:
        plant.add_reactors(doubled)
        assert plant.run(base(3)) == 4
        plant.run_reactor(doubled)
        assert plant.fetch_ingredient("doubled") == 8
        assert plant.explain() == {"doubled": "target of run_reactor", "base": "up to date"}


def test_a_redefined_step_keeps_its_call_names_and_runs_its_new_code(tmp_path, monkeypatch):
    """A notebook cell run again redefines a step: the same call keeps its name (and its
    ingredient's name) and the new code runs."""
    import importlib
    import sys
    module = tmp_path / "cell_steps.py"
    module.write_text("from pyplant import step\n\n@step\ndef bump(x):\n    return x + 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import cell_steps
    plant = Plant(tmp_path / "p")
    try:
        first = cell_steps.bump(1)
        assert plant.run(first) == 2
        module.write_text("from pyplant import step\n\n@step\ndef bump(x):\n    return x + 100\n")
        importlib.reload(cell_steps)
        again = cell_steps.bump(1)
        assert again.call.name == first.call.name
        assert plant.run(again) == 101
        assert plant.fetch_ingredient(again.ingredient) == 101
        assert plant.explain(again.call.name).startswith("code changed")
    finally:
        plant.shutdown()
        sys.modules.pop("cell_steps", None)


def test_a_reactor_ingredient_alone_is_not_a_target(tmp_path):
    from pyplant import ingredient
    with Plant(tmp_path / "p") as plant, pytest.raises(StepUsageError, match=r"ingredient\('x'\) stands for"):
        plant.run(ingredient("x"))


def test_every_slot_of_a_list_argument_is_in_the_trace(tmp_path):
    """A list whose last two items were one call's result, then two calls' results: the same
    argument token, another input in slot 2. The trace records every slot, not only the first
    slot of each ingredient, so the step re-runs."""
    ran = []

    @step
    def sizes(items):
        ran.append([len(x) for x in items])
        return [len(x) for x in items]

    with Plant(tmp_path / "p") as plant:
        r0, r1 = numbers(3), numbers(4)
        assert plant.run(sizes([r0, r1, r1])) == [3, 4, 4]
        assert plant.run(sizes([r0, r1, numbers(5)])) == [3, 4, 5]
        assert plant.run(sizes([r0, r1, r1])) == [3, 4, 4]
    assert ran == [[3, 4, 4], [3, 4, 5]]
