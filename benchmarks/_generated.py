"""Worker: import a generated module of reactors (or joblib-cached functions) and run it once.

Generated pyplant modules define REACTORS (the last one is the target that run_reactor runs);
generated step modules a @pipeline PIPELINE; generated joblib modules define run(memory, config)
and a call counter CALLS = [0].
Run as `python -m benchmarks._generated '<json args>'`; reports, in seconds:
  seconds   plant creation + add_reactors + run_reactor + shutdown (joblib: Memory + all calls)
  import_s  importing the generated module (and with it pyplant / joblib)
  ran       reactors or steps executed (reactor_started events), or joblib functions called
"""
import importlib
import sys
import time

from benchmarks._harness import open_plant, worker_main


def write_module(directory, name, source):
    """Write a generated module file (orchestrator side); returns its path."""
    path = directory / (name + '.py')
    path.write_text(source)
    return path


def run_phases(ctx, impl, kind, work, module, phases, text_for):
    """Run ``phases`` of one implementation, each in a fresh worker (orchestrator side): the
    module is rewritten with ``text_for(phase)`` before every phase but 'warm', which sees the
    very file (and .pyc) of the run before it; after a failure the later phases report it.
    Returns {phase: result}; ``work`` is removed at the end."""
    import shutil
    from benchmarks._harness import Failed
    results, failed = {}, None
    for phase in phases:
        if phase != 'warm':
            write_module(work, module, text_for(phase))
        res = failed or ctx.run(impl, '_generated', kind=kind, module_dir=str(work), module=module,
                                store_dir=str(work / 'store'), phase=phase)
        failed = res if isinstance(res, Failed) else failed
        results[phase] = res
    shutil.rmtree(work, ignore_errors=True)
    return results


def run(kind, module_dir, module, store_dir, config=None, phase=None):
    """`phase` only labels the run in the progress output."""
    start = time.perf_counter()
    sys.path.insert(0, module_dir)
    mod = importlib.import_module(module)
    if kind == 'joblib':
        from joblib import Memory
    imported = time.perf_counter()
    if kind == 'joblib':
        mod.run(Memory(store_dir, verbose=0), config or {})
        ran = mod.CALLS[0]
    elif kind == 'steps':
        names = []
        with open_plant(store_dir, names) as plant:
            plant.run(mod.PIPELINE)
        ran = len(names)
    else:
        names = []
        with open_plant(store_dir, names) as plant:
            if config is not None:
                plant.set_config(config)
            plant.add_reactors(*mod.REACTORS)
            plant.run_reactor(mod.REACTORS[-1])
        ran = len(names)
    return {'seconds': time.perf_counter() - imported, 'import_s': imported - start, 'ran': ran}


if __name__ == '__main__':
    worker_main(run)
