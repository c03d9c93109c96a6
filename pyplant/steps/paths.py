"""Files passed between steps by path, as Kubeflow's ``InputPath`` / ``OutputPath``.

As a parameter annotation of a ``@step`` function::

    @step
    def count(numbers: InputPath("CSV"), total_path: OutputPath()):
        ...                       # read `numbers` (a path), write `total_path`

an ``InputPath`` parameter receives the path of a file: the result of another step that made a
file, or a path the caller gives (its *content* is part of the cache key); an ``OutputPath``
parameter receives a fresh path to write, and that file becomes the output named after the
parameter without its ``_path``/``_file`` suffix (``r["total"]``).

In a ``command_step`` argument list, ``OutputPath("numbers")`` is replaced by a fresh path
(output ``numbers``) and ``InputPath(result)`` by the path of a file result.
"""
from __future__ import annotations

from typing import Any


class InputPath:
    """A file input, passed by path.

    ``arg`` is read by where it is used: in an annotation it is a type label recorded with the
    input (``InputPath("CSV")``); in a command list it is the file (a step result that made a
    file, or a path).
    """

    def __init__(self, arg: Any = None, type: str | None = None):
        self.arg = arg
        self.type = type if type is not None else (arg if isinstance(arg, str) else None)

    def __repr__(self) -> str:
        return f"InputPath({self.arg!r})"


class OutputPath:
    """A file output, written at a path the plant gives. In a command list, ``name`` names the
    output; in an annotation, the parameter does and the argument is a type label."""

    def __init__(self, name: str | None = None, type: str | None = None):
        self.name = name
        self.type = type

    def __repr__(self) -> str:
        return f"OutputPath({self.name!r})"


def output_name(parameter: str) -> str:
    """Kubeflow's naming: the output of parameter ``total_path`` is ``total``."""
    for suffix in ("_path", "_file"):
        if parameter.endswith(suffix) and len(parameter) > len(suffix):
            return parameter[: -len(suffix)]
    return parameter
