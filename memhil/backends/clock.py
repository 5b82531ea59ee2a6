"""Clocks behind ``Backend.clock``: virtual time for the simulator and mock lab, wall time
for a bench. Drift and retention are functions of this time, so a 10^4 s retention test
runs in milliseconds on a virtual clock and the same code runs in real time on a bench."""

from __future__ import annotations

import threading
import time

from memhil.core.errors import LimitError


class VirtualClock:
    """Simulated time in seconds; advances only when told to (pulses, reads, waits).

    Thread-safe, because the mock lab's emulators share one clock with the simulator.
    """

    virtual = True

    def __init__(self, start_s: float = 0.0):
        self._t = float(start_s)
        self._lock = threading.Lock()

    def now(self) -> float:
        """Current time in seconds."""
        with self._lock:
            return self._t

    def advance(self, seconds: float) -> float:
        """Move time forward by ``seconds`` (>= 0) and return the new time."""
        seconds = float(seconds)
        if not seconds >= 0.0:  # also rejects NaN
            raise LimitError("clock advance", seconds, 0.0, "s (must be >= 0)")
        with self._lock:
            self._t += seconds
            return self._t

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of simulated time (returns immediately in real time)."""
        self.advance(seconds)


class WallClock:
    """Monotonic wall time in seconds since construction; ``sleep`` really waits."""

    virtual = False

    def __init__(self) -> None:
        self._t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self._t0

    def advance(self, seconds: float) -> float:
        """On a bench time passes by itself: advancing means waiting."""
        self.sleep(seconds)
        return self.now()

    def sleep(self, seconds: float) -> None:
        if seconds < 0:
            raise LimitError("sleep", seconds, 0.0, "s (must be >= 0)")
        time.sleep(seconds)
