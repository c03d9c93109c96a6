"""Why reactors ran (explain), and control: force, invalidate_ingredient, pinned versions, GC."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from pyplant import Plant, ReactorFunc
from pyplant.errors import IngredientNotFoundError, UnknownReactorError

from conftest import result_of, run_script, write_script


def pipeline():
    """load (reads config.x) -> 'y' -> step (no config) -> 'z' -> target."""

    @ReactorFunc
    def load(pipe, config):
        pipe.send("y", config.x * 10)

    @ReactorFunc
    def step(pipe):
        y = yield pipe.receive("y")
        pipe.send("z", y + 1)

    @ReactorFunc
    def target(pipe):
        z = yield pipe.receive("z")
        pipe.send("out", z)

    return load, step, target


def constant_chain():
    """a -> b -> c -> target, every output constant (forcing yields identical bytes)."""

    @ReactorFunc
    def a(pipe):
        pipe.send("a", 1)

    @ReactorFunc
    def b(pipe):
        x = yield pipe.receive("a")
        pipe.send("b", x + 1)

    @ReactorFunc
    def c(pipe):
        x = yield pipe.receive("b")
        pipe.send("c", x * 10)

    @ReactorFunc
    def target(pipe):
        x = yield pipe.receive("c")
        pipe.send("t", x)

    return a, b, c, target


# --- explain ---------------------------------------------------------------------------------

def test_explain_first_run_says_no_trace_yet(open_plant):
    """On a first run every producer's reason is 'no trace yet'."""
    load, step, target = pipeline()
    plant, _ = open_plant({"x": 1}, [load, step, target])
    plant.run_reactor(target)
    reasons = plant.explain()
    assert reasons["load"] == "no trace yet"
    assert reasons["step"] == "no trace yet"
    assert set(reasons) == {"load", "step", "target"}


def test_explain_cached_says_up_to_date(open_plant):
    """A second run explains cached producers as 'up to date'; explain(name) gives one reason."""
    load, step, target = pipeline()
    plant, events = open_plant({"x": 1}, [load, step, target])
    plant.run_reactor(target)
    events.log.clear()
    plant.run_reactor(target)
    assert events.started == ["target"]
    assert plant.explain()["load"] == "up to date"
    assert plant.explain()["step"] == "up to date"
    assert plant.explain("load") == "up to date"
    assert plant.explain(load) == "up to date"


def test_explain_config_change_and_input_change(open_plant):
    """A changed config value is named with old and new values; its consumer names the input."""
    load, step, target = pipeline()
    plant, events = open_plant({"x": 1}, [load, step, target])
    plant.run_reactor(target)
    plant.set_config({"x": 2})
    events.log.clear()
    plant.run_reactor(target)
    assert sorted(events.started) == ["load", "step", "target"]
    assert plant.explain("load") == "config parameter 'x' changed from 1 to 2"
    assert plant.explain("step") == "input 'y' changed"
    assert plant.fetch_ingredient("out") == 21


def test_explain_unknown_reactor_raises_key_error(open_plant):
    """explain(name) of a reactor not involved in the last run raises KeyError."""
    load, step, target = pipeline()
    plant, _ = open_plant({"x": 1}, [load, step, target])
    plant.run_reactor(target)
    with pytest.raises(KeyError):
        plant.explain("no_such_reactor")


CODE_EDIT = '''
@ReactorFunc
def produce(pipe):
    pipe.send("x", 1)  # EDIT

@ReactorFunc
def target(pipe):
    x = yield pipe.receive("x")
    RESULT["x"] = x

plant = open_plant()
plant.add_reactors(target, produce)
plant.run_reactor(target)
explain = plant.explain()
plant.shutdown()
report(explain=explain)
'''


def test_explain_code_changed_names_the_reactor(tmp_path):
    """After editing a reactor's body, its reason says code changed and names it."""
    script = write_script(tmp_path / "s.py", CODE_EDIT)
    plant_dir = tmp_path / "plant"
    run_script(script, plant_dir)
    script.write_text(script.read_text().replace('pipe.send("x", 1)  # EDIT', 'pipe.send("x", 2)'))
    out = result_of(run_script(script, plant_dir))
    assert "produce" in out["started"]
    reason = out["explain"]["produce"]
    assert reason.startswith("code changed")
    assert "produce" in reason
    assert out["result"]["x"] == 2


# --- force -----------------------------------------------------------------------------------

def test_force_reruns_reactor_and_downstream_once(open_plant):
    """force(b) re-runs b and everything downstream despite identical outputs, only once."""
    a, b, c, target = constant_chain()
    plant, events = open_plant(None, [a, b, c, target])
    plant.run_reactor(target)
    events.log.clear()
    plant.force(b)
    plant.run_reactor(target)
    assert sorted(events.started) == ["b", "c", "target"]
    reasons = plant.explain()
    assert reasons["b"] == "forced"
    assert "forced" in reasons["c"]
    assert reasons["a"] == "up to date"
    assert plant.fetch_ingredient("t") == 20
    events.log.clear()
    plant.run_reactor(target)
    assert events.started == ["target"]
    assert plant.explain("b") == "up to date"


def test_force_by_name(open_plant):
    """force accepts a reactor name as well as the function."""
    a, b, c, target = constant_chain()
    plant, events = open_plant(None, [a, b, c, target])
    plant.run_reactor(target)
    events.log.clear()
    plant.force("c")
    plant.run_reactor(target)
    assert sorted(events.started) == ["c", "target"]


# --- invalidate_ingredient -------------------------------------------------------------------

def test_invalidate_ingredient_reruns_producer_with_early_cutoff(open_plant):
    """invalidate_ingredient forgets traces, re-runs the producer, stops at identical output."""
    a, b, c, target = constant_chain()
    plant, events = open_plant(None, [a, b, c, target])
    plant.run_reactor(target)
    dropped = plant.invalidate_ingredient("b")
    assert dropped > 0
    events.log.clear()
    plant.run_reactor(target)
    assert sorted(events.started) == ["b", "target"]
    assert plant.explain("b") == "ingredient 'b' was invalidated"
    assert plant.explain("c") == "up to date"
    assert plant.fetch_ingredient("t") == 20
    events.log.clear()
    plant.run_reactor(target)
    assert events.started == ["target"]


def test_invalidate_ingredient_counts_every_version(open_plant):
    """Each config version of an ingredient is a trace; invalidate forgets them all."""
    load, step, target = pipeline()
    plant, events = open_plant({"x": 1}, [load, step, target])
    plant.run_reactor(target)
    plant.set_config({"x": 2})
    plant.run_reactor(target)
    assert plant.invalidate_ingredient("y") == 2
    plant.set_config({"x": 1})
    events.log.clear()
    plant.run_reactor(target)
    assert "load" in events.started
    assert "step" not in events.started  # same y as the x=1 run: early cutoff


def test_invalidate_unknown_ingredient_raises_with_the_closest_name(open_plant):
    """A name never produced is a typo: it raises, naming the closest known ingredient."""
    a, b, c, target = constant_chain()
    plant, _ = open_plant(None, [a, b, c, target])
    with pytest.raises(IngredientNotFoundError, match="never_made"):
        plant.invalidate_ingredient("never_made")
    plant.run_reactor(target)
    with pytest.raises(IngredientNotFoundError, match=r"ingredient 'bb'.*did you mean 'b'\?") as info:
        plant.invalidate_ingredient("bb")
    assert info.value.ingredient == "bb"


def test_force_unknown_reactor_raises_with_the_closest_name(open_plant):
    """force('typo') raises before anything runs, naming the closest reactor."""
    a, b, c, target = constant_chain()
    plant, _ = open_plant(None, [a, b, c, target])
    with pytest.raises(UnknownReactorError, match=r"'targt'.*did you mean 'target'\?"):
        plant.force("targt")


# --- pinned versions -------------------------------------------------------------------------

PINNED = '''
@ReactorFunc(version='1')
def produce(pipe):
    pipe.send("x", 1)  # BODY

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


def test_pinned_version_keeps_cache_until_version_changes(tmp_path):
    """@ReactorFunc(version='1'): a body edit keeps the cache; a new version re-runs."""
    script = write_script(tmp_path / "s.py", PINNED)
    plant_dir = tmp_path / "plant"
    assert "produce" in result_of(run_script(script, plant_dir))["started"]
    script.write_text(script.read_text().replace('pipe.send("x", 1)  # BODY', 'pipe.send("x", 2)'))
    kept = result_of(run_script(script, plant_dir))
    assert kept["started"] == ["target"]
    assert kept["result"]["x"] == 1
    script.write_text(script.read_text().replace("version='1'", "version='2'"))
    bumped = result_of(run_script(script, plant_dir))
    assert "produce" in bumped["started"]
    assert bumped["result"]["x"] == 2


# --- gc --------------------------------------------------------------------------------------

MB_ARRAY = '''
@ReactorFunc
def produce(pipe, config):
    pipe.send("arr", np.full(131072, float(config.seed)))  # 1 MiB

@ReactorFunc
def target(pipe):
    arr = yield pipe.receive("arr")
    RESULT["first"] = float(arr[0])

SEEDS = {"A": 1, "B": 2, "C": 3}
plant = open_plant({"seed": SEEDS[ARGS[0]]})
plant.add_reactors(target, produce)
plant.run_reactor(target)
if len(ARGS) > 1 and ARGS[1] == "hold":
    print("READY", flush=True)
    sys.stdin.read()  # stay open, holding the loaded version, until the test closes stdin
plant.shutdown()
report()
'''

OLD = time.time() - 3600


def blob_files(plant_dir):
    root = plant_dir / "blobs"
    return {p for p in root.rglob("*") if p.is_file()}


def age_files(plant_dir):
    """Make every stored file an hour old, as if the runs happened long ago."""
    for top in ("blobs", "files", "specs"):
        for p in (plant_dir / top).rglob("*"):
            if p.is_file():
                os.utime(p, (OLD, OLD))


@pytest.fixture
def gc_runs(tmp_path):
    """Run the 1 MiB producer with a given config (A, B or C) in a new process."""
    script = write_script(tmp_path / "gc.py", MB_ARRAY)
    plant_dir = tmp_path / "plant"

    def _run(which):
        out = result_of(run_script(script, plant_dir, which))
        assert out["result"]["first"] == {"A": 1.0, "B": 2.0, "C": 3.0}[which]
        return out["started"]

    _run.script = script
    _run.plant_dir = plant_dir
    return _run


def collect(plant_dir, **policy):
    plant = Plant(str(plant_dir))
    try:
        return plant.gc(**policy)
    finally:
        plant.shutdown()


def test_gc_without_policy_sweeps_only_unreferenced_files(gc_runs):
    """gc() deletes an old stray blob and keeps every version (A again is a cache hit)."""
    for which in "ABC":
        assert "produce" in gc_runs(which)
    plant_dir = gc_runs.plant_dir
    stray = plant_dir / "blobs" / "stray-leftover.npy"
    stray.write_bytes(b"x" * 5000)
    age_files(plant_dir)
    before = blob_files(plant_dir)
    result = collect(plant_dir)
    assert result.traces == 0
    assert result.files == 1
    assert result.bytes == 5000
    assert not stray.exists()
    assert blob_files(plant_dir) == before - {stray}
    assert gc_runs("A") == ["target"]
    assert gc_runs("B") == ["target"]


def test_gc_keep_last_one_drops_old_versions(gc_runs):
    """gc(keep_last=1) frees old versions: the latest stays cached, an old config re-runs."""
    for which in "ABC":
        gc_runs(which)
    age_files(gc_runs.plant_dir)
    result = collect(gc_runs.plant_dir, keep_last=1)
    assert result.traces > 0
    assert result.files > 0
    assert result.bytes > 0
    assert result.traces >= 2  # produce's A and B (and the target's old traces)
    assert result.bytes >= 2 * 1024 * 1024
    assert gc_runs("C") == ["target"]
    assert "produce" in gc_runs("A")


def test_gc_max_bytes_keeps_most_recently_used_within_budget(gc_runs):
    """gc(max_bytes=~1.5 MiB) keeps the latest plus the most recently used older version."""
    for which in "ABC":
        gc_runs(which)
    age_files(gc_runs.plant_dir)
    result = collect(gc_runs.plant_dir, max_bytes=1_500_000)
    assert result.traces == 1
    assert result.files >= 1
    assert gc_runs("C") == ["target"]
    assert gc_runs("B") == ["target"]
    assert "produce" in gc_runs("A")


def test_gc_max_bytes_prefers_recently_used_over_recently_made(gc_runs):
    """A version used again (A, cache hit) outranks one made later but not used since (B)."""
    for which in "ABC":
        gc_runs(which)
    assert gc_runs("A") == ["target"]
    assert gc_runs("C") == ["target"]
    age_files(gc_runs.plant_dir)
    result = collect(gc_runs.plant_dir, max_bytes=1_500_000)
    assert result.traces == 1
    assert gc_runs("C") == ["target"]
    assert gc_runs("A") == ["target"]
    assert "produce" in gc_runs("B")


def test_gc_never_deletes_what_a_live_plant_in_another_process_holds(gc_runs):
    """A plant in another process that loaded A keeps A's blob through gc(keep_last=1), even
    though C ran after it (so A's trace is not the latest: only the holder's lease keeps it)."""
    from conftest import child_env
    gc_runs("A")
    blob_a = blob_files(gc_runs.plant_dir)
    assert len(blob_a) == 1
    gc_runs("B")
    blob_b = blob_files(gc_runs.plant_dir) - blob_a
    assert len(blob_b) == 1
    holder = subprocess.Popen(
        [sys.executable, str(gc_runs.script), str(gc_runs.plant_dir), "A", "hold"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=child_env(), cwd=str(gc_runs.script.parent))
    try:
        assert holder.stdout.readline().strip() == "READY"
        gc_runs("C")  # the latest trace now: A's is kept only because the holder holds it
        age_files(gc_runs.plant_dir)
        result = collect(gc_runs.plant_dir, keep_last=1)
        assert result.files >= 1
        assert all(p.exists() for p in blob_a)
        assert not any(p.exists() for p in blob_b)
    finally:
        out, err = holder.communicate(input="", timeout=60)
    assert holder.returncode == 0, err
    held = result_of(subprocess.CompletedProcess(holder.args, holder.returncode, out, err))
    assert held["started"] == ["target"]
    assert gc_runs("A") == ["target"]  # A's trace was kept with its held blob


# --- finding traces again, explaining with every difference ---------------------------------

def test_return_to_a_config_more_than_64_runs_old_is_a_cache_hit(open_plant):
    """A sweep visits 80 points; going back to the first finds its trace (trace index)."""
    load, step, target = pipeline()
    plant, events = open_plant({"x": 0}, [load, step, target])
    for x in range(80):
        plant.set_config({"x": x})
        plant.run_reactor(target)
    plant.set_config({"x": 0})
    events.log.clear()
    plant.run_reactor(target)
    assert events.started == ["target"]
    assert plant.explain("load") == "up to date"


def test_explain_names_every_difference_against_the_closest_trace(open_plant):
    """C changed and max_iter changed: both are named, not only the first."""

    @ReactorFunc
    def train(pipe, config):
        pipe.send("model", (config.C, config.max_iter))

    @ReactorFunc
    def report(pipe):
        pipe.send("out", (yield pipe.receive("model")))

    plant, _ = open_plant({"C": 0.1, "max_iter": 100, "other": 1}, [train, report])
    plant.run_reactor(report)
    plant.set_config({"C": 1.0, "max_iter": 100, "other": 1})
    plant.run_reactor(report)
    plant.set_config({"C": 1.0, "max_iter": 200, "other": 1})  # closest: the C=1.0 trace
    plant.run_reactor(report)
    assert plant.explain("train") == "config parameter 'max_iter' changed from 100 to 200"
    plant.set_config({"C": 0.5, "max_iter": 300, "other": 1})
    plant.run_reactor(report)
    reason = plant.explain("train")
    assert reason == ("config parameter 'C' changed from 1.0 to 0.5; "
                      "config parameter 'max_iter' changed from 200 to 300")


EXPLAIN_BOTH = """
K = {k}

@ReactorFunc
def load(pipe):
    pipe.send("data", {data})

@ReactorFunc
def compute(pipe):
    d = yield pipe.receive("data")
    pipe.send("mid", d * K)

@ReactorFunc
def show(pipe):
    RESULT["mid"] = yield pipe.receive("mid")

plant = open_plant()
plant.add_reactors(load, compute, show)
plant.run_reactor(show)
report(explain=plant.explain())
"""


def test_explain_names_an_input_change_beside_a_code_change(tmp_path):
    """A reactor whose constant and whose input both changed in one edit is explained by
    both: the code change is known before it runs, the input change once its producer ran."""
    script = tmp_path / "both.py"
    write_script(script, EXPLAIN_BOTH.format(k=2, data=3))
    assert result_of(run_script(script, tmp_path / "p"))["result"]["mid"] == 6
    write_script(script, EXPLAIN_BOTH.format(k=5, data=4))
    out = result_of(run_script(script, tmp_path / "p"))
    assert out["result"]["mid"] == 20
    assert out["explain"]["compute"] == "code changed: constant both.K; input 'data' changed"
    assert out["explain"]["load"] == "code changed: reactor 'load'"
