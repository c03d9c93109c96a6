"""Config A -> B -> A: a 4-step chain load -> scale (reads param p) -> shift -> report.

Three fresh processes on one plant dir: p=1 (A, cold), p=2 (B), p=1 again (A).  The figure
of interest is the number of reactors executed on the return to A: a cache that keeps
earlier versions runs only the target (1); pyplant 0.6.0 keeps one version and re-runs
scale, shift and report.  joblib (cached functions, one per step) calls nothing on return.
Also reported: seconds inside the process and process wall time.
"""
from benchmarks import _harness as h
from benchmarks._generated import write_module

PHASES = (('A', 1), ('B', 2), ('A again', 1))

PYPLANT_SOURCE = '''from pyplant import ReactorFunc


@ReactorFunc
def cfg_load(pipe):
    pipe.send('raw', 10)


@ReactorFunc
def cfg_scale(pipe, config):
    raw = yield pipe.receive('raw')
    pipe.send('scaled', raw * config.p)


@ReactorFunc
def cfg_shift(pipe):
    scaled = yield pipe.receive('scaled')
    pipe.send('shifted', scaled + 1)


@ReactorFunc
def cfg_report(pipe):
    shifted = yield pipe.receive('shifted')
    pipe.send('report', 'value: {}'.format(shifted))


REACTORS = [cfg_load, cfg_scale, cfg_shift, cfg_report]
'''

JOBLIB_SOURCE = '''CALLS = [0]


def cfg_load():
    CALLS[0] += 1
    return 10


def cfg_scale(raw, p):
    CALLS[0] += 1
    return raw * p


def cfg_shift(scaled):
    CALLS[0] += 1
    return scaled + 1


def cfg_report(shifted):
    CALLS[0] += 1
    return 'value: {}'.format(shifted)


def run(memory, config):
    raw = memory.cache(cfg_load)()
    scaled = memory.cache(cfg_scale)(raw, config['p'])
    memory.cache(cfg_report)(memory.cache(cfg_shift)(scaled))
'''


def run(ctx):
    results = {phase: {} for phase, _ in PHASES}
    for impl in ('ours', 'ref', 'joblib'):
        kind = 'joblib' if impl == 'joblib' else 'pyplant'
        work = ctx.dir('config', impl)
        write_module(work, 'config_mod', JOBLIB_SOURCE if kind == 'joblib' else PYPLANT_SOURCE)
        failed = None
        for phase, p in PHASES:
            res = failed or ctx.run(impl, '_generated', kind=kind, module_dir=str(work), module='config_mod',
                                    store_dir=str(work / 'store'), config={'p': p}, phase=phase.replace(' ', '-'))
            failed = res if isinstance(res, h.Failed) else failed
            results[phase][impl] = res
        h.shutil.rmtree(work, ignore_errors=True)

    fmt = lambda r: 'ran {}, {}, wall {}'.format(r['ran'], h.fmt_s(r['seconds']), h.fmt_s(r['wall_s']))
    rows = []
    for phase, p in PHASES:
        res = results[phase]
        ours, ref = (res[i]['seconds'] if h.ok(res[i]) else None for i in ('ours', 'ref'))
        tgt = ''
        if phase == 'A again':
            got = res['ours']['ran'] if h.ok(res['ours']) else None
            tgt = h.target('ran 1 (target only)', None if got is None else got <= 1)
        rows.append(h.row('config A->B->A: {} (p={})'.format(phase, p), res, fmt,
                          ratio_text=h.ratio(ours, ref, 'ref'), target_text=tgt))
    return rows
