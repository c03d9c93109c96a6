#!/usr/bin/env python
"""Out-of-core data with pyplant: a large HDF5 array written and reduced block by block.

    produce  -> 'big' (rows x cols float32, on disk, ~size_gb)
    reduce   -> 'stats' (mean / std / min / max, computed one block at a time)
    summary  -> prints the stats (the target: always runs, needs only 'stats')

Neither reactor ever holds the whole array in memory. The first run writes and
scans ~1 GB; the second run finds both ingredients fresh and is instant.

    python examples/out_of_core.py                  # cold: produce + reduce
    python examples/out_of_core.py                  # warm: only summary runs
    python examples/out_of_core.py --size-gb 0.25   # new size: everything re-runs
"""
import argparse
import logging
import os
import sys
import tempfile
import time

import numpy as np

try:
    from pyplant import ConfigBase, Plant, ReactorFunc, specs
except ImportError:  # Running from a source checkout without `pip install -e .`.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from pyplant import ConfigBase, Plant, ReactorFunc, specs


PIPELINE = ['produce', 'reduce', 'summary']


class BigConfig(ConfigBase):
    def __init__(self):
        super().__init__()
        self.size_gb = 1.0      # Size of the array on disk.
        self.cols = 1024        # Row length: 1024 float32 = 4 KiB per row.
        # Auxiliary parameters never trigger a re-run: the block size changes
        # how the work is split, not the result.
        self.block_rows = 8192   # 8192 rows x 4 KiB = 32 MiB per block.
        self.plant_dir = os.path.join(tempfile.gettempdir(), '.pyplant-out-of-core')
        self.mark_auxiliary(['block_rows', 'plant_dir'])


def blocks(n_rows, block_rows):
    """Yield (start, stop) row ranges covering [0, n_rows)."""
    for start in range(0, n_rows, block_rows):
        yield start, min(start + block_rows, n_rows)


@ReactorFunc
def produce(pipe, config):
    """Fill a (rows, cols) array from a deterministic formula, one block at a time."""
    cols = config.cols
    rows = int(config.size_gb * 2**30) // (cols * 4)

    # An HDF5 dataset allocated by the plant, zero-filled, written in place.
    big = pipe.allocate('big', specs.HdfArraySpec, shape=(rows, cols), dtype=np.float32)
    # x[i, j] = sin(i / 1000) * cos(j / 100) + ((i + j) mod 10) / 10
    j = np.arange(cols)
    cos_j = np.cos(j / 100).astype(np.float32)
    ripple = (((np.arange(10)[:, None] + j) % 10) / 10).astype(np.float32)  # Row k: ((k + j) mod 10) / 10.
    for start, stop in blocks(rows, config.block_rows):
        i = np.arange(start, stop)
        block = np.outer(np.sin(i / 1000).astype(np.float32), cos_j)
        block += ripple[i % 10]
        big[start:stop] = block  # Written to disk; the next block reuses the memory.

    pipe.send('big', big, specs.HdfArraySpec)


@ReactorFunc
def reduce(pipe, config):
    """Mean, std, min and max of the whole array, streaming over blocks."""
    big = yield pipe.receive('big')  # An h5py.Dataset: nothing is read yet.

    # Running count/mean/M2 merged block by block (Chan et al.), in float64.
    n, mean, m2 = 0, 0.0, 0.0
    lo, hi = np.inf, -np.inf
    for start, stop in blocks(big.shape[0], config.block_rows):
        block = big[start:stop]  # Only this block is read into memory.
        b_n, b_mean = block.size, block.mean(dtype=np.float64)
        b_m2 = block.var(dtype=np.float64) * b_n
        delta = b_mean - mean
        mean += delta * b_n / (n + b_n)
        m2 += b_m2 + delta ** 2 * n * b_n / (n + b_n)
        n += b_n
        lo, hi = min(lo, block.min()), max(hi, block.max())

    pipe.send('stats', {'shape': big.shape, 'gb': big.size * big.dtype.itemsize / 2**30,
                        'mean': mean, 'std': (m2 / n) ** 0.5, 'min': lo, 'max': hi})


@ReactorFunc
def summary(pipe):
    stats = yield pipe.receive('stats')
    rows, cols = stats['shape']
    print(f"\nArray {rows} x {cols} float32 ({stats['gb']:.2f} GiB on disk)")
    print(f"mean {stats['mean']:.6f}   std {stats['std']:.6f}   "
          f"min {stats['min']:.6f}   max {stats['max']:.6f}")


def print_run_table(history, total_seconds):
    """One row per reactor: did it run or come from the cache, and how long it took."""
    print(f"\n{'reactor':<10} {'status':<7} {'time (s)':>9}  reason")
    for name in PIPELINE + [n for n in history if n not in PIPELINE]:
        record = history.get(name)
        if record is None:  # Never touched: its outputs were not even needed.
            print(f'{name:<10} {"cached":<7} {"-":>9}')
            continue
        ran = getattr(record, 'wasRun', True)
        reason = getattr(record, 'reason', '') if ran else ''
        print(f'{name:<10} {"ran" if ran else "cached":<7} {record.totalRuntime:>9.3f}  {reason or ""}')
    print(f'Total wall time: {total_seconds:.3f} s')


def peak_memory_mib():
    try:
        import resource
    except ImportError:  # Windows.
        return None
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024 if sys.platform != 'darwin' else kib / 2**20  # macOS reports bytes.


def main():
    config = BigConfig()
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--size-gb', type=float, default=config.size_gb,
                        help=f'array size in GiB (default: {config.size_gb})')
    parser.add_argument('--plant-dir', default=config.plant_dir,
                        help=f'where the cache is kept (default: {config.plant_dir})')
    parser.add_argument('-v', '--verbose', action='store_true', help="show the plant's log")
    args = parser.parse_args()
    config.size_gb = args.size_gb
    config.plant_dir = args.plant_dir

    start = time.perf_counter()
    with Plant(config.plant_dir) as plant:
        log = logging.getLogger('pyplant')  # The plant logs each step at INFO level.
        if args.verbose and not log.handlers:
            logging.basicConfig(format='[%(name)s] %(message)s')
        log.setLevel(logging.INFO if args.verbose else logging.WARNING)
        plant.set_config(config)
        plant.add_reactors(produce, reduce, summary)
        plant.run_reactor(summary)
        history = plant.get_execution_history()
    print_run_table(history, time.perf_counter() - start)

    peak = peak_memory_mib()
    if peak is not None:
        print(f'Peak memory of this process: {peak:.0f} MiB')


if __name__ == '__main__':
    main()
