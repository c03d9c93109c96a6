"""Pipework: what a running reactor uses to receive, send and allocate ingredients.

One pipework belongs to one execution of one reactor (a ``ReactorRun``). It only translates
calls into requests to the scheduler and the warehouse; the bookkeeping lives in the run.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from .errors import AllocationError, IngredientNameError, IngredientNameTypeError
from .ingredient import type_key



class Run(Protocol):
    """What a pipework needs of the run it serves (the engine's ``ReactorRun`` is one); a
    protocol, so that this layer does not import the engine above it."""
    name: str
    config: Any

    def on_receive(self, request: "ReceiveRequest") -> None: ...
    def send(self, name: str, value: Any, key: str | None) -> None: ...
    def allocate(self, name: str, key: str | None, temp: bool, **kwargs: Any) -> Any: ...
    def track_file(self, path: Any) -> None: ...
    def read_config(self, param: str, register: bool) -> Any: ...


# LMDB's maximum key size: an ingredient name is a key of the metadata.
MAX_NAME_BYTES = 511


def check_name(name: Any, reactor: str | None) -> str:
    """``name`` when it can be stored as an ingredient name.

    Raises
    ------
    IngredientNameTypeError
        (also a ``TypeError``) when ``name`` is not a ``str``.
    IngredientNameError
        (also a ``ValueError``) when it is empty, contains a NUL character, cannot be encoded
        as UTF-8, or is longer than 511 bytes in UTF-8.
    """
    who = f"reactor '{reactor}'" if reactor else "fetch_ingredient"
    if not isinstance(name, str):
        raise IngredientNameTypeError(f"{who}: ingredient names are str, got {type(name).__name__} "
                                      f"{name!r}", reactor=reactor, ingredient=repr(name))
    problem = None
    if not name:
        problem = "is empty"
    elif "\0" in name:
        problem = "contains a NUL character"
    else:
        try:
            size = len(name.encode("utf-8"))
        except UnicodeEncodeError:
            problem = "cannot be encoded as UTF-8"
        else:
            if size > MAX_NAME_BYTES:
                problem = f"is {size} bytes long in UTF-8; at most {MAX_NAME_BYTES} can be stored"
    if problem:
        shown = name if len(name) <= 80 else name[:77] + "..."
        raise IngredientNameError(f"{who}: ingredient name {shown!r} {problem}", reactor=reactor,
                                  ingredient=name)
    return name


@dataclass(frozen=True, eq=False)
class ReceiveRequest:
    """What ``pipe.receive(name)`` returns; the reactor yields it and gets the value back.

    ``record=False`` (used by steps for ``add_depends_on``) waits for the ingredient without
    making its content part of the trace.
    """
    name: str
    record: bool = True


class Pipework:
    """Sends and receives ingredients on behalf of one reactor run.

    Use ``x = yield pipe.receive('x')`` (the ``yield`` lets the plant pause the reactor while
    the producer of ``x`` runs) and ``pipe.send('y', value)``.
    """

    def __init__(self, run: Run):
        self._run = run

    @property
    def config(self) -> Any:
        """The config bound to this reactor: reading a parameter records a dependency."""
        return self._run.config

    def receive(self, name: str) -> ReceiveRequest:
        """Request ingredient ``name``; must be yielded: ``x = yield pipe.receive('x')``.

        Raises ``IngredientNameError`` for a name that cannot be stored (see ``check_name``).
        """
        request = ReceiveRequest(check_name(name, self._run.name))
        self._run.on_receive(request)
        return request

    def send(self, name: str, value: Any, type: Any = None) -> None:
        """Publish ingredient ``name``; ``type`` is an ``Ingredient.Type`` or a spec class,
        inferred from the value when omitted.

        Raises
        ------
        DuplicateProducerError
            when another reactor already sent ``name`` in this session.
        SerializationError
            when the value can be stored neither with pickle nor with dill.
        IngredientNameError
            for a name that cannot be stored (empty, NUL, over 511 bytes; not a str: also a
            ``TypeError``), before anything is stored.
        """
        check_name(name, self._run.name)
        self._run.send(name, value, self._key(name, type))

    def allocate(self, name: str, type: Any, **kwargs: Any) -> Any:
        """Create an ingredient to fill in place: a file path (``Ingredient.Type.file``) or an
        HDF dataset (``specs.HdfArraySpec``, with ``shape=`` and ``dtype=``). It is sent
        automatically when the reactor finishes, if not sent before.

        Raises
        ------
        AllocationError
            for a type that cannot be allocated, a bad shape or dtype, or a ``filename=`` (file
            ingredients) that is not one plain file name: a file is stored in its version's own
            directory, ``files/<ingredient>@<token>/<filename>``.
        IngredientNameError
            for a name that cannot be stored, before anything is allocated.
        """
        check_name(name, self._run.name)
        return self._run.allocate(name, self._key(name, type), temp=False, **kwargs)

    def allocate_temp(self, name: str, type: Any, **kwargs: Any) -> Any:
        """Like ``allocate``, but freed when the reactor ends and never sent."""
        check_name(name, self._run.name)
        return self._run.allocate(name, self._key(name, type), temp=True, **kwargs)

    def track_file(self, path: Any) -> None:
        """Record that this reactor reads the file (or lists the directory) at ``path``.

        Files opened through Python's ``open`` are recorded automatically; call this for readers
        written in C that bypass it (``h5py.File``, some image loaders). The reactor re-runs
        when the file's content (or the directory's list of names) changes.
        """
        self._run.track_file(path)

    def read_config(self, name: str) -> Any:
        """Read a config parameter and record the dependency (the dict-config way)."""
        return self._run.read_config(name, register=True)

    def read_config_unregistered(self, name: str) -> Any:
        """Read a config parameter without recording a dependency (reporting, debugging)."""
        return self._run.read_config(name, register=False)

    def _key(self, name: str, type_: Any) -> str | None:
        try:
            return type_key(type_)
        except TypeError as exc:
            raise AllocationError(f"reactor '{self._run.name}', ingredient '{name}': {exc}",
                                  reactor=self._run.name, ingredient=name) from exc
