"""The wiring of a mock lab: which chip lines every emulated source terminal holds.

Each SMU channel (and the array board) registers a ``SourceTerminal``; the switch-matrix
emulator installs a ``router`` telling which chip lines a terminal reaches (without a
matrix, a fixed route). The bench combines all terminals whose output is on into one
chip drive (HI lines at the terminal's voltage, LO lines at 0 V, everything else
floating), so several instruments act on the chip at once (V/2 schemes, bias ports).

A line that two terminals hold at different voltages (a source routed onto a grounded
line, two SMUs on one line) is a short through the matrix: the line sits at ground (or,
between two sources, midway) and each source drives ``SHORT_PATH_OHM`` into it, so its
compliance limits the current and sets its status, as on a bench.

Background jobs (an instrument's sweep running after its ``initiate()`` returned) take
the chip time that passes: a hold of the bench, whoever asks for it (a realtime lab
catching up with the wall clock, a ``delay()``, another instrument's measurement), runs
the jobs' next steps instead of holding still, until the hold's time is used. A job's
step holds the bench itself (its source delay, aperture, pulse width), so a step runs
whole and a hold can end up to one step late. Two jobs at once take turns step by step
(a channel's point, then the other's): their points are serialised, not overlapped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from memhil.mock_hw.chip import MockChip

Line = tuple[str, int]  # ("row", i) or ("col", j)
Router = Callable[[str], tuple[list[Line], list[Line]]]


class BackgroundJob(Protocol):
    """Work an instrument runs while the chip's time passes (see the module docstring)."""

    def step(self) -> bool:
        """Run the next step (holding the bench for its duration); False once done."""
        ...


@dataclass
class SourceTerminal:
    """A source's state as the chip sees it: output on/off and the HI-terminal voltage
    (after any compliance reduction). The LO terminal is ground."""

    key: str
    output_on: bool = False
    voltage_v: float = 0.0


#: Resistance of a short between two terminals through the matrix (ohm): two relay
#: contacts and the wiring. An assumption of the order of a B2200A path (about 1 ohm per
#: relay); it only sets how far a source in compliance lowers its voltage.
SHORT_PATH_OHM = 2.0


class MockBench:
    """Chip + terminals + router; all emulators of one lab share one bench."""

    def __init__(self, chip: MockChip, router: Router | None = None):
        self.chip = chip
        self.router: Router = router or (lambda key: ([], []))
        self.terminals: dict[str, SourceTerminal] = {}
        self.lock = threading.RLock()
        self.jobs: list[BackgroundJob] = []  # running in the background, in turn
        self._in_job = False  # a job's step is holding: its holds are its own

    def terminal(self, key: str) -> SourceTerminal:
        """The terminal ``key`` (created on first use), e.g. ``"smu.smua"``."""
        with self.lock:
            if key not in self.terminals:
                self.terminals[key] = SourceTerminal(key)
            return self.terminals[key]

    def set_router(self, router: Router) -> None:
        with self.lock:
            self.router = router

    def drive(
        self, override: dict[str, float] | None = None
    ) -> tuple[dict[int, float], dict[int, float]]:
        """The chip drive of every terminal that is on (``override`` replaces terminal
        voltages, for trying a level before committing to it); a shorted line sits at
        ground, or midway between the sources that fight over it."""
        rows, cols, _ = self._solve(override)
        return rows, cols

    def _solve(
        self, override: dict[str, float] | None
    ) -> tuple[dict[int, float], dict[int, float], dict[str, float]]:
        """(row drive, column drive, short current out of each terminal's HI (A))."""
        held: dict[Line, list[tuple[str | None, float]]] = {}  # line -> (HI key | None=LO, V)
        with self.lock:
            for key, term in self.terminals.items():
                if not term.output_on:
                    continue
                v = override.get(key, term.voltage_v) if override else term.voltage_v
                hi, lo = self.router(key)
                for line in _unique(hi):
                    held.setdefault(line, []).append((key, v))
                for line in _unique(lo):
                    held.setdefault(line, []).append((None, 0.0))
        rows: dict[int, float] = {}
        cols: dict[int, float] = {}
        shorts: dict[str, float] = {}
        for line, holders in held.items():
            levels = {lvl for _, lvl in holders}
            if len(levels) == 1 or len(holders) == 1:
                level = holders[0][1]
            elif any(k is None for k, _ in holders):
                level = 0.0  # ground holds the line
            else:
                his = {k: lvl for k, lvl in holders}
                level = sum(his.values()) / len(his)
            for k, lvl in holders:
                if k is not None and lvl != level:
                    shorts[k] = shorts.get(k, 0.0) + (lvl - level) / SHORT_PATH_OHM
            (rows if line[0] == "row" else cols)[line[1]] = level
        return rows, cols, shorts

    def current(self, key: str, override: dict[str, float] | None = None) -> float:
        """Current (A) flowing out of terminal ``key``'s HI into the chip and into any
        terminal it is shorted to (0 when off or unrouted)."""
        with self.lock:
            term = self.terminals.get(key)
            if term is None or not term.output_on:
                return 0.0
            hi, _ = self.router(key)
            if not hi:
                return 0.0
            rows, cols, shorts = self._solve(override)
            i_rows, i_cols = self.chip.currents(rows, cols)
            i_chip = sum(i_rows[i] if kind == "row" else i_cols[i] for kind, i in _unique(hi))
            return i_chip + shorts.get(key, 0.0)

    def hold(self, duration_s: float, count: int = 1) -> None:
        """Keep the present drive for ``duration_s`` (cells switch, clock advances); while
        background jobs run, they use that time (see the module docstring)."""
        with self.lock:
            if not self.jobs or self._in_job or count != 1:
                rows, cols = self.drive()
                self.chip.hold(rows, cols, duration_s, count)
                return
            clock = self.chip.clock
            t_end = clock.now() + duration_s
            while self.jobs and clock.now() < t_end:
                self.step_job(self.jobs[0])
            if clock.now() < t_end:
                rows, cols = self.drive()
                self.chip.hold(rows, cols, t_end - clock.now())

    def start_job(self, job: BackgroundJob) -> None:
        """Run ``job`` in the background from now on."""
        with self.lock:
            self.jobs.append(job)

    def step_job(self, job: BackgroundJob) -> None:
        """Run ``job``'s next step now; it leaves the background when done, and the
        next job takes the next turn."""
        with self.lock:
            self._in_job = True
            try:
                more = job.step()
            except BaseException:
                self.cancel_job(job)  # a failed job does not fail every later hold
                raise
            finally:
                self._in_job = False
            if job in self.jobs:
                self.jobs.remove(job)
                if more:
                    self.jobs.append(job)

    def finish_job(self, job: BackgroundJob) -> None:
        """Run ``job`` to its end now (a ``waitcomplete()``)."""
        with self.lock:
            while job in self.jobs:
                self.step_job(job)

    def cancel_job(self, job: BackgroundJob) -> None:
        with self.lock:
            if job in self.jobs:
                self.jobs.remove(job)

    def all_off(self) -> None:
        with self.lock:
            for term in self.terminals.values():
                term.output_on = False
                term.voltage_v = 0.0


def _unique(lines: Iterable[Line]) -> list[Line]:
    return list(dict.fromkeys(lines))
