"""Tasks: what the engine runs, whatever wrote them (a ``@ReactorFunc``, a step call).

A task tells the engine four things: its code (for the code map), how to start its body (a
generator that yields ``ReceiveRequest``s), where its parameters come from (the plant's config
for reactors, bound arguments for step calls) and, for tasks whose ingredients are fixed in
advance, which ingredients it receives and sends, by *slot*.

Traces are kept per task ``key`` and record inputs and outputs by slot. A reactor's slots are
its ingredient names and its key is its name. A step call's slots are its arguments and its
outputs (``in0``, ``return``), and its key is the step's name: every call of ``scale`` shares
one history of traces, found by code, argument tokens and input contents, whatever the call is
named this time (``scale`` or ``scale_1``), so reordering calls re-runs nothing.
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
    inputs : dict, optional
        {slot: ingredient} it receives, when fixed before it runs (step calls); None: its
        receives are read from source and a slot is the ingredient's name (reactors).
    outputs : dict, optional
        {slot: ingredient} it sends, when fixed (step calls); None: as for ``inputs``.
    code : callable, optional
        ``code() -> {label: hash}``: its code map, for tasks that are not Python functions
        (a program run as a step); None: the code map of ``func``.
    kind : str
        What it is called in reasons and errors: "reactor" or "step".
    """
    name: str
    key: str
    func: Callable
    start: Callable[[Any], Generator]
    params: Params | None = None
    inputs: dict[str, str] | None = None
    outputs: dict[str, str] | None = None
    code: Callable[[], dict[str, str]] | None = None
    kind: str = "reactor"

    @property
    def sends(self) -> tuple[str, ...] | None:
        """Ingredients it sends when fixed in advance, else None (read from source)."""
        return None if self.outputs is None else tuple(self.outputs.values())

    def input_ingredient(self, slot: str) -> str:
        return slot if self.inputs is None else self.inputs.get(slot, slot)

    def input_slot(self, ingredient: str) -> str:
        if self.inputs is None:
            return ingredient
        return next((slot for slot, name in self.inputs.items() if name == ingredient), ingredient)

    def output_ingredient(self, slot: str) -> str:
        return slot if self.outputs is None else self.outputs.get(slot, slot)

    def output_slot(self, ingredient: str) -> str:
        if self.outputs is None:
            return ingredient
        return next((slot for slot, name in self.outputs.items() if name == ingredient), ingredient)

    @property
    def pinned(self) -> bool:
        info = getattr(self.func, "pyplant", None)
        return info is not None and getattr(info, "version", None) is not None


def reactor_task(func: Callable) -> Task:
    """The task of a ``@ReactorFunc``: named and keyed by the function's name."""
    return Task(func.__name__, func.__name__, func, lambda run: start_generator(func, run.pipe, run.config))
