"""Crash safety: a plant killed with SIGKILL at random moments (while a large array is written,
during LMDB commits of a chain of tiny reactors, while an HDF array is filled, between reactors)
re-runs to the from-scratch result, re-runs no reactor that finished before the kill, and opens
cleanly. The driver and its workload live in ``kill_driver.py``; ``python -m tests.kill_driver
--kills 1000`` is the long version of ``test_random_kills``.
"""
from __future__ import annotations

import glob
import json
import shutil
import time

import kill_driver
from kill_driver import SMALL, TARGET, KillDriver, Sizes, Workload


def test_random_kills(tmp_path):
    """About 50 SIGKILLs at random moments, on one plant directory reset from time to time:
    no corrupt plant, no stale result, no finished reactor lost."""
    began = time.monotonic()
    driver = KillDriver(tmp_path, SMALL, seed=20240607, reset_every=(4, 10))
    counters = driver.run(kills=50, max_cycles=120, progress_every=0)
    summary = (f"{counters.line()} (cycles {counters.cycles}, completed before the signal "
               f"{counters.completed_before_signal}, landed in {counters.phases}, "
               f"{time.monotonic() - began:.0f} s)")
    assert counters.kills == 50, summary
    assert (counters.corrupt, counters.stale, counters.lost) == (0, 0, 0), \
        summary + "\n\n" + "\n\n".join(counters.details)


def test_kill_while_big_array_is_written_then_rerun(tmp_path):
    """Killed while the 128 MB 'big' array is being written (a temp blob on disk proves it):
    the partial write is never visible, the re-run starts gen_big again (it never finished)
    and ends with the from-scratch result. (Reactors pinned with ``version=``: this test is
    about crashes, not code hashing.)"""
    sizes = Sizes(big_n=32 * 1024 * 1024, chain_len=5, hdf_rows=256, hdf_cols=256, hdf_block=32)
    workload = Workload(tmp_path / "work", sizes, pin_code=True)
    config = {"big": 1, "chain": 1, "hdf": 1}
    reference = workload.run(tmp_path / "scratch", config)
    assert reference.problem() is None, reference.stderr
    plant = tmp_path / "plant"
    tries = []
    for fraction in [0.05 * i for i in range(1, 20)] * 2:  # gen_big runs first: early on
        shutil.rmtree(plant, ignore_errors=True)
        killed = workload.run(plant, config, kill_after=reference.work * fraction)
        temps = glob.glob(str(plant / "blobs" / "**" / "*.tmp-*"), recursive=True)
        tries.append((round(fraction, 2), killed.signalled, sorted(killed.finished), len(temps)))
        if killed.signalled and "gen_big" in killed.started and "gen_big" not in killed.finished and temps:
            break
    else:
        raise AssertionError(f"never killed while 'big' was written: {tries}")
    rerun = workload.run(plant, config)
    assert rerun.problem() is None, rerun.stderr
    assert rerun.result == reference.result
    assert "gen_big" in rerun.started
    assert not (set(rerun.started) - {TARGET}) & killed.finished


def test_finished_line_means_committed(tmp_path):
    """Every reactor whose 'finished' line reached the log of a killed run is verified, not
    run, by the next run (reactor_finished fires after the LMDB commit). Pinned code, as above."""
    workload = Workload(tmp_path / "work", SMALL, pin_code=True)
    config = {"big": 2, "chain": 2, "hdf": 2}
    plant = tmp_path / "plant"
    clean = workload.run(tmp_path / "scratch", config)
    assert clean.problem() is None, clean.stderr
    # kill in the middle of the chain (after the big part, before the HDF part): as soon as
    # the first link's 'finished' line is in the log (an event, not a time: no load-dependent
    # window)
    killed = workload.run(plant, config, kill_when="finished c000")
    assert killed.signalled and "c000" in killed.finished, \
        f"could not kill inside the chain: finished {sorted(killed.finished)}"
    rerun = workload.run(plant, config)
    assert rerun.problem() is None, rerun.stderr
    assert rerun.result == clean.result
    assert not (set(rerun.started) - {TARGET}) & killed.finished, \
        f"re-ran {sorted((set(rerun.started) - {TARGET}) & killed.finished)}: {json.dumps(rerun.reasons)}"
    # and the re-run ran everything that had not finished (but for one killed between its
    # commit and its 'finished' line)
    unfinished = set(kill_driver.reactor_names(SMALL)) - killed.finished
    assert len(unfinished - set(rerun.started)) <= 1, sorted(unfinished - set(rerun.started))


def test_rerun_in_other_processes_verifies_everything(tmp_path):
    """The kill workload run to completion, then re-run by new processes (each with its own
    PYTHONHASHSEED, as every Python process has by default) on copies of the plant directory:
    each re-run starts only the target. A reactor's code hash must not depend on the process;
    if it does, every re-run after a kill may re-run finished reactors (counted as 'lost')."""
    workload = Workload(tmp_path / "work", SMALL)
    config = {"big": 0, "chain": 0, "hdf": 0}
    first = workload.run(tmp_path / "plant", config, env={"PYTHONHASHSEED": "0"})
    assert first.problem() is None, first.stderr
    reran = {}
    for seed in range(1, 17):
        copy = tmp_path / f"copy{seed}"
        shutil.copytree(tmp_path / "plant", copy)
        again = workload.run(copy, config, env={"PYTHONHASHSEED": str(seed)})
        assert again.problem() is None, again.stderr
        assert again.result == first.result
        if again.started != [TARGET]:
            reran[seed] = again.reasons
        shutil.rmtree(copy)
    assert reran == {}, f"re-runs by PYTHONHASHSEED: {json.dumps(reran, indent=1)}"
