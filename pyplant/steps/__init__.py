"""Pipelines from plain functions: ``@step``, lazy results, ``@pipeline`` controllers, and
programs as steps (``command_step``, ``load_component``).

=============  ==============================================================================
decorators.py  ``step``, ``pipeline``, ``get_step``, ``ingredient``
results.py     ``StepResult``: a lazy output; what it refuses to be used as
graph.py       step definitions, calls, instance names (``scale``, ``scale_1``)
paths.py       ``InputPath``, ``OutputPath``: files passed by path (Kubeflow)
tasks.py       a step call as an engine task: its key, parameters, inputs, outputs, body
runner.py      ``Plant.run``'s work: the calls a result needs, pipelines, values back
commands.py    ``command_step`` and ``load_component``: programs as steps
=============  ==============================================================================

Steps sit above the engine and below the plant: a step call is an ``engine.Task`` like a
reactor, so it shares the scheduler, the traces, the warehouse, history, ``explain()``,
``force()`` and GC.
"""
from .commands import command_step, load_component
from .decorators import get_step, ingredient, pipeline, step
from .paths import InputPath, OutputPath
from .results import StepResult

__all__ = ["step", "pipeline", "get_step", "ingredient", "InputPath", "OutputPath", "StepResult",
           "command_step", "load_component"]
