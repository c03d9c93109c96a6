"""Reading a code object's instructions, for the analysis in ``bytecode.py``.

``instructions(code)`` yields ``(offset, opname, arg, argval, jump target)``: on Python 3.11
the bytes are decoded here, on other versions ``dis.get_instructions`` does it (see its
docstring for why 3.11 keeps its own decoder). Around it: the opcode tables and stack effects
the analysis steps by (``PUSHES``, ``SIMPLE_JUMPS``, ``stack_effect``), the instructions of the
code being analysed decoded once (``decoded``), and the names a code object assigns
(``assignments``).
"""
from __future__ import annotations

import dis
import sys
import types
from typing import Any, Iterator

from .caches import IdentityCache

OP = dis.opmap
JUMPS = frozenset(dis.hasjrel) | frozenset(dis.hasjabs)
_BACKWARD = frozenset(OP[n] for n in OP if "BACKWARD" in n)
UNCONDITIONAL = frozenset(OP[n] for n in ("RETURN_VALUE", "RAISE_VARARGS", "RERAISE", "JUMP_FORWARD",
                                            "JUMP_BACKWARD", "JUMP_BACKWARD_NO_INTERRUPT",
                                            "RETURN_CONST", "JUMP", "JUMP_NO_INTERRUPT") if n in OP)
NAME_OPS = frozenset(OP[n] for n in ("LOAD_ATTR", "LOAD_METHOD", "STORE_ATTR", "DELETE_ATTR", "IMPORT_NAME",
                                       "IMPORT_FROM", "STORE_GLOBAL", "DELETE_GLOBAL", "LOAD_NAME",
                                       "STORE_NAME", "DELETE_NAME") if n in OP)
LOCAL_OPS = frozenset(OP[n] for n in ("LOAD_FAST", "STORE_FAST", "DELETE_FAST") if n in OP)
CELL_OPS = frozenset(OP[n] for n in ("LOAD_DEREF", "STORE_DEREF", "DELETE_DEREF", "LOAD_CLOSURE",
                                       "LOAD_CLASSDEREF", "MAKE_CELL") if n in OP)
FAST_DECODER = sys.version_info[:2] == (3, 11)


def instructions(code: types.CodeType) -> Iterator[tuple[int, str, int, Any, int | None]]:
    """``(offset, opname, arg, argval, jump target)`` of each instruction; the offset of an
    instruction with ``EXTENDED_ARG`` prefixes is that of its first prefix, where jumps land.

    On Python 3.11 the bytes are decoded directly; on other versions ``dis`` does it. Measured
    on 3.11 (1,900 code objects of pyplant and the standard library): ``dis`` takes 108 µs
    per code object against 15 µs here, the whole analysis 168 µs against 62 µs per function,
    and a cold run of the 3,000-reactor appending chain (benchmarks/shapes.py) 15 % more CPU
    time (1.63 s against 1.42 s; warm runs read the facts from the memo and do not differ).
    ``tests/test_bytecode.py`` checks that both read the same instructions.
    """
    if not FAST_DECODER:
        prefix = None
        for ins in dis.get_instructions(code):
            if ins.opname == "EXTENDED_ARG":
                prefix = ins.offset if prefix is None else prefix
                continue
            offset, prefix = (ins.offset if prefix is None else prefix), None
            target = ins.argval if ins.opcode in JUMPS else None
            yield offset, ins.opname, ins.arg or 0, ins.argval, target
        return
    raw = code.co_code
    cells = None
    ext = 0
    start = 0  # where the instruction begins, with its EXTENDED_ARG prefixes: jumps land there
    for offset in range(0, len(raw), 2):
        op, arg = raw[offset], raw[offset + 1] | ext
        if op == _EXTENDED_ARG:
            if not ext:
                start = offset
            ext = arg << 8
            continue
        if not ext:
            start = offset
        ext = 0
        if op == _CACHE:
            continue
        argval: Any = None
        target = None
        if op == LOAD_GLOBAL:
            argval = code.co_names[arg >> 1]
        elif op in NAME_OPS:
            argval = code.co_names[arg]
        elif op in LOCAL_OPS:
            argval = code.co_varnames[arg]
        elif op in CELL_OPS:
            if cells is None:
                cells = code.co_varnames + tuple(c for c in code.co_cellvars if c not in code.co_varnames) \
                    + code.co_freevars
            argval = cells[arg]
        elif op == LOAD_CONST:
            argval = code.co_consts[arg]
        elif op in JUMPS:
            target = offset + 2 + (-arg if op in _BACKWARD else arg) * 2
        yield start, dis.opname[op], arg, argval, target


_EXTENDED_ARG = OP["EXTENDED_ARG"]
IMPORT_NAME = OP["IMPORT_NAME"]
IMPORT_NAME_BYTE = bytes([IMPORT_NAME])
_CACHE = OP.get("CACHE", -1)
LOAD_GLOBAL = OP["LOAD_GLOBAL"]
LOAD_CONST = OP["LOAD_CONST"]

# Instructions that pop some values and push this many new (unknown) ones; how many they pop
# follows from dis.stack_effect. Every other instruction makes the whole stack unknown.
PUSHES = {name: 1 for name in (
    "UNARY_POSITIVE", "UNARY_NEGATIVE", "UNARY_NOT", "UNARY_INVERT", "COMPARE_OP", "IS_OP",
    "CONTAINS_OP", "BUILD_TUPLE", "BUILD_LIST", "BUILD_SET", "BUILD_MAP", "BUILD_CONST_KEY_MAP",
    "BUILD_STRING", "BUILD_SLICE", "LIST_TO_TUPLE", "FORMAT_VALUE", "CALL", "CALL_FUNCTION_EX",
    "MAKE_FUNCTION", "GET_ITER", "GET_LEN", "LOAD_BUILD_CLASS", "LOAD_ASSERTION_ERROR",
    "GET_YIELD_FROM_ITER", "YIELD_VALUE", "PUSH_NULL", "LOAD_CLOSURE", "BINARY_SLICE")}
PUSHES.update({name: 0 for name in (
    "NOP", "RESUME", "POP_TOP", "RETURN_VALUE", "LIST_APPEND", "SET_ADD", "MAP_ADD", "LIST_EXTEND",
    "SET_UPDATE", "DICT_UPDATE", "DICT_MERGE", "PRINT_EXPR", "RAISE_VARARGS", "POP_EXCEPT",
    "MAKE_CELL", "COPY_FREE_VARS", "KW_NAMES", "PRECALL", "DELETE_FAST", "DELETE_DEREF",
    "SETUP_ANNOTATIONS", "IMPORT_STAR", "RERAISE", "STORE_NAME", "DELETE_NAME", "RETURN_CONST")})
# Jumps whose only effect on the stack is to pop (or, for FOR_ITER, push) plain values.
SIMPLE_JUMPS = frozenset(n for n in dis.opmap if n.startswith(("POP_JUMP", "JUMP")) or n == "FOR_ITER")


UNCONDITIONAL_NAMES = frozenset(dis.opname[op] for op in UNCONDITIONAL)
_effects: dict[tuple[str, int, bool], int] = {}


def stack_effect(opname: str, arg: int, jump: bool) -> int:
    key = (opname, arg, jump)
    effect = _effects.get(key)
    if effect is None:
        op = dis.opmap[opname]
        try:
            effect = dis.stack_effect(op, arg if op >= dis.HAVE_ARGUMENT else None, jump=jump)
        except ValueError:
            effect = 0
        _effects[key] = effect
    return effect


_decoded_cache: dict[int, tuple[types.CodeType, list]] = {}


def decoded(code: types.CodeType) -> list:
    """The instructions of ``code``, decoded once for the passes of one analysis."""
    cached = _decoded_cache.get(id(code))
    if cached is not None and cached[0] is code:
        return cached[1]
    found = list(instructions(code))
    _decoded_cache.clear()  # only the code being analysed: no need to keep more
    _decoded_cache[id(code)] = (code, found)
    return found


def nb_symbol(arg: int) -> str:
    ops = getattr(dis, "_nb_ops", None)
    return ops[arg][1] if ops is not None and 0 <= arg < len(ops) else ""


_assigned_cache: IdentityCache[tuple[frozenset, frozenset]] = IdentityCache()


def assignments(code: types.CodeType) -> tuple[frozenset, frozenset]:
    """(names assigned or deleted anywhere in ``code``, names assigned exactly once)."""
    cached = _assigned_cache.get(code)
    if cached is not None:
        return cached
    counts: dict[str, int] = {}
    for _, opname, _, argval, _ in decoded(code):
        if opname in ("STORE_FAST", "STORE_DEREF"):
            counts[argval] = counts.get(argval, 0) + 1
        elif opname in ("DELETE_FAST", "DELETE_DEREF", "STORE_NAME", "DELETE_NAME"):
            counts[argval] = counts.get(argval, 0) + 2
    return _assigned_cache.put(code, (frozenset(counts), frozenset(n for n, c in counts.items() if c == 1)))


def assigned_names(code: types.CodeType) -> frozenset:
    return assignments(code)[0]


def single_stores(code: types.CodeType) -> frozenset:
    """Locals assigned exactly once: an alias (``d = X``) whose place is then known."""
    names, once = assignments(code)
    params = set(code.co_varnames[:code.co_argcount + code.co_kwonlyargcount
                                  + bool(code.co_flags & 0x04) + bool(code.co_flags & 0x08)])
    return frozenset(n for n in once if n not in params)
