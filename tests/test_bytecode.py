"""What bytecode says a function does with names: globals versus attributes, and the places
whose objects it mutates. A false mutation would drop a real dependency (stale), so the cases
that must NOT count as mutations matter as much as those that must."""
from __future__ import annotations

import dis
import json
import types

import pytest

from pyplant import bytecode, instructions
from pyplant.bytecode import ANY_KEY, Place

X = Y = RESULTS = TABLE = np_linalg = None  # names the functions below refer to


def mutated(func) -> set[tuple]:
    """{(root, steps, attr)} of the mutations of ``func``."""
    return {(m.place.root, m.place.steps, m.attr) for m in bytecode.facts(func.__code__).mutations}


def g(name, *steps, attr=None):
    return ("global", name), tuple(steps), attr


def test_method_calls_item_and_attribute_stores_are_mutations():
    def f(k, v):
        X.append(v)
        TABLE[k][1] = v
        RESULTS.meta.tags.add(v)
        del Y[k]

    assert mutated(f) == {g("X"), g("TABLE", ("[]", ANY_KEY)), g("RESULTS", (".", "meta"), (".", "tags")),
                          g("Y")}


def test_reads_and_copies_are_not_mutations():
    def f(k):
        a = len(X) + X[k] + X.get(k)
        b = X.copy()
        b.append(1)          # a copy
        for item in X:
            item.append(1)   # an element reached by iteration: unknown, not X
        sorted(Y)
        z = list(RESULTS)
        z.sort()
        return a, b

    assert mutated(f) == set()


def test_alias_assigned_once_is_followed():
    def f(v):
        d = X
        d["k"] = v
        e = TABLE["rows"]
        e.extend(v)

    assert mutated(f) == {g("X"), g("TABLE", ("[]", "rows"))}


def test_join_of_two_receivers_is_unknown():
    def f(c):
        (X if c else Y).append(1)

    assert mutated(f) == set()  # missed (a wasted re-run at worst), never invented


def test_receiver_kept_across_a_conditional_argument():
    def f(c, v):
        X.append(v if c else -v)

    assert mutated(f) == {g("X")}


def test_self_attributes_and_inplace_operators():
    class C:
        def m(self, v):
            self.total += v
            self.cache[v] = v
            self.items.append(v)
            return lambda: self.log.append(v)

    found = mutated(C.m)
    assert (("arg0",), (), "total") in found
    assert (("arg0",), ((".", "cache"),), None) in found
    assert (("arg0",), ((".", "items"),), None) in found
    assert (("arg0",), ((".", "log"),), None) in found  # through a lambda's closure


def test_global_and_nonlocal_rebinding_and_setattr():
    def outer():
        count = 0

        def bump():
            nonlocal count
            count += 1
            global X
            X = count
            setattr(Y, "seen", True)
        return bump

    bump = outer()
    facts = bytecode.facts(bump.__code__)
    assert facts.rebound == {"X"} and facts.rebound_free == {"count"}
    assert g("Y", attr="seen") in mutated(bump)


def test_comprehension_and_exception_handler_mutations():
    def f(values):
        [RESULTS.append(v) for v in values]
        try:
            return values[0]
        except IndexError:
            X.clear()

    assert mutated(f) == {g("RESULTS"), g("X")}


def test_a_return_inside_try_inside_a_loop_is_analysed():
    """Its handler swaps with a slot below what the analysis knows (the stack it tracks was
    emptied at the handler): that slot is unknown, and the analysis goes on."""
    def f(root, func):
        if root[0] == "free":
            for name, cell in zip(func.__code__.co_freevars, func.__closure__ or ()):
                if name == root[1]:
                    try:
                        return cell.cell_contents
                    except ValueError:
                        return X
            return Y
        return None

    assert {"X", "Y"} <= bytecode.facts(f.__code__).globals


def test_globals_and_attributes_are_told_apart():
    def f(model, config):
        import json as j
        from os import path
        return np_linalg.solve(model.fit(config.k)), j, path

    facts = bytecode.facts(f.__code__)
    assert "np_linalg" in facts.globals
    assert {"solve", "fit", "k", "path"} <= facts.attributes
    assert not {"solve", "fit", "k"} & facts.globals
    assert facts.imports == (("json", 0), ("os", 0))


def test_decoder_agrees_with_dis_on_the_standard_library():
    """The fast 3.11 decoder reads the same instructions, names and jump targets as ``dis``,
    on every function of a few large modules (EXTENDED_ARG and all)."""
    import argparse
    import inspect as inspect_module
    import logging

    checked = 0
    for module in (json.decoder, argparse, logging, inspect_module):
        for value in vars(module).values():
            functions = [value] if isinstance(value, types.FunctionType) else \
                [v for v in vars(value).values() if isinstance(v, types.FunctionType)] if isinstance(value, type) else []
            for func in functions:
                codes = [func.__code__]
                while codes:
                    code = codes.pop()
                    codes += [c for c in code.co_consts if isinstance(c, types.CodeType)]
                    ours = [(op, argval if op not in ("LOAD_CONST",) else None, target)
                            for _, op, _, argval, target in instructions.instructions(code)]
                    theirs = [(i.opname, i.argval if i.opname != "LOAD_CONST" else None,
                               i.argval if i.opcode in instructions.JUMPS else None)
                              for i in dis.get_instructions(code) if i.opname != "EXTENDED_ARG"]
                    theirs = [(op, v if op in _NAMED else None, t) for op, v, t in theirs]
                    ours = [(op, v if op in _NAMED else None, t) for op, v, t in ours]
                    assert ours == theirs, func
                    checked += 1
    assert checked > 500


_NAMED = {"LOAD_GLOBAL", "LOAD_ATTR", "LOAD_METHOD", "STORE_ATTR", "LOAD_FAST", "STORE_FAST", "LOAD_DEREF",
          "STORE_DEREF", "IMPORT_NAME", "IMPORT_FROM", "STORE_GLOBAL"}


@pytest.mark.parametrize("source", ["X[0] = 1", "X.append(1)", "X.a = 1", "del X[0]"])
def test_module_level_code_is_analysed_like_functions(source):
    """Code that names globals with LOAD_NAME (module code, class bodies) is read the same way."""
    code = compile(source, "<test>", "exec")
    assert Place(("global", "X")) in {m.place for m in bytecode.facts(code).mutations}


def test_class_body_names_are_not_globals():
    def factory():
        class Local:
            items = []
            items.append(1)     # the class namespace's list, not a global `items`
            X.append(2)         # a global
        return Local

    assert mutated(factory) == {g("X")}
