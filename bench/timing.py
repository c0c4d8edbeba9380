"""Median wall-clock timing shared by the bench scripts (bench/run.py keeps its CUDA-event timer)."""
from __future__ import annotations

import time


def median_time(fn, repeats, warmup=10, sync=None):
    """Median seconds of `fn()` over `repeats` calls after `warmup` calls; `sync()` (e.g. a CUDA
    synchronize) brackets each timed call when given."""
    # 10 warm-up calls: with 3, the first op timed in the process paid for a cold allocator (page
    # faults on its fresh output buffers): mixture_kl 8.1 ms first vs 6.6 ms timed again, same run.
    return interleaved_medians({"fn": fn}, repeats, warmup, sync)["fn"]


def interleaved_medians(fns, repeats, warmup=10, sync=None):
    """Median seconds of each callable in `fns`, timed in rotation (one call of each per round) so
    that a slow phase of a shared machine falls on all of them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    ts = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            if sync:
                sync()
            t0 = time.perf_counter()
            fn()
            if sync:
                sync()
            ts[k].append(time.perf_counter() - t0)
    return {k: sorted(v)[len(v) // 2] for k, v in ts.items()}
