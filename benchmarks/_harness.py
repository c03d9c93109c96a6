"""Shared plumbing: worker subprocesses, the reference venv, result cells and the table.

Only the standard library is imported at module level, because the worker processes of
the reference venv (which has pyplant 0.6.0, numpy and h5py, nothing else) import this too.

Units used throughout: seconds (s), microseconds per reactor (µs/r), MB/s = 10^6 bytes/s,
GB/s = 10^9 bytes/s, RSS in MiB (2^20 bytes).  Array sizes are given in MiB / GiB.
"""
import json
import logging
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

RESULT_MARK = '@@bench-result@@ '
REPO = Path(__file__).resolve().parents[1]
REF_SPEC = 'pyplant==0.6.0'
DEFAULT_REF_VENV = Path.home() / '.cache' / 'pyplant-bench' / 'ref-venv'
IMPLS = ('ours', 'ref', 'joblib', 'raw')


# ----------------------------------------------------------------------------------------
# Worker side (runs inside the subprocess, with either our package or the reference).

def worker_main(fn):
    """Entry point of a worker process: argv[1] is a JSON dict of keyword arguments for fn.

    Prints fn's result dict (plus peak RSS and which pyplant was used) as one marked JSON line.
    """
    sys.setrecursionlimit(100_000)  # pyplant 0.6.0 computes signatures recursively along a chain.
    result = fn(**json.loads(sys.argv[1]))
    result['peak_rss_mb'] = peak_rss_mb()
    if 'pyplant' in sys.modules:
        result['pyplant_file'] = getattr(sys.modules['pyplant'], '__file__', None)
    print(RESULT_MARK + json.dumps(result), flush=True)


def peak_rss_mb():
    """Peak resident set size of this process in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def open_plant(plant_dir, ran):
    """A quiet Plant whose executed reactors are appended (by name) to the list `ran`."""
    from pyplant import Plant
    plant = Plant(str(plant_dir), logLevel=logging.WARNING)
    plant.add_event_listener(Plant.EventType.reactor_started, lambda ev, name, *a: ran.append(name))
    return plant


# ----------------------------------------------------------------------------------------
# Orchestrator side.

class Failed:
    """A worker that crashed or timed out; `msg` is the last line of its stderr."""

    def __init__(self, msg):
        self.msg = msg

    def __repr__(self):
        return 'Failed({!r})'.format(self.msg)


def ensure_ref_venv(path):
    """Return the python of a venv with the reference pyplant 0.6.0, creating it once; None if impossible."""
    path = Path(path)
    python = path / 'bin' / 'python'
    marker = path / '.pyplant-bench-ok'
    if marker.exists() and python.exists():
        return str(python)
    print('Creating the reference venv at {} ({}, numpy, h5py) ...'.format(path, REF_SPEC), flush=True)
    # Isolated mode (-I) and cwd=/ so that neither our checkout nor PYTHONPATH can shadow the reference.
    run = lambda *cmd, timeout: subprocess.run(cmd, check=True, capture_output=True, text=True,
                                               cwd='/', timeout=timeout)
    try:
        run(sys.executable, '-I', '-m', 'venv', '--clear', str(path), timeout=300)
        run(str(python), '-I', '-m', 'pip', 'install', '-q', REF_SPEC, 'numpy', 'h5py', timeout=900)
        run(str(python), '-I', '-c', 'import pyplant, numpy, h5py', timeout=120)
    except (OSError, subprocess.SubprocessError) as e:
        detail = getattr(e, 'stderr', None) or str(e)
        print('!! The reference venv could not be created: {}'.format(detail.strip().splitlines()[-1:]))
        print('!! Continuing without the reference pyplant 0.6.0 (its columns stay empty).', flush=True)
        return None
    marker.write_text(REF_SPEC + '\n')
    return str(python)


class Context:
    """What the workloads need: sizes mode, a temp dir, and a way to run worker subprocesses."""

    def __init__(self, tmp, quick, ref_python):
        self.tmp = Path(tmp)
        self.quick = quick
        self.ref_python = ref_python
        self.timeout = 90 if quick else 900
        self.errors = []  # (impl, label, stderr tail) of every failed worker
        # The reference venv must not see our `pyplant` (it lives next to `benchmarks` in the repo),
        # so it gets a PYTHONPATH holding only a link to this benchmarks package.
        self._ref_path = self.tmp / 'ref-pythonpath'
        self._ref_path.mkdir()
        (self._ref_path / 'benchmarks').symlink_to(REPO / 'benchmarks')

    def dir(self, *parts):
        """A fresh empty directory under the run's temp dir."""
        path = self.tmp.joinpath(*parts)
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def has(self, impl):
        return impl != 'ref' or self.ref_python is not None

    def run(self, impl, worker, **args):
        """Run `python -m benchmarks.<worker> '<json args>'` for impl; return its result dict.

        'ref' runs in the reference venv; everything else runs with this interpreter and the
        repository on PYTHONPATH (so `import pyplant` is our package).  Adds 'wall_s', the
        whole process wall time.  Returns None if impl is unavailable, Failed on a crash.
        """
        if not self.has(impl):
            return None
        env = dict(os.environ)
        if impl == 'ref':
            python, env['PYTHONPATH'] = self.ref_python, str(self._ref_path)
        else:
            python = sys.executable
            env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(REPO), os.environ.get('PYTHONPATH')]))
        label = '{} {} {}'.format(worker, impl, ' '.join('{}={}'.format(k, v) for k, v in args.items()
                                                         if not str(v).startswith('/')))
        print('  .. ' + label, end='', file=sys.stderr, flush=True)
        start = time.perf_counter()
        try:
            proc = subprocess.run([python, '-m', 'benchmarks.' + worker, json.dumps(args)], env=env,
                                  cwd=str(self.tmp), capture_output=True, text=True, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            print('  TIMEOUT', file=sys.stderr)
            self.errors.append((impl, label, 'timed out after {} s'.format(self.timeout)))
            return Failed('timeout > {} s'.format(self.timeout))
        wall = time.perf_counter() - start
        lines = [l for l in proc.stdout.splitlines() if l.startswith(RESULT_MARK)]
        if proc.returncode != 0 or not lines:
            tail = '\n'.join((proc.stderr or proc.stdout).strip().splitlines()[-12:])
            print('  FAILED', file=sys.stderr)
            self.errors.append((impl, label, tail))
            return Failed(_exception_line(tail) or 'exit code {}'.format(proc.returncode))
        print('  {:.2f} s'.format(wall), file=sys.stderr)
        result = json.loads(lines[-1][len(RESULT_MARK):])
        result['wall_s'] = wall
        used = result.get('pyplant_file') or ''
        if impl == 'ref' and used and not used.startswith(str(Path(self.ref_python).parents[1])):
            return Failed('imported the wrong pyplant: ' + used)
        return result


def best_of(runs, key='seconds'):
    """The run with the smallest `key` among several results of one impl, or its first non-result."""
    if any(not isinstance(r, dict) for r in runs):
        return next(r for r in runs if not isinstance(r, dict))
    return min(runs, key=lambda r: r[key])


def _exception_line(tail):
    """The 'SomeError: message' line of a traceback (the last one), else the last line."""
    lines = tail.splitlines()
    found = [l for l in lines if re.match(r'[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b', l)]
    return (found or lines or [''])[-1]


def settle():
    """Flush dirty pages so that one run's write-back does not throttle the next."""
    if hasattr(os, 'sync'):
        os.sync()


# ----------------------------------------------------------------------------------------
# Cells, rows, table.

def fmt_s(seconds):
    """Seconds with about three significant digits."""
    if seconds >= 100:
        return '{:.0f} s'.format(seconds)
    return '{:.2f} s'.format(seconds) if seconds >= 1 else '{:.3f} s'.format(seconds)


def cell(res, fmt):
    """Format a worker result: None -> '-', a str is a note, Failed -> its error, else fmt(res)."""
    if res is None:
        return '-'
    if isinstance(res, str):
        return res
    if isinstance(res, Failed):
        return 'ERROR: ' + res.msg[:70]
    return fmt(res)


def ok(res):
    return isinstance(res, dict)


def ratio(a, b, label):
    """'a/b x label', or '' when either side is missing."""
    if a is None or b is None or not b:
        return ''
    r = a / b
    return ('{:.2f}x {}' if r >= 0.1 else '{:.2g}x {}').format(r, label)


def target(label, met):
    """A target with its verdict on our figure: met is True/False, or None when there is no figure."""
    return label if met is None else '{} {}'.format(label, 'ok' if met else 'MISS')


def row(workload, results, fmt, raw='', ratio_text='', target_text=''):
    """One table row; results maps impl -> worker result (dict / Failed / note str / None)."""
    r = {'workload': workload}
    for impl in ('ours', 'ref', 'joblib'):
        r[impl] = cell(results.get(impl), fmt)
    r.update(raw=raw, ratio=ratio_text, target=target_text)
    r['data'] = {impl: (res if not isinstance(res, Failed) else {'error': res.msg})
                 for impl, res in results.items()}
    return r


COLUMNS = [('workload', 'workload'), ('ours', 'ours'), ('ref', 'reference 0.6.0'),
           ('joblib', 'joblib'), ('raw', 'raw baseline'), ('ratio', 'ratio'), ('target', 'target')]


def format_table(rows):
    """A plain-text table of the rows (one line each)."""
    widths = [max([len(title)] + [len(str(r[key])) for r in rows]) for key, title in COLUMNS]
    line = lambda cells: ' | '.join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    out = [line(title for _, title in COLUMNS), '-+-'.join('-' * w for w in widths)]
    out += [line(r[key] for key, _ in COLUMNS) for r in rows]
    return '\n'.join(out)
