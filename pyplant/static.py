"""What a reactor sends and receives, read from its source before it runs.

``pipe.send('x', ...)``, ``pipe.allocate('x', ...)`` and ``pipe.receive('x')`` with a string
literal name, or a module-level variable holding a string (``pipe.receive(NAME)``), are found in the reactor's source and in the source of every user function it
reaches (subreactors, helpers that take the pipe). The scheduler uses the result to fail before
any work when a received name has no producer (a typo: "did you mean 'data'?"), to refuse two
producers of one name, to start only reactors that can send a missing ingredient, and to find
the new producer of an ingredient whose recorded producer was renamed or split.

A name built at run time (``pipe.send(f'x{i}', ...)``), a ``send`` attribute used any other way
(``s = pipe.send``), or a function whose source cannot be read makes the reactor's sends
*dynamic*: it might send anything, so it is never ruled out. Results are cached per code object
and, keyed by the bytecode fingerprint, in the plant's code memo, so a warm process parses
nothing.
"""
from __future__ import annotations

import ast
import difflib
import functools
import json
import types
from typing import Any, Callable, Iterable, NamedTuple

from . import bytecode, hashing
from .caches import BoundedCache

_SENDS = ("send", "allocate")
_RECEIVES = ("receive",)


class StaticIO(NamedTuple):
    """Names found in source: ``sends`` and ``receives`` (literals), and whether some send's
    name is not a literal (``dynamic``). A named tuple: a warm run makes one per task."""
    sends: frozenset[str] = frozenset()
    receives: frozenset[str] = frozenset()
    dynamic: bool = False

    def __or__(self, other: "StaticIO") -> "StaticIO":
        return StaticIO(self.sends | other.sends, self.receives | other.receives,
                        self.dynamic or other.dynamic)

    def may_send(self, name: str) -> bool:
        return self.dynamic or name in self.sends


UNKNOWN = StaticIO(dynamic=True)


def function_ios(functions: Iterable[Callable], memo: Any = None) -> dict[int, StaticIO]:
    """{id(function): StaticIO} of each function's own source (not what it calls).

    ``memo`` (the plant's code memo, with ``get_many``/``put``) is read in one transaction for
    every function this process has not scanned, so a warm process parses nothing.
    """
    keys = {}
    for func in functions:
        code = getattr(func, "__code__", None)
        keys[id(func)] = (func, None if code is None else
                          hashing.digest(_FUNCTION_KEY, hashing.code_fingerprint(code)))
    missing = [key for _, key in keys.values() if key is not None and _cache.get(key) is None]
    stored = memo.get_many(missing) if memo is not None and missing else {}
    result = {}
    for ident, (func, key) in keys.items():
        if key is None:
            result[ident] = UNKNOWN
            continue
        io = _cache.get(key) or (_decode(stored[key]) if stored.get(key) else None)
        if io is None:
            io = _scan(func)
            if memo is not None:
                memo.put(key, encode(io))
        elif key in _unsaved and memo is not None:  # scanned from the code hash's parse
            memo.put(key, encode(io))
            _unsaved.discard(key)
        _cache.put(key, io)
        result[ident] = io
    return result


_FUNCTION_KEY = "static-io-2"  # a function's own names; version 2 keeps names held in globals
_GLOBAL = "\0"  # marks a name given by a global (`pipe.send(OUT, ...)`): no ingredient name has NUL
_cache: BoundedCache[StaticIO] = BoundedCache()  # {memo key: StaticIO}
_unsaved: set[str] = set()  # keys scanned from a code hash's parse, not yet in a plant's memo


def _from_code_hash(fingerprint: str, tree: ast.AST) -> None:
    """Scan the tree the code hash just parsed (a cold run parses each reactor once, not twice)."""
    key = hashing.digest(_FUNCTION_KEY, fingerprint)
    if _cache.get(key) is None:
        _cache.put(key, _scan_tree(tree))
        _unsaved.add(key)


hashing.parse_listeners.append(_from_code_hash)


def _scan(func: Callable) -> StaticIO:
    tree = hashing.source_tree(func)
    return UNKNOWN if tree is None else _scan_tree(tree)


def _scan_tree(tree: ast.AST) -> StaticIO:
    sends: set[str] = set()
    receives: set[str] = set()
    dynamic = False
    called, send_attributes = set(), set()
    watched = _SENDS + _RECEIVES
    for node in ast.walk(tree):  # one pass: a parse tree is walked node by node in Python
        kind = type(node)
        if kind is ast.Attribute:
            if node.attr in _SENDS:
                send_attributes.add(id(node))
        elif kind is ast.Call and type(node.func) is ast.Attribute and node.func.attr in watched:
            attr = node.func.attr
            called.add(id(node.func))
            name = _literal_name(node)
            if name is not None:
                (sends if attr in _SENDS else receives).add(name)
            elif attr in _SENDS:
                dynamic = True
    if send_attributes - called:  # `s = pipe.send`: a send we cannot follow
        dynamic = True
    return StaticIO(frozenset(sends), frozenset(receives), dynamic)


def _literal_name(call: ast.Call) -> str | None:
    """The name argument of a send or receive: a literal, or ``_GLOBAL`` + the name of the
    variable holding it (resolved against the function's globals, ``_resolved``)."""
    arg = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "name"), None)
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if isinstance(arg, ast.Name):
        return _GLOBAL + arg.id
    return None


def _resolved(io: StaticIO, func: Callable) -> StaticIO:
    """``io`` with the names held in module-level strings (``OUT = 'data'``) resolved in the
    function's globals; a send through a variable that is local, or not a str, is dynamic."""
    if not any(n.startswith(_GLOBAL) for n in io.sends) and not any(n.startswith(_GLOBAL) for n in io.receives):
        return io
    code = getattr(func, "__code__", None)
    local = _local_names(code) if code is not None else frozenset()
    namespace = getattr(func, "__globals__", {})
    dynamic = io.dynamic

    def resolve(names: frozenset[str], is_send: bool) -> frozenset[str]:
        nonlocal dynamic
        found = set()
        for name in names:
            if not name.startswith(_GLOBAL):
                found.add(name)
                continue
            value = namespace.get(name[1:]) if name[1:] not in local else None
            if isinstance(value, str):
                found.add(value)
            elif is_send:
                dynamic = True  # any name: never ruled out
        return frozenset(found)

    return StaticIO(resolve(io.sends, True), resolve(io.receives, False), dynamic)


def _local_names(code: types.CodeType) -> frozenset[str]:
    names: set[str] = set()
    pending = [code]
    while pending:
        c = pending.pop()
        names.update(c.co_varnames, c.co_cellvars, c.co_freevars)
        pending.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
    return frozenset(names)


def _table_key(code_digests: dict[str, str]) -> str:
    """One hash of every reactor's code-map digest: the sends and receives follow from them."""
    lines = sorted(f"{name}\x1f{digest}" for name, digest in code_digests.items())
    return hashing.digest("static-io-table-2", "\n".join(lines))


def _entry_key(code_digest: str) -> str:
    """The memo key of one reactor's sends and receives: its code map decides them."""
    return "static-io-task-2:" + code_digest


def load_table(memo: Any, code_digests: dict[str, str]) -> dict[str, StaticIO] | None:
    """{reactor: StaticIO} stored for exactly these reactors and code maps, else None.

    ``code_digests`` is {reactor: digest of its code map} of reactors whose code maps follow
    their source; any other reactor makes the table unusable (its source is read every time).
    """
    raw = memo.get(_table_key(code_digests)) if memo is not None else None
    if raw is None:
        return None
    try:
        table = {name: StaticIO(frozenset(sends), frozenset(receives), bool(dynamic))
                 for name, (sends, receives, dynamic) in json.loads(raw).items()}
    except (ValueError, TypeError):  # a damaged entry: read the sources again
        return None
    return table if table.keys() == code_digests.keys() else None


def load_entries(memo: Any, code_digests: dict[str, str]) -> dict[str, StaticIO]:
    """{reactor: StaticIO} of the reactors whose code map was seen before (in any table): after
    one edit, only the edited reactors' sources are read again. Damaged entries are left out."""
    if memo is None:
        return {}
    keys = {name: _entry_key(digest) for name, digest in code_digests.items()}
    found = decode_many(memo.get_many(list(set(keys.values()))))
    return {name: found[key] for name, key in keys.items() if key in found}


def store_table(memo: Any, code_digests: dict[str, str], table: dict[str, StaticIO],
                scanned: Iterable[str] = ()) -> None:
    """Remember ``table`` for these code maps (only when every reactor's source counts), and
    the entry of each reactor in ``scanned`` by its code map alone."""
    if memo is not None and table.keys() == code_digests.keys():
        memo.put(_table_key(code_digests), json.dumps(
            {name: [sorted(io.sends), sorted(io.receives), io.dynamic] for name, io in table.items()}))
        for name in scanned:
            memo.put(_entry_key(code_digests[name]), encode(table[name]))


_FIELD, _ITEM = "\x1e", "\x1f"


def encode(io: StaticIO) -> str:
    """A StaticIO as the text stored in the code memo (separators no name can hold)."""
    return _FIELD.join([_ITEM.join(sorted(io.sends)), _ITEM.join(sorted(io.receives)),
                        "1" if io.dynamic else "0"])


def decode_many(found: dict[str, str]) -> dict[str, StaticIO]:
    """{key: StaticIO} of memo entries; damaged entries are left out (scanned again)."""
    decoded = {key: _decode(raw) for key, raw in found.items()}
    return {key: io for key, io in decoded.items() if io is not None}


def _decode(raw: str) -> StaticIO | None:
    parts = raw.split(_FIELD)
    if len(parts) != 3 or parts[2] not in ("0", "1"):
        return None
    sends, receives = ((frozenset(p.split(_ITEM)) if p else frozenset()) for p in parts[:2])
    return StaticIO(sends, receives, parts[2] == "1")


def reactor_ios(reached: dict[str, list[Callable]], memo: Any = None) -> dict[str, StaticIO]:
    """{reactor: StaticIO}, the union over each reactor and the user functions it reaches
    (``reached``: {reactor: [functions]})."""
    ios = function_ios({id(f): f for fs in reached.values() for f in fs}.values(), memo)
    return {name: functools.reduce(lambda a, f: a | _resolved(ios[id(f)], f), fs, StaticIO())
            for name, fs in reached.items()}


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """' (did you mean 'data'?)' when a known name other than ``name`` itself is close to it,
    else ''."""
    close = difflib.get_close_matches(name, sorted(set(known) - {name}), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def reached_functions(func: Callable, is_user_module: Callable[[str | None], bool]) -> list[Callable]:
    """``func`` and the user functions it reaches through globals, closures and defaults
    (functions only: classes and constants cannot send), less other reactors."""
    seen: dict[int, Callable] = {}
    pending = [func]
    while pending:
        f = pending.pop()
        f = getattr(f, "__func__", f)
        if id(f) in seen:
            continue
        if f is not func and getattr(getattr(f, "pyplant", None), "isReactor", False):
            continue  # another reactor (run by a plant made in this one): its sends are its own
        seen[id(f)] = f
        wrapped = getattr(f, "__wrapped__", None)
        if wrapped is not None:
            pending.append(wrapped)
        if not isinstance(f, types.FunctionType):
            continue
        pending.extend(r for r in _function_references(f)
                       if isinstance(r, (types.FunctionType, types.MethodType)) or hasattr(r, "__wrapped__"))
    return [f for f in seen.values() if isinstance(f, types.FunctionType)
            and (f is func or _maybe_user(f, is_user_module))]


def _maybe_user(func: types.FunctionType, is_user_module: Callable[[str | None], bool]) -> bool:
    """User code, or code of a module that was never imported by name (loaded from a file
    path): scanning too much only costs time, missing a sender would break the checks."""
    import sys
    module = func.__globals__.get("__name__")
    return module not in sys.modules or is_user_module(module)


def _function_references(func: types.FunctionType) -> list[Any]:
    names, _ = bytecode.names(func.__code__)
    if any(n in func.__globals__ for n in names):  # globals only: np.linalg.solve is no global solve
        names = bytecode.facts(func.__code__).globals
    refs = [func.__globals__[n] for n in names if n in func.__globals__]
    refs += [c.cell_contents for c in func.__closure__ or () if _filled(c)]
    refs += list(func.__defaults__ or ())
    return refs


def _filled(cell: types.CellType) -> bool:
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True
