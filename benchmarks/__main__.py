"""python -m benchmarks [--quick] [--json PATH] [--skip-reference] [--only chain,array,...]

Runs every workload on our pyplant, the reference pyplant 0.6.0 (in its own venv) and
joblib.Memory where it applies, and prints one table.  Timings are informative only:
the exit status is 1 only if a worker of ours (or a raw baseline) crashed.
"""
import argparse
import datetime
import json
import platform
import sys
import tempfile
import time

from benchmarks import _harness as h
from benchmarks import array, chain, config, fanout, hdf, shapes, steps

WORKLOADS = {'chain': chain, 'shapes': shapes, 'steps': steps, 'fanout': fanout, 'config': config,
             'array': array, 'hdf': hdf}


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m benchmarks', description=__doc__.split('\n\n')[1])
    parser.add_argument('--quick', action='store_true', help='small sizes (the CI smoke test, < 1 min)')
    parser.add_argument('--json', metavar='PATH', help='also write all figures as JSON to PATH')
    parser.add_argument('--skip-reference', action='store_true', help='do not run pyplant 0.6.0')
    parser.add_argument('--ref-venv', default=str(h.DEFAULT_REF_VENV),
                        help='venv for the reference (created once; default: %(default)s)')
    parser.add_argument('--only', help='comma-separated workloads: ' + ','.join(WORKLOADS))
    args = parser.parse_args(argv)
    names = args.only.split(',') if args.only else list(WORKLOADS)
    unknown = set(names) - set(WORKLOADS)
    if unknown:
        parser.error('unknown workload(s): ' + ', '.join(sorted(unknown)))

    ref_python = None
    if args.skip_reference:
        print('Reference pyplant 0.6.0 skipped (--skip-reference).')
    else:
        ref_python = h.ensure_ref_venv(args.ref_venv)
    start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix='pyplant-bench-') as tmp:
        ctx = h.Context(tmp, args.quick, ref_python)
        for name in names:
            print('[{}]'.format(name), file=sys.stderr, flush=True)
            rows += WORKLOADS[name].run(ctx)
    elapsed = time.perf_counter() - start

    print()
    print(h.format_table(rows))
    print()
    print('ratio: ours / baseline; for seconds and MB lower is better, for MB/s higher is better.')
    print('ran = reactors executed (the target of run_reactor always runs); joblib: functions called.')
    if ref_python and 'chain' in names and not args.quick:
        print('The reference chain is capped at {:,} reactors (it is quadratic).'.format(chain.REF_CAP))
    for _, label, tail in ctx.errors:
        print('\nFAILED: {}\n    {}'.format(label, tail.replace('\n', '\n    ')))
    print('\nTotal benchmark time: {}'.format(h.fmt_s(elapsed)))

    if args.json:
        meta = {'date': datetime.datetime.now().isoformat(timespec='seconds'), 'quick': args.quick,
                'python': sys.version, 'machine': platform.platform(), 'reference_python': ref_python,
                'total_s': elapsed}
        errors = [{'worker': label, 'stderr_tail': tail} for _, label, tail in ctx.errors]
        with open(args.json, 'w') as f:
            json.dump({'meta': meta, 'rows': rows, 'errors': errors}, f, indent=1, default=str)
        print('JSON written to {}'.format(args.json))
    ours_failed = any(impl != 'ref' for impl, _, _ in ctx.errors)
    return 1 if ours_failed else 0


if __name__ == '__main__':
    sys.exit(main())
