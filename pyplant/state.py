"""State: the values that reachable code changes at run time, as opposed to constants.

A module-level list that reactors append to, a dict cache filled while running, a counter that a
helper assigns with ``global``: their current contents depend on what ran before, not on the
source, so they are left out of code maps (tracking them would re-run everything that reads
them on every run). What counts is what the code the walk reaches does (``bytecode.facts``):

* ``X.append(v)``, ``X[k] = v``, ``del X[k]``, ``X += [v]``: the object X is state;
  ``X[a][b] = v`` and ``X.attr.append(v)`` make only the inner object state;
* ``global n; n = ...``: the name ``module.n`` is state; ``nonlocal n`` makes the cell state;
* ``X.attr = v`` or ``setattr(X, 'attr', v)``: the attribute ``attr`` of X is state (a class
  attribute, a module global, an instance attribute);
* in a method (not ``__init__``, ``__post_init__``, ``__new__``, ``__setstate__``),
  ``self.attr = v`` makes ``attr`` state for every instance of the class; ``self.items.append``
  makes the object found at ``items`` state, on each instance and on the class;
* a method of a user class that mutates ``self`` is read like any code: calling
  ``SMOOTHER.update()`` is not by itself a mutation of SMOOTHER;
* what a method changes on ``self`` counts only once reached code can call it (``walk.py``):
  its name is used as an attribute by reached code, or it is a special method Python calls by
  itself. A method no reached code names ran, if at all, at import (``MODEL =
  Model().fit(data)``): what it set is an import-time value, tracked like any constant. What
  it changes elsewhere (a global counter a callback bumps) counts at once: a library may call
  it. ``__init_subclass__`` and ``__set_name__`` run as a class statement executes, so nothing
  they change counts until reached code names them.

Only mutable objects become state: ``n += 1`` on an int is a rebinding, caught by ``global``.
"""
from __future__ import annotations

import enum
import inspect
import types
from typing import Any, Callable

from .bytecode import ANY_KEY, Facts, Mutation
from .naming import module_label
from .tokens import StateView

INIT_METHODS = frozenset({"__init__", "__post_init__", "__new__", "__setstate__", "__init_subclass__",
                          "__set_name__"})
_IMMUTABLE = (int, float, complex, str, bytes, bool, type(None), tuple, frozenset, range, slice,
              enum.Enum, type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType,
              types.MethodType, types.CodeType)
_MISSING = object()
_DESCRIPTORS = (types.FunctionType, staticmethod, classmethod, property)


class State(StateView):
    """The state found so far in one walk; ``version`` grows with every addition.

    Parameters
    ----------
    is_user_class : callable
        ``f(cls) -> bool``: whether the methods of ``cls`` are user code the walk reads.
    """

    def __init__(self, is_user_class: Callable[[type], bool]):
        self.is_user_class = is_user_class
        self.version = 0
        self.labels: set[str] = set()                  # "module.name" of rebound globals
        self._objects: dict[int, Any] = {}             # id -> mutated object
        self._attrs: dict[int, tuple[Any, set[str]]] = {}   # id -> (object, attributes rebound)
        self._cells: dict[int, Any] = {}               # closure cells rebound (nonlocal)
        self._instance_attrs: dict[type, set[str]] = {}     # set on self outside __init__
        self._instance_places: dict[type, list[Mutation]] = {}
        self._whole_instances: set[type] = set()

    # --- queries (the tokenizer and the walk) ---

    def is_state(self, value: Any) -> bool:
        found = self._objects.get(id(value))
        if found is not None and found is value:
            return True
        return bool(self._whole_instances) and any(c in self._whole_instances for c in type(value).__mro__)

    def is_state_cell(self, cell: Any) -> bool:
        return self._cells.get(id(cell)) is cell

    def skipped_attributes(self, value: Any) -> set[str]:
        """Attributes of ``value`` that are state; resolves its class's places on it first."""
        kind = type(value)
        skipped: set[str] = set()
        for cls in kind.__mro__:
            skipped |= self._instance_attrs.get(cls, set())
            for mutation in self._instance_places.get(cls, ()):
                for target in self._follow([value], mutation.place.steps):
                    self._apply(mutation, target)
        entry = self._attrs.get(id(value))
        if entry is not None and entry[0] is value:
            skipped |= entry[1]
        return skipped

    def class_attributes(self, cls: type) -> set[str]:
        """Class attributes rebound by code (``cls.n += 1``, ``Config.x = ...``)."""
        entry = self._attrs.get(id(cls))
        return entry[1] if entry is not None and entry[0] is cls else set()

    # --- facts of the code the walk reached ---

    def add_function(self, func: types.FunctionType, facts: Facts, role: str | None = None,
                     owner: type | None = None, own: bool = True, others: bool = True) -> None:
        """Record what ``func`` changes. ``role`` is 'method' or 'classmethod' when ``func`` is
        found in the class ``owner`` (its first parameter is then an instance or the class).
        ``own``: what it changes through its first parameter (``self.w = ...``); ``others``:
        everything else (globals, cells, objects reached from them)."""
        namespace = func.__globals__
        prefix = module_label(namespace.get("__name__"), namespace)
        if others:
            for name in facts.rebound:
                self._add_label(f"{prefix}.{name}")
            for name, cell in zip(func.__code__.co_freevars, func.__closure__ or ()):
                if name in facts.rebound_free and id(cell) not in self._cells:
                    self._cells[id(cell)] = cell
                    self.version += 1
        for mutation in facts.mutations:
            root = mutation.place.root
            if root[0] == "arg0":
                if own:
                    self._add_self_mutation(mutation, func, role, owner)
                continue
            if not others:
                continue
            obj = _root_object(root, func)
            if obj is not _MISSING:
                for target in self._follow([obj], mutation.place.steps):
                    self._apply(mutation, target)

    def _add_self_mutation(self, mutation: Mutation, func: types.FunctionType, role: str | None,
                           owner: type | None) -> None:
        if owner is None or role is None:
            return
        if role == "classmethod":
            for target in self._follow([owner], mutation.place.steps):
                self._apply(mutation, target)
            return
        if func.__code__.co_name in INIT_METHODS:
            return  # building the instance: what it sets there is its value
        if not mutation.place.steps:
            if mutation.attr is not None:
                self._add_instance_attr(owner, mutation.attr)
            elif not self._implemented_in_python(owner, mutation.how):
                self._whole_instances.add(owner)  # a user subclass of list/dict filled in place
                self.version += 1
            return
        places = self._instance_places.setdefault(owner, [])
        if mutation not in places:
            places.append(mutation)
            self.version += 1
        for target in self._follow([owner], mutation.place.steps):  # a class attribute reached through self
            self._apply(mutation, target)

    # --- marking ---

    def _apply(self, mutation: Mutation, target: Any) -> None:
        if mutation.attr is not None:
            self._add_attr(target, mutation.attr)
        elif mutation.how == "__setattr__":
            return  # setattr with a name not known: nothing precise to mark
        else:
            self._add_object(target, mutation.how)

    def _add_object(self, obj: Any, how: str) -> None:
        if isinstance(obj, _IMMUTABLE) or id(obj) in self._objects:
            return
        if self.is_user_class(type(obj)) and self._implemented_in_python(type(obj), how):
            return  # the method's own code says what it changes
        self._objects[id(obj)] = obj
        self.version += 1

    def _add_attr(self, obj: Any, name: str) -> None:
        if isinstance(obj, types.ModuleType):
            self._add_label(f"{module_label(obj.__name__, vars(obj))}.{name}")
            return
        if isinstance(obj, (types.FunctionType, types.BuiltinFunctionType, types.MethodType)):
            return
        entry = self._attrs.get(id(obj))
        if entry is None or entry[0] is not obj:
            entry = self._attrs[id(obj)] = (obj, set())
        if name not in entry[1]:
            entry[1].add(name)
            self.version += 1

    def _add_label(self, label: str) -> None:
        if label not in self.labels:
            self.labels.add(label)
            self.version += 1

    def _add_instance_attr(self, owner: type, name: str) -> None:
        names = self._instance_attrs.setdefault(owner, set())
        if name not in names:
            names.add(name)
            self.version += 1

    def add_instance_attr(self, owner: type, name: str) -> None:
        """An attribute that instances fill in by themselves (``functools.cached_property``)."""
        self._add_instance_attr(owner, name)

    def _follow(self, objects: list, steps: tuple) -> list:
        """The objects found from ``objects`` along ``steps``, read without running user code."""
        for kind, key in steps:
            found: list = []
            for obj in objects:
                if kind == ".":
                    value = _static_attr(obj, key)
                    if value is not _MISSING:
                        found.append(value)
                else:
                    found.extend(self._items(obj, key))
            objects = found
        return objects

    def _items(self, obj: Any, key: Any) -> list:
        """What ``obj[key]`` may be. Builtin containers are read; an array or another library
        container (whose items are views) is itself what changes; a user object's
        ``__getitem__`` cannot be read without running it."""
        kind = type(obj)
        if isinstance(obj, dict) and kind.__getitem__ is dict.__getitem__:
            inserts = [obj] if hasattr(kind, "__missing__") else []  # defaultdict[k] inserts k
            if key is ANY_KEY:
                return list(obj.values()) + inserts
            try:
                return [obj[key]] if key in obj else inserts
            except TypeError:
                return inserts
        if isinstance(obj, (list, tuple)) and kind.__getitem__ in (list.__getitem__, tuple.__getitem__):
            if key is ANY_KEY:
                return list(obj)
            return [obj[key]] if isinstance(key, int) and -len(obj) <= key < len(obj) else []
        if isinstance(obj, _IMMUTABLE) or kind.__module__ == "builtins" or self.is_user_class(kind):
            return []
        return [obj]

    def _implemented_in_python(self, cls: type, how: str) -> bool:
        try:
            impl = inspect.getattr_static(cls, how)
        except AttributeError:
            return False
        impl = getattr(impl, "__func__", impl)
        return isinstance(impl, types.FunctionType) and self.is_user_class(cls)


def _root_object(root: tuple, func: types.FunctionType) -> Any:
    kind = root[0]
    if kind == "global":
        return func.__globals__.get(root[1], _MISSING)
    if kind == "free":
        for name, cell in zip(func.__code__.co_freevars, func.__closure__ or ()):
            if name == root[1]:
                try:
                    return cell.cell_contents
                except ValueError:
                    return _MISSING
        return _MISSING
    if kind == "import":
        import importlib.util
        import sys

        name, level = root[1], root[2]
        if level:
            try:
                name = importlib.util.resolve_name("." * level + name, func.__globals__.get("__package__"))
            except (ImportError, ValueError):
                return _MISSING
        return sys.modules.get(name, _MISSING)
    return _MISSING


def _static_attr(obj: Any, name: str) -> Any:
    if isinstance(obj, types.ModuleType):
        return vars(obj).get(name, _MISSING)
    if name == "__class__":
        return type(obj)
    if not isinstance(obj, type):
        try:
            own = object.__getattribute__(obj, "__dict__")
        except AttributeError:
            own = None
        if isinstance(own, dict) and name in own:
            return own[name]
    owner = obj if isinstance(obj, type) else type(obj)
    for cls in owner.__mro__:
        if name in vars(cls):
            value = vars(cls)[name]
            if isinstance(value, types.MemberDescriptorType) and not isinstance(obj, type):
                try:
                    return value.__get__(obj, owner)
                except AttributeError:
                    return _MISSING
            if isinstance(value, _DESCRIPTORS) or hasattr(type(value), "__get__"):
                return _MISSING  # computed on access: nothing to follow statically
            return value
    return _MISSING


