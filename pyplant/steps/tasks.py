"""Step calls as engine tasks: what makes a step cached, verified and re-run like a reactor.

A call becomes one ``engine.Task``:

=============  ===============================================================================
name           the call's instance name (``scale``, ``scale_1``): history, events, explain
key            ``step:`` + the step's name: every call of ``scale`` shares one history of
               traces, found by code, argument tokens and input contents (not by instance
               name), so calls reordered or renamed re-run nothing
params         the literal arguments, each a parameter with a stable token (arrays by
               content, callables by code); a result inside a list or dict stands as
               ``<input slot>`` in its argument's token (a literal str spelled like that is
               escaped: ``results.escape_mark``)
inputs         {slot: ingredient}: each step result among the arguments, slot named by where
               it sits (``X``, ``parts[1]``); its content hash is checked, so early cutoff holds
outputs        {slot: ingredient}: ``return`` (or each ``returns=`` name) and each OutputPath
code           the code map of the function (same walk as a reactor's); ``version=`` pins it
=============  ===============================================================================

The body receives the inputs, waits for ``add_depends_on`` calls without recording them,
calls the function and sends what it returns.
"""
from __future__ import annotations

import inspect
import os
from typing import Any, Callable, Generator

from .. import hashing
from ..engine import Task
from ..errors import StepUsageError
from ..ingredient import Ingredient
from ..pipework import ReceiveRequest
from .commands import CommandDefinition, code_map, command_body
from .graph import StepCall
from .paths import output_name
from .results import RETURN_SLOT, StepResult, escape_mark, results_in, select, substitute

KEY_PREFIX = "step:"


class StepParams:
    """The literal arguments of one call, as a task's parameters (``engine.tasks.Params``)."""

    def __init__(self, values: dict[str, Any]):
        self.values = values

    def has(self, name: str) -> bool:
        return name in self.values

    def peek(self, name: str) -> Any:
        return self.values[name]

    def is_auxiliary(self, name: str) -> bool:
        return False


def step_task(call: StepCall) -> Task:
    """The engine task of one step call (see the module docstring)."""
    definition = call.definition
    inputs: dict[str, str] = {}

    def place(param: str, value: Any) -> Any:
        found: list[StepResult] = []

        def mark(result: StepResult) -> str:
            found.append(result)
            slot = param if isinstance(value, StepResult) else f"{param}[{len(found) - 1}]"
            inputs[slot] = result.ingredient
            return f"<input {slot}{''.join(f'[{k!r}]' for k in result.selector)}>"
        return substitute(value, mark, escape_mark)

    if isinstance(definition, CommandDefinition):  # its code is its command line
        for value in call.arguments.values():
            place("command", value)
        return Task(call.name, KEY_PREFIX + definition.name, definition.func,
                    start=lambda run: command_body(run, call), params=StepParams({}), inputs=inputs,
                    outputs=dict(call.outputs), code=lambda: code_map(definition), kind="step")
    # a result passed whole is an input, not a parameter; one indexed (r[0]) or inside a list
    # or dict stands as '<input slot[key]>' in its parameter's token
    params = StepParams({})
    for param, value in call.arguments.items():
        marked = place(param, value)
        if not (isinstance(value, StepResult) and not value.selector):
            params.values[param] = marked
    version = definition.version
    code = None if version is None else (lambda: {"reactor": hashing.digest("version", str(version))})
    return Task(call.name, KEY_PREFIX + definition.name, definition.func,
                start=lambda run: _body(run, call, params),
                params=params, inputs=inputs, outputs=dict(call.outputs), code=code,
                kind="step")


def _body(run: Any, call: StepCall, params: StepParams) -> Generator:
    """Receive, call, send: the generator the engine steps for a step call."""
    definition, pipe = call.definition, run.pipe
    for other in call.depends_on:  # ordering without data: not part of the cache key
        yield ReceiveRequest(next(iter(other.outputs.values())), record=False)
    received: dict[str, Any] = {}
    for result in _results(call):
        if result.ingredient not in received:
            received[result.ingredient] = yield pipe.receive(result.ingredient)
    for name, value in params.values.items():
        run(name, value)  # each argument is a parameter the trace records
    arguments = {p: substitute(v, lambda r: select(r, received[r.ingredient], call.name))
                 for p, v in call.arguments.items()}
    for param in definition.input_paths:
        _check_input_path(call, param, arguments.get(param), pipe)
    for param in definition.output_paths:
        arguments[param] = pipe.allocate(call.outputs[output_name(param)], Ingredient.Type.file)
    bound = inspect.BoundArguments(definition.signature, arguments)  # type: ignore[arg-type]
    value = definition.func(*bound.args, **bound.kwargs)
    for param in definition.output_paths:
        if not os.path.exists(arguments[param]):
            raise StepUsageError(f"step '{call.name}' did not write its output file "
                                 f"'{output_name(param)}' (parameter '{param}')", step=call.name,
                                 ingredient=call.outputs[output_name(param)])
    for slot, item in _outputs(call, value).items():
        pipe.send(call.outputs[slot], item)


def _results(call: StepCall) -> list[StepResult]:
    return results_in(list(call.arguments.values()))


def _check_input_path(call: StepCall, param: str, value: Any, pipe: Any) -> None:
    """An InputPath argument must be a path to an existing file; its content is tracked."""
    if not isinstance(value, (str, os.PathLike)) or not os.path.isfile(value):
        raise StepUsageError(f"step '{call.name}': parameter '{param}' is an InputPath and needs "
                             f"the path of an existing file (a file output of another step, or a "
                             f"path), got {value!r}", step=call.name)
    pipe.track_file(value)


def _outputs(call: StepCall, value: Any) -> dict[str, Any]:
    """{slot: value} of what the function returned, split by ``returns=``.

    Raises
    ------
    StepUsageError
        when a step with ``returns=`` returns something that does not split into those names.
    """
    names = call.definition.returns
    if not names:
        return {RETURN_SLOT: value}
    if isinstance(value, dict) and set(value) == set(names):
        return {n: value[n] for n in names}
    if isinstance(value, (tuple, list)) and len(value) == len(names):
        return dict(zip(names, value))
    shown = f"a dict with keys {sorted(map(str, value))}" if isinstance(value, dict) \
        else f"{type(value).__name__} of length {len(value)}" if isinstance(value, (tuple, list)) \
        else type(value).__name__
    raise StepUsageError(f"step '{call.name}' declares returns={names!r} but returned {shown}; "
                         f"return a tuple of {len(names)} values or a dict with those keys",
                         step=call.name)


def check_names(tasks: list[Task], reactors: Callable[[], list[str]]) -> None:
    """Step instance names must not be reactor names (both name tasks in one plant).

    Raises
    ------
    StepUsageError
        naming the step and the reactor.
    """
    taken = set(reactors())
    for task in tasks:
        if task.name in taken:
            raise StepUsageError(f"step '{task.name}' has the name of a reactor of this plant; give "
                                 f"the step another name (@step(name=...))", step=task.name)
