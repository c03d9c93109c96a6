"""The walk behind code maps: every object a task's code reaches, classified and valued.

One ``_Walk`` serves the reactors of a session (``dependencies.CodeMapper.code_maps``): it
classifies each object it reaches (``_Node.kind``: user code, a pinned function, a library, a
user module, pyplant's own code, data), expands code into the names its bytecode uses
(``bytecode.py``), values every node (code hashes, stable tokens) once the state that reachable
code mutates is known (``state.py``), and assembles the map of each reactor. See
``dependencies.py`` for what a code map holds.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import logging
import sys
import types
from typing import Any, Callable, Mapping

from . import bytecode, hashing
from .naming import class_label, function_label, module_label, object_label
from .scope import _SELF, CodeScope, library_version
from .state import State
from .tokens import Tokenizer

logger = logging.getLogger(__name__)

_SKIPPED_CLASS_ATTRIBUTES = frozenset({"_abc_impl"})
_SLOTS = (types.MemberDescriptorType, types.GetSetDescriptorType)  # __slots__: no value in the class
_LIBRARY_CODE = (types.BuiltinFunctionType, types.WrapperDescriptorType, types.MethodDescriptorType,
                 types.ClassMethodDescriptorType, types.GetSetDescriptorType, types.MemberDescriptorType)


class _Node:
    """Something the walk reached. ``kind``:

    fn, cls     user code: ``label`` and ``value`` (its hash) go into the map
    pinned      a function with ``version=``: a leaf
    lib         a library package: ``lib:top`` -> version
    module      a user module: its attributes are selected by the code that names them
    pyfn        a pyplant function (the subreactor wrapper): followed into what it holds
    data        a value: no label of its own (the bindings that reach it have one)
    ignore      pyplant's own classes
    untracked   a value with no stable token (warned about)
    """
    __slots__ = ("obj", "kind", "label", "edges", "values", "found", "value", "valued", "expanded")

    def __init__(self, obj: Any, kind: str, label: str | None):
        self.obj = obj
        self.kind = kind
        self.label = label
        self.edges: list[tuple[str | None, "_Node", Any]] = []  # (binding label, target, object)
        self.values: list[str | None] = _NONE                     # token of each binding
        self.found: list["_Node"] = _NONE                         # code met while tokenizing
        self.value: str | None = None
        self.valued = False
        self.expanded = False


_NONE: list = []  # shared and never appended to: most nodes find nothing


class _Walk:
    """One walk over the reactors of a session; see the module docstring."""

    def __init__(self, own_hash: Callable[[Callable], str], scope: CodeScope, memo: Any = None):
        self.own_hash = own_hash
        self.scope = scope
        self.memo = memo
        self.nodes: dict[int, tuple[Any, _Node]] = {}
        self.libs: dict[str, _Node] = {}
        self.order: list[_Node] = []
        self.pending: list[_Node] = []
        self.state = State(self._is_user_class)
        # What a method changes on `self` is state only once reached code can call it: a method
        # whose name no reached code uses as an attribute ran, if at all, at import (a model
        # fitted at module level), so what it set is import-time value, tracked like a constant.
        self.called: set[str] = set()                  # attribute names used by callable code
        self.uncalled: dict[str, list[tuple]] = {}     # method name -> mutations not yet callable
        self.tokenizer = Tokenizer(self._code_text, self._untracked, self.state)

    def maps(self, funcs: Mapping[str, Callable]) -> dict[str, dict[str, str]]:
        roots = {name: self._root(func) for name, func in funcs.items()}
        self._settle()
        maps = {name: self._assemble(name, *root) for name, root in roots.items()}
        # The walk and its tokenizer refer to each other: free the nodes now, not at the
        # cyclic collector's next full pass.
        self.nodes.clear()
        self.order.clear()
        self.tokenizer.reset()
        return maps

    # --- nodes ---

    def _root(self, func: Any) -> tuple[_Node, list[_Node]]:
        """The reactor's own node and the wrappers around it (a decorator with ``wraps``)."""
        inner = inspect.unwrap(func, stop=_pinned) if hasattr(func, "__wrapped__") else func
        node = self._node(inner, root=True)
        extras = [self._node(func)] if inner is not func else []
        return node, [n for n in extras if n is not None]

    def _node(self, obj: Any, root: bool = False) -> _Node | None:
        entry = self.nodes.get(id(obj))
        if entry is not None and entry[0] is obj:
            return entry[1]
        if root and type(obj) is types.FunctionType and not _pinned(obj):
            kind, label = "fn", f"fn:{function_label(obj)}"  # a reactor is user code by definition
        else:
            kind, label = self._classify(obj)
        if kind == "lib":
            node = self._lib(label)
        else:
            node = _Node(obj, kind, label)
            self.order.append(node)
            if kind in ("fn", "cls"):
                self.pending.append(node)
        self.nodes[id(obj)] = (obj, node)
        return node

    def _lib(self, module: str) -> _Node:
        top = module.split(".")[0]
        if top in sys.stdlib_module_names or top == "builtins":
            top = "python"  # one interpreter version, whatever the module
        node = self.libs.get(top)
        if node is None:
            kind = "ignore" if top == _SELF else "lib"
            node = self.libs[top] = _Node(top, kind, f"lib:{top}" if kind == "lib" else None)
            self.order.append(node)
        return node

    def _classify(self, obj: Any) -> tuple[str, str | None]:
        if isinstance(obj, types.ModuleType):
            return ("module", None) if self.scope.is_user_module(obj.__name__) else ("lib", obj.__name__)
        if _pinned(obj):
            inner = inspect.unwrap(obj) if hasattr(obj, "__wrapped__") else obj
            return "pinned", f"fn:{object_label(inner)}"
        if isinstance(obj, types.FunctionType):
            if self.scope.is_user_function(obj):
                return "fn", f"fn:{function_label(obj)}"
            module = obj.__globals__.get("__name__") or obj.__module__ or ""
            return ("pyfn", None) if module.split(".")[0] == _SELF else ("lib", module)
        if isinstance(obj, type):
            if (obj.__module__ or "").split(".")[0] == _SELF:
                return "ignore", None
            if self._is_user_class(obj):
                return "cls", f"cls:{class_label(obj)}"
            return "lib", obj.__module__ or "builtins"
        if isinstance(obj, _LIBRARY_CODE):
            owner = getattr(obj, "__objclass__", None)
            module = getattr(obj, "__module__", None) or getattr(owner, "__module__", None) or "builtins"
            return "lib", module
        return "data", None

    def _is_user_class(self, cls: type) -> bool:
        return self.scope.is_user_module(getattr(cls, "__module__", None))

    # --- expanding code: the names it uses ---

    def _settle(self) -> None:
        """Expand all code, then value every node; when valuing finds more state (an instance
        whose class mutates it), value everything again: rare, and it keeps tokens exact."""
        version = None
        while True:
            self._drain()
            if version is not None and self.state.version != version:
                for node in self.order:
                    node.valued = False
                self.tokenizer.reset()
            version = self.state.version
            todo = [n for n in self.order if not n.valued]
            if not todo:
                if self.pending:
                    continue
                break
            for node in todo:
                self._value(node)

    def _drain(self) -> None:
        while self.pending:
            node = self.pending.pop()
            if not node.expanded:
                node.expanded = True
                if node.kind == "fn":
                    self._expand_function(node, node.obj, None, None)
                else:
                    self._expand_class(node)

    def _expand_function(self, node: _Node, func: types.FunctionType, role: str | None,
                         owner: type | None, attr: str | None = None) -> None:
        """Edges of ``node`` to what ``func`` names: globals, imports, attributes of user
        modules. Its defaults and cells are tokenized with its value (``_bound``)."""
        code = func.__code__
        namespace = func.__globals__
        names, imports = bytecode.names(code)
        if not (func.__closure__ or func.__defaults__ or func.__kwdefaults__ or imports or role
                or any(n in namespace for n in names) or _NAME_LOOKUPS.intersection(names)):
            return  # references nothing: the common reactor of a long chain
        modules: list[types.ModuleType] = [v for v in _bound_objects(func) if isinstance(v, types.ModuleType)]
        facts = bytecode.facts(code, self.memo)
        prefix = module_label(namespace.get("__name__"), namespace)
        for name in sorted(facts.globals):
            if name in namespace:
                value = namespace[name]
                self._edge(node, value, f"{prefix}.{name}")
                if isinstance(value, types.ModuleType):
                    modules.append(value)
        for name, level in facts.imports:
            module = self._import(name, level, namespace)
            if isinstance(module, types.ModuleType):
                self._edge(node, module, None)
                modules.append(module)  # `from .sub import f`, `from pkg import f`
                modules.extend(_imported_modules(name, level, namespace))
            elif module is not None:  # a library not imported yet: by its name
                node.edges.append((None, self._lib(module), None))
        self._module_attributes(node, modules, facts.attributes)
        dynamic = _NAME_LOOKUPS.intersection(names)
        if dynamic:  # names looked up at run time: every attribute of the modules it reaches
            if dynamic & _NAMESPACE_LOOKUPS:
                own = sys.modules.get(namespace.get("__name__"))
                if isinstance(own, types.ModuleType) and vars(own) is namespace:
                    modules.append(own)
            self._module_attributes(node, modules, None)
        if attr is None or _implicitly_called(attr) or attr in self.called:
            self._callable(func, facts, role, owner)
            return
        # Not callable yet: what it changes on `self` waits until reached code names it; what
        # it changes elsewhere counts now (a library may call it back), but for the methods
        # run as a class is created.
        if attr not in _CLASS_CREATION:
            self.state.add_function(func, facts, role, owner, own=False)
        self.uncalled.setdefault(attr, []).append((func, facts, role, owner, attr not in _CLASS_CREATION))

    def _callable(self, func: types.FunctionType, facts: Any, role: str | None, owner: type | None,
                  counted: bool = False) -> None:
        """Record what ``func`` mutates (``counted``: all but its own changes were recorded
        already), and make the methods it names callable in turn."""
        work = [(func, facts, role, owner, counted)]
        while work:
            func, facts, role, owner, counted = work.pop()
            self.state.add_function(func, facts, role, owner, others=not counted)
            for name in facts.attributes - self.called:
                self.called.add(name)
                work.extend(self.uncalled.pop(name, ()))

    def _edge(self, node: _Node, value: Any, binding: str | None) -> None:
        target = self._node(value)
        if target is None or target.kind == "ignore":
            return
        label = None
        if binding is not None and target.kind not in ("module",) and not isinstance(value, types.ModuleType):
            if target.kind in ("fn", "cls", "pinned") and target.label.partition(":")[2] == binding:
                label = None  # the function or class of that very name
            elif target.kind == "data":
                kind = "obj" if self._is_user_class(type(value)) else "name" if callable(value) else "const"
                label = f"{kind}:{binding}"
            else:
                label = f"name:{binding}"
        node.edges.append((label, target, value))

    def _import(self, name: str, level: int, namespace: dict) -> types.ModuleType | str | None:
        """A module imported in a body. Library modules are not imported (their version is read
        from the installed metadata: their top-level name is returned); user modules are, as
        the body would."""
        if level:
            try:
                name = importlib.util.resolve_name("." * level + name, namespace.get("__package__"))
            except (ImportError, ValueError):
                return None
        if name in sys.modules:
            return sys.modules[name]
        top = name.split(".")[0]
        if top in self.scope.library or not self.scope.is_user_module_spec(top):
            return top
        try:
            return importlib.import_module(name)
        except Exception:
            logger.warning("changes to module %s are not tracked: it cannot be imported", name)
            return None

    def _module_attributes(self, node: _Node, modules: list, attributes: frozenset | None) -> None:
        """``helpers.f(x)`` names the global ``helpers`` and the attribute ``f``: take the
        attributes of referenced user modules that the code names (``pkg.sub.f`` too); with
        ``attributes`` None, all of them (the code looks names up at run time)."""
        modules = list(modules)
        seen = set()
        while modules:
            module = modules.pop()
            if id(module) in seen or not isinstance(module, types.ModuleType) \
                    or not self.scope.is_user_module(module.__name__):
                continue
            seen.add(id(module))
            namespace = vars(module)
            prefix = module_label(module.__name__, namespace)
            found = attributes & namespace.keys() if attributes is not None else \
                (k for k in namespace if not (k.startswith("__") and k.endswith("__")))
            for name in sorted(found):
                value = namespace[name]
                self._edge(node, value, f"{prefix}.{name}")
                if isinstance(value, types.ModuleType):
                    modules.append(value)

    def _expand_class(self, node: _Node) -> None:
        cls = node.obj
        for base in cls.__bases__:
            if base is not object:
                self._edge(node, base, None)
        if type(cls) is not type:
            self._edge(node, type(cls), None)
        for name, value in vars(cls).items():
            if isinstance(value, functools.cached_property):
                self.state.add_instance_attr(cls, name)  # filled in on first access: state
            for func, role in _methods(name, value):
                if self.scope.is_user_function(func):
                    self._expand_function(node, func, role, cls, attr=name)
                else:
                    self._edge(node, func, None)

    # --- valuing: hashes and tokens ---

    def _value(self, node: _Node) -> None:
        tokenizer = self.tokenizer
        start = len(tokenizer.found)
        kind, obj = node.kind, node.obj
        node.found = _NONE
        if kind == "fn":
            node.value = self._function_value(obj)
        elif kind == "pinned":
            node.value = self.own_hash(_pinned_function(obj))
        elif kind == "cls":
            node.value = self._class_value(obj)
        elif kind == "lib":
            node.value = library_version(obj)
        elif kind == "pyfn":
            node.value = tokenizer.token(self._bound(obj))
        elif kind == "data":
            node.value = tokenizer.token(obj)
        if len(tokenizer.found) > start:
            node.found = tokenizer.found[start:]
            del tokenizer.found[start:]
        if node.edges:  # the code met in a binding's value is found when its own node is valued
            node.values = [tokenizer.token(value) if label is not None else None
                           for label, _, value in node.edges]
            del tokenizer.found[start:]
        node.valued = True

    def _function_value(self, func: types.FunctionType) -> str:
        """Its own code hash, combined with the values bound to it when there are any."""
        own = self.own_hash(func)
        if func.__defaults__ is None and func.__kwdefaults__ is None and func.__closure__ is None:
            return own
        return hashing.digest("fn", own, self.tokenizer.encode(self._bound(func)))

    def _bound(self, func: types.FunctionType) -> tuple:
        """The values bound to a function: defaults, keyword defaults, closure cells (by name),
        less the cells that code rebinds (``nonlocal``)."""
        cells = {}
        for name, cell in zip(func.__code__.co_freevars, func.__closure__ or ()):
            if self.state.is_state_cell(cell):
                continue
            try:
                cells[name] = cell.cell_contents
            except ValueError:  # an empty cell
                continue
        return func.__defaults__, func.__kwdefaults__, cells

    def _class_value(self, cls: type) -> str:
        encode = self.tokenizer.encode
        parts = [class_label(cls)] + [encode(b) for b in cls.__bases__]
        rebound = self.state.class_attributes(cls)
        for name, value in sorted(vars(cls).items()):
            if name in rebound or name in _SKIPPED_CLASS_ATTRIBUTES or isinstance(value, _SLOTS):
                continue
            methods = _methods(name, value)
            if methods:
                parts.append(f"{name}=" + ",".join(self._function_value(f) if self.scope.is_user_function(f)
                                                   else encode(f) for f, _ in methods))
            elif not (name.startswith("__") and name.endswith("__")):
                parts.append(f"{name}={encode(value)}")
        return hashing.digest("class", *parts)

    def _code_text(self, obj: Any) -> str:
        """How code appears in a token: by label (its hash is in the map under that label)."""
        node = self._node(obj)
        kind = node.kind if node is not None else "ignore"
        if kind == "ignore":
            return f"pyplant:{object_label(obj)}"
        self.tokenizer.found.append(node)
        if kind == "fn":
            return f"{node.label}({self.tokenizer.encode(self._bound(obj))})"
        if kind == "pyfn":
            return f"pyplant:{object_label(obj)}({self.tokenizer.encode(self._bound(obj))})"
        if kind == "pinned":
            return f"{node.label}@{self.own_hash(_pinned_function(obj))}"
        if kind == "cls":
            self._drain()  # its methods say which attributes of its instances are state
            return node.label
        if kind == "module":
            return f"module:{obj.__name__}"
        return f"lib:{object_label(obj)}"

    def _untracked(self, obj: Any) -> str:
        node = _Node(obj, "untracked", None)
        node.valued = node.expanded = True
        self.tokenizer.found.append(node)
        return f"untracked:{type(obj).__module__}.{type(obj).__qualname__}"

    # --- the map of one reactor ---

    def _assemble(self, reactor: str, root: _Node, extras: list[_Node]) -> dict[str, str]:
        if not (extras or root.edges or root.found):  # reaches nothing: a chain's reactor
            return {"reactor": root.value or ""}
        values: dict[str, set[str]] = {}
        seen: set[int] = set()
        top = root.label or "reactor"
        stack: list[tuple[_Node, str]] = [(n, top) for n in extras] + [(root, top)]
        state_labels = self.state.labels
        while stack:
            node, context = stack.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            if node is root:
                values.setdefault("reactor", set()).add(node.value or "")
            elif node.label is not None:
                values.setdefault(node.label, set()).add(node.value or "")
                context = node.label
            if node.kind == "untracked":
                _warn_untracked(context, node.obj, reactor)
            for (label, target, value), token in zip(node.edges, node.values):
                if label is not None:
                    if label.partition(":")[2] in state_labels or self.state.is_state(value):
                        continue
                    values.setdefault(label, set()).add(token)
                stack.append((target, label or context))
            stack.extend((target, context) for target in node.found)
        return {label: found.pop() if len(found) == 1 else hashing.digest("merged", *sorted(found))
                for label, found in values.items()}


def _pinned(obj: Any) -> bool:
    info = getattr(obj, "pyplant", None) if isinstance(obj, types.FunctionType) else None
    return getattr(info, "version", None) is not None


def _pinned_function(obj: Any) -> Any:
    """The function a version pins: the innermost one when it carries the version too (a
    subreactor's wrapper and function both do), else the pinned object itself."""
    inner = inspect.unwrap(obj) if hasattr(obj, "__wrapped__") else obj
    return inner if _pinned(inner) else obj


def _bound_objects(func: types.FunctionType) -> list:
    found = list(func.__defaults__ or ()) + list((func.__kwdefaults__ or {}).values())
    for cell in func.__closure__ or ():
        try:
            found.append(cell.cell_contents)
        except ValueError:
            continue
    return found


def _imported_modules(name: str, level: int, namespace: dict) -> list[types.ModuleType]:
    """``import a.b.c`` binds ``a``; its code reaches ``a.b.c`` through attributes."""
    if level:
        return []
    parts = name.split(".")
    return [m for m in (sys.modules.get(".".join(parts[:i + 1])) for i in range(len(parts))) if m is not None]


# Builtins that look names up at run time (``getattr(helpers, name)``, ``globals()[name]``):
# code calling them may reach any attribute of the modules it names, or of its own module.
_NAME_LOOKUPS = frozenset({"getattr", "globals", "vars", "__dict__"})
_NAMESPACE_LOOKUPS = frozenset({"globals", "vars"})

# Special methods run when a class statement executes (at import), not by reached code.
_CLASS_CREATION = frozenset({"__init_subclass__", "__set_name__"})


def _implicitly_called(name: str) -> bool:
    """Special methods Python calls by itself (``x[k]``, ``len(x)``, ``with x``) are callable
    whenever their class is reached; those run only as a class is created are not."""
    return name.startswith("__") and name.endswith("__") and name not in _CLASS_CREATION


def _methods(name: str, value: Any) -> list[tuple[types.FunctionType, str | None]]:
    """The functions a class attribute holds, with the role of their first parameter."""
    if isinstance(value, types.FunctionType):
        if name == "__new__":
            return [(value, None)]
        return [(value, "classmethod" if name in ("__init_subclass__", "__class_getitem__") else "method")]
    if isinstance(value, staticmethod):
        func = value.__func__
        return [(func, None)] if isinstance(func, types.FunctionType) else []
    if isinstance(value, classmethod):
        func = value.__func__
        return [(func, "classmethod")] if isinstance(func, types.FunctionType) else []
    if isinstance(value, property):
        return [(f, "method") for f in (value.fget, value.fset, value.fdel) if isinstance(f, types.FunctionType)]
    if isinstance(value, functools.cached_property) and isinstance(value.func, types.FunctionType):
        return [(value.func, "method")]
    return []


_warned: set[tuple[str, str]] = set()


def _warn_untracked(label: str, obj: Any, reactor: str) -> None:
    """Once per object per process, so that it informs rather than drowns."""
    kind = f"{type(obj).__module__}.{type(obj).__qualname__}"
    if (label, kind) in _warned:
        return
    _warned.add((label, kind))
    logging.getLogger(_SELF).warning(
        "changes to %s (type %s) reached from reactor '%s' are not tracked: it has no stable "
        "representation (it cannot be pickled and its repr holds a memory address)",
        label.partition(":")[2] or label, kind, reactor)
