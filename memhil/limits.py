"""Safety limits shared by every layer that can drive a device: the Backend contract and
the instrument guard check requests against the same ``Limits`` before anything changes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from memhil.config import require
from memhil.errors import LimitError

# Requests arrive as float32 tensors; a value equal to its limit must pass even though
# float32 rounding can put it a few ulp above the float64 limit (2**-20 ~ 1e-6 relative).
_SLACK = 1.0 + 2.0 ** -20


def _above(value: float, limit: float) -> bool:
    """True when ``value`` exceeds ``limit`` beyond float32 rounding (and for NaN)."""
    return not value <= limit * _SLACK


@dataclass(frozen=True)
class Limits:
    """Safety limits every request is checked against before anything reaches a device.

    ``energy_max_j`` bounds, per cell and per call, the worst-case energy a pulse request
    can deliver at its compliance (|V| * I_compliance * width * count); None disables it.
    """

    v_pulse_max_v: float = 3.0
    v_read_max_v: float = 0.5
    width_min_s: float = 1e-9
    width_max_s: float = 1.0
    compliance_max_a: float = 1e-3
    compliance_default_a: float = 1e-3
    count_max: int = 100_000
    energy_max_j: float | None = None

    def __post_init__(self) -> None:
        require(self.v_pulse_max_v > 0, "v_pulse_max_v", f"must be > 0, got {self.v_pulse_max_v}")
        require(self.v_read_max_v > 0, "v_read_max_v", f"must be > 0, got {self.v_read_max_v}")
        require(0 < self.width_min_s <= self.width_max_s, "width_min_s",
                f"need 0 < width_min_s ({self.width_min_s}) <= width_max_s ({self.width_max_s})")
        require(0 < self.compliance_default_a <= self.compliance_max_a, "compliance_default_a",
                f"need 0 < compliance_default_a ({self.compliance_default_a}) <= "
                f"compliance_max_a ({self.compliance_max_a})")
        require(self.count_max >= 1, "count_max", f"must be >= 1, got {self.count_max}")
        require(self.energy_max_j is None or self.energy_max_j > 0, "energy_max_j",
                f"must be > 0 or null, got {self.energy_max_j}")

    def check_read(self, v: Tensor) -> None:
        """Raise LimitError if any read voltage exceeds ``v_read_max_v``."""
        if v.numel():
            lo, hi = torch.aminmax(v.detach())
            vmax = max(-float(lo), float(hi)) if bool(torch.isfinite(lo + hi)) else float("nan")
            if _above(vmax, self.v_read_max_v):
                raise LimitError("read voltage |V|", vmax, self.v_read_max_v, "V")

    def check_pulse(self, v: Tensor, width_s: Tensor, count: Tensor, compliance_a: Tensor,
                    selected: Tensor | None) -> None:
        """Raise LimitError if any selected cell's request exceeds a limit (NaN does too).

        Arguments broadcast to the array; ``selected`` is a boolean mask or None (all).
        """
        v_lo, v_hi = _extrema(v, selected)
        vmax = max(abs(v_lo), abs(v_hi)) if v_lo == v_lo else float("nan")
        if _above(vmax, self.v_pulse_max_v):
            raise LimitError("pulse amplitude |V|", vmax, self.v_pulse_max_v, "V")
        wmin, wmax = _extrema(width_s, selected)
        if _above(wmax, self.width_max_s):
            raise LimitError("pulse width", wmax, self.width_max_s, "s")
        if not wmin * _SLACK >= self.width_min_s:
            raise LimitError("pulse width (minimum)", wmin, self.width_min_s, "s")
        nmin, nmax = _extrema(count, selected)
        if nmin < 0:
            raise LimitError("pulse count (must be >= 0)", nmin, 0)
        if nmax > self.count_max:
            raise LimitError("pulse count", nmax, self.count_max)
        cmin, cmax = _extrema(compliance_a, selected)
        if _above(cmax, self.compliance_max_a):
            raise LimitError("compliance", cmax, self.compliance_max_a, "A")
        if not cmin > 0:
            raise LimitError("compliance (must be > 0)", cmin, 0.0, "A")
        if self.energy_max_j is not None:
            energy = v.double().abs() * compliance_a.double() * width_s.double() * count.double()
            e = _extrema(energy, selected)[1]
            if _above(e, self.energy_max_j):
                raise LimitError("worst-case pulse energy per cell", e, self.energy_max_j, "J")


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
