"""Volatile threshold memristor: a programmed change with a decaying (short-term) part.

Short-term plasticity and its relaxation: Ohno et al., "Short-term plasticity and long-term
potentiation mimicked in single inorganic synapses", Nat. Mater. 10, 591 (2011); Chang, Jo
& Lu, "Short-term memory to long-term memory transition in a nanoscale memristor", ACS
Nano 5, 7669 (2011), who model the state as a stable part plus a part relaxing with one
time constant (``docs/devices.md#volatile``).

State ``(w, u, t_p_s)``: the stable state ``w`` in [0, 1], the volatile part ``u`` as it
was at the last pulse, and the time ``t_p_s`` of that pulse. At time t

    x(t) = clip(w + u exp(-(t - t_p) / tau), 0, 1),     G = G_min + (G_max - G_min) x.

A pulse of amplitude v beyond the threshold moves x by
``dx = sign(v) k (|v| / v_th - 1) width count`` (VTEAM's law with alpha = 1); the
fraction ``volatile_fraction`` of dx joins the decaying part (first relaxed to the end of
the pulse), the rest the stable part. With ``volatile_fraction = 0`` the device is a
plain non-volatile threshold device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from memhil.core.config import require
from memhil.devices.base import D2D, DeviceModel, lognormal_spread, register_device


@register_device("volatile")
class VolatileDevice(DeviceModel):
    """Threshold switching with a stable and an exponentially relaxing state component."""

    name = "volatile"
    state_names = ("w", "u", "t_p_s")
    drifts = True  # G depends on the time since the last pulse
    nominal_set_pulse = (1.0, 1e-6)
    nominal_reset_pulse = (-1.0, 1e-6)

    @dataclass(frozen=True)
    class Params:
        """Constants in SI units. Defaults: a 1 µs pulse at twice the threshold moves x by
        0.05, of which half relaxes with tau = 1 ms (a memhil choice of scale)."""

        g_min_s: float = 1e-6
        g_max_s: float = 1e-4
        v_th_v: float = 0.5  # switching threshold magnitude, both polarities
        k_per_s: float = 5e4  # rate of x at |v| = 2 v_th
        volatile_fraction: float = 0.5
        tau_s: float = 1e-3  # relaxation time constant of the volatile part
        x0: float = 0.2
        tau_dtod: float = 0.0  # relative (lognormal) D2D spread of tau
        k_dtod: float = 0.0
        dx_std: float = 0.0  # relative C2C spread of each pulse's dx

        def __post_init__(self) -> None:
            require(
                0 <= self.g_min_s < self.g_max_s,
                "g_min_s",
                f"need 0 <= g_min_s ({self.g_min_s}) < g_max_s ({self.g_max_s})",
            )
            for name in ("v_th_v", "k_per_s", "tau_s"):
                require(getattr(self, name) > 0, name, f"must be > 0, got {getattr(self, name)}")
            require(
                0.0 <= self.volatile_fraction <= 1.0,
                "volatile_fraction",
                f"must be in [0, 1], got {self.volatile_fraction}",
            )
            require(0.0 <= self.x0 <= 1.0, "x0", f"must be in [0, 1], got {self.x0}")
            for name in ("tau_dtod", "k_dtod", "dx_std"):
                require(getattr(self, name) >= 0, name, f"must be >= 0, got {getattr(self, name)}")

    def sample_d2d(self, shape, generator, device="cpu", dtype=torch.float32) -> D2D:
        p = self.p
        return {
            "tau_s": lognormal_spread(p.tau_s, p.tau_dtod, shape, generator, device, dtype),
            "k_per_s": lognormal_spread(p.k_per_s, p.k_dtod, shape, generator, device, dtype),
        }

    def initial_state(self, d2d, shape, generator, device="cpu", dtype=torch.float32) -> Tensor:
        state = torch.zeros((*shape, 3), device=device, dtype=dtype)
        state[..., 0] = self.p.x0
        return state

    def _x(self, state: Tensor, d2d: D2D, t_s: float) -> Tensor:
        """x at time ``t_s``: the stable part plus the relaxed volatile part."""
        age = (t_s - state[..., 2]).clamp_min(0.0)
        return (state[..., 0] + state[..., 1] * torch.exp(-age / d2d["tau_s"])).clamp(0.0, 1.0)

    def conductance(self, state: Tensor, d2d: D2D, v_read: float | Tensor, t_s: float) -> Tensor:
        p = self.p
        return p.g_min_s + (p.g_max_s - p.g_min_s) * self._x(state, d2d, t_s)

    def step(self, state, d2d, v, width_s, count, t_s, generator, compliance_a=None) -> Tensor:
        p = self.p
        over = (v.abs() / p.v_th_v - 1.0).clamp_min(0.0)
        dx = torch.sign(v) * d2d["k_per_s"] * over * width_s * count.to(v.dtype)
        if p.dx_std > 0.0:
            xi = torch.randn(dx.shape, generator=generator, device=dx.device, dtype=dx.dtype)
            dx = dx * (1.0 + p.dx_std * xi / count.clamp_min(1).to(v.dtype).sqrt())
        moved = dx != 0
        w = (state[..., 0] + (1.0 - p.volatile_fraction) * dx).clamp(0.0, 1.0)
        x = (self._x(state, d2d, t_s) + dx).clamp(0.0, 1.0)
        new = torch.stack((w, x - w, torch.full_like(w, float(t_s))), dim=-1)
        return torch.where(moved.unsqueeze(-1), new, state)

    def conductance_range(self) -> tuple[float, float]:
        return self.p.g_min_s, self.p.g_max_s

    def conductance_ceiling(self, d2d: D2D) -> float:
        return self.p.g_max_s
