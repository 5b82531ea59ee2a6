"""How time passes in a mock lab: on the virtual clock only (memhil's own runs: a 10^4 s
retention test in milliseconds), or also with the wall clock, for clients that time
things themselves (``memhil mock-lab serve``): the ``mock.time`` section of a station.

``realtime``: before an emulator handles a command, the chip's clock catches up with the
wall clock (times ``scale``) by holding the drive the sources have held since the last
command (a sweep running in the background takes that time point by point: see
``memhil.mock_hw.bench``), so a script that sets +0.3 V and ``time.sleep(0.3)`` stresses the cell for
0.3 s x scale, as on a bench. Time an instrument spends itself (integration, delays)
still advances the chip at once; the chip's clock is never behind the wall clock.

``latency``: every advance of the chip's clock by an instrument operation also takes
wall time (``seconds / scale``), so a reading takes its NPLC aperture and a sweep its
points x (aperture + delay), and a VISA timeout that is too short fails as on a bench.
See docs/mock-lab.md.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from memhil.backends.clock import VirtualClock
from memhil.core.config import require
from memhil.mock_hw.bench import MockBench

MODES = ("virtual", "realtime")


@dataclass(frozen=True)
class TimeConfig:
    """The ``mock.time`` section: ``mode`` (virtual | realtime), ``scale`` (chip seconds
    per wall second) and ``latency`` (instrument operations take wall time)."""

    mode: str = "virtual"
    scale: float = 1.0
    latency: bool = False

    def __post_init__(self) -> None:
        require(self.mode in MODES, "mode", f"expected one of {', '.join(MODES)}")
        require(self.scale > 0, "scale", "must be > 0 (chip seconds per wall second)")

    @classmethod
    def with_defaults(cls, section: Mapping[str, Any], *, serve: bool) -> dict[str, Any]:
        """The section's keys over the defaults of a served lab (realtime, latency) or of
        an in-process one (virtual, no latency)."""
        defaults = {"mode": "realtime", "latency": True} if serve else {}
        return {**defaults, **dict(section)}


class PacedClock(VirtualClock):
    """The chip's virtual clock; with ``pace_scale`` set, each advance also waits
    ``seconds / pace_scale`` of wall time, except while catching up with the wall clock."""

    def __init__(self, start_s: float = 0.0, *, pace_scale: float | None = None):
        super().__init__(start_s)
        self.pace_scale = pace_scale
        self._local = threading.local()

    def advance(self, seconds: float) -> float:
        t = super().advance(seconds)
        if self.pace_scale is not None and seconds > 0 and not self.catching_up:
            time.sleep(float(seconds) / self.pace_scale)
        return t

    @property
    def catching_up(self) -> bool:
        return bool(getattr(self._local, "catching_up", False))

    @contextlib.contextmanager
    def catch_up(self) -> Iterator[None]:
        """Advances in this block are the wall time that already passed: no waiting."""
        self._local.catching_up = True
        try:
            yield
        finally:
            self._local.catching_up = False


class WallClockSync:
    """Keeps the chip's clock at least ``scale`` x the wall time since the lab started.
    ``wall``: the wall clock in seconds (``time.monotonic``; tests give their own)."""

    def __init__(
        self,
        bench: MockBench,
        clock: PacedClock,
        scale: float,
        wall: Callable[[], float] = time.monotonic,
    ):
        self.bench, self.clock, self.scale = bench, clock, float(scale)
        self._wall = wall
        self._t0_wall = wall()
        self._t0_chip = clock.now()

    def catch_up(self) -> float:
        """Hold the present drive until the chip's clock reaches the scaled wall time;
        returns the chip seconds added."""
        with self.bench.lock:
            target = self._t0_chip + self.scale * (self._wall() - self._t0_wall)
            lag = target - self.clock.now()
            if lag <= 0:
                return 0.0
            with self.clock.catch_up():
                self.bench.hold(lag)
            return lag


class SyncedEmulator:
    """An emulator whose every command first brings the chip up to the wall clock."""

    def __init__(self, emulator: Any, sync: WallClockSync):
        self.emulator, self.sync = emulator, sync

    def handle(self, line: str) -> Any:
        self.sync.catch_up()
        return self.emulator.handle(line)

    def session_closed(self, session: int) -> None:
        closed = getattr(self.emulator, "session_closed", None)
        if callable(closed):
            closed(session)
