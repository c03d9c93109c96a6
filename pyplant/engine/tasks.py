"""Tasks: what the engine runs, whatever wrote them (a ``@ReactorFunc``, a step call).

A task tells the engine four things: its code (for the code map), how to start its body (a
generator that yields ``ReceiveRequest``s), where its parameters come from (the plant's config
for reactors, bound arguments for step calls) and, for tasks whose ingredients are fixed in
advance, which ingredients it receives and sends. Traces are kept per task ``key``; reactors
use their name, so several tasks may share one history of traces only when they share code
(calls of one step).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Generator, Protocol

from ..reactor import start_generator


class Params(Protocol):
    """Where a task's parameters come from (``ConfigBase`` is one)."""
    def has(self, name: str) -> bool: ...
    def peek(self, name: str) -> Any: ...
    def is_auxiliary(self, name: str) -> bool: ...


@dataclass(eq=False)
class Task:
    """One unit of execution and caching.

    Parameters
    ----------
    name : str
        Its name in this plant: history, events, ``explain()``, errors.
    key : str
        The trace namespace: traces recorded by it are found by every task of the same key.
    func : callable
        Its code: the code map starts from it (and ``func.pyplant.version`` pins it).
    start : callable
        ``start(run) -> generator``: the body, stepped by the engine.
    params : Params, optional
        Its parameters; None means the plant's config (reactors).
    sends : tuple of str, optional
        Ingredients it sends, when known before it runs (step calls); None: read from source.
    """
    name: str
    key: str
    func: Callable
    start: Callable[[Any], Generator]
    params: Params | None = None
    sends: tuple[str, ...] | None = None

    @property
    def pinned(self) -> bool:
        info = getattr(self.func, "pyplant", None)
        return info is not None and getattr(info, "version", None) is not None


def reactor_task(func: Callable) -> Task:
    """The task of a ``@ReactorFunc``: named and keyed by the function's name."""
    return Task(func.__name__, func.__name__, func, lambda run: start_generator(func, run.pipe, run.config))
