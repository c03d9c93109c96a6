"""``@step``, ``@pipeline``, ``get_step`` and ``ingredient``: pipelines from plain functions.

After ClearML's ``PipelineDecorator.component``/``pipeline`` and SageMaker's ``@step``: a step
call returns a lazy ``StepResult``; passing results to other steps wires the graph; a plant runs
it (``plant.run(result)``), re-running only what is stale, through the same scheduler, traces
and warehouse as reactors.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import StepUsageError
from .graph import StepCall, StepDefinition, bind, current_graph
from .paths import InputPath, OutputPath
from .results import StepResult
from .running import active_plant


def step(func: Callable | None = None, *, name: str | None = None, version: str | None = None,
         returns: tuple[str, ...] | list[str] | None = None) -> Callable:
    """Make ``func`` a pipeline step: calling it returns a ``StepResult`` and does no work.

    Parameters
    ----------
    func : callable
        A plain function returning any value the warehouse stores (arrays, objects, ...).
    name : str, optional
        The step's identity (default ``func.__qualname__``): it keys the step's traces and
        names its output ingredient.
    version : str, optional
        Stands for the code hash: edits keep the cache until ``version`` changes.
    returns : tuple of str, optional
        Names of several outputs: the function returns a tuple (or dict) of that many values,
        each stored as its own ingredient; the result unpacks (``a, b = split(x)``).

    Raises
    ------
    StepUsageError
        for a non-callable, a generator or async function, or bad ``returns`` names.
    """
    if func is None:
        return functools.partial(step, name=name, version=version, returns=returns)
    definition = _define(func, name, version, returns)

    @functools.wraps(func)
    def call_step(*args: Any, **kwargs: Any) -> StepResult:
        return StepResult(current_graph().add(definition, bind(definition, args, kwargs)))

    call_step.pyplant_step = definition  # type: ignore[attr-defined]
    return call_step


def _define(func: Callable, name: str | None, version: str | None, returns: Any) -> StepDefinition:
    label = name or getattr(func, "__qualname__", repr(func))
    if not callable(func):
        raise StepUsageError(f"@step needs a function, got {func!r}", step=label)
    if inspect.isgeneratorfunction(func) or inspect.iscoroutinefunction(func):
        raise StepUsageError(f"step '{label}' is a generator or async function; a step returns "
                             f"its value (write a @ReactorFunc to yield)", step=label)
    names = tuple(returns or ())
    if any(not isinstance(n, str) or not n for n in names) or len(set(names)) != len(names):
        raise StepUsageError(f"step '{label}': returns= must be distinct non-empty names, got "
                             f"{returns!r}", step=label)
    signature = _signature(func)
    inputs = {p: a for p, a in _annotations(signature).items() if isinstance(a, InputPath)}
    outputs = {p: a for p, a in _annotations(signature).items() if isinstance(a, OutputPath)}
    return StepDefinition(func, label, version, names, signature, inputs, outputs)


def _signature(func: Callable) -> inspect.Signature:
    """The signature with annotations evaluated (``from __future__ import annotations`` makes
    ``x: InputPath()`` a string); an annotation that does not evaluate stays a string."""
    try:
        return inspect.signature(func, eval_str=True)
    except Exception:  # a forward reference somewhere: evaluate the annotations one by one
        signature = inspect.signature(func)
        scope = getattr(inspect.unwrap(func), "__globals__", {})
        params = []
        for param in signature.parameters.values():
            if isinstance(param.annotation, str):
                try:
                    param = param.replace(annotation=eval(param.annotation, scope))  # noqa: S307
                except Exception:
                    pass
            params.append(param)
        return signature.replace(parameters=params)


def _annotations(signature: inspect.Signature) -> dict[str, Any]:
    found = {}
    for name, param in signature.parameters.items():
        ann = param.annotation
        if isinstance(ann, type) and issubclass(ann, (InputPath, OutputPath)):
            ann = ann()  # written without parentheses: `x: InputPath`
        found[name] = ann
    return found


def get_step(result: StepResult) -> StepCall:
    """The step call behind a result (SageMaker's ``get_step``), e.g. to ``add_depends_on``.

    Raises
    ------
    StepUsageError
        when ``result`` is not a StepResult.
    """
    if not isinstance(result, StepResult):
        raise StepUsageError(f"get_step needs a step result, got {result!r}")
    return result.call


def ingredient(name: str) -> StepResult:
    """A StepResult for an ingredient that a reactor sends, usable as a step argument.

    Raises
    ------
    StepUsageError
        for a name that is not a non-empty str.
    """
    if not isinstance(name, str) or not name:
        raise StepUsageError(f"ingredient() needs an ingredient name, got {name!r}")
    return StepResult(current_graph().reference(name))


@dataclass(eq=False)
class PipelineDefinition:
    """What ``@pipeline`` makes of a controller function."""
    func: Callable
    name: str


def pipeline(func: Callable | None = None, *, name: str | None = None) -> Callable:
    """Make ``func`` a pipeline controller (ClearML's ``PipelineDecorator.pipeline``): plain
    Python around step calls, run by ``plant.run(controller, *args)`` or by calling it inside
    ``with Plant(...)``. ``.result()`` inside it computes a branch now, so Python can branch on
    it; what it returns (results, in any structure) is computed and returned as values, and so
    is every step called in it that nothing else used.

    Raises
    ------
    StepUsageError
        when called outside ``with Plant(...)``.
    """
    if func is None:
        return functools.partial(pipeline, name=name)
    definition = PipelineDefinition(func, name or func.__qualname__)

    @functools.wraps(func)
    def controller(*args: Any, **kwargs: Any) -> Any:
        return active_plant(definition.name).run(controller, *args, **kwargs)

    controller.pyplant_pipeline = definition  # type: ignore[attr-defined]
    return controller
