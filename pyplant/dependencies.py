"""The code a reactor depends on: its own, and the user code it references, transitively.

A reactor's **code map** is ``{label: hash}`` over everything it can reach through the names its
bytecode uses (``co_names`` of it and its nested code), its defaults and its closure cells:

=======================  =====================================================================
``reactor``              the reactor's own normalized source (``hashing.code_hash``)
``fn:module.qualname``   a user-code function it references (helpers, nested too)
``cls:module.qualname``  a user-code class: the code of its methods, its immutable attributes
``const:module.name``    a module-level constant it reads, by stable token (arrays by content)
``lib:package``          a library it references, by the package's version, not its source
=======================  =====================================================================

"User code" is any module outside the standard library and site-packages, plus ``__main__``
(scripts, notebooks, IPython cells); ``CodeScope`` moves packages either way. Cycles between
helpers are fine: the walk keeps a visited set, and the map is flat. Each function's own hash is
cached per process (see ``hashing``), so walking 50 helpers costs well under a millisecond.

Referencing an attribute name that happens to equal a global's name (``pipe.send`` and a global
``send``) adds that global: a spurious dependency can cost a re-run, never a stale result.
"""
from __future__ import annotations

import dis
import enum
import functools
import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import site
import sys
import sysconfig
import types
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from . import hashing

# pyplant's own objects (ReactorFunc, Ingredient, specs...) never count: upgrading pyplant
# must not re-run every reactor.
_SELF = __name__.split(".")[0]


@dataclass(frozen=True)
class CodeScope:
    """Which top-level packages count as user code (hashed by source) or library (by version).

    ``user`` wins over ``library``, which wins over the location of the module's file.
    """
    user: frozenset[str] = field(default_factory=frozenset)
    library: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def of(cls, user: Any = (), library: Any = ()) -> "CodeScope":
        return cls(frozenset(user or ()), frozenset(library or ()))

    def is_user_module(self, module_name: str | None) -> bool:
        if not module_name:
            return False
        top = module_name.split(".")[0]
        if top == _SELF:
            return False
        if top in self.user:
            return True
        if top in self.library:
            return False
        return _is_user_module_by_location(module_name)

    def is_user_module_spec(self, top: str) -> bool:
        """Like ``is_user_module`` for a top-level module that is not imported yet."""
        if top in self.user:
            return True
        if top in self.library or top == _SELF or top in sys.stdlib_module_names:
            return False
        return _is_user_spec_by_location(top)


@functools.lru_cache(maxsize=4096)
def _is_user_spec_by_location(top: str) -> bool:
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return False
    origin = getattr(spec, "origin", None) if spec is not None else None
    if not origin or origin in ("built-in", "frozen"):
        return False
    return not os.path.realpath(origin).startswith(_library_roots())


@functools.lru_cache(maxsize=None)
def _library_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths.get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    roots.update(getattr(site, "getsitepackages", lambda: [])())
    roots.add(getattr(site, "getusersitepackages", lambda: None)())
    return tuple(os.path.realpath(r) + os.sep for r in roots if r)


@functools.lru_cache(maxsize=4096)
def _is_user_module_by_location(module_name: str) -> bool:
    if module_name == "__main__":
        return True
    module = sys.modules.get(module_name)
    path = getattr(module, "__file__", None)
    if module is None or path is None:
        return False  # built-in and frozen modules
    path = os.path.realpath(path)
    return not path.startswith(_library_roots())


@functools.lru_cache(maxsize=1024)
def library_version(module_name: str) -> str:
    """The installed version of the distribution that provides a module, or 'unknown'."""
    top = module_name.split(".")[0]
    if top in sys.stdlib_module_names or top == "builtins":
        return f"python-{sys.version_info.major}.{sys.version_info.minor}"
    version = getattr(sys.modules.get(top), "__version__", None)
    if isinstance(version, str):
        return version
    for dist in [top] + _packages_distributions().get(top, []):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


@functools.lru_cache(maxsize=1)
def _packages_distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


class CodeMapper:
    """Computes code maps; one per run, so globals re-bound in a notebook are seen.

    Parameters
    ----------
    own_hash : callable
        ``f(func) -> str``: the hash of one function's own code (the built-in normalized-source
        hash, a plant's ``functionHash``, or a pinned ``version=``).
    scope : CodeScope
        What counts as user code.
    """

    def __init__(self, own_hash: Callable[[Callable], str], scope: CodeScope):
        self.own_hash = own_hash
        self.scope = scope

    def code_map(self, func: Callable) -> dict[str, str]:
        """``{label: hash}`` of ``func`` (labelled 'reactor') and all it reaches."""
        if hasattr(func, "__wrapped__"):
            func = inspect.unwrap(func)
        result = {"reactor": self.own_hash(func)}
        # {id: object}: holding the objects keeps their ids from being reused mid-walk
        seen: dict[int, Any] = {id(func): func}
        state: set[str] = set()  # module globals that reachable code assigns
        pending = list(self._references(func, state))
        while pending:
            obj = pending.pop()
            if id(obj) in seen:
                continue
            seen[id(obj)] = obj
            pending.extend(self._visit(obj, result, state))
        for label in state:
            result.pop(f"const:{label}", None)
        return result

    def _visit(self, obj: Any, result: dict[str, str], state: set[str]) -> list[Any]:
        """Add ``obj`` to the map; return what it references in turn."""
        if isinstance(obj, types.ModuleType):
            if not self.scope.is_user_module(obj.__name__):
                self._add_library(obj.__name__, result)
            return []
        if isinstance(obj, _Constant):
            result[f"const:{obj.label}"] = _token(obj.value, self.own_hash)
            return []
        if isinstance(obj, _Library):
            self._add_library(obj.top, result)
            return []
        module = getattr(obj, "__module__", None)
        if not self.scope.is_user_module(module):
            if module and module.split(".")[0] != _SELF:
                self._add_library(module, result)
            return []
        if isinstance(obj, type):
            result[f"cls:{module}.{obj.__qualname__}"] = self._class_hash(obj)
            return self._class_references(obj, state)
        if isinstance(obj, (types.FunctionType, types.MethodType)):
            func = inspect.unwrap(getattr(obj, "__func__", obj))
            result[f"fn:{module}.{func.__qualname__}"] = self.own_hash(func)
            return self._references(func, state)
        return []

    def _add_library(self, module: str, result: dict[str, str]) -> None:
        top = module.split(".")[0]
        if top != _SELF:
            result[f"lib:{top}"] = library_version(top)

    def _references(self, func: Callable, state: set[str]) -> list[Any]:
        """Globals (functions, classes, modules, constants), defaults and closure cells.

        Adds to ``state`` the module globals ``func`` assigns: they are not constants.
        """
        if hasattr(func, "__wrapped__"):
            func = inspect.unwrap(func)
        code = getattr(func, "__code__", None)
        if code is None:
            return []
        refs: list[Any] = []
        module_name = getattr(func, "__module__", None) or "?"
        state.update(f"{module_name}.{name}" for name in _stored_globals(code))
        globals_ = getattr(func, "__globals__", {})
        names = _names(code)
        for name in names:
            if name in globals_:
                refs.append(_wrap(globals_[name], f"{module_name}.{name}"))
        for module in _imports(code):  # imported inside the function: `from sklearn import svm`
            refs.append(self._import_reference(module))
        for value in (func.__defaults__ or ()) + tuple((func.__kwdefaults__ or {}).values()):
            refs.append(_wrap(value, f"{module_name}.{func.__qualname__}.<default>"))
        for name, cell in zip(code.co_freevars, func.__closure__ or ()):
            try:
                refs.append(_wrap(cell.cell_contents, f"{module_name}.{func.__qualname__}.<closure {name}>"))
            except ValueError:  # an empty cell
                continue
        refs.extend(self._module_attributes(refs, names))  # modules from globals, imports, cells
        return [r for r in refs if r is not None]

    def _import_reference(self, module: str) -> Any:
        """A module a function imports in its body. Library modules are not imported (their
        version is read from the installed metadata); user modules are, as the body would."""
        if module in sys.modules:
            return sys.modules[module]
        top = module.split(".")[0]
        if top in self.scope.library or not self.scope.is_user_module_spec(top):
            return _Library(top)
        try:
            return importlib.import_module(module)
        except Exception:
            return _Constant(f"<import {module}>", "unimportable")

    def _module_attributes(self, refs: list[Any], names: set[str]) -> list[Any]:
        """``helpers.f(x)`` names ``helpers`` and ``f``: take the attributes of referenced user
        modules whose names the code uses (``pkg.sub.f`` too)."""
        found: list[Any] = []
        modules = [r for r in refs if isinstance(r, types.ModuleType)]
        seen = {id(m) for m in modules}
        while modules:
            module = modules.pop()
            if not self.scope.is_user_module(module.__name__):
                continue
            attributes = vars(module)
            for name in names & attributes.keys():
                attr = _wrap(attributes[name], f"{module.__name__}.{name}")
                if attr is None:
                    continue
                found.append(attr)
                if isinstance(attr, types.ModuleType) and id(attr) not in seen:
                    seen.add(id(attr))
                    modules.append(attr)
        return found

    def _class_hash(self, cls: type) -> str:
        parts = []
        for name, value in sorted(vars(cls).items()):
            value = getattr(value, "__func__", value)  # staticmethod, classmethod
            if isinstance(value, property):
                value = value.fget
            if isinstance(value, types.FunctionType):
                parts.append(f"{name}={self.own_hash(value)}")
            elif not name.startswith("__") and _is_immutable_constant(value):
                parts.append(f"{name}={_token(value, self.own_hash)}")
        bases = [f"{b.__module__}.{b.__qualname__}" for b in cls.__bases__]
        return hashing.digest("class", cls.__qualname__, *bases, *parts)

    def _class_references(self, cls: type, state: set[str]) -> list[Any]:
        refs: list[Any] = [b for b in cls.__bases__ if b is not object]
        for value in vars(cls).values():
            value = getattr(value, "__func__", value)
            if isinstance(value, property):
                value = value.fget
            if isinstance(value, types.FunctionType):
                refs.extend(self._references(value, state))
        return refs


@dataclass(frozen=True, eq=False)
class _Library:
    top: str


@dataclass(frozen=True, eq=False)
class _Constant:
    label: str
    value: Any


def _wrap(value: Any, label: str) -> Any:
    """Functions, classes and modules are walked; plain data becomes a constant; the rest
    (instances of library classes: loggers, locks...) is not a code dependency."""
    if isinstance(value, (types.FunctionType, types.MethodType, type, types.ModuleType)):
        return value
    if isinstance(value, functools.partial):
        return value.func
    if _is_constant(value):
        return _Constant(label, value)
    return None


def _is_constant(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes, range, slice,
                                           enum.Enum, np.ndarray, np.generic)):
        return True
    if isinstance(value, (tuple, list, frozenset, set)):
        return all(_is_constant(v) for v in value)
    if isinstance(value, dict):
        return all(_is_constant(k) and _is_constant(v) for k, v in value.items())
    return False


def _is_immutable_constant(value: Any) -> bool:
    """Class attributes count only when immutable: a class-level cache or counter that code
    mutates must not re-run everything that uses the class."""
    if isinstance(value, (list, dict, set, np.ndarray)):
        return False
    if isinstance(value, (tuple, frozenset)):
        return all(_is_immutable_constant(v) for v in value)
    return _is_constant(value)


def _token(value: Any, own_hash: Callable[[Callable], str]) -> str:
    try:
        return hashing.stable_token(value, own_hash)
    except hashing.TokenizationError:
        return "untokenizable"


_IMPORT_NAME = dis.opmap["IMPORT_NAME"]
_STORE_GLOBAL = dis.opmap["STORE_GLOBAL"]
_facts_cache: dict[int, tuple[types.CodeType, frozenset[str], frozenset[str]]] = {}


def _imports(code: types.CodeType) -> frozenset[str]:
    """Module names imported in the body of ``code`` (and nested code), cached per process."""
    return _code_facts(code)[0]


def _stored_globals(code: types.CodeType) -> frozenset[str]:
    """Global names ``code`` assigns (``global x; x = ...``): state, not constants."""
    return _code_facts(code)[1]


def _code_facts(code: types.CodeType) -> tuple[frozenset[str], frozenset[str]]:
    cached = _facts_cache.get(id(code))
    if cached is not None and cached[0] is code:
        return cached[1], cached[2]
    imports: set[str] = set()
    stores: set[str] = set()
    opcodes = code.co_code[::2]
    if _IMPORT_NAME in opcodes or _STORE_GLOBAL in opcodes:  # cheap test before disassembling
        for ins in dis.get_instructions(code):
            if ins.opcode == _IMPORT_NAME and ins.argval:
                imports.add(ins.argval)
            elif ins.opcode == _STORE_GLOBAL:
                stores.add(ins.argval)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            nested = _code_facts(const)
            imports |= nested[0]
            stores |= nested[1]
    result = frozenset(imports), frozenset(stores)
    _facts_cache[id(code)] = (code, *result)
    return result


def _names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names
