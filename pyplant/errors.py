"""The exceptions pyplant raises.

Every message names the reactor and the ingredient involved, and the exception keeps them as
attributes (``reactor``, ``ingredient``) so that tools can act on them::

    PyPlantError(Exception)
     +-- IngredientNotFoundError(PyPlantError, LookupError)   nobody produces a received name
     +-- DependencyCycleError(PyPlantError, RuntimeError)      a -> b -> a
     +-- DuplicateProducerError(PyPlantError, RuntimeError)    two reactors send one name
     +-- SerializationError(PyPlantError, TypeError)           neither pickle nor dill can store it
     +-- TokenizationError(PyPlantError, TypeError)            a value has no stable token
     +-- ConfigError(PyPlantError, AttributeError)             a missing or untokenizable parameter
     |    +-- ConfigWriteError(ConfigError)                     a reactor wrote to the config
     +-- ReactorDefinitionError(PyPlantError, TypeError)       not a usable reactor function
     +-- UnknownReactorError(PyPlantError, ValueError)         run_reactor names an unknown reactor
     +-- ReactorProtocolError(PyPlantError, TypeError)         yielded something other than a receive
     +-- AllocationError(PyPlantError, ValueError)             bad shape, dtype or type to allocate
     +-- IngredientNameError(PyPlantError, ValueError)         a name that cannot be stored
     |    +-- IngredientNameTypeError(IngredientNameError, TypeError)   a name that is not a str
     +-- PlantClosedError(PyPlantError, RuntimeError)          the plant was shut down
     +-- ReentrantRunError(PyPlantError, RuntimeError)         run_reactor from inside a run
     +-- PlantDirError(PyPlantError, OSError)                  plant directory unusable
     +-- WarehouseError(PyPlantError, OSError)                 storing or loading a version failed
          +-- CorruptVersionError(WarehouseError)              a version is missing or damaged

An exception raised *inside* a reactor is not wrapped: it propagates out of
``Plant.run_reactor`` with its original type, with a note naming the reactor.
"""
from __future__ import annotations

from typing import Sequence


class PyPlantError(Exception):
    """Base of every error pyplant raises itself."""

    def __init__(self, msg: str, *, reactor: str | None = None, ingredient: str | None = None):
        super().__init__(msg)
        self.reactor = reactor
        self.ingredient = ingredient


class IngredientNotFoundError(PyPlantError, LookupError):
    """A reactor received an ingredient that no reactor produces.

    ``tried`` lists the reactors that were started or verified while looking for a producer.
    """

    def __init__(self, msg: str, *, reactor: str | None, ingredient: str, tried: Sequence[str] = ()):
        super().__init__(msg, reactor=reactor, ingredient=ingredient)
        self.tried = list(tried)


class DependencyCycleError(PyPlantError, RuntimeError):
    """Reactors wait on each other's ingredients; ``cycle`` is the list of reactor names."""

    def __init__(self, msg: str, *, cycle: Sequence[str], ingredient: str | None = None):
        super().__init__(msg, reactor=cycle[0] if cycle else None, ingredient=ingredient)
        self.cycle = list(cycle)


class DuplicateProducerError(PyPlantError, RuntimeError):
    """Two reactors sent the same ingredient name in one session."""


class SerializationError(PyPlantError, TypeError):
    """A sent value can be stored neither with pickle nor with dill."""


class TokenizationError(PyPlantError, TypeError):
    """A value has no stable representation to compare across runs (it cannot be pickled and
    its repr holds a memory address, or it is nested too deeply)."""


class ConfigError(PyPlantError, AttributeError):
    """A config parameter does not exist, or its value cannot be compared across runs."""


class ConfigWriteError(ConfigError):
    """A reactor assigned to its config; configs are read-only inside reactors."""


class ReactorDefinitionError(PyPlantError, TypeError):
    """A function cannot be used as a reactor (wrong signature, not registered, ...)."""


class ReactorProtocolError(PyPlantError, TypeError):
    """A reactor yielded something other than ``pipe.receive(name)`` or a bare ``yield``."""


class AllocationError(PyPlantError, ValueError):
    """``pipe.allocate`` got an unknown type or a bad shape or dtype."""


class PlantDirError(PyPlantError, OSError):
    """The plant directory cannot be created, written, or is not a directory."""


class WarehouseError(PyPlantError, OSError):
    """A version could not be stored or loaded (disk full, missing or corrupted file)."""


class CorruptVersionError(WarehouseError):
    """A stored version failed to load or to verify; the plant recomputes it."""


class UnknownReactorError(PyPlantError, ValueError):
    """``run_reactor`` named a reactor that was not added to the plant."""


class IngredientNameError(PyPlantError, ValueError):
    """An ingredient name that cannot be stored: empty, with a NUL character, not encodable
    as UTF-8, or longer than 511 bytes in UTF-8 (LMDB's key size). Raised by ``send``,
    ``allocate``, ``allocate_temp`` and ``receive`` before anything is stored."""


class IngredientNameTypeError(IngredientNameError, TypeError):
    """An ingredient name that is not a ``str``."""


class PlantClosedError(PyPlantError, RuntimeError):
    """A method of a ``Plant`` was called after ``shutdown()`` (or the end of its ``with``)."""


class ReentrantRunError(PyPlantError, RuntimeError):
    """A reactor called ``run_reactor`` (or another method that runs reactors) on the plant
    that is running it."""
