"""Shared fixtures and helpers for the pyplant test suite."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pyplant import Plant
from pyplant.hashing import code_hash

REPO_ROOT = Path(__file__).resolve().parents[1]

ALL_EVENTS = (Plant.EventType.reactor_started, Plant.EventType.subreactor_started,
              Plant.EventType.reactor_finished, Plant.EventType.reactor_step)


@pytest.fixture(autouse=True)
def _clean_global_state():
    Plant._clear_global_state()
    yield
    Plant._clear_global_state()


class Hasher:
    """A ``functionHash`` that lets a test mark functions as modified, keyed by name."""

    def __init__(self):
        self.overrides: dict[str, str] = {}

    def __call__(self, func) -> str:
        name = getattr(func, "__name__", None)
        if name in self.overrides:
            return self.overrides[name]
        return code_hash(func)

    def bump(self, *names: str) -> None:
        for name in names:
            self.overrides[name] = self.overrides.get(name, "modified") + "+"


class Box:
    """A mutable record for reactors to write into from a closure.

    Not a dict on purpose: pyplant hashes closed-over plain data (dicts, lists) as part of a
    reactor's code, so a test recording into a dict would change that reactor's code map.
    An instance of a class is not code, so writing into a Box never re-runs anything.
    """

    def __init__(self):
        self.data = {}

    def __getitem__(self, key):
        return self.data[key]

    def __setitem__(self, key, value):
        self.data[key] = value

    def __contains__(self, key):
        return key in self.data

    def clear(self):
        self.data.clear()

    def update(self, *args, **kwargs):
        self.data.update(*args, **kwargs)


class Events:
    """Records every event a plant fires, in order, as (event name, reactor name)."""

    def __init__(self, plant: Plant):
        self.log: list[tuple[str, str]] = []
        self.raw: list[tuple] = []
        for event_type in ALL_EVENTS:
            plant.add_event_listener(event_type, self._callback)

    def _callback(self, event_type, *args):
        self.raw.append((event_type, *args))
        self.log.append((event_type.name, args[0]))

    def of(self, event_name: str) -> list[str]:
        return [name for ev, name in self.log if ev == event_name]

    @property
    def started(self) -> list[str]:
        return self.of("reactor_started")

    @property
    def finished(self) -> list[str]:
        return self.of("reactor_finished")


@pytest.fixture
def hasher() -> Hasher:
    return Hasher()


@pytest.fixture
def plant_dir(tmp_path) -> Path:
    return tmp_path / "plant"


@pytest.fixture
def open_plant(plant_dir, hasher):
    """Open plants on ``plant_dir`` (with the test's hasher); all are shut down at the end."""
    plants: list[Plant] = []

    def _open(config=None, reactors=(), directory=None) -> tuple[Plant, Events]:
        plant = Plant(str(directory or plant_dir), functionHash=hasher)
        plants.append(plant)
        if config is not None:
            plant.set_config(config)
        if reactors:
            plant.add_reactors(*reactors)
        return plant, Events(plant)

    yield _open
    for plant in plants:
        plant.shutdown()


# --- subprocess scenarios -------------------------------------------------------------------

SCRIPT_PRELUDE = '''
import json, os, sys
import numpy as np
from pyplant import (Plant, ReactorFunc, SubreactorFunc, Pipework, Ingredient, ConfigBase,
                     ConfigValue, specs, IngredientTypeSpec)
from pyplant import errors

PLANT_DIR = sys.argv[1]
ARGS = sys.argv[2:]
STARTED = []
SUBS = []
RESULT = {}

def open_plant(config=None):
    plant = Plant(PLANT_DIR)
    plant.add_event_listener(Plant.EventType.reactor_started, lambda e, n, f: STARTED.append(n))
    plant.add_event_listener(Plant.EventType.subreactor_started, lambda e, n: SUBS.append(n))
    if config is not None:
        plant.set_config(config)
    return plant

def report(**extra):
    out = {"started": STARTED, "subs": SUBS, "result": RESULT}
    out.update(extra)
    print("PYPLANT-RESULT " + json.dumps(out), flush=True)
'''


def write_script(path: Path, body: str) -> Path:
    """Write a script made of the common prelude and ``body`` (dedented)."""
    path.write_text(SCRIPT_PRELUDE + textwrap.dedent(body))
    return path


def child_env(**extra: str) -> dict:
    """The environment of a child process: the repository on PYTHONPATH.

    Under mutation testing (mutmut), a child of the statistics pass runs unmutated code
    without recording hits (it could not find mutmut's configuration from its own working
    directory); children of mutant runs inherit the mutant under test.
    """
    env = dict(os.environ)
    if env.get("MUTANT_UNDER_TEST") == "stats":
        del env["MUTANT_UNDER_TEST"]
    env.update(extra)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run_script(script: Path, plant_dir: Path, *args: str, expect_ok: bool = True,
               timeout: float = 120, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``script`` in a new Python process with the repository on PYTHONPATH."""
    env = child_env(**(env_extra or {}))
    proc = subprocess.run([sys.executable, str(script), str(plant_dir), *args], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=str(script.parent))
    if expect_ok and proc.returncode != 0:
        raise AssertionError(f"script failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def result_of(proc: subprocess.CompletedProcess) -> dict:
    """The JSON the script printed with ``report()``."""
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("PYPLANT-RESULT "):
            return json.loads(line[len("PYPLANT-RESULT "):])
    raise AssertionError(f"script printed no result:\n{proc.stdout}\n{proc.stderr}")


class Loader:
    """Imports each version of a generated source as a new module object under one name: from
    a new file each time (what a new process importing the edited module sees), or, with
    ``same_path``, from one file rewritten (``importlib.reload``, notebook autoreload)."""

    def __init__(self, directory: str, module_name: str, same_path: bool = False):
        self.directory = directory
        self.module_name = module_name
        self.same_path = same_path
        self.count = 0

    def load(self, source: str):
        import importlib.util
        self.count += 1
        name = "module.py" if self.same_path else f"version_{self.count}.py"
        path = os.path.join(self.directory, name)
        with open(path, "w") as f:
            f.write(source)
        Plant._clear_global_state()
        spec = importlib.util.spec_from_file_location(self.module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[self.module_name] = module
        # Compiled from the text just written: a cached .pyc of an earlier version of the same
        # size, written in the same second, would otherwise be executed instead.
        exec(compile(source, path, "exec"), module.__dict__)
        return module


# Bomb lives in its own module: pytest imports conftest.py afresh in every session of a process
# (mutmut runs several), see tests/planted.py.
from planted import Bomb  # noqa: E402,F401


# --- hypothesis profiles (tests/test_property.py) --------------------------------------------
# HYPOTHESIS_PROFILE=ci (default): quick enough for CI; HYPOTHESIS_PROFILE=thorough: long runs.
from hypothesis import HealthCheck as _HealthCheck, settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile(
    "ci", max_examples=30, deadline=None, suppress_health_check=[_HealthCheck.too_slow])
_hypothesis_settings.register_profile(
    "thorough", max_examples=3000, deadline=None, suppress_health_check=[_HealthCheck.too_slow])
_hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# A failing hypothesis test makes its pytest plugin import libcst (to print an @example patch),
# whose import warns (DeprecationWarning); `filterwarnings = error` would turn the report of
# the failure into an INTERNALERROR that stops the session. Import it once here, warnings off.
import warnings as _warnings  # noqa: E402

with _warnings.catch_warnings():
    _warnings.simplefilter("ignore")
    try:
        import hypothesis.extra._patching  # noqa: F401
    except ImportError:
        pass
