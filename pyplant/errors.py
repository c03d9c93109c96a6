"""The exceptions pyplant raises.

Every message names the reactor and the ingredient involved, and the exception keeps what it
is about as attributes, so that tools can act on them without parsing messages:

==============  ==============================================================================
``reactor``     name of the reactor involved (str), or None
``ingredient``  name of the ingredient involved (str), or None
``version``     the stored version involved (``pyplant.warehouse.records.Version``), or None
``path``        the file or directory involved (str, absolute or relative to the plant
                directory as the message says), or None
==============  ==============================================================================

Each class has a distinct ``exit_code`` (a class attribute, a small int), the status the
command line exits with when the error ends it. 0 is success, 1 an exception raised inside a
reactor (its own type, not wrapped), 2 a usage error of the command line itself::

    exit  class                                              raised when
    ----  -------------------------------------------------  ----------------------------------------
      3   PyPlantError(Exception)                            (base; not raised itself)
      4   +-- IngredientNotFoundError(PyPlantError, LookupError)   nobody produces a received name
      5   +-- DependencyCycleError(PyPlantError, RuntimeError)      a -> b -> a
      6   +-- DuplicateProducerError(PyPlantError, RuntimeError)    two reactors send one name
      7   +-- SerializationError(PyPlantError, TypeError)           neither pickle nor dill can store it
      8   +-- TokenizationError(PyPlantError, TypeError)            a value has no stable token
      9   +-- ConfigError(PyPlantError, AttributeError)             a missing or untokenizable parameter
     10   |    +-- ConfigWriteError(ConfigError)                     a reactor wrote to the config
     11   +-- ReactorDefinitionError(PyPlantError, TypeError)       not a usable reactor function
     12   +-- UnknownReactorError(PyPlantError, ValueError)         run_reactor names an unknown reactor
     13   +-- ReactorProtocolError(PyPlantError, TypeError)         yielded something other than a receive
     14   +-- AllocationError(PyPlantError, ValueError)             bad shape, dtype or type to allocate
     15   |    +-- IngredientTypeError(AllocationError, TypeError)   a type that is no ingredient type
     16   +-- IngredientNameError(PyPlantError, ValueError)         a name that cannot be stored
     17   |    +-- IngredientNameTypeError(IngredientNameError, TypeError)   a name that is not a str
     18   +-- PlantClosedError(PyPlantError, RuntimeError)          the plant was shut down
     19   +-- ReentrantRunError(PyPlantError, RuntimeError)         run_reactor from inside a run
     20   +-- PlantDirError(PyPlantError, OSError)                  plant directory unusable or missing
     21   +-- WarehouseError(PyPlantError, OSError)                 storing or loading a version failed
     22   |    +-- CorruptVersionError(WarehouseError)              a version is missing or damaged
     23   +-- SpecError(PyPlantError, RuntimeError)                 a spec's own code raised (a bug)
     24   |    +-- InvalidOperationException(SpecError)             a spec cannot allocate/deallocate
     25   +-- StepUsageError(PyPlantError, TypeError)               a step or lazy result misused
     26   +-- StepCommandError(PyPlantError, RuntimeError)          a program run as a step failed
     27   +-- ComponentError(PyPlantError, ValueError)              a component file cannot be used
     28   +-- NotExplainedError(UnknownReactorError, KeyError)      explain() names no task of the last run

An exception raised *inside* a reactor is not wrapped: it propagates out of
``Plant.run_reactor`` with its original type, with a note naming the reactor.

Only real damage is a ``CorruptVersionError`` (a missing, truncated or altered file, bytes that
do not decode): the plant recomputes the version. An exception raised by an ingredient type
spec's own code is a ``SpecError`` naming the spec and the ingredient, with the original
exception as ``__cause__``: it stops the run, as a bug should.
"""
from __future__ import annotations

from typing import Any, ClassVar, Sequence


class PyPlantError(Exception):
    """Base of every error pyplant raises itself.

    Parameters
    ----------
    msg : str
        The message; it names the reactor and the ingredient when there are any.
    reactor, ingredient : str, optional
        Names of the reactor and the ingredient involved.
    version : Version, optional
        The stored version involved (``pyplant.warehouse.records.Version``).
    path : str, optional
        The file or directory involved.
    """

    exit_code: ClassVar[int] = 3

    def __init__(self, msg: str, *, reactor: str | None = None, ingredient: str | None = None,
                 version: Any = None, path: str | None = None):
        super().__init__(msg)
        self.reactor = reactor
        self.ingredient = ingredient
        self.version = version
        self.path = path


class IngredientNotFoundError(PyPlantError, LookupError):
    """A reactor received an ingredient that no reactor produces.

    ``tried`` lists the reactors that were started or verified while looking for a producer.
    """

    exit_code = 4

    def __init__(self, msg: str, *, reactor: str | None, ingredient: str, tried: Sequence[str] = (),
                 **kwargs: Any):
        super().__init__(msg, reactor=reactor, ingredient=ingredient, **kwargs)
        self.tried = list(tried)


class DependencyCycleError(PyPlantError, RuntimeError):
    """Reactors wait on each other's ingredients; ``cycle`` is the list of reactor names."""

    exit_code = 5

    def __init__(self, msg: str, *, cycle: Sequence[str], ingredient: str | None = None, **kwargs: Any):
        super().__init__(msg, reactor=cycle[0] if cycle else None, ingredient=ingredient, **kwargs)
        self.cycle = list(cycle)


class DuplicateProducerError(PyPlantError, RuntimeError):
    """Two reactors sent the same ingredient name in one session."""

    exit_code = 6


class SerializationError(PyPlantError, TypeError):
    """A sent value can be stored neither with pickle nor with dill."""

    exit_code = 7


class TokenizationError(PyPlantError, TypeError):
    """A value has no stable representation to compare across runs (it cannot be pickled and
    its repr holds a memory address, or it is nested too deeply)."""

    exit_code = 8


class ConfigError(PyPlantError, AttributeError):
    """A config parameter does not exist, or its value cannot be compared across runs."""

    exit_code = 9


class ConfigWriteError(ConfigError):
    """A reactor assigned to its config; configs are read-only inside reactors."""

    exit_code = 10


class ReactorDefinitionError(PyPlantError, TypeError):
    """A function cannot be used as a reactor (wrong signature, not registered, ...)."""

    exit_code = 11


class UnknownReactorError(PyPlantError, ValueError):
    """``run_reactor`` named a reactor that was not added to the plant."""

    exit_code = 12


class ReactorProtocolError(PyPlantError, TypeError):
    """A reactor yielded something other than ``pipe.receive(name)`` or a bare ``yield``."""

    exit_code = 13


class AllocationError(PyPlantError, ValueError):
    """``pipe.allocate`` got an unknown type or a bad shape or dtype."""

    exit_code = 14


class IngredientTypeError(AllocationError, TypeError):
    """A type argument that names no ingredient type: neither an ``Ingredient.Type``, nor a
    registered spec (class, instance or name)."""

    exit_code = 15


class IngredientNameError(PyPlantError, ValueError):
    """An ingredient name that cannot be stored: empty, with a NUL character, not encodable
    as UTF-8, or longer than 511 bytes in UTF-8 (LMDB's key size). Raised by ``send``,
    ``allocate``, ``allocate_temp`` and ``receive`` before anything is stored."""

    exit_code = 16


class IngredientNameTypeError(IngredientNameError, TypeError):
    """An ingredient name that is not a ``str``."""

    exit_code = 17


class PlantClosedError(PyPlantError, RuntimeError):
    """A method of a ``Plant`` (or of its warehouse) was called after ``shutdown()`` (or the
    end of its ``with`` block)."""

    exit_code = 18


class ReentrantRunError(PyPlantError, RuntimeError):
    """A reactor called ``run_reactor`` (or another method that runs reactors) on the plant
    that is running it."""

    exit_code = 19


class PlantDirError(PyPlantError, OSError):
    """The plant directory cannot be created, written or opened, is not a directory, or (for
    a read-only open) does not exist. ``path`` is the directory."""

    exit_code = 20


class WarehouseError(PyPlantError, OSError):
    """A version could not be stored or loaded, or the metadata could not be read or written
    (disk full, read-only mount, a location leading out of the plant directory)."""

    exit_code = 21


class CorruptVersionError(WarehouseError):
    """A stored version is damaged: its file is missing, truncated or altered, its bytes do not
    decode, or its location is not one the warehouse makes. The plant recomputes it.
    ``version`` is the damaged version."""

    exit_code = 22


class SpecError(PyPlantError, RuntimeError):
    """An ingredient type spec's own code raised while storing, loading, hashing, allocating or
    recognizing a value: a bug in the spec, not damage on disk. ``spec`` is the spec's name;
    the original exception is the ``__cause__``."""

    exit_code = 23

    def __init__(self, msg: str, *, spec: str | None = None, **kwargs: Any):
        super().__init__(msg, **kwargs)
        self.spec = spec


class InvalidOperationException(SpecError):
    """A spec was asked to allocate or deallocate but does not support it (PyPlant's name;
    also importable as ``pyplant.specs.InvalidOperationException``)."""

    exit_code = 24


class StepUsageError(PyPlantError, TypeError):
    """A step, a step result or a pipeline used in a way that cannot work: a lazy result used
    as a value (``bool``, ``len``, arithmetic: call ``.result()`` or pass it to a step),
    arguments that do not fit the step, a result computed with no plant. ``step`` names it."""

    def __init__(self, msg: str, *, step: str | None = None, **kwargs: Any):
        kwargs.setdefault("reactor", step)
        super().__init__(msg, **kwargs)
        self.step = self.reactor

    exit_code = 25


class StepCommandError(PyPlantError, RuntimeError):
    """A program run as a step (``command_step``, ``load_component``) exited with an error;
    ``returncode`` and ``stderr`` (its last lines) say how."""

    def __init__(self, msg: str, *, step: str | None = None, returncode: int | None = None,
                 stderr: str = "", **kwargs: Any):
        kwargs.setdefault("reactor", step)
        super().__init__(msg, **kwargs)
        self.step = self.reactor
        self.returncode = returncode
        self.stderr = stderr

    exit_code = 26


class ComponentError(PyPlantError, ValueError):
    """A component file (``load_component``) that cannot be read: not YAML, no command, an
    input or output it uses but does not declare, a required input not given."""

    exit_code = 27


class NotExplainedError(UnknownReactorError, KeyError):
    """``explain(name)`` named no reactor or step of the last run (with the closest name that
    was); also a ``KeyError``, as a lookup of the returned mapping would raise."""

    exit_code = 28

    def __str__(self) -> str:  # KeyError's own would quote the message
        return str(self.args[0]) if self.args else ""
