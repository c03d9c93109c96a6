"""Ingredient type specs (PyPlant's ``pyplant.specs``): HDF arrays, SciPy sparse, Keras models."""
from .warehouse.specs import (HdfArraySpec, IngredientTypeSpec, InvalidOperationException,
                              KerasModelSpec, ScipySparseSpec)

__all__ = ["IngredientTypeSpec", "HdfArraySpec", "ScipySparseSpec", "KerasModelSpec",
           "InvalidOperationException"]
