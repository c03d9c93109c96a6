"""The engine: runs tasks (reactors, step calls) against traces and the warehouse.

=============  ==============================================================================
tasks.py       ``Task``: what the engine runs, whatever wrote it
state.py       ``SessionState``: everything one scheduling session knows, field by field
session.py     ``PlantSession`` (a plant's memory between runs), ``EngineContext`` (what the
               engine uses of its plant), ``ExecutionRecord``
verify.py      trace verification as pure functions
driver.py      one task's run, stepped one yield at a time
producers.py   static checks before any work, finding producers
scheduler.py   the loop
fetch.py       reading one ingredient outside a run
=============  ==============================================================================

The engine imports the layers below it (warehouse, code analysis, reactor definitions), never
the plant: ``Plant`` builds an ``EngineContext`` and hands it tasks.
"""
from .fetch import fetch
from .scheduler import Scheduler
from .session import EngineContext, ExecutionRecord, PlantSession
from .tasks import Task, reactor_task

__all__ = ["Scheduler", "Task", "reactor_task", "EngineContext", "PlantSession", "ExecutionRecord", "fetch"]
