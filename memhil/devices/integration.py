"""Pulse integration shared by the state-ODE models (HP and windows, VTEAM, Yakopcic):
fixed-step RK4 over one pulse, and pulse trains with cycle-to-cycle width noise."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from memhil.devices.base import c2c_factor, repeat_pulses

#: Upper bound on RK4 substeps per pulse, whatever the stiffness estimate asks for.
MAX_SUBSTEPS = 1024


def rk4(
    x: Tensor,
    rate: Callable[[Tensor], Tensor],
    width_s: Tensor,
    stiffness_per_s: Tensor,
    min_substeps: int,
) -> Tensor:
    """Integrate dx/dt = rate(x) over ``width_s`` (per cell) with fixed RK4 steps, clamping x
    to [0, 1] after each. The step count is at least ``min_substeps`` and large enough that
    h * lambda <= 1 for the per-cell bound ``stiffness_per_s`` >= |d rate/dx| (accurate, and
    no overshoot onto a bound on stiff pulses), at most MAX_SUBSTEPS."""
    need = math.ceil(float((stiffness_per_s * width_s).max())) if x.numel() else 0
    n = min(max(min_substeps, need), MAX_SUBSTEPS)
    h = width_s / n
    for _ in range(n):
        k1 = rate(x)
        k2 = rate(x + 0.5 * h * k1)
        k3 = rate(x + 0.5 * h * k2)
        k4 = rate(x + h * k3)
        x = (x + h / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)).clamp(0.0, 1.0)
    return x


def c2c_pulses(
    state: Tensor,
    count: Tensor,
    width_s: Tensor,
    rel_std: float,
    generator: torch.Generator,
    advance: Callable[[Tensor, Tensor], Tensor],
) -> Tensor:
    """Apply ``count`` pulses per cell, x <- advance(x, w), each with its own C2C factor on
    the effective width w = width_s (1 + rel_std xi), clipped at 0. Where the rate does not
    depend on x this scales the pulse's dx by exactly that factor; elsewhere it keeps x on
    the ODE's trajectory (never past a window's fixed point, as scaling dx could)."""

    def pulse(s: Tensor, active: Tensor) -> Tensor:
        x = s[..., 0]
        w = width_s * c2c_factor(x.shape, rel_std, generator, x.device, x.dtype)
        return advance(x, w.clamp_min(0.0) if rel_std > 0.0 else w).unsqueeze(-1)

    return repeat_pulses(state, count, pulse)
