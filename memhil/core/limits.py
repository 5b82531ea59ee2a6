"""Safety limits shared by every layer that can drive a device: the Backend contract and
the instrument guard check requests against the same ``Limits`` before anything changes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from memhil.core.config import require
from memhil.core.errors import LimitError

# Requests arrive as float32 tensors; a value equal to its limit must pass even though
# float32 rounding can put it a few ulp above the float64 limit (2**-20 ~ 1e-6 relative).
# Every layer (the Backend contract, the instrument guard, the tests at the chip) compares
# with ``exceeds``, so a request one layer passes is never refused by the next.
SLACK = 2.0**-20
_SLACK = 1.0 + SLACK

# Mains frequency assumed for an integration time given in power-line cycles: 50 Hz is
# the longer of the two mains periods, so nplc / 50 Hz bounds the time at a level.
LINE_FREQUENCY_HZ = 50.0
# The longest integration of the supported SMUs (Keithley 2600: 0.001..25 PLC), assumed
# for a measurement whose integration time was not set through the guard.
NPLC_MAX = 25.0


def exceeds(value: float, limit: float) -> bool:
    """True when ``value`` exceeds ``limit`` beyond float32 rounding (and for NaN): the one
    limit comparison of memhil (relative slack ``SLACK``)."""
    return not value <= limit * _SLACK


def below(value: float, limit: float) -> bool:
    """True when ``value`` lies below the lower limit ``limit`` beyond float32 rounding (and
    for NaN)."""
    return not value * _SLACK >= limit


def worst_case_energy_j(v_abs, current_a, width_s, count):
    """Worst-case energy (J) of ``count`` pulses of ``width_s`` at ``|V|`` = ``v_abs``
    whose current is limited to ``current_a``: |V| * I * width * count (tensors or floats)."""
    return v_abs * current_a * width_s * count


def row_column_blocks(mask: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The row x column products a V/2-scheme array pulses a ``(rows, cols)`` cell mask as:
    one block (row indices, column indices) per group of rows sharing a column pattern.
    The array-board driver sends exactly these, and the limit checks account for them."""
    m = np.asarray(mask, dtype=bool)
    groups: dict[bytes, list[int]] = {}
    for i in range(m.shape[0]):
        if m[i].any():
            groups.setdefault(m[i].tobytes(), []).append(i)
    return [(np.asarray(rows), np.flatnonzero(m[rows[0]])) for rows in groups.values()]


def v_half_energy_j(
    shape: tuple[int, int],
    blocks,
    v_abs: float,
    current_a: float,
    width_s: float,
    count: float,
    half_current_a: float | None = None,
) -> np.ndarray:
    """Worst-case energy (J) per cell of V/2-scheme pulses over ``blocks`` (row set R x
    column set C each): cells of R x C see |V|, cells in R or in C (not both) see |V|/2,
    the rest 0 V. ``current_a`` limits a selected cell's current, ``half_current_a``
    (default ``current_a``) a half-selected cell's."""
    half_a = current_a if half_current_a is None else half_current_a
    full = worst_case_energy_j(v_abs, current_a, width_s, count)
    half = worst_case_energy_j(0.5 * v_abs, half_a, width_s, count)
    energy = np.zeros(shape, dtype=np.float64)
    for rows, cols in blocks:
        in_r = np.zeros(shape[0], dtype=bool)
        in_c = np.zeros(shape[1], dtype=bool)
        in_r[rows] = True
        in_c[cols] = True
        both = in_r[:, None] & in_c[None, :]
        one = in_r[:, None] ^ in_c[None, :]
        energy += np.where(both, full, np.where(one, half, 0.0))
    return energy


@dataclass(frozen=True)
class Limits:
    """Safety limits every request is checked against before anything reaches a device.

    Every comparison is ``exceeds`` (one relative slack, ``SLACK``, for float32 rounding).
    """

    v_pulse_max_v: float = 3.0
    """Largest |V| of any pulse, source level or sweep point (V)."""
    v_read_max_v: float = 0.5
    """Largest |V| of a read or MVM input (V)."""
    width_min_s: float = 1e-9
    """Shortest pulse width (s)."""
    width_max_s: float = 1.0
    """Longest pulse width (s)."""
    compliance_max_a: float = 1e-3
    """Largest current compliance (A); in current mode the largest |I| sourced."""
    compliance_default_a: float = 1e-3
    """Compliance of requests that name none (A)."""
    count_max: int = 100_000
    """Most pulses of one request per cell."""
    energy_max_j: float | None = None
    """Worst-case energy one request may deliver to any one cell (J), None: unbounded.

    A pulse counts |V| * I_compliance * width * count; on a V/2 array a request split into
    several array pulses counts, per cell, every pulse it is selected by (at V) or
    half-selected by (at V/2), so half-select disturb is bounded too; an SMU pulse counts
    its time at the base level (period - width); one DC measurement counts
    |level| * compliance * nplc / ``LINE_FREQUENCY_HZ`` (50 Hz, the longer mains period;
    nplc ``NPLC_MAX`` when it was not set). The time a DC level is held between commands
    is the caller's and is not counted."""
    period_max_s: float = 10.0
    """Longest period of an SMU pulse train (s): a typo cannot hold a channel for hours."""
    width_min_by: ClassVar[str | None] = None  # an instance attribute once set: not a field
    """What sets ``width_min_s`` when it is not the station file's own value (a backend
    pulsing through a slower instrument: ``with_pulse_floor``), named in the refusal of a
    shorter pulse; never a file key."""

    def __post_init__(self) -> None:
        require(self.v_pulse_max_v > 0, "v_pulse_max_v", f"must be > 0, got {self.v_pulse_max_v}")
        require(self.v_read_max_v > 0, "v_read_max_v", f"must be > 0, got {self.v_read_max_v}")
        require(
            0 < self.width_min_s <= self.width_max_s,
            "width_min_s",
            f"need 0 < width_min_s ({self.width_min_s}) <= width_max_s ({self.width_max_s})",
        )
        require(
            0 < self.compliance_default_a <= self.compliance_max_a,
            "compliance_default_a",
            f"need 0 < compliance_default_a ({self.compliance_default_a}) <= "
            f"compliance_max_a ({self.compliance_max_a})",
        )
        require(self.count_max >= 1, "count_max", f"must be >= 1, got {self.count_max}")
        require(
            self.energy_max_j is None or self.energy_max_j > 0,
            "energy_max_j",
            f"must be > 0 or null, got {self.energy_max_j}",
        )
        require(self.period_max_s > 0, "period_max_s", f"must be > 0, got {self.period_max_s}")

    def with_pulse_floor(self, width_min_s: float, by: str) -> Limits:
        """These limits with a higher ``width_min_s`` set by ``by`` (what makes no shorter
        pulse: ``instruments.smu (keithley2636b)``)."""
        out = dataclasses.replace(self, width_min_s=width_min_s)
        object.__setattr__(out, "width_min_by", by)  # frozen, and not a constructor field
        return out

    def check_read(self, v: Tensor) -> None:
        """Raise LimitError if any read voltage exceeds ``v_read_max_v``."""
        if v.numel():
            lo, hi = torch.aminmax(v.detach())
            vmax = max(-float(lo), float(hi)) if bool(torch.isfinite(lo + hi)) else float("nan")
            self.check_read_peak(vmax)

    def check_read_peak(self, vmax: float) -> None:
        """:meth:`check_read` given the largest |V| of the read (NaN where any V is NaN),
        measured on the way (the simulator's DAC pass finds it)."""
        if exceeds(vmax, self.v_read_max_v):
            raise LimitError("read voltage |V|", vmax, self.v_read_max_v, "V", field="v_read")

    def check_pulse(
        self,
        v: Tensor,
        width_s: Tensor,
        count: Tensor,
        compliance_a: Tensor,
        selected: Tensor | None,
    ) -> None:
        """Raise LimitError if any selected cell's request exceeds a limit (NaN does too).

        Arguments broadcast to the array; ``selected`` is a boolean mask or None (all).
        """
        v_lo, v_hi = _extrema(v, selected)
        vmax = max(abs(v_lo), abs(v_hi)) if v_lo == v_lo else float("nan")
        if exceeds(vmax, self.v_pulse_max_v):
            raise LimitError(
                "pulse amplitude |V|", vmax, self.v_pulse_max_v, "V", field="amplitude"
            )
        wmin, wmax = _extrema(width_s, selected)
        if exceeds(wmax, self.width_max_s):
            raise LimitError("pulse width", wmax, self.width_max_s, "s", field="width")
        if below(wmin, self.width_min_s):
            by = f": the shortest pulse of {self.width_min_by}" if self.width_min_by else ""
            raise LimitError(
                f"pulse width (minimum{by})", wmin, self.width_min_s, "s", field="width"
            )
        nmin, nmax = _extrema(count, selected)
        if nmin < 0:
            raise LimitError("pulse count (must be >= 0)", nmin, 0, field="count")
        if nmax > self.count_max:
            raise LimitError("pulse count", nmax, self.count_max, field="count")
        cmin, cmax = _extrema(compliance_a, selected)
        if exceeds(cmax, self.compliance_max_a):
            raise LimitError("compliance", cmax, self.compliance_max_a, "A", field="compliance")
        if not cmin > 0:
            raise LimitError("compliance (must be > 0)", cmin, 0.0, "A", field="compliance")
        if self.energy_max_j is not None:
            self.check_energy(
                worst_case_energy_j(
                    v.double().abs(), compliance_a.double(), width_s.double(), count.double()
                ),
                selected,
            )

    def check_pulse_spec(
        self,
        amplitude_v: float,
        width_s: float,
        count: int = 1,
        *,
        compliance_a: float | None = None,
        param: str | None = None,
    ) -> None:
        """``check_pulse`` for one request sent alike to every cell (at the default
        compliance unless given): the pre-flight of a configured pulse; the LimitError
        names ``param`` (the configuration key that set the pulse)."""
        f64 = torch.float64
        c = self.compliance_default_a if compliance_a is None else compliance_a
        try:
            self.check_pulse(
                torch.tensor(float(amplitude_v), dtype=f64),
                torch.tensor(float(width_s), dtype=f64),
                torch.tensor(int(count)),
                torch.tensor(float(c), dtype=f64),
                None,
            )
        except LimitError as exc:
            if param is None:
                raise
            raise exc.naming(param) from None

    def check_energy(
        self,
        energy_j: Tensor,
        selected: Tensor | None = None,
        quantity: str = "worst-case pulse energy per cell",
    ) -> None:
        """Raise LimitError if any (selected) cell's worst-case energy exceeds
        ``energy_max_j`` (no-op when it is None)."""
        if self.energy_max_j is None:
            return
        e = _extrema(torch.as_tensor(energy_j, dtype=torch.float64), selected)[1]
        if exceeds(e, self.energy_max_j):
            raise LimitError(quantity, e, self.energy_max_j, "J", field="energy")


def _extrema(x: Tensor, selected: Tensor | None) -> tuple[float, float]:
    """(min, max) of ``x`` over the selected cells; scalars and ``selected=None`` need no
    indexing, which keeps whole-array pulse requests cheap."""
    if x.numel() == 1:
        value = float(x.reshape(()))
        return value, value
    if selected is not None:
        x = x.expand(selected.shape)[selected]
    lo, hi = torch.aminmax(x)
    return float(lo), float(hi)
