"""Step definitions, step calls and the graph they form.

=================  ============================================================================
StepDefinition     what ``@step`` makes of a function: its name (the trace namespace: every call
                   of ``train`` shares one), ``version``, ``returns``, file parameters
StepCall           one call: the bound arguments (literals and StepResults), its instance name
                   (``scale``, ``scale_1``: call order, for display and ingredient names), the
                   ingredient of each output, ``depends_on``
StepGraph          names calls and merges identical ones (a notebook cell run again makes the
                   same calls, so the same instances)
=================  ============================================================================

The cache key of a call is not its instance name: it is the step's code, the tokens of its
literal arguments and the content hashes of the results it receives (see ``tasks.py``), so
calls reordered, renamed or repeated re-run nothing.
"""
from __future__ import annotations

import contextvars
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from ..errors import StepUsageError
from .paths import InputPath, OutputPath, output_name
from .results import RETURN_SLOT, StepResult, results_in


@dataclass(eq=False)
class StepDefinition:
    """A function made a step by ``@step``; calling it makes a ``StepCall``.

    ``name`` keys its traces (``__qualname__`` unless given), ``version`` pins its code hash,
    ``returns`` names several outputs, each its own ingredient. ``input_paths`` and
    ``output_paths`` are the parameters annotated ``InputPath(...)`` / ``OutputPath(...)``.
    """
    func: Callable
    name: str
    version: str | None = None
    returns: tuple[str, ...] = ()
    signature: inspect.Signature | None = None
    input_paths: dict[str, InputPath] = field(default_factory=dict)
    output_paths: dict[str, OutputPath] = field(default_factory=dict)

    @property
    def output_slots(self) -> tuple[str, ...]:
        """Every output: the return value (or the ``returns`` names), then file outputs."""
        base = self.returns or (RETURN_SLOT,)
        return base + tuple(output_name(p) for p in self.output_paths)


@dataclass(eq=False)
class StepCall:
    """One call of a step: see the module docstring. ``arguments`` is {parameter: value} after
    binding to the signature (defaults applied); values may hold StepResults anywhere in lists,
    tuples and dicts."""
    definition: StepDefinition
    arguments: dict[str, Any]
    name: str = ""
    outputs: dict[str, str] = field(default_factory=dict)   # {slot: ingredient name}
    depends_on: list["StepCall"] = field(default_factory=list)

    def add_depends_on(self, results: Iterable[Any]) -> None:
        """Run after the steps of ``results`` (StepResults), without receiving their values
        (SageMaker's ``add_depends_on``); they are not part of this step's cache key.

        Raises
        ------
        StepUsageError
            for an item that is not a StepResult.
        """
        for item in results:
            call = item.call if isinstance(item, StepResult) else None
            if call is None:
                raise StepUsageError(f"step '{self.name}': add_depends_on takes step results, got "
                                     f"{item!r}", step=self.name)
            if call is not self and call not in self.depends_on:
                self.depends_on.append(call)

    def upstream(self) -> list["StepCall"]:
        """The calls whose results this call receives or waits for."""
        calls = [r.call for r in results_in(list(self.arguments.values()))] + self.depends_on
        return list(dict.fromkeys(calls))

    def result(self) -> Any:
        """The whole result of the call (``StepResult``), for ``get_step(r).result()``."""
        return StepResult(self)

    def __repr__(self) -> str:
        return f"<step call {self.name} of {self.definition.name}>"


class StepGraph:
    """Names step calls (``scale``, ``scale_1``, ...) and merges identical calls."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.calls: dict[tuple, StepCall] = {}   # by identity, for merging
        self.made: list[StepCall] = []           # every call, in call order

    def add(self, definition: StepDefinition, arguments: dict[str, Any]) -> StepCall:
        """The call of ``definition`` with ``arguments``: the existing one when the same call
        was made before in this graph; a call of a redefined step (a notebook cell run again)
        with the same arguments takes the earlier call's name, so ingredient names stay put."""
        args = _identity(arguments)
        identity = (definition.name, getattr(definition.func, "__module__", None), args)
        existing = self.calls.get(identity) if args is not None else None
        if existing is not None and existing.definition is definition \
                and _same_results(existing.arguments, arguments):
            return existing
        if existing is not None:
            call = StepCall(definition, arguments, name=existing.name, outputs=dict(existing.outputs))
        else:
            base = _base_name(definition)
            n = self.counts.get(base, 0)
            self.counts[base] = n + 1
            call = StepCall(definition, arguments, name=base if n == 0 else f"{base}_{n}")
            call.outputs = {slot: (call.name if slot == RETURN_SLOT else _suffixed(slot, n))
                            for slot in definition.output_slots}
        if args is not None:
            self.calls[identity] = call
        self.made.append(call)
        return call

    def reference(self, ingredient: str) -> StepCall:
        """A call standing for an ingredient some reactor sends (``ingredient('name')``)."""
        key = ("ingredient", ingredient)
        call = self.calls.get(key)
        if call is None:
            call = self.calls[key] = StepCall(None, {}, name=ingredient,  # type: ignore[arg-type]
                                              outputs={RETURN_SLOT: ingredient})
        return call


def _base_name(definition: StepDefinition) -> str:
    """The display name: ``name=`` when given, else the function's ``__name__`` (a method or a
    function defined inside another keys its traces by ``__qualname__`` but shows its name)."""
    if definition.name != getattr(definition.func, "__qualname__", None):
        return definition.name
    return getattr(definition.func, "__name__", definition.name)


def _suffixed(name: str, n: int) -> str:
    return name if n == 0 else f"{name}_{n}"


def _identity(arguments: dict[str, Any]) -> Any:
    """A hashable identity of the arguments, results by the name of their call (unique in a
    graph), None when a value has no stable token: such calls are never merged."""
    from ..tokens import stable_token
    from .results import escape_mark, substitute
    try:
        refs: list[StepResult] = []
        marked = substitute(arguments, lambda r: refs.append(r) or f"<result {len(refs) - 1}>",
                            escape_mark)
        return stable_token(marked), tuple((r.call.name, r.slot, r.selector) for r in refs)
    except Exception:  # a value with no stable token: a call of its own
        return None


def _same_results(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """True when the results among two argument sets come from the same call objects."""
    return all(a.call is b.call for a, b in zip(results_in(list(old.values())), results_in(list(new.values()))))


_graph: contextvars.ContextVar[StepGraph] = contextvars.ContextVar("pyplant_step_graph")
_default_graph = StepGraph()


def current_graph() -> StepGraph:
    """The graph step calls are added to: a pipeline's own, or the module-level default."""
    return _graph.get(_default_graph)


def new_graph() -> tuple[StepGraph, contextvars.Token]:
    """Start a graph of its own (one run of a ``@pipeline`` controller)."""
    graph = StepGraph()
    return graph, _graph.set(graph)


def end_graph(token: contextvars.Token) -> None:
    _graph.reset(token)


def bind(definition: StepDefinition, args: tuple, kwargs: dict) -> dict[str, Any]:
    """{parameter: value} of a call, defaults applied; OutputPath parameters are filled by the
    plant and must not be passed.

    Raises
    ------
    StepUsageError
        naming the step, for arguments that do not fit its signature.
    """
    signature = definition.signature
    for name in definition.output_paths:
        if name in kwargs:
            raise StepUsageError(f"step '{definition.name}': parameter '{name}' is an OutputPath; "
                                 f"the plant gives it a path, do not pass it", step=definition.name)
    params = [p for n, p in signature.parameters.items() if n not in definition.output_paths]
    try:
        bound = signature.replace(parameters=params).bind(*args, **kwargs)
    except TypeError as exc:
        raise StepUsageError(f"step '{definition.name}' called with arguments that do not fit "
                             f"{definition.name}{signature}: {exc}", step=definition.name) from exc
    bound.apply_defaults()
    return dict(bound.arguments)
