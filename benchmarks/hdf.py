"""HDF out of core: a 4 GiB float32 array filled slice by slice, then reduced chunk-wise.

plant  one fresh process runs the target `hdf_reduce`, which receives the array produced by
       `hdf_fill` (pipe.allocate(..., specs.HdfArraySpec, shape, dtype=float32), filled in
       16 MiB slices, then sent); timed: plant creation + run_reactor + shutdown.
raw    the same fill and reduce with plain h5py (create, fill, close, reopen, reduce) in its
       own process.
Figures: seconds, and peak RSS of the worker process in MiB (ru_maxrss; includes the
interpreter, numpy and h5py), of the fastest of REPS interleaved runs.  Dirty pages are
flushed (sync) before each run.
"""
import time
from pathlib import Path

import numpy as np

from benchmarks import _harness as h

SIZE, QUICK_SIZE = 4 * 2 ** 30, 128 * 2 ** 20  # bytes
COLS = 4096  # float32 columns: 16 KiB rows
BLOCK = 1024  # rows per slice: 16 MiB
REPS = 2  # best of


def fill(ds, block):
    """Write ds slice by slice with cheap, position-dependent values."""
    buf = np.empty((block, ds.shape[1]), dtype=np.float32)
    for i in range(0, ds.shape[0], block):
        k = min(block, ds.shape[0] - i)
        buf[:k] = np.float32(i % 101)
        ds[i:i + k] = buf[:k]


def reduce_sum(ds, block):
    """Sum of all elements (float64), read slice by slice."""
    return float(sum(ds[i:i + block].sum(dtype=np.float64) for i in range(0, ds.shape[0], block)))


def hdf_fill(pipe, config):
    from pyplant import specs
    ds = pipe.allocate('big', specs.HdfArraySpec, shape=(config.rows, config.cols), dtype=np.float32)
    fill(ds, config.block)
    pipe.send('big', ds, specs.HdfArraySpec)


def hdf_reduce(pipe, config):
    ds = yield pipe.receive('big')
    pipe.send('total', reduce_sum(ds, config.block))


def worker(role, rows, path):
    """Fill + reduce once, timed after the imports; returns seconds and the sum."""
    import h5py
    if role == 'plant':
        from pyplant import ReactorFunc, specs
    path = Path(path)
    start = time.perf_counter()
    if role == 'raw':
        with h5py.File(path / 'raw.h5', 'w') as f:
            fill(f.create_dataset('data', shape=(rows, COLS), dtype=np.float32), BLOCK)
        with h5py.File(path / 'raw.h5', 'r') as f:
            total = reduce_sum(f['data'], BLOCK)
    else:
        reactors = [ReactorFunc(hdf_fill), ReactorFunc(hdf_reduce)]
        with h.open_plant(path / 'plant', []) as plant:
            plant.set_config({'rows': rows, 'cols': COLS, 'block': BLOCK})
            plant.warehouse.register_ingredient_specs([specs.HdfArraySpec()])
            plant.add_reactors(*reactors)
            plant.run_reactor(reactors[1])
            total = plant.fetch_ingredient('total')
    return {'seconds': time.perf_counter() - start, 'total': total}


def run(ctx):
    nbytes = QUICK_SIZE if ctx.quick else SIZE
    rows = nbytes // (COLS * 4)
    runs = {'raw': [], 'ours': [], 'ref': []}
    for _ in range(REPS):  # interleaved, so that no side alone pays for first-touched memory
        for impl, results in runs.items():
            work = ctx.dir('hdf', impl)
            h.settle()
            results.append(ctx.run(impl, 'hdf', role='raw' if impl == 'raw' else 'plant', rows=rows, path=str(work)))
            h.shutil.rmtree(work, ignore_errors=True)
    res = {impl: h.best_of(results) for impl, results in runs.items()}
    raw = res.pop('raw')
    for impl in ('ours', 'ref'):
        if h.ok(res[impl]) and h.ok(raw) and res[impl]['total'] != raw['total']:
            res[impl] = h.Failed('wrong sum {} != {}'.format(res[impl]['total'], raw['total']))
    res['joblib'] = 'n/a'

    size = '{} MiB'.format(nbytes >> 20) if nbytes < 2 ** 30 else '{} GiB'.format(nbytes >> 30)
    ours = res['ours'] if h.ok(res['ours']) else None
    base = raw if h.ok(raw) else None
    get = lambda r, key: r[key] if r else None
    secs = lambda r: h.fmt_s(r['seconds'])
    mem = lambda r: '{:.0f} MiB'.format(r['peak_rss_mb'])
    return [
        h.row('hdf {} fill + reduce'.format(size), res, secs, raw=h.cell(raw, lambda r: 'h5py ' + secs(r)),
              ratio_text=h.ratio(get(ours, 'seconds'), get(base, 'seconds'), 'h5py'),
              target_text=h.target('<= 1.1x h5py', None if not (ours and base)
                                   else ours['seconds'] <= 1.1 * base['seconds'])),
        h.row('hdf {} peak RSS'.format(size), res, mem, raw=h.cell(raw, lambda r: 'h5py ' + mem(r)),
              ratio_text=h.ratio(get(ours, 'peak_rss_mb'), get(base, 'peak_rss_mb'), 'h5py'),
              target_text=h.target('<= 150 MiB', None if not ours else ours['peak_rss_mb'] <= 150)),
    ]


if __name__ == '__main__':
    h.worker_main(worker)
