"""Benchmark suite for pyplant: `python -m benchmarks [--quick] [--json PATH] [--skip-reference]`.

One module per workload (chain, fanout, config, array, hdf); each has run(ctx) -> table rows
and, where it needs its own worker process, a __main__ entry used as
`python -m benchmarks.<module> '<json args>'`.  Plumbing is in _harness, the generic
worker for generated reactor modules in _generated.  Extra packages: the `bench` extra
(joblib, psutil) plus xxhash, numpy and h5py from the core dependencies.
"""
