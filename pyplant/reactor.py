"""The ``@ReactorFunc`` and ``@SubreactorFunc`` decorators and the registry of definitions.

A reactor is a function ``f(pipe)`` or ``f(pipe, config)``, a generator or a plain function.
A subreactor is a helper called as ``r = yield from sub(...)``; it runs on behalf of the calling
reactor, and its code counts for that reactor's code hash. The running reactor is announced by
the scheduler through ``running.active_run`` so that a subreactor can report itself
synchronously, without an extra yield.

The registry keeps the newest definition of each name, so a notebook cell run again replaces
its reactor; a reactor whose name no longer refers to it in its module (deleted, renamed) is no
longer visible.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Generator, Protocol

from .errors import ReactorDefinitionError, UnknownReactorError
from .naming import module_label
from .running import active_run


@dataclass(frozen=True)
class ReactorInfo:
    """What the decorator records on a reactor function (``func.pyplant``)."""
    isReactor: bool
    version: str | None = None


@dataclass(eq=False)
class SubreactorCall:
    """One call of a subreactor: made when it is called, started when ``yield from`` runs it."""
    name: str


class SubreactorListener(Protocol):
    """What a reactor run offers a subreactor call (``scheduler.ReactorRun``)."""
    def on_subreactor_call(self, call: SubreactorCall) -> None: ...
    def on_subreactor(self, name: str, key: str, func: Callable, call: SubreactorCall) -> None: ...


class ReactorRegistry:
    """The reactors and subreactors defined so far, newest definition of each name.

    ``reactors``: {reactor name: function}, in order of first definition (PyPlant's
    ``add_all_visible_reactors`` order). ``subreactors``: {module.qualname: function}, looked up
    when a trace names a subreactor. One default instance serves the decorators
    (``default_registry``), as PyPlant's module-level lists did.
    """

    def __init__(self) -> None:
        self.reactors: dict[str, Callable] = {}
        self.subreactors: dict[str, Callable] = {}

    def add_reactor(self, func: Callable) -> None:
        self.reactors[func.__name__] = func

    def add_subreactor(self, key: str, func: Callable) -> None:
        self.subreactors[key] = func

    def visible_reactors(self) -> list[Callable]:
        """Every reactor whose name still refers to it where it was defined."""
        return [f for f in self.reactors.values() if newest_definition(f) is f]

    def subreactor(self, key: str) -> Callable | None:
        return self.subreactors.get(key)

    def clear(self) -> None:
        self.reactors.clear()
        self.subreactors.clear()


default_registry = ReactorRegistry()


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
    default_registry.add_reactor(func)
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
    default_registry.add_subreactor(key, func)
    is_generator = inspect.isgeneratorfunction(func)

    def body(run: Any, call: object, args: tuple, kwargs: dict) -> Generator:
        if run is not None:
            run.on_subreactor(name, key, func, call)
        if is_generator:
            return (yield from func(*args, **kwargs))
        return func(*args, **kwargs)

    @functools.wraps(func)
    def _pyplant_subreactor_wrapper(*args: Any, **kwargs: Any) -> Generator:
        # A plain function returning the generator, so that a call without `yield from`
        # (which would silently do nothing) is seen by the run and reported when it ends.
        run = active_run.get()
        call = SubreactorCall(name)
        if run is not None:
            run.on_subreactor_call(call)
        return body(run, call, args, kwargs)

    _pyplant_subreactor_wrapper.pyplant = ReactorInfo(isReactor=False, version=version)
    func.pyplant = ReactorInfo(isReactor=False, version=version)
    return _pyplant_subreactor_wrapper


def reactor_name(func_or_name: Callable | str) -> str:
    """The name of a reactor given as a function or a name; ``UnknownReactorError`` for
    anything else (``plant.force(42)``)."""
    if isinstance(func_or_name, str):
        return func_or_name
    name = getattr(func_or_name, "__name__", None) if callable(func_or_name) else None
    if not isinstance(name, str):
        raise UnknownReactorError(f"{func_or_name!r} is neither a reactor (a function) nor the "
                                  f"name of one")
    return name


def is_reactor(func: Any) -> bool:
    info = getattr(func, "pyplant", None)
    return isinstance(info, ReactorInfo) and info.isReactor


def registered_reactors() -> list[Callable]:
    """Every ``@ReactorFunc`` defined so far and still bound to its name; a later definition
    of a name replaces earlier ones."""
    return default_registry.visible_reactors()


def newest_definition(func: Callable) -> Callable | None:
    """The function now bound to ``func``'s name in its module (a notebook cell run again
    rebinds it), ``func`` itself when it cannot be looked up (defined inside a function), or
    None when the name no longer refers to a reactor of that name (deleted, renamed)."""
    if getattr(func, "__qualname__", None) != getattr(func, "__name__", None):
        return func  # nested or a method: no module-level name to follow
    namespace = getattr(func, "__globals__", None)
    if namespace is None or namespace.get("__name__") != func.__module__:
        return func  # wrapped by a decorator from elsewhere: its globals are not its module's
    current = namespace.get(func.__name__)
    if current is func:
        return func
    if is_reactor(current) and getattr(current, "__name__", None) == func.__name__:
        return current
    return None


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
    return default_registry.subreactor(key)


def clear_registries() -> None:
    default_registry.clear()


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
