#!/usr/bin/env python
"""ClearML's ``pipeline_from_decorator`` example, as plain-function steps cached by pyplant.

    step_one (load) -> step_two (process) -> the controller scales the data -> step_three (train)
                                                                              -> evaluate
                                                          accuracy > threshold ? register : report

Each ``@step`` is a plain function that returns its value; calling it returns a lazy result
(SageMaker's ``DelayedReturn``), and passing results to other steps wires the pipeline. The
``@pipeline`` controller is plain Python around step calls, as ClearML's
``PipelineDecorator.pipeline``: ``.result()`` computes a branch now so the controller can
change a value or branch on it (the SageMaker ``ConditionStep``). The data is the iris set that
ships with scikit-learn (no download).

Unlike ClearML, a step whose code and arguments did not change since any earlier run is not run
again: its result comes from the plant's warehouse on disk, in a new process too.

    python examples/steps_pipeline.py                 # first run: every step runs
    python examples/steps_pipeline.py                 # again: no step runs
    python examples/steps_pipeline.py --C 0.05        # step_three, evaluate and the branch re-run
    python examples/steps_pipeline.py --demo          # all three, each in a new process
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

try:
    from pyplant import Plant, pipeline, step
except ImportError:  # running from a source checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from pyplant import Plant, pipeline, step


@step
def step_one(test_size: float = 0.2):
    """Load the data (ClearML downloads a pickle; scikit-learn ships the same table)."""
    from sklearn.datasets import load_iris

    iris = load_iris(as_frame=True)
    frame = iris.frame.rename(columns={"target": "label"})
    return frame.sample(frac=1.0, random_state=0), test_size


@step(returns=("X_train", "X_test", "y_train", "y_test"))
def step_two(data):
    """Split into train and test parts."""
    from sklearn.model_selection import train_test_split

    frame, test_size = data
    y = frame["label"].to_numpy()
    X = frame.drop(columns=["label"]).to_numpy()
    return train_test_split(X, y, test_size=test_size, random_state=42, stratify=y)


@step
def step_three(X_train, y_train, C: float = 1.0):
    """Train the model."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, max_iter=500).fit(X_train, y_train)


@step
def evaluate(model, X_test, y_test):
    """Accuracy on the held-out part."""
    return {"accuracy": float((model.predict(X_test) == y_test).mean()), "n_test": int(len(y_test))}


@step
def register(model, metrics):
    """The SageMaker-style condition's 'true' branch: keep the model."""
    return f"registered {type(model).__name__}(C={model.C}) at accuracy {metrics['accuracy']:.3f}"


@step
def report_rejected(metrics, threshold):
    """The condition's 'false' branch."""
    return f"rejected: accuracy {metrics['accuracy']:.3f} <= {threshold}"


@pipeline
def executing_pipeline(C: float = 1.0, threshold: float = 0.9):
    """The controller, as in ClearML's example: it passes step_one's data to step_two, scales
    step_two's training features itself (ClearML: 'the second step's output is modified within
    the pipeline execution logic'), then trains and branches on the accuracy."""
    X_train, X_test, y_train, y_test = step_two(step_one())
    scale = X_train.result().std(axis=0)          # computed now, in the controller
    model = step_three(scaled(X_train, scale), y_train, C=C)
    metrics = evaluate(model, scaled(X_test, scale), y_test)
    if metrics.result()["accuracy"] > threshold:  # SageMaker's ConditionStep
        return register(model, metrics)
    return report_rejected(metrics, threshold)


@step
def scaled(X, scale):
    """Features divided by the scale the controller computed."""
    return X / scale


ORDER = ["step_one", "step_two", "scaled", "step_three", "scaled_1", "evaluate", "register",
         "report_rejected"]


def print_history(plant, seconds):
    """One row per step: ran or cached, how long, and why it ran."""
    history = plant.get_execution_history()
    print(f"\n{'step':<16} {'status':<7} {'time (s)':>9}  reason")
    for name in ORDER + sorted(set(history) - set(ORDER)):
        record = history.get(name)
        if record is not None:
            status = "ran" if record.wasRun else "cached"
            print(f"{name:<16} {status:<7} {record.totalRuntime:>9.3f}  {record.reason if record.wasRun else ''}")
    ran = sum(r.wasRun for r in history.values())
    print(f"{ran} ran, {len(history) - ran} cached; wall time {seconds:.2f} s")


def run_once(plant_dir, C, threshold):
    start = time.perf_counter()
    with Plant(plant_dir) as plant:
        outcome = plant.run(executing_pipeline, C=C, threshold=threshold)
        print(outcome)
        print_history(plant, time.perf_counter() - start)


def run_demo(args):
    """The script three times, each in a new Python process, as a researcher would."""
    plant_dir = args.plant_dir or tempfile.mkdtemp(prefix="pyplant-steps-demo-")
    base = [sys.executable, os.path.abspath(__file__), "--plant-dir", plant_dir]
    runs = [("1. cold: every step runs", []),
            ("2. warm: no step runs", []),
            ("3. C=1.0 -> 0.05: step_three, evaluate and the branch re-run", ["--C", "0.05"])]
    try:
        for title, extra in runs:
            print(f"\n{'=' * 72}\n{title}\n$ python {os.path.basename(__file__)} {' '.join(extra)}\n"
                  f"{'=' * 72}", flush=True)
            subprocess.run(base + extra, check=True)
    finally:
        if args.plant_dir is None:
            shutil.rmtree(plant_dir, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plant-dir", help="where the cache is kept")
    parser.add_argument("--C", type=float, default=1.0, help="inverse regularization strength")
    parser.add_argument("--threshold", type=float, default=0.9, help="accuracy needed to register")
    parser.add_argument("--demo", action="store_true", help="cold, warm and changed-C runs in new processes")
    args = parser.parse_args()
    if args.demo:
        run_demo(args)
    else:
        run_once(args.plant_dir or os.path.join(tempfile.gettempdir(), ".pyplant-steps"), args.C,
                 args.threshold)


if __name__ == "__main__":
    main()
