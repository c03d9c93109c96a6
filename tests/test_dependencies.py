"""Transitive code hashing: edits to the user code a reactor reaches re-run it, nothing else does."""
from __future__ import annotations

import json
import textwrap

import pytest

from conftest import result_of, run_script, write_script
from pyplant.dependencies import CodeMapper, CodeScope
from pyplant.hashing import code_hash

PIPELINE = '''
import helpers

@ReactorFunc
def produce(pipe):
    pipe.send("x", helpers.compute(3))

@ReactorFunc
def target(pipe):
    x = yield pipe.receive("x")
    RESULT["x"] = x

plant = Plant(PLANT_DIR, **PLANT_KW)
plant.add_event_listener(Plant.EventType.reactor_started, lambda e, n, f: STARTED.append(n))
plant.add_reactors(target, produce)
plant.run_reactor(target)
explain = plant.explain()
plant.shutdown()
report(explain=explain)
'''


def run_pipeline(tmp_path, helpers_src, body=PIPELINE, plant_kw="{}"):
    """Write helpers.py next to the script, run the script in a new process, return its result."""
    (tmp_path / "helpers.py").write_text(textwrap.dedent(helpers_src))
    script = write_script(tmp_path / "pipeline.py", f"PLANT_KW = {plant_kw}\n" + body)
    return result_of(run_script(script, tmp_path / "plant"))


def ran_producer(out):
    return "produce" in out["started"]


def test_editing_plain_helper_reruns_and_explain_names_it(tmp_path):
    """Editing a helper the reactor calls re-runs it; explain() names the helper."""
    first = run_pipeline(tmp_path, "def scale(v):\n    return v * 2\n\ndef compute(v):\n    return scale(v)\n")
    assert ran_producer(first) and first["result"]["x"] == 6
    same = run_pipeline(tmp_path, "def scale(v):\n    return v * 2\n\ndef compute(v):\n    return scale(v)\n")
    assert same["started"] == ["target"]
    edited = run_pipeline(tmp_path, "def scale(v):\n    return v * 3\n\ndef compute(v):\n    return scale(v)\n")
    assert ran_producer(edited) and edited["result"]["x"] == 9
    assert "helpers.scale" in edited["explain"]["produce"]
    assert "code changed" in edited["explain"]["produce"]


def test_nested_helper_edit_reruns(tmp_path):
    """A helper of a helper of a helper counts too."""
    src = '''
    def deep(v):
        return v + 1

    def mid(v):
        return deep(v) * 10

    def compute(v):
        return mid(v)
    '''
    assert run_pipeline(tmp_path, src)["result"]["x"] == 40
    out = run_pipeline(tmp_path, src.replace("v + 1", "v + 2"))
    assert ran_producer(out) and out["result"]["x"] == 50
    assert "helpers.deep" in out["explain"]["produce"]


def test_module_constant_int_edit_reruns(tmp_path):
    """A module-level int constant read by a helper is part of the code."""
    src = "SCALE = 2\n\ndef compute(v):\n    return v * SCALE\n"
    run_pipeline(tmp_path, src)
    assert run_pipeline(tmp_path, src)["started"] == ["target"]
    out = run_pipeline(tmp_path, src.replace("SCALE = 2", "SCALE = 5"))
    assert ran_producer(out) and out["result"]["x"] == 15
    assert "helpers.SCALE" in out["explain"]["produce"]


def test_module_constant_array_by_content(tmp_path):
    """A numpy array constant counts by content: same content re-written keeps the cache."""
    src = "import numpy as np\nW = np.array([1.0, 2.0, 3.0])\n\ndef compute(v):\n    return float((W * v).sum())\n"
    assert run_pipeline(tmp_path, src)["result"]["x"] == 18.0
    same = src.replace("np.array([1.0, 2.0, 3.0])", "np.arange(1, 4).astype(float)")
    assert run_pipeline(tmp_path, same)["started"] == ["target"]
    out = run_pipeline(tmp_path, src.replace("3.0])", "4.0])"))
    assert ran_producer(out) and out["result"]["x"] == 21.0


def test_method_of_user_class_edit_reruns(tmp_path):
    """Editing a method of a user class the reactor instantiates re-runs it."""
    src = '''
    class Model:
        def __init__(self, k):
            self.k = k

        def apply(self, v):
            return v * self.k

    def compute(v):
        return Model(2).apply(v)
    '''
    run_pipeline(tmp_path, src)
    assert run_pipeline(tmp_path, src)["started"] == ["target"]
    out = run_pipeline(tmp_path, src.replace("return v * self.k", "return v * self.k + 1"))
    assert ran_producer(out) and out["result"]["x"] == 7


CLOSURE_BODY = '''
import helpers

def apply(v, f=helpers.other):
    return f(v)

def make():
    fn = helpers.inner
    @ReactorFunc
    def produce(pipe):
        pipe.send("x", fn(3) + apply(0))
    return produce

produce = make()

@ReactorFunc
def target(pipe):
    x = yield pipe.receive("x")
    RESULT["x"] = x

plant = Plant(PLANT_DIR, **PLANT_KW)
plant.add_event_listener(Plant.EventType.reactor_started, lambda e, n, f: STARTED.append(n))
plant.add_reactors(target, produce)
plant.run_reactor(target)
explain = plant.explain()
plant.shutdown()
report(explain=explain)
'''


@pytest.mark.parametrize("which", ["inner", "other"])
def test_function_in_closure_cell_or_default_edit_reruns(tmp_path, which):
    """A function held in a closure cell, or passed as a default argument, counts."""
    src = "def inner(v):\n    return v * 2\n\ndef other(v):\n    return v + 100\n"
    assert run_pipeline(tmp_path, src, CLOSURE_BODY)["result"]["x"] == 106
    assert run_pipeline(tmp_path, src, CLOSURE_BODY)["started"] == ["target"]
    edited = src.replace("v * 2", "v * 3") if which == "inner" else src.replace("v + 100", "v + 200")
    out = run_pipeline(tmp_path, edited, CLOSURE_BODY)
    assert ran_producer(out)
    assert out["result"]["x"] == (109 if which == "inner" else 206)


IMPORT_INSIDE_BODY = '''
@ReactorFunc
def produce(pipe):
    from helpers import compute
    pipe.send("x", compute(3))

@ReactorFunc
def target(pipe):
    x = yield pipe.receive("x")
    RESULT["x"] = x

plant = Plant(PLANT_DIR, **PLANT_KW)
plant.add_event_listener(Plant.EventType.reactor_started, lambda e, n, f: STARTED.append(n))
plant.add_reactors(target, produce)
plant.run_reactor(target)
plant.shutdown()
report()
'''


def test_helper_imported_inside_reactor_body_edit_reruns(tmp_path):
    """`from helpers import compute` inside the reactor body follows helpers."""
    src = "def compute(v):\n    return v * 2\n"
    run_pipeline(tmp_path, src, IMPORT_INSIDE_BODY)
    assert run_pipeline(tmp_path, src, IMPORT_INSIDE_BODY)["started"] == ["target"]
    out = run_pipeline(tmp_path, src.replace("v * 2", "v * 7"), IMPORT_INSIDE_BODY)
    assert ran_producer(out) and out["result"]["x"] == 21


def test_comment_blank_line_docstring_edit_in_helper_does_not_rerun(tmp_path):
    """Comments, blank lines and docstrings in a helper do not count."""
    src = "def scale(v):\n    return v * 2\n\ndef compute(v):\n    return scale(v)\n"
    run_pipeline(tmp_path, src)
    cosmetic = ('def scale(v):\n    """Scales v."""\n    # a comment\n\n    return v * 2  # two\n\n\n'
                'def compute(v):\n    """Computes."""\n\n    return scale(v)\n')
    out = run_pipeline(tmp_path, cosmetic)
    assert out["started"] == ["target"]
    assert out["explain"]["produce"] == "up to date"


CYCLE = '''
def a(v):
    if v <= 0:
        return 0
    return 1 + b(v - 1)

def b(v):
    if v <= 0:
        return 0
    return 10 + a(v - 1)

def compute(v):
    return a(v)
'''


@pytest.mark.parametrize("edit", [("1 + b", "2 + b"), ("10 + a", "20 + a")])
def test_cycle_between_helpers_works_and_edit_to_either_reruns(tmp_path, edit):
    """Mutually recursive helpers are hashed; editing either one re-runs the reactor."""
    assert run_pipeline(tmp_path, CYCLE)["result"]["x"] == 12
    assert run_pipeline(tmp_path, CYCLE)["started"] == ["target"]
    out = run_pipeline(tmp_path, CYCLE.replace(*edit))
    assert ran_producer(out)
    assert out["result"]["x"] != 12


def test_library_packages_keyed_by_version(tmp_path):
    """With libraryPackages=['helpers'], source edits do not re-run; a version bump does."""
    kw = "{'libraryPackages': ['helpers']}"
    src = "__version__ = '1.0'\n\ndef compute(v):\n    return v * 2\n"
    run_pipeline(tmp_path, src, plant_kw=kw)
    out = run_pipeline(tmp_path, src.replace("v * 2", "v * 3"), plant_kw=kw)
    assert out["started"] == ["target"]
    assert out["result"]["x"] == 6  # the cached value
    bumped = run_pipeline(tmp_path, src.replace("v * 2", "v * 3").replace("1.0", "2.0"), plant_kw=kw)
    assert ran_producer(bumped) and bumped["result"]["x"] == 9


def test_user_packages_wins_over_library_packages(tmp_path):
    """A package listed in both userPackages and libraryPackages counts as user code."""
    kw = "{'libraryPackages': ['helpers'], 'userPackages': ['helpers']}"
    src = "__version__ = '1.0'\n\ndef compute(v):\n    return v * 2\n"
    run_pipeline(tmp_path, src, plant_kw=kw)
    out = run_pipeline(tmp_path, src.replace("v * 2", "v * 3"), plant_kw=kw)
    assert ran_producer(out) and out["result"]["x"] == 9


def _uses_json(pipe):
    return json.dumps([1])


def test_user_packages_moves_library_to_source_hashing():
    """userPackages=['json'] hashes json's functions by source instead of by version."""
    reactor = _uses_json

    default = CodeMapper(code_hash, CodeScope.of()).code_map(reactor)
    assert "lib:python" in default  # the standard library, by the interpreter's version
    assert not any(label.startswith("fn:json.") for label in default)
    moved = CodeMapper(code_hash, CodeScope.of(user=["json"])).code_map(reactor)
    assert "fn:json.dumps" in moved
    assert "cls:json.encoder.JSONEncoder" in moved  # followed into json's own modules


GLOBAL_COUNTER = '''
counter = 0

def bump():
    global counter
    counter += 1
    return counter

def compute(v):
    bump()
    return v * 2
'''

GLOBAL_BODY = '''
import helpers

@ReactorFunc
def produce(pipe):
    pipe.send("x", helpers.compute(3))

@ReactorFunc
def target(pipe):
    x = yield pipe.receive("x")
    RESULT["x"] = x

plant = Plant(PLANT_DIR, **PLANT_KW)
plant.add_event_listener(Plant.EventType.reactor_started, lambda e, n, f: STARTED.append(n))
plant.add_reactors(target, produce)
for _ in range(int(ARGS[0]) if ARGS else 1):
    helpers.bump()  # the counter moves between runs and between processes
plant.run_reactor(target)
first = list(STARTED)
STARTED.clear()
helpers.bump()
plant.run_reactor(target)
explain = plant.explain()
plant.shutdown()
report(first=first, explain=explain)
'''


def test_global_assigned_by_function_does_not_rerun(tmp_path):
    """A module global that a reachable function assigns is state, not a constant."""
    (tmp_path / "helpers.py").write_text(GLOBAL_COUNTER)
    script = write_script(tmp_path / "pipeline.py", "PLANT_KW = {}\n" + GLOBAL_BODY)
    out = result_of(run_script(script, tmp_path / "plant", "1"))
    assert "produce" in out["first"]
    assert out["started"] == ["target"]
    again = result_of(run_script(script, tmp_path / "plant", "5"))
    assert again["first"] == ["target"]
    assert again["started"] == ["target"]


IPYTHON_SCRIPT = '''
from IPython.testing.globalipapp import start_ipython
ip = start_ipython()

def cell(src):
    res = ip.run_cell(src)
    if not res.success:
        raise SystemExit(f"cell failed: {res.error_before_exec or res.error_in_exec!r}")

cell("""
from pyplant import Plant, ReactorFunc
IP_STARTED = []
""")
cell("""
def helper(v):
    return v * 2
""")
cell("""
@ReactorFunc
def produce(pipe):
    pipe.send("x", helper(3))

@ReactorFunc
def target(pipe):
    x = yield pipe.receive("x")
    IP_RESULT.append(x)
""")
cell(f"""
IP_RESULT = []
plant = Plant({PLANT_DIR!r})
plant.add_event_listener(Plant.EventType.reactor_started, lambda e, n, f: IP_STARTED.append(n))
plant.add_reactors(target, produce)
""")
runs = []
for redefine in (None, None, "def helper(v):\\n    return v * 5\\n"):
    if redefine:
        cell(redefine)
    cell("IP_STARTED.clear(); IP_RESULT.clear(); plant.run_reactor(target)")
    runs.append({"started": list(ip.user_ns["IP_STARTED"]), "x": ip.user_ns["IP_RESULT"][0]})
cell("plant.shutdown()")
report(runs=runs)
'''


def test_ipython_cell_reactor_cached_and_rerun_after_helper_cell_redefined(tmp_path):
    """A reactor defined in an IPython cell is cached, and re-runs when a helper cell changes."""
    pytest.importorskip("IPython")
    script = write_script(tmp_path / "ipy.py", IPYTHON_SCRIPT)
    runs = result_of(run_script(script, tmp_path / "plant"))["runs"]
    assert "produce" in runs[0]["started"] and runs[0]["x"] == 6
    assert runs[1]["started"] == ["target"] and runs[1]["x"] == 6
    assert "produce" in runs[2]["started"] and runs[2]["x"] == 15


def test_code_map_of_fifty_transitive_helpers(tmp_path):
    """A reactor reaching 50 chained helpers maps all 50; a second call gives an equal map."""
    import importlib.util
    import sys

    lines = ["def h49(v):\n    return v + 49\n"]
    for i in range(48, -1, -1):
        lines.append(f"def h{i}(v):\n    return h{i + 1}(v) + {i}\n")
    lines.append("def reactor(pipe):\n    return h0(1)\n")
    path = tmp_path / "fifty_helpers_mod.py"
    path.write_text("\n".join(lines))
    spec = importlib.util.spec_from_file_location("fifty_helpers_mod", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["fifty_helpers_mod"] = module
    try:
        spec.loader.exec_module(module)
        mapper = CodeMapper(code_hash, CodeScope.of())
        first = mapper.code_map(module.reactor)
        fn_labels = [label for label in first if label.startswith("fn:")]
        assert len(fn_labels) == 50
        assert "fn:fifty_helpers_mod.h49" in first
        assert CodeMapper(code_hash, CodeScope.of()).code_map(module.reactor) == first
    finally:
        sys.modules.pop("fifty_helpers_mod", None)


def test_user_module_in_closure_cell_is_followed(tmp_path, monkeypatch):
    """A user module held in a closure cell (imported in an enclosing function) is followed."""
    import sys as _sys
    from pyplant.dependencies import CodeMapper, CodeScope
    from pyplant.hashing import code_hash

    (tmp_path / "closure_helpers.py").write_text("def compute(v):\n    return v * 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    def make():
        import closure_helpers

        def produce(pipe):
            pipe.send("x", closure_helpers.compute(3))
        return produce

    try:
        code_map = CodeMapper(code_hash, CodeScope.of()).code_map(make())
        assert "fn:closure_helpers.compute" in code_map
    finally:
        _sys.modules.pop("closure_helpers", None)


RELATIVE_PIPELINE = '''
from pkg import stage

@ReactorFunc
def produce(pipe):
    pipe.send("x", stage.run(3))

@ReactorFunc
def target(pipe):
    x = yield pipe.receive("x")
    RESULT["x"] = x

plant = open_plant()
plant.add_reactors(target, produce)
plant.run_reactor(target)
plant.shutdown()
report()
'''


def test_relative_import_inside_a_body_is_followed(tmp_path):
    """`from .tools import scale` inside a function of a package: tools.scale is followed."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "tools.py").write_text("def scale(v):\n    return v * 2\n")
    (package / "stage.py").write_text("def run(v):\n    from .tools import scale\n    return scale(v)\n")
    script = write_script(tmp_path / "pipeline.py", RELATIVE_PIPELINE)
    assert result_of(run_script(script, tmp_path / "plant"))["result"]["x"] == 6
    assert result_of(run_script(script, tmp_path / "plant"))["started"] == ["target"]
    (package / "tools.py").write_text("def scale(v):\n    return v * 5\n")
    out = result_of(run_script(script, tmp_path / "plant"))
    assert sorted(out["started"]) == ["produce", "target"] and out["result"]["x"] == 15
