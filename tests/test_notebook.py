"""A real Jupyter kernel (nbclient + ipykernel): cells redefined, helpers edited, a reactor
renamed, all in one long-lived process, as a researcher works in a notebook.

The plant must use the newest definition of each reactor at every ``run_reactor``, drop a
reactor whose name no longer refers to it, and give the results of a from-scratch run.
"""
from __future__ import annotations

import json

import pytest

from conftest import REPO_ROOT

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

SETUP = '''
import json, sys
sys.path.insert(0, {repo!r})
import numpy as np
from pyplant import Plant, ReactorFunc
STARTED = []
def open_plant():
    plant = Plant({plant_dir!r})
    plant.add_event_listener(Plant.EventType.reactor_started, lambda e, n, f: STARTED.append(n))
    return plant
plant = open_plant()
'''

DEFINE = '''
def helper(x):
    return x + 1

@ReactorFunc
def produce(pipe):
    pipe.send("data", np.arange(5.0) + helper(0))

@ReactorFunc
def train(pipe):
    data = yield pipe.receive("data")
    pipe.send("model", data * 2)

@ReactorFunc
def evaluate(pipe):
    model = yield pipe.receive("model")
    pipe.send("score", float(model.sum()))

@ReactorFunc
def show(pipe):
    RESULT["score"] = yield pipe.receive("score")
'''

RUN = '''
RESULT = {{}}
STARTED.clear()
plant.run_reactor(show)
print("RUN " + json.dumps({{"label": {label!r}, "started": STARTED, "score": RESULT["score"],
                           "explain": plant.explain(),
                           "reactors": sorted(r.__name__ for r in plant.get_reactors())}}))
'''

REDEFINE_TRAIN = '''
@ReactorFunc
def train(pipe):
    data = yield pipe.receive("data")
    pipe.send("model", data * 3)
'''

REDEFINE_HELPER = '''
def helper(x):
    return x + 2
'''

RENAME_TRAIN = '''
del train

@ReactorFunc
def fit(pipe):
    data = yield pipe.receive("data")
    pipe.send("model", data * 3)
'''

NEW_PLANT = '''
plant.shutdown()
del plant
plant = open_plant()
'''


def _run_notebook(cells: list[str], cwd) -> dict[str, dict]:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=120,
                                     resources={"metadata": {"path": str(cwd)}})
    client.execute()
    runs = {}
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            for line in output.get("text", "").splitlines():
                if line.startswith("RUN "):
                    run = json.loads(line[4:])
                    runs[run["label"]] = run
    return runs


def test_notebook_cells_redefined_edited_and_renamed(tmp_path):
    plant_dir = tmp_path / "plant"
    cells = [SETUP.format(repo=str(REPO_ROOT), plant_dir=str(plant_dir)), DEFINE,
             RUN.format(label="cold"), RUN.format(label="warm"),
             REDEFINE_TRAIN, RUN.format(label="train redefined"),
             REDEFINE_HELPER, RUN.format(label="helper edited"),
             RENAME_TRAIN, RUN.format(label="train renamed to fit"),
             NEW_PLANT, RUN.format(label="new plant")]
    runs = _run_notebook(cells, tmp_path)

    assert runs["cold"]["score"] == 30.0  # (0..4 + 1) * 2
    assert runs["warm"]["started"] == ["show"]

    redefined = runs["train redefined"]
    assert redefined["started"] == ["show", "train", "evaluate"]
    assert redefined["score"] == 45.0  # the new body ran
    assert redefined["explain"]["train"] == "code changed: reactor 'train'"

    edited = runs["helper edited"]
    assert sorted(edited["started"]) == ["evaluate", "produce", "show", "train"]
    assert edited["score"] == (sum(range(5)) + 5 * 2) * 3  # new helper, newest train body

    renamed = runs["train renamed to fit"]
    assert "train" not in renamed["reactors"] and "fit" in renamed["reactors"]
    assert renamed["started"] == ["show", "fit"]  # same output: evaluate stays cached
    assert renamed["explain"]["evaluate"] == "up to date"
    assert renamed["score"] == edited["score"]

    assert runs["new plant"]["started"] == ["show"]
    assert "train" not in runs["new plant"]["reactors"]

    # a from-scratch run of the final definitions gives the same result
    scratch = _run_notebook([SETUP.format(repo=str(REPO_ROOT), plant_dir=str(tmp_path / "fresh")),
                             DEFINE, REDEFINE_HELPER, RENAME_TRAIN, RUN.format(label="scratch")], tmp_path)
    assert scratch["scratch"]["score"] == renamed["score"]
