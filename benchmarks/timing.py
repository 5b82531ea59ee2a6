"""Shared by the benchmark scripts: interleaved median timing, so that machine-load drift
affects every entry of a comparison alike and the printed ratios are fair."""

from __future__ import annotations

import statistics
import time


def median_times(fns: dict, reps: int, warmup: int = 2, clock=time.perf_counter) -> dict:
    """Median seconds per call of each function, one call of each per round; ``clock``
    may be ``time.process_time`` (CPU time: steadier on a machine shared with others)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t0 = clock()
            fn()
            times[name].append(clock() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}
