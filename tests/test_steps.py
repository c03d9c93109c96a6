"""Steps from plain functions, each run in a fresh process where a restart matters.

Every scenario writes a module of steps (``flow.py``) and a driver script; between runs the
test edits the module or the arguments, runs the driver again in a new process, and checks
which steps ran (the ``reactor_started`` events) and the values, against a from-scratch run
in a fresh plant directory.
"""
from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import result_of, run_script, write_script

DRIVER = '''
import importlib, json
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import flow
from pyplant import Plant

args = json.loads(ARGS[0]) if ARGS else {}
with open_plant() as plant:
    out = plant.run(flow.main, **args)
    RESULT["value"] = flow.shown(out) if hasattr(flow, "shown") else out
    RESULT["explain"] = plant.explain()
report()
'''

HEADER = '''
import numpy as np
from pyplant import step, pipeline, get_step, ingredient, InputPath, OutputPath, command_step
'''


class Flow:
    """A steps module and its driver in ``tmp_path``; ``run`` runs it in a new process."""

    def __init__(self, tmp_path: Path, source: str):
        self.dir = tmp_path
        self.write(source)
        self.driver = write_script(tmp_path / "driver.py", DRIVER)
        self.plant = tmp_path / "plant"

    def write(self, source: str) -> None:
        (self.dir / "flow.py").write_text(HEADER + textwrap.dedent(source))

    def edit(self, old: str, new: str) -> None:
        text = (self.dir / "flow.py").read_text()
        assert old in text, old
        (self.dir / "flow.py").write_text(text.replace(old, new))

    def run(self, plant: Path | None = None, **args) -> tuple[list[str], object, dict]:
        out = result_of(run_script(self.driver, plant or self.plant, json.dumps(args)))
        return out["started"], out["result"]["value"], out["result"]["explain"]

    def scratch(self, name: str, **args) -> object:
        """The value from a fresh plant directory: what an incremental run must equal."""
        started, value, _ = self.run(self.dir / f"scratch-{name}", **args)
        assert started, "a from-scratch run must run every step"
        return value


CHAIN = '''
@step
def load(n):
    return np.arange(n, dtype=float)

@step(returns=("train", "test"))
def split(x, frac=0.5):
    k = int(len(x) * frac)
    return x[:k], x[k:]

@step
def scale(x, factor=1.0):
    return x * factor

@step
def total(a, b):
    return float(a.sum() + b.sum())

@pipeline
def main(n=10, factor=1.0, frac=0.5):
    train, test = split(load(n), frac=frac)
    return total(scale(train, factor=factor), scale(test))
'''


def test_warm_run_executes_no_step_and_an_argument_reruns_exactly_its_downstream(tmp_path):
    flow = Flow(tmp_path, CHAIN)
    started, value, _ = flow.run()
    assert sorted(started) == ["load", "scale", "scale_1", "split", "total"]
    assert value == 45.0

    started, value, explain = flow.run()
    assert started == [] and value == 45.0
    assert set(explain.values()) == {"up to date"}

    started, value, explain = flow.run(factor=2.0)
    assert sorted(started) == ["scale", "total"]  # load, split and scale_1 stay cached
    assert value == flow.scratch("f2", factor=2.0) == 2 * sum(range(5)) + sum(range(5, 10))
    assert explain["scale"] == "argument 'factor' changed from 1.0 to 2.0"
    assert explain["total"] == "input 'scale' changed"


def test_going_back_to_earlier_arguments_reuses_their_results(tmp_path):
    flow = Flow(tmp_path, CHAIN)
    a, _, _ = flow.run(n=10)
    b, value_b, _ = flow.run(n=20)
    assert sorted(b) == sorted(a)  # n feeds everything
    started, value, _ = flow.run(n=10)
    assert started == [] and value == 45.0
    started, value, _ = flow.run(n=20)
    assert started == [] and value == value_b == flow.scratch("n20", n=20)


def test_identical_output_stops_the_wave(tmp_path):
    flow = Flow(tmp_path, CHAIN)
    flow.run()
    flow.edit("    return np.arange(n, dtype=float)", "    return np.arange(0, n, 1, dtype=float)  # same values")
    started, value, explain = flow.run()
    assert started == ["load"] and value == 45.0  # split sees the same bytes: early cutoff
    assert explain["load"] == "code changed: step 'load'"
    assert explain["split"] == "up to date"


def test_calls_of_one_step_share_results_whatever_their_order(tmp_path):
    flow = Flow(tmp_path, CHAIN)
    flow.run()
    flow.edit("return total(scale(train, factor=factor), scale(test))",
              "b = scale(test)\n    return total(scale(train, factor=factor), b)")
    started, value, _ = flow.run()
    assert started == [] and value == 45.0  # scale and scale_1 swapped names: nothing re-runs


def test_code_edits_rerun_the_step_and_what_its_new_output_reaches(tmp_path):
    flow = Flow(tmp_path, CHAIN + '''
def offset():
    return 1.0
''')
    flow.edit("    return x * factor", "    return x * factor")
    flow.run()
    flow.edit("def offset():\n    return 1.0", "def offset():\n    return 2.0")
    started, _, _ = flow.run()
    assert started == []  # nothing calls offset yet
    flow.edit("    return x * factor", "    return x * factor + offset()")
    started, value, explain = flow.run()
    assert sorted(started) == ["scale", "scale_1", "total"]
    assert value == flow.scratch("offset") == 45.0 + 2.0 * 10
    flow.edit("def offset():\n    return 2.0", "def offset():\n    return 3.0")
    started, value, explain = flow.run()
    assert sorted(started) == ["scale", "scale_1", "total"]
    assert "code changed: function flow.offset" in explain["scale"]
    assert value == 45.0 + 3.0 * 10


def test_tuple_dict_and_indexed_outputs(tmp_path):
    flow = Flow(tmp_path, '''
@step(returns=("lo", "hi"))
def bounds(x):
    return {"hi": max(x), "lo": min(x)}       # a dict with the returns names

@step
def stats(x):
    return {"mean": sum(x) / len(x), "parts": (min(x), max(x))}

@step
def pack(a, b, c, d):
    return [a, b, c, d]

@pipeline
def main(data=(3, 1, 2)):
    lo, hi = bounds(list(data))
    s = stats(list(data))
    return pack(lo, hi, s["mean"], s["parts"][1]), bounds(list(data))["hi"], s[("parts")]
''')
    started, value, _ = flow.run()
    assert value == [[1, 3, 2.0, 3], 3, [1, 3]]
    started, value, _ = flow.run()
    assert started == []
    started, value, _ = flow.run(data=[3, 1, 5])
    assert value == flow.scratch("d", data=[3, 1, 5]) == [[1, 5, 3.0, 5], 5, [1, 5]]


def test_returns_that_do_not_split_raise_naming_the_step(tmp_path):
    flow = Flow(tmp_path, '''
@step(returns=("a", "b"))
def two():
    return 1, 2, 3

@pipeline
def main():
    return two()[0]
''')
    proc = run_script(flow.driver, flow.plant, "{}", expect_ok=False)
    assert proc.returncode != 0
    assert "StepUsageError: step 'two' declares returns=('a', 'b') but returned tuple of length 3" \
        in proc.stderr


def test_results_inside_lists_and_dicts_and_a_value_changed_by_the_controller(tmp_path):
    flow = Flow(tmp_path, '''
@step
def const(v):
    return v

@step
def combine(items, weights):
    return sum(w * x for x, w in zip(items, weights["w"]))

@pipeline
def main(k=2):
    a, b = const(1.0), const(2.0)
    doubled = const(a.result() * k)         # ClearML: the controller changes a value
    return combine([a, b, doubled], {"w": [1, 10, 100]})
''')
    started, value, _ = flow.run()
    assert value == 1 + 20 + 200
    started, value, _ = flow.run(k=3)
    assert sorted(started) == ["combine", "const_2"]
    assert value == flow.scratch("k3", k=3) == 1 + 20 + 300


def test_a_literal_str_spelled_like_a_result_mark_is_not_taken_for_a_result(tmp_path):
    """Results stand as '<input items[0]>' in a trace's parameters and as '<result 0>' in the
    graph's identity of a call: a literal spelled the same must not make [r, mark] equal to
    [mark, r] (it did: a stale value after swapping them, and two different calls merged)."""
    flow = Flow(tmp_path, '''
@step
def const():
    return 3

@step
def show(items):
    return repr(items)

@pipeline
def main(flip=False):
    c = const()
    first = show(["<input items[0]>", c] if flip else [c, "<input items[0]>"])
    return first, show(["<result 0>", c]), show([c, "<result 0>"])
''')
    started, value, _ = flow.run()
    assert value == ["[3, '<input items[0]>']", "['<result 0>', 3]", "[3, '<result 0>']"]
    started, value, explain = flow.run(flip=True)
    assert started == ["show"] and value[0] == "['<input items[0]>', 3]"
    assert explain["show"].startswith("argument 'items' changed")


def test_add_depends_on_orders_without_making_a_dependency(tmp_path):
    flow = Flow(tmp_path, '''
import os
LOG = os.path.join(os.path.dirname(__file__), "log.txt")

@step
def prepare(tag):
    with open(LOG, "a") as fh:
        fh.write("prepare\\n")
    return tag

@step
def work(n):
    with open(LOG, "a") as fh:
        fh.write("work\\n")
    return n * 2

@pipeline
def main(tag="a", n=1):
    w = work(n)
    get_step(w).add_depends_on([prepare(tag)])
    return w
''')
    log = tmp_path / "log.txt"
    started, value, _ = flow.run()
    assert value == 2 and log.read_text().split() == ["prepare", "work"]
    log.unlink()
    started, value, _ = flow.run(tag="b")  # a new prepare output does not re-run work
    assert started == ["prepare"] and value == 2


def test_result_computes_a_branch_so_python_can_branch(tmp_path):
    flow = Flow(tmp_path, '''
@step
def score(threshold):
    return {"accuracy": 0.95 if threshold < 0.5 else 0.5}

@step
def register(metrics):
    return f"registered at {metrics['accuracy']}"

@step
def report(metrics):
    return f"rejected at {metrics['accuracy']}"

@pipeline
def main(threshold=0.1):
    metrics = score(threshold)
    if metrics.result()["accuracy"] > 0.9:
        return register(metrics)
    return report(metrics)
''')
    started, value, _ = flow.run()
    assert sorted(started) == ["register", "score"] and value == "registered at 0.95"
    started, value, _ = flow.run(threshold=0.7)
    assert sorted(started) == ["report", "score"] and value == "rejected at 0.5"
    started, value, _ = flow.run(threshold=0.1)
    assert started == [] and value == "registered at 0.95"


def test_steps_and_reactors_exchange_ingredients(tmp_path):
    flow = Flow(tmp_path, '''
from pyplant import ReactorFunc

@step
def base(n):
    return n + 1

@ReactorFunc
def doubled(pipe, config):
    x = yield pipe.receive("base")
    pipe.send("doubled", x * config.mult)

@step
def final(d):
    return d + 1000

@pipeline
def main(n=1):
    base(n)
    return final(ingredient("doubled"))
''')
    flow.driver.write_text(flow.driver.read_text().replace(
        "with open_plant() as plant:", "with open_plant({'mult': 2}) as plant:"))
    started, value, _ = flow.run()
    assert sorted(started) == ["base", "doubled", "final"] and value == 1004
    started, value, _ = flow.run()
    assert started == [] and value == 1004
    started, value, _ = flow.run(n=5)
    assert sorted(started) == ["base", "doubled", "final"] and value == 1012


def test_input_and_output_paths(tmp_path):
    data = tmp_path / "data.txt"
    data.write_text("1\n2\n3\n")
    flow = Flow(tmp_path, f'''
@step
def write_numbers(n, numbers_path: OutputPath("TXT")):
    with open(numbers_path, "w") as fh:
        fh.write("\\n".join(str(i) for i in range(n)))

@step
def add(numbers: InputPath("TXT"), extra: InputPath):
    with open(numbers) as a, open(extra) as b:
        return sum(int(v) for v in a.read().split()) + sum(int(v) for v in b.read().split())

@pipeline
def main(n=4):
    return add(write_numbers(n)["numbers"], {str(data)!r})
''')
    started, value, _ = flow.run()
    assert sorted(started) == ["add", "write_numbers"] and value == 6 + 6
    started, value, _ = flow.run()
    assert started == []
    data.write_text("10\n")  # same path, new content
    started, value, explain = flow.run()
    assert started == ["add"] and value == 6 + 10
    assert "data.txt" in explain["add"]
    started, value, _ = flow.run(n=5)
    assert sorted(started) == ["add", "write_numbers"] and value == 10 + 10


def test_a_command_step_runs_a_real_program(tmp_path):
    (tmp_path / "gen.py").write_text(textwrap.dedent('''
        import sys
        n, out = int(sys.argv[1]), sys.argv[2]
        if n < 0:
            sys.exit("n must be >= 0, got %d" % n)
        open(out, "w").write("\\n".join(str(i) for i in range(n)))
    '''))
    flow = Flow(tmp_path, f'''
import sys

@step
def total(numbers: InputPath()):
    return sum(int(v) for v in open(numbers).read().split())

@pipeline
def main(n=5):
    cs = command_step("count", [sys.executable, "gen.py", n, OutputPath("numbers")])
    shown = command_step("show", [sys.executable, "-c", "import sys; print(open(sys.argv[1]).read().split()[-1])",
                                  InputPath(cs["numbers"])])
    return total(cs["numbers"]), shown
''')
    started, value, _ = flow.run()
    assert sorted(started) == ["count", "show", "total"] and value == [10, "4\n"]
    started, value, _ = flow.run()
    assert started == []
    (tmp_path / "gen.py").write_text((tmp_path / "gen.py").read_text() + "\n# an edit\n")
    started, value, explain = flow.run()
    assert started == ["count"] and value == [10, "4\n"]  # same file out: early cutoff
    assert explain["count"] == "code changed: file gen.py"
    started, value, explain = flow.run(n=3)
    assert sorted(started) == ["count", "show", "total"] and value == [3, "2\n"]
    assert explain["count"] == "command line changed: step 'count'"

    proc = run_script(flow.driver, flow.plant, json.dumps({"n": -1}), expect_ok=False)
    assert proc.returncode != 0
    assert "StepCommandError: command_step 'count' failed" in proc.stderr
    assert "n must be >= 0, got -1" in proc.stderr


COMPONENT = '''
name: Count lines
description: Writes the first n numbers and their sum.
inputs:
- {name: n, type: Integer}
- {name: extra, type: String, default: "0"}
- {name: data, type: CSV}
outputs:
- {name: numbers, type: CSV}
- {name: summary}
implementation:
  container:
    image: python:3.11
    command: [%(python)s, count.py]
    args:
    - --n
    - {inputValue: n}
    - --extra
    - {inputValue: extra}
    - --data
    - {inputPath: data}
    - --numbers
    - {outputPath: numbers}
    - --summary
    - {outputPath: summary}
'''


def test_a_kubeflow_component_file(tmp_path):
    (tmp_path / "count.py").write_text(textwrap.dedent('''
        import argparse
        p = argparse.ArgumentParser()
        for a in ("--n", "--extra", "--data", "--numbers", "--summary"):
            p.add_argument(a)
        a = p.parse_args()
        base = sum(int(v) for v in open(a.data).read().split())
        nums = [i + int(a.extra) for i in range(int(a.n))]
        open(a.numbers, "w").write("\\n".join(map(str, nums)))
        open(a.summary, "w").write(str(sum(nums) + base))
    '''))
    (tmp_path / "component.yaml").write_text(COMPONENT % {"python": json.dumps(sys.executable)})
    (tmp_path / "data.csv").write_text("100\n")
    flow = Flow(tmp_path, '''
import os
from pyplant import load_component
HERE = os.path.dirname(os.path.abspath(__file__))
count = load_component(os.path.join(HERE, "component.yaml"))

@step
def read(summary: InputPath()):
    return int(open(summary).read())

@pipeline
def main(n=3):
    op = count(n=n, data=os.path.join(HERE, "data.csv"))
    return read(op.outputs["summary"])
''')
    started, value, _ = flow.run()
    assert sorted(started) == ["Count lines", "read"] and value == 103
    started, value, _ = flow.run()
    assert started == []
    (tmp_path / "data.csv").write_text("200\n")
    started, value, _ = flow.run()
    assert sorted(started) == ["Count lines", "read"] and value == 203
    started, value, _ = flow.run(n=4)
    assert value == flow.scratch("n4", n=4) == 206


def test_component_files_that_cannot_work_raise_component_error(tmp_path):
    from pyplant import load_component
    from pyplant.errors import ComponentError
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ninputs: []\nimplementation: {container: {command: [echo, {inputValue: y}]}}\n")
    with pytest.raises(ComponentError, match="uses input 'y' it does not declare"):
        load_component(bad)
    bad.write_text("name: x\nimplementation: {container: {image: busybox}}\n")
    with pytest.raises(ComponentError, match="no implementation.container.command"):
        load_component(bad)
    good = tmp_path / "good.yaml"
    good.write_text("name: x\ninputs: [{name: y}]\nimplementation: {container: {command: [echo, {inputValue: y}]}}\n")
    factory = load_component(good)
    with pytest.raises(ComponentError, match="component 'x' needs input 'y'"):
        factory()
    with pytest.raises(ComponentError, match="has no input"):
        factory(y=1, z=2)
