"""Shared by the benchmark scripts: interleaved median timing, so that machine-load drift
affects every entry of a comparison alike and the printed ratios are fair."""

from __future__ import annotations

import statistics
import time


def median_times(fns: dict, reps: int, warmup: int = 2) -> dict:
    """Median seconds per call of each function, one call of each per round."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}
