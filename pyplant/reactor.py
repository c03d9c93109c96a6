"""The ``@ReactorFunc`` and ``@SubreactorFunc`` decorators and their process-wide registries.

A reactor is a function ``f(pipe)`` or ``f(pipe, config)``, a generator or a plain function.
A subreactor is a helper called as ``r = yield from sub(...)``; it runs on behalf of the calling
reactor, and its code counts for that reactor's code hash. The running reactor is announced by
the scheduler through ``active_run`` so that a subreactor can report itself synchronously,
without an extra yield.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Generator, Protocol

from .errors import ReactorDefinitionError
from .naming import module_label


@dataclass(frozen=True)
class ReactorInfo:
    """What the decorator records on a reactor function (``func.pyplant``)."""
    isReactor: bool
    version: str | None = None


class SubreactorListener(Protocol):
    def on_subreactor(self, name: str, key: str, func: Callable) -> None: ...


# Process-wide registries, as in PyPlant: every @ReactorFunc in definition order, and the
# latest @SubreactorFunc by module.qualname (looked up when verifying traces).
_reactor_functions: list[Callable] = []
_subreactor_functions: dict[str, Callable] = {}
# The run whose generator is being stepped right now (set by the scheduler around each step).
_active: list[SubreactorListener] = []


def ReactorFunc(func: Callable | None = None, *, version: str | None = None) -> Callable:
    """Mark ``func`` as a reactor: the unit of execution and caching.

    Parameters
    ----------
    func : callable
        ``func(pipe)`` or ``func(pipe, config)``; a generator (``x = yield pipe.receive('x')``)
        or a plain function.
    version : str, optional
        When given, it stands for the code hash: edits to the body do not re-run the reactor
        until ``version`` changes (a refactor marked non-breaking, as in Mandala and redun).

    Raises
    ------
    ReactorDefinitionError
        when ``func`` is not a function taking one or two positional parameters.
    """
    if func is None:
        return functools.partial(ReactorFunc, version=version)
    _check_reactor_signature(func)
    func.pyplant = ReactorInfo(isReactor=True, version=version)
    _reactor_functions.append(func)
    return func


def SubreactorFunc(func: Callable | None = None, *, version: str | None = None) -> Callable:
    """Mark ``func`` as a subreactor, called from reactors as ``r = yield from func(...)``.

    Its return value propagates to the caller; it may send and receive through the caller's
    pipe; its code (and that of nested subreactors) and its config reads count for the caller.
    """
    if func is None:
        return functools.partial(SubreactorFunc, version=version)
    if not callable(func):
        raise ReactorDefinitionError(f"@SubreactorFunc needs a function, got {func!r}")
    name = func.__name__
    key = subreactor_key(func)
    _subreactor_functions[key] = func
    is_generator = inspect.isgeneratorfunction(func)

    @functools.wraps(func)
    def _pyplant_subreactor_wrapper(*args: Any, **kwargs: Any) -> Generator:
        if _active:
            _active[-1].on_subreactor(name, key, func)
        if is_generator:
            return (yield from func(*args, **kwargs))
        return func(*args, **kwargs)

    _pyplant_subreactor_wrapper.pyplant = ReactorInfo(isReactor=False, version=version)
    func.pyplant = ReactorInfo(isReactor=False, version=version)
    return _pyplant_subreactor_wrapper


def reactor_name(func_or_name: Callable | str) -> str:
    return func_or_name if isinstance(func_or_name, str) else func_or_name.__name__


def is_reactor(func: Any) -> bool:
    info = getattr(func, "pyplant", None)
    return isinstance(info, ReactorInfo) and info.isReactor


def registered_reactors() -> list[Callable]:
    """Every ``@ReactorFunc`` defined so far; a later definition of a name replaces earlier ones."""
    latest = {f.__name__: f for f in _reactor_functions}
    return list(latest.values())


def subreactor_key(func: Callable) -> str:
    """Subreactors are known by module and qualified name: two modules may both define one
    called ``normalize``. A script's ``__main__`` is named as its file would be imported
    (``naming.module_label``), so a script run directly and imported by another one has the
    same subreactors."""
    namespace = getattr(func, "__globals__", None)
    if not isinstance(namespace, dict) or namespace.get("__name__") != func.__module__:
        namespace = None
    return f"{module_label(func.__module__, namespace)}.{func.__qualname__}"


def subreactor_function(key: str) -> Callable | None:
    return _subreactor_functions.get(key)


def clear_registries() -> None:
    _reactor_functions.clear()
    _subreactor_functions.clear()


def start_generator(func: Callable, pipe: Any, config: Any) -> Generator:
    """Call a reactor and return a generator, wrapping plain functions into one."""
    args = (pipe, config) if _wants_config(func) else (pipe,)
    if inspect.isgeneratorfunction(func):
        return func(*args)
    return _plain_reactor(func, args)


def _plain_reactor(func: Callable, args: tuple) -> Generator:
    result = func(*args)
    if inspect.isgenerator(result):  # a callable object whose __call__ is a generator
        yield from result
    return
    yield  # noqa: unreachable; makes this a generator


def _wants_config(func: Callable) -> bool:
    return _positional_count(func) >= 2


def _positional_count(func: Callable) -> int:
    code = getattr(func, "__code__", None)
    if code is not None and not hasattr(func, "__wrapped__") and not inspect.ismethod(func):
        return code.co_argcount  # fast path: inspect.signature costs 20 µs a reactor
    params = inspect.signature(func).parameters.values()
    return len([p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)])


def _check_reactor_signature(func: Any) -> None:
    if not callable(func):
        raise ReactorDefinitionError(f"@ReactorFunc needs a function, got {func!r}")
    if inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func):
        raise ReactorDefinitionError(
            f"reactor '{func.__name__}' is async; reactors are generators or plain functions",
            reactor=func.__name__)
    try:
        count = _positional_count(func)
    except (TypeError, ValueError) as exc:
        raise ReactorDefinitionError(f"cannot read the signature of {func!r}") from exc
    if count not in (1, 2):
        raise ReactorDefinitionError(
            f"reactor '{func.__name__}' takes {count} positional parameters; "
            f"a reactor is f(pipe) or f(pipe, config)", reactor=func.__name__)
