"""Fan-out: one producer, N consumers and a final `gather` reactor receiving all N products.

Only the middle consumer reads the config parameter `special`.  Three fresh processes:
  cold    empty plant dir, special=1: all N + 2 reactors run
  warm    nothing changed: only gather (the target) runs
  config  special=2: ideally gather and the one consumer that read `special` run (2)
Figures: seconds inside the process (plant creation + run_reactor + shutdown), reactors
executed, and the process wall time in seconds.  Not applicable to joblib.
"""
from benchmarks import _harness as h
from benchmarks._generated import write_module

N, QUICK_N = 1000, 100
PHASES = (('cold', 1), ('warm', 1), ('config', 2))  # (phase, value of `special`)


def source(n):
    """Module text: produce -> c0000..c{n-1} -> gather; the middle consumer reads config.special."""
    lines = ['from pyplant import ReactorFunc', '', '', '@ReactorFunc', 'def produce(pipe):',
             "    pipe.send('base', 1)", '']
    for i in range(n):
        special = i == n // 2
        lines += ['', '@ReactorFunc', 'def c{:04d}(pipe{}):'.format(i, ', config' if special else ''),
                  "    base = yield pipe.receive('base')",
                  "    pipe.send('o{:04d}', base * {})".format(i, 'config.special' if special else i), '']
    lines += ['', '@ReactorFunc', 'def gather(pipe):', '    total = 0',
              '    for i in range({}):'.format(n), "        total += yield pipe.receive('o%04d' % i)",
              "    pipe.send('total', total)", '', '',
              "REACTORS = [produce] + [globals()['c%04d' % i] for i in range({})] + [gather]".format(n)]
    return '\n'.join(lines) + '\n'


def run(ctx):
    n = QUICK_N if ctx.quick else N
    results = {phase: {} for phase, _ in PHASES}
    for impl in ('ours', 'ref'):
        work = ctx.dir('fanout', impl)
        write_module(work, 'fanout_mod', source(n))
        failed = None
        for phase, special in PHASES:
            res = failed or ctx.run(impl, '_generated', kind='pyplant', module_dir=str(work), module='fanout_mod',
                                    store_dir=str(work / 'store'), config={'special': special}, phase=phase)
            failed = res if isinstance(res, h.Failed) else failed
            results[phase][impl] = res
        h.shutil.rmtree(work, ignore_errors=True)

    fmt = lambda r: '{}, ran {}, wall {}'.format(h.fmt_s(r['seconds']), r['ran'], h.fmt_s(r['wall_s']))
    ideal = {'cold': n + 2, 'warm': 1, 'config': 2}
    rows = []
    for phase, _ in PHASES:
        res = dict(results[phase], joblib='n/a')
        ours, ref = (res[i]['seconds'] if h.ok(res[i]) else None for i in ('ours', 'ref'))
        got = res['ours']['ran'] if h.ok(res['ours']) else None
        tgt = h.target('ran {} (ideal)'.format(ideal[phase]), None if got is None else got <= ideal[phase])
        name = 'fan-out {:,} {}'.format(n, 'change 1 param' if phase == 'config' else phase)
        rows.append(h.row(name, res, fmt, ratio_text=h.ratio(ours, ref, 'ref'), target_text=tgt))
    return rows
