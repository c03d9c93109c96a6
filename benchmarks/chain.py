"""Chain of N trivial reactors: reactor i receives the product of i-1 and sends its own.

The chain is a generated module file (so that reactor source can be hashed), imported by a
fresh worker process in each of three phases:
  cold  empty plant dir: all N reactors run
  warm  nothing changed: only the target runs (it always does); joblib calls nothing
  edit  the middle reactor's constant is rewritten: it and every reactor after it re-run
joblib runs the same chain as N cached functions x_i = f_i(x_{i-1}), each call verified.
Figures: seconds inside the process (plant creation + run_reactor + shutdown), µs per reactor
(those seconds / N), reactors executed, and the whole process wall time in seconds.
The reference is quadratic, so its chain is capped at REF_CAP reactors.
"""
from benchmarks import _harness as h
from benchmarks._generated import run_phases

SIZES = (100, 1000, 3000, 10000)
QUICK_SIZES = (100, 300)
REF_CAP = 3000
PHASES = ('cold', 'warm', 'edit')
TARGETS = {  # (n, phase) -> (label, predicate on our result)
    (3000, 'cold'): ('<= 3 s', lambda r: r['seconds'] <= 3),
    (10000, 'cold'): ('<= 10 s', lambda r: r['seconds'] <= 10),
    (3000, 'edit'): ('<= 1.5 s', lambda r: r['seconds'] <= 1.5),
}
WARM_TARGET = ('<= 50 µs/r', lambda r, n: r['seconds'] / n * 1e6 <= 50)  # shown from n = 1,000 up


def source(n, kind, edited=False):
    """Module text of an n-long chain; `edited` changes the middle step's constant (and file size)."""
    step = lambda i: 1000003 if edited and i == n // 2 else 1
    if kind == 'joblib':
        lines = ['CALLS = [0]', '']
        for i in range(n):
            lines += ['def f{:05d}(x):'.format(i), '    CALLS[0] += 1',
                      '    return x + {}'.format(step(i)), '']
        lines += ['def run(memory, config):', '    x = 0',
                  '    for i in range({}):'.format(n),
                  "        x = memory.cache(globals()['f%05d' % i])(x)"]
    else:
        lines = ['from pyplant import ReactorFunc', '', '', '@ReactorFunc', 'def r00000(pipe):',
                 "    pipe.send('d00000', 0)", '']
        for i in range(1, n):
            lines += ['', '@ReactorFunc', 'def r{:05d}(pipe):'.format(i),
                      "    x = yield pipe.receive('d{:05d}')".format(i - 1),
                      "    pipe.send('d{:05d}', x + {})".format(i, step(i)), '']
        lines += ['', "REACTORS = [globals()['r%05d' % i] for i in range({})]".format(n)]
    return '\n'.join(lines) + '\n'


def run(ctx):
    rows = []
    for n in (QUICK_SIZES if ctx.quick else SIZES):
        results = {phase: {} for phase in PHASES}
        for impl in ('ours', 'ref', 'joblib'):
            if impl == 'ref' and n > REF_CAP:
                for phase in PHASES:
                    results[phase][impl] = 'skipped (> {:,}: quadratic)'.format(REF_CAP)
                continue
            kind = 'joblib' if impl == 'joblib' else 'pyplant'
            done = run_phases(ctx, impl, kind, ctx.dir('chain', '{}-{}'.format(impl, n)), 'chain_{}'.format(n),
                              PHASES, lambda phase: source(n, kind, edited=(phase == 'edit')))
            for phase in PHASES:
                results[phase][impl] = done[phase]
        for phase in PHASES:
            rows.append(_row(n, phase, results[phase]))
    return rows


def _row(n, phase, res):
    fmt = lambda r: '{}, {:.0f} µs/r, ran {}, wall {}'.format(
        h.fmt_s(r['seconds']), r['seconds'] / n * 1e6, r['ran'], h.fmt_s(r['wall_s']))
    ours = res.get('ours') if h.ok(res.get('ours')) else None
    secs = {impl: r['seconds'] for impl, r in res.items() if h.ok(r)}
    ratios = [h.ratio(secs.get('ours'), secs.get(base), base) for base in ('ref', 'joblib')]
    if phase == 'warm' and n >= 1000:
        label, check = WARM_TARGET
        tgt = h.target(label, check(ours, n) if ours else None)
    elif (n, phase) in TARGETS:
        label, check = TARGETS[(n, phase)]
        tgt = h.target(label, check(ours) if ours else None)
    else:
        tgt = ''
    return h.row('chain {:,} {}'.format(n, phase), res, fmt,
                 ratio_text=', '.join(filter(None, ratios)), target_text=tgt)
