"""Every public function, class and method of the warehouse and of ``pyplant.errors`` says
what it does (a docstring of its own, or the one of the interface it implements)."""
from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import pyplant.warehouse

MODULES = ["pyplant.errors", "pyplant.ingredient", "pyplant.specs"] + [
    f"pyplant.warehouse.{m.name}" for m in pkgutil.iter_modules(pyplant.warehouse.__path__)] + ["pyplant.warehouse"]


def public_members(module):
    for name, obj in vars(module).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isfunction(obj):
            yield name, obj
        elif inspect.isclass(obj):
            yield name, obj
            for attr, member in vars(obj).items():
                if attr.startswith("_") and attr != "__init__":
                    continue
                func = member.fget if isinstance(member, property) else getattr(member, "__func__", member)
                if inspect.isfunction(func) and attr != "__init__":
                    yield f"{name}.{attr}", (obj, attr)


@pytest.mark.parametrize("module_name", MODULES)
def test_public_api_is_documented(module_name):
    module = importlib.import_module(module_name)
    assert inspect.getdoc(module), module_name
    missing = []
    for name, obj in public_members(module):
        doc = inspect.getdoc(getattr(*obj)) if isinstance(obj, tuple) else inspect.getdoc(obj)
        if not doc:
            missing.append(name)
    assert missing == [], missing


def test_the_spec_extension_point_is_documented():
    from pyplant.specs import IngredientTypeSpec
    for method in ("allocate", "deallocate", "store", "fetch", "close", "is_instance", "verify", "stored_value"):
        doc = inspect.getdoc(getattr(IngredientTypeSpec, method))
        assert doc and len(doc) > 60, method
    for method in ("store", "fetch", "allocate", "deallocate"):
        assert "Raises" in inspect.getdoc(getattr(IngredientTypeSpec, method)) or method == "fetch"
