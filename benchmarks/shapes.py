"""Chains of other shapes: definition order and module state.

  shuffled  N reactors defined and added in a random order (a first run must find every
            producer; no trace says who sends what): cold-run µs per reactor, next to the same
            chain defined in order, at 2k / 8k / 32k reactors (quick: 300 / 1k)
  appending 3,000 reactors that each append to one module-level list (mutable module state
            must not count as code: the warm run executes only the target, the cold run stays
            linear): cold and warm, next to the plain chain of the same size

Each figure is one fresh worker process (benchmarks._generated), ours only: the reference and
joblib have no notion of either shape.
"""
import random

from benchmarks import _harness as h
from benchmarks._generated import write_module

SHUFFLED_SIZES = (2000, 8000, 32000)
QUICK_SHUFFLED_SIZES = (300, 1000)
APPEND_SIZE, QUICK_APPEND_SIZE = 3000, 300


def source(n, shuffled=False, append=False):
    """Module text of an n-long chain, its reactors defined (and listed) in order or shuffled."""
    blocks = []
    for i in range(n):
        body = ["@ReactorFunc", "def r{:05d}(pipe):".format(i)]
        if i:
            body.append("    x = yield pipe.receive('d{:05d}')".format(i - 1))
        if append:
            body.append("    RESULTS.append({})".format(i))
        body.append("    pipe.send('d{:05d}', {})".format(i, "x + 1" if i else "0"))
        blocks.append("\n".join(body))
    order = list(range(n))
    if shuffled:
        random.Random(n).shuffle(order)
    head = "from pyplant import ReactorFunc\n\nRESULTS = []\n\n\n"
    target = "r{:05d}".format(n - 1)
    tail = "\n\nREACTORS = [r for r in [{}] if r is not {t}] + [{t}]\n".format(
        ", ".join("r{:05d}".format(i) for i in order), t=target)
    return head + "\n\n\n".join(blocks[i] for i in order) + tail


def _run_chain(ctx, n, phases, **shape):
    work = ctx.dir('shapes', '{}-{}'.format(n, '-'.join(k for k, v in sorted(shape.items()) if v) or 'plain'))
    module = 'shape_{}'.format(n)
    write_module(work, module, source(n, **shape))
    results = {}
    for phase in phases:
        results[phase] = ctx.run('ours', '_generated', kind='pyplant', module_dir=str(work), module=module,
                                 store_dir=str(work / 'store'), phase=phase)
    h.shutil.rmtree(work, ignore_errors=True)
    return results


def _fmt(n):
    return lambda r: '{}, {:.0f} µs/r, ran {}'.format(h.fmt_s(r['seconds']), r['seconds'] / n * 1e6, r['ran'])


def run(ctx):
    rows = []
    for n in (QUICK_SHUFFLED_SIZES if ctx.quick else SHUFFLED_SIZES):
        plain = _run_chain(ctx, n, ['cold'])['cold']
        shuffled = _run_chain(ctx, n, ['cold'], shuffled=True)['cold']
        ratio = h.ratio(shuffled['seconds'], plain['seconds'], 'in order') \
            if h.ok(shuffled) and h.ok(plain) else ''
        rows.append(h.row('chain {:,} cold, in order'.format(n), {'ours': plain}, _fmt(n)))
        rows.append(h.row('chain {:,} cold, shuffled'.format(n), {'ours': shuffled}, _fmt(n),
                          ratio_text=ratio))
    n = QUICK_APPEND_SIZE if ctx.quick else APPEND_SIZE
    plain = _run_chain(ctx, n, ['cold', 'warm'])
    appending = _run_chain(ctx, n, ['cold', 'warm'], append=True)
    for phase in ('cold', 'warm'):
        res = appending[phase]
        ratio = h.ratio(res['seconds'], plain[phase]['seconds'], 'plain chain') \
            if h.ok(res) and h.ok(plain[phase]) else ''
        target = h.target('ran 1', res['ran'] == 1 if h.ok(res) else None) if phase == 'warm' else ''
        rows.append(h.row('chain {:,} appending to a list, {}'.format(n, phase), {'ours': res}, _fmt(n),
                          ratio_text=ratio, target_text=target))
    return rows
