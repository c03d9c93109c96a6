"""Array: a 1 GiB float32 array sent by one reactor and received by another in a NEW process.

store  a worker builds the array (untimed), then times plant creation + run_reactor(producer,
       which sends it) + shutdown, i.e. everything pyplant does to persist it, hashing included.
load   a fresh worker times plant creation + run_reactor(consumer, which receives it and reads
       one value per 4 KiB page, so a lazily mapped result is really read) + shutdown.
Baselines in the same run: np.save / np.load (+ the same page touch) of the same array,
np.copy (the memcpy ceiling) and xxhash.xxh3_128 over the buffer.  joblib: a cached function
returning the array (first call stores, a call in a new process loads).
Every figure is the best of REPS runs (each in a fresh process), in MB/s (10^6 B/s), the
hash in GB/s (10^9 B/s).  The data is a random 16 MiB block tiled to size.
"""
import time
from pathlib import Path

import numpy as np

from benchmarks import _harness as h

SIZE, QUICK_SIZE = 2 ** 30, 64 * 2 ** 20  # bytes
REPS = 3
_ARRAY = [None]  # the array the producer reactor / joblib function hands over
_SEEN = []  # checksums of what the consumer reactor received


def make_array(nbytes):
    """A float32 array of nbytes: a random 16 MiB block tiled (random floats are slow to draw)."""
    n = nbytes // 4
    block = np.random.default_rng(0).random(min(n, 2 ** 22), dtype=np.float32)
    return np.resize(block, n)


def touch(a):
    """Read one float per 4 KiB page (forces a memory-mapped array in); returns a checksum."""
    return float(np.asarray(a).reshape(-1)[::1024].sum(dtype=np.float64))


def produce(pipe):
    pipe.send('big', _ARRAY[0])


def consume(pipe):
    big = yield pipe.receive('big')
    _SEEN.append(touch(big))
    pipe.send('checksum', _SEEN[-1])


def cached_array(nbytes):
    return _ARRAY[0]


def _best(fn, reps=REPS):
    """Smallest wall time of reps calls of fn, in seconds."""
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def worker(role, nbytes, path):
    """One timed step (role: raw-store, raw-load, plant-store, plant-load, joblib-store, joblib-load).

    Imports and building the array happen before the clock starts.
    """
    path = Path(path)
    if role.endswith('store'):
        _ARRAY[0] = make_array(nbytes)
    if role == 'raw-store':
        import xxhash
        a = _ARRAY[0]
        out = {'copy_s': _best(lambda: np.copy(a)),
               'hash_s': _best(lambda: xxhash.xxh3_128(memoryview(a).cast('B')).digest())}
        start = time.perf_counter()
        np.save(path / 'raw.npy', a)
        return dict(out, seconds=time.perf_counter() - start)
    if role.startswith('plant'):
        from pyplant import ReactorFunc
        reactors = [ReactorFunc(produce), ReactorFunc(consume)]
    elif role.startswith('joblib'):
        from joblib import Memory
    start = time.perf_counter()
    if role == 'raw-load':
        checksum = touch(np.load(path / 'raw.npy'))
    elif role.startswith('plant'):
        with h.open_plant(path / 'plant', []) as plant:
            plant.add_reactors(*reactors)
            plant.run_reactor(reactors[0] if role == 'plant-store' else reactors[1])
        checksum = _SEEN[-1] if _SEEN else None
    else:
        checksum = touch(Memory(str(path / 'joblib'), verbose=0).cache(cached_array)(nbytes))
    return {'seconds': time.perf_counter() - start, 'checksum': checksum}


def run(ctx):
    nbytes = QUICK_SIZE if ctx.quick else SIZE
    store, load = {}, {}
    for impl, prefix in (('raw', 'raw'), ('ours', 'plant'), ('ref', 'plant'), ('joblib', 'joblib')):
        work = ctx.dir('array', impl)
        store[impl], load[impl] = [], []
        for _ in range(REPS):  # fresh store dir each time, so every store is a cold one
            h.shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            h.settle()
            store[impl].append(ctx.run(impl, 'array', role=prefix + '-store', nbytes=nbytes, path=str(work)))
        for _ in range(REPS):  # the last store is loaded by fresh processes
            load[impl].append(ctx.run(impl, 'array', role=prefix + '-load', nbytes=nbytes, path=str(work)))
        h.shutil.rmtree(work, ignore_errors=True)
    store = {impl: h.best_of(runs) for impl, runs in store.items()}
    load = {impl: h.best_of(runs) for impl, runs in load.items()}

    mbs = lambda r: nbytes / r['seconds'] / 1e6
    fmt = lambda r: '{:,.0f} MB/s ({})'.format(mbs(r), h.fmt_s(r['seconds']))
    size = '{} MiB'.format(nbytes >> 20) if nbytes < 2 ** 30 else '{} GiB'.format(nbytes >> 30)
    raw_store, raw_load = store.pop('raw'), load.pop('raw')
    rows = []
    for name, res, raw, label, need in (('store', store, raw_store, 'np.save', 0.9),
                                        ('load (new process)', load, raw_load, 'np.load', 1.0)):
        ours = mbs(res['ours']) if h.ok(res['ours']) else None
        base = mbs(raw) if h.ok(raw) else None
        if name.startswith('load') and h.ok(res['ours']) and h.ok(raw) and res['ours']['checksum'] != raw['checksum']:
            res['ours'] = h.Failed('wrong data: checksum {} != {}'.format(res['ours']['checksum'], raw['checksum']))
        rows.append(h.row('array {} {}'.format(size, name), res, fmt,
                          raw=h.cell(raw, lambda r: label + ' ' + fmt(r)),
                          ratio_text=h.ratio(ours, base, label),
                          target_text=h.target('>= {}x {}'.format(need, label),
                                               None if ours is None or base is None else ours >= need * base)))
    if h.ok(raw_store):
        rows.append(h.row('array {} memcpy (np.copy)'.format(size), {}, None,
                          raw='{:,.0f} MB/s'.format(nbytes / raw_store['copy_s'] / 1e6)))
        rows.append(h.row('array {} xxh3_128 hash'.format(size), {}, None,
                          raw='{:.2f} GB/s'.format(nbytes / raw_store['hash_s'] / 1e9)))
    return rows


if __name__ == '__main__':
    h.worker_main(worker)
