"""Computing step results on a plant: ``Plant.run`` hands targets here with two callables.

``run_tasks(tasks, targets)`` brings the target tasks up to date through the plant's scheduler
(the same verification, traces and warehouse as reactors); ``fetch(ingredient)`` reads a value
the run made or verified. This module never imports the plant (it sits below it).
"""
from __future__ import annotations

from typing import Any, Callable

from ..engine import Task
from ..errors import StepUsageError
from .graph import StepCall, end_graph, new_graph
from .results import StepResult, results_in, select, substitute
from .tasks import step_task


def upstream_calls(results: list[StepResult]) -> list[StepCall]:
    """Every call the results need (received or waited for), producers before consumers."""
    order: list[StepCall] = []
    seen: set[int] = set()
    stack: list[tuple[StepCall, bool]] = [(r.call, False) for r in reversed(results)]
    while stack:
        call, expanded = stack.pop()
        if expanded:
            order.append(call)
            continue
        if id(call) in seen:
            continue
        seen.add(id(call))
        stack.append((call, True))
        stack.extend((up, False) for up in reversed(call.upstream()) if id(up) not in seen)
    return order


def compute(targets: Any, extra: list[StepCall], run_tasks: Callable[[list[Task], list[str]], None],
            fetch: Callable[[str], Any]) -> Any:
    """``targets`` (a StepResult, or any structure holding some) with each result replaced by
    its value, after bringing them and the calls ``extra`` up to date.

    Raises
    ------
    StepUsageError
        for a target that is a reactor's ingredient (``ingredient('x')``), not a step output.
    """
    results = results_in(targets)
    for result in results:
        if result.call.definition is None:  # ingredient('x'): nothing here knows its producer
            raise StepUsageError(f"ingredient('{result.ingredient}') stands for a reactor's "
                                 f"ingredient as a step argument and cannot be computed alone; "
                                 f"pass it to a step, or use run_reactor and fetch_ingredient",
                                 ingredient=result.ingredient)
    calls = upstream_calls(results + [StepResult(c) for c in extra])
    tasks = [step_task(c) for c in calls if c.definition is not None]
    wanted = {id(r.call) for r in results} | {id(c) for c in extra}
    wanted.update(id(dep) for call in calls for dep in call.depends_on)  # settled before their dependents
    names = [c.name for c in calls if c.definition is not None and id(c) in wanted]
    run_tasks(tasks, names)
    return substitute(targets, lambda r: select(r, fetch(r.ingredient)))


def run_pipeline(controller: Callable, args: tuple, kwargs: dict,
                 compute_on_plant: Callable[[Any, list[StepCall]], Any]) -> Any:
    """Run a ``@pipeline`` controller: its step calls form a graph of their own; what it
    returns is computed, and so is every call in it whose result nothing used (a leaf)."""
    definition = controller.pyplant_pipeline  # type: ignore[attr-defined]
    graph, token = new_graph()
    try:
        returned = definition.func(*args, **kwargs)
    finally:
        end_graph(token)
    calls = graph.made
    used = {id(up) for call in calls for up in call.upstream()}
    used.update(id(r.call) for r in results_in(returned))
    leaves = [c for c in calls if id(c) not in used and c.definition is not None]
    return compute_on_plant(returned, leaves)


def is_pipeline(obj: Any) -> bool:
    return callable(obj) and hasattr(obj, "pyplant_pipeline")
