"""Restarts: each run is a new Python process running a script, as a user re-running it."""
from __future__ import annotations

import pytest

from conftest import result_of, run_script, write_script

CHAIN = '''
@ReactorFunc
def load(pipe):
    pipe.send("raw", [1, 2, 3])  # LOAD-LINE

@ReactorFunc
def clean(pipe):
    """Doubles the raw values."""
    raw = yield pipe.receive("raw")
    pipe.send("clean", [v * 2 for v in raw])

@ReactorFunc
def summarize(pipe):
    clean = yield pipe.receive("clean")
    pipe.send("summary", sum(clean))

@ReactorFunc
def make_report(pipe):
    s = yield pipe.receive("summary")
    RESULT["summary"] = s
    pipe.send("report", f"total={s}")

plant = open_plant()
plant.add_reactors(make_report, summarize, clean, load)
plant.run_reactor(make_report)
RESULT["report"] = plant.fetch_ingredient("report")
plant.shutdown()
report()
'''


def edit(script, old, new):
    text = script.read_text()
    assert text.count(old) == 1, f"edit marker {old!r} not found exactly once"
    script.write_text(text.replace(old, new))


def chain_script(tmp_path):
    return write_script(tmp_path / "chain.py", CHAIN)


def test_rerun_runs_only_target(tmp_path):
    """Running the same script again starts only the target; results are the same."""
    script = chain_script(tmp_path)
    plant_dir = tmp_path / "plant"
    first = result_of(run_script(script, plant_dir))
    assert first["started"] == ["make_report", "summarize", "clean", "load"]
    assert first["result"] == {"summary": 12, "report": "total=12"}
    second = result_of(run_script(script, plant_dir))
    assert second["started"] == ["make_report"]
    assert second["result"] == first["result"]


def test_code_edit_reruns_reactor_and_its_consumers(tmp_path):
    """Editing a reactor's code re-runs it and the consumers whose input changed."""
    script = chain_script(tmp_path)
    plant_dir = tmp_path / "plant"
    run_script(script, plant_dir)
    edit(script, 'pipe.send("raw", [1, 2, 3])', 'pipe.send("raw", [1, 2, 3, 4])')
    out = result_of(run_script(script, plant_dir))
    assert out["started"][0] == "make_report"
    assert sorted(out["started"]) == ["clean", "load", "make_report", "summarize"]
    assert out["result"]["summary"] == 20


def test_comment_blank_line_docstring_edit_does_not_rerun(tmp_path):
    """Edits to comments, blank lines and docstrings only re-run nothing but the target."""
    script = chain_script(tmp_path)
    plant_dir = tmp_path / "plant"
    run_script(script, plant_dir)
    edit(script, "  # LOAD-LINE", "  # a different comment\n\n    # and another one")
    edit(script, '"""Doubles the raw values."""', '"""Doubles the raw values.\n\n    More text.\n    """')
    edit(script, "    clean = yield pipe.receive(\"clean\")\n",
         "\n    clean = yield pipe.receive(\"clean\")  # comment\n\n")
    out = result_of(run_script(script, plant_dir))
    assert out["started"] == ["make_report"]
    assert out["result"]["summary"] == 12


def test_early_cutoff_after_edit_with_identical_output(tmp_path):
    """An edited producer that sends identical bytes re-runs, but its consumers do not."""
    script = chain_script(tmp_path)
    plant_dir = tmp_path / "plant"
    run_script(script, plant_dir)
    edit(script, 'pipe.send("raw", [1, 2, 3])', 'pipe.send("raw", list(range(1, 4)))')
    out = result_of(run_script(script, plant_dir))
    assert out["started"] == ["make_report", "load"]
    assert out["result"]["summary"] == 12


EXACT_TYPES = '''
import numpy as np

EXPECTED = {
    "int": 3, "float": 0.1, "bool": True, "str": "s", "tuple": (1, (2, "x")),
    "dict": {"a": 1, "b": (2.0, None)}, "list": [1, "two", [3]], "none": None,
    "f32": np.float32(2.5), "nested": {"k": [np.float32(1.0), (np.int64(2), {"z": False})]},
    "empty_tuple": (), "bytes": b"ab",
}

def describe(v):
    if isinstance(v, dict):
        return ["dict", {k: describe(x) for k, x in v.items()}]
    if isinstance(v, (list, tuple)):
        return [type(v).__name__, [describe(x) for x in v]]
    return [type(v).__module__ + "." + type(v).__qualname__, repr(v)]

@ReactorFunc
def produce(pipe):
    for name in sorted(EXPECTED):
        pipe.send(name, EXPECTED[name])
    pipe.send("array", np.arange(6, dtype=np.int32).reshape(2, 3))

@ReactorFunc
def target(pipe):
    for name in sorted(EXPECTED):
        v = yield pipe.receive(name)
        RESULT[name] = describe(v)
    arr = yield pipe.receive("array")
    RESULT["array"] = [str(arr.dtype), list(arr.shape), arr.tolist(), bool(arr.flags.writeable)]
    pipe.send("done", True)

plant = open_plant()
plant.add_reactors(target, produce)
plant.run_reactor(target)
plant.shutdown()
RESULT["expected"] = {name: describe(v) for name, v in EXPECTED.items()}
report()
'''


def test_values_keep_exact_types_across_restart(tmp_path):
    """Values received after a restart have the exact Python types (nested too) that were sent."""
    script = write_script(tmp_path / "exact_types.py", EXACT_TYPES)
    plant_dir = tmp_path / "plant"
    first = result_of(run_script(script, plant_dir))
    second = result_of(run_script(script, plant_dir))
    assert second["started"] == ["target"]
    expected = second["result"].pop("expected")
    array = second["result"].pop("array")
    assert second["result"] == expected
    assert array == ["int32", [2, 3], [[0, 1, 2], [3, 4, 5]], False]
    assert expected["f32"][0] == "numpy.float32"
    assert expected["tuple"][0] == "tuple"
    first["result"].pop("array")
    assert first["result"].pop("expected") == first["result"]


SUBREACTORS = '''
@SubreactorFunc
def inner(pipe, v):
    return v + 1  # INNER

@SubreactorFunc
def outer(pipe, name):
    raw = yield pipe.receive(name)
    bumped = yield from inner(pipe, raw)
    return bumped * 10  # OUTER

@ReactorFunc
def source(pipe):
    pipe.send("raw", 1)

@ReactorFunc
def uses_subs(pipe):
    v = yield from outer(pipe, "raw")
    pipe.send("processed", v)

@ReactorFunc
def bystander(pipe):
    pipe.send("other", 100)

@ReactorFunc
def target(pipe):
    p = yield pipe.receive("processed")
    o = yield pipe.receive("other")
    RESULT["value"] = p + o
    pipe.send("final", p + o)

plant = open_plant()
plant.add_reactors(target, uses_subs, bystander, source)
plant.run_reactor(target)
plant.shutdown()
report()
'''


def test_editing_subreactors_reruns_the_caller(tmp_path):
    """Editing a subreactor (nested or not) re-runs the reactor that called it, only that one."""
    script = write_script(tmp_path / "subs.py", SUBREACTORS)
    plant_dir = tmp_path / "plant"
    first = result_of(run_script(script, plant_dir))
    assert first["result"]["value"] == 120
    assert first["subs"] == ["outer", "inner"]

    edit(script, "return v + 1  # INNER", "return v + 2  # INNER")
    second = result_of(run_script(script, plant_dir))
    assert second["started"] == ["target", "uses_subs"]
    assert second["result"]["value"] == 130

    third = result_of(run_script(script, plant_dir))
    assert third["started"] == ["target"]

    edit(script, "return bumped * 10  # OUTER", "return bumped * 100  # OUTER")
    fourth = result_of(run_script(script, plant_dir))
    assert fourth["started"] == ["target", "uses_subs"]
    assert fourth["result"]["value"] == 400


def test_subreactor_comment_edit_does_not_rerun(tmp_path):
    """A comment-only edit in a subreactor does not re-run its caller."""
    script = write_script(tmp_path / "subs.py", SUBREACTORS)
    plant_dir = tmp_path / "plant"
    run_script(script, plant_dir)
    edit(script, "return v + 1  # INNER", "# explain\n    return v + 1  # INNER, edited")
    out = result_of(run_script(script, plant_dir))
    assert out["started"] == ["target"]
    assert out["result"]["value"] == 120


CRASH = '''
@ReactorFunc
def first(pipe):
    pipe.send("a", np.arange(5))

@ReactorFunc
def second(pipe):
    a = yield pipe.receive("a")
    pipe.send("b", int(a.sum()))

@ReactorFunc
def fragile(pipe):
    b = yield pipe.receive("b")
    mode = os.environ.get("PYPLANT_TEST_CRASH", "")
    if mode == "exit":
        os._exit(1)
    if mode == "raise":
        raise RuntimeError("fragile failed")
    pipe.send("c", b * 2)

@ReactorFunc
def target(pipe):
    c = yield pipe.receive("c")
    RESULT["c"] = c
    pipe.send("t", c)

plant = open_plant()
plant.add_reactors(target, fragile, second, first)
plant.run_reactor(target)
plant.shutdown()
report()
'''


@pytest.mark.parametrize("mode", ["exit", "raise"])
def test_finished_reactors_survive_a_crash_without_shutdown(tmp_path, mode):
    """A process dying in a reactor (os._exit or an uncaught error) keeps what finished before."""
    script = write_script(tmp_path / "crash.py", CRASH)
    plant_dir = tmp_path / "plant"
    crashed = run_script(script, plant_dir, expect_ok=False, env_extra={"PYPLANT_TEST_CRASH": mode})
    assert crashed.returncode != 0
    if mode == "raise":
        assert "RuntimeError: fragile failed" in crashed.stderr
    out = result_of(run_script(script, plant_dir, env_extra={"PYPLANT_TEST_CRASH": ""}))
    assert out["started"] == ["target", "fragile"]
    assert out["result"]["c"] == 20


CONFIG_ABA = '''
@ReactorFunc
def producer(pipe, config):
    pipe.send("data", np.full(4, config.level, dtype=np.float64))

@ReactorFunc
def consumer(pipe):
    d = yield pipe.receive("data")
    pipe.send("mean", float(d.mean()))

@ReactorFunc
def target(pipe):
    m = yield pipe.receive("mean")
    RESULT["mean"] = m
    pipe.send("out", m)

plant = open_plant({"level": int(ARGS[0]), "unused": ARGS[0]})
plant.add_reactors(target, consumer, producer)
plant.run_reactor(target)
RESULT["fetched"] = plant.fetch_ingredient("data").tolist()
plant.shutdown()
report()
'''


def test_config_a_b_a_across_processes(tmp_path):
    """Config A -> B -> A in three processes: on the return to A only the target runs."""
    script = write_script(tmp_path / "aba.py", CONFIG_ABA)
    plant_dir = tmp_path / "plant"
    a = result_of(run_script(script, plant_dir, "1"))
    b = result_of(run_script(script, plant_dir, "2"))
    a_again = result_of(run_script(script, plant_dir, "1"))
    assert a["result"] == {"mean": 1.0, "fetched": [1.0] * 4}
    assert b["started"] == ["target", "producer", "consumer"]
    assert b["result"] == {"mean": 2.0, "fetched": [2.0] * 4}
    assert a_again["started"] == ["target"]
    assert a_again["result"] == a["result"]


SWAP_V1 = '''
@ReactorFunc
def target(pipe):
    y = yield pipe.receive("y")
    RESULT["y"] = y
    pipe.send("out", y)

@ReactorFunc
def p(pipe):
    pipe.send("x", 1)

@ReactorFunc
def q(pipe):
    x = yield pipe.receive("x")
    pipe.send("y", x + 100)

plant = open_plant()
plant.add_reactors(target, p, q)
plant.run_reactor(target)
plant.shutdown()
report()
'''

SWAP_V2 = '''
@ReactorFunc
def target(pipe):
    y = yield pipe.receive("y")
    RESULT["y"] = y
    pipe.send("out", y)

@ReactorFunc
def p(pipe):
    x = yield pipe.receive("x")
    pipe.send("y", x + 1000)

@ReactorFunc
def q(pipe):
    pipe.send("x", 2)

plant = open_plant()
plant.add_reactors(target, p, q)
plant.run_reactor(target)
plant.shutdown()
report()
'''


def test_producer_and_consumer_swap_roles(tmp_path):
    """When an edit swaps producer and consumer the plant adapts, terminates, and is correct."""
    script = tmp_path / "swap.py"
    plant_dir = tmp_path / "plant"
    expected = {SWAP_V1: 101, SWAP_V2: 1002}
    runs = []
    for version in (SWAP_V1, SWAP_V2, SWAP_V1, SWAP_V2):
        write_script(script, version)
        out = result_of(run_script(script, plant_dir, timeout=60))
        assert out["result"]["y"] == expected[version]
        assert len(out["started"]) == len(set(out["started"]))  # nobody started twice
        runs.append(out["started"])
    assert runs[0] == ["target", "q", "p"]  # producers start on demand: q (sends y) first
    assert runs[1][0] == "target" and sorted(runs[1]) == ["p", "q", "target"]
    # both code versions were seen before: their traces are found again
    assert runs[2] == ["target"]
    assert runs[3] == ["target"]


HDF = '''
import h5py

@ReactorFunc
def make_array(pipe):
    ds = pipe.allocate("grid", specs.HdfArraySpec, shape=(3, 2), dtype="int64")
    pipe.send("zero_filled", bool((ds[...] == 0).all()))
    ds[0, 0] = 5
    ds[2, 1] = 7
    yield

@ReactorFunc
def target(pipe):
    ds = yield pipe.receive("grid")
    RESULT["zero_filled"] = yield pipe.receive("zero_filled")
    RESULT["is_dataset"] = isinstance(ds, h5py.Dataset)
    RESULT["data"] = ds[...].tolist()
    RESULT["dtype"] = str(ds.dtype)
    pipe.send("total", int(ds[...].sum()))

plant = open_plant()
plant.add_reactors(target, make_array)
plant.run_reactor(target)
plant.shutdown()
report()
'''


def test_hdf_array_across_restart(tmp_path):
    """An HDF array written in place is received as an h5py.Dataset with its data after a restart."""
    script = write_script(tmp_path / "hdf.py", HDF)
    plant_dir = tmp_path / "plant"
    first = result_of(run_script(script, plant_dir))
    second = result_of(run_script(script, plant_dir))
    assert second["started"] == ["target"]
    for out in (first, second):
        assert out["result"]["zero_filled"] is True
        assert out["result"]["is_dataset"] is True
        assert out["result"]["data"] == [[5, 0], [0, 0], [0, 7]]
        assert out["result"]["dtype"] == "int64"


CUSTOM_SPEC = '''
CALLS = {"store": 0, "fetch": 0}

class Token:
    def __init__(self, text):
        self.text = text

class TokenSpec(IngredientTypeSpec):
    def __init__(self):
        super().__init__()

    @classmethod
    def get_name(cls):
        return "token"

    def store(self, warehouse, name, value):
        CALLS["store"] += 1
        with open(os.path.join(warehouse.baseDir, name + ".tok"), "w") as f:
            f.write(value.text)
        return {"length": len(value.text)}

    def fetch(self, warehouse, name, meta):
        CALLS["fetch"] += 1
        with open(os.path.join(warehouse.baseDir, name + ".tok")) as f:
            text = f.read()
        assert len(text) == meta["length"]
        return Token(text)

    def is_instance(self, value):
        return isinstance(value, Token)

@ReactorFunc
def make_token(pipe):
    pipe.send("token", Token("hello"))

@ReactorFunc
def target(pipe):
    t = yield pipe.receive("token")
    again = yield pipe.receive("token")
    RESULT["text"] = t.text
    RESULT["type"] = type(t).__name__
    RESULT["same_object"] = t is again
    pipe.send("len", len(t.text))

plant = open_plant()
plant.add_reactors(target, make_token)
plant.warehouse.register_ingredient_specs([TokenSpec()])
plant.run_reactor(target)
plant.shutdown()
RESULT["calls"] = dict(CALLS)
report()
'''


def test_custom_spec_fetch_called_after_restart_only(tmp_path):
    """A custom spec is not fetched within the session that stored it, and is after a restart."""
    script = write_script(tmp_path / "spec.py", CUSTOM_SPEC)
    plant_dir = tmp_path / "plant"
    first = result_of(run_script(script, plant_dir))
    assert first["result"]["calls"] == {"store": 1, "fetch": 0}
    second = result_of(run_script(script, plant_dir))
    assert second["started"] == ["target"]
    assert second["result"]["calls"] == {"store": 0, "fetch": 1}
    for out in (first, second):
        assert out["result"]["text"] == "hello" and out["result"]["type"] == "Token"


CALLABLE_CONFIG = '''
def transform(v):
    return v * 2  # TRANSFORM

@ReactorFunc
def reader(pipe, config):
    pipe.send("value", config.fn(21))

@ReactorFunc
def target(pipe):
    v = yield pipe.receive("value")
    RESULT["value"] = v
    pipe.send("out", v)

plant = open_plant({"fn": transform})
plant.add_reactors(target, reader)
plant.run_reactor(target)
plant.shutdown()
report()
'''


def test_callable_in_config_compared_by_code_across_restart(tmp_path):
    """A function in the config is compared by code: unchanged -> cached, edited -> re-run."""
    script = write_script(tmp_path / "fnconf.py", CALLABLE_CONFIG)
    plant_dir = tmp_path / "plant"
    assert result_of(run_script(script, plant_dir))["result"]["value"] == 42
    same = result_of(run_script(script, plant_dir))
    assert same["started"] == ["target"]
    edit(script, "return v * 2  # TRANSFORM", "return v * 3  # TRANSFORM")
    changed = result_of(run_script(script, plant_dir))
    assert changed["started"] == ["target", "reader"]
    assert changed["result"]["value"] == 63


MUTATED_GLOBAL = '''
SEEN = []

@ReactorFunc
def producer(pipe):
    SEEN.append("producer ran")
    pipe.send("value", 5)

@ReactorFunc
def target(pipe):
    v = yield pipe.receive("value")
    RESULT["value"] = v
    pipe.send("out", v)

plant = open_plant()
plant.add_reactors(target, producer)
plant.run_reactor(target)
plant.shutdown()
report()
'''


def test_reactor_mutating_a_global_list_is_cached_on_identical_rerun(tmp_path):
    """A reactor appending to a module-level list is not re-run when the script is unchanged."""
    script = write_script(tmp_path / "mutates.py", MUTATED_GLOBAL)
    plant_dir = tmp_path / "plant"
    first = result_of(run_script(script, plant_dir))
    assert first["started"] == ["target", "producer"]
    second = result_of(run_script(script, plant_dir))
    assert second["started"] == ["target"]
    assert second["result"]["value"] == 5


CYCLE = '''
@ReactorFunc
def ping(pipe):
    y = yield pipe.receive("y")
    pipe.send("x", y + 1)

@ReactorFunc
def pong(pipe):
    x = yield pipe.receive("x")
    pipe.send("y", x + 1)

@ReactorFunc
def target(pipe):
    x = yield pipe.receive("x")
    pipe.send("out", x)

plant = open_plant()
plant.add_reactors(target, ping, pong)
try:
    plant.run_reactor(target)
except errors.PyPlantError as exc:
    RESULT["error"] = type(exc).__name__
    RESULT["message"] = str(exc)
plant.shutdown()
report()
'''


def test_dependency_cycle_terminates_with_an_error(tmp_path):
    """Reactors waiting on each other raise a PyPlantError naming them instead of looping."""
    script = write_script(tmp_path / "cycle.py", CYCLE)
    out = result_of(run_script(script, tmp_path / "plant", timeout=60))
    assert out["result"]["error"] == "DependencyCycleError"
    assert "ping" in out["result"]["message"] and "pong" in out["result"]["message"]


HELPERS_A = '''
from pyplant import SubreactorFunc

@SubreactorFunc
def normalize(pipe, name):
    v = yield pipe.receive(name)
    return v / 10
'''

HELPERS_B = '''
from pyplant import SubreactorFunc

@SubreactorFunc
def normalize(pipe, name):
    v = yield pipe.receive(name)
    return v * 1000
'''

SAME_NAMED_SUBREACTORS = '''
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import helpers_a
import helpers_b

@ReactorFunc
def raw(pipe):
    pipe.send("raw", 50)

@ReactorFunc
def uses_a(pipe):
    v = yield from helpers_a.normalize(pipe, "raw")
    pipe.send("a", v)

@ReactorFunc
def uses_b(pipe):
    v = yield from helpers_b.normalize(pipe, "raw")
    pipe.send("b", v)

@ReactorFunc
def target(pipe):
    a = yield pipe.receive("a")
    b = yield pipe.receive("b")
    RESULT["values"] = [a, b]
    pipe.send("out", a + b)

plant = open_plant()
plant.add_reactors(target, uses_a, uses_b, raw)
plant.run_reactor(target)
plant.shutdown()
report()
'''


def test_same_named_subreactors_in_two_modules_stay_cached(tmp_path):
    """Two modules each defining a subreactor of the same name: an unchanged rerun is cached."""
    (tmp_path / "helpers_a.py").write_text(HELPERS_A)
    (tmp_path / "helpers_b.py").write_text(HELPERS_B)
    script = write_script(tmp_path / "two_helpers.py", SAME_NAMED_SUBREACTORS)
    plant_dir = tmp_path / "plant"
    first = result_of(run_script(script, plant_dir))
    assert first["result"]["values"] == [5.0, 50000]
    second = result_of(run_script(script, plant_dir))
    assert second["result"]["values"] == [5.0, 50000]
    assert second["started"] == ["target"]


LAMBDA_CONFIG = '''
@ReactorFunc
def fn_reader(pipe, config):
    pipe.send("f", config.fn(21))

@ReactorFunc
def other_reader(pipe, config):
    pipe.send("o", config.other)

@ReactorFunc
def target(pipe):
    f = yield pipe.receive("f")
    o = yield pipe.receive("o")
    RESULT["values"] = [f, o]
    pipe.send("t", [f, o])

plant = open_plant({"fn": lambda v: v * 2, "other": 1})
plant.add_reactors(target, fn_reader, other_reader)
plant.run_reactor(target)
plant.shutdown()
report()
'''


def test_lambda_in_config_compared_by_its_own_code(tmp_path):
    """A lambda in the config re-runs its reader only when the lambda itself changes."""
    script = write_script(tmp_path / "lambda_conf.py", LAMBDA_CONFIG)
    plant_dir = tmp_path / "plant"
    assert result_of(run_script(script, plant_dir))["result"]["values"] == [42, 1]
    same = result_of(run_script(script, plant_dir))
    assert same["started"] == ["target"]
    edit(script, '"other": 1', '"other": 2')
    other_changed = result_of(run_script(script, plant_dir))
    assert other_changed["result"]["values"] == [42, 2]
    assert other_changed["started"] == ["target", "other_reader"]
    edit(script, "lambda v: v * 2", "lambda v: v * 3")
    fn_changed = result_of(run_script(script, plant_dir))
    assert fn_changed["result"]["values"] == [63, 2]
    assert fn_changed["started"] == ["target", "fn_reader"]


CALLABLE_WITH_GLOBAL = '''
FACTOR = 2

def scale(v):
    return v * FACTOR

@ReactorFunc
def reader(pipe, config):
    pipe.send("value", config.fn(21))

@ReactorFunc
def target(pipe):
    v = yield pipe.receive("value")
    RESULT["value"] = v
    pipe.send("out", v)

plant = open_plant({"fn": scale})
plant.add_reactors(target, reader)
plant.run_reactor(target)
plant.shutdown()
report()
'''


def test_callable_in_config_sees_its_global_constants(tmp_path):
    """A config function whose module constant changed gives a new result, not a stale one."""
    script = write_script(tmp_path / "fnglobal.py", CALLABLE_WITH_GLOBAL)
    plant_dir = tmp_path / "plant"
    assert result_of(run_script(script, plant_dir))["result"]["value"] == 42
    edit(script, "FACTOR = 2", "FACTOR = 3")
    changed = result_of(run_script(script, plant_dir))
    assert changed["result"]["value"] == 63
    assert changed["started"] == ["target", "reader"]


PLAIN_HELPER = '''
def helper(v):
    return v + 1  # HELPER

@ReactorFunc
def uses_helper(pipe):
    pipe.send("value", helper(1))

@ReactorFunc
def target(pipe):
    v = yield pipe.receive("value")
    RESULT["value"] = v
    pipe.send("out", v)

plant = open_plant()
plant.add_reactors(target, uses_helper)
plant.run_reactor(target)
plant.shutdown()
report()
'''


def test_editing_a_plain_helper_function_reruns_its_caller(tmp_path):
    """A reactor calling an edited plain helper function re-runs (no stale result)."""
    script = write_script(tmp_path / "helper.py", PLAIN_HELPER)
    plant_dir = tmp_path / "plant"
    assert result_of(run_script(script, plant_dir))["result"]["value"] == 2
    assert result_of(run_script(script, plant_dir))["started"] == ["target"]
    edit(script, "return v + 1  # HELPER", "return v + 5  # HELPER")
    changed = result_of(run_script(script, plant_dir))
    assert changed["result"]["value"] == 6
    assert changed["started"] == ["target", "uses_helper"]
