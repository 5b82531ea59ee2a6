"""The wiring of a mock lab: which chip lines every emulated source terminal holds.

Each SMU channel (and the array board) registers a ``SourceTerminal``; the switch-matrix
emulator installs a ``router`` telling which chip lines a terminal reaches (without a
matrix, a fixed route). The bench combines all terminals whose output is on into one
chip drive (HI lines at the terminal's voltage, LO lines at 0 V, everything else
floating), so several instruments act on the chip at once (V/2 schemes, bias ports).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from memhil.mock_hw.chip import MockChip

Line = tuple[str, int]  # ("row", i) or ("col", j)
Router = Callable[[str], tuple[list[Line], list[Line]]]


@dataclass
class SourceTerminal:
    """A source's state as the chip sees it: output on/off and the HI-terminal voltage
    (after any compliance reduction). The LO terminal is ground."""

    key: str
    output_on: bool = False
    voltage_v: float = 0.0


class ShortCircuit(RuntimeError):
    """Two terminals hold the same chip line at different voltages."""


class MockBench:
    """Chip + terminals + router; all emulators of one lab share one bench."""

    def __init__(self, chip: MockChip, router: Router | None = None):
        self.chip = chip
        self.router: Router = router or (lambda key: ([], []))
        self.terminals: dict[str, SourceTerminal] = {}
        self.lock = threading.RLock()

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
        voltages, for trying a level before committing to it). Raises ShortCircuit when
        two terminals fight over one line."""
        rows: dict[int, float] = {}
        cols: dict[int, float] = {}
        owner: dict[Line, str] = {}
        with self.lock:
            for key, term in self.terminals.items():
                if not term.output_on:
                    continue
                v = override.get(key, term.voltage_v) if override else term.voltage_v
                hi, lo = self.router(key)
                for lines, level in ((hi, v), (lo, 0.0)):
                    for line in lines:
                        target = rows if line[0] == "row" else cols
                        if line in owner and abs(target[line[1]] - level) > 1e-12:
                            raise ShortCircuit(
                                f"{key} and {owner[line]} both drive {line[0]} "
                                f"{line[1]} ({level} V vs {target[line[1]]} V)"
                            )
                        owner[line] = key
                        target[line[1]] = level
        return rows, cols

    def current(self, key: str, override: dict[str, float] | None = None) -> float:
        """Current (A) flowing out of terminal ``key``'s HI into the chip (0 when off or
        unrouted)."""
        with self.lock:
            term = self.terminals.get(key)
            if term is None or not term.output_on:
                return 0.0
            hi, _ = self.router(key)
            if not hi:
                return 0.0
            rows, cols = self.drive(override)
            i_rows, i_cols = self.chip.currents(rows, cols)
            return sum(i_rows[i] if kind == "row" else i_cols[i] for kind, i in _unique(hi))

    def hold(self, duration_s: float, count: int = 1) -> None:
        """Keep the present drive for ``duration_s`` (cells switch, clock advances)."""
        with self.lock:
            rows, cols = self.drive()
            self.chip.hold(rows, cols, duration_s, count)

    def all_off(self) -> None:
        with self.lock:
            for term in self.terminals.values():
                term.output_on = False
                term.voltage_v = 0.0


def _unique(lines: Iterable[Line]) -> list[Line]:
    return list(dict.fromkeys(lines))
