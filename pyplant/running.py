"""The reactor run whose code is executing now, and the plant in use, per thread and task.

The scheduler sets it around every step of a reactor's generator; a subreactor call and the
input tracker (``tracking.py``) read it to learn which reactor they act for. A
``contextvars.ContextVar`` keeps two threads, or two plants, from seeing each other's run.
"""
from __future__ import annotations

import contextvars
from typing import Any

# The ReactorRun being stepped in this context, or None outside any reactor.
active_run: contextvars.ContextVar[Any] = contextvars.ContextVar("pyplant_active_run", default=None)

# The Plant of the enclosing ``with Plant(...)`` block or pipeline run: step results computed
# with ``.result()`` and pipelines called directly run on it.
active_plant: contextvars.ContextVar[Any] = contextvars.ContextVar("pyplant_active_plant", default=None)
