"""The plant that step results are computed on: the one of the enclosing ``with Plant(...)``
block, or the one running a pipeline controller (``running.active_plant``)."""
from __future__ import annotations

from typing import Any

from ..errors import StepUsageError
from ..running import active_plant as _active_plant


def active_plant(who: Any) -> Any:
    """The active plant, for computing ``who`` (a StepResult or a pipeline name).

    Raises
    ------
    StepUsageError
        when no plant is active.
    """
    plant = _active_plant.get()
    if plant is None:
        raise StepUsageError(f"{who!r} needs a plant to run on: call it inside `with Plant(dir):` "
                             f"or pass it to plant.run(...)")
    return plant
