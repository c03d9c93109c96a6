"""``Ingredient``: a named value sent by exactly one reactor, and its storage types."""
from __future__ import annotations

import enum
from typing import Any


class Ingredient:
    """A named value; ``Ingredient.Type`` chooses how it is stored.

    ==========  ==================================================================
    simple      int, float, complex, str, bool, bytes, None (pickled, inline)
    list        a Python list (pickled)
    object      anything pickle (protocol 5) or, failing that, dill can store
    array       a NumPy array, stored as .npy; received read-only, memory-mapped
                above 1 MiB
    file        a file in the plant directory, passed as its path; allocate it
    ==========  ==================================================================

    Spec classes such as ``specs.HdfArraySpec`` are types too, and so are registered codecs
    (``warehouse.codecs``). Exact Python types survive restarts (a tuple stays a tuple, an
    ``np.float32`` stays one).

    Parameters
    ----------
    name : str
        The ingredient's name.
    type : Ingredient.Type or str
        How it is stored (``unknown``: inferred).
    producer : str, optional
        The reactor that sends it.
    """

    class Type(enum.Enum):
        unknown = "unknown"
        simple = "simple"
        list = "list"
        object = "object"
        array = "array"
        file = "file"

    def __init__(self, name: str, type: "Ingredient.Type | str" = "unknown", producer: str | None = None):
        self.name = name
        self.type = type
        self.producerName = producer

    def __repr__(self) -> str:
        return f"Ingredient({self.name!r}, type={self.type!r}, producer={self.producerName!r})"


BUILTIN_TYPES = frozenset(t.value for t in Ingredient.Type if t is not Ingredient.Type.unknown)
SIMPLE_TYPES = (int, float, complex, str, bool, bytes, type(None))


def type_key(type_: Any) -> str | None:
    """Normalize a type argument to a type key.

    Parameters
    ----------
    type_ : Ingredient.Type, str, spec class or instance, codec, or None
        What a reactor passed to ``send``/``allocate``.

    Returns
    -------
    str or None
        The key (``'array'``, a spec's ``get_name()``, a codec's ``key``); None for no type
        (``None`` or ``Ingredient.Type.unknown``: the type is inferred).

    Raises
    ------
    TypeError
        for anything else; the pipe turns it into an ``AllocationError`` naming the reactor
        and the ingredient (this module sits below ``pyplant.errors`` in the layers).
    """
    if type_ is None or type_ is Ingredient.Type.unknown:
        return None
    if isinstance(type_, Ingredient.Type):
        return type_.value
    if isinstance(type_, str):
        return type_
    get_name = getattr(type_, "get_name", None)
    if callable(get_name):
        return get_name()
    key = getattr(type_, "key", None)
    if isinstance(key, str) and key:  # a codec (class or instance)
        return key
    raise TypeError(f"unknown ingredient type {type_!r}; use Ingredient.Type, a spec or a codec")
