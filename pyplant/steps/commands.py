"""Programs as steps: ``command_step`` and Kubeflow v1 component files (``load_component``).

A command step runs a program with ``subprocess`` (no shell). Its code is the command line
(literal arguments, with placeholders for the files passed in and out) and the content of every
file named in it that exists when the plant runs (the script ``gen.py`` of ``python gen.py``):
editing the script re-runs the step, as editing a function re-runs a ``@step``. Files given with
``InputPath(path)`` are content-hashed as inputs; ``InputPath(result)`` receives the file of
another step; ``OutputPath("name")`` gives the program a fresh path, and the file it writes
there becomes the output ``name`` (``r["name"]``). A command without outputs returns its
standard output (str).

Component files follow Kubeflow Pipelines v1 (``name``, ``inputs``, ``outputs``,
``implementation.container`` with ``image``, ``command`` and ``args``, the placeholders
``{inputValue: x}``, ``{inputPath: x}``, ``{outputPath: x}``). The command runs locally; the
image is recorded as part of the step's code, not pulled.
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from typing import Any, Callable, Generator

from .. import hashing
from ..errors import ComponentError, StepCommandError, StepUsageError
from ..ingredient import Ingredient
from ..pipework import ReceiveRequest
from .graph import StepDefinition, current_graph
from .paths import InputPath, OutputPath
from .results import RETURN_SLOT, StepResult

STDERR_LINES = 20  # lines of the program's stderr kept in StepCommandError


@dataclass(eq=False)
class CommandDefinition(StepDefinition):
    """A program as a step: ``command`` holds literals, ``InputPath`` and ``OutputPath`` items
    (with the step results they carry), ``image`` the component's container image, if any."""
    command: tuple = ()
    image: str | None = None


def command_step(name: str, command: list, *, version: str | None = None,
                 image: str | None = None) -> StepResult:
    """A step that runs ``command`` (a program and its arguments; no shell).

    Parameters
    ----------
    name : str
        The step's name (its traces and its output ingredients are named after it).
    command : list
        Items are passed as ``str(item)``, except ``InputPath(x)`` (the path of a file: a
        step result that is a file, or an existing path, content-hashed), ``OutputPath("n")``
        (a fresh path; the file written there is output ``n``) and a bare StepResult (its
        value, as ``str``).
    version : str, optional
        Stands for the code (command line and scripts): edits keep the cache until it changes.
    image : str, optional
        A container image, recorded with the code (the command runs locally).

    Returns
    -------
    StepResult
        Index it by output name (``r["numbers"]``); without outputs, the program's stdout.

    Raises
    ------
    StepUsageError
        for an empty command, or outputs named twice.
    StepCommandError
        when the program exits non-zero (at run time), with its stderr's last lines.
    """
    if not isinstance(command, (list, tuple)) or not command:
        raise StepUsageError(f"command_step '{name}' needs a non-empty list: the program and its "
                             f"arguments", step=name)
    outputs = tuple(item.name or "output" for item in command if isinstance(item, OutputPath))
    if len(set(outputs)) != len(outputs):
        raise StepUsageError(f"command_step '{name}': outputs named twice in {list(outputs)}", step=name)
    definition = CommandDefinition(_run, name, version, outputs, command=tuple(command), image=image)
    return StepResult(current_graph().add(definition, {"command": [_argument(i) for i in command]}))


def _argument(item: Any) -> Any:
    """An item of the command as a call argument: the step results it carries stay results
    (they wire the graph), the rest is its stable text."""
    if isinstance(item, InputPath) and isinstance(item.arg, StepResult):
        return item.arg
    return item if isinstance(item, StepResult) else _template(item)


def _run() -> None:
    """Stands for a command step's function (its code is the command line, see ``code_map``)."""


def code_map(definition: CommandDefinition) -> dict[str, str]:
    """{label: hash}: the command line (``command``), each existing file it names, the image."""
    if definition.version is not None:
        return {"reactor": hashing.digest("version", str(definition.version))}
    shown = [_template(item) for item in definition.command]
    found = {"command": hashing.digest("command", repr(shown))}
    for item in definition.command:
        if isinstance(item, (str, os.PathLike)) and os.path.isfile(item):
            found[f"file:{os.fspath(item)}"] = hashing.file_hash(os.fspath(item))
    if definition.image:
        found["const:image"] = hashing.digest("image", definition.image)
    return found


def _template(item: Any) -> str:
    if isinstance(item, OutputPath):
        return f"<output {item.name}>"
    if isinstance(item, InputPath):
        return "<input file>" if isinstance(item.arg, StepResult) else f"<input file {item.arg}>"
    if isinstance(item, StepResult):
        return "<input value>"
    return str(item)


def command_body(run: Any, call: Any) -> Generator:
    """Receive the inputs, run the program, send the files it wrote (or its stdout)."""
    definition, pipe = call.definition, run.pipe
    for other in call.depends_on:
        yield ReceiveRequest(next(iter(other.outputs.values())), record=False)
    argv = []
    for item in definition.command:
        if isinstance(item, OutputPath):
            argv.append(os.fspath(pipe.allocate(call.outputs[item.name or "output"], Ingredient.Type.file)))
        elif isinstance(item, InputPath):
            path = (yield pipe.receive(item.arg.ingredient)) if isinstance(item.arg, StepResult) else item.arg
            if not isinstance(path, (str, os.PathLike)) or not os.path.isfile(path):
                raise StepUsageError(f"command_step '{call.name}': {item!r} is not an existing file "
                                     f"(got {path!r})", step=call.name)
            pipe.track_file(path)
            argv.append(os.fspath(path))
        elif isinstance(item, StepResult):
            argv.append(str((yield pipe.receive(item.ingredient))))
        else:
            argv.append(os.fspath(item) if isinstance(item, os.PathLike) else str(item))
    done = _execute(call.name, argv)
    for out in definition.returns:
        path = run.allocations.get(call.outputs[out], (None, None, None))[2]
        if path is None or not os.path.exists(path):
            raise StepCommandError(f"command_step '{call.name}' exited 0 but wrote no file for its "
                                   f"output '{out}'", step=call.name, returncode=0,
                                   stderr=_tail(done.stderr))
    if not definition.returns:
        pipe.send(call.outputs[RETURN_SLOT], done.stdout)


def _execute(name: str, argv: list[str]) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, errors="replace")
    except OSError as exc:  # no such program, not executable
        raise StepCommandError(f"command_step '{name}' could not start {argv[0]!r}: {exc}",
                               step=name, returncode=-1, stderr=str(exc)) from exc
    if done.returncode != 0:
        tail = _tail(done.stderr)
        raise StepCommandError(f"command_step '{name}' failed: {argv[0]} exited with status "
                               f"{done.returncode}\n{tail}", step=name,
                               returncode=done.returncode, stderr=tail)
    return done


def _tail(text: str) -> str:
    return "\n".join((text or "").rstrip().splitlines()[-STDERR_LINES:])


# --- Kubeflow v1 component files ---

def load_component(path: str | os.PathLike) -> Callable[..., StepResult]:
    """A step factory from a Kubeflow Pipelines v1 component file (``component.yaml``).

    The factory takes the component's inputs as keyword arguments (Kubeflow's names; also
    with ``-``/spaces as ``_``) and returns a ``StepResult`` indexed by output name.

    Raises
    ------
    ComponentError
        when the file is not YAML, has no ``implementation.container.command``, or uses an
        input or output it does not declare; when called without a required input.
    """
    import yaml  # an optional dependency: only component files need it

    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as fh:
            spec = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError) as exc:
        raise ComponentError(f"cannot read component file {path!r}: {exc}", path=path) from exc
    if not isinstance(spec, dict):
        raise ComponentError(f"component file {path!r} is not a mapping", path=path)
    container = (spec.get("implementation") or {}).get("container") or {}
    template = list(container.get("command") or []) + list(container.get("args") or [])
    if not template:
        raise ComponentError(f"component file {path!r} has no implementation.container.command",
                             path=path)
    name = str(spec.get("name") or os.path.splitext(os.path.basename(path))[0])
    inputs = {i["name"]: i for i in spec.get("inputs") or [] if isinstance(i, dict) and "name" in i}
    outputs = [o["name"] for o in spec.get("outputs") or [] if isinstance(o, dict) and "name" in o]
    _check_placeholders(path, template, inputs, outputs)

    def factory(**kwargs: Any) -> StepResult:
        given = {_python_name(k): v for k, v in kwargs.items()}
        unknown = set(given) - {_python_name(n) for n in inputs}
        if unknown:
            raise ComponentError(f"component '{name}' has no input {sorted(unknown)} (inputs: "
                                 f"{list(inputs)})", path=path)
        command = [_fill(name, path, item, inputs, given) for item in template]
        return command_step(name, [c for c in command if c is not _OMIT], image=container.get("image"))

    factory.__name__ = _python_name(name)
    factory.__doc__ = spec.get("description")
    factory.component_spec = spec  # type: ignore[attr-defined]
    return factory


_OMIT = object()  # an optional input not given


def _fill(name: str, path: str, item: Any, inputs: dict, given: dict) -> Any:
    if not isinstance(item, dict):
        return str(item)
    (kind, key), = item.items()
    if kind == "outputPath":
        return OutputPath(key)
    value = given.get(_python_name(key), inputs[key].get("default", _OMIT))
    if value is _OMIT:
        if inputs[key].get("optional"):
            return _OMIT
        raise ComponentError(f"component '{name}' needs input '{key}'", path=path)
    return InputPath(value) if kind == "inputPath" else value


def _check_placeholders(path: str, template: list, inputs: dict, outputs: list) -> None:
    for item in template:
        if not isinstance(item, dict):
            continue
        if len(item) != 1:
            raise ComponentError(f"component file {path!r}: unsupported placeholder {item!r}", path=path)
        (kind, key), = item.items()
        if kind in ("inputValue", "inputPath") and key not in inputs:
            raise ComponentError(f"component file {path!r} uses input '{key}' it does not declare",
                                 path=path)
        if kind == "outputPath" and key not in outputs:
            raise ComponentError(f"component file {path!r} uses output '{key}' it does not declare",
                                 path=path)
        if kind not in ("inputValue", "inputPath", "outputPath"):
            raise ComponentError(f"component file {path!r}: unsupported placeholder {kind!r} "
                                 f"(supported: inputValue, inputPath, outputPath)", path=path)


def _python_name(name: str) -> str:
    return name.replace("-", "_").replace(" ", "_").lower()
