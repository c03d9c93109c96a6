"""Chain of N trivial steps: step i is a plain function of the result of step i-1.

The same workload as ``chain.py`` written with ``@step`` functions and a ``@pipeline``
controller instead of reactors, in three phases of a fresh worker process each:
  cold  empty plant dir: all N steps run
  warm  nothing changed: no step runs (a step is not a target that always runs)
  edit  the middle step's constant is rewritten: it and every step after it re-run
joblib runs the same chain as N cached functions (``chain.source(n, 'joblib')``). Figures:
seconds inside the process (plant creation + run + shutdown), µs per step, steps executed.
"""
from benchmarks import _harness as h
from benchmarks import chain
from benchmarks._generated import run_phases

SIZES = (100, 1000, 3000)
QUICK_SIZES = (100, 300)
PHASES = ('cold', 'warm', 'edit')


def source(n, edited=False):
    """Module text of an n-long chain of steps and the pipeline that calls them in order."""
    lines = ['from pyplant import pipeline, step', '']
    for i in range(n):
        constant = 1000003 if edited and i == n // 2 else 1
        lines += ['@step', 'def s{:05d}(x):'.format(i), '    return x + {}'.format(constant), '']
    lines += ['@pipeline', 'def PIPELINE():', '    x = 0',
              '    for i in range({}):'.format(n), "        x = globals()['s%05d' % i](x)", '    return x']
    return '\n'.join(lines) + '\n'


def run(ctx):
    rows = []
    for n in (QUICK_SIZES if ctx.quick else SIZES):
        results = {phase: {} for phase in PHASES}
        for impl in ('ours', 'joblib'):
            kind = 'joblib' if impl == 'joblib' else 'steps'
            text_for = (lambda phase: chain.source(n, 'joblib', edited=(phase == 'edit'))) if impl == 'joblib' \
                else (lambda phase: source(n, edited=(phase == 'edit')))
            done = run_phases(ctx, impl, kind, ctx.dir('steps', '{}-{}'.format(impl, n)), 'steps_{}'.format(n),
                              PHASES, text_for)
            for phase in PHASES:
                results[phase][impl] = done[phase]
        for phase in PHASES:
            res = results[phase]
            secs = {impl: r['seconds'] for impl, r in res.items() if h.ok(r)}
            fmt = lambda r, n=n: '{}, {:.0f} µs/step, ran {}'.format(h.fmt_s(r['seconds']),
                                                                     r['seconds'] / n * 1e6, r['ran'])
            rows.append(h.row('steps chain {:,} {}'.format(n, phase), res, fmt,
                              ratio_text=h.ratio(secs.get('ours'), secs.get('joblib'), 'joblib')))
    return rows
