#!/usr/bin/env python
"""A small machine-learning pipeline on the iris data set, cached with pyplant.

    load -> preprocess -> train -> evaluate -> report

Each stage is a *reactor*: a function that receives ingredients (inputs) from
the plant and sends new ingredients (outputs) to it.  The plant stores every
ingredient on disk together with a signature of everything that produced it:
the reactor's source code, the config values it read, and its inputs.
When you re-run the script, a stage runs again only if one of those changed.

Try it:

    python examples/iris_pipeline.py               # first run: every stage runs
    python examples/iris_pipeline.py               # again: only `report` runs
    python examples/iris_pipeline.py --set C=0.1   # train/evaluate/report re-run
    python examples/iris_pipeline.py --demo        # all three, in fresh processes
"""
import argparse
import ast
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time

try:
    from pyplant import ConfigBase, Plant, ReactorFunc
except ImportError:  # Running from a source checkout without `pip install -e .`.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from pyplant import ConfigBase, Plant, ReactorFunc


# The reactors in pipeline order (used to print the summary table).
PIPELINE = ['load', 'preprocess', 'train', 'evaluate', 'report']


class IrisConfig(ConfigBase):
    """All the knobs of the pipeline.

    A reactor that reads `config.<name>` depends on that parameter: changing it
    re-runs that reactor and everything downstream, and nothing else.
    """

    def __init__(self):
        super().__init__()
        # Data split (read by `preprocess`).
        self.test_size = 0.3
        self.random_seed = 42
        # Model hyper-parameters (read by `train`).
        self.C = 1.0            # Inverse regularization strength.
        self.max_iter = 200
        # Where the cache lives. Auxiliary: changing it never triggers a re-run.
        self.plant_dir = os.path.join(tempfile.gettempdir(), '.pyplant-iris')
        self.mark_auxiliary(['plant_dir'])


# ---------------------------------------------------------------- reactors --

@ReactorFunc
def load(pipe):
    """Load the data set shipped with scikit-learn (no download)."""
    # scikit-learn is imported inside the reactors that use it: importing it
    # takes about a second, which a run where they are all cached never pays.
    from sklearn.datasets import load_iris

    iris = load_iris()
    # NumPy arrays are stored as .npy files, anything else is pickled.
    pipe.send('features', iris.data)
    pipe.send('labels', iris.target)
    pipe.send('class_names', iris.target_names.tolist())


@ReactorFunc
def preprocess(pipe, config):
    """Split into train/test and standardize the features."""
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    # `yield pipe.receive(...)` waits for an ingredient; if it is missing or
    # stale, the plant first runs the reactor that produces it.
    X = yield pipe.receive('features')
    y = yield pipe.receive('labels')

    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=config.test_size, random_state=config.random_seed, stratify=y)

    scaler = StandardScaler().fit(X_train)  # Fit on the training part only.
    pipe.send('X_train', scaler.transform(X_train))
    pipe.send('X_test', scaler.transform(X_test))
    pipe.send('y_train', y_train)
    pipe.send('y_test', y_test)


@ReactorFunc
def train(pipe, config):
    """Fit the classifier."""
    from sklearn.linear_model import LogisticRegression

    X_train = yield pipe.receive('X_train')
    y_train = yield pipe.receive('y_train')

    model = LogisticRegression(C=config.C, max_iter=config.max_iter)
    model.fit(X_train, y_train)
    pipe.send('model', model)  # Pickled.


@ReactorFunc
def evaluate(pipe):
    """Score the model on the held-out test set."""
    from sklearn.metrics import accuracy_score, confusion_matrix

    model = yield pipe.receive('model')
    X_test = yield pipe.receive('X_test')
    y_test = yield pipe.receive('y_test')

    y_pred = model.predict(X_test)
    pipe.send('metrics', {
        'model': repr(model),
        'n_test': len(y_test),
        'accuracy': accuracy_score(y_test, y_pred),
        'confusion': confusion_matrix(y_test, y_pred),
    })


@ReactorFunc
def report(pipe):
    """The target: always runs, but only needs the (small) metrics."""
    metrics = yield pipe.receive('metrics')
    names = yield pipe.receive('class_names')

    print(f"\nModel:    {metrics['model']}")
    print(f"Accuracy: {metrics['accuracy']:.3f} on {metrics['n_test']} test samples")
    print('Confusion matrix (rows: true class, columns: predicted):')
    width = max(len(n) for n in names)
    print(' ' * (width + 2) + ' '.join(f'{n:>{width}}' for n in names))
    for name, row in zip(names, metrics['confusion']):
        print(f'  {name:<{width}}' + ' '.join(f'{v:>{width}d}' for v in row))


# ----------------------------------------------------------------- helpers --

def print_run_table(history, total_seconds):
    """One row per reactor: did it run or come from the cache, and how long it took."""
    print(f"\n{'reactor':<12} {'status':<7} {'time (s)':>9}  reason")
    for name in PIPELINE + [n for n in history if n not in PIPELINE]:
        record = history.get(name)
        if record is None:  # Never touched: its outputs were not even needed.
            print(f'{name:<12} {"cached":<7} {"-":>9}')
            continue
        ran = getattr(record, 'wasRun', True)
        reason = getattr(record, 'reason', '') if ran else ''
        print(f'{name:<12} {"ran" if ran else "cached":<7} {record.totalRuntime:>9.3f}  {reason or ""}')
    print(f'Total wall time: {total_seconds:.3f} s')


def parse_overrides(config, assignments):
    """Apply `--set name=value` overrides, e.g. --set C=0.5 --set max_iter=500."""
    names = [k for k in vars(config) if not k.startswith('_')]
    for assignment in assignments:
        name, equals, text = assignment.partition('=')
        if not equals or name not in names:
            sys.exit(f'--set {assignment}: expected NAME=VALUE, NAME one of {", ".join(names)}')
        try:
            value = ast.literal_eval(text)  # 3 -> int, 0.5 -> float, None, True, ...
        except (ValueError, SyntaxError):
            value = text                    # ... anything else is a string.
        if isinstance(getattr(config, name), float) and isinstance(value, int):
            value = float(value)            # C=1 means C=1.0: same value, same cache entry.
        setattr(config, name, value)


def run_once(config, verbose=False):
    start = time.perf_counter()
    with Plant(config.plant_dir) as plant:
        log = logging.getLogger('pyplant')  # The plant logs each step at INFO level.
        if verbose and not log.handlers:
            logging.basicConfig(format='[%(name)s] %(message)s')
        log.setLevel(logging.INFO if verbose else logging.WARNING)
        plant.set_config(config)
        plant.add_reactors(load, preprocess, train, evaluate, report)
        plant.run_reactor(report)  # Runs `report`, plus whatever is stale upstream.
        history = plant.get_execution_history()
    print_run_table(history, time.perf_counter() - start)


def run_demo(config, args):
    """Run the script three times, each in a new Python process, like a user would."""
    fresh_dir = args.plant_dir is None
    plant_dir = tempfile.mkdtemp(prefix='pyplant-iris-demo-') if fresh_dir else args.plant_dir
    base = [sys.executable, os.path.abspath(__file__), '--plant-dir', plant_dir]
    for assignment in args.set:
        base += ['--set', assignment]
    if args.verbose:
        base.append('--verbose')

    new_c = f'{config.C / 10:g}'
    runs = [('1. first run: everything runs', []),
            ('2. same again: everything upstream of report is cached', []),
            (f'3. changed C={config.C:g} -> {new_c}: train, evaluate, report re-run',
             ['--set', f'C={new_c}'])]
    timings = []
    try:
        for title, extra in runs:
            command = ' '.join(['python', os.path.basename(__file__)] + base[2:] + extra)
            print(f"\n{'=' * 72}\n{title}\n$ {command}\n{'=' * 72}", flush=True)
            start = time.perf_counter()
            subprocess.run(base + extra, check=True)
            timings.append(time.perf_counter() - start)
    finally:
        if fresh_dir:
            shutil.rmtree(plant_dir, ignore_errors=True)
    print('\nWhole-process wall times (including Python start-up and imports):')
    for (title, _), seconds in zip(runs, timings):
        print(f'  {seconds:6.2f} s  {title}')


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--plant-dir', help='where the cache is kept '
                        f'(default: {IrisConfig().plant_dir})')
    parser.add_argument('--set', action='append', default=[], metavar='NAME=VALUE',
                        help='override a config parameter, e.g. --set C=0.1 (repeatable)')
    parser.add_argument('--demo', action='store_true',
                        help='run three times in new processes: cold, unchanged, with C changed')
    parser.add_argument('-v', '--verbose', action='store_true', help="show the plant's log")
    args = parser.parse_args()

    config = IrisConfig()
    parse_overrides(config, args.set)
    if args.plant_dir:
        config.plant_dir = args.plant_dir

    if args.demo:
        run_demo(config, args)
    else:
        run_once(config, args.verbose)


if __name__ == '__main__':
    main()
