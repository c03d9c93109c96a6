"""pyplant: an incremental caching dataflow engine for Python research code.

Compatible name for name with PyPlant's documented API: wrap the stages of an analysis as
``@ReactorFunc`` generators, run the last one with ``Plant.run_reactor``, and only what an edit
or a config change made stale runs again.

Plain functions are pipeline steps too (``@step``, ``@pipeline``, ``command_step``,
``load_component``): the same scheduler, traces and warehouse cache them.
"""
from . import errors, specs
from .config import ConfigBase, ConfigValue
from .errors import PyPlantError
from .ingredient import Ingredient
from .pipework import Pipework
from .plant import ExecutionRecord, Plant
from .reactor import ReactorFunc, SubreactorFunc
from .specs import IngredientTypeSpec
from .steps import (InputPath, OutputPath, StepResult, command_step, get_step, ingredient, load_component,
                    pipeline, step)
from .warehouse import Warehouse

__version__ = "1.0.0.dev0"

__all__ = ["Plant", "ReactorFunc", "SubreactorFunc", "ConfigBase", "ConfigValue", "Pipework",
           "Ingredient", "IngredientTypeSpec", "Warehouse", "ExecutionRecord", "PyPlantError",
           "errors", "specs", "step", "pipeline", "get_step", "ingredient", "InputPath", "OutputPath",
           "StepResult", "command_step", "load_component"]
