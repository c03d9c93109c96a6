"""Code hashes: what counts as a code change and what does not."""
from __future__ import annotations

import importlib.util
import textwrap

import numpy as np
import pytest

from pyplant import Plant
from pyplant.hashing import code_hash

BASE = '''
from pyplant import ReactorFunc

@ReactorFunc
def step(pipe):
    x = yield pipe.receive("x")
    pipe.send("y", x + 1)
'''

SAME_CODE_VARIANTS = {
    "comment": '''
from pyplant import ReactorFunc

@ReactorFunc
def step(pipe):
    # a new comment
    x = yield pipe.receive("x")  # trailing comment
    pipe.send("y", x + 1)
''',
    "blank-lines": '''
from pyplant import ReactorFunc


@ReactorFunc
def step(pipe):

    x = yield pipe.receive("x")

    pipe.send("y", x + 1)
''',
    "docstring": '''
from pyplant import ReactorFunc

@ReactorFunc
def step(pipe):
    """Now with a docstring."""
    x = yield pipe.receive("x")
    pipe.send("y", x + 1)
''',
    "moved-down": '''
from pyplant import ReactorFunc

# the function moved down in its file
VALUE = 3


@ReactorFunc
def step(pipe):
    x = yield pipe.receive("x")
    pipe.send("y", x + 1)
''',
}

CHANGED_VARIANTS = {
    "constant": BASE.replace("x + 1", "x + 2"),
    "operator": BASE.replace("x + 1", "x - 1"),
    "name": BASE.replace('"y"', '"z"'),
    "statement": BASE.replace('    pipe.send("y", x + 1)', '    x = x * 1\n    pipe.send("y", x + 1)'),
}


def load(tmp_path, module_name, source):
    path = tmp_path / f"{module_name}.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_code_hash_is_a_stable_string(tmp_path):
    """code_hash returns the same non-empty string for the same function every time."""
    module = load(tmp_path, "h_base", BASE)
    first = code_hash(module.step)
    assert isinstance(first, str) and first
    assert code_hash(module.step) == first


@pytest.mark.parametrize("variant", sorted(SAME_CODE_VARIANTS))
def test_layout_comment_docstring_edits_keep_code_hash(tmp_path, variant):
    """Comments, blank lines, docstrings and the position in the file do not change the hash."""
    base = load(tmp_path, "h_base_same", BASE)
    edited = load(tmp_path, f"h_same_{variant.replace('-', '_')}", SAME_CODE_VARIANTS[variant])
    assert code_hash(edited.step) == code_hash(base.step)


@pytest.mark.parametrize("variant", sorted(CHANGED_VARIANTS))
def test_real_edits_change_code_hash(tmp_path, variant):
    """Changing a constant, an operator, a name or adding a statement changes the hash."""
    base = load(tmp_path, "h_base_changed", BASE)
    edited = load(tmp_path, f"h_changed_{variant}", CHANGED_VARIANTS[variant])
    assert code_hash(edited.step) != code_hash(base.step)


def test_same_file_loaded_as_two_modules_has_same_hash(tmp_path):
    """One source file loaded as two module objects gives equal code hashes."""
    path = tmp_path / "twice.py"
    path.write_text(BASE)
    modules = []
    for name in ("twice_one", "twice_two"):
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        modules.append(module)
    assert modules[0].step is not modules[1].step
    assert code_hash(modules[0].step) == code_hash(modules[1].step)


def plant_with(tmp_path, plant_dir, module_name, source):
    """Run 'step' (after a producer of 'x') from a module loaded from ``source``."""
    Plant._clear_global_state()
    module = load(tmp_path, module_name, source + '''

@ReactorFunc
def make_x(pipe):
    pipe.send("x", 1)
''')
    started = []
    with Plant(str(plant_dir)) as plant:
        plant.add_event_listener(Plant.EventType.reactor_started, lambda e, n, f: started.append(n))
        plant.add_reactors(module.step, module.make_x)
        plant.run_reactor("make_x")
        plant.run_reactor("step")
        result = plant.fetch_ingredient("y")
    return started, result


@pytest.mark.parametrize("variant", sorted(SAME_CODE_VARIANTS))
def test_plant_does_not_rerun_after_layout_only_edit(tmp_path, variant):
    """A reactor edited only in comments/blank lines/docstring is not re-run when only consumed."""
    plant_dir = tmp_path / "plant"
    plant_with(tmp_path, plant_dir, "p_base", BASE)
    # 'step' is the producer now: a consumer checks it instead of running it
    source = SAME_CODE_VARIANTS[variant] + '''

@ReactorFunc
def final(pipe):
    y = yield pipe.receive("y")
    pipe.send("final", y)
'''
    Plant._clear_global_state()
    module = load(tmp_path, f"p_{variant.replace('-', '_')}", source + '''

@ReactorFunc
def make_x(pipe):
    pipe.send("x", 1)
''')
    started = []
    with Plant(str(plant_dir)) as plant:
        plant.add_event_listener(Plant.EventType.reactor_started, lambda e, n, f: started.append(n))
        plant.add_reactors(module.final, module.step, module.make_x)
        plant.run_reactor("final")
        assert plant.fetch_ingredient("final") == 2
    assert started == ["final"]


def consumed_step(tmp_path, plant_dir, module_name, source):
    """Run 'final', which receives 'y' from 'step': 'step' is verified, not forced to run."""
    Plant._clear_global_state()
    module = load(tmp_path, module_name, source + '''

@ReactorFunc
def make_x(pipe):
    pipe.send("x", 1)

@ReactorFunc
def final(pipe):
    y = yield pipe.receive("y")
    pipe.send("final", y)
''')
    started = []
    with Plant(str(plant_dir)) as plant:
        plant.add_event_listener(Plant.EventType.reactor_started, lambda e, n, f: started.append(n))
        plant.add_reactors(module.final, module.step, module.make_x)
        plant.run_reactor("final")
        result = plant.fetch_ingredient("final")
    return started, result


def test_plant_reruns_after_real_edit(tmp_path):
    """A reactor whose code really changed runs again when only consumed (it is not the
    target), and its consumer sees the new value; unchanged, it is verified, not run."""
    plant_dir = tmp_path / "plant"
    started, result = consumed_step(tmp_path, plant_dir, "r_base", BASE)
    assert (sorted(started), result) == (["final", "make_x", "step"], 2)
    started, result = consumed_step(tmp_path, plant_dir, "r_base_again", BASE)
    assert (started, result) == (["final"], 2)
    started, result = consumed_step(tmp_path, plant_dir, "r_changed", CHANGED_VARIANTS["constant"])
    assert (started, result) == (["final", "step"], 3)


RELOAD_SOURCE = '''
from pyplant import ReactorFunc

@ReactorFunc
def reload_prod(pipe):
    pipe.send("x", 1)

@ReactorFunc
def reload_cons(pipe):
    x = yield pipe.receive("x")
    pipe.send("y", x)
'''


def test_edit_and_reload_in_same_process_reruns(tmp_path, monkeypatch):
    """A module edited on disk and reloaded in the same process (a notebook) re-runs what changed."""
    import importlib
    import sys

    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    module_path = tmp_path / "reload_me_pipeline.py"
    module_path.write_text(RELOAD_SOURCE)
    module = importlib.import_module("reload_me_pipeline")
    try:
        plant_dir = tmp_path / "plant"
        with Plant(str(plant_dir)) as plant:
            plant.add_reactors(module.reload_cons, module.reload_prod)
            plant.run_reactor("reload_cons")
            assert plant.fetch_ingredient("y") == 1

        module_path.write_text(RELOAD_SOURCE.replace('pipe.send("x", 1)', 'pipe.send("x", 1000)'))
        Plant._clear_global_state()
        module = importlib.reload(module)
        started = []
        with Plant(str(plant_dir)) as plant:
            plant.add_event_listener(Plant.EventType.reactor_started, lambda e, n, f: started.append(n))
            plant.add_reactors(module.reload_cons, module.reload_prod)
            plant.run_reactor("reload_cons")
            assert plant.fetch_ingredient("y") == 1000
        assert started == ["reload_cons", "reload_prod"]
    finally:
        sys.modules.pop("reload_me_pipeline", None)


# --- arrays of any dtype, tokens, short reprs ------------------------------------------------


@pytest.mark.parametrize("dtype", ["datetime64[ns]", "datetime64[D]", "timedelta64[s]", "float16",
                                   [("a", "i4"), ("b", "f8")]])
def test_array_hash_of_any_fixed_size_dtype(dtype):
    """datetime64/timedelta64 (refused by the buffer protocol) and structured arrays hash by
    their bytes; the dtype and the content both count."""
    from pyplant.hashing import array_hash

    a = np.zeros(4, dtype=dtype)
    b = a.copy()
    b[2] = np.ones(1, dtype=dtype)[0]
    assert array_hash(a) == array_hash(a.copy()) != array_hash(b)
    assert array_hash(a[::2]) == array_hash(np.ascontiguousarray(a[::2]))


@pytest.mark.parametrize("other", [
    [("b", "<i4"), ("c", "<f4")],                                           # fields renamed
    [("a", "<f4"), ("b", "<i4")],                                           # fields retyped
    {"names": ["a", "b"], "formats": ["<i4", "<f4"], "offsets": [4, 0]},    # fields moved
    [("a", "<i4"), ("b", "<i2", (2,))],                                     # a sub-array field
    [(("title", "a"), "<i4"), ("b", "<f4")],                                # a title
    [("a", ">i4"), ("b", "<f4")],                                           # byte order
    [("a", [("x", "<i2"), ("y", "<i2")]), ("b", "<f4")],                    # nested fields
])
def test_array_hash_of_a_structured_array_counts_its_fields(other):
    """Over the very same bytes, another layout of fields is another array (dtype.str is
    '|V8' for all of them)."""
    from pyplant.hashing import array_hash

    a = np.zeros(3, dtype=[("a", "<i4"), ("b", "<f4")])
    b = np.zeros(3, dtype=other)
    assert a.tobytes() == b.tobytes() and a.dtype.str == b.dtype.str
    assert array_hash(a) != array_hash(b)
    assert array_hash(a) == array_hash(a.copy()) == array_hash(np.zeros(3, dtype=a.dtype.descr))


DATETIME_PIPELINE = '''
@ReactorFunc
def produce(pipe):
    pipe.send("t", np.arange("2024-01-01", "2024-01-08", dtype="datetime64[D]"))
    pipe.send("d", np.array([1, 2, 3], dtype="timedelta64[ms]"))
    pipe.send("big", np.arange(0, 300_000, dtype="datetime64[s]"))  # memory-mapped when loaded

@ReactorFunc
def target(pipe):
    t = yield pipe.receive("t")
    d = yield pipe.receive("d")
    big = yield pipe.receive("big")
    RESULT["t"] = [str(v) for v in t]
    RESULT["d"] = [str(v) for v in d]
    RESULT["big"] = [str(big.dtype), str(big[-1])]

plant = open_plant()
plant.add_reactors(target, produce)
plant.run_reactor(target)
plant.shutdown()
report()
'''


def test_datetime64_ingredients_round_trip_in_a_new_process(tmp_path):
    """Sent datetime64/timedelta64 arrays are stored, verified and received back equal."""
    from conftest import result_of, run_script, write_script

    script = write_script(tmp_path / "dates.py", DATETIME_PIPELINE)
    first = result_of(run_script(script, tmp_path / "plant"))
    second = result_of(run_script(script, tmp_path / "plant"))
    assert second["started"] == ["target"]
    assert first["result"] == second["result"]
    assert second["result"]["t"][0] == "2024-01-01" and second["result"]["d"] == ["1 milliseconds", "2 milliseconds",
                                                                                 "3 milliseconds"]
    assert second["result"]["big"] == ["datetime64[s]", str(np.datetime64(299_999, "s"))]
    assert first["started"] == ["target", "produce"]


def _named(v):
    return v


class _Named:
    pass


def test_short_repr_names_code_and_hides_addresses():
    from pyplant.hashing import short_repr

    assert short_repr(_named) == f"{__name__}._named"
    assert short_repr([_named, _Named]) == f"[{__name__}._named, {__name__}._Named]"
    assert "0x" not in short_repr(_Named()) and "_Named" in short_repr(_Named())
    assert "digits" in short_repr(10 ** 5000)
    assert len(short_repr(list(range(1000)))) <= 60


def test_tokens_of_library_objects_are_stable_and_by_content():
    """Path, datetime, Decimal and a NumPy generator: by what pickle would store, no address."""
    import datetime
    import decimal
    from pathlib import Path

    from pyplant.tokens import stable_token

    assert stable_token(Path("a/b.csv")) == stable_token(Path("a") / "b.csv") != stable_token(Path("a/c.csv"))
    assert stable_token(datetime.date(2024, 1, 2)) != stable_token(datetime.date(2024, 1, 3))
    assert stable_token(decimal.Decimal("1.50")) != stable_token(decimal.Decimal("1.5"))
    rng = np.random.default_rng(3)
    assert stable_token(rng) == stable_token(np.random.default_rng(3)) != stable_token(np.random.default_rng(4))
    rng.random()
    assert stable_token(rng) != stable_token(np.random.default_rng(3))
