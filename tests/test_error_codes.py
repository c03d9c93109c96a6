"""Every exception pyplant raises is a ``pyplant.errors`` class with a distinct exit code, the
table in the module docstring is the truth, and errors carry the objects they are about."""
from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

import pyplant
from pyplant import errors
from pyplant.warehouse.records import Version

ERRORS = [cls for _, cls in inspect.getmembers(errors, inspect.isclass)
          if issubclass(cls, errors.PyPlantError) and cls.__module__ == errors.__name__]

# Exceptions raised inside the package that never leave it (each is caught where it is raised
# for), and the one Python protocol exception (``__getattr__`` must raise AttributeError).
INTERNAL = {
    "LocationError": "warehouse: a location no rule derives; the facade turns it into WarehouseError "
                     "or CorruptVersionError",
    "Damaged": "lmdb_env: a damaged environment, moved aside (or PlantDirError when read-only)",
    "RecordError": "records: a record of the wrong shape, skipped as damaged by the backend",
    "UnreadableLease": "leases: gc keeps everything and logs it",
    "AttributeError": "config: __getattr__ protocol for dunder lookups",
    "TypeError": "ingredient.type_key: the pipe turns it into AllocationError naming reactor and ingredient",
}


def test_every_error_has_a_distinct_small_exit_code():
    codes = {cls.__name__: cls.exit_code for cls in ERRORS}
    assert len(set(codes.values())) == len(codes), codes
    assert all(isinstance(c, int) and 3 <= c <= 125 for c in codes.values()), codes


def test_the_docstring_table_lists_every_error_with_its_exit_code():
    table = dict(re.findall(r"^\s+(\d+)\s+[|+\- ]*(\w+)\(", errors.__doc__, re.M))
    assert {name: int(code) for code, name in table.items()} == {cls.__name__: cls.exit_code for cls in ERRORS}


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: c.__name__)
def test_every_error_carries_what_it_is_about(cls):
    version = Version("x", "array", "h" * 32, "blobs/ab/cd.npy")
    kwargs = {"reactor": "r", "ingredient": "x", "version": version, "path": "/p"}
    if cls is errors.DependencyCycleError:
        kwargs = {"cycle": ["r", "s"], "ingredient": "x", "version": version, "path": "/p"}
    exc = cls("message", **kwargs)
    assert (exc.reactor, exc.ingredient, exc.version, exc.path) == ("r", "x", version, "/p")
    assert str(exc) == "message" and isinstance(exc, errors.PyPlantError)
    assert inspect.getdoc(cls)


def raised_names() -> dict[str, list[str]]:
    """{exception class name: ['module:line', ...]} of every ``raise Name(...)`` in pyplant."""
    found: dict[str, list[str]] = {}
    root = Path(pyplant.__file__).parent
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) \
                    and isinstance(node.exc.func, ast.Name) and node.exc.func.id[:1].isupper():
                found.setdefault(node.exc.func.id, []).append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def test_pyplant_raises_only_its_own_errors():
    public = {cls.__name__ for cls in ERRORS}
    stray = {name: where for name, where in raised_names().items() if name not in public | set(INTERNAL)}
    assert stray == {}, stray


def test_invalid_operation_exception_is_one_class_in_both_places():
    import pyplant.specs
    assert pyplant.specs.InvalidOperationException is errors.InvalidOperationException
    assert issubclass(errors.InvalidOperationException, errors.SpecError)
