"""Reading one ingredient outside a run (``Plant.fetch_ingredient``): no scheduler needed."""
from __future__ import annotations

from typing import Any

from .. import static
from ..errors import IngredientNotFoundError
from ..warehouse import Warehouse
from .session import PlantSession, resident_bytes
from .state import version_key


def fetch(warehouse: Warehouse, session: PlantSession, name: str) -> Any:
    """The version of ``name`` the plant's last run used or made, else the latest one stored
    (another process may have stored a newer one under another config); loaded once per plant.

    Raises
    ------
    IngredientNotFoundError
        when no trace in the plant directory sent ``name``.
    CorruptVersionError
        when the stored version is missing or damaged.
    """
    version = session.last_run.get(name)
    if version is None:
        producer = warehouse.metadata.producer(name)
        version = warehouse.metadata.latest_version(producer, name) if producer else None
        if version is None:
            known = warehouse.metadata.ingredient_names() if producer is None else ()
            raise IngredientNotFoundError(f"ingredient '{name}' is not in the warehouse"
                                          f"{static.did_you_mean(name, known)}",
                                          reactor=producer, ingredient=name)
    key = version_key(version)
    if key in session.values:
        return session.values[key]
    return session.values.put(key, warehouse.load(version), resident_bytes(version))
