"""Which code is the user's: modules hashed by source, libraries counted by their version.

User code is any module outside the standard library and site-packages, plus ``__main__``;
``CodeScope`` moves top-level packages either way (``user`` wins over ``library``, which wins
over where the module's file lies). pyplant itself is never user code: upgrading it must not
re-run every reactor. A library counts by the installed version of the distribution that
provides it (``library_version``; the interpreter's version for the standard library).
"""
from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import os
import site
import sys
import sysconfig
import types
from dataclasses import dataclass, field
from typing import Any

# pyplant's own objects (ReactorFunc, Ingredient, specs...) never count: upgrading pyplant
# must not re-run every reactor.
_SELF = __name__.split(".")[0]  # "pyplant"


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

    def is_user_function(self, func: types.FunctionType) -> bool:
        """By the module of its globals; code run with made-up globals (``exec``) by its file."""
        module = func.__globals__.get("__name__")
        known = _user_modules.get((self, module))
        if known is not None:
            return known
        if module == "__main__" or module in sys.modules:
            result = self.is_user_module(module)
            _user_modules[(self, module)] = result
            return result
        top = (module or "").split(".")[0]
        if top == _SELF or top in self.library:
            return False
        filename = func.__code__.co_filename
        return filename.startswith("<") or not os.path.realpath(filename).startswith(_library_roots())


_user_modules: dict[tuple[CodeScope, str | None], bool] = {}  # imported modules: they stay put


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


_module_user: dict[str, bool] = {}


def _is_user_module_by_location(module_name: str) -> bool:
    if module_name == "__main__":
        return True
    known = _module_user.get(module_name)
    if known is not None:
        return known
    module = sys.modules.get(module_name)
    if module is None:
        return False  # not imported (yet): not remembered, it may be imported later
    path = getattr(module, "__file__", None)
    result = path is not None and not os.path.realpath(path).startswith(_library_roots())
    _module_user[module_name] = result  # built-in and frozen modules have no file: library
    return result


@functools.lru_cache(maxsize=1024)
def library_version(module_name: str) -> str:
    """The installed version of the distribution that provides a module, or 'unknown'."""
    top = module_name.split(".")[0]
    if top in sys.stdlib_module_names or top in ("builtins", "python"):
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
