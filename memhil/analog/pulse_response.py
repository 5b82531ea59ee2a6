"""Mean pulse response of a device population: conductance after k identical pulses.

Measured the same way on any backend (reset a set of cells, pulse them one at a time,
read the mean after each pulse). Its inverse gives open-loop pulse counts and the
conductance quantum that update schemes transfer, without any model-specific code.
``measure_set_response`` is the one SET-curve measurement every layer and algorithm uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from memhil.backends.base import Backend
from memhil.core.types import PulseSpec


@dataclass(frozen=True)
class PulseResponse:
    """G after k = 0..n pulses of ``amplitude_v`` / ``width_s`` from the starting state.

    ``g_curve_s`` is made monotonic in the pulse direction (rising for positive
    amplitudes, falling for negative); flat tails (saturation) are kept.
    """

    amplitude_v: float
    width_s: float
    g_curve_s: Tensor
    spread_s: Tensor | None = field(default=None)  # std across cells after k pulses (optional)

    def __post_init__(self) -> None:
        # Kept on the CPU in float64: a calibration artefact, used with CPU-side counts.
        g = torch.as_tensor(self.g_curve_s).detach().to("cpu", torch.float64).flatten()
        if g.numel() < 2:
            raise ValueError("a pulse response needs at least the state after 0 and 1 pulses")
        rising = self.amplitude_v > 0
        g = torch.cummax(g, 0).values if rising else -torch.cummax(-g, 0).values
        object.__setattr__(self, "g_curve_s", g)
        if self.spread_s is not None:
            object.__setattr__(
                self, "spread_s", torch.as_tensor(self.spread_s).detach().to("cpu", torch.float64)
            )

    @property
    def n_pulses(self) -> int:
        return self.g_curve_s.numel() - 1

    @property
    def rising(self) -> bool:
        return self.amplitude_v > 0

    @property
    def granularity_s(self) -> float:
        """Mean |dG| per pulse over the curve (the quantum an update scheme transfers)."""
        return abs(float(self.g_curve_s[-1] - self.g_curve_s[0])) / self.n_pulses

    def pulse_position(self, g_s: Tensor) -> Tensor:
        """Fractional pulse index k at which the mean curve passes ``g_s`` (clamped to the
        curve: 0 below its start, n at and beyond saturation)."""
        curve = self.g_curve_s if self.rising else -self.g_curve_s
        g = torch.as_tensor(g_s).detach().to("cpu", torch.float64)
        g = g if self.rising else -g
        idx = torch.searchsorted(curve, g.contiguous()).clamp(1, self.n_pulses)
        lo, hi = curve[idx - 1], curve[idx]
        frac = ((g - lo) / (hi - lo).clamp_min(1e-30)).clamp(0.0, 1.0)
        return (idx - 1).to(torch.float64) + frac

    def pulses_between(self, g_from_s: Tensor, g_to_s: Tensor) -> Tensor:
        """Mean number of pulses to move from ``g_from_s`` to ``g_to_s`` (float; <= 0 when
        the target lies behind the start in this curve's direction)."""
        return self.pulse_position(g_to_s) - self.pulse_position(g_from_s)

    def mean_step_s(self, g_s: Tensor) -> Tensor:
        """Mean signed conductance change of one pulse starting at ``g_s``."""
        k = self.pulse_position(g_s).floor().clamp(max=self.n_pulses - 1).long()
        return self.g_curve_s[k + 1] - self.g_curve_s[k]

    def as_dict(self) -> dict[str, Any]:
        return {
            "amplitude_v": self.amplitude_v,
            "width_s": self.width_s,
            "g_curve_s": self.g_curve_s.tolist(),
        }


def measure_pulse_response(
    backend: Backend,
    cells: Tensor,
    amplitude_v: float,
    width_s: float,
    n_pulses: int,
    *,
    prepare: tuple[float, float, int] | None = None,
    compliance_a: float | None = None,
) -> PulseResponse:
    """Measure the mean response of the ``cells`` (a backend mask) to single pulses.

    ``prepare`` = (amplitude, width, count) is applied first to bring the cells to the
    curve's starting state (a RESET for a SET curve, and vice versa). Costs ``n_pulses``
    pulse calls and ``n_pulses + 1`` reads of the selected cells.
    """
    if prepare is not None:
        backend.pulse(cells, prepare[0], prepare[1], prepare[2], compliance_a=compliance_a)
    means, stds = [], []
    for k in range(n_pulses + 1):
        if k:
            backend.pulse(cells, amplitude_v, width_s, 1, compliance_a=compliance_a)
        g = backend.read_conductance(cells).double()
        means.append(g.mean())
        stds.append(g.std() if g.numel() > 1 else torch.zeros((), dtype=torch.float64))
    return PulseResponse(amplitude_v, width_s, torch.stack(means), torch.stack(stds))


def measure_set_response(
    backend: Backend,
    cells: Tensor,
    set_pulse: PulseSpec,
    reset_pulse: PulseSpec,
    n_pulses: int,
    *,
    n_reset: int,
    restore: bool = True,
) -> PulseResponse:
    """Mean SET response of the ``cells`` (a backend mask), measured from RESET.

    The cells are RESET with ``n_reset`` pulses before (and, with ``restore``, after) the
    curve; an abrupt RESET (a SET-only device, ``capabilities.bipolar`` False, as PCM) takes
    one pulse whatever ``n_reset`` says. Callers choose ``n_reset``: a gradual RESET needs
    at least as many pulses as the SET curve to get back to the bottom of the window.
    """
    n = int(n_reset) if backend.capabilities.bipolar else 1
    response = measure_pulse_response(
        backend,
        cells,
        set_pulse.amplitude_v,
        set_pulse.width_s,
        n_pulses,
        prepare=(reset_pulse.amplitude_v, reset_pulse.width_s, n),
    )
    if restore:
        backend.pulse(cells, reset_pulse.amplitude_v, reset_pulse.width_s, n)
    return response
