"""What a code object does with names and objects, read from its bytecode (no source needed).

``facts(code)`` answers, once per code object per process (nested code included):

``globals``     names used as globals (``LOAD_GLOBAL``, ``LOAD_NAME``, ``STORE_GLOBAL``, ...)
``attributes``  names used as attributes (``LOAD_ATTR``, ``LOAD_METHOD``, ``STORE_ATTR``,
                ``IMPORT_FROM``): ``np.linalg.solve`` names the global ``np`` and the
                attributes ``linalg`` and ``solve``, never a global ``solve``
``imports``     modules imported in the body: ``(name, level)``
``rebound``     globals the code assigns or deletes (``global n; n += 1``)
``rebound_free`` free variables it assigns (``nonlocal n; n += 1``)
``mutations``   the places whose object the code changes in place: ``X.append(v)``,
                ``X[a][b] = v``, ``self.cache[k] = v``, ``del X.attr``, ``x += [1]`` on a
                place, ``setattr(X, 'a', v)``

A place is a root (a global, a free variable of the function, its first argument, an imported
module) followed by attribute and item steps. Places are found by a small abstract
interpretation: each stack slot holds a place or "unknown"; instructions whose effect on the
stack is not known exactly make every slot unknown, so the analysis can miss a mutation (a
value that is state then counts as a constant: a wasted re-run) but never invents one (which
would drop a real dependency).
"""
from __future__ import annotations

import json
import types
from dataclasses import dataclass
from typing import Any, NamedTuple

from . import hashing
from . import instructions as ins
from .caches import IdentityCache

# Method names that change a builtin or library container in place.
MUTATING_METHODS = frozenset({
    "append", "extend", "insert", "update", "setdefault", "pop", "popitem", "clear", "add",
    "discard", "remove", "sort", "reverse", "appendleft", "extendleft", "popleft", "rotate",
    "move_to_end", "difference_update", "intersection_update", "symmetric_difference_update",
    "fill", "resize", "itemset", "put", "put_nowait", "__setitem__", "__delitem__",
})
ANY_KEY = "<any>"  # an item step whose key is not a constant


class Place(NamedTuple):
    """Where an object is found: ``root`` then ``steps``.

    ``root`` is ``("global", name)``, ``("free", name)`` (a closure cell of the function),
    ``("arg0",)`` (its first parameter: ``self`` or ``cls``) or ``("import", name, level)``.
    A step is ``(".", attribute)`` or ``("[]", key)`` with ``key`` a constant or ``ANY_KEY``.
    """
    root: tuple
    steps: tuple = ()

    def attr(self, name: str) -> "Place":
        return Place(self.root, self.steps + ((".", name),))

    def item(self, key: Any) -> "Place":
        return Place(self.root, self.steps + (("[]", key),))


class Mutation(NamedTuple):
    """The object at ``place`` is changed through ``how`` (a method or dunder name); ``attr``
    is the attribute assigned or deleted on it, if that is how."""
    place: Place
    how: str
    attr: str | None = None


@dataclass(frozen=True)
class Facts:
    globals: frozenset
    attributes: frozenset
    imports: tuple
    rebound: frozenset
    rebound_free: frozenset
    mutations: tuple


@dataclass(frozen=True)
class _Const:
    value: Any


_UNKNOWN = None
_cache: IdentityCache[Facts] = IdentityCache()
_INPLACE = {"+=": "__iadd__", "-=": "__isub__", "*=": "__imul__", "/=": "__itruediv__",
            "//=": "__ifloordiv__", "%=": "__imod__", "**=": "__ipow__", "<<=": "__ilshift__",
            ">>=": "__irshift__", "&=": "__iand__", "|=": "__ior__", "^=": "__ixor__",
            "@=": "__imatmul__"}


def facts(code: types.CodeType, memo: Any = None) -> Facts:
    """Facts of ``code`` and the code nested in it, cached per code object.

    ``memo`` (a ``hashing.CodeMemo``: the plant's LMDB table) keeps them by bytecode
    fingerprint across processes, so a warm process analyses no code it has seen.
    """
    cached = _cache.get(code)
    if cached is not None:
        return cached
    key = None
    result = None
    if memo is not None:
        key = hashing.digest("code-facts", hashing.code_fingerprint(code))
        stored = memo.get(key)
        result = _loads(stored) if stored is not None else None
    if result is None:
        result = _Analysis(code, None).run()
        if key is not None:
            memo.put(key, _dumps(result))
    return _cache.put(code, result)


def _dumps(found: Facts) -> str:
    mutations = [[list(m.place.root), [[kind, _key_out(key)] for kind, key in m.place.steps], m.how, m.attr]
                 for m in found.mutations]
    return json.dumps([sorted(found.globals), sorted(found.attributes), [list(i) for i in found.imports],
                       sorted(found.rebound), sorted(found.rebound_free), mutations])


def _loads(text: str) -> Facts | None:
    try:
        names, attributes, imports, rebound, rebound_free, mutations = json.loads(text)
        return Facts(frozenset(names), frozenset(attributes), tuple((n, level) for n, level in imports),
                     frozenset(rebound), frozenset(rebound_free),
                     tuple(Mutation(Place(tuple(root), tuple((kind, _key_in(key)) for kind, key in steps)), how, attr)
                           for root, steps, how, attr in mutations))
    except (ValueError, TypeError):  # written by another version: analyse again
        return None


def _key_out(key: Any) -> list:
    if key is ANY_KEY:
        return ["any"]
    return ["tuple", list(key)] if isinstance(key, tuple) else ["const", key]


def _key_in(raw: list) -> Any:
    kind = raw[0]
    return ANY_KEY if kind == "any" else tuple(raw[1]) if kind == "tuple" else raw[1]


def names(code: types.CodeType) -> tuple[frozenset, bool]:
    """A first look, without decoding: every name of ``code`` and its nested code
    (``co_names``: globals and attributes together) and whether it imports anything. Not
    cached: it costs less than a cache entry (a warm process looks once per function)."""
    found = set(code.co_names)
    imports = ins.IMPORT_NAME_BYTE in code.co_code[::2]
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            nested, nested_imports = names(const)
            found |= nested
            imports = imports or nested_imports
    return frozenset(found), imports


# --- the abstract interpretation --------------------------------------------------------------

class _Analysis:
    """One pass over one code object; ``env`` gives the places of its free variables when it
    is nested in code being analysed (a comprehension, a lambda, an inner function), and is
    None for the code of the function being asked about."""

    def __init__(self, code: types.CodeType, env: dict[str, Any] | None):
        self.code = code
        self.env = env
        self.globals: set[str] = set()
        self.attributes: set[str] = set()
        self.imports: set[tuple[str, int]] = set()
        self.rebound: set[str] = set()
        self.rebound_free: set[str] = set()
        self.mutations: set[Mutation] = set()
        self.fixed = self._fixed_locals()  # locals bound once: their place is known
        self.stack: list[Any] = []

    def run(self) -> Facts:
        self._interpret()
        for const in self.code.co_consts:
            if isinstance(const, types.CodeType):
                self._merge(_Analysis(const, self._env_for(const)).run())
        return Facts(frozenset(self.globals), frozenset(self.attributes), tuple(sorted(self.imports)),
                     frozenset(self.rebound), frozenset(self.rebound_free), tuple(self.mutations))

    def _merge(self, nested: Facts) -> None:
        self.globals |= nested.globals
        self.attributes |= nested.attributes
        self.imports.update(nested.imports)
        self.rebound |= nested.rebound
        self.rebound_free |= nested.rebound_free & set(self.code.co_freevars)
        self.mutations.update(nested.mutations)

    def _env_for(self, nested: types.CodeType) -> dict[str, Any]:
        """The place each free variable of ``nested`` has here (None when only known at run time)."""
        env = {}
        for name in nested.co_freevars:
            if name in self.code.co_freevars:
                env[name] = Place(("free", name)) if self.env is None else self.env.get(name)
            else:
                env[name] = self.fixed.get(name)
        return env

    def _fixed_locals(self) -> dict[str, Any]:
        """Parameter 0 when it is never re-assigned: ``self`` (or ``cls``) everywhere. Only for
        the function asked about: the first parameter of nested code is its own."""
        code = self.code
        fixed: dict[str, Any] = {}
        if code.co_argcount and self.env is None:
            name = code.co_varnames[0]
            if name not in ins.assigned_names(code):
                fixed[name] = Place(("arg0",))
        return fixed

    # stack helpers
    def _push(self, value: Any) -> None:
        self.stack.append(value)

    def _pop(self) -> Any:
        return self.stack.pop() if self.stack else _UNKNOWN

    def _peek(self, n: int) -> Any:
        return self.stack[-n] if len(self.stack) >= n else _UNKNOWN

    def _effect(self, opname: str, arg: int, jump: bool) -> int:
        return ins.stack_effect(opname, arg, jump)

    def _wipe(self, effect: int) -> None:
        self.stack = [_UNKNOWN] * max(0, len(self.stack) + effect)

    def _interpret(self) -> None:
        pending: dict[int, list] = {}   # forward jump target -> stack arriving there
        reachable = True
        for offset, opname, arg, argval, target in ins.decoded(self.code):
            if offset in pending:
                incoming = pending.pop(offset)
                self.stack = _merge_stacks(self.stack, incoming) if reachable else incoming
                reachable = True
            elif not reachable:  # an exception handler: nothing known about its stack
                self.stack = []
                reachable = True
            if target is not None:
                jumped = self._jump(opname, arg, target)
                if jumped is not None and target > offset:
                    pending[target] = _merge_stacks(pending[target], jumped) if target in pending else jumped
            else:
                self._step(opname, arg, argval)
            if opname in ins.UNCONDITIONAL_NAMES:
                reachable = False

    def _jump(self, opname: str, arg: int, target: int) -> list | None:
        """Apply a jump instruction's fall-through effect; return the stack at its target."""
        if opname not in ins.SIMPLE_JUMPS:
            self._wipe(self._effect(opname, arg, jump=False))
            return [_UNKNOWN] * max(0, len(self.stack))
        jumped = _apply(self.stack, self._effect(opname, arg, jump=True))
        self.stack = _apply(self.stack, self._effect(opname, arg, jump=False))
        return jumped

    def _step(self, opname: str, arg: int, argval: Any) -> None:  # noqa: C901 (a dispatch table)
        handler = _HANDLERS.get(opname)
        if handler is not None:
            handler(self, arg, argval)
            return
        pushes = ins.PUSHES.get(opname)
        effect = self._effect(opname, arg, jump=False)
        if pushes is None:
            self._wipe(effect)
            return
        for _ in range(pushes - effect):
            self._pop()
        for _ in range(pushes):
            self._push(_UNKNOWN)

    # handlers of the instructions that matter
    def _load_global(self, arg: int, name: str) -> None:
        self.globals.add(name)
        if self._effect("LOAD_GLOBAL", arg, False) == 2:
            self._push(_UNKNOWN)  # the NULL pushed before a called global
        self._push(Place(("global", name)))

    def _load_fast(self, arg: int, name: str) -> None:
        self._push(self.fixed.get(name))

    def _load_deref(self, arg: int, name: str) -> None:
        if name in self.code.co_freevars:
            self._push(Place(("free", name)) if self.env is None else self.env.get(name))
        else:
            self._push(self.fixed.get(name))

    def _load_const(self, arg: int, value: Any) -> None:
        self._push(_Const(value) if isinstance(value, (int, str, type(None))) or _is_str_tuple(value) else _UNKNOWN)

    def _load_attr(self, arg: int, name: str) -> None:
        self.attributes.add(name)
        obj = self._pop()
        if name in MUTATING_METHODS and isinstance(obj, Place):
            self.mutations.add(Mutation(obj, name))
        if self._effect("LOAD_ATTR", arg, False) == 1:  # 3.12: a method load pushes two
            self._push(_UNKNOWN)
            self._push(_UNKNOWN)
        else:
            self._push(obj.attr(name) if isinstance(obj, Place) else _UNKNOWN)

    def _load_method(self, arg: int, name: str) -> None:
        self.attributes.add(name)
        obj = self._pop()
        if name in MUTATING_METHODS and isinstance(obj, Place):
            self.mutations.add(Mutation(obj, name))
        self._push(_UNKNOWN)
        self._push(_UNKNOWN)

    def _store_attr(self, arg: int, name: str) -> None:
        self.attributes.add(name)
        obj = self._pop()
        self._pop()
        if isinstance(obj, Place):
            self.mutations.add(Mutation(obj, "__setattr__", name))

    def _delete_attr(self, arg: int, name: str) -> None:
        self.attributes.add(name)
        obj = self._pop()
        if isinstance(obj, Place):
            self.mutations.add(Mutation(obj, "__delattr__", name))

    def _store_subscr(self, arg: int, argval: Any) -> None:
        self._pop()
        container = self._pop()
        self._pop()
        if isinstance(container, Place):
            self.mutations.add(Mutation(container, "__setitem__"))

    def _delete_subscr(self, arg: int, argval: Any) -> None:
        self._pop()
        container = self._pop()
        if isinstance(container, Place):
            self.mutations.add(Mutation(container, "__delitem__"))

    def _binary_subscr(self, arg: int, argval: Any) -> None:
        key = self._pop()
        container = self._pop()
        if isinstance(container, Place):
            self._push(container.item(key.value if isinstance(key, _Const) else ANY_KEY))
        else:
            self._push(_UNKNOWN)

    def _binary_op(self, arg: int, argval: Any) -> None:
        self._pop()
        target = self._pop()
        symbol = ins.nb_symbol(arg)
        if symbol in _INPLACE and isinstance(target, Place):
            self.mutations.add(Mutation(target, _INPLACE[symbol]))
        self._push(_UNKNOWN)

    def _store_global(self, arg: int, name: str) -> None:
        self.globals.add(name)
        self.rebound.add(name)
        self._pop()

    def _delete_global(self, arg: int, name: str) -> None:
        self.globals.add(name)
        self.rebound.add(name)

    def _load_name(self, arg: int, name: str) -> None:
        """A class body's own names (``items = []; items.append(1)``) are not globals."""
        self.globals.add(name)
        self._push(_UNKNOWN if name in ins.assigned_names(self.code) else Place(("global", name)))

    def _store_fast(self, arg: int, name: str) -> None:
        value = self._pop()
        if name in self.code.co_freevars:  # `nonlocal x; x = ...`: the cell is state
            self.rebound_free.add(name)
            return
        if name in self.single_stores and isinstance(value, Place):
            self.fixed[name] = value

    def _import_name(self, arg: int, name: str) -> None:
        fromlist = self._pop()
        level = self._pop()
        level = level.value if isinstance(level, _Const) and isinstance(level.value, int) else 0
        self.imports.add((name, level))
        has_fromlist = isinstance(fromlist, _Const) and fromlist.value is not None
        self._push(Place(("import", name if has_fromlist else name.split(".")[0], level)))

    def _import_from(self, arg: int, name: str) -> None:
        self.attributes.add(name)
        module = self._peek(1)
        self._push(module.attr(name) if isinstance(module, Place) else _UNKNOWN)

    def _copy(self, arg: int, argval: Any) -> None:
        self._push(self._peek(arg))

    def _swap(self, arg: int, argval: Any) -> None:
        if len(self.stack) >= arg:
            self.stack[-1], self.stack[-arg] = self.stack[-arg], self.stack[-1]
        elif self.stack:  # the slot swapped in lies below what is known
            self.stack[-1] = _UNKNOWN

    def _precall(self, arg: int, argval: Any) -> None:
        """``setattr(X, 'a', v)`` and ``delattr(X, 'a')`` change X."""
        func = self._peek(arg + 1)
        if isinstance(func, Place) and func.root in (("global", "setattr"), ("global", "delattr")) \
                and not func.steps and arg >= 2:
            obj, name = self._peek(arg), self._peek(arg - 1)
            if isinstance(obj, Place):
                attr = name.value if isinstance(name, _Const) and isinstance(name.value, str) else None
                self.mutations.add(Mutation(obj, "__setattr__", attr))
        for _ in range(-self._effect("PRECALL", arg, False)):  # dis counts the arguments here
            self._pop()

    @property
    def single_stores(self) -> frozenset:
        return ins.single_stores(self.code)


def _apply(stack: list, effect: int) -> list:
    if effect <= 0:
        return stack[:max(0, len(stack) + effect)]
    return stack + [_UNKNOWN] * effect


def _merge_stacks(a: list, b: list) -> list:
    """Where two paths join: slots equal on both stay known (aligned from the top)."""
    n = min(len(a), len(b))
    if n == 0:
        return []
    return [x if x == y else _UNKNOWN for x, y in zip(a[-n:], b[-n:])]


def _is_str_tuple(value: Any) -> bool:
    return isinstance(value, tuple) and all(isinstance(v, str) for v in value)


_HANDLERS = {
    "LOAD_GLOBAL": _Analysis._load_global,
    "LOAD_NAME": _Analysis._load_name,
    "LOAD_FAST": _Analysis._load_fast,
    "LOAD_DEREF": _Analysis._load_deref,
    "LOAD_CLASSDEREF": _Analysis._load_deref,
    "LOAD_CONST": _Analysis._load_const,
    "LOAD_ATTR": _Analysis._load_attr,
    "LOAD_METHOD": _Analysis._load_method,
    "STORE_ATTR": _Analysis._store_attr,
    "DELETE_ATTR": _Analysis._delete_attr,
    "STORE_SUBSCR": _Analysis._store_subscr,
    "DELETE_SUBSCR": _Analysis._delete_subscr,
    "BINARY_SUBSCR": _Analysis._binary_subscr,
    "BINARY_OP": _Analysis._binary_op,
    "STORE_GLOBAL": _Analysis._store_global,
    "DELETE_GLOBAL": _Analysis._delete_global,
    "STORE_FAST": _Analysis._store_fast,
    "STORE_DEREF": _Analysis._store_fast,
    "IMPORT_NAME": _Analysis._import_name,
    "IMPORT_FROM": _Analysis._import_from,
    "COPY": _Analysis._copy,
    "SWAP": _Analysis._swap,
    "PRECALL": _Analysis._precall,
}
