"""Capability protocols: what memhil needs from each kind of instrument, in SI units.

Adapters over maintained drivers (QCoDeS, PyMeasure) and memhil's own drivers implement
these; the safety guard wraps them; the hardware backend and the protocols use nothing
else. Vendor specifics stay inside the adapters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np

SourceMode = Literal["voltage", "current"]


@dataclass(frozen=True)
class Measurement:
    """One source-measure point: sourced and measured values, and whether the output was
    in compliance when it was taken."""

    voltage_v: float
    current_a: float
    in_compliance: bool


@dataclass(frozen=True)
class SweepResult:
    """A buffered sweep: the sourced values and what was measured at each (arrays)."""

    source: np.ndarray
    voltage_v: np.ndarray
    current_a: np.ndarray
    in_compliance: np.ndarray  # bool per point (may be all False if the SMU cannot tell)
    mode: SourceMode = "voltage"


@runtime_checkable
class SourceMeter(Protocol):
    """One SMU channel."""

    name: str

    def set_source_mode(self, mode: SourceMode) -> None: ...

    def set_compliance(self, limit: float) -> None:
        """Current limit (A) when sourcing voltage, voltage limit (V) when sourcing current."""

    def set_nplc(self, nplc: float) -> None: ...

    def set_level(self, value: float) -> None:
        """The source level (V or A, per the source mode)."""

    def output(self, on: bool) -> None: ...

    def output_is_on(self) -> bool: ...

    def measure(self) -> Measurement: ...

    def sweep(self, start: float, stop: float, points: int) -> SweepResult:
        """A buffered linear sweep of the source level, measured at every point."""

    def pulse(
        self,
        level: float,
        width_s: float,
        count: int = 1,
        *,
        base: float = 0.0,
        period_s: float | None = None,
    ) -> None:
        """``count`` pulses to ``level`` of ``width_s`` from ``base``, output left at base."""

    def in_compliance(self) -> bool: ...

    def safe_state(self) -> None:
        """Level to 0 and output off."""


@runtime_checkable
class SwitchMatrix(Protocol):
    """Relays between instrument ports (inputs) and array lines (outputs)."""

    name: str

    def connect(self, port: int, line: int) -> None: ...

    def disconnect(self, port: int, line: int) -> None: ...

    def connect_many(self, pairs: Sequence[tuple[int, int]]) -> None:
        """Close several relays in one transaction (a channel list)."""

    def connections(self) -> set[tuple[int, int]]: ...

    def open_all(self) -> None: ...

    def safe_state(self) -> None:
        """All relays open."""


@runtime_checkable
class Prober(Protocol):
    """A probe station: wafer map, chuck moves, contact."""

    name: str

    def load_map(self, dies: Sequence[tuple[int, int]], subsites: int = 1) -> None: ...

    def step_to(self, die: tuple[int, int], subsite: int = 0) -> None:
        """Move to a die/subsite; refused while in contact."""

    def position(self) -> tuple[tuple[int, int], int]: ...

    def contact(self) -> None: ...

    def separate(self) -> None: ...

    def in_contact(self) -> bool: ...

    def contact_ok(self) -> bool:
        """Whether the needles touch the pads (a continuity check)."""

    def safe_state(self) -> None:
        """Separated."""


@runtime_checkable
class ArrayIO(Protocol):
    """A line-parallel array board: every row and column has its own DAC/ADC channel."""

    name: str
    rows: int
    cols: int

    def read_columns(self, v_rows: Sequence[float] | np.ndarray) -> np.ndarray:
        """Apply ``v_rows`` (V) to all rows, columns at virtual ground; column currents (A)."""

    def read_rows(self, v_cols: Sequence[float] | np.ndarray) -> np.ndarray:
        """Apply ``v_cols`` (V) to all columns, rows at virtual ground; row currents (A)."""

    def pulse_cells(
        self,
        mask: np.ndarray,
        amplitude_v: float,
        width_s: float,
        count: int = 1,
        compliance_a: float | None = None,
    ) -> None:
        """Pulse the masked cells (rows x cols bool) with the V/2 scheme, limiting each
        selected cell's current to ``compliance_a`` (None: the board's present setting)."""

    def safe_state(self) -> None:
        """All lines to 0 V."""


@runtime_checkable
class Resyncable(Protocol):
    """An instrument whose connection can be brought back after a communication fault
    (optional: every built-in adapter has it; check with ``isinstance``)."""

    def resync(self) -> None:
        """Bring the connection back to a known state after a timeout, a garbled reply or
        a dropped connection: discard stale input, clear the instrument's interface
        (device clear / ``*CLS`` where the instrument has them), verify with an identity
        query, and reconnect (re-open the session at the same address) if the connection
        is gone. Raises ``memhil.instruments.session.ResyncError`` (a
        ``ConnectionError``) if the instrument cannot be reached or does not identify
        itself as expected.

        Idempotent: safe to call at any time. It does not change output state, source
        levels, relays or the chuck (the caller decides what to do after it); adapters
        may forget cached settings and read them back on next use."""
