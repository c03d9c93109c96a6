"""Names: globals and attributes are told apart, scripts are labelled by their importable name
(run directly or imported), and a pinned function is a leaf of the walk."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, result_of, run_script, write_script
from edit_scenario import Scenario

# --- 12. attribute names are not globals ----------------------------------------------------

SOLVERS = '''
import numpy as np

class Model:
    def fit(self, v):
        return v + 1

@ReactorFunc
def solve(pipe):
    pipe.send("s", 10)

@ReactorFunc
def fit(pipe):
    pipe.send("f", 20)

@ReactorFunc
def linear(pipe):
    a = np.array([[2.0, 0.0], [0.0, 4.0]])
    pipe.send("l", float(np.linalg.solve(a, np.array([2.0, 8.0])).sum()))

@ReactorFunc
def fitted(pipe):
    pipe.send("m", Model().fit(1))

@ReactorFunc
def reads_k(pipe, config):
    pipe.send("k", config.k * 2)

k = 1  # a global of the same name as the config parameter

@ReactorFunc
def target(pipe):
    values = []
    for name in ("s", "f", "l", "m", "k"):
        values.append((yield pipe.receive(name)))
    RESULT["values"] = values

plant = open_plant({"k": 5})
plant.add_reactors(target, solve, fit, linear, fitted, reads_k)
plant.run_reactor(target)
explain = plant.explain()
plant.shutdown()
report(explain=explain)
'''


@pytest.mark.parametrize("old, new, rerun", [
    ('pipe.send("s", 10)', 'pipe.send("s", 11)', {"solve"}),   # not `linear` (np.linalg.solve)
    ('pipe.send("f", 20)', 'pipe.send("f", 21)', {"fit"}),     # not `fitted` (Model().fit)
    ("k = 1  # a global", "k = 2  # a global", set()),         # not `reads_k` (config.k)
])
def test_attribute_named_like_a_global_is_not_that_global(tmp_path, old, new, rerun):
    """`np.linalg.solve(...)`, `.fit(...)` and `config.k` name attributes: editing a reactor
    called `solve` or `fit`, or a global `k`, does not re-run the reactors using them."""
    scenario = Scenario(tmp_path, "", SOLVERS)
    scenario.check(old, new, rerun, path=scenario.script, changes_result=bool(rerun))


# --- 13. a script run directly, then imported ----------------------------------------------

ANALYSIS = '''
import numpy as np

def score(v):
    return v * 3

@SubreactorFunc
def normalize(pipe, v):
    return v / 2
    yield

@ReactorFunc
def produce(pipe):
    pipe.send("x", score(4))

@ReactorFunc
def target(pipe):
    x = yield pipe.receive("x")
    y = yield from normalize(pipe, x)
    RESULT["y"] = y

def main():
    plant = open_plant()
    plant.add_reactors(target, produce)
    plant.run_reactor(target)
    explain = plant.explain()
    plant.shutdown()
    report(explain=explain)

if __name__ == "__main__":
    main()
'''

SWEEP = '''
import sys
sys.argv = sys.argv[:2]
import analysis
analysis.main()
'''


def _run_module(directory, module, plant_dir):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([sys.executable, "-m", module, str(plant_dir)], capture_output=True, text=True,
                          env=env, cwd=str(directory), timeout=120)
    assert proc.returncode == 0, proc.stderr
    return result_of(proc)


def test_script_run_directly_then_imported_then_run_with_m_reruns_nothing(tmp_path):
    """`python analysis.py`, then `import analysis` from a sweep script, then
    `python -m analysis`: its code (and its subreactor) is labelled `analysis.*` each way, so
    only the target runs after the first time."""
    script = write_script(tmp_path / "analysis.py", ANALYSIS)
    sweep = tmp_path / "sweep.py"
    sweep.write_text(SWEEP)
    first = result_of(run_script(script, tmp_path / "plant"))
    assert sorted(first["started"]) == ["produce", "target"] and first["subs"] == ["normalize"]
    imported = result_of(run_script(sweep, tmp_path / "plant"))
    assert imported["started"] == ["target"], imported["explain"]
    as_module = _run_module(tmp_path, "analysis", tmp_path / "plant")
    assert as_module["started"] == ["target"], as_module["explain"]
    assert first["result"] == imported["result"] == as_module["result"] == {"y": 6.0}


def test_script_edit_seen_when_imported(tmp_path):
    """Labels agree, and edits still count: after `python analysis.py`, the sweep importing an
    edited analysis re-runs the edited reactor."""
    script = write_script(tmp_path / "analysis.py", ANALYSIS)
    (tmp_path / "sweep.py").write_text(SWEEP)
    result_of(run_script(script, tmp_path / "plant"))
    script.write_text(script.read_text().replace("return v * 3", "return v * 5"))
    edited = result_of(run_script(tmp_path / "sweep.py", tmp_path / "plant"))
    assert sorted(edited["started"]) == ["produce", "target"] and edited["result"] == {"y": 10.0}
    assert "analysis.score" in edited["explain"]["produce"]


# --- 14b. a pinned function is a leaf --------------------------------------------------------

PINNED = '''
def double(v):
    return v * 2

@SubreactorFunc(version="1")
def scaled(pipe, v):
    return v * 2
    yield

@ReactorFunc(version="1")
def produce(pipe):
    pipe.send("x", 3 * 2)

@ReactorFunc
def caller(pipe):
    x = yield pipe.receive("x")
    y = yield from scaled(pipe, x)
    pipe.send("y", y)

@ReactorFunc
def target(pipe):
    y = yield pipe.receive("y")
    RESULT["y"] = y

plant = open_plant()
plant.add_reactors(target, caller, produce)
plant.run_reactor(target)
explain = plant.explain()
plant.shutdown()
report(explain=explain)
'''


@pytest.mark.parametrize("old, new", [
    ("    return v * 2\n    yield", "    return double(v)\n    yield"),  # a subreactor's helper moved
    ('pipe.send("x", 3 * 2)', 'pipe.send("x", double(3))'),             # a reactor's helper moved
])
def test_pinned_function_does_not_follow_what_it_calls(tmp_path, old, new):
    """`@SubreactorFunc(version=...)` and `@ReactorFunc(version=...)` pin the helpers they call
    too: moving code into a new helper keeps the cache while the version stays."""
    scenario = Scenario(tmp_path, "", PINNED)
    scenario.check(old, new, set(), path=scenario.script, changes_result=False)


def test_pinned_subreactor_version_bump_reruns_its_caller(tmp_path):
    """The version is what counts: bumping it re-runs the caller."""
    scenario = Scenario(tmp_path, "", PINNED)
    scenario.check('@SubreactorFunc(version="1")\ndef scaled(pipe, v):\n    return v * 2',
                   '@SubreactorFunc(version="2")\ndef scaled(pipe, v):\n    return v * 3',
                   {"caller"}, path=scenario.script)


# --- names looked up at run time --------------------------------------------------------------

@pytest.mark.parametrize("lookup", [
    "getattr(ops, 'scale')(v)",
    "getattr(ops, 'sc' + 'ale')(v)",
    "globals()['scale'](v)",
    "vars(sys.modules[__name__])['scale'](v)",
])
def test_functions_looked_up_by_name_at_run_time_are_followed(tmp_path, lookup):
    """``getattr(module, name)``, ``globals()[name]`` and ``vars(module)[name]`` reach a
    function the code never names as a global: every attribute of the modules such code
    refers to (and of its own module, for ``globals``/``vars``) is followed, so editing the
    function looked up re-runs the reactor."""
    (tmp_path / "ops.py").write_text("def scale(v):\n    return v + 1\n")
    target = tmp_path / ("ops.py" if lookup.startswith("getattr") else "helpers.py")
    scenario = Scenario(tmp_path, f'''
    import sys
    import ops

    def scale(v):
        return v + 1

    def compute(v):
        return {lookup}
    ''')
    scenario.check("return v + 1", "return v + 2", {"produce"}, path=target)
