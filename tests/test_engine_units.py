"""Unit tests of the engine's pure parts (trace verification, keys, the value cache) and of the
per-process caches; no plant directory unless the test says so."""
from __future__ import annotations

import gc

import numpy as np
import pytest

from pyplant import Plant, ReactorFunc
from pyplant.caches import BoundedCache, IdentityCache
from pyplant.engine import verify
from pyplant.engine.session import ValueCache
from pyplant.warehouse import Trace, Version
from pyplant.warehouse.metadata import code_digest, trace_index_key


def trace(**fields) -> Trace:
    base = dict(reactor="train", trace_id="t1", code={"reactor": "h1", "fn:m.helper": "h2"},
                config={"C": ("tokC1", "0.1")}, inputs={"data": "d1"}, outputs={})
    base.update(fields)
    return Trace(**base)


def facts(**fields) -> verify.Facts:
    params = fields.pop("params", {"C": ("tokC1", "0.1")})
    inputs = fields.pop("inputs", {"data": "d1"})
    base = dict(code={"reactor": "h1", "fn:m.helper": "h2"}, param=params.get,
                input_hash=lambda name: inputs.get(name))
    base.update(fields)
    return verify.Facts(**base)


class TestVerify:
    def test_a_trace_of_unchanged_facts_holds(self):
        assert verify.verify("train", trace(), facts()).holds

    def test_every_difference_is_named(self):
        now = facts(code={"reactor": "h1", "fn:m.helper": "CHANGED", "const:m.K": "k"},
                    params={"C": ("tokC2", "1.0")}, inputs={"data": "d2"})
        verdict = verify.verify("train", trace(), now)
        assert verdict.differences == (
            "code changed: function m.helper",
            "code changed: 'train' now depends on m.K",
            "config parameter 'C' changed from 0.1 to 1.0",
            "input 'data' changed")

    def test_a_removed_parameter_and_a_vanished_input(self):
        verdict = verify.verify("train", trace(), facts(params={}, inputs={}))
        assert verdict.differences == ("config parameter 'C' was removed",
                                       "input 'data' is no longer produced")

    def test_auxiliary_parameters_are_not_compared(self):
        now = facts(params={"C": ("other", "2")}, auxiliary=lambda name: name == "C")
        assert verify.verify("train", trace(), now).holds

    def test_an_unsettled_input_stops_the_check_there(self):
        now = facts(input_hash=lambda name: verify.PENDING)
        verdict = verify.verify("train", trace(), now)
        assert verdict.pending == "data" and not verdict.holds

    def test_environment_files_and_listings(self):
        recorded = trace(env={"NORM": "1", "UNSET": None}, files={"/d/a.csv": "fa"}, dirs={"/d": "la"})
        now = facts(env={"NORM": "2"}, file_digest=lambda p: None, listing=lambda p: "lb")
        assert verify.verify("train", recorded, now).differences == (
            "environment variable NORM changed", "input file /d/a.csv is gone",
            "directory listing of /d changed")
        same = facts(env={"NORM": "1"}, file_digest=lambda p: "fa", listing=lambda p: "la")
        assert verify.verify("train", recorded, same).holds

    def test_subreactors_are_compared_by_their_current_hash(self):
        recorded = trace(code={"reactor": "h1", "fn:m.helper": "h2", "sub:m.norm": "s1"})
        assert verify.verify("train", recorded, facts(sub_hash={"sub:m.norm": "s1"}.get)).holds
        assert verify.verify("train", recorded, facts(sub_hash={}.get)).differences == (
            "code changed: m.norm is gone",)

    def test_static_holds_agrees_with_static_differences(self):
        sub = {"reactor": "h1", "fn:m.helper": "h2", "sub:m.norm": "s1"}
        cases = [(trace(), facts()), (trace(config={}), facts(params={})),
                 (trace(config={}), facts(code={"reactor": "h1"})),
                 (trace(config={}), facts(code={"reactor": "h1", "fn:m.helper": "h2", "x:y": "z"})),
                 (trace(config={}), facts(params={}, code={"reactor": "h1", "fn:m.helper": "CHANGED"})),
                 (trace(), facts(params={"C": ("tokC2", "1.0")})),
                 (trace(), facts(auxiliary=lambda name: True, params={})),
                 (trace(config={}, code=sub), facts(code=sub, sub_hash={"sub:m.norm": "s1"}.get)),
                 (trace(config={}, code=sub), facts(code=sub, sub_hash={}.get)),
                 (trace(config={}, code=sub), facts(sub_hash={"sub:m.norm": "s1"}.get)),
                 (trace(config={}, env={"N": "1"}), facts(env={"N": "2"})),
                 (trace(config={}, files={"/a": "fa"}), facts(file_digest=lambda p: "fa")),
                 (trace(config={}, dirs={"/d": "la"}), facts(listing=lambda p: None))]
        for recorded, now in cases:
            built = []
            holds = verify.static_holds("train", recorded, now.code, lambda: built.append(1) or now)
            assert holds == (not verify.static_differences("train", recorded, now)), (recorded, now)
        plain = trace(config={}, code={"reactor": "h1"})
        built = []
        assert verify.static_holds("train", plain, {"reactor": "h1"}, lambda: built.append(1) or facts())
        assert not built  # nothing but an equal code map recorded: no facts needed

    def test_closest_trace_has_the_fewest_differences(self):
        far = trace(trace_id="far", config={"C": ("x", "9")}, inputs={"data": "zz"})
        near = trace(trace_id="near", config={"C": ("x", "9")})
        now = facts()
        assert verify.closest("train", [far, near], now) == ["config parameter 'C' changed from 9 to 0.1"]
        assert verify.closest("train", [], now) is None

    def test_summary_bounds_the_number_of_reasons(self):
        assert verify.summarize([f"r{i}" for i in range(8)], limit=3) == "r0; r1; r2; and 5 more"


class TestTraceIndexKey:
    def test_key_depends_on_code_and_parameter_tokens_only(self):
        code = {"reactor": "h1", "fn:m.f": "h2"}
        with_sub = dict(code, **{"sub:m.s": "s1"})
        assert code_digest(code) == code_digest(with_sub)  # subreactors are known after a run only
        key = trace_index_key(code_digest(code), {"C": "t1"})
        assert key == trace_index_key(code_digest(dict(code)), {"C": "t1"})
        assert key != trace_index_key(code_digest(code), {"C": "t2"})
        assert key != trace_index_key(code_digest({"reactor": "h1"}), {"C": "t1"})
        assert key != trace_index_key(code_digest(code), {})


class TestValueCache:
    def test_keeps_what_a_run_used_and_the_most_recent_rest_within_budget(self):
        cache = ValueCache(budget=100)
        for name, size in (("a", 60), ("b", 80), ("c", 30)):
            cache.put((name, "h", None), name, size)
        cache.keep(used={("a", "h", None)})
        assert ("a", "h", None) in cache and ("c", "h", None) in cache  # a: used; c: 30 <= 100
        assert ("b", "h", None) not in cache                             # 30 + 80 > 100: over budget
        assert cache[("a", "h", None)] == "a"


def test_a_version_used_again_after_a_run_that_did_not_use_it_is_loaded_once(tmp_path, monkeypatch):
    @ReactorFunc
    def produce(pipe, config):
        pipe.send("x", np.full(10, float(config.k)))

    @ReactorFunc
    def show(pipe):
        pipe.send("total", float((yield pipe.receive("x")).sum()))

    loads = []
    with Plant(str(tmp_path / "p")) as plant:
        plant.add_reactors(produce, show)
        plant.set_config({"k": 1})
        plant.run_reactor(show)
    with Plant(str(tmp_path / "p")) as plant:  # a new plant: nothing loaded yet
        original = plant.warehouse.load
        monkeypatch.setattr(plant.warehouse, "load", lambda v: loads.append(v.name) or original(v))
        plant.add_reactors(produce, show)
        for k in (1, 2, 1, 2, 1):
            plant.set_config({"k": k})
            plant.run_reactor(show)
            assert plant.fetch_ingredient("total") == 10.0 * k
    assert loads.count("x") == 1  # k=1's x, loaded once; k=2's was made in this plant


class TestCaches:
    def test_identity_cache_forgets_dead_objects(self):
        cache: IdentityCache[str] = IdentityCache()
        codes = [compile(f"x = {i}", "<test>", "exec") for i in range(50)]
        for code in codes:
            cache.put(code, "v")
        assert len(cache) == 50 and cache.get(codes[3]) == "v"
        del codes, code
        gc.collect()
        assert len(cache) == 0

    def test_code_hash_cache_does_not_grow_with_redefinitions(self):
        from pyplant import hashing
        before = len(hashing._code_cache)
        for i in range(200):  # a notebook cell run again and again
            namespace: dict = {}
            exec(compile(f"def f(x):\n    return x + {i}\n", f"<cell {i}>", "exec"), namespace)
            hashing.code_hash(namespace["f"])
            del namespace
        gc.collect()
        assert len(hashing._code_cache) - before < 5

    def test_bounded_cache_keeps_the_most_recently_used(self):
        cache: BoundedCache[int] = BoundedCache(size=3)
        for i in range(3):
            cache.put(str(i), i)
        cache.get("0")
        cache.put("3", 3)
        assert cache.get("1") is None and cache.get("0") == 0 and len(cache) == 3


# --- the wording of reasons, and the slots of tasks with fixed inputs ---

def _trace(inputs=None, code=None) -> Trace:
    return Trace("t", "id", code or {"reactor": "c"}, {}, inputs or {}, {})


def test_slot_differences_compare_the_slots_a_step_call_receives_now():
    trace = _trace(inputs={"items[0]": "h0", "items[1]": "h1"})
    assert verify.slot_differences(trace, verify.Facts(code={}, slots=None)) == []
    assert verify.slot_differences(trace, verify.Facts(code={}, slots=("items[1]", "items[0]"))) == []
    assert verify.slot_differences(trace, verify.Facts(code={}, slots=("items[0]", "items[1]", "items[2]"))) == \
        ["inputs changed: now receives items[2]"]
    assert verify.slot_differences(trace, verify.Facts(code={}, slots=("items[0]",))) == \
        ["inputs changed: now receives nothing new, no longer items[1]"]
    assert verify.slot_differences(trace, verify.Facts(code={}, slots=("z",))) == \
        ["inputs changed: now receives z, no longer items[0], items[1]"]
    facts = verify.Facts(code={"reactor": "c"}, slots=("items[0]", "items[1]", "x"),
                         input_hash=lambda name: {"items[0]": "h0", "items[1]": "h1"}.get(name))
    assert not verify.static_holds("t", trace, {"reactor": "c"}, lambda: facts, fixed_inputs=True)
    assert verify.static_holds("t", trace, {"reactor": "c"}, lambda: facts)  # a reactor: no slots


@pytest.mark.parametrize("label, before, now, kind, expected", [
    ("reactor", "a", "b", "reactor", "code changed: reactor 't'"),
    ("reactor", "a", "b", "step", "code changed: step 't'"),
    ("command", "a", "b", "step", "command line changed: step 't'"),
    ("fn:helpers.scale", None, "b", "reactor", "code changed: 't' now depends on helpers.scale"),
    ("fn:helpers.scale", "a", None, "reactor", "code changed: helpers.scale is gone"),
    ("lib:numpy", "1.26", "2.0", "reactor", "library numpy changed version 1.26 -> 2.0"),
    ("fn:helpers.scale", "a", "b", "reactor", "code changed: function helpers.scale"),
    ("cls:m.Model", "a", "b", "reactor", "code changed: class m.Model"),
    ("const:m.K", "a", "b", "reactor", "code changed: constant m.K"),
    ("sub:norm", "a", "b", "reactor", "code changed: subreactor norm"),
    ("obj:m.SMOOTHER", "a", "b", "reactor", "code changed: object m.SMOOTHER"),
    ("name:m.x", "a", "b", "reactor", "code changed: name m.x"),
    ("file:gen.py", "a", "b", "step", "code changed: file gen.py"),
])
def test_code_change_reasons_name_what_changed(label, before, now, kind, expected):
    assert verify.code_change_reason("t", label, before, now, kind) == expected


def test_input_differences_name_settled_inputs_that_changed():
    trace = _trace(inputs={"a": "h1", "b": "h2", "c": "h3"})
    now = {"a": "h1", "b": "other", "c": verify.PENDING}
    facts = verify.Facts(code={}, input_hash=lambda name: now.get(name))
    assert verify.input_differences(trace, facts) == ["input 'b' changed"]
    verdict = verify.verify("t", trace, verify.Facts(code={"reactor": "c"}, input_hash=lambda name: now.get(name)))
    assert verdict.pending == "c" and verdict.differences == ("input 'b' changed",)


def test_differences_are_worded_for_people_and_none_is_skipped():
    trace = Trace("t", "id", {"reactor": "c", "fn:m.f": "f1", "fn:m.gone": "g1"},
                  {"aux": ("a1", "1"), "lr": ("t1", "0.1")}, {"x": "h"}, {},
                  files={"/data/a.csv": "d1", "/data/b.csv": "d2"}, dirs={"/data/in": "l1"},
                  env={"SEED": "1"})
    params = {"aux": ("a2", "2"), "lr": ("t2", "0.2")}
    facts = verify.Facts(code={"reactor": "c", "fn:m.f": "f2", "fn:m.new": "n1"}, kind="step",
                         param=params.get, auxiliary=lambda name: name == "aux",
                         env={"SEED": "2"}, file_digest={"/data/a.csv": "d9"}.get,
                         listing={"/data/in": "l2"}.get, slots=("x", "y", "z"))
    assert verify.static_differences("t", trace, facts) == [
        "code changed: function m.f", "code changed: m.gone is gone", "code changed: 't' now depends on m.new",
        "argument 'lr' changed from 0.1 to 0.2",          # after an auxiliary one: still checked
        "inputs changed: now receives y, z",
        "environment variable SEED changed", "input file /data/a.csv changed", "input file /data/b.csv is gone",
        "directory listing of /data/in changed"]
    facts = verify.Facts(code={"reactor": "d"}, kind="step", param=params.get)
    assert verify.code_differences("t", trace, facts)[0] == "code changed: step 't'"
    assert verify.param_differences(trace, verify.Facts(code={}, param={}.get)) == [
        "config parameter 'aux' was removed", "config parameter 'lr' was removed"]


@pytest.mark.parametrize("n, expected", [
    (verify.MAX_REASONS, "; ".join(f"r{i}" for i in range(verify.MAX_REASONS))),
    (verify.MAX_REASONS + 2, "; ".join(f"r{i}" for i in range(verify.MAX_REASONS)) + "; and 2 more"),
])
def test_summarize_shows_at_most_max_reasons(n, expected):
    assert verify.summarize([f"r{i}" for i in range(n)]) == expected


def test_unchanged_files_and_listings_make_no_difference():
    trace = Trace("t", "id", {"reactor": "c"}, {}, {}, {}, files={"/data/a.csv": "d1"},
                  dirs={"/data/in": "l1"}, env={"SEED": "1"})
    facts = verify.Facts(code={"reactor": "c"}, env={"SEED": "1"}, file_digest={"/data/a.csv": "d1"}.get,
                         listing={"/data/in": "l1"}.get)
    assert verify.static_differences("t", trace, facts) == []
    assert verify.static_holds("t", trace, {"reactor": "c"}, lambda: facts)


def test_summarize_words_a_repeated_reason_once():
    """Several labels of one function word the same reason: it is shown once, in order."""
    gone = "code changed: analysis.sub is gone"
    assert verify.summarize([gone, "input 'x' changed", gone, gone]) == f"{gone}; input 'x' changed"
