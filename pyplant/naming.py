"""Labels of code: the module and qualified name where it really lives.

A script run as ``python analysis.py`` is the module ``__main__``; imported from a sweep script it
is ``analysis``. Its code is labelled ``analysis.f`` both ways, so traces recorded one way verify
the other way: ``__main__`` is named by ``__spec__.name`` (``python -m pkg.analysis``) or by the
name its file would be imported as from ``sys.path``. Code with no file (a notebook, a REPL)
stays ``__main__``.
"""
from __future__ import annotations

import os
import sys
import types
from typing import Any, Callable


_file_labels: dict[str, str] = {}


def module_label(name: str | None, namespace: dict | None = None) -> str:
    """The label of module ``name``; ``namespace`` is its globals (default: ``sys.modules``)."""
    if name != "__main__":
        return name or "?"
    if namespace is None:
        main = sys.modules.get("__main__")
        namespace = vars(main) if main is not None else {}
    spec = namespace.get("__spec__")
    spec_name = getattr(spec, "name", None)
    if spec_name and spec_name != "__main__":
        return spec_name
    path = namespace.get("__file__")
    if not isinstance(path, str) or not path.endswith(".py"):
        return "__main__"
    label = _file_labels.get(path)
    if label is None:
        label = _file_labels[path] = _importable_name(path) or "__main__"
    return label


def _importable_name(path: str) -> str | None:
    """The dotted name ``path`` is found under from the first ``sys.path`` entry holding it."""
    real = os.path.realpath(path)
    for entry in sys.path:
        root = os.path.realpath(entry or os.getcwd())
        if not real.startswith(root + os.sep):
            continue
        parts = real[len(root) + 1:-len(".py")].split(os.sep)
        if parts[-1] == "__init__":
            parts.pop()
        packages_ok = all(os.path.exists(os.path.join(root, *parts[:i], "__init__.py"))
                          for i in range(1, len(parts)))
        if parts and all(p.isidentifier() for p in parts) and packages_ok:
            return ".".join(parts)
    return None


def function_label(func: Callable) -> str:
    """``module.qualname`` of the code of ``func``, from its globals and code object: never the
    ``__module__``/``__qualname__`` that ``functools.wraps`` copies from what it wraps."""
    namespace = func.__globals__
    return f"{module_label(namespace.get('__name__'), namespace)}.{func.__code__.co_qualname}"


def class_label(cls: type) -> str:
    return f"{module_label(cls.__module__)}.{cls.__qualname__}"


def object_label(obj: Any) -> str:
    """The label of a function, class or other named object."""
    if isinstance(obj, types.FunctionType):
        return function_label(obj)
    module = getattr(obj, "__module__", None)
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or type(obj).__qualname__
    return f"{module_label(module)}.{name}"
